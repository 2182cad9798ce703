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
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

/// A writable mount with a spool of its own (so parallel tests never share one).
fn opts(spool: &Path) -> MountOptions {
    MountOptions {
        spool_dir: spool.to_path_buf(),
        ..MountOptions::default()
    }
}

struct Env {
    running: Running,
    admin: aws_sdk_s3::Client,
    bucket: String,
    id: String,
    spool: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let running = start().await;
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
        mount_user(&self.running, ALICE.0, ALICE.1, opts(self.spool.path())).await
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
async fn utime_and_chmod_survive_a_remount_and_chown_is_limited() {
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
            // SAFETY: a valid path; chown to another user must be refused.
            let rc = unsafe { libc::chown(p.as_ptr(), 4242, u32::MAX) };
            assert_eq!(rc, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
            // SAFETY: as above; chown to the mounting user is accepted.
            let rc = unsafe { libc::chown(p.as_ptr(), libc::geteuid(), u32::MAX) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        })
        .await;
        let meta = user_meta(&env.admin, &env.bucket, &env.key("f")).await;
        assert_eq!(
            meta.get("mtime").map(String::as_str),
            Some("1234567890.250000000")
        );
        assert_eq!(meta.get("mode").map(String::as_str), Some("600"));
        m.unmount().unwrap();
        drop(m);
        let m = env.mount().await;
        let f = m.join("f");
        blocking(move || {
            let st = std::fs::metadata(&f).unwrap();
            assert_eq!(st.modified().unwrap(), stamp);
            assert_eq!(st.mode() & 0o7777, 0o600);
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
            ..opts(env.spool.path())
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
        let (p, d) = (m.join("s.bin"), data.clone());
        let f = blocking(move || {
            let mut f = std::fs::File::create(&p).unwrap();
            for c in d.chunks(1 << 20) {
                f.write_all(c).unwrap();
            }
            f
        })
        .await;
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
        assert_eq!(
            meta.get("mtime").map(String::as_str),
            Some("1000000000.000000000")
        );
        drop(m);
        env.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cp_completes_correctly_with_injected_503s() {
    with_timeout(240, async {
        install_crypto();
        let running = start_with(|o| o.s3_error_rate = 0.2).await;
        let admin = s3_client_attempts(
            &running,
            aws_credential_types::Credentials::new(ADMIN.0, ADMIN.1, None, None, "admin"),
            20,
        );
        let spool = tempfile::tempdir().unwrap();
        let m = mount_user_attempts(&running, ALICE.0, ALICE.1, opts(spool.path()), 20).await;
        let data = pseudo_random(30 << 20, 3);
        let local = tempfile::tempdir().unwrap();
        let src = local.path().join("x.bin");
        std::fs::write(&src, &data).unwrap();
        let dst = m.join("x.bin");
        let out = blocking_for(Duration::from_secs(180), move || {
            Command::new("cp").arg(&src).arg(&dst).output().unwrap()
        })
        .await;
        assert!(out.status.success(), "cp failed: {out:?}");
        let key = format!("{}/x.bin", m.identity_id);
        let got = get_bytes(&admin, &running.profile.bucket, &key).await;
        assert!(got.as_deref() == Some(&data[..]), "contents under 503s");
        drop(m);
        running.shutdown().await;
    })
    .await;
}
