//! End-to-end: writes and namespace changes through real FUSE mounts against devstack,
//! checked both through the mount and with a separate (admin) S3 client.
//! Needs /dev/fuse and root (as on the CI machines).

mod support;

use std::ffi::CString;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use cognifs::fs::MountOptions;
use devstack::Running;
use support::cli::{ChildGuard, Cli, PathGuard};
use support::tree::digest;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

struct Env {
    running: Running,
    admin: aws_sdk_s3::Client,
    bucket: String,
    id: String,
    spool: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        Self::with(start().await).await
    }

    async fn with(running: Running) -> Env {
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        Env {
            admin: admin_s3(&running),
            bucket: running.profile.bucket.clone(),
            running,
            id,
            spool: tempfile::tempdir().unwrap(),
        }
    }

    fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.id)
    }

    async fn s3(&self, rel: &str) -> Option<Vec<u8>> {
        get_bytes(&self.admin, &self.bucket, &self.key(rel)).await
    }

    async fn put(&self, rel: &str, data: impl Into<Vec<u8>>) {
        put(&self.admin, &self.bucket, &self.key(rel), data).await;
    }

    async fn keys(&self) -> Vec<String> {
        keys_under(&self.admin, &self.bucket, &format!("{}/", self.id)).await
    }

    async fn mount(&self) -> MountGuard {
        mount_user(
            &self.running,
            ALICE.0,
            ALICE.1,
            spool_opts(self.spool.path()),
        )
        .await
    }
}

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("operation should fail")
        .raw_os_error()
        .expect("an errno")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// close(2) with its result: std's `File` drops close errors.
