//! How many S3 requests each common operation costs, as exact numbers, so a regression
//! (one more HEAD per file in a listing, a LIST per stat) shows up as a failing test.
//!
//! Each operation is driven as the kernel drives it (the same calls in the same order) on a
//! fresh `Fs` over a [`MemoryStore`]; the store counts the requests by kind.

use std::sync::Arc;
use std::time::Duration;

use cognifs::fs::{Caller, Fs, Kind, MountOptions, ROOT_INO, SetAttr};

const CALLER: Caller = Caller {
    uid: 1000,
    gid: 1000,
};
use cognifs::store::{MemoryStore, ObjectStore, RequestCounts, RequestKind, UserMeta};

struct Setup {
    rt: tokio::runtime::Runtime,
    store: Arc<MemoryStore>,
    fs: Fs,
    _spool: tempfile::TempDir,
}

fn setup(seed: &[(&str, usize)]) -> Setup {
    setup_with(seed, |_| {})
}

fn setup_with(seed: &[(&str, usize)], tune: impl FnOnce(&mut MountOptions)) -> Setup {
    let store = Arc::new(MemoryStore::new("bucket", "us-east-1:counts"));
    mount_on(store, seed, tune)
}

/// Longer than the time after which a HEAD's answer is kept by version (`fs/asked.rs`).
const SETTLE: Duration = Duration::from_secs(3);

/// A mount of `store` (seeded with `seed`): a later mount of the same bucket.
fn mount_on(
    store: Arc<MemoryStore>,
    seed: &[(&str, usize)],
    tune: impl FnOnce(&mut MountOptions),
) -> Setup {
    for (key, size) in seed {
        store.insert_raw(
            &format!("us-east-1:counts/{key}"),
            &vec![7u8; *size],
            UserMeta::new(),
        );
    }
    // What was there before this mount was written some time ago: a HEAD's answer stands
    // for its version (an object written within the second before could share it).
    store.age(SETTLE);
    mount_now(store, tune)
}

/// A mount of `store` as it is, written just now or not.
fn mount_now(store: Arc<MemoryStore>, tune: impl FnOnce(&mut MountOptions)) -> Setup {
    let spool = tempfile::tempdir().unwrap();
    let opts = MountOptions {
        metadata_ttl: Duration::from_secs(60),
        // Directory times are written behind (see `directory_times_are_written_behind`).
        dir_times_interval: Duration::from_secs(3600),
        spool_dir: spool.path().to_path_buf(),
        ..MountOptions::default()
    };
    let mut opts = opts;
    tune(&mut opts);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = Fs::new(store.clone() as Arc<dyn ObjectStore>, opts);
    Setup {
        rt,
        store,
        fs,
        _spool: spool,
    }
}

/// `ls -l DIR` as the kernel drives it: look the directory up, read it, stat every entry.
/// Returns the number of entries (`.` and `..` included).
fn ls_l(s: &Setup, dir: &str) -> usize {
    s.rt.block_on(async {
        let d = s.fs.lookup(ROOT_INO, dir).await.unwrap();
        let fh = s.fs.opendir(d.ino).unwrap();
        let entries = s.fs.readdir(d.ino, fh, 0).await.unwrap();
        s.fs.releasedir(fh);
        for e in &entries[2..] {
            let a = s.fs.lookup(d.ino, &e.name).await.unwrap();
            s.fs.getattr(a.ino).await.unwrap();
        }
        entries.len()
    })
}

