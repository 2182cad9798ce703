//! Nothing lost, nothing stuck, through real FUSE mounts against devstack: S3 going away
//! during a large copy, an unmount while uploads are kept, another client's change while
//! an upload waited. (Stale credentials: `tests/auth.rs`.)

mod support;

use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cognifs::fs::MountOptions;
use cognifs::pending::records_in;
use devstack::Running;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

/// A mount's spool and pending area, kept across mounts of the same user.
struct Disk {
    dir: tempfile::TempDir,
}

impl Disk {
    fn new() -> Self {
        Disk {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn pending(&self) -> PathBuf {
        self.dir.path().join("pending")
    }

    fn opts(&self) -> MountOptions {
        MountOptions {
            spool_dir: self.dir.path().join("spool"),
            pending_dir: Some(self.pending()),
            // What the mount learnt before an outage stays fresh through it, however long
            // the production client's retries take.
            metadata_ttl: Duration::from_secs(3600),
            // A close that could not reach S3 says so (EIO), whether the outage looked like
            // 503s or like no answer (devstack's 503 before an 8 MiB part's body is read is
            // a broken pipe to the client: offline, where a close would otherwise return 0
            // once the data is kept; tests/offline.rs covers that promise).
            offline_strict: true,
            ..MountOptions::default()
        }
    }
}

/// Mounts alice's prefix as the daemon does (the production S3 client).
async fn mount(running: &Running, disk: &Disk) -> MountGuard {
    mount_user(running, ALICE.0, ALICE.1, disk.opts()).await
}

/// Writes `data` to `path` in 1 MiB writes, calling `midway` after the first `split`
/// bytes, and closes it; returns close(2)'s errno (0: the data is in S3).
fn write_and_close(path: &Path, data: &[u8], split: usize, midway: impl FnOnce()) -> i32 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create");
    let (a, b) = data.split_at(split);
    for chunk in a.chunks(1 << 20) {
        f.write_all(chunk).expect("write before the outage");
    }
    midway();
    for chunk in b.chunks(1 << 20) {
        // Accepted into the spool: S3 is not needed to write.
        f.write_all(chunk).expect("write during the outage");
    }
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just taken from the File, which no longer owns it.
    if unsafe { libc::close(fd) } == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_down_during_a_large_copy_loses_nothing() {
    with_timeout(180, async {
        let running = start().await;
        let disk = Disk::new();
        let mnt = mount(&running, &disk).await;
        let key = format!("{}/big.bin", mnt.identity_id);
        let data = pseudo_random(40 << 20, 11);
        let faults = running.faults();
        let (mnt, data, closed) = blocking(move || {
            let closed = write_and_close(&mnt.join("big.bin"), &data, 16 << 20, || {
                faults.set_s3_down(true)
            });
            (mnt, data, closed)
        })
        .await;
        assert_eq!(
            closed,
            libc::EIO,
            "close reports that the data is not in S3"
        );
        let started = Instant::now();
        // Kept on disk, and the mount shows it while S3 is still down.
        let kept = records_in(&disk.pending());
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!((kept[0].rel.as_str(), kept[0].size), ("big.bin", 40 << 20));
        let (mnt, data) = blocking(move || {
            let seen = std::fs::read(mnt.join("big.bin")).expect("readable while S3 is down");
            assert!(seen == data, "the mount shows what was written");
            (mnt, data)
        })
        .await;
        // The outage goes on past the close: S3 refuses more before it comes back.
        let refused = running.faults().injected().unavailable;
        eventually(
            Duration::from_secs(60),
            "a request refused after the close",
            || async { running.faults().injected().unavailable > refused },
        )
        .await;
        running.faults().set_s3_down(false);
        let outage = started.elapsed();
        // In S3, intact, without anyone doing anything.
        let admin = admin_s3(&running);
        eventually(
            Duration::from_secs(60),
            "the kept upload reaches S3",
            || async {
                get_bytes(&admin, &running.profile.bucket, &key)
                    .await
                    .as_deref()
                    == Some(&data[..])
            },
        )
        .await;
        eventually(Duration::from_secs(5), "the record is gone", || async {
            records_in(&disk.pending()).is_empty()
        })
        .await;
        assert!(
            mnt.mount().fs().pending_uploads().is_empty(),
            "outage {outage:?}: nothing left pending"
        );
        // The streamed upload the outage broke is aborted once S3 answers again (its abort
        // failed during the outage): no parts are left to be paid for.
        eventually(
            Duration::from_secs(20),
            "no multipart upload left",
            || async { open_uploads(&admin, &running.profile.bucket, &mnt.identity_id).await == 0 },
        )
        .await;
        drop(mnt);
        running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_mount_uploads_what_an_unmounted_one_kept_and_never_overwrites() {
    with_timeout(180, async {
        let running = start().await;
        let disk = Disk::new();
        let admin = admin_s3(&running);
        let mut mnt = mount(&running, &disk).await;
        let id = mnt.identity_id.clone();
        let bucket = running.profile.bucket.clone();
        put(&admin, &bucket, &format!("{id}/shared.txt"), "original").await;
        let faults = running.faults();
        let (mut_mnt, closed) = blocking(move || {
            // Known to the mount (and the kernel) before S3 goes away.
            assert_eq!(std::fs::read(mnt.join("shared.txt")).unwrap(), b"original");
            let a = write_and_close(&mnt.join("notes.txt"), b"new notes", 0, || {
                faults.set_s3_down(true)
            });
            let b = write_and_close(&mnt.join("shared.txt"), b"mine", 0, || {});
            (mnt, (a, b))
        })
        .await;
        mnt = mut_mnt;
        assert_eq!(closed, (libc::EIO, libc::EIO));
        assert_eq!(records_in(&disk.pending()).len(), 2);
        // Unmounted while S3 is down: the kept uploads stay on disk.
        mnt.unmount().expect("unmount");
        assert_eq!(records_in(&disk.pending()).len(), 2);
        // S3 is back, and another client rewrites shared.txt meanwhile.
        running.faults().set_s3_down(false);
        put(&admin, &bucket, &format!("{id}/shared.txt"), "theirs").await;
        let mnt = mount(&running, &disk).await;
        eventually(Duration::from_secs(30), "kept uploads done", || async {
            records_in(&disk.pending()).is_empty()
        })
        .await;
        assert_eq!(
            get_bytes(&admin, &bucket, &format!("{id}/notes.txt"))
                .await
                .as_deref(),
            Some(&b"new notes"[..])
        );
        assert_eq!(
            get_bytes(&admin, &bucket, &format!("{id}/shared.txt"))
                .await
                .as_deref(),
            Some(&b"theirs"[..]),
            "another client's write is never overwritten"
        );
        // Keys relative to the prefix.
        let conflicts: Vec<String> = keys_under(&admin, &bucket, &format!("{id}/"))
            .await
            .into_iter()
            .filter(|k| k.contains("shared.txt.conflict-"))
            .collect();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(
            get_bytes(&admin, &bucket, &format!("{id}/{}", conflicts[0]))
                .await
                .as_deref(),
            Some(&b"mine"[..])
        );
        // (Which mount made the copy depends on timing: the first one's release of the
        // failed file may still be in flight when S3 comes back; it checks too.)
        // The mount lists both versions.
        let name = conflicts[0].clone();
        blocking(move || {
            assert_eq!(std::fs::read(mnt.join("shared.txt")).unwrap(), b"theirs");
            assert_eq!(std::fs::read(mnt.join(&name)).unwrap(), b"mine");
            drop(mnt);
        })
        .await;
        running.shutdown().await;
    })
    .await;
}
