//! Uploads that fail are kept on disk, shown by the mount, and uploaded once S3 is back —
//! by the same mount or the next one — never over someone else's write; the pending area
//! is bounded. The core over the in-memory store: no FUSE, root or server.

use std::sync::Arc;

use cognifs::fs::{Caller, Fs, FsError, MountOptions, ROOT_INO};
use cognifs::pending::{PendingArea, records_in};
use cognifs::store::{Fault, MemoryStore, ObjectStore, UserMeta};

const CALLER: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

struct Setup {
    store: Arc<MemoryStore>,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Setup {
            store: Arc::new(MemoryStore::new("bucket", "us-east-1:me")),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn pending_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("pending")
    }

    /// A mount of the store (a new one each call: as after an unmount or a crash).
    fn mount(&self, pending_max: Option<u64>) -> Fs {
        let opts = MountOptions {
            spool_dir: self.dir.path().join("spool"),
            pending_dir: Some(self.pending_dir()),
            pending_max,
            ..MountOptions::default()
        };
        Fs::new(self.store.clone() as Arc<dyn ObjectStore>, opts)
    }

    fn s3_body(&self, rel: &str) -> Option<Vec<u8>> {
        self.store
            .get_raw(&format!("us-east-1:me/{rel}"))
            .map(|(b, _)| b.to_vec())
    }

    fn s3_down(&self) {
        self.store.fail_always(None, Fault::SlowDown);
    }

    fn s3_back(&self) {
        self.store.clear_faults();
    }
}

fn errno(r: Result<(), FsError>) -> i32 {
    r.err().map_or(0, |e| e.errno)
}

/// Creates `name` under `parent` with `data` and closes it; returns close's errno.
async fn write_file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> i32 {
    let (_, fh) = fs.create(parent, name, 0o640, CALLER).await.unwrap();
    for (i, chunk) in data.chunks(128 << 10).enumerate() {
        fs.write(fh, (i * (128 << 10)) as u64, chunk.to_vec())
            .await
            .unwrap();
    }
    let flushed = fs.flush(fh).await;
    errno(flushed.and(fs.release(fh).await))
}

async fn read_all(fs: &Fs, parent: u64, name: &str) -> Vec<u8> {
    let attr = fs.lookup(parent, name).await.unwrap();
    let fh = fs.open(attr.ino, false, false).await.unwrap();
    let data = fs.read(fh, 0, attr.size as u32 + 1).await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(data.len() as u64, attr.size);
    data.to_vec()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn a_failed_close_keeps_the_data_shows_it_and_uploads_it_when_s3_is_back() {
    let s = Setup::new();
    let fs = s.mount(None);
    let data = pattern(7 << 20, 1);
    // S3 goes away while the file is being written: the close reports it...
    let (_, fh) = fs
        .create(ROOT_INO, "report.pdf", 0o640, CALLER)
        .await
        .unwrap();
    fs.write(fh, 0, data[..4 << 20].to_vec()).await.unwrap();
    s.s3_down();
    fs.write(fh, 4 << 20, data[4 << 20..].to_vec())
        .await
        .unwrap();
    let closed = errno(fs.flush(fh).await.and(fs.release(fh).await));
    assert_eq!(closed, libc::EIO);
    // ...but nothing is lost: kept on disk (fsync'd), and the mount shows it.
    let kept = records_in(&s.pending_dir());
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].rel.as_str(), kept[0].size),
        ("report.pdf", 7 << 20)
    );
    assert_eq!(kept[0].base_etag, None, "a new file");
    assert_eq!(kept[0].meta.get("mode").map(String::as_str), Some("33184"));
    let area = PendingArea::open(&s.pending_dir()).unwrap();
    assert_eq!(std::fs::read(area.data_path(&kept[0])).unwrap(), data);
    assert_eq!(read_all(&fs, ROOT_INO, "report.pdf").await, data);
    assert_eq!(fs.stats().pending.len(), 1);
    assert_eq!(s.s3_body("report.pdf"), None);
    // Still down: a retry fails and keeps it.
    fs.retry_pending_now().await;
    assert_eq!(records_in(&s.pending_dir()).len(), 1);
    assert!(
        records_in(&s.pending_dir())[0]
            .last_error
            .contains("S3 error")
    );
    // Back: uploaded without anyone asking, the record gone.
    s.s3_back();
    fs.retry_pending_now().await;
    assert_eq!(s.s3_body("report.pdf"), Some(data.clone()));
    assert!(records_in(&s.pending_dir()).is_empty());
    assert!(fs.pending_uploads().is_empty());
    assert_eq!(fs.stats().files_open_for_writing, 0);
    let (_, meta) = s.store.get_raw("us-east-1:me/report.pdf").unwrap();
    assert_eq!(meta.get("uid").map(String::as_str), Some("1000"));
    assert_eq!(read_all(&fs, ROOT_INO, "report.pdf").await, data);
}