/// Requests by kind, for the operations that cost any.
/// Waits until `store` has counted what `asked` says (requests a lookup started in the
/// background); fails the test after 5 s.
async fn until_counted(store: &MemoryStore, what: &str, asked: impl Fn(&RequestCounts) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !asked(&store.counts()) {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn counts(store: &MemoryStore) -> Vec<(RequestKind, u64)> {
    store
        .counts()
        .0
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn stat_of_a_fresh_file() {
    let s = setup(&[("f", 10)]);
    s.rt.block_on(async {
        let a = s.fs.lookup(ROOT_INO, "f").await.unwrap();
        s.fs.getattr(a.ino).await.unwrap();
    });
    // HEAD (the object, with its metadata) and a one-key LIST (is `f/` a directory?), at once.
    assert_eq!(
        counts(&s.store),
        [(RequestKind::Head, 1), (RequestKind::List, 1)]
    );
}

#[test]
fn ls_l_of_a_fresh_directory() {
    let files: Vec<(String, usize)> = (0..50).map(|i| (format!("d/f{i:02}"), 100)).collect();
    let seed: Vec<(&str, usize)> = files.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let s = setup(&seed);
    assert_eq!(ls_l(&s, "d"), 52);
    // The directory's lookup (HEAD + LIST, whose page is the whole listing), the GET that
    // finds it has no listing index, and one HEAD per file for its metadata (in
    // parallel); the stats then cost nothing.
    assert_eq!(
        counts(&s.store),
        [
            (RequestKind::Head, 51),
            (RequestKind::List, 1),
            (RequestKind::Get, 1)
        ]
    );
}

#[test]
fn ls_l_again_within_the_ttl_costs_nothing() {
    let s = setup(&[("d/a", 1), ("d/b", 2)]);
    ls_l(&s, "d");
    s.store.reset_counts();
    assert_eq!(ls_l(&s, "d"), 4);
    assert_eq!(counts(&s.store), []);
}

#[test]
fn cp_of_a_small_file() {
    let s = setup(&[]);
    s.rt.block_on(async {
        assert_eq!(
            s.fs.lookup(ROOT_INO, "new").await.unwrap_err().errno,
            libc::ENOENT
        );
        let (_, fh) =
            s.fs.create(ROOT_INO, "new", 0o100644, CALLER)
                .await
                .unwrap();
        s.fs.write(fh, 0, vec![1; 4096]).await.unwrap();
        s.fs.flush(fh).await.unwrap();
        s.fs.release(fh).await.unwrap();
    });
    // The failed lookup (HEAD + LIST), then one PUT at close.
    assert_eq!(
        counts(&s.store),
        [
            (RequestKind::Head, 1),
            (RequestKind::List, 1),
            (RequestKind::Put, 1)
        ]
    );
}

#[test]
fn cp_of_a_large_file() {
    let s = setup(&[]);
    let size = 20 << 20;
    s.rt.block_on(async {
        assert_eq!(
            s.fs.lookup(ROOT_INO, "big").await.unwrap_err().errno,
            libc::ENOENT
        );
        let (_, fh) =
            s.fs.create(ROOT_INO, "big", 0o100644, CALLER)
                .await
                .unwrap();
        for off in (0..size).step_by(1 << 20) {
            s.fs.write(fh, off as u64, vec![2; 1 << 20]).await.unwrap();
        }
        s.fs.flush(fh).await.unwrap();
        s.fs.release(fh).await.unwrap();
    });
    // Streamed while written: 8 MiB parts (8 + 8 + 4), one create and one complete.
    assert_eq!(
        counts(&s.store),
        [
            (RequestKind::Head, 1),
            (RequestKind::List, 1),
            (RequestKind::CreateMultipart, 1),
            (RequestKind::UploadPart, 3),
            (RequestKind::CompleteMultipart, 1)
        ]
    );
    assert_eq!(
        s.store.get_raw("us-east-1:counts/big").unwrap().0.len(),
        size
    );
}

#[test]
fn rename_of_a_file() {
    let s = setup(&[("a", 10)]);
    s.rt.block_on(async {
        s.fs.lookup(ROOT_INO, "a").await.unwrap();
        assert_eq!(
            s.fs.lookup(ROOT_INO, "b").await.unwrap_err().errno,
            libc::ENOENT
        );
        s.fs.rename(ROOT_INO, "a", ROOT_INO, "b", false)
            .await
            .unwrap();
    });
    // The kernel's two lookups (HEAD + LIST each), then CopyObject and DeleteObject; the
    // rename itself reuses what the lookups found.
    assert_eq!(
        counts(&s.store),
        [
            (RequestKind::Head, 2),
            (RequestKind::List, 2),
            (RequestKind::Delete, 1),
            (RequestKind::Copy, 1)
        ]
    );
}

#[test]
fn reading_a_file_twice_reads_s3_once() {
    let s = setup(&[("f", 3 << 20)]);
    let read_all = || {
        s.rt.block_on(async {
            let a = s.fs.lookup(ROOT_INO, "f").await.unwrap();
            let fh = s.fs.open(a.ino, false, false).await.unwrap();
            let mut off = 0;
            loop {
                let chunk = s.fs.read(fh, off, 128 << 10).await.unwrap();
                if chunk.is_empty() {
                    break;
                }
                off += chunk.len() as u64;
            }
            s.fs.release(fh).await.unwrap();
            off
        })
    };
    assert_eq!(read_all(), 3 << 20);
    // One GET per 1 MiB block, readahead included; nothing more.
    assert_eq!(
        counts(&s.store),
        [
            (RequestKind::Head, 1),
            (RequestKind::List, 1),
            (RequestKind::Get, 3)
        ]
    );
    s.store.reset_counts();
    assert_eq!(read_all(), 3 << 20);
    assert_eq!(
        counts(&s.store),
        [],
        "the second read comes from the block cache"
    );
}

#[test]
fn an_early_flush_keeps_the_streaming_upload() {
    let s = setup(&[]);
    let size = 12 << 20;
    s.rt.block_on(async {
        let (_, fh) =
            s.fs.create(ROOT_INO, "piped", 0o100644, CALLER)
                .await
                .unwrap();
        // A shell's `> file` or a child inheriting the descriptor: a flush before any write.
        s.fs.flush(fh).await.unwrap();
        s.store.reset_counts();
        for off in (0..size).step_by(1 << 20) {
            s.fs.write(fh, off as u64, vec![3; 1 << 20]).await.unwrap();
        }
        s.fs.flush(fh).await.unwrap();
        s.fs.release(fh).await.unwrap();
    });
    // Streamed while written (8 MiB + 4 MiB), not uploaded again whole at close.
    assert_eq!(
        counts(&s.store),
        [
            (RequestKind::CreateMultipart, 1),
            (RequestKind::UploadPart, 2),
            (RequestKind::CompleteMultipart, 1)
        ]
    );
    assert_eq!(
        s.store.get_raw("us-east-1:counts/piped").unwrap().0.len(),
        size
    );
}

#[test]
fn directory_times_are_written_behind_once_per_burst() {
    let s = setup(&[("d/x", 1)]);
    s.rt.block_on(async {
        let d = s.fs.lookup(ROOT_INO, "d").await.unwrap();
        let before = s.fs.getattr(d.ino).await.unwrap().mtime;
        s.store.reset_counts();
        for name in ["a", "b", "c"] {
            let (_, fh) = s.fs.create(d.ino, name, 0o100644, CALLER).await.unwrap();
            s.fs.flush(fh).await.unwrap();
            s.fs.release(fh).await.unwrap();
        }
        let after = s.fs.getattr(d.ino).await.unwrap();
        assert!(after.mtime > before && after.ctime == after.mtime);
        assert_eq!(
            counts(&s.store),
            [(RequestKind::Put, 3)],
            "one PUT per file, nothing else yet"
        );
        s.fs.flush_dir_times().await.unwrap();
        // `d` had no marker (its lookup saw that): the write-behind makes one, nothing else.
        assert_eq!(
            counts(&s.store),
            [(RequestKind::Put, 4)],
            "then one marker PUT"
        );
        let (_, meta) = s.store.get_raw("us-east-1:counts/d/").unwrap();
        let stored = cognifs::fs::meta::Meta::from_user(&meta);
        assert_eq!(stored.mtime, Some(after.mtime));
    });
}

/// `cp -r` of small files into a directory it creates: exactly one PUT per file (and the
/// directory's marker); the failed lookups the kernel makes before each create cost nothing,
/// since a directory made here is known to be empty.
#[test]
fn cp_of_small_files_into_a_new_directory_is_one_put_each() {
    let s = setup(&[]);
    s.rt.block_on(async {
        let caller = Caller { uid: 0, gid: 0 };
        assert_eq!(
            s.fs.lookup(ROOT_INO, "dst").await.unwrap_err().errno,
            libc::ENOENT
        );
        s.store.reset_counts();
        let d = s.fs.mkdir(ROOT_INO, "dst", 0o755, caller).await.unwrap();
        for i in 0..50 {
            let name = format!("f{i:02}");
            assert_eq!(
                s.fs.lookup(d.ino, &name).await.unwrap_err().errno,
                libc::ENOENT
            );
            let (_, fh) = s.fs.create(d.ino, &name, 0o644, caller).await.unwrap();
            s.fs.write(fh, 0, vec![1u8; 4096]).await.unwrap();
            s.fs.flush(fh).await.unwrap();
            s.fs.release(fh).await.unwrap();
        }
    });
    assert_eq!(counts(&s.store), [(RequestKind::Put, 51)]);
}

/// A lookup of a large directory keeps its first LIST page for the `ls` that follows; a
/// file made there after that LIST (`touch d/a; ls d`) is not hidden by the page, nor a
/// file removed brought back.
#[test]
fn a_file_made_or_removed_after_the_lookup_s_list_shows_as_it_is() {
    let files: Vec<(String, usize)> = (0..1500).map(|i| (format!("d/f{i:04}"), 1)).collect();
    let seed: Vec<(&str, usize)> = files.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let s = setup(&seed);
    let names = s.rt.block_on(async {
        let d = s.fs.lookup(ROOT_INO, "d").await.unwrap();
        let (_, fh) = s.fs.create(d.ino, "a", 0o100644, CALLER).await.unwrap();
        s.fs.write(fh, 0, vec![1; 10]).await.unwrap();
        s.fs.flush(fh).await.unwrap();
        s.fs.release(fh).await.unwrap();
        s.fs.unlink(d.ino, "f0001").await.unwrap();
        let fh = s.fs.opendir(d.ino).unwrap();
        let entries = s.fs.readdir(d.ino, fh, 0).await.unwrap();
        s.fs.releasedir(fh);
        // And again, from what the table kept.
        let fh = s.fs.opendir(d.ino).unwrap();
        let again = s.fs.readdir(d.ino, fh, 0).await.unwrap();
        s.fs.releasedir(fh);
        // (Counted, and the first names: a failure prints 1,500 names otherwise.)
        let names = |l: &[cognifs::fs::DirEntry]| -> (usize, Vec<String>) {
            let names = l[2..].iter().map(|e| e.name.clone());
            (l.len() - 2, names.take(3).collect())
        };
        (names(&entries), names(&again))
    });
    let want = (1500, vec!["a".to_owned(), "f0000".into(), "f0002".into()]);
    assert_eq!(names.0, want, "the first readdir");
    assert_eq!(names.1, want, "the listing kept");
}

/// Metadata learnt by HEAD is kept on disk by key and etag: a later mount's `ls -l` of
/// objects that have not changed costs the LIST alone; a changed object is HEADed again.
#[test]
fn a_later_mounts_ls_l_of_unchanged_objects_costs_the_list_alone() {
    let cache = tempfile::tempdir().unwrap();
    let path = cache.path().join("meta.jsonl");
    let files: Vec<(String, usize)> = (0..20).map(|i| (format!("d/f{i:02}"), 100)).collect();
    let seed: Vec<(&str, usize)> = files.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let with_cache = |o: &mut MountOptions| o.meta_cache = Some(path.clone());
    let first = setup_with(&seed, with_cache);
    ls_l(&first, "d");
    // The lookup and each file (and a GET for the listing index).
    assert_eq!(first.store.counts().get(RequestKind::Head), 21);
    assert_eq!(first.store.counts().get(RequestKind::Get), 1);
    let store = first.store.clone();
    drop(first);
    store.reset_counts();
    let later = mount_on(store, &[], with_cache);
    // One object changed meanwhile (a new etag).
    later
        .store
        .insert_raw("us-east-1:counts/d/f07", &[9u8; 5], UserMeta::new());
    assert_eq!(ls_l(&later, "d"), 22);
    // The directory's lookup (HEAD + LIST, the listing too), and the changed object's HEAD.
    assert_eq!(
        counts(&later.store),
        [(RequestKind::Head, 2), (RequestKind::List, 1)]
    );
}

/// The opt-in list-only mode never HEADs: `ls -l` costs the LIST pages alone.
#[test]
fn list_only_mode_lists_without_heads() {
    let files: Vec<(String, usize)> = (0..50).map(|i| (format!("d/f{i:02}"), 100)).collect();
    let seed: Vec<(&str, usize)> = files.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let s = setup_with(&seed, |o| o.list_only = true);
    assert_eq!(ls_l(&s, "d"), 52);
    // The directory's lookup (HEAD + LIST, the listing too).
    assert_eq!(
        counts(&s.store),
        [(RequestKind::Head, 1), (RequestKind::List, 1)]
    );
}

/// A directory of more than one LIST page: the lookup's page is the listing's first, so
/// `ls DIR` costs the pages a direct client would list, and the lookup's HEAD.
#[test]
fn ls_of_a_large_directory_lists_each_page_once() {
    let files: Vec<(String, usize)> = (0..2500).map(|i| (format!("d/f{i:04}"), 1)).collect();
    let seed: Vec<(&str, usize)> = files.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let s = setup_with(&seed, |o| o.list_only = true);
    assert_eq!(ls_l(&s, "d"), 2502);
    assert_eq!(
        counts(&s.store),
        [(RequestKind::Head, 1), (RequestKind::List, 3)]
    );
}

/// `readdir` hands a large directory out as its pages arrive: the first entries (their
/// metadata HEADed) come after the first page and the look-ahead LIST of the second, not
/// after the last page; paging on brings every name once, in S3's key order (a directory
/// where `name/` sorts), the directory hiding the object of its name listed pages before it.
#[test]
fn readdir_answers_before_the_last_page_is_listed() {
    let mut keys: Vec<String> = (0..2500).map(|i| format!("d/f{i:04}")).collect();
    // The object `h` on page 3, hidden by the directory `h/` on page 4 (`!` sorts before `/`).
    keys.push("d/h".into());
    keys.extend((0..1101).map(|i| format!("d/h!{i:04}")));
    keys.push("d/h/inner".into());
    let seed: Vec<(&str, usize)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
    let s = setup(&seed);
    s.rt.block_on(async {
        let d = s.fs.lookup(ROOT_INO, "d").await.unwrap();
        // The lookup of a directory this machine knows nothing of looks for its listing
        // index and lists its second page, in the background.
        until_counted(&s.store, "nothing listed ahead", |c| {
            c.get(RequestKind::Get) >= 1 && c.get(RequestKind::List) >= 2
        })
        .await;
        s.store.reset_counts();
        let fh = s.fs.opendir(d.ino).unwrap();
        let first = s.fs.readdir_chunk(d.ino, fh, 0).await.unwrap();
        assert!(first.len() > 2, "entries after the first page");
        assert_eq!(
            counts(&s.store),
            // The lookup's first page and its look-ahead of the second, and the first
            // page's HEADs but for its last name (a directory of that name could still
            // follow).
            [(RequestKind::Head, 999)]
        );
        assert!(first[2..].iter().all(|e| e.attr.meta_known), "HEADed");
        let mut names: Vec<String> = first.iter().map(|e| e.name.clone()).collect();
        loop {
            let more =
                s.fs.readdir_chunk(d.ino, fh, names.len() as u64)
                    .await
                    .unwrap();
            if more.is_empty() {
                break;
            }
            names.extend(more.into_iter().map(|e| e.name));
        }
        s.fs.releasedir(fh);
        let mut want: Vec<String> = vec![".".into(), "..".into()];
        want.extend((0..2500).map(|i| format!("f{i:04}")));
        want.extend((0..1101).map(|i| format!("h!{i:04}")));
        want.push("h".into());
        assert_eq!(names, want);
        let h = s.fs.lookup(d.ino, "h").await.unwrap();
        assert_eq!(
            h.kind,
            cognifs::fs::Kind::Dir,
            "the directory hides the object"
        );
    });
    assert_eq!(
        counts(&s.store),
        // Every file once, the directory's marker; four pages once (two by the lookup).
        [(RequestKind::Head, 3602), (RequestKind::List, 2)]
    );
}

/// S3 dates a version to the second and a metadata change keeps the etag: a marker's HEAD
/// answered within the second of its Last-Modified is not remembered, because another
/// device's chmod in that second leaves a version that looks the same (etag, second).
#[test]
fn a_head_within_the_second_of_a_write_is_not_remembered_by_version() {
    let cache = tempfile::tempdir().unwrap();
    let path = cache.path().join("meta.jsonl");
    let with_cache = |o: &mut MountOptions| o.meta_cache = Some(path.clone());
    let store = Arc::new(MemoryStore::new("bucket", "us-east-1:counts"));
    let marker = "us-east-1:counts/m/";
    let mode =
        |perm: u32| UserMeta::from([("mode".to_owned(), (libc::S_IFDIR | perm).to_string())]);
    // Written just now (not aged): another device's `mkdir m`.
    let first = mount_now(store.clone(), with_cache);
    store.insert_raw(marker, b"", mode(0o755));
    let seen = first.rt.block_on(first.fs.lookup(ROOT_INO, "m")).unwrap();
    assert_eq!(seen.perm, 0o755);
    drop(first);
    // Its `chmod 700 m`, in the same second: the same etag and Last-Modified second.
    assert!(store.replace_meta_raw(marker, mode(0o700)));
    let later = mount_now(store.clone(), with_cache);
    let found = later.rt.block_on(later.fs.lookup(ROOT_INO, "m")).unwrap();
    assert_eq!(
        found.perm, 0o700,
        "the first answer was remembered for a version it does not describe alone"
    );
}

/// A directory's marker (its mode, owner and times) learnt by HEAD is remembered on disk
/// by its version: a later mount's lookup of the unchanged directory costs HEAD and LIST
/// (is it an object, is it a directory), not the marker's HEAD too.
#[test]
fn a_later_mounts_lookup_of_an_unchanged_directory_needs_no_marker_head() {
    let cache = tempfile::tempdir().unwrap();
    let path = cache.path().join("meta.jsonl");
    let with_cache = |o: &mut MountOptions| o.meta_cache = Some(path.clone());
    let first = setup_with(&[], with_cache);
    let made = first
        .rt
        .block_on(first.fs.mkdir(ROOT_INO, "m", 0o700, CALLER));
    let mode = made.unwrap().perm;
    let store = first.store.clone();
    drop(first);
    // A mount that looks it up HEADs its marker, and remembers it.
    let second = mount_on(store.clone(), &[], with_cache);
    second.rt.block_on(second.fs.lookup(ROOT_INO, "m")).unwrap();
    drop(second);
    let later = mount_on(store, &[], with_cache);
    later.store.reset_counts();
    let found = later.rt.block_on(later.fs.lookup(ROOT_INO, "m")).unwrap();
    assert_eq!(found.perm, mode);
    // The marker's HEAD is asked the first time only.
    assert_eq!(
        counts(&later.store),
        [(RequestKind::Head, 1), (RequestKind::List, 1)]
    );
}

#[test]
fn a_save_over_an_existing_file_is_one_conditional_put() {
    let s = setup(&[("notes.txt", 100)]);
    s.rt.block_on(async {
        let a = s.fs.lookup(ROOT_INO, "notes.txt").await.unwrap();
        s.store.reset_counts();
        let fh = s.fs.open(a.ino, true, true).await.unwrap();
        s.fs.write(fh, 0, b"new".to_vec()).await.unwrap();
        s.fs.flush(fh).await.unwrap();
        s.fs.release(fh).await.unwrap();
    });
    // The condition (`If-Match` on the version opened) rides on the PUT: no HEAD first.
    assert_eq!(counts(&s.store), [(RequestKind::Put, 1)]);
    assert_eq!(
        &s.store.get_raw("us-east-1:counts/notes.txt").unwrap().0[..],
        b"new"
    );
}

#[test]
fn a_kept_uploads_retry_is_the_upload_alone() {
    let s = setup_with(&[], |o| {
        o.pending_dir = Some(o.spool_dir.join("pending"));
    });
    s.rt.block_on(async {
        let (_, fh) =
            s.fs.create(ROOT_INO, "kept", 0o100644, CALLER)
                .await
                .unwrap();
        s.fs.write(fh, 0, b"data".to_vec()).await.unwrap();
        // The close's flush and its release both fail: the data is kept.
        s.store
            .fail_nth(Some(RequestKind::Put), 0, cognifs::store::Fault::SlowDown);
        s.store
            .fail_nth(Some(RequestKind::Put), 0, cognifs::store::Fault::SlowDown);
        assert_eq!(s.fs.flush(fh).await.unwrap_err().errno, libc::EIO);
        assert_eq!(s.fs.release(fh).await.unwrap_err().errno, libc::EIO);
        assert!(!s.store.armed(), "both faults fired");
        assert_eq!(s.fs.pending_uploads().len(), 1);
        s.store.reset_counts();
        s.fs.retry_pending_now().await;
        assert!(s.fs.pending_uploads().is_empty());
    });
    // One conditional PUT (`If-None-Match: *`: the name was free when it was created); the
    // HEAD that used to check for a conflict first is gone.
    assert_eq!(counts(&s.store), [(RequestKind::Put, 1)]);
}

/// A symlink whose metadata an earlier mount learnt is listed by a later mount under the
/// number of its symlink entry, so the kernel's readlink of what readdirplus handed it
/// reads the target (it was handed the number of the listing's plain-file guess: EINVAL).
#[test]
fn a_remembered_symlink_is_listed_under_its_own_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.jsonl");
    let with_cache = |o: &mut MountOptions| o.meta_cache = Some(path.clone());
    let s = setup_with(&[("d/f", 3)], with_cache);
    s.rt.block_on(async {
        let d = s.fs.lookup(ROOT_INO, "d").await.unwrap();
        s.fs.symlink(d.ino, "l", b"f", CALLER).await.unwrap();
    });
    let store = s.store.clone();
    drop(s);
    // The first later mount HEADs it (and remembers); the second lists it from memory.
    for _ in 0..2 {
        let s = mount_on(store.clone(), &[], with_cache);
        s.rt.block_on(async {
            let d = s.fs.lookup(ROOT_INO, "d").await.unwrap();
            let fh = s.fs.opendir(d.ino).unwrap();
            let entries = s.fs.readdir(d.ino, fh, 0).await.unwrap();
            s.fs.releasedir(fh);
            let l = entries.iter().find(|e| e.name == "l").unwrap();
            assert_eq!(l.attr.kind, cognifs::fs::Kind::Symlink);
            assert_eq!(&s.fs.readlink(l.ino).await.unwrap()[..], b"f");
        });
    }
}

/// A directory this mount changed, as the mount leaves it: its listing index written.
fn write_index_of_d(store: &Arc<MemoryStore>) {
    let s = mount_on(store.clone(), &[], |_| {});
    s.rt.block_on(async {
        let d = s.fs.lookup(ROOT_INO, "d").await.unwrap();
        s.fs.symlink(d.ino, "l", b"a", CALLER).await.unwrap();
        let a = s.fs.lookup(d.ino, "a").await.unwrap();
        let chmod = SetAttr {
            mode: Some(0o600),
            uid: None,
            gid: None,
            size: None,
            atime: None,
            mtime: None,
        };
        s.fs.setattr(a.ino, None, chmod).await.unwrap();
        // The index is written once the directory is quiet.
        s.store.age(SETTLE);
        s.fs.write_due_indexes(true).await;
    });
}

/// What another machine's `ls -l d` shows: (name, kind, permission bits), and readlink.
type Shown = Vec<(String, Kind, u16)>;

fn ls_l_elsewhere(store: &Arc<MemoryStore>) -> (Shown, Vec<(RequestKind, u64)>) {
    ls_l_elsewhere_with(store, |_| {})
}

/// The same through a mount `tune`d (its caches, say), closed at the end as an unmount does.
fn ls_l_elsewhere_with(
    store: &Arc<MemoryStore>,
    tune: impl FnOnce(&mut MountOptions),
) -> (Shown, Vec<(RequestKind, u64)>) {
    let s = mount_on(store.clone(), &[], tune);
    let shown = s.rt.block_on(async {
        let d = s.fs.lookup(ROOT_INO, "d").await.unwrap();
        let fh = s.fs.opendir(d.ino).unwrap();
        let entries = s.fs.readdir(d.ino, fh, 0).await.unwrap();
        s.fs.releasedir(fh);
        let mut shown = Vec::new();
        for e in &entries[2..] {
            let a = s.fs.lookup(d.ino, &e.name).await.unwrap();
            s.fs.getattr(a.ino).await.unwrap();
            if a.kind == Kind::Symlink {
                assert_eq!(&s.fs.readlink(a.ino).await.unwrap()[..], b"a");
            }
            shown.push((e.name.clone(), a.kind, a.perm));
        }
        shown
    });
    s.fs.close_caches();
    (shown, counts(&s.store))
}

/// A directory cognifs wrote on another machine lists with its LIST pages and its index (one
/// GET): no HEAD per file, and still the stored modes and symlinks.
#[test]
fn a_directory_written_elsewhere_lists_from_its_index() {
    let s = setup(&[("d/a", 3), ("d/b", 4)]);
    let store = s.store.clone();
    drop(s);
    write_index_of_d(&store);
    store.reset_counts();
    let (shown, requests) = ls_l_elsewhere(&store);
    assert_eq!(
        shown,
        [
            ("a".to_owned(), Kind::File, 0o600),
            ("b".to_owned(), Kind::File, 0o644),
            ("l".to_owned(), Kind::Symlink, 0o777),
        ]
    );
    // The lookup of `d` (HEAD and LIST), the index (one GET): nothing per file.
    assert_eq!(
        requests,
        [
            (RequestKind::Head, 1),
            (RequestKind::List, 1),
            (RequestKind::Get, 1)
        ]
    );
}

/// The lookup that finds such a directory (`ls -l d` looks `d` up first) already fetches its
/// index, in the background: the listing that follows finds it there and waits for no
/// request of its own. A lookup of a directory without an index costs one GET that finds
/// none, and the listing asks for no other.
#[test]
fn the_lookup_of_a_directory_fetches_its_index_for_the_listing_that_follows() {
    let s = setup(&[("d/a", 3), ("d/b", 4)]);
    let store = s.store.clone();
    drop(s);
    write_index_of_d(&store);
    for (with_index, dir) in [(true, "d"), (false, "plain")] {
        if !with_index {
            store.insert_raw("us-east-1:counts/plain/x", b"1", UserMeta::new());
            store.insert_raw("us-east-1:counts/plain/y", b"2", UserMeta::new());
        }
        let s = mount_on(store.clone(), &[], |_| {});
        store.reset_counts();
        s.rt.block_on(async {
            let d = s.fs.lookup(ROOT_INO, dir).await.unwrap();
            let what = format!("{dir}: the index was not asked for before the listing");
            until_counted(&store, &what, |c| c.get(RequestKind::Get) >= 1).await;
            let fh = s.fs.opendir(d.ino).unwrap();
            s.fs.readdir(d.ino, fh, 0).await.unwrap();
            s.fs.releasedir(fh);
        });
        assert_eq!(
            store.counts().get(RequestKind::Get),
            1,
            "{dir}: the listing used the lookup's GET"
        );
        let heads = store.counts().get(RequestKind::Head);
        // The lookup's HEAD of `d`; without an index, each file's HEAD too.
        assert_eq!(heads, if with_index { 1 } else { 3 }, "{dir}");
        s.fs.close_caches();
    }
}

/// The symlink targets an index gave go to the disk cache: the next mount on that machine,
/// which knows the entries' metadata from its disk and so reads no index, reads no target
/// by GET either (`ls -l` reads every link: a GET each was most of its time).
#[test]
fn targets_an_index_gave_are_on_disk_for_the_next_mount() {
    let s = setup(&[("d/a", 3), ("d/b", 4)]);
    let store = s.store.clone();
    drop(s);
    write_index_of_d(&store);
    let caches = tempfile::tempdir().unwrap();
    let tune = |o: &mut MountOptions| {
        o.disk_cache = Some(caches.path().join("blocks"));
        o.meta_cache = Some(caches.path().join("meta.jsonl"));
    };
    store.reset_counts();
    let (first, requests) = ls_l_elsewhere_with(&store, tune);
    assert!(requests.contains(&(RequestKind::Get, 1)), "{requests:?}");
    store.reset_counts();
    let (again, requests) = ls_l_elsewhere_with(&store, tune);
    assert_eq!(again, first);
    assert!(
        !requests.iter().any(|(kind, _)| *kind == RequestKind::Get),
        "{requests:?}"
    );
}

/// An index never shows what S3 no longer holds: a file replaced since (by a client that
/// writes no index) is HEADed and shows its new mode; a damaged index is ignored whole.
#[test]
fn a_stale_or_damaged_index_costs_heads_never_wrong_attributes() {
    let s = setup(&[("d/a", 3), ("d/b", 4)]);
    let store = s.store.clone();
    drop(s);
    write_index_of_d(&store);
    let mut meta = UserMeta::new();
    meta.insert("mode".into(), "33216".into()); // regular, 0700
    store.insert_raw("us-east-1:counts/d/a", b"new", meta);
    store.reset_counts();
    let (shown, requests) = ls_l_elsewhere(&store);
    assert_eq!(shown[0], ("a".to_owned(), Kind::File, 0o700));
    assert_eq!(shown[2], ("l".to_owned(), Kind::Symlink, 0o777));
    assert_eq!(
        requests,
        [
            (RequestKind::Head, 2),
            (RequestKind::List, 1),
            (RequestKind::Get, 1)
        ]
    );
    // The index replaced by garbage: every file HEADed, the symlink's target read.
    let keys = store.keys();
    let index = keys
        .iter()
        .find(|k| k.contains("/.cognifs/index/"))
        .expect("an index was written");
    store.insert_raw(index, b"{\"v\":1,\"dir\":\"other/\"}\n", UserMeta::new());
    store.reset_counts();
    let (shown, requests) = ls_l_elsewhere(&store);
    assert_eq!(shown[0], ("a".to_owned(), Kind::File, 0o700));
    assert_eq!(shown[2], ("l".to_owned(), Kind::Symlink, 0o777));
    assert_eq!(
        requests,
        [
            (RequestKind::Head, 1 + 3),
            (RequestKind::List, 1),
            (RequestKind::Get, 2)
        ]
    );
}

/// The root's `.cognifs` (where indexes live) is never shown, looked up or made.
#[test]
fn the_index_directory_is_hidden_and_reserved() {
    let s = setup(&[("d/a", 3)]);
    let store = s.store.clone();
    drop(s);
    write_index_of_d(&store);
    let s = mount_on(store, &[], |_| {});
    s.rt.block_on(async {
        let fh = s.fs.opendir(ROOT_INO).unwrap();
        let names: Vec<String> = s.fs.readdir(ROOT_INO, fh, 0).await.unwrap()[2..]
            .iter()
            .map(|e| e.name.clone())
            .collect();
        s.fs.releasedir(fh);
        assert_eq!(names, ["d"]);
        assert_eq!(
            s.fs.lookup(ROOT_INO, ".cognifs").await.unwrap_err().errno,
            libc::ENOENT
        );
        assert_eq!(
            s.fs.mkdir(ROOT_INO, ".cognifs", 0o755, CALLER)
                .await
                .unwrap_err()
                .errno,
            libc::EPERM
        );
    });
}
