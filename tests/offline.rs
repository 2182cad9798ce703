//! Offline, through the filesystem core without FUSE: S3 stops answering (connection
//! refused), the mount goes on answering from what it keeps, accepts changes, keeps them on
//! disk across a remount, and sends them in order once S3 answers again.

use std::sync::Arc;
use std::time::Duration;

use cognifs::fs::{Attr, Caller, Fs, Kind, MountOptions, ROOT_INO, SetAttr};
use cognifs::store::{Fault, MemoryStore, ObjectStore, RequestKind, UserMeta};

const CALLER: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        Machine {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A mount of `store` keeping everything under this machine's directory, as the daemon
    /// does under the profile's cache and state directories.
    fn mount(&self, store: &Arc<MemoryStore>, tune: impl FnOnce(&mut MountOptions)) -> Arc<Fs> {
        let d = self.dir.path();
        let mut opts = MountOptions {
            // Short: offline answers must not depend on anything still fresh.
            metadata_ttl: Duration::from_millis(1),
            dir_times_interval: Duration::from_secs(3600),
            spool_dir: d.join("spool"),
            pending_dir: Some(d.join("state/pending")),
            disk_cache: Some(d.join("cache/blocks")),
            known_tree: Some(d.join("cache/tree")),
            meta_cache: Some(d.join("cache/meta.jsonl")),
            ..MountOptions::default()
        };
        tune(&mut opts);
        Arc::new(Fs::new(store.clone() as Arc<dyn ObjectStore>, opts))
    }
}

async fn walk(fs: &Fs, path: &str) -> Result<Attr, i32> {
    let mut attr = fs.getattr(ROOT_INO).await.map_err(|e| e.errno)?;
    for name in path.split('/').filter(|s| !s.is_empty()) {
        attr = fs.lookup(attr.ino, name).await.map_err(|e| e.errno)?;
    }
    Ok(attr)
}

async fn parent_and_name<'p>(fs: &Fs, path: &'p str) -> (u64, &'p str) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    (walk(fs, dir).await.unwrap().ino, name)
}

async fn read_all(fs: &Fs, path: &str) -> Result<Vec<u8>, i32> {
    let attr = walk(fs, path).await?;
    let fh = fs.open(attr.ino, false, false).await.map_err(|e| e.errno)?;
    let mut out = Vec::new();
    loop {
        match fs.read(fh, out.len() as u64, 1 << 20).await {
            Ok(chunk) if chunk.is_empty() => break,
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(e) => {
                fs.release(fh).await.unwrap();
                return Err(e.errno);
            }
        }
    }
    fs.release(fh).await.map_err(|e| e.errno)?;
    Ok(out)
}

/// `open(O_CREAT|O_TRUNC)`, one write, `close`: the errno `close` returned.
async fn save(fs: &Fs, path: &str, data: &[u8]) -> i32 {
    let (parent, name) = parent_and_name(fs, path).await;
    let fh = match fs.lookup(parent, name).await {
        Ok(a) => fs.open(a.ino, true, true).await.unwrap(),
        Err(_) => {
            fs.create(parent, name, libc::S_IFREG | 0o644, CALLER)
                .await
                .unwrap()
                .1
        }
    };
    fs.write(fh, 0, data.to_vec()).await.unwrap();
    let flushed = fs.flush(fh).await;
    let released = fs.release(fh).await;
    flushed.and(released).err().map_or(0, |e| e.errno)
}

async fn names(fs: &Fs, path: &str) -> Vec<String> {
    let attr = walk(fs, path).await.unwrap();
    let fh = fs.opendir(attr.ino).unwrap();
    let entries = fs.readdir(attr.ino, fh, 0).await.unwrap();
    fs.releasedir(fh);
    entries[2..].iter().map(|e| e.name.clone()).collect()
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8 ^ seed).collect()
}