fn close_checked(f: std::fs::File) -> std::io::Result<()> {
    let fd = f.into_raw_fd();
    // SAFETY: fd is owned here (taken from the File) and closed exactly once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates `path` and writes `data` into it in 1 MiB calls, as `cp` does; the file stays
/// open.
async fn create_written(path: PathBuf, data: Vec<u8>) -> std::fs::File {
    blocking(move || {
        let mut f = std::fs::File::create(&path).unwrap();
        for c in data.chunks(1 << 20) {
            f.write_all(c).unwrap();
        }
        f
    })
    .await
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let a = CString::new(from.as_os_str().as_bytes()).unwrap();
    let b = CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: both paths are valid NUL-terminated strings for the call's duration.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cp_of_80_mib_is_in_s3_when_cp_returns() {
    with_timeout(240, async {
        let env = Env::new().await;
        let m = env.mount().await;
        let data = pseudo_random(80 << 20, 11);
        let local = tempfile::tempdir().unwrap();
        let src = local.path().join("big.bin");
        std::fs::write(&src, &data).unwrap();
        let dst = m.join("big.bin");
        let (s, d) = (src.clone(), dst.clone());
        let out = blocking_for(Duration::from_secs(180), move || {
            Command::new("cp").arg(&s).arg(&d).output().unwrap()
        })
        .await;
        assert!(out.status.success(), "cp failed: {out:?}");
        // Checked by a separate client right after cp returned: no waiting, no retries.
        let got = env.s3("big.bin").await.expect("object exists after cp");
        assert_eq!(got.len(), data.len());
        assert!(got == data, "S3 bytes differ from the source");
        assert_eq!(
            open_uploads(&env.admin, &env.bucket, &env.key("")).await,
            0,
            "no multipart upload left open"
        );
        let d = dst.clone();
        let back = blocking(move || {
            assert_eq!(std::fs::metadata(&d).unwrap().len(), 80 << 20);
            std::fs::read(&d).unwrap()
        })
        .await;
        assert!(back == data, "read back through the mount differs");
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_bodies_are_sent_unsigned() {
    with_timeout(120, async {
        let env = Env::new().await;
        let m = env.mount().await;
        // A small file (one PUT) and one over the part size (a multipart upload).
        let small = pseudo_random(5000, 3);
        let large = pseudo_random(20 << 20, 4);
        let (s, l) = (small.clone(), large.clone());
        let dir = m.path().to_owned();
        blocking(move || {
            std::fs::write(dir.join("small"), &s).unwrap();
            std::fs::write(dir.join("large"), &l).unwrap();
        })
        .await;
        assert!(env.s3("small").await.unwrap() == small);
        assert!(env.s3("large").await.unwrap() == large);
        let traffic = env.running.traffic();
        // One PUT and three parts (8 MiB parts), none of them signed: each carries its
        // CRC32 instead, which S3 checks.
        assert_eq!(traffic.signed_bodies(), 0, "no body signed");
        assert!(
            traffic.unsigned_bodies() >= 4,
            "{}",
            traffic.unsigned_bodies()
        );
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overwrite_append_random_write_and_truncate() {
    with_timeout(120, async {
        let env = Env::new().await;
        env.put("f.txt", "hello, world\n").await;
        let base = pseudo_random(3 << 20, 5);
        env.put("r.bin", base.clone()).await;
        let m = env.mount().await;
        let root = m.path().to_path_buf();

        // Overwrite with shorter content.
        let f = root.join("f.txt");
        blocking(move || std::fs::write(&f, "hi\n").unwrap()).await;
        assert_eq!(env.s3("f.txt").await.unwrap(), b"hi\n");

        // Append through the shell.
        let f = root.join("f.txt");
        let out = blocking(move || {
            Command::new("sh")
                .arg("-c")
                .arg(format!("echo more >> '{}'", f.display()))
                .output()
                .unwrap()
        })
        .await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(env.s3("f.txt").await.unwrap(), b"hi\nmore\n");
        let f = root.join("f.txt");
        let seen = blocking(move || std::fs::read(&f).unwrap()).await;
        assert_eq!(seen, b"hi\nmore\n");

        // A random write in the middle of a 3 MiB object keeps everything around it.
        let r = root.join("r.bin");
        blocking(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&r).unwrap();
            f.write_all_at(b"0123456789", 1_500_000).unwrap();
            close_checked(f).unwrap();
        })
        .await;
        let mut expect = base.clone();
        expect[1_500_000..1_500_010].copy_from_slice(b"0123456789");
        assert!(env.s3("r.bin").await.unwrap() == expect, "random write");

        // Truncate down through a handle, then up by path (no handle: `truncate -s`).
        let r = root.join("r.bin");
        blocking(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&r).unwrap();
            f.set_len(1000).unwrap();
            close_checked(f).unwrap();
        })
        .await;
        assert!(
            env.s3("r.bin").await.unwrap() == expect[..1000],
            "truncate down"
        );
        let r = root.join("r.bin");
        let out = blocking(move || {
            Command::new("truncate")
                .args(["-s", "5000"])
                .arg(&r)
                .output()
                .unwrap()
        })
        .await;
        assert!(out.status.success(), "{out:?}");
        let mut grown = expect[..1000].to_vec();
        grown.resize(5000, 0);
        assert!(env.s3("r.bin").await.unwrap() == grown, "truncate up");
        let r = root.join("r.bin");
        let len = blocking(move || std::fs::metadata(&r).unwrap().len()).await;
        assert_eq!(len, 5000);

        // A reader in the same mount sees a file being written, before close.
        let w = root.join("w.txt");
        let dir = root.clone();
        blocking(move || {
            let mut f = std::fs::File::create(&w).unwrap();
            f.write_all(b"partial").unwrap();
            assert!(
                names(&dir).contains(&"w.txt".to_string()),
                "listed before close"
            );
            assert_eq!(std::fs::metadata(&w).unwrap().len(), 7);
            assert_eq!(std::fs::read(&w).unwrap(), b"partial");
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(b"P").unwrap();
            close_checked(f).unwrap();
        })
        .await;
        assert_eq!(env.s3("w.txt").await.unwrap(), b"Partial");
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_above_the_single_copy_limit_copies_by_parts() {
    with_timeout(120, async {
        // devstack refuses CopyObject above 1 MiB here, as S3 does above 5 GiB.
        let env = Env::with(start_with(|o| o.max_copy_size = 1 << 20).await).await;
        let data = pseudo_random(3 << 20, 21);
        env.put("big.bin", data.clone()).await;
        let m = env.mount().await;
        let traffic = env.running.traffic();
        let copies = || (traffic.object_copies(), traffic.part_copies());
        let before = copies();
        let (a, b) = (m.join("big.bin"), m.join("moved.bin"));
        blocking(move || std::fs::rename(a, b))
            .await
            .expect("rename of a large object");
        // One CopyObject, refused as too large, then the copy by parts: one UploadPartCopy
        // (3 MiB in parts of 512 MiB).
        assert_eq!(
            copies(),
            (before.0 + 1, before.1 + 1),
            "(CopyObject, UploadPartCopy)"
        );
        assert_eq!(env.s3("moved.bin").await.as_deref(), Some(&data[..]));
        assert_eq!(env.s3("big.bin").await, None);
        assert_eq!(open_uploads(&env.admin, &env.bucket, &env.key("")).await, 0);
        let (x, y) = (m.join("moved.bin"), m.join("small.bin"));
        blocking(move || {
            std::fs::write(&x, b"small now").unwrap();
            std::fs::rename(x, y)
        })
        .await
        .expect("small rename");
        assert_eq!(
            copies(),
            (before.0 + 2, before.1 + 1),
            "a small rename is one CopyObject"
        );
        assert_eq!(
            env.s3("small.bin").await.as_deref(),
            Some(&b"small now"[..])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renames_of_files_and_directories() {
    with_timeout(120, async {
        let env = Env::new().await;
        env.put("a.txt", "A").await;
        env.put("b.txt", "B").await;
        env.put("d/x", "X").await;
        env.put("d/sub/y", "Y").await;
        env.put("d/empty/", "").await;
        let m = env.mount().await;
        let root = m.path().to_path_buf();

        let r = root.clone();
        blocking(move || {
            std::fs::rename(r.join("a.txt"), r.join("c.txt")).unwrap();
            assert_eq!(std::fs::read(r.join("c.txt")).unwrap(), b"A");
            assert!(!r.join("a.txt").exists());
            // RENAME_NOREPLACE refuses an existing target and changes nothing.
            let e = errno_of(rename_noreplace(&r.join("c.txt"), &r.join("b.txt")));
            assert_eq!(e, libc::EEXIST);
            // Plain rename over an existing file replaces it.
            std::fs::rename(r.join("c.txt"), r.join("b.txt")).unwrap();
            assert_eq!(std::fs::read(r.join("b.txt")).unwrap(), b"A");
            std::fs::rename(r.join("d"), r.join("e")).unwrap();
        })
        .await;
        let r = root.clone();
        blocking(move || {
            assert_eq!(names(&r), ["b.txt", "e"]);
            assert_eq!(names(&r.join("e")), ["empty", "sub", "x"]);
            assert_eq!(std::fs::read(r.join("e/sub/y")).unwrap(), b"Y");
            // A directory cannot replace a file, nor a file a directory.
            std::fs::create_dir(r.join("f")).unwrap();
            assert_eq!(
                errno_of(std::fs::rename(r.join("f"), r.join("b.txt"))),
                libc::ENOTDIR
            );
            assert_eq!(
                errno_of(std::fs::rename(r.join("b.txt"), r.join("e"))),
                libc::EISDIR
            );
        })
        .await;
        assert_eq!(
            env.keys().await,
            ["b.txt", "e/empty/", "e/sub/y", "e/x", "f/"]
        );
        assert_eq!(env.s3("b.txt").await.unwrap(), b"A");
        assert_eq!(env.s3("e/sub/y").await.unwrap(), b"Y");
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mkdir_rmdir_unlink_rules() {
    with_timeout(120, async {
        let env = Env::new().await;
        env.put("keep.txt", "k").await;
        let m = env.mount().await;
        let root = m.path().to_path_buf();

        let r = root.clone();
        blocking(move || {
            std::fs::create_dir(r.join("d")).unwrap();
            assert_eq!(errno_of(std::fs::create_dir(r.join("d"))), libc::EEXIST);
            std::fs::create_dir(r.join("d/e")).unwrap();
            // Only a marker below: still not empty.
            assert_eq!(errno_of(std::fs::remove_dir(r.join("d"))), libc::ENOTEMPTY);
            assert_eq!(
                errno_of(std::fs::remove_dir(r.join("keep.txt"))),
                libc::ENOTDIR
            );
            assert_eq!(errno_of(std::fs::remove_file(r.join("d"))), libc::EISDIR);
        })
        .await;
        assert_eq!(env.keys().await, ["d/", "d/e/", "keep.txt"]);
        let r = root.clone();
        blocking(move || {
            std::fs::remove_dir(r.join("d/e")).unwrap();
            std::fs::remove_dir(r.join("d")).unwrap();
            assert_eq!(names(&r), ["keep.txt"]);
        })
        .await;
        assert_eq!(env.keys().await, ["keep.txt"]);
        let r = root.clone();
        blocking(move || {
            // Unlink of a file open for writing: the name goes at once, the handle keeps
            // reading and writing its data, and closing it does not bring the name back.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(r.join("keep.txt"))
                .unwrap();
            std::fs::remove_file(r.join("keep.txt")).unwrap();
            assert!(names(&r).is_empty());
            f.write_all_at(b"!", 1).unwrap();
            let mut buf = [0u8; 2];
            f.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(&buf, b"k!");
            close_checked(f).unwrap();
            assert_eq!(
                errno_of(std::fs::metadata(r.join("keep.txt"))),
                libc::ENOENT
            );
            assert_eq!(
                errno_of(std::fs::create_dir(r.join("x".repeat(256)))),
                libc::ENAMETOOLONG
            );
            // Each name is fine, but the key would pass S3's 1024 bytes.
            let mut deep = r.clone();
            for i in 0..4 {
                deep = deep.join(format!("{i}{}", "d".repeat(230)));
                std::fs::create_dir(&deep).unwrap();
            }
            let long = deep.join("f".repeat(200));
            assert_eq!(errno_of(std::fs::write(&long, "x")), libc::ENAMETOOLONG);
            assert_eq!(errno_of(std::fs::create_dir(&long)), libc::ENAMETOOLONG);
            std::fs::remove_dir_all(r.join(format!("0{}", "d".repeat(230)))).unwrap();
        })
        .await;
        assert!(env.keys().await.is_empty());
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_names_round_trip() {
    with_timeout(120, async {
        let env = Env::new().await;
        let m = env.mount().await;
        let odd = [
            "with space.txt",
            "ünïcødé-日本.txt",
            "hash#tag",
            "per%20cent",
            "plus+sign",
            "what?",
        ];
        let r = m.path().to_path_buf();
        blocking(move || {
            for n in odd {
                std::fs::write(r.join(n), n).unwrap();
            }
            std::fs::create_dir(r.join("dir #%+?")).unwrap();
            std::fs::rename(r.join("what?"), r.join("dir #%+?/what?")).unwrap();
        })
        .await;
        for n in &odd[..5] {
            assert_eq!(env.s3(n).await.unwrap(), n.as_bytes(), "{n}");
        }
        assert_eq!(env.s3("dir #%+?/what?").await.unwrap(), b"what?");
        let r = m.path().to_path_buf();
        let listed = blocking(move || names(&r)).await;
        let mut want: Vec<String> = odd[..5].iter().map(|s| s.to_string()).collect();
        want.push("dir #%+?".into());
        want.sort();
        assert_eq!(listed, want);
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn utime_chmod_and_chown_survive_a_remount() {
    with_timeout(120, async {
        let env = Env::new().await;
        let mut m = env.mount().await;
        let stamp = SystemTime::UNIX_EPOCH + Duration::new(1_234_567_890, 250_000_000);
        let r = m.path().to_path_buf();
        blocking(move || {
            std::fs::write(r.join("f"), "data").unwrap();
            let f = std::fs::File::options()
                .write(true)
                .open(r.join("f"))
                .unwrap();
            f.set_modified(stamp).unwrap();
            drop(f);
            std::fs::set_permissions(r.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
            let st = std::fs::metadata(r.join("f")).unwrap();
            assert_eq!(st.mode() & 0o7777, 0o600);
            assert_eq!(st.modified().unwrap(), stamp);
            let p = CString::new(r.join("f").as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid path. Root may give a file to anyone (the kernel checks who
            // may chown: tests/mount_tree.rs runs it as other users).
            let rc = unsafe { libc::chown(p.as_ptr(), 4242, 4343) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        })
        .await;
        // s3fs's layout: decimal st_mode with type bits, times as secs[.nanos].
        let meta = user_meta(&env.admin, &env.bucket, &env.key("f")).await;
        assert_eq!(
            meta.get("mtime").map(String::as_str),
            Some("1234567890.250000000")
        );
        assert_eq!(meta.get("mode").map(String::as_str), Some("33152"));
        assert_eq!(meta.get("uid").map(String::as_str), Some("4242"));
        assert_eq!(meta.get("gid").map(String::as_str), Some("4343"));
        m.unmount().unwrap();
        drop(m);
        let m = env.mount().await;
        let f = m.join("f");
        blocking(move || {
            let st = std::fs::metadata(&f).unwrap();
            assert_eq!(st.modified().unwrap(), stamp);
            assert_eq!(st.mode() & 0o7777, 0o600);
            assert_eq!((st.uid(), st.gid()), (4242, 4343));
            assert_eq!(std::fs::read(&f).unwrap(), b"data");
        })
        .await;
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn editor_style_save_and_concurrent_writers() {
    with_timeout(180, async {
        let env = Env::new().await;
        env.put("doc.txt", "version 1\n").await;
        let m = env.mount().await;
        let r = m.path().to_path_buf();
        blocking(move || {
            let tmp = r.join(".doc.txt.swp");
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(b"version 2\n").unwrap();
            f.sync_all().unwrap();
            drop(f);
            std::fs::rename(&tmp, r.join("doc.txt")).unwrap();
            assert_eq!(std::fs::read(r.join("doc.txt")).unwrap(), b"version 2\n");
        })
        .await;
        assert_eq!(env.s3("doc.txt").await.unwrap(), b"version 2\n");
        assert_eq!(env.keys().await, ["doc.txt"]);

        // 8 writers at once, to different files, each bigger than one part.
        let r = m.path().to_path_buf();
        blocking_for(Duration::from_secs(150), move || {
            let threads: Vec<_> = (0..8u64)
                .map(|i| {
                    let p: PathBuf = r.join(format!("w{i}.bin"));
                    std::thread::spawn(move || {
                        let mut f = std::fs::File::create(&p).unwrap();
                        for chunk in pseudo_random(9 << 20, 100 + i).chunks(1 << 20) {
                            f.write_all(chunk).unwrap();
                        }
                        close_checked(f).unwrap();
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        })
        .await;
        for i in 0..8u64 {
            let got = env.s3(&format!("w{i}.bin")).await.unwrap();
            assert!(got == pseudo_random(9 << 20, 100 + i), "writer {i}");
        }
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_reports_failure_when_s3_is_down() {
    with_timeout(180, async {
        let env = Env::new().await;
        let m = env.mount().await;
        let p = m.join("lost.txt");
        let f = blocking(move || std::fs::File::create(&p).unwrap()).await;
        let Env { running, .. } = env;
        running.shutdown().await;
        let (fsync, close) = blocking_for(Duration::from_secs(150), move || {
            let mut f = f;
            f.write_all(b"never stored").unwrap();
            let fsync = f.sync_all();
            (fsync, close_checked(f))
        })
        .await;
        assert_eq!(errno_of(fsync), libc::EIO);
        assert_eq!(errno_of(close), libc::EIO);
        drop(m);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_mount_refuses_every_change() {
    with_timeout(60, async {
        let env = Env::new().await;
        env.put("f", "x").await;
        let o = MountOptions {
            read_only: true,
            ..spool_opts(env.spool.path())
        };
        let m = mount_user(&env.running, ALICE.0, ALICE.1, o).await;
        let r = m.path().to_path_buf();
        blocking(move || {
            assert_eq!(errno_of(std::fs::write(r.join("g"), "y")), libc::EROFS);
            assert_eq!(errno_of(std::fs::create_dir(r.join("d"))), libc::EROFS);
            assert_eq!(
                errno_of(std::fs::rename(r.join("f"), r.join("h"))),
                libc::EROFS
            );
            assert_eq!(errno_of(std::fs::remove_file(r.join("f"))), libc::EROFS);
            assert_eq!(std::fs::read(r.join("f")).unwrap(), b"x");
        })
        .await;
        assert_eq!(env.keys().await, ["f"]);
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

/// Waits up to 10 s for the number of open multipart uploads to satisfy `ok`.
async fn wait_uploads(env: &Env, ok: impl Fn(usize) -> bool) -> usize {
    let mut n = 0;
    for _ in 0..100 {
        n = open_uploads(&env.admin, &env.bucket, &env.key("")).await;
        if ok(n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequential_writer_streams_and_random_writer_falls_back() {
    with_timeout(180, async {
        let env = Env::new().await;
        let m = env.mount().await;
        let data = pseudo_random(20 << 20, 77);

        // Front to back: parts go up while the file is still open.
        let f = create_written(m.join("s.bin"), data.clone()).await;
        assert!(
            wait_uploads(&env, |n| n >= 1).await >= 1,
            "a multipart upload is under way before close"
        );
        blocking(move || close_checked(f).unwrap()).await;
        assert!(env.s3("s.bin").await.unwrap() == data, "streamed contents");
        assert_eq!(open_uploads(&env.admin, &env.bucket, &env.key("")).await, 0);

        // A backward write abandons the stream; the spool is uploaded whole.
        let (p, d) = (m.join("r.bin"), data.clone());
        blocking(move || {
            let mut f = std::fs::File::create(&p).unwrap();
            for c in d.chunks(1 << 20) {
                f.write_all(c).unwrap();
            }
            f.write_all_at(b"REWRITE", 3).unwrap();
            close_checked(f).unwrap();
        })
        .await;
        let mut want = data.clone();
        want[3..10].copy_from_slice(b"REWRITE");
        assert!(env.s3("r.bin").await.unwrap() == want, "fallback contents");
        assert_eq!(
            wait_uploads(&env, |n| n == 0).await,
            0,
            "abandoned upload aborted"
        );

        // Metadata set after streaming started is kept (cp -p style).
        let (p, d) = (m.join("p.bin"), data.clone());
        let stamp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        blocking(move || {
            let mut f = std::fs::File::create(&p).unwrap();
            f.write_all(&d).unwrap();
            f.set_modified(stamp).unwrap();
            close_checked(f).unwrap();
        })
        .await;
        assert!(env.s3("p.bin").await.unwrap() == data);
        let meta = user_meta(&env.admin, &env.bucket, &env.key("p.bin")).await;
        assert_eq!(meta.get("mtime").map(String::as_str), Some("1000000000"));
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

/// Any close of a descriptor flushes (a `dup`'s, a child's at exec, as CI met when another
/// test spawned a process while this one had a file open): a utime while that flush's upload
/// is in flight waits for it and lands on the uploaded file. It used to find the file
/// "clean" mid-upload and copy the object in S3 onto itself: for a new file not there yet
/// (ENOENT), for an old one a version the upload then replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_utime_while_another_descriptor_s_flush_uploads_lands_on_the_upload() {
    use cognifs::store::{MemoryStore, RequestKind};
    with_timeout(90, async {
        let store = std::sync::Arc::new(MemoryStore::new("bucket", "me"));
        let opts = MountOptions {
            part_size: 5 << 20,
            ..MountOptions::default()
        };
        let m = mount_any(store.clone(), "me".into(), opts).await;
        // Two parts stream while it is written; the flush sends the third and completes.
        let data = pseudo_random(11 << 20, 21);
        let f = create_written(m.join("f.bin"), data.clone()).await;
        let completes = || store.counts().get(RequestKind::CompleteMultipart);
        assert_eq!(completes(), 0, "not uploaded before the flush");
        // Each request now takes long enough for the utime to arrive mid-upload.
        store.set_latency(Duration::from_millis(400));
        let dup = f.try_clone().unwrap();
        let flushing = tokio::task::spawn_blocking(move || close_checked(dup));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let stamp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let (set, f) = blocking(move || (f.set_modified(stamp), f)).await;
        flushing.await.unwrap().unwrap();
        set.unwrap();
        store.set_latency(Duration::ZERO);
        blocking(move || close_checked(f).unwrap()).await;
        assert_eq!(completes(), 1, "the dup's flush uploaded it");
        let (body, meta) = store.get_raw("me/f.bin").unwrap();
        assert!(body == data, "contents intact");
        assert_eq!(meta.get("mtime").map(String::as_str), Some("1000000000"));
        let files: Vec<String> = store
            .keys()
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .collect();
        assert_eq!(files, ["me/f.bin"], "no conflict copy, nothing else");
        drop(m);
    })
    .await;
}

/// The production S3 client (the daemon's [`cognifs::store::profile_store`]: 5 attempts) under
/// 503 SlowDown: a `cp` whose every request is refused once (its first attempt) completes,
/// its bytes intact, the SDK's retries absorbing every 503; then every attempt is refused for
/// as long as a `close` takes, which the retries cannot absorb: cognifs's own failure path
/// keeps the file (`close` says EIO), shows it, and uploads it once S3 answers again, first
/// attempts still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cp_completes_correctly_with_injected_503s() {
    with_timeout(240, async {
        install_crypto();
        // First attempts only: a 503 on every request, yet none the retries cannot absorb, so
        // the outcome does not depend on the dice.
        let running = start_with(|o| o.s3_error_rate = 1.0).await;
        let faults = running.faults();
        faults.set_s3_error_first_attempts_only(true);
        let admin = admin_s3_retrying(&running);
        let bucket = running.profile.bucket.clone();
        let disk = tempfile::tempdir().unwrap();
        let opts = MountOptions {
            pending_dir: Some(disk.path().join("pending")),
            // The failed close says EIO even if a 503 sent before the body was read looks
            // like no answer (offline) to the client.
            offline_strict: true,
            ..spool_opts(disk.path())
        };
        let m = mount_user(&running, ALICE.0, ALICE.1, opts).await;
        let data = pseudo_random(30 << 20, 3);
        let local = tempfile::tempdir().unwrap();
        let src = local.path().join("x.bin");
        std::fs::write(&src, &data).unwrap();
        let dst = m.join("x.bin");
        let requests = || -> u64 {
            cognifs::store::RequestKind::ALL
                .iter()
                .map(|&k| m.requests().get(k).total)
                .sum()
        };
        let (requests_before, refused_before) = (requests(), faults.injected().slow_downs);
        let out = blocking_for(Duration::from_secs(180), move || {
            Command::new("cp").arg(&src).arg(&dst).output().unwrap()
        })
        .await;
        assert!(out.status.success(), "cp failed: {out:?}");
        // The faults did fire: every request of the copy went through one, none around.
        let (made, refused) = (
            requests() - requests_before,
            faults.injected().slow_downs - refused_before,
        );
        assert!(made >= 6, "{made} requests for 30 MiB in 8 MiB parts");
        assert_eq!(refused, made, "each request's first attempt refused");
        let key = format!("{}/x.bin", m.identity_id);
        let got = get_bytes(&admin, &bucket, &key).await;
        assert!(got.as_deref() == Some(&data[..]), "contents under 503s");

        // Every request refused while a file is closed: more than the client's 5 attempts.
        let kept = pseudo_random(1 << 20, 4);
        let f = create_written(m.join("kept.bin"), kept.clone()).await;
        let before_close = faults.injected().slow_downs;
        faults.set_s3_error_first_attempts_only(false);
        let closed = blocking(move || close_checked(f)).await;
        faults.set_s3_error_first_attempts_only(true);
        assert_eq!(
            errno_of(closed),
            libc::EIO,
            "close says the data is not in S3"
        );
        let refused = faults.injected().slow_downs - before_close;
        assert!(
            refused >= 5,
            "the close's upload was refused {refused} times: its 5 attempts were not all spent"
        );
        let pending: Vec<String> = m
            .mount()
            .fs()
            .pending_uploads()
            .into_iter()
            .map(|r| r.rel)
            .collect();
        assert_eq!(pending, ["kept.bin"], "the failed close is kept");
        let path = m.join("kept.bin");
        let shown = blocking(move || std::fs::read(path).unwrap()).await;
        assert!(shown == kept, "the mount shows the kept file");

        // It lands by itself, each of its requests refused once.
        let key = format!("{}/kept.bin", m.identity_id);
        eventually(
            Duration::from_secs(120),
            "the kept upload lands",
            || async { get_bytes(&admin, &bucket, &key).await.as_deref() == Some(&kept[..]) },
        )
        .await;
        eventually(Duration::from_secs(30), "nothing left pending", || async {
            m.mount().fs().pending_uploads().is_empty()
        })
        .await;
        assert_eq!(open_uploads(&admin, &bucket, &m.identity_id).await, 0);
        drop(m);
        running.shutdown().await;
    })
    .await;
}

// ---- limits and failures the kernel shows: xattrs, RENAME_EXCHANGE, rollback, full disks ----

/// S3 keeps at most 2 KiB of user metadata per object: a value that cannot fit at all is
/// E2BIG, one that does not fit beside the rest ENOSPC; names s3fs's layout cannot hold are
/// EINVAL. Nothing already there is dropped, in the mount or in S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xattrs_s3_cannot_hold_are_refused_and_nothing_is_dropped() {
    with_timeout(60, async {
        let env = Env::new().await;
        let m = env.mount().await;
        let f = m.join("f");
        // Zeros: base64 "AAAA…", so the encoded size does not depend on the bytes.
        let fits = vec![0u8; 1200];
        let kept = blocking({
            let fits = fits.clone();
            move || {
                std::fs::write(&f, "data").unwrap();
                support::tree::set_xattr(&f, "user.a", &fits);
                let refused: Vec<(String, i32)> = [
                    ("user.b", vec![0u8; 1200]),
                    ("user.big", vec![0u8; 3000]),
                    ("user.q\"uote", b"x".to_vec()),
                    ("user.com,ma", b"x".to_vec()),
                    ("user.co:lon", b"x".to_vec()),
                    ("user.per%cent", b"x".to_vec()),
                    ("user.{brace", b"x".to_vec()),
                    ("user.brace}", b"x".to_vec()),
                ]
                .into_iter()
                .map(|(name, value)| {
                    let errno = support::tree::set_xattr_errno(&f, name, &value);
                    (name.to_owned(), errno)
                })
                .collect();
                assert_eq!(
                    refused,
                    [
                        ("user.b".to_owned(), libc::ENOSPC),
                        ("user.big".to_owned(), libc::E2BIG),
                        ("user.q\"uote".to_owned(), libc::EINVAL),
                        ("user.com,ma".to_owned(), libc::EINVAL),
                        ("user.co:lon".to_owned(), libc::EINVAL),
                        ("user.per%cent".to_owned(), libc::EINVAL),
                        ("user.{brace".to_owned(), libc::EINVAL),
                        ("user.brace}".to_owned(), libc::EINVAL),
                    ]
                );
                support::tree::xattrs(&f)
            }
        })
        .await;
        let want = std::collections::BTreeMap::from([("user.a".to_owned(), fits)]);
        assert_eq!(kept, want, "the mount keeps what fitted");
        drop(m);
        let m = env.mount().await;
        let f = m.join("f");
        assert_eq!(
            blocking(move || support::tree::xattrs(&f)).await,
            want,
            "and so does S3"
        );
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

/// `RENAME_EXCHANGE` (swap two names atomically) cannot be done on S3: EINVAL, and both
/// names keep what they held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_exchange_is_einval_and_changes_nothing() {
    with_timeout(60, async {
        let env = Env::new().await;
        env.put("a", "A").await;
        env.put("b", "B").await;
        let m = env.mount().await;
        let (a, b) = (m.join("a"), m.join("b"));
        let (errno, seen) = blocking(move || {
            let (ca, cb) = (support::tree::cstr(&a), support::tree::cstr(&b));
            // SAFETY: both paths are valid NUL-terminated strings for the call's duration.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    ca.as_ptr(),
                    libc::AT_FDCWD,
                    cb.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            assert_eq!(rc, -1);
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap();
            (
                errno,
                (std::fs::read(a).unwrap(), std::fs::read(b).unwrap()),
            )
        })
        .await;
        assert_eq!(errno, libc::EINVAL);
        assert_eq!(seen, (b"A".to_vec(), b"B".to_vec()));
        assert_eq!(
            (env.s3("a").await, env.s3("b").await),
            (Some(b"A".to_vec()), Some(b"B".to_vec()))
        );
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

/// A directory rename copies every key, then deletes the originals. A copy that fails
/// midway: the copies already made are deleted again, the rename fails with EIO, and the
/// tree is as it was — in S3 and through the mount. (Over the in-memory store, whose faults
/// hit the exact request.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_directory_rename_whose_copy_fails_is_rolled_back() {
    use cognifs::store::{Fault, MemoryStore, RequestKind, UserMeta};
    with_timeout(60, async {
        let store = std::sync::Arc::new(MemoryStore::new("bucket", "me"));
        for i in 0..6 {
            store.insert_raw(
                &format!("me/d/f{i}"),
                format!("{i}").as_bytes(),
                UserMeta::new(),
            );
        }
        store.insert_raw("me/d/sub/g", b"g", UserMeta::new());
        let m = mount_any(store.clone(), "me".into(), MountOptions::default()).await;
        let root = m.path().to_path_buf();
        let r = root.clone();
        let before = blocking(move || names(&r.join("d"))).await;
        let keys = store.keys();
        // The fourth copy fails (the SDK's retries spent, as it were).
        store.fail_nth(Some(RequestKind::Copy), 3, Fault::SlowDown);
        let r = root.clone();
        let renamed = blocking(move || std::fs::rename(r.join("d"), r.join("e"))).await;
        assert_eq!(errno_of(renamed), libc::EIO);
        assert!(!store.armed(), "the fault fired");
        assert_eq!(store.keys(), keys, "S3 holds what it held");
        let r = root.clone();
        let (d, e) = blocking(move || {
            (
                names(&r.join("d")),
                errno_of(std::fs::metadata(r.join("e"))),
            )
        })
        .await;
        assert_eq!(
            (d, e),
            (before, libc::ENOENT),
            "the mount shows it as it was"
        );
        drop(m);
    })
    .await;
}

/// A directory renamed over an empty one whose copy fails part-way: the target keeps its
/// own metadata (its marker is replaced only once everything else is copied), so the tree
/// S3 holds is as it was, the target's times included — as a new mount shows it. (Found by
/// the model: the marker was copied first and stayed replaced after the rollback.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_directory_rename_over_another_keeps_the_target_s_own_times() {
    use cognifs::store::{Fault, MemoryStore, RequestKind, UserMeta};
    use std::os::unix::fs::MetadataExt;
    with_timeout(60, async {
        let store = std::sync::Arc::new(MemoryStore::new("bucket", "me"));
        let times = |secs: &str| UserMeta::from([("mtime".to_owned(), secs.to_owned())]);
        store.insert_raw("me/d/", b"", times("2000000"));
        for i in 0..3 {
            store.insert_raw(&format!("me/d/f{i}"), b"x", UserMeta::new());
        }
        store.insert_raw("me/e/", b"", times("1000000"));
        let m = mount_any(store.clone(), "me".into(), MountOptions::default()).await;
        let root = m.path().to_path_buf();
        let keys = store.keys();
        // The second copy fails: in listing order the first would be `d/`'s marker.
        store.fail_nth(Some(RequestKind::Copy), 1, Fault::SlowDown);
        let r = root.clone();
        let renamed = blocking(move || std::fs::rename(r.join("d"), r.join("e"))).await;
        assert_eq!(errno_of(renamed), libc::EIO);
        assert!(!store.armed(), "the fault fired");
        assert_eq!(store.keys(), keys, "S3 holds the keys it held");
        drop(m);
        let m = mount_any(store.clone(), "me".into(), MountOptions::default()).await;
        let e = m.path().join("e");
        let mtime = blocking(move || std::fs::metadata(e).map(|m| m.mtime())).await;
        assert_eq!(mtime.unwrap(), 1_000_000, "e/'s own mtime, as S3 holds it");
        drop(m);
    })
    .await;
}

/// The spool's disk fills up: the write that does not fit fails with ENOSPC at write time,
/// the file holds exactly what was accepted, and the room comes back after the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_spool_disk_is_enospc_at_write_time() {
    with_timeout(60, async {
        let env = Env::new().await;
        let disk = Tmpfs::new(4 << 20);
        let m = mount_user(&env.running, ALICE.0, ALICE.1, spool_opts(disk.path())).await;
        let p = m.join("big.bin");
        let (accepted, errno, size, closed) = blocking(move || {
            let f = std::fs::File::create(&p).unwrap();
            let chunk = vec![7u8; 64 << 10];
            let mut accepted = 0u64;
            let errno = loop {
                match f.write_all_at(&chunk, accepted) {
                    Ok(()) => accepted += chunk.len() as u64,
                    Err(e) => break e.raw_os_error(),
                }
                assert!(accepted <= 8 << 20, "8 MiB into a 4 MiB spool");
            };
            let size = f.metadata().unwrap().len();
            (accepted, errno, size, close_checked(f))
        })
        .await;
        assert_eq!(errno, Some(libc::ENOSPC));
        assert!(accepted > 0 && accepted <= 4 << 20, "{accepted}");
        assert_eq!(
            size, accepted,
            "nothing of the refused write is in the file"
        );
        // The writer was told; what it had written stands.
        closed.expect("close uploads what was accepted");
        assert_eq!(
            env.s3("big.bin").await.map(|b| b.len() as u64),
            Some(accepted)
        );
        let p = m.join("small.bin");
        blocking(move || std::fs::write(p, vec![1u8; 1 << 20]))
            .await
            .expect("room again once the file is closed");
        assert_eq!(env.s3("small.bin").await, Some(vec![1u8; 1 << 20]));
        drop(m);
        drop(disk);
        env.running.shutdown().await;
    })
    .await;
}

/// `--min-free`: a write that would leave the pending area's disk with less free room than
/// that (should the file's upload fail and have to be kept) is refused with ENOSPC before
/// any byte of it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_that_would_eat_into_min_free_are_refused_before_any_byte() {
    with_timeout(60, async {
        let env = Env::new().await;
        let disk = Tmpfs::new(8 << 20);
        // Room for 2 MiB and half a chunk of open files.
        let opts = MountOptions {
            pending_dir: Some(disk.path().join("pending")),
            min_free: Some((6 << 20) - (32 << 10)),
            ..spool_opts(env.spool.path())
        };
        let m = mount_user(&env.running, ALICE.0, ALICE.1, opts).await;
        let p = m.join("big.bin");
        let (accepted, errno, size, closed) = blocking(move || {
            let f = std::fs::File::create(&p).unwrap();
            let chunk = vec![7u8; 64 << 10];
            let mut accepted = 0u64;
            let errno = loop {
                match f.write_all_at(&chunk, accepted) {
                    Ok(()) => accepted += chunk.len() as u64,
                    Err(e) => break e.raw_os_error(),
                }
                assert!(accepted <= 8 << 20, "no refusal");
            };
            let size = f.metadata().unwrap().len();
            (accepted, errno, size, close_checked(f))
        })
        .await;
        assert_eq!(errno, Some(libc::ENOSPC));
        assert_eq!(
            (accepted, size),
            (2 << 20, 2 << 20),
            "refused whole, at the limit"
        );
        closed.expect("close uploads what was accepted");
        assert_eq!(env.s3("big.bin").await, Some(vec![7u8; 2 << 20]));
        drop(m);
        drop(disk);
        env.running.shutdown().await;
    })
    .await;
}

// ---- rsync, shutdown safety, model-based ----

/// `rsync -a --itemize-changes --stats SRC/ DST/`; returns (files transferred, itemized
/// file transfers).
async fn rsync_into(src: &Path, dst: &Path) -> (u64, Vec<String>) {
    let (s, d) = (format!("{}/", src.display()), format!("{}/", dst.display()));
    let out = blocking_for(Duration::from_secs(120), move || {
        Command::new("rsync")
            .args(["-a", "--itemize-changes", "--stats", &s, &d])
            .output()
            .unwrap()
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rsync failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transferred = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Number of regular files transferred: "))
        .unwrap_or_else(|| panic!("no stats in rsync output:\n{stdout}"))
        .trim()
        .replace(',', "")
        .parse()
        .unwrap();
    let sent = stdout
        .lines()
        .filter(|l| l.starts_with(">f") || l.starts_with("<f"))
        .map(str::to_owned)
        .collect();
    (transferred, sent)
}

/// Every file below `root`: relative path → (size, digest, mtime in whole seconds, mode).
fn tree_with_times(root: &Path) -> std::collections::BTreeMap<String, (usize, u64, i64, u32)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let data = std::fs::read(&p).unwrap();
                let entry = (data.len(), digest(&data), md.mtime(), md.mode() & 0o7777);
                out.insert(rel, entry);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rsync_twice_transfers_nothing_the_second_time() {
    require_rsync();
    with_timeout(300, async {
        let env = Env::new().await;
        let src = tempfile::tempdir().unwrap();
        let files: [(&str, usize, u64, u32); 6] = [
            ("top.txt", 10, 1_000_000_000, 0o644),
            ("empty", 0, 1_100_000_000, 0o644),
            ("a/one.bin", 70_000, 1_200_000_000, 0o600),
            ("a/b/two.bin", 3 << 20, 1_300_000_000, 0o644),
            ("a/b/c/three with space.txt", 123, 1_400_000_000, 0o640),
            ("d/four.bin", 9 << 20, 1_500_000_000, 0o644),
        ];
        for (i, (rel, len, secs, mode)) in files.iter().enumerate() {
            let p = src.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, pseudo_random(*len, i as u64 + 1)).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(*secs))
                .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        let want = tree_with_times(src.path());

        let mut m = env.mount().await;
        let dst = m.join("tree");
        let (n, _) = rsync_into(src.path(), &dst).await;
        assert_eq!(n, files.len() as u64, "first run sends every file");
        let d = dst.clone();
        assert_eq!(blocking(move || tree_with_times(&d)).await, want);
        let (n, sent) = rsync_into(src.path(), &dst).await;
        assert_eq!((n, sent), (0, vec![]), "second run, same mount");

        // After a remount everything is known only from S3; a listing comes first (ls -l),
        // which carries no user metadata, and must still show the stored mtimes.
        m.unmount().unwrap();
        drop(m);
        let m = env.mount().await;
        let dst = m.join("tree");
        let d = dst.clone();
        assert_eq!(blocking(move || tree_with_times(&d)).await, want);
        let (n, sent) = rsync_into(src.path(), &dst).await;
        assert_eq!((n, sent), (0, vec![]), "run after a remount");
        assert_eq!(open_uploads(&env.admin, &env.bucket, &env.key("")).await, 0);
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

/// Waits (up to 60 s) until the file shows at least `len` bytes through the mount.
async fn wait_size(path: &Path, len: u64) {
    let size = || {
        let p = path.to_path_buf();
        blocking_for(Duration::from_secs(30), move || {
            std::fs::metadata(p).map_or(0, |m| m.len())
        })
    };
    eventually(Duration::from_secs(60), "the file's size", || async {
        size().await >= len
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_cp_leaves_all_or_nothing_and_a_sigkill_is_cleaned_up() {
    with_timeout(600, async {
        let port = reserved_port();
        let running = start_with(|o| o.callback_port = port).await;
        let admin = admin_s3(&running);
        let bucket = running.profile.bucket.clone();
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let cli = Cli::login(&running, ALICE.0, ALICE.1).await;
        let logs = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let src = local.path().join("big.bin");
        let data = pseudo_random(200 << 20, 21);
        std::fs::write(&src, &data).unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let dir = mnt.path().canonicalize().unwrap();
        let _unmount = PathGuard(dir.clone());

        // SIGTERM while cp is under way: the mount detaches, cp finishes into the open
        // file, its close uploads everything, then cognifs exits 0.
        let mut daemon = cli.mount(&dir, &logs.path().join("1.log")).await;
        let mut cp = ChildGuard(Some(
            Command::new("cp")
                .arg(&src)
                .arg(dir.join("big.bin"))
                .spawn()
                .unwrap(),
        ));
        wait_size(&dir.join("big.bin"), 16 << 20).await;
        assert!(
            cp.running(),
            "cp finished before the SIGTERM; the test proves nothing"
        );
        daemon.signal(libc::SIGTERM);
        let cp_status = cp.wait(Duration::from_secs(240)).await;
        let status = daemon.wait(Duration::from_secs(240)).await;
        let log = std::fs::read_to_string(logs.path().join("1.log")).unwrap();
        assert!(status.success(), "cognifs after SIGTERM: {status:?}\n{log}");
        assert!(
            !is_mounted(&dir),
            "still mounted after exit; cp: {cp_status:?}\n{log}"
        );
        let got = get_bytes(&admin, &bucket, &format!("{id}/big.bin")).await;
        if let Some(got) = &got {
            assert_eq!(got.len(), data.len(), "a truncated object");
            assert!(*got == data, "the object's bytes differ");
        }
        // cognifs waits for open files to be closed, so cp is not cut short.
        assert!(cp_status.success(), "cp: {cp_status:?}\n{log}");
        assert!(got.is_some(), "cp succeeded, so the object must be in S3");
        eprintln!("{log}");
        assert_eq!(open_uploads(&admin, &bucket, &format!("{id}/")).await, 0);

        // SIGKILL mid-cp: nothing can be uploaded; the streamed upload is left open and the
        // object never appears. The next mount aborts the stray upload.
        let mut daemon = cli.mount(&dir, &logs.path().join("2.log")).await;
        let mut cp = ChildGuard(Some(
            Command::new("cp")
                .arg(&src)
                .arg(dir.join("killed.bin"))
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        ));
        wait_size(&dir.join("killed.bin"), 32 << 20).await;
        eventually(
            Duration::from_secs(60),
            "a streamed upload under way",
            || async { open_uploads(&admin, &bucket, &format!("{id}/")).await > 0 },
        )
        .await;
        daemon.signal(libc::SIGKILL);
        daemon.wait(Duration::from_secs(30)).await;
        let _ = cp.wait(Duration::from_secs(60)).await;
        assert!(
            Command::new("umount")
                .arg("-l")
                .arg(&dir)
                .status()
                .unwrap()
                .success()
        );
        assert!(
            get_bytes(&admin, &bucket, &format!("{id}/killed.bin"))
                .await
                .is_none(),
            "nothing of a killed copy reaches S3"
        );
        assert_eq!(
            open_uploads(&admin, &bucket, &format!("{id}/")).await,
            1,
            "the killed copy's streamed upload is left open"
        );
        // Spool files are unlinked at creation: the kill left none. A stale one (a crash
        // between creating and unlinking; pid beyond any pid_max) is removed at mount.
        let spool: Vec<_> = std::fs::read_dir(cli.spool()).unwrap().collect();
        assert!(spool.is_empty(), "spool files left: {spool:?}");
        std::fs::write(cli.spool().join("999999999-7-0"), b"").unwrap();
        // No waiting: the upload is hours younger than --stray-upload-hours; the journal
        // proves its process dead.

        let mut daemon = cli.mount(&dir, &logs.path().join("3.log")).await;
        assert_eq!(
            open_uploads(&admin, &bucket, &format!("{id}/")).await,
            0,
            "the next mount aborts stray uploads"
        );
        assert!(!cli.spool().join("999999999-7-0").exists());
        // The complete object from the first copy is still intact.
        let p = dir.join("big.bin");
        let back = blocking(move || std::fs::read(p).unwrap()).await;
        assert!(back == data);
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait(Duration::from_secs(60)).await;
        let log = std::fs::read_to_string(logs.path().join("3.log")).unwrap();
        assert!(status.success(), "{log}");
        assert!(log.contains("aborted a stray multipart upload"), "{log}");
        assert!(log.contains("removed a stale spool file"), "{log}");
        assert!(!is_mounted(&dir));
        running.shutdown().await;
    })
    .await;
}

/// One step of the model-based test, on paths relative to the case's root.
#[derive(Debug, Clone)]
enum RequestKind {
    /// `O_CREAT | O_TRUNC`, then `len` bytes.
    Create(String, usize),
    /// Open an existing file (no truncation) and write `len` bytes at `offset`.
    WriteAt(String, u64, usize),
    Truncate(String, u64),
    Rename(String, String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
}

/// A random step. Mostly on names that exist in the reference tree (`files`, `dirs`), so
/// most steps succeed; sometimes on any name from a small pool, so failures are covered.
fn random_op(rng: &mut rand::rngs::StdRng, files: &[String], dirs: &[String]) -> RequestKind {
    use rand::Rng;
    const FILES: [&str; 8] = ["a", "b", "c", "d0/a", "d0/b", "d0/e/a", "d1/a", "d1/e/b"];
    const DIRS: [&str; 5] = ["d0", "d1", "d0/e", "d1/e", "d2"];
    let mut pick = |existing: &[String], pool: &[&str]| -> String {
        if !existing.is_empty() && rng.random_bool(0.75) {
            existing[rng.random_range(0..existing.len())].clone()
        } else {
            pool[rng.random_range(0..pool.len())].to_owned()
        }
    };
    let file = pick(files, &FILES);
    let dir = pick(dirs, &DIRS);
    let new_file = pick(&[], &FILES);
    let new_dir = pick(&[], &DIRS);
    match rng.random_range(0..100) {
        0..20 => RequestKind::Create(new_file, rng.random_range(0..20_000)),
        20..40 => RequestKind::WriteAt(
            file,
            rng.random_range(0..30_000),
            rng.random_range(1..10_000),
        ),
        40..50 => RequestKind::Truncate(file, rng.random_range(0..25_000)),
        50..58 => RequestKind::Rename(file, new_file),
        58..65 => RequestKind::Rename(dir, new_dir),
        65..75 => RequestKind::Unlink(file),
        75..88 => RequestKind::Mkdir(new_dir),
        _ => RequestKind::Rmdir(dir),
    }
}

/// Applies `op` under `root`; the errno on failure.
fn apply(root: &Path, op: &RequestKind, data: &[u8]) -> Result<(), i32> {
    let p = |rel: &str| root.join(rel);
    let r = match op {
        RequestKind::Create(f, len) => std::fs::write(p(f), &data[..*len]),
        RequestKind::WriteAt(f, off, len) => std::fs::OpenOptions::new()
            .write(true)
            .open(p(f))
            .and_then(|file| {
                file.write_all_at(&data[..*len], *off)?;
                close_checked(file)
            }),
        RequestKind::Truncate(f, size) => std::fs::OpenOptions::new()
            .write(true)
            .open(p(f))
            .and_then(|file| {
                file.set_len(*size)?;
                close_checked(file)
            }),
        RequestKind::Rename(a, b) => std::fs::rename(p(a), p(b)),
        RequestKind::Unlink(f) => std::fs::remove_file(p(f)),
        RequestKind::Mkdir(d) => std::fs::create_dir(p(d)),
        RequestKind::Rmdir(d) => std::fs::remove_dir(p(d)),
    };
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// The tree below `root`: relative path → file contents, `None` for a directory.
fn snapshot(root: &Path) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                let data = std::fs::read(&p).unwrap();
                assert_eq!(md.len(), data.len() as u64, "{rel}: stat size vs contents");
                out.insert(rel, Some(data));
            }
        }
    }
    out
}

/// Short, comparable form of a snapshot (contents as size + digest).
fn summary(
    s: &std::collections::BTreeMap<String, Option<Vec<u8>>>,
) -> Vec<(String, Option<(usize, u64)>)> {
    s.iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map(|d| (d.len(), digest(d)))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_based_random_namespace_and_data_ops_match_a_local_directory() {
    use rand::SeedableRng;
    const SEEDS: [u64; 3] = [1, 0x00c0_ffee, 20_261_126];
    const STEPS: usize = 150;
    with_timeout(600, async {
        let env = Env::new().await;
        let local = tempfile::tempdir().unwrap();
        let data = pseudo_random(32 << 10, 99);
        let mut m = env.mount().await;
        for seed in SEEDS {
            let case = format!("case{seed}");
            let (mroot, lroot) = (m.join(&case), local.path().join(&case));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let d = data.clone();
            let succeeded = blocking(move || {
                std::fs::create_dir(&mroot).unwrap();
                std::fs::create_dir(&lroot).unwrap();
                let mut succeeded = 0;
                let mut tree = snapshot(&lroot);
                for i in 0..STEPS {
                    let (files, dirs): (Vec<_>, Vec<_>) =
                        tree.iter().partition(|(_, v)| v.is_some());
                    let names = |v: Vec<(&String, _)>| {
                        v.into_iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
                    };
                    let op = &random_op(&mut rng, &names(files), &names(dirs));
                    // Different bytes per step, so a stale read cannot match by luck.
                    let mut bytes = d.clone();
                    bytes.rotate_left(i * 7919 % d.len());
                    let want = apply(&lroot, op, &bytes);
                    let got = apply(&mroot, op, &bytes);
                    assert_eq!(got, want, "seed {seed} step {i} {op:?}: result");
                    succeeded += usize::from(got.is_ok());
                    tree = snapshot(&lroot);
                    assert_eq!(
                        summary(&snapshot(&mroot)),
                        summary(&tree),
                        "seed {seed} step {i} {op:?}: tree"
                    );
                }
                succeeded
            })
            .await;
            eprintln!("seed {seed}: {succeeded} of {STEPS} ops succeeded");
            // A sequence of mostly failing calls would test little.
            assert!(
                succeeded > STEPS / 3,
                "seed {seed}: only {succeeded} ops succeeded"
            );
        }

        // The same trees after a remount (everything from S3, nothing from this mount's
        // memory), and in S3 itself, read with the admin client.
        m.unmount().unwrap();
        drop(m);
        let m = env.mount().await;
        let keys = env.keys().await;
        for seed in SEEDS {
            let case = format!("case{seed}");
            let (mroot, lroot) = (m.join(&case), local.path().join(&case));
            let want = blocking(move || snapshot(&lroot)).await;
            let w = want.clone();
            let got = blocking(move || snapshot(&mroot)).await;
            assert_eq!(summary(&got), summary(&w), "seed {seed}: after a remount");
            let mut in_s3 = std::collections::BTreeMap::new();
            let prefix = format!("{case}/");
            let below = keys.iter().filter_map(|k| k.strip_prefix(&prefix));
            for k in below.filter(|k| !k.is_empty()) {
                if let Some(dir) = k.strip_suffix('/') {
                    in_s3.insert(dir.to_owned(), None);
                } else {
                    in_s3.insert(k.to_owned(), env.s3(&format!("{prefix}{k}")).await);
                }
            }
            // Every directory made here has a marker; every file is one object.
            assert_eq!(summary(&in_s3), summary(&want), "seed {seed}: S3 keys");
        }
        assert_eq!(open_uploads(&env.admin, &env.bucket, &env.key("")).await, 0);
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}
