//! The data cache on disk: blocks of objects, kept across unmounts, crashes and reboots.
//!
//! # Layout
//!
//! `DIR/HH/HHHHHHHHHHHHHHHH-N` holds block `N` of one version of one object: the name is a
//! hash of (location, key, etag, block size), so a replaced object (a new etag) never finds
//! the old version's blocks, which simply age out. Each file starts with a header naming
//! exactly what it holds (the same four things and the block number) and the crc32c of its
//! data, and the header carries a crc32c of its own: a block torn by a crash, a flipped
//! bit, a file truncated or put there by someone else is detected when read, removed, and
//! fetched again — never served. Files are written under `DIR/tmp/` and renamed into place,
//! so a reader sees a whole file or none; they are not fsync'd (a cache: what a power cut
//! tears, the checksum catches).
//!
//! # Budget
//!
//! An in-memory index (loaded in the background at open, from the files' names, headers and
//! modification times) orders the blocks by last use; past the byte budget the least
//! recently used go, but for those under a pinned path (`cognifs offline pin`), which stay
//! until unpinned. A hit moves a file's mtime forward (at most once a minute), so the order
//! survives a remount.
//!
//! # Threads
//!
//! Reads are blocking file I/O: callers run them on tokio's blocking pool. Writes go to a
//! thread of the cache's own through a queue bounded in bytes; when it is full a block is
//! simply not cached (it was served already), so a reader never waits for the disk cache.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use lru::LruCache;

use crate::fs::cache::BlockKey;

mod format;
mod pins;
mod space;

use format::{FileName, MAX_HEADER, crc32c, encode_header, hash_of, parse_header};
use pins::{is_pinned, load_pins, save_pins};

/// Blocks queued for writing, in bytes, beyond which new blocks are not cached.
const WRITE_QUEUE_BYTES: u64 = 32 << 20;
/// A hit moves the block's mtime (its place in the order after a remount) at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Free space the cache's filesystem keeps: the cache shrinks rather than fill a disk: 5% of
/// it, at most 2 GiB (twice what the pending area keeps for itself, so that kept uploads
/// always have room).
const KEEP_FREE_FRACTION: u64 = 20;
const KEEP_FREE_MAX: u64 = 2 << 30;

struct Entry {
    /// The object's key and version, for pins.
    rel: Box<str>,
    etag: Box<str>,
    /// Bytes on disk (header included).
    bytes: u64,
    /// When its mtime was last moved.
    touched: SystemTime,
}

struct Index {
    lru: LruCache<FileName, Entry>,
    used: u64,
}

enum Job {
    Write(BlockKey, Bytes),
    Touch(FileName),
    /// A whole version this mount wrote, from the file holding it (nobody writes it now).
    Ingest {
        rel: String,
        etag: String,
        file: File,
        size: u64,
    },
    /// The blocks of a version copied to another key (a rename), kept under that key too.
    Carry {
        from: BlockKey,
        to: BlockKey,
        blocks: u64,
    },
}

/// Counters of the disk cache, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCacheStats {
    pub used_bytes: u64,
    pub budget_bytes: u64,
    pub pinned_bytes: u64,
    pub blocks: u64,
    pub hits: u64,
    pub misses: u64,
    /// Blocks found torn or corrupt, removed and fetched again.
    pub corrupt: u64,
    pub evicted: u64,
    /// Blocks not cached because the write queue was full.
    pub skipped: u64,
}