/// What a user does on a train: S3 is down, the mount keeps working, and everything done
/// meanwhile reaches S3 when it is back — also across a remount while still offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_offline_remount_offline_and_everything_lands() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    let machine = Machine::new();
    let fs = machine.mount(&store, |_| {});
    fs.recover().await;
    // Online: a tree, read once (so its data is on disk), a chmod, a directory.
    let (root, _) = parent_and_name(&fs, "x").await;
    fs.mkdir(root, "docs", 0o755, CALLER).await.unwrap();
    assert_eq!(save(&fs, "docs/report.txt", b"version 1").await, 0);
    assert_eq!(save(&fs, "docs/old.txt", b"to be removed").await, 0);
    let big = body(3 << 20, 7);
    assert_eq!(save(&fs, "big.bin", &big).await, 0);
    assert_eq!(read_all(&fs, "big.bin").await.unwrap(), big);
    assert_eq!(
        read_all(&fs, "docs/report.txt").await.unwrap(),
        b"version 1"
    );
    store
        .put("never-read.bin", body(10, 1).into(), &UserMeta::new())
        .await
        .unwrap();
    assert_eq!(names(&fs, "").await, ["big.bin", "docs", "never-read.bin"]);
    assert_eq!(names(&fs, "docs").await, ["old.txt", "report.txt"]);

    // S3 stops answering.
    store.fail_always(None, Fault::Unreachable);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(names(&fs, "").await, ["big.bin", "docs", "never-read.bin"]);
    assert!(fs.is_offline(), "a listing with no answer made it offline");
    assert_eq!(
        read_all(&fs, "big.bin").await.unwrap(),
        big,
        "from the disk cache"
    );
    assert_eq!(
        read_all(&fs, "never-read.bin").await,
        Err(libc::EIO),
        "never cached"
    );
    // Changes: a new file, an edit, a directory, a chmod, an unlink, an editor's save.
    assert_eq!(save(&fs, "docs/new.txt", b"written offline").await, 0);
    assert_eq!(save(&fs, "docs/report.txt", b"version 2").await, 0);
    let (docs, _) = parent_and_name(&fs, "docs/x").await;
    fs.mkdir(docs, "sub", 0o700, CALLER).await.unwrap();
    let big_attr = walk(&fs, "big.bin").await.unwrap();
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    fs.setattr(big_attr.ino, None, chmod).await.unwrap();
    fs.unlink(docs, "old.txt").await.unwrap();
    assert_eq!(save(&fs, "docs/.report.txt.swp", b"version 3").await, 0);
    fs.rename(docs, ".report.txt.swp", docs, "report.txt", false)
        .await
        .unwrap();
    // A rename S3 would have to do: refused, mv copies instead.
    let err = fs
        .rename(root, "big.bin", root, "moved.bin", false)
        .await
        .unwrap_err();
    assert_eq!(err.errno, libc::EXDEV);
    // Symlinks need S3.
    assert_eq!(
        fs.symlink(root, "l", b"big.bin", CALLER)
            .await
            .unwrap_err()
            .errno,
        libc::EIO
    );
    assert_eq!(names(&fs, "docs").await, ["new.txt", "report.txt", "sub"]);
    assert_eq!(
        read_all(&fs, "docs/report.txt").await.unwrap(),
        b"version 3"
    );
    assert_eq!(walk(&fs, "big.bin").await.unwrap().perm, 0o600);
    let stats = fs.stats();
    assert!(!stats.connectivity.online);
    assert_eq!(stats.offline.queued_changes, 3, "{:?}", stats.offline);
    assert_eq!(stats.pending.len(), 2, "new.txt and report.txt are kept");

    // Unmounted and mounted again, still offline: everything as it was.
    fs.close_caches();
    drop(fs);
    let fs = machine.mount(&store, |_| {});
    fs.recover().await;
    assert_eq!(names(&fs, "").await, ["big.bin", "docs", "never-read.bin"]);
    assert_eq!(names(&fs, "docs").await, ["new.txt", "report.txt", "sub"]);
    assert_eq!(
        read_all(&fs, "docs/report.txt").await.unwrap(),
        b"version 3"
    );
    assert_eq!(
        read_all(&fs, "docs/new.txt").await.unwrap(),
        b"written offline"
    );
    assert_eq!(read_all(&fs, "big.bin").await.unwrap(), big);
    assert_eq!(walk(&fs, "big.bin").await.unwrap().perm, 0o600);
    assert_eq!(walk(&fs, "docs/sub").await.unwrap().perm, 0o700);
    assert_eq!(walk(&fs, "docs/old.txt").await.unwrap_err(), libc::ENOENT);

    // S3 answers again: the probe notices, the journal goes first, then the uploads.
    store.clear_faults();
    fs.stay_in_touch_now().await;
    assert!(!fs.is_offline());
    let stats = fs.stats();
    assert_eq!(stats.offline.queued_changes, 0, "{:?}", stats.offline);
    assert!(stats.pending.is_empty(), "{:?}", stats.pending);
    assert_eq!(stats.conflicts, 0);
    let raw = |key: &str| store.get_raw(&format!("p/{key}"));
    assert_eq!(&raw("docs/report.txt").unwrap().0[..], b"version 3");
    assert_eq!(&raw("docs/new.txt").unwrap().0[..], b"written offline");
    assert!(raw("docs/old.txt").is_none());
    assert!(raw("docs/.report.txt.swp").is_none());
    assert_eq!(
        raw("docs/sub/").unwrap().1["mode"],
        (libc::S_IFDIR | 0o700).to_string()
    );
    assert_eq!(
        raw("big.bin").unwrap().1["mode"],
        (libc::S_IFREG | 0o600).to_string()
    );
    assert_eq!(&raw("big.bin").unwrap().0[..], &big[..]);
    // And the mount shows S3's state (nothing stale).
    assert_eq!(names(&fs, "docs").await, ["new.txt", "report.txt", "sub"]);
}

