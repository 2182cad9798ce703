//! The mount against what would wear it down, through a real FUSE mount over devstack: an
//! inode table that follows the kernel's cache instead of growing with every name seen.
//! Needs /dev/fuse and root (as on the CI machines).

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use support::*;

/// Waits (bounded) until `done` holds, checking every 50 ms; false if it never did.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// Asks the kernel to drop every dentry and inode it can (each dropped inode of the mount
/// comes back as a FUSE `forget`).
fn drop_kernel_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "2")
        .expect("writing /proc/sys/vm/drop_caches (tests run as root)");
}

/// `ls -lR` over 2,000 names fills the inode table; once the kernel forgets them, the table
/// is back to what the kernel still holds — while an open file keeps its number.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_inode_table_forgets_what_the_kernel_forgets() {
    with_timeout(240, async {
        let running = start().await;
        let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
        let objects: Vec<(String, Vec<u8>)> = (0..2000)
            .map(|i| (format!("{id}/d{}/f{i}", i % 20), vec![b'x'; i % 7]))
            .collect();
        put_many(&s3, &running.profile.bucket, objects, 32).await;
        let spool = tempfile::tempdir().unwrap();
        let m = mount_user(&running, "alice", "alice-pass", spool_opts(spool.path())).await;
        let root = m.path().to_owned();
        let (held, held_ino, listed) = blocking(move || {
            let out = std::process::Command::new("ls")
                .arg("-lR")
                .arg(&root)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let listed = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with('-'))
                .count();
            let path = root.join("d3/f3");
            let held = std::fs::File::open(&path).unwrap();
            let ino = held.metadata().unwrap().ino();
            (held, ino, listed)
        })
        .await;
        assert_eq!(listed, 2000);
        let fs = m.mount().fs().clone();
        let full = fs.inodes().entries();
        assert!(full > 2000, "{full} entries after ls -lR");
        drop_kernel_caches();
        let shrunk = eventually(Duration::from_secs(30), || {
            drop_kernel_caches();
            fs.inodes().entries() < 50
        })
        .await;
        assert!(
            shrunk,
            "{} entries left after the kernel forgot",
            fs.inodes().entries()
        );
        // The open file kept its entry and its number.
        let path = m.join("d3/f3");
        let (by_path, by_fd) = blocking(move || {
            (
                std::fs::metadata(&path).unwrap().ino(),
                held.metadata().unwrap().ino(),
            )
        })
        .await;
        assert_eq!((by_path, by_fd), (held_ino, held_ino));
        drop(m);
        running.shutdown().await;
    })
    .await;
}
