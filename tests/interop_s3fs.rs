//! Interoperability with s3fs, the S3 filesystem most buckets in the wild were written by:
//! the same prefix mounted by cognifs and by s3fs (Debian package `s3fs`, devstack's admin
//! key) shows the same tree both ways — types, modes, owners, mtimes, symlink targets,
//! extended attributes and bytes. Device numbers: s3fs (1.90) has no key for them, so the
//! one cognifs stores (`x-amz-meta-rdev`) is not compared on s3fs's side (tests/mount_tree.rs
//! checks it through cognifs); the other way, a device s3fs made shows the same device
//! number through both (0: s3fs keeps none, and cognifs makes none up).
//! Needs /dev/fuse, root and s3fs (as on the CI machines).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::tree::*;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

#[path = "support/s3fs.rs"]
mod s3fs;
use s3fs::{List, S3fs};

/// The tree below `root` (the mount's own root left out: its attributes are each
/// client's own).
async fn tree_of(root: &Path) -> BTreeMap<String, Entry> {
    let r = root.to_path_buf();
    let mut t = blocking(move || snapshot(&r)).await;
    t.remove("");
    t
}

/// [`tree_of`] without device numbers, which s3fs does not store.
async fn tree_without_rdev(root: &Path) -> BTreeMap<String, Entry> {
    let mut t = tree_of(root).await;
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
        let written = tree_without_rdev(&m.join("from-cognifs")).await;
        m.unmount().unwrap();
        drop(m);
        let s3fs = S3fs::mount(&running, &prefix, List::V2).await;
        let seen = tree_without_rdev(&s3fs.path().join("from-cognifs")).await;
        assert_same_tree(&written, &seen, "cognifs → s3fs");

        // s3fs writes; cognifs reads.
        let root = s3fs.path().to_path_buf();
        blocking(move || {
            let at = |rel: &str| root.join(rel);
            std::fs::create_dir_all(at("from-s3fs/dir")).unwrap();
            std::fs::write(at("from-s3fs/g.txt"), "written by s3fs\n").unwrap();
            std::os::unix::fs::symlink("g.txt", at("from-s3fs/ln")).unwrap();
            mknod(&at("from-s3fs/fifo"), libc::S_IFIFO | 0o600, 0);
            mknod(
                &at("from-s3fs/tty"),
                libc::S_IFCHR | 0o600,
                libc::makedev(4, 2),
            );
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
        // What S3 holds, as s3fs reads it: through a fresh s3fs mount (no caches).
        s3fs.unmount().await;
        let s3fs = S3fs::mount(&running, &prefix, List::V2).await;
        let written = tree_of(&s3fs.path().join("from-s3fs")).await;
        s3fs.unmount().await;
        let m = mount_user(&running, ALICE.0, ALICE.1, opts()).await;
        let seen = tree_of(&m.join("from-s3fs")).await;
        assert_same_tree(&written, &seen, "s3fs → cognifs");
        // s3fs keeps no device number (its own view shows 0 after a remount): cognifs shows
        // the same, not one of its own making.
        assert_eq!(
            (seen["tty"].mode & libc::S_IFMT, seen["tty"].rdev),
            (libc::S_IFCHR, 0)
        );
        assert!(written.len() >= 4, "{written:?}");
        drop(m);
        running.shutdown().await;
    })
    .await;
}