/// A change another device made while this one was offline is never overwritten: the
/// offline save goes beside it as a conflict copy, the offline delete does not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_changes_never_replace_what_another_device_wrote_meanwhile() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    let machine = Machine::new();
    let fs = machine.mount(&store, |_| {});
    assert_eq!(save(&fs, "a.txt", b"base").await, 0);
    assert_eq!(save(&fs, "b.txt", b"base").await, 0);
    assert_eq!(read_all(&fs, "a.txt").await.unwrap(), b"base");
    store.fail_always(None, Fault::Unreachable);
    assert_eq!(save(&fs, "a.txt", b"laptop").await, 0);
    let (root, _) = parent_and_name(&fs, "x").await;
    fs.unlink(root, "b.txt").await.unwrap();
    // Meanwhile the web app saves both.
    store.clear_faults();
    store
        .put("a.txt", "web".into(), &UserMeta::new())
        .await
        .unwrap();
    store
        .put("b.txt", "web".into(), &UserMeta::new())
        .await
        .unwrap();
    fs.stay_in_touch_now().await;
    assert_eq!(&store.get_raw("p/a.txt").unwrap().0[..], b"web");
    assert_eq!(
        &store.get_raw("p/b.txt").unwrap().0[..],
        b"web",
        "not deleted"
    );
    let copies: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("p/a.txt.conflict-"))
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", store.keys());
    assert_eq!(&store.get_raw(&copies[0]).unwrap().0[..], b"laptop");
    assert_eq!(fs.stats().conflicts, 2);
}

/// `--offline-strict`: close fails while S3 does not answer (the data is kept all the
/// same), and changes to the tree are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_keeps_the_old_rule() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    let machine = Machine::new();
    let fs = machine.mount(&store, |o| o.offline_strict = true);
    assert_eq!(save(&fs, "a.txt", b"1").await, 0);
    store.fail_always(None, Fault::Unreachable);
    assert_eq!(save(&fs, "a.txt", b"2").await, libc::EIO);
    let (root, _) = parent_and_name(&fs, "x").await;
    assert_eq!(
        fs.mkdir(root, "d", 0o755, CALLER).await.unwrap_err().errno,
        libc::EIO
    );
    assert_eq!(fs.stats().offline.queued_changes, 0);
    assert_eq!(
        fs.stats().pending.len(),
        1,
        "the failed close is kept all the same"
    );
    store.clear_faults();
    fs.stay_in_touch_now().await;
    assert_eq!(&store.get_raw("p/a.txt").unwrap().0[..], b"2");
}

