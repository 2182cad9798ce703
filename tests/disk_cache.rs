//! The disk cache through the filesystem core, without FUSE: what a remount reads from it,
//! what it never serves (another version, a torn or corrupted block), and its budget.

use std::sync::Arc;
use std::time::Duration;

use cognifs::fs::{Fs, MountOptions, ROOT_INO};
use cognifs::store::{MemoryStore, ObjectStore, RequestKind, UserMeta};

const MIB: usize = 1 << 20;

struct Dirs {
    spool: tempfile::TempDir,
    cache: tempfile::TempDir,
}

fn dirs() -> Dirs {
    Dirs {
        spool: tempfile::tempdir().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    }
}

fn mount(store: &Arc<MemoryStore>, dirs: &Dirs, budget: Option<u64>) -> Fs {
    let opts = MountOptions {
        metadata_ttl: Duration::from_secs(60),
        dir_times_interval: Duration::from_secs(3600),
        spool_dir: dirs.spool.path().to_path_buf(),
        disk_cache: Some(dirs.cache.path().join("blocks")),
        disk_cache_bytes: budget,
        ..MountOptions::default()
    };
    Fs::new(store.clone() as Arc<dyn ObjectStore>, opts)
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Reads `name` whole through a new handle, in 1 MiB reads as the kernel sends them.
async fn read_all(fs: &Fs, name: &str) -> Vec<u8> {
    let attr = fs.lookup(ROOT_INO, name).await.unwrap();
    let fh = fs.open(attr.ino, false, false).await.unwrap();
    let mut out = Vec::new();
    loop {
        let chunk = fs.read(fh, out.len() as u64, MIB as u32).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    fs.release(fh).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remount_reads_an_unchanged_cached_file_with_no_get() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    let data = body(5 * MIB + 123, 1);
    store
        .put("f", data.clone().into(), &UserMeta::new())
        .await
        .unwrap();
    let d = dirs();
    let fs = mount(&store, &d, None);
    assert_eq!(read_all(&fs, "f").await, data);
    fs.close_caches();
    drop(fs);

    store.reset_counts();
    let fs = mount(&store, &d, None);
    assert_eq!(read_all(&fs, "f").await, data);
    let counts = store.counts();
    assert_eq!(counts.get(RequestKind::Get), 0, "{counts:?}");
    let disk = fs.stats().disk_cache.unwrap();
    assert_eq!(disk.hits, 6, "{disk:?}");
    assert_eq!(disk.corrupt, 0);

    // Another client replaces it: the next open reads the new version from S3, never a
    // block of the old one.
    let new = body(2 * MIB, 2);
    store
        .put("f", new.clone().into(), &UserMeta::new())
        .await
        .unwrap();
    fs.close_caches();
    drop(fs);
    store.reset_counts();
    let fs = mount(&store, &d, None);
    assert_eq!(read_all(&fs, "f").await, new);
    assert!(store.counts().get(RequestKind::Get) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_corrupted_block_is_fetched_again_never_served() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    let data = body(4 * MIB, 3);
    store
        .put("f", data.clone().into(), &UserMeta::new())
        .await
        .unwrap();
    let d = dirs();
    let fs = mount(&store, &d, None);
    assert_eq!(read_all(&fs, "f").await, data);
    fs.close_caches();
    drop(fs);

    // While unmounted: one block cut short, one with a byte flipped in its data.
    let mut files: Vec<_> = walk(d.cache.path());
    files.sort_by_key(|p| p.file_name().unwrap().to_owned());
    assert_eq!(files.len(), 4, "{files:?}");
    let len = std::fs::metadata(&files[0]).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&files[0])
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let mut bytes = std::fs::read(&files[1]).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x40;
    std::fs::write(&files[1], bytes).unwrap();

    store.reset_counts();
    let fs = mount(&store, &d, None);
    assert_eq!(read_all(&fs, "f").await, data, "never the damaged bytes");
    let disk = fs.stats().disk_cache.unwrap();
    assert_eq!(disk.corrupt, 2, "{disk:?}");
    assert_eq!(disk.hits, 2, "{disk:?}");
    assert_eq!(
        store.counts().get(RequestKind::Get),
        2,
        "the two damaged blocks, fetched again"
    );
    // Fetched again, they are cached again, whole.
    fs.close_caches();
    drop(fs);
    store.reset_counts();
    let fs = mount(&store, &d, None);
    assert_eq!(read_all(&fs, "f").await, data);
    assert_eq!(store.counts().get(RequestKind::Get), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cache_stays_within_its_budget() {
    let store = Arc::new(MemoryStore::new("b", "p"));
    for i in 0..6 {
        store
            .put(&format!("f{i}"), body(2 * MIB, i).into(), &UserMeta::new())
            .await
            .unwrap();
    }
    let d = dirs();
    // Room for about 6 of the 12 blocks.
    let budget = 6 * MIB as u64 + (64 << 10);
    let fs = mount(&store, &d, Some(budget));
    for i in 0..6 {
        assert_eq!(read_all(&fs, &format!("f{i}")).await, body(2 * MIB, i));
    }
    fs.close_caches();
    let disk = fs.stats().disk_cache.unwrap();
    assert!(disk.used_bytes <= budget, "{disk:?}");
    assert!(disk.evicted >= 5, "{disk:?}");
    let on_disk: u64 = walk(d.cache.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= budget, "{on_disk} bytes on disk");
    // The most recently read file is the one kept.
    drop(fs);
    store.reset_counts();
    let fs = mount(&store, &d, Some(budget));
    assert_eq!(read_all(&fs, "f5").await, body(2 * MIB, 5));
    assert_eq!(store.counts().get(RequestKind::Get), 0);
}

/// Every block file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tmp") {
                    stack.push(p);
                }
            } else if p.file_name().is_some_and(|n| n != "pins.json") {
                out.push(p);
            }
        }
    }
    out
}
