//! What the mount has done and is doing, for `cognifs status` and `/metrics`: counters kept
//! by the core (bytes read and written through the mount) plus figures read off its parts
//! when asked (block cache, files open for writing, uploads in flight). S3 requests are
//! counted outside the core, by `store::CountingStore`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Fs;
pub use super::upload::progress::UploadProgress;

/// The core's own counters.
#[derive(Default)]
pub struct FsCounters {
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    uploads_kept: AtomicU64,
    pending_uploaded: AtomicU64,
    changes_replayed: AtomicU64,
    conflicts: AtomicU64,
    /// The latest conflicts, oldest first (at most [`RECENT_CONFLICTS`]).
    recent_conflicts: std::sync::Mutex<std::collections::VecDeque<Conflict>>,
}

/// Conflicts remembered for `status` and `cognifs conflicts`.
pub const RECENT_CONFLICTS: usize = 100;

/// One lost race with another writer, and where this mount's version went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub at: std::time::SystemTime,
    /// The key both wrote (relative to the prefix).
    pub key: String,
    /// Where this mount's version is now (a conflict copy); `None`: its change was not
    /// applied, the other writer's newer version stays (an unlink, a rename's delete).
    pub kept_as: Option<String>,
}

impl FsCounters {
    pub(super) fn read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn kept_upload(&self) {
        self.uploads_kept.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn pending_uploaded(&self) {
        self.pending_uploaded.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn change_replayed(&self) {
        self.changes_replayed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn conflict(&self, key: &str, kept_as: Option<&str>) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent_conflicts.lock().unwrap();
        if recent.len() == RECENT_CONFLICTS {
            recent.pop_front();
        }
        recent.push_back(Conflict {
            at: std::time::SystemTime::now(),
            key: key.to_owned(),
            kept_as: kept_as.map(str::to_owned),
        });
    }
}

/// A snapshot of the core's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsStats {
    /// Bytes returned by `read` through the mount.
    pub bytes_read: u64,
    /// Bytes accepted by `write` through the mount.
    pub bytes_written: u64,
    /// Block-cache lookups that found the block / did not.
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Bytes held by the block cache, and its budget.
    pub cache_bytes: u64,
    pub cache_capacity: u64,
    /// Files open for writing (one per inode, whatever the number of handles).
    pub files_open_for_writing: u64,
    /// Bytes not yet in S3: of each upload in flight, what S3 has not accepted yet; of
    /// each other file with changes, its whole size.
    pub bytes_waiting: u64,
    /// Uploads in flight, oldest first.
    pub uploads: Vec<UploadProgress>,
    /// Uploads that failed and are kept on disk, retried in the background.
    pub pending: Vec<crate::pending::PendingRecord>,
    /// Failed uploads kept since the mount started; kept ones uploaded since.
    pub uploads_kept: u64,
    pub pending_uploaded: u64,
    /// Writes that lost a race with another client since the mount started (their data
    /// kept beside the object, or their change not applied), and the latest of them.
    pub conflicts: u64,
    pub recent_conflicts: Vec<Conflict>,
    /// What the server was seen to do with conditional writes (`None`: not checked).
    pub conditions: Option<crate::store::ConditionSupport>,
    /// The disk cache's figures, if the mount has one.
    pub disk_cache: Option<crate::local::DiskCacheStats>,
    /// Whether S3 answers, and since when it does not.
    pub connectivity: crate::store::Connectivity,
    /// Changes to the tree kept offline and not yet in S3; those sent since the mount
    /// started.
    pub offline: super::OfflineStats,
    pub changes_replayed: u64,
}

impl Fs {
    pub fn stats(&self) -> FsStats {
        let (cache_hits, cache_misses) = self.read.cache.lookups();
        let uploads = self.upload.progress.snapshot();
        let uploading: BTreeSet<&str> = uploads.iter().map(|u| u.path.as_str()).collect();
        let in_flight: u64 = uploads.iter().map(|u| u.total.saturating_sub(u.sent)).sum();
        let dirty: u64 = self
            .pending_writes()
            .iter()
            .filter(|(key, _)| !uploading.contains(key.as_str()))
            .map(|(_, size)| size)
            .sum();
        // Kept uploads nobody has open are listed under `pending`, not as open files.
        let files_open_for_writing = self
            .write_states()
            .iter()
            .filter(|w| w.has_handles())
            .count() as u64;
        let pending = self.pending_uploads();
        FsStats {
            bytes_read: self.counters.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.counters.bytes_written.load(Ordering::Relaxed),
            cache_hits,
            cache_misses,
            cache_bytes: self.read.cache.used(),
            cache_capacity: self.read.cache.budget(),
            files_open_for_writing,
            bytes_waiting: in_flight + dirty,
            uploads,
            pending,
            uploads_kept: self.counters.uploads_kept.load(Ordering::Relaxed),
            pending_uploaded: self.counters.pending_uploaded.load(Ordering::Relaxed),
            conflicts: self.counters.conflicts.load(Ordering::Relaxed),
            recent_conflicts: self
                .counters
                .recent_conflicts
                .lock()
                .unwrap()
                .iter()
                .cloned()
                .collect(),
            conditions: self.condition_support(),
            disk_cache: self.read.disk.as_ref().map(|d| d.stats()),
            connectivity: self.connectivity(),
            offline: self.offline_stats(),
            changes_replayed: self.counters.changes_replayed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::fs::{Caller, Fs, MountOptions, ROOT_INO};
    use crate::store::{MemoryStore, ObjectStore, UserMeta};

    fn fs(store: Arc<MemoryStore>, spool: &std::path::Path) -> Fs {
        let opts = MountOptions {
            spool_dir: spool.to_path_buf(),
            part_size: 5 << 20,
            ..MountOptions::default()
        };
        Fs::new(store, opts)
    }

    fn caller() -> Caller {
        Caller { uid: 0, gid: 0 }
    }

    #[tokio::test]
    async fn counts_bytes_cache_lookups_and_pending_writes() {
        let store = Arc::new(MemoryStore::new("b", "p"));
        store
            .put(
                "r",
                bytes::Bytes::from(vec![7u8; 3 << 20]),
                &UserMeta::new(),
            )
            .await
            .unwrap();
        let spool = tempfile::tempdir().unwrap();
        let fs = fs(store.clone(), spool.path());
        assert_eq!(fs.stats().cache_capacity, 8 << 20);

        // Reads: bytes counted; the first read of a block misses, the second hits.
        let attr = fs.lookup(ROOT_INO, "r").await.unwrap();
        let fh = fs.open(attr.ino, false, false).await.unwrap();
        assert_eq!(fs.read(fh, 0, 4096).await.unwrap().len(), 4096);
        fs.release(fh).await.unwrap();
        let fh = fs.open(attr.ino, false, false).await.unwrap();
        assert_eq!(fs.read(fh, 0, 1000).await.unwrap().len(), 1000);
        fs.release(fh).await.unwrap();
        let s = fs.stats();
        assert_eq!(s.bytes_read, 5096);
        assert!(s.cache_misses >= 1 && s.cache_hits >= 1, "{s:?}");
        assert!(s.cache_bytes >= 1 << 20, "{s:?}");

        // Writes: a file open for writing with 6 MiB not in S3 yet (more than a part, so
        // it streams: one part in flight or sent, the rest waiting).
        let (_, fh) = fs.create(ROOT_INO, "w", 0o644, caller()).await.unwrap();
        for i in 0..6u64 {
            let n = fs.write(fh, i << 20, vec![1u8; 1 << 20]).await.unwrap();
            assert_eq!(n, 1 << 20);
        }
        let s = fs.stats();
        assert_eq!(s.bytes_written, 6 << 20);
        assert_eq!(s.files_open_for_writing, 1);
        assert!(s.bytes_waiting > 0 && s.bytes_waiting <= 6 << 20, "{s:?}");
        assert_eq!(s.uploads.len(), 1, "the stream is in flight: {s:?}");
        assert_eq!(s.uploads[0].path, "w");
        assert!(s.uploads[0].streaming);
        assert_eq!(s.uploads[0].total, 6 << 20);
        fs.release(fh).await.unwrap();
        let s = fs.stats();
        assert_eq!(s.files_open_for_writing, 0);
        assert_eq!(s.bytes_waiting, 0);
        assert!(s.uploads.is_empty(), "{s:?}");
        assert_eq!(store.get_raw("p/w").unwrap().0.len(), 6 << 20);
    }

    #[tokio::test]
    async fn a_dirty_file_not_uploading_waits_with_its_whole_size() {
        let store = Arc::new(MemoryStore::new("b", "p"));
        let spool = tempfile::tempdir().unwrap();
        let fs = fs(store, spool.path());
        let (_, fh) = fs.create(ROOT_INO, "small", 0o644, caller()).await.unwrap();
        fs.write(fh, 0, vec![1u8; 1000]).await.unwrap();
        let s = fs.stats();
        assert_eq!((s.files_open_for_writing, s.bytes_waiting), (1, 1000));
        assert!(s.uploads.is_empty(), "less than a part: nothing streams");
        fs.flush(fh).await.unwrap();
        assert_eq!(fs.stats().bytes_waiting, 0, "flushed, still open");
        assert_eq!(fs.stats().files_open_for_writing, 1);
        fs.release(fh).await.unwrap();
        assert_eq!(fs.stats().files_open_for_writing, 0);
    }
}