/// While offline nothing is sent but the probe, on its schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_sends_nothing_but_the_probe() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    let machine = Machine::new();
    let fs = machine.mount(&store, |_| {});
    assert_eq!(save(&fs, "a.txt", b"1").await, 0);
    assert_eq!(read_all(&fs, "a.txt").await.unwrap(), b"1");
    assert_eq!(names(&fs, "").await, ["a.txt"]);
    store.fail_always(None, Fault::Unreachable);
    // Past the 1 ms metadata TTL: the listing is asked for again, and gets no answer.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(names(&fs, "").await, ["a.txt"]);
    assert!(fs.is_offline());
    store.reset_counts();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(names(&fs, "").await[0], "a.txt");
        assert_eq!(read_all(&fs, "a.txt").await.unwrap(), b"1");
        assert_eq!(save(&fs, "b.txt", b"2").await, 0);
        fs.stay_in_touch().await;
    }
    let counts = store.counts();
    assert_eq!(counts.total(), 0, "{counts:?}");
    fs.stay_in_touch_now().await;
    assert_eq!(store.counts().get(RequestKind::List), 1, "one probe");
    assert_eq!(walk(&fs, "a.txt").await.unwrap().kind, Kind::File);
}

/// `cognifs offline pin`: a tree fetched into the disk cache and kept there whatever else is
/// read, so it is there offline; a pin that would not fit is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_trees_stay_on_disk_and_are_there_offline() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    for (key, len, seed) in [
        ("trip/map.pdf", 3 << 20, 1),
        ("trip/plan.txt", 5_000, 2),
        ("trip/sub/x", 10, 3),
    ] {
        store
            .put(key, body(len, seed).into(), &UserMeta::new())
            .await
            .unwrap();
    }
    for i in 0..8 {
        store
            .put(
                &format!("other{i}"),
                body(2 << 20, 10 + i).into(),
                &UserMeta::new(),
            )
            .await
            .unwrap();
    }
    let machine = Machine::new();
    // Room for about 8 MiB of blocks: the trip (3 MiB) and little else.
    let fs = machine.mount(&store, |o| o.disk_cache_bytes = Some(8 << 20));
    assert_eq!(
        fs.pin("trip/missing").await.unwrap_err().errno,
        libc::ENOENT
    );
    store.reset_counts();
    let report = fs.pin("trip").await.unwrap();
    assert_eq!((report.files, report.bytes), (3, (3 << 20) + 5_010));
    assert_eq!(report.fetched, report.bytes);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(fs.pins(), ["trip/"]);
    // Pinning again fetches nothing.
    assert_eq!(fs.pin("trip").await.unwrap().fetched, 0);
    // 16 MiB of other files read through an 8 MiB cache: the pinned blocks stay.
    for i in 0..8 {
        assert_eq!(
            read_all(&fs, &format!("other{i}")).await.unwrap(),
            body(2 << 20, 10 + i)
        );
    }
    let disk = fs.stats().disk_cache.unwrap();
    assert!(disk.evicted > 0, "{disk:?}");
    assert!(disk.pinned_bytes >= (3 << 20) + 5_010, "{disk:?}");
    // Too much to pin: refused, nothing fetched.
    store.reset_counts();
    assert_eq!(fs.pin("").await.unwrap_err().errno, libc::ENOSPC);
    assert_eq!(store.counts().get(RequestKind::Get), 0);
    assert_eq!(fs.pins(), ["trip/"]);

    // On the plane, after a remount.
    fs.close_caches();
    drop(fs);
    store.fail_always(None, Fault::Unreachable);
    let fs = machine.mount(&store, |o| o.disk_cache_bytes = Some(8 << 20));
    assert_eq!(
        read_all(&fs, "trip/map.pdf").await.unwrap(),
        body(3 << 20, 1)
    );
    assert_eq!(read_all(&fs, "trip/sub/x").await.unwrap(), body(10, 3));
    assert_eq!(fs.pins(), ["trip/"]);

    // A new version of a pinned file replaces the old one's blocks, not adds to them.
    store.clear_faults();
    fs.stay_in_touch_now().await;
    store
        .put("trip/map.pdf", body(3 << 20, 7).into(), &UserMeta::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    fs.pin("trip").await.unwrap();
    let disk = fs.stats().disk_cache.unwrap();
    assert!(disk.pinned_bytes < 2 * (3 << 20), "{disk:?}");
    assert!(fs.unpin("trip").await.unwrap());
    assert!(fs.pins().is_empty());
    assert_eq!(fs.stats().disk_cache.unwrap().pinned_bytes, 0);
}