/// While S3 is down, a kept file stays reachable after the metadata TTL: its directory (the
/// mount's root here) keeps the attributes it showed instead of failing with the HEAD of its
/// marker, which would cut off every path through it.
#[tokio::test]
async fn a_kept_file_stays_reachable_while_s3_is_down_past_the_ttl() {
    let s = Setup::new();
    let ttl = std::time::Duration::from_millis(1);
    let fs = Fs::new(
        s.store.clone() as Arc<dyn ObjectStore>,
        MountOptions {
            metadata_ttl: ttl,
            spool_dir: s.dir.path().join("spool"),
            pending_dir: Some(s.pending_dir()),
            ..MountOptions::default()
        },
    );
    let root = fs.getattr(ROOT_INO).await.unwrap();
    s.s3_down();
    assert_eq!(
        write_file(&fs, ROOT_INO, "kept", b"kept data").await,
        libc::EIO
    );
    // Past the TTL: every attribute the mount holds is stale.
    std::thread::sleep(ttl * 2);
    let again = fs
        .getattr(ROOT_INO)
        .await
        .expect("the root while S3 is down");
    assert_eq!(
        (again.ino, again.kind, again.perm, again.uid),
        (root.ino, root.kind, root.perm, root.uid)
    );
    assert_eq!(read_all(&fs, ROOT_INO, "kept").await, b"kept data");
    s.s3_back();
    fs.retry_pending_now().await;
    assert_eq!(s.s3_body("kept").as_deref(), Some(&b"kept data"[..]));
}

