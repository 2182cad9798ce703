//! An s3fs mount of a devstack prefix with the admin key, for the interop tests
//! (`#[path]`-included by tests/interop_s3fs.rs and tests/s3fs_list_v1.rs).

#![allow(dead_code)] // each test uses a part

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devstack::Running;

use crate::support::{ADMIN, blocking_for, is_mounted};

/// Which listing call s3fs makes.
#[derive(Clone, Copy, Debug)]
pub enum List {
    /// `-o listobjectsv2`.
    V2,
    /// s3fs's default: ListObjects (v1) with markers.
    V1,
}

/// An s3fs mount of `bucket:/prefix`, unmounted and stopped on drop.
pub struct S3fs {
    child: Option<Child>,
    path: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl S3fs {
    pub async fn mount(running: &Running, prefix: &str, list: List) -> S3fs {
        let found = Command::new("sh")
            .args(["-c", "command -v s3fs"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "install s3fs (Debian package `s3fs`; .ci/run does)");
        let secrets = tempfile::tempdir().unwrap();
        let passwd = secrets.path().join("passwd");
        std::fs::write(&passwd, format!("{}:{}", ADMIN.0, ADMIN.1)).unwrap();
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("s3fs-mnt-")
            .tempdir()
            .unwrap();
        let path = dir.path().to_path_buf();
        let p = &running.profile;
        let options = format!(
            "passwd_file={},url={},endpoint={},use_path_request_style,{}\
             use_xattr,stat_cache_expire=1",
            passwd.display(),
            p.s3_endpoint,
            p.region,
            match list {
                List::V2 => "listobjectsv2,",
                List::V1 => "",
            }
        );
        let child = Command::new("s3fs")
            .arg(format!("{}:/{}", p.bucket, prefix.trim_end_matches('/')))
            .arg(&path)
            .args(["-f", "-o", &options])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("s3fs starts");
        let mut mount = S3fs {
            child: Some(child),
            path,
            _dirs: (secrets, dir),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&mount.path) {
            if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                let _ = mount
                    .child
                    .take()
                    .unwrap()
                    .stderr
                    .unwrap()
                    .read_to_string(&mut err);
                panic!("s3fs exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "s3fs did not mount within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        mount
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts (s3fs uploads what it still holds) and waits for s3fs to exit.
    pub async fn unmount(mut self) {
        let path = self.path.clone();
        let mut child = self.child.take().unwrap();
        blocking_for(Duration::from_secs(60), move || {
            let status = Command::new("fusermount3")
                .arg("-u")
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success(), "fusermount3 -u {}", path.display());
            child.wait().unwrap();
        })
        .await;
    }
}

impl Drop for S3fs {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