/// A long queue: many files and directories made offline, all sent in order once S3
/// answers, nothing left behind. `OFFLINE_QUEUE_FILES` (300) sets its size; the time the
/// queue took is printed (a figure for the notes, not a claim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_offline_queue_drains_whole() {
    let files: usize = std::env::var("OFFLINE_QUEUE_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let store = Arc::new(MemoryStore::new("b", "p"));
    let machine = Machine::new();
    let fs = machine.mount(&store, |_| {});
    assert!(names(&fs, "").await.is_empty());
    store.fail_always(None, Fault::Unreachable);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(names(&fs, "").await.is_empty());
    assert!(fs.is_offline());
    let (root, _) = parent_and_name(&fs, "x").await;
    let dirs = files / 10;
    let started = std::time::Instant::now();
    for d in 0..dirs {
        fs.mkdir(root, &format!("d{d}"), 0o755, CALLER)
            .await
            .unwrap();
    }
    for i in 0..files {
        let path = format!("d{}/f{i}", i % dirs);
        assert_eq!(save(&fs, &path, format!("file {i}").as_bytes()).await, 0);
    }
    let queued_in = started.elapsed();
    let stats = fs.stats();
    assert_eq!(stats.offline.queued_changes, dirs as u64);
    assert_eq!(stats.pending.len(), files);
    store.clear_faults();
    let started = std::time::Instant::now();
    fs.stay_in_touch_now().await;
    let drained_in = started.elapsed();
    eprintln!(
        "{files} files and {dirs} directories: kept offline in {queued_in:?}, sent in {drained_in:?}"
    );
    let stats = fs.stats();
    assert_eq!(stats.offline.queued_changes, 0);
    assert!(stats.pending.is_empty(), "{} left", stats.pending.len());
    for i in (0..files).step_by(files / 10) {
        let key = format!("p/d{}/f{i}", i % dirs);
        assert_eq!(
            store.get_raw(&key).unwrap().0,
            format!("file {i}").as_bytes()
        );
    }
    assert_eq!(store.keys().len(), files + dirs);
}

/// A file read once and then renamed (itself, or with its directory) reads offline after a
/// remount: what the disk kept of it follows it to the key it was copied to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_file_reads_offline_after_a_remount() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    let (notes, inner) = (body((3 << 20) + 77, 1), body(5_000, 2));
    store
        .put("notes.txt", notes.clone().into(), &UserMeta::new())
        .await
        .unwrap();
    store
        .put("dir/inner.txt", inner.clone().into(), &UserMeta::new())
        .await
        .unwrap();
    let machine = Machine::new();
    let fs = machine.mount(&store, |_| {});
    assert_eq!(read_all(&fs, "notes.txt").await.unwrap(), notes);
    assert_eq!(read_all(&fs, "dir/inner.txt").await.unwrap(), inner);
    fs.rename(ROOT_INO, "notes.txt", ROOT_INO, "kept.txt", false)
        .await
        .unwrap();
    fs.rename(ROOT_INO, "dir", ROOT_INO, "moved", false)
        .await
        .unwrap();
    assert_eq!(names(&fs, "").await, ["kept.txt", "moved"]);
    assert_eq!(names(&fs, "moved").await, ["inner.txt"]);
    fs.close_caches();
    drop(fs);

    store.fail_always(None, Fault::Unreachable);
    let fs = machine.mount(&store, |_| {});
    assert_eq!(read_all(&fs, "kept.txt").await, Ok(notes));
    assert_eq!(read_all(&fs, "moved/inner.txt").await, Ok(inner));
    assert!(fs.is_offline());
}
