//! Offline through a real mount: devstack is stopped as a train, a plane or a dead VPN
//! would stop S3, and the mount goes on working from what this machine keeps; when devstack
//! starts again on the same data, everything done meanwhile reaches S3 with no user action.
//! Also: a remount reads a cached file with no GET.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cognifs::fs::MountOptions;
use cognifs::store::RequestKind;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

/// This machine's directories: spool, pending area, disk cache, saved listings, metadata.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        Machine {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn opts(&self, ttl: Duration) -> MountOptions {
        let d = self.dir.path();
        MountOptions {
            metadata_ttl: ttl,
            spool_dir: d.join("spool"),
            pending_dir: Some(d.join("state/pending")),
            disk_cache: Some(d.join("cache/blocks")),
            known_tree: Some(d.join("cache/tree")),
            meta_cache: Some(d.join("cache/meta.jsonl")),
            ..MountOptions::default()
        }
    }
}

/// Drops the kernel's cached pages of `path` (so the next read reaches the mount).
fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a plain syscall on a descriptor this function owns.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "fadvise");
}

/// What the admin sees in devstack's S3 under alice's prefix.
async fn s3_object(running: &devstack::Running, key: &str) -> Option<Vec<u8>> {
    let admin = admin_s3(running);
    let got = admin
        .get_object()
        .bucket(&running.profile.bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    Some(got.body.collect().await.ok()?.to_vec())
}

/// Polls `done` until it holds, or fails after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    while !done().await {
        assert!(
            Instant::now() < until,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_train_ride_offline_then_everything_is_in_s3() {
    with_timeout(180, async {
        let data_dir = tempfile::tempdir().unwrap();
        let running = start_with(|o| o.data_dir = Some(data_dir.path().to_path_buf())).await;
        let addr = running.addr;
        let machine = Machine::new();
        let ttl = Duration::from_millis(300);
        let mnt = mount_user(&running, ALICE.0, ALICE.1, machine.opts(ttl)).await;
        let prefix = format!("{}/", mnt.identity_id);
        let big = pseudo_random(3 << 20, 5);
        let (mnt, big) = blocking(move || {
            std::fs::create_dir(mnt.join("docs")).unwrap();
            std::fs::write(mnt.join("docs/notes.txt"), b"before the train\n").unwrap();
            std::fs::write(mnt.join("big.bin"), &big).unwrap();
            std::fs::set_permissions(mnt.join("big.bin"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            // Read once: on this disk from now on.
            assert_eq!(std::fs::read(mnt.join("big.bin")).unwrap(), big);
            assert_eq!(
                std::fs::read(mnt.join("docs/notes.txt")).unwrap(),
                b"before the train\n"
            );
            let listed: Vec<_> = std::fs::read_dir(mnt.path()).unwrap().flatten().collect();
            assert_eq!(listed.len(), 2);
            (mnt, big)
        })
        .await;

        // The train enters the tunnel.
        running.shutdown().await;
        let fs = mnt.mount().fs().clone();
        let (mnt, big) = blocking(move || {
            // Past the metadata TTL: everything below asks S3, which does not answer.
            std::thread::sleep(ttl * 2);
            let mut names: Vec<String> = std::fs::read_dir(mnt.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(names, ["big.bin", "docs"]);
            let meta = std::fs::metadata(mnt.join("big.bin")).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            assert_eq!(meta.len(), big.len() as u64);
            drop_page_cache(&mnt.join("big.bin"));
            assert_eq!(
                std::fs::read(mnt.join("big.bin")).unwrap(),
                big,
                "from the disk cache"
            );
            // Saving a new file, a directory, an edit: all exit 0.
            std::fs::write(mnt.join("docs/written-offline.txt"), b"in the tunnel\n").unwrap();
            std::fs::create_dir(mnt.join("photos")).unwrap();
            let mut notes = std::fs::OpenOptions::new()
                .append(true)
                .open(mnt.join("docs/notes.txt"))
                .unwrap();
            use std::io::Write;
            notes.write_all(b"during the train\n").unwrap();
            notes.sync_all().unwrap();
            drop(notes);
            assert_eq!(
                std::fs::read(mnt.join("docs/notes.txt")).unwrap(),
                b"before the train\nduring the train\n"
            );
            (mnt, big)
        })
        .await;
        let stats = fs.stats();
        assert!(!stats.connectivity.online, "status says offline");
        assert!(stats.connectivity.offline_since.is_some());
        assert_eq!(stats.offline.queued_changes, 1, "the mkdir");
        assert_eq!(
            stats.pending.len(),
            2,
            "two files kept: {:?}",
            stats.pending
        );

        // Out of the tunnel: devstack is back on the same data and port.
        let running = start_with(|o| {
            o.data_dir = Some(data_dir.path().to_path_buf());
            o.listen = addr;
        })
        .await;
        let back = Instant::now();
        let key = |rel: &str| format!("{prefix}{rel}");
        eventually(Duration::from_secs(30), "everything in S3", || {
            let (running, key) = (&running, &key);
            async move {
                s3_object(running, &key("docs/written-offline.txt"))
                    .await
                    .as_deref()
                    == Some(&b"in the tunnel\n"[..])
                    && s3_object(running, &key("docs/notes.txt")).await.as_deref()
                        == Some(&b"before the train\nduring the train\n"[..])
                    && s3_object(running, &key("photos/")).await.is_some()
            }
        })
        .await;
        eprintln!("in S3 {:?} after devstack came back", back.elapsed());
        assert_eq!(s3_object(&running, &key("big.bin")).await.unwrap(), big);
        let stats = fs.stats();
        assert!(stats.connectivity.online);
        assert_eq!(stats.offline.queued_changes, 0);
        assert!(stats.pending.is_empty(), "{:?}", stats.pending);
        assert_eq!(stats.conflicts, 0);
        drop(mnt);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remount_reads_a_cached_file_with_no_get() {
    with_timeout(120, async {
        let running = start().await;
        let machine = Machine::new();
        let opts = machine.opts(Duration::from_secs(5));
        let mnt = mount_user(&running, ALICE.0, ALICE.1, opts.clone()).await;
        let data = pseudo_random(5 << 20, 9);
        let (mnt, data) = blocking(move || {
            std::fs::write(mnt.join("f.bin"), &data).unwrap();
            (mnt, data)
        })
        .await;
        drop(mnt);
        // A file read through a cold mount is fetched once...
        let mnt = mount_user(&running, ALICE.0, ALICE.1, opts.clone()).await;
        let (mnt, data) = blocking(move || {
            assert_eq!(std::fs::read(mnt.join("f.bin")).unwrap(), data);
            (mnt, data)
        })
        .await;
        drop(mnt);
        // ... and after a remount not at all: the lookup's etag validates the disk cache.
        let mnt = mount_user(&running, ALICE.0, ALICE.1, opts).await;
        let gets_before = mnt.requests().get(RequestKind::Get).total;
        let mnt = blocking(move || {
            assert_eq!(std::fs::read(mnt.join("f.bin")).unwrap(), data);
            mnt
        })
        .await;
        assert_eq!(mnt.requests().get(RequestKind::Get).total - gets_before, 0);
        let disk = mnt.mount().fs().stats().disk_cache.unwrap();
        assert!(disk.hits >= 5, "{disk:?}");
    })
    .await;
}

/// Offline for longer than the credentials last (and the ID token): they expire while
/// Cognito cannot be reached to renew them; when devstack is back, the first refusal
/// renews them and what was kept lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_past_the_credentials_lifetime() {
    with_timeout(180, async {
        let data_dir = tempfile::tempdir().unwrap();
        let lifetime = Duration::from_secs(12);
        let options = |o: &mut devstack::Options| {
            o.data_dir = Some(data_dir.path().to_path_buf());
            o.credentials_ttl = lifetime;
            o.token_ttl = lifetime;
        };
        let running = start_with(options).await;
        let addr = running.addr;
        let machine = Machine::new();
        let mnt = mount_user(
            &running,
            ALICE.0,
            ALICE.1,
            machine.opts(Duration::from_millis(300)),
        )
        .await;
        let key = format!("{}/late.txt", mnt.identity_id);
        let mnt = blocking(move || {
            std::fs::write(mnt.join("early.txt"), b"online").unwrap();
            mnt
        })
        .await;
        running.shutdown().await;
        let offline_since = Instant::now();
        let mnt = blocking(move || {
            std::fs::write(mnt.join("late.txt"), b"written offline").unwrap();
            mnt
        })
        .await;
        // Past both lifetimes, while nothing answers.
        while offline_since.elapsed() < lifetime * 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!mnt.mount().fs().stats().connectivity.online);
        let running = start_with(|o| {
            options(o);
            o.listen = addr;
        })
        .await;
        eventually(Duration::from_secs(30), "the offline file in S3", || {
            let (running, key) = (&running, &key);
            async move { s3_object(running, key).await.as_deref() == Some(&b"written offline"[..]) }
        })
        .await;
        eprintln!("offline for {:?}", offline_since.elapsed());
        assert!(mnt.mount().fs().stats().pending.is_empty());
        // Unmounted while devstack still answers.
        drop(mnt);
    })
    .await;
}
