//! Interoperability with s3fs, the S3 filesystem most buckets in the wild were written by:
//! the same prefix mounted by cognifs and by s3fs (Debian package `s3fs`, devstack's admin
//! key) shows the same tree both ways — types, modes, owners, mtimes, symlink targets,
//! device numbers, extended attributes and bytes.
//! Needs /dev/fuse, root and s3fs (as on the CI machines).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cognifs::fs::MountOptions;
use devstack::Running;
use support::tree::*;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

/// An s3fs mount of `bucket:/prefix`, unmounted and stopped on drop.
struct S3fs {
    child: Option<Child>,
    path: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl S3fs {
    async fn mount(running: &Running, prefix: &str) -> S3fs {
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
            "passwd_file={},url={},endpoint={},use_path_request_style,listobjectsv2,\
             use_xattr,stat_cache_expire=1",
            passwd.display(),
            p.s3_endpoint,
            p.region
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

    fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts (s3fs uploads what it still holds) and waits for s3fs to exit.
    async fn unmount(mut self) {
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

/// The tree below `root` (the mount's own root left out: its attributes are each
/// client's own). Device numbers are left out too: s3fs does not store them (cognifs keeps
/// them in `x-amz-meta-rdev`, which s3fs ignores; tests/mount_tree.rs checks them).
async fn tree_of(root: &Path) -> BTreeMap<String, Entry> {
    let r = root.to_path_buf();
    let mut t = blocking(move || snapshot(&r)).await;
    t.remove("");
    for e in t.values_mut() {
        e.rdev = 0;
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3fs_and_cognifs_show_the_same_tree_both_ways() {
    with_timeout(240, async {
        let running = start().await;
        let spool = tempfile::tempdir().unwrap();
        let opts = || MountOptions {
            spool_dir: spool.path().to_path_buf(),
            ..MountOptions::default()
        };

        // cognifs writes; s3fs reads.
        let mut m = mount_user(&running, ALICE.0, ALICE.1, opts()).await;
        let prefix = format!("{}/", m.identity_id);
        let root = m.path().to_path_buf();
        blocking(move || {
            let at = |rel: &str| root.join(rel);
            std::fs::create_dir_all(at("from-cognifs/sub")).unwrap();
            std::fs::write(at("from-cognifs/f.txt"), "written by cognifs\n").unwrap();
            std::fs::write(at("from-cognifs/sub/data"), pseudo_random(100_000, 3)).unwrap();
            std::os::unix::fs::symlink("f.txt", at("from-cognifs/link")).unwrap();
            std::os::unix::fs::symlink("/elsewhere/entirely", at("from-cognifs/abs")).unwrap();
            mknod(&at("from-cognifs/pipe"), libc::S_IFIFO | 0o640, 0);
            mknod(
                &at("from-cognifs/tty"),
                libc::S_IFCHR | 0o620,
                libc::makedev(4, 1),
            );
            set_xattr(&at("from-cognifs/f.txt"), "user.origin", b"cognifs");
            lchown(&at("from-cognifs/f.txt"), 1001, 1002);
            lchown(&at("from-cognifs/sub"), 1003, 1004);
            lchown(&at("from-cognifs/link"), 1005, 1006);
            std::fs::set_permissions(
                at("from-cognifs/f.txt"),
                std::fs::Permissions::from_mode(0o640),
            )
            .unwrap();
            std::fs::set_permissions(
                at("from-cognifs/sub"),
                std::fs::Permissions::from_mode(0o2750),
            )
            .unwrap();
            set_times(
                &at("from-cognifs/f.txt"),
                (1_500_000_000, 0),
                (1_400_000_000, 123_456_789),
            );
            set_times(
                &at("from-cognifs/link"),
                (1_500_000_000, 0),
                (1_300_000_000, 0),
            );
            set_times(
                &at("from-cognifs/sub"),
                (1_500_000_000, 0),
                (1_200_000_000, 5),
            );
        })
        .await;
        let written = tree_of(&m.join("from-cognifs")).await;
        m.unmount().unwrap();
        drop(m);
        let s3fs = S3fs::mount(&running, &prefix).await;
        let seen = tree_of(&s3fs.path().join("from-cognifs")).await;
        assert_same_tree(&written, &seen, "cognifs → s3fs");

        // s3fs writes; cognifs reads.
        let root = s3fs.path().to_path_buf();
        blocking(move || {
            let at = |rel: &str| root.join(rel);
            std::fs::create_dir_all(at("from-s3fs/dir")).unwrap();
            std::fs::write(at("from-s3fs/g.txt"), "written by s3fs\n").unwrap();
            std::os::unix::fs::symlink("g.txt", at("from-s3fs/ln")).unwrap();
            mknod(&at("from-s3fs/fifo"), libc::S_IFIFO | 0o600, 0);
            set_xattr(&at("from-s3fs/g.txt"), "user.origin", b"s3fs");
            lchown(&at("from-s3fs/g.txt"), 2001, 2002);
            lchown(&at("from-s3fs/dir"), 2003, 2004);
            std::fs::set_permissions(
                at("from-s3fs/g.txt"),
                std::fs::Permissions::from_mode(0o604),
            )
            .unwrap();
            std::fs::set_permissions(at("from-s3fs/dir"), std::fs::Permissions::from_mode(0o705))
                .unwrap();
            set_times(
                &at("from-s3fs/g.txt"),
                (1_500_000_000, 0),
                (1_100_000_000, 0),
            );
            set_times(&at("from-s3fs/dir"), (1_500_000_000, 0), (1_000_000_000, 0));
        })
        .await;
        // Read back through s3fs after its caches expire, so both sides show what S3 holds.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let written = tree_of(&s3fs.path().join("from-s3fs")).await;
        s3fs.unmount().await;
        let m = mount_user(&running, ALICE.0, ALICE.1, opts()).await;
        let seen = tree_of(&m.join("from-s3fs")).await;
        assert_same_tree(&written, &seen, "s3fs → cognifs");
        assert!(written.len() >= 4, "{written:?}");
        drop(m);
        running.shutdown().await;
    })
    .await;
}
