//! End-to-end: real FUSE mounts of a user's prefix against devstack, read-only.
//! Needs /dev/fuse and root (as on the CI machines).

mod support;

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;
use std::time::{Duration, SystemTime};

use cognifs::fs::MountOptions;
use cognifs::store::RequestKind;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");
const BOB: (&str, &str) = ("bob", "bob-pass");

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// `ls -1a`, in the order the filesystem returns entries (`-f`: unsorted).
/// The errno of a `stat` expected to fail.
fn enoent(path: std::path::PathBuf) -> i32 {
    std::fs::metadata(&path)
        .expect_err(&format!("{} exists", path.display()))
        .raw_os_error()
        .expect("an errno")
}

fn ls_raw(dir: &std::path::Path) -> Vec<String> {
    let out = Command::new("ls").arg("-1af").arg(dir).output().unwrap();
    assert!(out.status.success(), "ls failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ls_stat_cat_and_refuses_writes() {
    with_timeout(120, async {
        let running = start().await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        let bucket = running.profile.bucket.clone();
        put(
            &admin,
            &bucket,
            &format!("{id}/hello.txt"),
            "hello, world\n",
        )
        .await;
        put(
            &admin,
            &bucket,
            &format!("{id}/docs/readme.md"),
            "# readme\n",
        )
        .await;
        put(
            &admin,
            &bucket,
            &format!("{id}/docs/deep/x.bin"),
            vec![7u8; 3000],
        )
        .await;
        put(&admin, &bucket, &format!("{id}/marker/"), "").await;
        admin
            .put_object()
            .bucket(&bucket)
            .key(format!("{id}/stamped"))
            .metadata("mtime", "1234567890.5")
            .body(b"t".to_vec().into())
            .send()
            .await
            .unwrap();

        // Read-only, so the write attempts below must answer EROFS.
        let opts = MountOptions {
            read_only: true,
            ..MountOptions::default()
        };
        let m = mount_user(&running, ALICE.0, ALICE.1, opts).await;
        let root = m.path().to_path_buf();
        blocking(move || {
            // stat before any listing: the HEAD's x-amz-meta-mtime wins over Last-Modified.
            let st = std::fs::metadata(root.join("stamped")).unwrap();
            assert_eq!(
                st.modified().unwrap(),
                SystemTime::UNIX_EPOCH + Duration::new(1_234_567_890, 500_000_000)
            );

            assert_eq!(names(&root), ["docs", "hello.txt", "marker", "stamped"]);
            assert_eq!(names(&root.join("docs")), ["deep", "readme.md"]);
            assert_eq!(names(&root.join("docs/deep")), ["x.bin"]);
            assert!(names(&root.join("marker")).is_empty());

            let st = std::fs::metadata(root.join("hello.txt")).unwrap();
            assert!(st.is_file());
            assert_eq!(st.len(), 13);
            assert_eq!(st.mode() & 0o7777, 0o644);
            // SAFETY: geteuid has no preconditions.
            assert_eq!(st.uid(), unsafe { libc::geteuid() });
            let age = SystemTime::now()
                .duration_since(st.modified().unwrap())
                .unwrap_or_default();
            assert!(
                age < Duration::from_secs(300),
                "mtime is Last-Modified: {age:?}"
            );
            let st = std::fs::metadata(root.join("docs")).unwrap();
            assert!(st.is_dir());
            assert_eq!(st.mode() & 0o7777, 0o755);
            assert!(std::fs::metadata(root.join("marker")).unwrap().is_dir());
            assert_eq!(
                std::fs::metadata(root.join("docs/deep/x.bin"))
                    .unwrap()
                    .len(),
                3000
            );

            assert_eq!(
                std::fs::read_to_string(root.join("hello.txt")).unwrap(),
                "hello, world\n"
            );
            let cat = Command::new("cat")
                .arg(root.join("docs/readme.md"))
                .output()
                .unwrap();
            assert_eq!(cat.stdout, b"# readme\n");
            assert_eq!(
                std::fs::read(root.join("docs/deep/x.bin")).unwrap(),
                vec![7u8; 3000]
            );

            let missing = std::fs::metadata(root.join("nope")).unwrap_err();
            assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
            // Twice: the second answer comes from the negative cache, and must agree.
            let again = std::fs::metadata(root.join("nope")).unwrap_err();
            assert_eq!(again.raw_os_error(), Some(libc::ENOENT), "{again}");

            let err = std::fs::write(root.join("new.txt"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
            let err = std::fs::OpenOptions::new()
                .write(true)
                .open(root.join("hello.txt"))
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
            let err = std::fs::create_dir(root.join("d")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
            let err = std::fs::remove_file(root.join("hello.txt")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

            // statfs answers with something plausible.
            let df = Command::new("df").arg(&root).output().unwrap();
            assert!(df.status.success(), "{df:?}");
        })
        .await;
        drop(m);
        running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_object_sequential_and_random_reads_match() {
    with_timeout(300, async {
        let running = start().await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        let data = pseudo_random(48 << 20, 0x5eed);
        put(
            &admin,
            &running.profile.bucket,
            &format!("{id}/big.bin"),
            data.clone(),
        )
        .await;

        let m = mount_user(&running, ALICE.0, ALICE.1, MountOptions::default()).await;
        let path = m.join("big.bin");
        blocking_for(Duration::from_secs(240), move || {
            assert_eq!(std::fs::metadata(&path).unwrap().len(), data.len() as u64);

            // Sequential, in the kernel's 128 KiB requests.
            let mut f = std::fs::File::open(&path).unwrap();
            let mut got = Vec::with_capacity(data.len());
            f.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), data.len());
            assert!(got == data, "sequential read differs");

            // Hundreds of random offsets and sizes, including block-crossing and EOF reads.
            let f = std::fs::File::open(&path).unwrap();
            let mut seed = 0x1234_5678_9abc_def1u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let len = data.len() as u64;
            for i in 0..400 {
                let off = next() % len;
                let size = match i % 4 {
                    0 => 1 + next() % 4096,
                    1 => 1 + next() % (3 << 20),
                    2 => (1 << 20) - (off % (1 << 20)) + 1 + next() % 1000, // crosses a block
                    _ => 1 + next() % (256 << 10),
                } as usize;
                let mut buf = vec![0u8; size];
                let n = read_fully_at(&f, &mut buf, off);
                let want = (len - off).min(size as u64) as usize;
                assert_eq!(n, want, "read {size} at {off}");
                assert!(
                    buf[..n] == data[off as usize..off as usize + n],
                    "bytes differ: read {size} at {off}"
                );
            }
            // Exactly at and past the end.
            let mut buf = [0u8; 16];
            assert_eq!(f.read_at(&mut buf, len).unwrap(), 0);
            assert_eq!(read_fully_at(&f, &mut buf, len - 5), 5);
            assert_eq!(&buf[..5], &data[data.len() - 5..]);
        })
        .await;
        drop(m);
        running.shutdown().await;
    })
    .await;
}

fn read_fully_at(f: &std::fs::File, buf: &mut [u8], off: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], off + done as u64).unwrap();
        if n == 0 {
            break;
        }
        done += n;
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_of_3000_objects_lists_completely_in_order() {
    with_timeout(300, async {
        let running = start().await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        let expected: Vec<String> = (0..3000).map(|i| format!("f{i:05}")).collect();
        let objects = expected
            .iter()
            .map(|n| (format!("{id}/many/{n}"), n.as_bytes().to_vec()))
            .collect();
        put_many(&admin, &running.profile.bucket, objects, 64).await;

        let m = mount_user(&running, ALICE.0, ALICE.1, MountOptions::default()).await;
        let dir = m.join("many");
        blocking(move || {
            let listed = ls_raw(&dir);
            assert_eq!(listed.len(), 3002, "all pages plus . and ..");
            assert_eq!(&listed[..2], [".", ".."]);
            assert_eq!(&listed[2..], &expected[..], "complete and in order");
            // ls -l: every entry stats, sizes right.
            for n in ["f00000", "f01000", "f02999"] {
                assert_eq!(std::fs::metadata(dir.join(n)).unwrap().len(), 6);
            }
            assert_eq!(
                std::fs::read_to_string(dir.join("f01999")).unwrap(),
                "f01999"
            );
            let out = Command::new("ls").arg("-l").arg(&dir).output().unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3001); // + "total"
        })
        .await;
        drop(m);
        running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_hides_file_and_bad_keys_are_hidden() {
    with_timeout(120, async {
        let running = start().await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        let b = running.profile.bucket.clone();
        let long = "L".repeat(300);
        for (k, v) in [
            ("a".to_owned(), "the hidden object"),
            ("a/inner".to_owned(), "inner"),
            ("bad//b".to_owned(), "empty segment"),
            ("./x".to_owned(), "dot"),
            ("../y".to_owned(), "dotdot"),
            (long.clone(), "long name"),
            (format!("ok/{long}/z"), "long dir"),
            ("ok/fine".to_owned(), "fine"),
            ("/leading".to_owned(), "leading slash"),
            ("good".to_owned(), "good"),
        ] {
            put(&admin, &b, &format!("{id}/{k}"), v).await;
        }

        let m = mount_user(&running, ALICE.0, ALICE.1, MountOptions::default()).await;
        let root = m.path().to_path_buf();
        blocking(move || {
            // `a` is a directory; the object `a` is hidden.
            let st = std::fs::metadata(root.join("a")).unwrap();
            assert!(st.is_dir());
            assert_eq!(names(&root.join("a")), ["inner"]);
            assert_eq!(
                std::fs::read_to_string(root.join("a/inner")).unwrap(),
                "inner"
            );
            let err = std::fs::read(root.join("a")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EISDIR), "{err}");

            // Bad keys never appear, and never as mangled or duplicate `.`/`..`.
            assert_eq!(ls_raw(&root), [".", "..", "a", "bad", "good", "ok"]);
            assert_eq!(ls_raw(&root.join("bad")), [".", ".."]);
            assert_eq!(ls_raw(&root.join("ok")), [".", "..", "fine"]);
            // `./x` is key `x`'s neighbour, not `x`: the path resolves to a missing name.
            assert_eq!(enoent(root.join("x")), libc::ENOENT);
            assert_eq!(enoent(root.join("y")), libc::ENOENT);
            assert_eq!(enoent(root.join("leading")), libc::ENOENT);
            let err = std::fs::metadata(root.join(&long)).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
            assert_eq!(std::fs::read_to_string(root.join("good")).unwrap(), "good");
        })
        .await;
        drop(m);
        running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_change_is_seen_after_ttl_and_never_mixed() {
    with_timeout(120, async {
        let running = start().await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        let b = running.profile.bucket.clone();
        put(&admin, &b, &format!("{id}/c.txt"), "version one").await;
        let old = pseudo_random(8 << 20, 1);
        let new = pseudo_random(8 << 20, 2);
        put(&admin, &b, &format!("{id}/big.bin"), old.clone()).await;

        let opts = MountOptions {
            metadata_ttl: Duration::from_secs(1),
            ..MountOptions::default()
        };
        let m = mount_user(&running, ALICE.0, ALICE.1, opts).await;
        let c = m.join("c.txt");
        let c2 = c.clone();
        assert_eq!(
            blocking(move || std::fs::read_to_string(&c2).unwrap()).await,
            "version one"
        );
        let before = blocking({
            let root = m.path().to_path_buf();
            move || names(&root)
        })
        .await;
        assert_eq!(before, ["big.bin", "c.txt"]);

        put(&admin, &b, &format!("{id}/c.txt"), "version two, longer").await;
        put(&admin, &b, &format!("{id}/added.txt"), "new").await;
        // Seen once the mount's view is older than the TTL; until then the old one, whole.
        eventually(Duration::from_secs(30), "the new version read", || {
            let c = c.clone();
            async move {
                let seen = blocking(move || std::fs::read_to_string(&c).unwrap()).await;
                assert!(
                    seen == "version one" || seen == "version two, longer",
                    "{seen:?}"
                );
                seen == "version two, longer"
            }
        })
        .await;
        eventually(Duration::from_secs(30), "the listing refreshed", || {
            let root = m.path().to_path_buf();
            async move {
                let seen = blocking(move || names(&root)).await;
                assert!(
                    seen == ["big.bin", "c.txt"] || seen == ["added.txt", "big.bin", "c.txt"],
                    "{seen:?}"
                );
                seen.len() == 3
            }
        })
        .await;

        // A reader that opened the old version gets ESTALE for blocks it has not read yet,
        // never bytes of the new version.
        let big = m.join("big.bin");
        let f = blocking({
            let big = big.clone();
            let old = old.clone();
            move || {
                let f = std::fs::File::open(&big).unwrap();
                let mut buf = vec![0u8; 4096];
                f.read_exact_at(&mut buf, 0).unwrap();
                assert_eq!(buf, old[..4096]);
                f
            }
        })
        .await;
        put(&admin, &b, &format!("{id}/big.bin"), new.clone()).await;
        let err = blocking(move || {
            let mut buf = vec![0u8; 4096];
            f.read_exact_at(&mut buf, 6 << 20).unwrap_err()
        })
        .await;
        assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
        // A fresh open sees the new version whole.
        let got = blocking(move || std::fs::read(&big).unwrap()).await;
        assert!(got == new, "reopen reads the new version");
        drop(m);
        running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmount_works() {
    with_timeout(60, async {
        let running = start().await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        put(
            &admin_s3(&running),
            &running.profile.bucket,
            &format!("{id}/f"),
            "x",
        )
        .await;
        let m = mount_user(&running, ALICE.0, ALICE.1, MountOptions::default()).await;
        let root = m.path().to_path_buf();
        assert!(is_mounted(&root));
        let r = root.clone();
        assert_eq!(blocking(move || names(&r)).await, ["f"]);
        let _m = blocking(move || {
            let mut m = m;
            m.unmount().map(|()| m)
        })
        .await
        .expect("unmount");
        assert!(!is_mounted(&root), "still mounted");
        let r = root.clone();
        assert!(
            blocking(move || names(&r)).await.is_empty(),
            "mount point is empty again"
        );
        running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_users_see_only_their_own_prefix() {
    with_timeout(120, async {
        let running = start().await;
        let alice_id = identity_of(&running, ALICE.0, ALICE.1).await;
        let bob_id = identity_of(&running, BOB.0, BOB.1).await;
        assert_ne!(alice_id, bob_id);
        let admin = admin_s3(&running);
        let b = running.profile.bucket.clone();
        put(&admin, &b, &format!("{alice_id}/alice.txt"), "alice's").await;
        put(&admin, &b, &format!("{alice_id}/shared/a"), "a").await;
        put(&admin, &b, &format!("{bob_id}/bob.txt"), "bob's").await;
        put(&admin, &b, &format!("{bob_id}/shared/b"), "b").await;
        put(&admin, &b, "toplevel.txt", "outside every prefix").await;

        let ma = mount_user(&running, ALICE.0, ALICE.1, MountOptions::default()).await;
        let mb = mount_user(&running, BOB.0, BOB.1, MountOptions::default()).await;
        assert_eq!(ma.identity_id, alice_id);
        assert_eq!(mb.identity_id, bob_id);
        let (ra, rb) = (ma.path().to_path_buf(), mb.path().to_path_buf());
        blocking(move || {
            assert_eq!(names(&ra), ["alice.txt", "shared"]);
            assert_eq!(names(&rb), ["bob.txt", "shared"]);
            assert_eq!(names(&ra.join("shared")), ["a"]);
            assert_eq!(names(&rb.join("shared")), ["b"]);
            assert_eq!(
                std::fs::read_to_string(ra.join("alice.txt")).unwrap(),
                "alice's"
            );
            assert_eq!(
                std::fs::read_to_string(rb.join("bob.txt")).unwrap(),
                "bob's"
            );
            assert_eq!(enoent(ra.join("bob.txt")), libc::ENOENT);
            assert_eq!(enoent(rb.join("alice.txt")), libc::ENOENT);
            assert_eq!(enoent(ra.join("toplevel.txt")), libc::ENOENT);
        })
        .await;
        drop(ma);
        drop(mb);
        running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_readers_all_make_progress() {
    with_timeout(300, async {
        // Every S3 request takes 100 ms: were readers served one after another, one would
        // finish before the last had started (checked below).
        let running = start_with(|o| o.latency = Duration::from_millis(100)).await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        const N: usize = 50;
        const SIZE: usize = 4 << 20;
        let objects = (0..N)
            .map(|i| (format!("{id}/r/{i:02}"), pseudo_random(SIZE, i as u64 + 10)))
            .collect();
        put_many(&admin, &running.profile.bucket, objects, 50).await;

        let m = mount_user(&running, ALICE.0, ALICE.1, MountOptions::default()).await;
        let dir = m.join("r");
        let d = dir.clone();
        assert_eq!(blocking(move || names(&d)).await.len(), N);

        // Ordered by events, not clocks: each reader counts itself in when its first bytes
        // arrive, and notes how many had when it finishes.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(N));
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..N {
            let path = dir.join(format!("{i:02}"));
            let (barrier, started) = (barrier.clone(), started.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                use std::sync::atomic::Ordering::SeqCst;
                let mut f = std::fs::File::open(&path).unwrap();
                barrier.wait();
                let mut buf = vec![0u8; 128 << 10];
                let mut got = Vec::with_capacity(SIZE);
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    if got.is_empty() {
                        started.fetch_add(1, SeqCst);
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(
                    got == pseudo_random(SIZE, i as u64 + 10),
                    "reader {i} got wrong bytes"
                );
                started.load(SeqCst)
            }));
        }
        let mut started_when_done = Vec::new();
        for t in tasks {
            started_when_done.push(
                tokio::time::timeout(Duration::from_secs(200), t)
                    .await
                    .expect("a reader made no progress")
                    .expect("reader panicked"),
            );
        }
        assert!(
            started_when_done.iter().all(|&n| n == N),
            "every reader got its first bytes before any reader finished: readers started \
             when each finished: {started_when_done:?}"
        );
        drop(m);
        running.shutdown().await;
    })
    .await;
}

/// A re-read of a file whose etag has not changed is served by the kernel's page cache:
/// nothing reaches cognifs. Once the object changes (seen after the TTL), the next open
/// drops those pages and reads the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_rereads_come_from_the_page_cache_until_the_object_changes() {
    with_timeout(120, async {
        let running = start().await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        let b = running.profile.bucket.clone();
        let one = pseudo_random(3 << 20, 5);
        put(&admin, &b, &format!("{id}/warm.bin"), one.clone()).await;
        let opts = MountOptions {
            metadata_ttl: Duration::from_secs(1),
            ..MountOptions::default()
        };
        let m = mount_user(&running, ALICE.0, ALICE.1, opts).await;
        let path = m.join("warm.bin");
        let read = |p: std::path::PathBuf| blocking(move || std::fs::read(p).unwrap());
        assert!(read(path.clone()).await == one, "cold read");
        let after_cold = m.mount().fs().stats().bytes_read;
        assert_eq!(after_cold, 3 << 20);
        for _ in 0..3 {
            assert!(read(path.clone()).await == one, "warm read");
        }
        assert_eq!(
            m.mount().fs().stats().bytes_read,
            after_cold,
            "warm re-reads never reached the filesystem"
        );
        let two = pseudo_random(3 << 20, 6);
        put(&admin, &b, &format!("{id}/warm.bin"), two.clone()).await;
        // The old version (from the page cache) until the mount's view is older than the
        // TTL; then the new one, through the filesystem. The kernel may drop a few pages
        // when it sees the new mtime in the middle of a read and read them again, so what
        // reaches cognifs is at least the new version once, not exactly once.
        eventually(Duration::from_secs(30), "the new version read", || async {
            let seen = read(path.clone()).await;
            assert!(seen == one || seen == two, "a read mixed versions");
            seen == two
        })
        .await;
        let after_new = m.mount().fs().stats().bytes_read;
        assert!(
            after_new >= after_cold + (3 << 20),
            "the new version came from the filesystem, not stale pages: {after_new} bytes read"
        );
        for _ in 0..3 {
            assert!(
                read(path.clone()).await == two,
                "warm read of the new version"
            );
        }
        assert_eq!(
            m.mount().fs().stats().bytes_read,
            after_new,
            "warm re-reads of the new version never reached the filesystem"
        );
        drop(m);
        running.shutdown().await;
    })
    .await;
}

/// As root, the mount's kernel readahead is raised from FUSE's 128 KiB to 4 MiB, so the
/// kernel reads in 1 MiB requests with several in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kernel_reads_ahead_4_mib_on_the_mount() {
    with_timeout(60, async {
        let running = start().await;
        let m = mount_user(&running, ALICE.0, ALICE.1, MountOptions::default()).await;
        let p = m.path().to_path_buf();
        let point = blocking(move || p.canonicalize().unwrap()).await;
        let device = cognifs::mounts::device_of(&point).expect("the mount in mountinfo");
        let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
        let kb = std::fs::read_to_string(&knob).unwrap();
        assert_eq!(kb.trim(), "4096", "{knob}");
    })
    .await;
}

/// `--list-only`: attributes from the listing alone, never a HEAD: every object a regular
/// file with the mount's modes and owner and Last-Modified as mtime, whatever its stored
/// metadata says (a symlink s3fs stored shows as a file of its target's length).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_only_attributes_come_from_the_listing_alone() {
    with_timeout(60, async {
        let running = start().await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        let bucket = running.profile.bucket.clone();
        let stored = |key: &str, body: &str, mode: &str| {
            admin
                .put_object()
                .bucket(&bucket)
                .key(format!("{id}/{key}"))
                .metadata("mode", mode)
                .metadata("uid", "1234")
                .metadata("gid", "5678")
                .metadata("mtime", "1000000000")
                .body(body.as_bytes().to_vec().into())
                .send()
        };
        stored("private.txt", "secret", "33152").await.unwrap(); // 0600 file
        stored("link", "private.txt", "41471").await.unwrap(); // s3fs's symlink
        stored("dir/", "", "16832").await.unwrap(); // 0700 directory marker
        put(&admin, &bucket, &format!("{id}/dir/inside"), "x").await;
        let opts = MountOptions {
            list_only: true,
            uid: 4242,
            gid: 4343,
            ..MountOptions::default()
        };
        let m = mount_user(&running, ALICE.0, ALICE.1, opts).await;
        let heads = m.requests().get(RequestKind::Head).total;
        let lists = m.requests().get(RequestKind::List).total;
        let root = m.path().to_path_buf();
        let seen = blocking(move || {
            let mut seen = std::collections::BTreeMap::new();
            for e in std::fs::read_dir(&root).unwrap() {
                let e = e.unwrap();
                let md = std::fs::symlink_metadata(e.path()).unwrap();
                seen.insert(
                    e.file_name().into_string().unwrap(),
                    (md.mode(), md.uid(), md.gid(), md.len(), md.mtime()),
                );
            }
            seen
        })
        .await;
        let modified = |key: &str| {
            let head = admin
                .head_object()
                .bucket(&bucket)
                .key(format!("{id}/{key}"))
                .send();
            async move { head.await.unwrap().last_modified().unwrap().secs() }
        };
        let (private, link) = (modified("private.txt").await, modified("link").await);
        assert_eq!(
            seen,
            std::collections::BTreeMap::from([
                ("dir".to_owned(), (0o040755, 4242, 4343, 0, seen["dir"].4)),
                ("link".to_owned(), (0o100644, 4242, 4343, 11, link)),
                ("private.txt".to_owned(), (0o100644, 4242, 4343, 6, private)),
            ])
        );
        assert_eq!(
            m.requests().get(RequestKind::Head).total,
            heads,
            "no HEAD: the listing alone"
        );
        assert_eq!(
            m.requests().get(RequestKind::List).total,
            lists + 1,
            "one LIST"
        );
        drop(m);
        running.shutdown().await;
    })
    .await;
}

/// An `ls -l` whose HEAD of one entry fails still shows every entry's stored attributes:
/// readdirplus hands that entry out with a zero timeout, and the lookup that follows HEADs it
/// again. (Over the in-memory store, whose fault hits the exact request.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readdirplus_entries_whose_head_failed_are_looked_up_again() {
    use cognifs::store::{Fault, MemoryStore, UserMeta};
    with_timeout(60, async {
        let store = std::sync::Arc::new(MemoryStore::new("bucket", "me"));
        let meta = UserMeta::from([
            ("mode".to_owned(), "33152".to_owned()),
            ("uid".to_owned(), "1234".to_owned()),
            ("gid".to_owned(), "5678".to_owned()),
            ("mtime".to_owned(), "1000000000".to_owned()),
        ]);
        for i in 0..5 {
            store.insert_raw(&format!("me/d/f{i}"), b"data", meta.clone());
        }
        let m = mount_any(store.clone(), "me".into(), MountOptions::default()).await;
        let dir = m.join("d");
        let d = dir.clone();
        assert!(blocking(move || std::fs::metadata(d).unwrap().is_dir()).await);
        // The lookup looks for the directory's listing index in the background.
        eventually(Duration::from_secs(10), "the index looked for", || async {
            store.counts().get(RequestKind::Get) == 1
        })
        .await;
        store.reset_counts();
        store.fail_nth(Some(RequestKind::Head), 2, Fault::SlowDown);
        let seen = blocking(move || {
            let mut seen = Vec::new();
            for e in std::fs::read_dir(&dir).unwrap() {
                let md = std::fs::symlink_metadata(e.unwrap().path()).unwrap();
                seen.push((md.mode(), md.uid(), md.gid(), md.mtime()));
            }
            seen
        })
        .await;
        assert!(!store.armed(), "the fault fired");
        assert_eq!(seen, vec![(0o100600, 1234, 5678, 1_000_000_000); 5]);
        assert_eq!(
            store.counts().get(RequestKind::Head),
            6,
            "a HEAD per entry and the failed one again"
        );
        assert_eq!(
            store.counts().get(RequestKind::Get),
            0,
            "the listing index was looked for when the directory was looked up, not again"
        );
        drop(m);
    })
    .await;
}
