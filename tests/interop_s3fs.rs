//! Interoperability with s3fs, the S3 filesystem most buckets in the wild were written by:
//! the same prefix mounted by cognifs and by s3fs (Debian package `s3fs`, devstack's admin
//! key) shows the same tree both ways — types, modes, owners, mtimes, symlink targets,
//! device numbers, extended attributes and bytes.
//! Needs /dev/fuse, root and s3fs (as on the CI machines).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::tree::*;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

#[path = "support/s3fs.rs"]
mod s3fs;
use s3fs::{List, S3fs};

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
        let opts = || spool_opts(spool.path());

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
        let s3fs = S3fs::mount(&running, &prefix, List::V2).await;
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
