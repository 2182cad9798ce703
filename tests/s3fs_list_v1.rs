//! s3fs with its defaults — ListObjects (v1) with `marker` paging, no `-o listobjectsv2` —
//! against devstack: a directory of more entries than one page (s3fs asks for 1000) lists
//! completely, subdirectories included, and a file reads back.
//! Needs /dev/fuse, root and s3fs (as on the CI machines).

mod support;

#[path = "support/s3fs.rs"]
mod s3fs;

use std::collections::BTreeSet;

use s3fs::{List, S3fs};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3fs_lists_devstack_through_list_objects_v1() {
    let running = start().await;
    let admin = admin_s3(&running);
    let prefix = "v1-listing/";
    // 1,100 files and two directories (one a marker, one only a common prefix): two pages.
    let mut objects: Vec<(String, Vec<u8>)> = (0..1100)
        .map(|i| (format!("{prefix}big/f{i:04}"), b"x".to_vec()))
        .collect();
    objects.push((format!("{prefix}big/sub/"), Vec::new()));
    objects.push((format!("{prefix}big/other/inner.txt"), b"inner".to_vec()));
    objects.push((format!("{prefix}hello.txt"), b"hello over v1".to_vec()));
    put_many(&admin, "cognifs", objects, 32).await;

    let mount = S3fs::mount(&running, prefix, List::V1).await;
    let root = mount.path().to_path_buf();
    let (names, hello) = blocking(move || {
        let names: BTreeSet<String> = std::fs::read_dir(root.join("big"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        (names, std::fs::read(root.join("hello.txt")).unwrap())
    })
    .await;
    mount.unmount().await;

    let mut want: BTreeSet<String> = (0..1100).map(|i| format!("f{i:04}")).collect();
    want.extend(["sub".to_owned(), "other".to_owned()]);
    assert_eq!(names.len(), want.len(), "every entry, across pages");
    assert_eq!(names, want);
    assert_eq!(hello, b"hello over v1");
    running.shutdown().await;
}
