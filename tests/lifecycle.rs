//! Stopping and unmounting a daemon mount while files are open, through the `cognifs` binary
//! against devstack in-process (docs/SEMANTICS.md, "Shutdown and crash recovery"): a writer
//! that outlives the shutdown grace period, `cognifs unmount` refused while a file is open,
//! an outside lazy unmount (`umount -l`). Every wait has a deadline.
//! Needs /dev/fuse and root (as on the CI machines).

mod support;

use std::io::Write;
use std::os::unix::io::IntoRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use devstack::Running;
use support::cli::{Cli, PathGuard, run_with_deadline, text};
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

/// A devstack, alice signed in through the binary, an empty mount point.
struct Setup {
    running: Running,
    cli: Cli,
    admin: aws_sdk_s3::Client,
    id: String,
    dir: PathBuf,
    logs: tempfile::TempDir,
    _unmount: PathGuard,
    _mnt: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let port = reserved_port();
        let running = start_with(|o| o.callback_port = port).await;
        let cli = Cli::login(&running, ALICE.0, ALICE.1).await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let mnt = tempfile::tempdir().unwrap();
        let dir = mnt.path().canonicalize().unwrap();
        Setup {
            admin: admin_s3(&running),
            running,
            cli,
            id,
            _unmount: PathGuard(dir.clone()),
            dir,
            logs: tempfile::tempdir().unwrap(),
            _mnt: mnt,
        }
    }

    async fn s3(&self, rel: &str) -> Option<Vec<u8>> {
        get_bytes(
            &self.admin,
            &self.running.profile.bucket,
            &format!("{}/{rel}", self.id),
        )
        .await
    }

    /// `cognifs unmount DIR`.
    async fn unmount(&self) -> std::process::Output {
        let cmd = self.cli.command(&["unmount", self.dir.to_str().unwrap()]);
        blocking(move || run_with_deadline(cmd, Duration::from_secs(60), "cognifs unmount")).await
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default()
    }
}

/// Creates `path` and writes `data`, keeping the file open.
async fn open_and_write(path: PathBuf, data: Vec<u8>) -> std::fs::File {
    blocking(move || {
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(&data).unwrap();
        f
    })
    .await
}

/// close(2) with its result (std's `File` drops close errors).
async fn close(f: std::fs::File) -> std::io::Result<()> {
    blocking(move || {
        let fd = f.into_raw_fd();
        // SAFETY: fd is owned here (taken from the File) and closed exactly once.
        if unsafe { libc::close(fd) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    })
    .await
}

/// A writer still going when the grace period ends: what it wrote is uploaded as it
/// stands, cognifs exits 0, and the writer's next calls get ENOTCONN.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_still_open_after_the_grace_period_are_uploaded_as_they_stand() {
    with_timeout(120, async {
        let s = Setup::new().await;
        let mut daemon = s
            .cli
            .mount_with(
                &s.dir,
                &s.logs.path().join("mount.log"),
                &["--shutdown-grace", "1"],
            )
            .await;
        let written = pseudo_random(3 << 20, 1);
        let f = open_and_write(s.dir.join("slow.bin"), written.clone()).await;
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait(Duration::from_secs(60)).await;
        let log = s.log("mount.log");
        assert!(status.success(), "cognifs after SIGTERM: {status:?}\n{log}");
        assert!(
            log.contains("files still open after the grace period"),
            "{log}"
        );
        assert!(!is_mounted(&s.dir), "detached at the stop");
        assert!(
            s.s3("slow.bin").await == Some(written),
            "what was written by the end of the grace period is in S3"
        );
        // The process is gone, the file still open: the connection is.
        let (f, err) = blocking(move || {
            let mut f = f;
            let err = f.write_all(b"more").unwrap_err();
            (f, err)
        })
        .await;
        assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
        assert_eq!(
            close(f).await.unwrap_err().raw_os_error(),
            Some(libc::ENOTCONN)
        );
        s.running.shutdown().await;
    })
    .await;
}

/// `cognifs unmount` is a plain unmount: with a file open it fails (EBUSY) and says so; the
/// file goes on being written and its close uploads it; then the unmount works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cognifs_unmount_with_a_file_open_is_refused_and_loses_nothing() {
    with_timeout(120, async {
        let s = Setup::new().await;
        let mut daemon = s.cli.mount(&s.dir, &s.logs.path().join("mount.log")).await;
        let first = pseudo_random(1 << 20, 2);
        let f = open_and_write(s.dir.join("open.bin"), first.clone()).await;
        let out = s.unmount().await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "refused: {stderr}");
        assert!(
            stderr.contains("Device or resource busy") && stderr.contains("still open"),
            "says EBUSY and why: {stderr}"
        );
        assert!(is_mounted(&s.dir), "still mounted");
        assert!(daemon.running(), "still serving");
        // Nothing lost: the writer goes on, and its close uploads the whole file.
        let second = pseudo_random(1 << 20, 3);
        let f = blocking({
            let second = second.clone();
            move || {
                let mut f = f;
                f.write_all(&second).unwrap();
                f
            }
        })
        .await;
        close(f).await.expect("close after the refused unmount");
        let whole = [first, second].concat();
        assert!(s.s3("open.bin").await == Some(whole), "every byte in S3");
        let out = s.unmount().await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(!is_mounted(&s.dir));
        let status = daemon.wait(Duration::from_secs(30)).await;
        assert!(status.success(), "{status:?}\n{}", s.log("mount.log"));
        s.running.shutdown().await;
    })
    .await;
}

/// An outside lazy unmount works like SIGTERM: the name is gone at once, the open file
/// keeps working, its close uploads it, then cognifs exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outside_lazy_unmount_lets_open_files_finish() {
    with_timeout(120, async {
        let s = Setup::new().await;
        let mut daemon = s.cli.mount(&s.dir, &s.logs.path().join("mount.log")).await;
        let first = pseudo_random(2 << 20, 4);
        let f = open_and_write(s.dir.join("lazy.bin"), first.clone()).await;
        let dir = s.dir.clone();
        let umount = blocking_for(Duration::from_secs(30), move || {
            Command::new("umount").arg("-l").arg(dir).status().unwrap()
        })
        .await;
        assert!(umount.success(), "umount -l: {umount:?}");
        assert!(!is_mounted(&s.dir));
        let second = pseudo_random(2 << 20, 5);
        let f = blocking({
            let second = second.clone();
            move || {
                let mut f = f;
                f.write_all(&second).unwrap();
                f
            }
        })
        .await;
        close(f).await.expect("close after the lazy unmount");
        let whole = [first, second].concat();
        assert!(s.s3("lazy.bin").await == Some(whole), "every byte in S3");
        let status = daemon.wait(Duration::from_secs(60)).await;
        let log = s.log("mount.log");
        assert!(status.success(), "{status:?}\n{log}");
        assert!(log.contains("unmounted from outside"), "{log}");
        s.running.shutdown().await;
    })
    .await;
}