pub struct DiskCache {
    dir: PathBuf,
    location: String,
    block_size: u64,
    budget: u64,
    index: Mutex<Index>,
    /// Pinned paths: a file's key, or a directory's ending in `/` (`""`: everything).
    pins: Mutex<Vec<String>>,
    /// The version last written of each pinned file (its older one's blocks then go).
    pinned_versions: Mutex<HashMap<String, String>>,
    /// The index holds every file on disk (the background scan is done).
    scanned: AtomicBool,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    queued: AtomicU64,
    /// Renamed files' blocks being carried to their new key (jobs queued or running).
    carrying: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    evicted: AtomicU64,
    skipped: AtomicU64,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The default budget for a cache in `dir`: 5% of its filesystem, at most 10 GiB (at least
/// 256 MiB).
pub fn default_budget(dir: &Path) -> u64 {
    let total = crate::fs::filesystem_space(dir).map_or(0, |(_, total)| total);
    (total / 20).clamp(256 << 20, 10 << 30)
}

impl DiskCache {
    /// Opens (creating, mode 0700) the cache in `dir` for the objects of `location`, in
    /// blocks of `block_size`, within `budget` bytes. What is on disk is indexed in the
    /// background; until then a block is looked for on disk directly.
    pub fn open(
        dir: &Path,
        location: &str,
        block_size: u64,
        budget: u64,
    ) -> std::io::Result<Arc<DiskCache>> {
        crate::statefile::private_dir(dir)?;
        let tmp = dir.join("tmp");
        // Files a crash left half written: never renamed into place, never read.
        let _ = std::fs::remove_dir_all(&tmp);
        crate::statefile::private_dir(&tmp)?;
        let cache = Arc::new(DiskCache {
            dir: dir.to_path_buf(),
            location: location.to_owned(),
            block_size,
            budget,
            index: Mutex::new(Index {
                lru: LruCache::unbounded(),
                used: 0,
            }),
            pins: Mutex::new(load_pins(&dir.join("pins.json"))),
            pinned_versions: Mutex::new(HashMap::new()),
            scanned: AtomicBool::new(false),
            jobs: Mutex::new(None),
            queued: AtomicU64::new(0),
            carrying: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        *cache.jobs.lock().unwrap() = Some(tx);
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("cognifs-cache".into())
            .spawn(move || {
                if let Some(cache) = weak.upgrade() {
                    cache.scan();
                }
                while let Ok(job) = rx.recv() {
                    let Some(cache) = weak.upgrade() else { break };
                    cache.run(job);
                }
            })?;
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    fn name_of(&self, key: &BlockKey) -> FileName {
        FileName {
            hash: hash_of(&[
                self.location.as_bytes(),
                key.key.as_bytes(),
                key.etag.as_bytes(),
                &self.block_size.to_le_bytes(),
            ]),
            block: key.block,
        }
    }

    /// Whether the block is (as far as the index knows) on disk. No I/O once the index is
    /// loaded.
    pub fn contains(&self, key: &BlockKey) -> bool {
        let name = self.name_of(key);
        if self.index.lock().unwrap().lru.contains(&name) {
            return true;
        }
        !self.scanned.load(Ordering::Acquire) && self.dir.join(name.relative()).exists()
    }

    /// The block's data, if it is on disk whole and is what `key` names; a file that is not
    /// (torn, corrupt, someone else's) is removed. Blocking I/O.
    pub fn read(&self, key: &BlockKey) -> Option<Bytes> {
        let name = self.name_of(key);
        let path = self.dir.join(name.relative());
        match self.read_verified(&path, key) {
            Ok(Some(data)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                let touch = {
                    let mut index = self.index.lock().unwrap();
                    match index.lru.get(&name) {
                        Some(e) => e.touched.elapsed().unwrap_or_default() >= TOUCH_EVERY,
                        None => {
                            // Found on disk before the scan reached it.
                            let bytes = (data.len() + MAX_HEADER) as u64;
                            self.admit(&mut index, name, key, bytes, SystemTime::now());
                            false
                        }
                    }
                };
                if touch {
                    self.send(Job::Touch(name));
                }
                Some(data)
            }
            Ok(None) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(why) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.forget(name);
                // Counted by whoever removes it (the scan may have found it first).
                if std::fs::remove_file(&path).is_ok() {
                    tracing::warn!(file = %path.display(), key = %key.key, block = key.block, "{why}: removed from the disk cache, fetched again");
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// `Ok(None)`: no such file; `Err`: a file that must not be served.
    fn read_verified(&self, path: &Path, key: &BlockKey) -> Result<Option<Bytes>, String> {
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("unreadable block file ({e})")),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        let max = MAX_HEADER as u64 + self.block_size;
        if !meta.file_type().is_file() || meta.len() > max {
            return Err("not a block file".into());
        }
        let mut buf = BytesMut::zeroed(meta.len() as usize);
        file.read_exact(&mut buf)
            .map_err(|e| format!("short block file ({e})"))?;
        let header = parse_header(&buf).ok_or("torn or corrupt header")?;
        let names_match = header.location == self.location.as_bytes()
            && header.rel == key.key.as_bytes()
            && header.etag == key.etag.as_bytes()
            && header.block == key.block
            && header.block_size == self.block_size;
        if !names_match {
            return Err("a block of another object".into());
        }
        if buf.len() - header.header_len != header.data_len {
            return Err("torn block (length)".into());
        }
        let header_len = header.header_len;
        let data_crc = header.data_crc;
        let data = buf.freeze().slice(header_len..);
        if crc32c(&data) != data_crc {
            return Err("corrupt block (checksum)".into());
        }
        Ok(Some(data))
    }

    /// Bytes the writer can take now before blocks are skipped.
    pub fn write_room(&self) -> u64 {
        WRITE_QUEUE_BYTES.saturating_sub(self.queued.load(Ordering::Acquire))
    }

    /// Keeps a block on disk, written behind by the cache's thread; not kept when the queue
    /// is full (the block was served already; it is a cache).
    pub fn write_behind(&self, key: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        if len == 0 || len > self.block_size || key.etag.is_empty() {
            return;
        }
        let queued = self.queued.fetch_add(len, Ordering::AcqRel);
        if queued + len > WRITE_QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.send(Job::Write(key, data)) {
            self.queued.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// Keeps on disk version `etag` of `rel`, which this mount just uploaded from `file`
    /// (`size` bytes, no longer written to): read later without a GET, offline too. A file
    /// larger than a quarter of the budget is not kept (it would push out everything).
    pub fn ingest(&self, rel: &str, etag: &str, file: File, size: u64) {
        if size == 0 || size > self.budget / 4 || etag.is_empty() {
            return;
        }
        // Counted as queued until written: a reader that finds S3 away waits for it.
        self.queued.fetch_add(size, Ordering::AcqRel);
        let sent = self.send(Job::Ingest {
            rel: rel.to_owned(),
            etag: etag.to_owned(),
            file,
            size,
        });
        if !sent {
            self.queued.fetch_sub(size, Ordering::AcqRel);
        }
    }

    /// A rename copied version `from` (its `blocks` blocks) to `to` in S3: the blocks on disk
    /// are kept under the new key as well, written behind (a file read once stays readable
    /// after a rename, offline and after a remount, without a GET). Blocks not on disk are
    /// skipped; the old key's copies age out as usual.
    pub fn carry(&self, from: (&str, &str), to: (&str, &str), blocks: u64) {
        if from.1.is_empty() || to.1.is_empty() || from == to {
            return;
        }
        let key = |(rel, etag): (&str, &str)| BlockKey {
            key: rel.to_owned(),
            etag: etag.to_owned(),
            block: 0,
        };
        self.carrying.fetch_add(1, Ordering::AcqRel);
        let sent = self.send(Job::Carry {
            from: key(from),
            to: key(to),
            blocks,
        });
        if !sent {
            self.carrying.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn send(&self, job: Job) -> bool {
        match &*self.jobs.lock().unwrap() {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    /// Blocks until every block queued so far is on disk (tests, unmount).
    pub fn settle(&self, limit: Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        while self.queued.load(Ordering::Acquire) > 0 || self.carrying.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    fn run(&self, job: Job) {
        match job {
            Job::Write(key, data) => {
                let len = data.len() as u64;
                if let Err(e) = self.write_file(&key, &data) {
                    tracing::debug!(key = %key.key, block = key.block, error = %e, "block not cached on disk");
                }
                self.queued.fetch_sub(len, Ordering::AcqRel);
            }
            Job::Ingest {
                rel,
                etag,
                file,
                size,
            } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; self.block_size as usize];
                for block in 0..size.div_ceil(self.block_size) {
                    let at = block * self.block_size;
                    let len = self.block_size.min(size - at) as usize;
                    let key = BlockKey {
                        key: rel.clone(),
                        etag: etag.clone(),
                        block,
                    };
                    let copied = file
                        .read_exact_at(&mut buf[..len], at)
                        .and_then(|()| self.write_file(&key, &buf[..len]));
                    if let Err(e) = copied {
                        tracing::debug!(key = %rel, error = %e, "written file not cached on disk");
                        break;
                    }
                }
                self.queued.fetch_sub(size, Ordering::AcqRel);
            }
            Job::Carry { from, to, blocks } => {
                for block in 0..blocks {
                    let (from, to) = (
                        BlockKey {
                            block,
                            ..from.clone()
                        },
                        BlockKey {
                            block,
                            ..to.clone()
                        },
                    );
                    if !self.contains(&from) || self.contains(&to) {
                        continue;
                    }
                    // Read as the cache's own copy: not a reader's hit.
                    let path = self.dir.join(self.name_of(&from).relative());
                    let Ok(Some(data)) = self.read_verified(&path, &from) else {
                        continue;
                    };
                    if let Err(e) = self.write_file(&to, &data) {
                        tracing::debug!(key = %to.key, error = %e, "renamed file's block not cached on disk");
                        break;
                    }
                }
                self.carrying.fetch_sub(1, Ordering::AcqRel);
            }
            Job::Touch(name) => {
                let path = self.dir.join(name.relative());
                let now = SystemTime::now();
                if let Ok(f) = File::options().write(true).open(&path) {
                    let _ = f.set_modified(now);
                }
                if let Some(e) = self.index.lock().unwrap().lru.peek_mut(&name) {
                    e.touched = now;
                }
            }
        }
    }

    /// Writes a block now, on the calling thread (blocking I/O): for pinning, which must not
    /// lose a block to a full queue.
    pub fn put_now(&self, key: &BlockKey, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() || data.len() as u64 > self.block_size || key.etag.is_empty() {
            return Err(std::io::Error::other("not a block"));
        }
        self.write_file(key, data)
    }

    fn write_file(&self, key: &BlockKey, data: &[u8]) -> std::io::Result<()> {
        let name = self.name_of(key);
        if self.index.lock().unwrap().lru.contains(&name) {
            return Ok(());
        }
        self.drop_older_pinned(key);
        let header = self.header(key, data)?;
        let final_path = self.dir.join(name.relative());
        let tmp = self.dir.join("tmp").join(format!(
            "{:016x}-{}-{}",
            name.hash,
            name.block,
            std::process::id()
        ));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&header)?;
            f.write_all(data)?;
            drop(f);
            match std::fs::rename(&tmp, &final_path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    crate::statefile::private_dir(final_path.parent().expect("in a subdirectory"))?;
                    std::fs::rename(&tmp, &final_path)
                }
                other => other,
            }
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return written;
        }
        let bytes = (header.len() + data.len()) as u64;
        let victims = {
            let mut index = self.index.lock().unwrap();
            self.admit(&mut index, name, key, bytes, SystemTime::now());
            self.evict(&mut index)
        };
        self.remove_files(victims);
        Ok(())
    }

    fn header(&self, key: &BlockKey, data: &[u8]) -> std::io::Result<Vec<u8>> {
        encode_header(&self.location, key, self.block_size, data)
    }

    /// A pinned file's new version arrives: the blocks of the version seen before it are
    /// not kept any more (a pin keeps a path's current contents, not every version of it).
    fn drop_older_pinned(&self, key: &BlockKey) {
        if !self.is_pinned(&key.key) {
            return;
        }
        let older = {
            let mut latest = self.pinned_versions.lock().unwrap();
            match latest.insert(key.key.clone(), key.etag.clone()) {
                Some(e) if e != key.etag => e,
                _ => return,
            }
        };
        let mut victims = Vec::new();
        {
            let mut index = self.index.lock().unwrap();
            for block in 0.. {
                let old = BlockKey {
                    key: key.key.clone(),
                    etag: older.clone(),
                    block,
                };
                match index.lru.pop(&self.name_of(&old)) {
                    Some(e) => {
                        index.used -= e.bytes;
                        victims.push(self.name_of(&old));
                    }
                    None => break,
                }
            }
        }
        self.remove_files(victims);
    }

    /// Keeps everything under `path` (a key, or a directory's ending in `/`; `""`: all) from
    /// eviction, across mounts.
    pub fn pin(&self, path: &str) -> std::io::Result<()> {
        let mut pins = self.pins.lock().unwrap();
        if !pins.iter().any(|p| p == path) {
            pins.push(path.to_owned());
            pins.sort();
        }
        save_pins(&self.dir.join("pins.json"), &pins)
    }

    /// Lets `path` be evicted again; returns whether it was pinned.
    pub fn unpin(&self, path: &str) -> std::io::Result<bool> {
        let mut pins = self.pins.lock().unwrap();
        let before = pins.len();
        pins.retain(|p| p != path);
        save_pins(&self.dir.join("pins.json"), &pins)?;
        Ok(pins.len() != before)
    }

    pub fn pins(&self) -> Vec<String> {
        self.pins.lock().unwrap().clone()
    }

    pub fn is_pinned(&self, rel: &str) -> bool {
        is_pinned(&self.pins.lock().unwrap(), rel)
    }

    pub fn stats(&self) -> DiskCacheStats {
        let pins = self.pins();
        let index = self.index.lock().unwrap();
        let pinned_bytes = if pins.is_empty() {
            0
        } else {
            index
                .lru
                .iter()
                .filter(|(_, e)| is_pinned(&pins, &e.rel))
                .map(|(_, e)| e.bytes)
                .sum()
        };
        DiskCacheStats {
            used_bytes: index.used,
            budget_bytes: self.budget,
            pinned_bytes,
            blocks: index.lru.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer thread once its queue is written (unmount).
    pub fn close(&self) {
        self.settle(Duration::from_secs(10));
        self.jobs.lock().unwrap().take();
    }
}

fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Pinned paths grouped for display: the stored list.
pub fn pins_in(dir: &Path) -> Vec<String> {
    load_pins(&dir.join("pins.json"))
}

/// For tests: the file holding a block.
#[doc(hidden)]
pub fn block_file(cache: &DiskCache, key: &BlockKey) -> PathBuf {
    cache.dir.join(cache.name_of(key).relative())
}

/// Counts files by key under a cache directory (tests and `cognifs offline list`).
pub fn bytes_by_key(cache: &DiskCache) -> HashMap<String, u64> {
    let index = cache.index.lock().unwrap();
    let mut out: HashMap<String, u64> = HashMap::new();
    for (_, e) in index.lru.iter() {
        *out.entry(e.rel.to_string()).or_default() += e.bytes;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::format::MAGIC;
    use super::*;

    fn key(rel: &str, etag: &str, block: u64) -> BlockKey {
        BlockKey {
            key: rel.into(),
            etag: etag.into(),
            block,
        }
    }

    fn open(dir: &Path, budget: u64) -> Arc<DiskCache> {
        let c = DiskCache::open(dir, "s3://b/p/", 1024, budget).unwrap();
        assert!(c.settle(Duration::from_secs(5)));
        wait_scanned(&c);
        c
    }

    fn wait_scanned(c: &DiskCache) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !c.scanned.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < until, "scan never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn put(c: &DiskCache, k: BlockKey, data: &[u8]) {
        c.write_behind(k, Bytes::copy_from_slice(data));
        assert!(c.settle(Duration::from_secs(5)));
    }

    #[test]
    fn blocks_survive_a_reopen_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let c = open(&path, 1 << 20);
        put(&c, key("a/b", "\"e1\"", 0), b"hello");
        put(&c, key("a/b", "\"e1\"", 1), b"world");
        assert_eq!(&c.read(&key("a/b", "\"e1\"", 0)).unwrap()[..], b"hello");
        assert!(
            c.read(&key("a/b", "\"e2\"", 0)).is_none(),
            "another version"
        );
        let file = block_file(&c, &key("a/b", "\"e1\"", 1));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        c.close();
        drop(c);
        let c = open(&path, 1 << 20);
        assert!(c.contains(&key("a/b", "\"e1\"", 1)));
        assert_eq!(&c.read(&key("a/b", "\"e1\"", 1)).unwrap()[..], b"world");
        assert_eq!(c.stats().blocks, 2);
        assert_eq!(c.stats().hits, 1);
    }

    #[test]
    fn torn_flipped_or_foreign_blocks_are_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), 1 << 20);
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for b in 0..4 {
            put(&c, key("f", "\"e\"", b), &data);
        }
        // Torn: cut short.
        let torn = block_file(&c, &key("f", "\"e\"", 0));
        let len = std::fs::metadata(&torn).unwrap().len();
        File::options()
            .write(true)
            .open(&torn)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        // A flipped bit in the data.
        let flipped = block_file(&c, &key("f", "\"e\"", 1));
        let mut bytes = std::fs::read(&flipped).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&flipped, &bytes).unwrap();
        // A flipped bit in the header.
        let header = block_file(&c, &key("f", "\"e\"", 2));
        let mut bytes = std::fs::read(&header).unwrap();
        bytes[21] ^= 0x80;
        std::fs::write(&header, &bytes).unwrap();
        // Another object's block under this block's name.
        let foreign = block_file(&c, &key("f", "\"e\"", 3));
        std::fs::copy(block_file(&c, &key("f", "\"e\"", 2)), &foreign).unwrap();
        for b in 0..4 {
            assert!(c.read(&key("f", "\"e\"", b)).is_none(), "block {b} served");
        }
        assert_eq!(c.stats().corrupt, 4);
        assert!(c.read(&key("f", "\"e\"", 9)).is_none());
        assert_eq!(
            c.stats().corrupt,
            4,
            "a block never cached is no corruption"
        );
        assert!(!torn.exists() && !flipped.exists());
        // Fetched again and cached again, it is served.
        put(&c, key("f", "\"e\"", 0), &data);
        assert_eq!(&c.read(&key("f", "\"e\"", 0)).unwrap()[..], &data[..]);
    }

    #[test]
    fn least_recently_used_go_first_and_pins_stay() {
        let dir = tempfile::tempdir().unwrap();
        // Room for about ten 1000-byte blocks with their headers.
        let c = open(dir.path(), 11_000);
        c.pin("keep/").unwrap();
        put(&c, key("keep/x", "\"e\"", 0), &[1; 1000]);
        for i in 0..30 {
            put(&c, key(&format!("f{i}"), "\"e\"", 0), &[2; 1000]);
            // f0 stays in use.
            assert!(c.read(&key("f0", "\"e\"", 0)).is_some());
        }
        let s = c.stats();
        assert!(s.used_bytes <= 11_000, "{s:?}");
        assert!(s.evicted >= 15, "{s:?}");
        assert!(c.read(&key("keep/x", "\"e\"", 0)).is_some(), "pinned");
        assert!(c.read(&key("f0", "\"e\"", 0)).is_some(), "recently used");
        assert!(
            c.read(&key("f1", "\"e\"", 0)).is_none(),
            "least recently used"
        );
        assert!(s.pinned_bytes > 1000);
        assert!(c.unpin("keep/").unwrap());
        assert_eq!(pins_in(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn header_parsing_never_panics_on_arbitrary_bytes() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..200)| {
            let _ = parse_header(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = parse_header(&with_magic[..with_magic.len().min(cut + 8)]);
        });
        assert!(FileName::parse(b"zz-1").is_none());
        assert!(FileName::parse("0123456789abcdef-\u{e9}".as_bytes()).is_none());
        assert_eq!(
            FileName::parse(b"0123456789abcdef-7"),
            Some(FileName {
                hash: 0x0123_4567_89ab_cdef,
                block: 7
            })
        );
    }
}