#[tokio::test]
async fn the_next_mount_shows_and_uploads_what_an_earlier_one_kept() {
    let s = Setup::new();
    let data = pattern(300 << 10, 2);
    {
        let fs = s.mount(None);
        let docs = fs.mkdir(ROOT_INO, "docs", 0o755, CALLER).await.unwrap();
        s.s3_down();
        assert_eq!(
            write_file(&fs, docs.ino, "notes.txt", &data).await,
            libc::EIO
        );
        // Unmounted (or crashed) while S3 is down.
    }
    assert_eq!(records_in(&s.pending_dir()).len(), 1);
    let fs = s.mount(None);
    fs.recover().await;
    // Shown (and readable) before S3 is back.
    let docs = fs.lookup(ROOT_INO, "docs").await.unwrap();
    assert_eq!(read_all(&fs, docs.ino, "notes.txt").await, data);
    // Listed (S3 back, not uploaded yet: the listing comes from S3, the file from here).
    s.s3_back();
    let dh = fs.opendir(docs.ino).unwrap();
    let listing: Vec<String> = fs
        .readdir(docs.ino, dh, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    fs.releasedir(dh);
    assert!(listing.contains(&"notes.txt".to_owned()), "{listing:?}");
    assert_eq!(s.s3_body("docs/notes.txt"), None);
    fs.retry_pending_now().await;
    assert_eq!(s.s3_body("docs/notes.txt"), Some(data));
    assert!(records_in(&s.pending_dir()).is_empty());
}

/// The conflict copies of `name` in S3.
fn conflict_copies(s: &Setup, name: &str) -> Vec<String> {
    s.store
        .keys()
        .into_iter()
        .filter(|k| k.contains(&format!("{name}.conflict-")))
        .collect()
}

#[tokio::test]
async fn one_mount_at_a_time_sends_a_kept_upload() {
    let s = Setup::new();
    s.store
        .put("shared.txt", b"original".to_vec().into(), &UserMeta::new())
        .await
        .unwrap();
    let first = s.mount(None);
    let attr = first.lookup(ROOT_INO, "shared.txt").await.unwrap();
    let fh = first.open(attr.ino, true, true).await.unwrap();
    first.write(fh, 0, b"mine".to_vec()).await.unwrap();
    s.s3_down();
    assert_eq!(
        errno(first.flush(fh).await.and(first.release(fh).await)),
        libc::EIO
    );
    assert_eq!(
        write_file(&first, ROOT_INO, "new.txt", b"new").await,
        libc::EIO
    );
    assert_eq!(records_in(&s.pending_dir()).len(), 2);
    // S3 is back and another client rewrites shared.txt; a second mount of the profile
    // starts while the first is still running (its unmount not finished).
    s.s3_back();
    s.store
        .put("shared.txt", b"theirs".to_vec().into(), &UserMeta::new())
        .await
        .unwrap();
    let second = s.mount(None);
    second.recover().await;
    second.retry_pending_now().await;
    assert!(
        second.pending_uploads().is_empty(),
        "the first mount holds them"
    );
    assert!(conflict_copies(&s, "shared.txt").is_empty());
    assert_eq!(s.s3_body("new.txt"), None);
    // The first sends shared.txt (beside the other client's version), then ends with
    // new.txt still kept: the second takes that over and sends it, and nothing twice.
    first.retry_pending_now().await;
    assert_eq!(conflict_copies(&s, "shared.txt").len(), 1);
    s.s3_down();
    first.retry_pending_now().await;
    drop(first);
    s.s3_back();
    second.retry_pending_now().await;
    assert_eq!(s.s3_body("new.txt").as_deref(), Some(&b"new"[..]));
    assert_eq!(s.s3_body("shared.txt").as_deref(), Some(&b"theirs"[..]));
    assert_eq!(
        conflict_copies(&s, "shared.txt").len(),
        1,
        "{:?}",
        s.store.keys()
    );
    assert!(conflict_copies(&s, "new.txt").is_empty());
    assert!(records_in(&s.pending_dir()).is_empty());
}

#[tokio::test]
async fn a_kept_upload_never_overwrites_a_change_made_meanwhile() {
    let s = Setup::new();
    s.store
        .put("shared.txt", b"original".to_vec().into(), &UserMeta::new())
        .await
        .unwrap();
    let fs = s.mount(None);
    let attr = fs.lookup(ROOT_INO, "shared.txt").await.unwrap();
    let fh = fs.open(attr.ino, true, true).await.unwrap();
    fs.write(fh, 0, b"mine".to_vec()).await.unwrap();
    s.s3_down();
    assert_eq!(
        errno(fs.flush(fh).await.and(fs.release(fh).await)),
        libc::EIO
    );
    // Another client writes the object meanwhile.
    s.s3_back();
    s.store
        .put("shared.txt", b"theirs".to_vec().into(), &UserMeta::new())
        .await
        .unwrap();
    fs.retry_pending_now().await;
    assert_eq!(s.s3_body("shared.txt").unwrap(), b"theirs");
    let conflict: Vec<String> = s
        .store
        .keys()
        .into_iter()
        .filter(|k| k.contains("shared.txt.conflict-"))
        .collect();
    assert_eq!(conflict.len(), 1, "{:?}", s.store.keys());
    let name = conflict[0].strip_prefix("us-east-1:me/").unwrap();
    let device = cognifs::fs::pending_device_label(&cognifs::fs::host_name());
    assert!(
        name.starts_with(&format!("shared.txt.conflict-{device}-"))
            && name.ends_with('Z')
            && name.len() == format!("shared.txt.conflict-{device}-20261126T154001Z").len(),
        "{name}"
    );
    assert_eq!(s.s3_body(name).unwrap(), b"mine");
    assert!(records_in(&s.pending_dir()).is_empty());
    let stats = fs.stats();
    assert_eq!(stats.conflicts, 1);
    let last = stats.recent_conflicts.last().unwrap();
    assert_eq!(
        (last.key.as_str(), last.kept_as.as_deref()),
        ("shared.txt", Some(name))
    );
    // The mount shows both: the name what S3 holds, the conflict copy beside it.
    assert_eq!(read_all(&fs, ROOT_INO, "shared.txt").await, b"theirs");
    assert_eq!(read_all(&fs, ROOT_INO, name).await, b"mine");
}

#[tokio::test]
async fn unlink_or_an_explicit_drop_abandons_a_kept_upload_and_nothing_else_does() {
    let s = Setup::new();
    let fs = s.mount(None);
    s.s3_down();
    assert_eq!(write_file(&fs, ROOT_INO, "a", b"aaa").await, libc::EIO);
    assert_eq!(write_file(&fs, ROOT_INO, "b", b"bbb").await, libc::EIO);
    assert_eq!(records_in(&s.pending_dir()).len(), 2);
    // Many failed retries later, both are still kept.
    for _ in 0..5 {
        fs.retry_pending_now().await;
    }
    assert_eq!(records_in(&s.pending_dir()).len(), 2);
    s.s3_back();
    // Deleting the file deletes what was kept of it.
    fs.unlink(ROOT_INO, "a").await.unwrap();
    assert_eq!(records_in(&s.pending_dir()).len(), 1);
    // `cognifs pending drop` removes the record; the mount lets go when it next looks at
    // the area (within 5 s; at once here).
    let area = PendingArea::open(&s.pending_dir()).unwrap();
    area.remove(&records_in(&s.pending_dir())[0]);
    fs.retry_pending_now().await;
    assert!(fs.pending_uploads().is_empty());
    assert_eq!(s.s3_body("b"), None, "dropped, not uploaded");
    assert_eq!(
        fs.lookup(ROOT_INO, "b").await.unwrap_err().errno,
        libc::ENOENT
    );
}

#[tokio::test]
async fn writes_past_the_pending_limit_fail_before_any_byte_is_accepted() {
    let s = Setup::new();
    let fs = s.mount(Some(1 << 20));
    let (attr, fh) = fs.create(ROOT_INO, "big", 0o644, CALLER).await.unwrap();
    fs.write(fh, 0, vec![1; 768 << 10]).await.unwrap();
    let refused = fs
        .write(fh, 768 << 10, vec![2; 512 << 10])
        .await
        .unwrap_err();
    assert_eq!(refused.errno, libc::ENOSPC);
    assert_eq!(
        fs.getattr(attr.ino).await.unwrap().size,
        768 << 10,
        "nothing of it accepted"
    );
    // What fits is still accepted, and the file uploads as usual.
    fs.write(fh, 768 << 10, vec![2; 256 << 10]).await.unwrap();
    fs.flush(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(s.s3_body("big").unwrap().len(), 1 << 20);
    // Kept data counts too: with 1 MiB kept, there is no room for another byte.
    s.s3_down();
    let (_, fh) = fs.create(ROOT_INO, "kept", 0o644, CALLER).await.unwrap();
    fs.write(fh, 0, vec![3; 1 << 20]).await.unwrap();
    assert_eq!(
        errno(fs.flush(fh).await.and(fs.release(fh).await)),
        libc::EIO
    );
    let (_, fh) = fs.create(ROOT_INO, "more", 0o644, CALLER).await.unwrap();
    assert_eq!(
        fs.write(fh, 0, vec![4; 1]).await.unwrap_err().errno,
        libc::ENOSPC
    );
    fs.release(fh).await.ok();
    // Once it is uploaded, there is room again.
    s.s3_back();
    fs.retry_pending_now().await;
    assert_eq!(s.s3_body("kept"), Some(vec![3; 1 << 20]));
    assert!(records_in(&s.pending_dir()).is_empty(), "nothing kept now");
    let (_, fh) = fs.create(ROOT_INO, "more2", 0o644, CALLER).await.unwrap();
    fs.write(fh, 0, vec![4; 1000]).await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(s.s3_body("more2"), Some(vec![4; 1000]));
}
