//! Pins: files and trees kept in the disk cache for offline use (`cognifs offline pin`).
//!
//! A pin is a path (a file's key, or a directory's ending in `/`) the disk cache never
//! evicts (`local/blocks.rs`). Pinning walks the tree under it and fetches into the disk
//! cache every block not there yet, written directly (not through the write-behind queue,
//! which may drop blocks), a GET of at most [`PIN_GET_BYTES`] at a time per file. What is
//! pinned must fit the disk cache's budget: a pin that would not is refused before anything
//! is fetched.

use std::sync::Arc;

use bytes::Bytes;

use super::Fs;
use super::error::{FsError, FsResult};
use super::inodes::Kind;
use crate::fs::cache::BlockKey;
use crate::local::DiskCache;
use crate::store::StoreError;

/// The largest GET a pin makes (and holds in memory) at once.
const PIN_GET_BYTES: u64 = 8 << 20;
/// Files fetched at once by a pin.
const PIN_FILES_IN_FLIGHT: usize = 4;

/// What a pin found and fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinReport {
    /// The pinned path, relative to the mount (`""`: everything).
    pub path: String,
    pub files: u64,
    /// Bytes of the pinned files.
    pub bytes: u64,
    /// Bytes fetched now (the rest was cached already).
    pub fetched: u64,
    /// Files that could not be fetched, and why.
    pub failed: Vec<(String, String)>,
}

/// A file under a pin: its key, version and size.
struct PinnedFile {
    rel: String,
    etag: String,
    size: u64,
}

impl Fs {
    fn disk(&self) -> FsResult<Arc<DiskCache>> {
        self.read.disk.clone().ok_or_else(|| {
            tracing::info!("pinning needs the disk cache, which this mount does not have");
            FsError::new(libc::EOPNOTSUPP)
        })
    }

    /// The inode at `path` (relative to the mount's root, `/`-separated; `""`: the root).
    async fn walk(&self, path: &str) -> FsResult<u64> {
        let mut ino = super::ROOT_INO;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            ino = self.lookup_attr(ino, name, false).await?.ino;
        }
        Ok(ino)
    }

    /// Pins `path` (a file or a tree) and fetches into the disk cache what is not there yet.
    /// `ENOSPC` (nothing fetched, nothing pinned) if the pinned files would not fit the
    /// disk cache's budget with what is pinned already.
    pub async fn pin(&self, path: &str) -> FsResult<PinReport> {
        let disk = self.disk()?;
        let ino = self.walk(path).await?;
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        let files = self.files_under(&node).await?;
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let already = disk.stats().pinned_bytes;
        if already + bytes > disk.budget() {
            tracing::warn!(
                path,
                bytes,
                pinned = already,
                budget = disk.budget(),
                "not pinned: it would not fit the disk cache (raise --cache-size)"
            );
            return Err(FsError::new(libc::ENOSPC));
        }
        disk.pin(&node.rel).map_err(StoreError::from)?;
        let mut report = PinReport {
            path: path.to_owned(),
            files: files.len() as u64,
            bytes,
            ..PinReport::default()
        };
        use futures::StreamExt;
        let results: Vec<(String, StoreResultU64)> = futures::stream::iter(files)
            .map(|f| {
                let disk = disk.clone();
                async move {
                    let got = self.fetch_to_disk(&disk, &f).await;
                    (f.rel, got)
                }
            })
            .buffer_unordered(PIN_FILES_IN_FLIGHT)
            .collect()
            .await;
        for (rel, got) in results {
            match got {
                Ok(n) => report.fetched += n,
                Err(e) => report.failed.push((rel, e.to_string())),
            }
        }
        tracing::info!(
            path,
            files = report.files,
            bytes,
            fetched = report.fetched,
            failed = report.failed.len(),
            "pinned for offline use"
        );
        Ok(report)
    }

    /// Lets `path` be evicted again; whether it was pinned.
    pub async fn unpin(&self, path: &str) -> FsResult<bool> {
        let disk = self.disk()?;
        let rel = match self.walk(path).await {
            Ok(ino) => self.inodes.get(ino).map(|n| n.rel),
            Err(_) => None,
        };
        // A pin of a path that is gone can still be taken back: as given, either form.
        let candidates = match rel {
            Some(r) => vec![r],
            None => vec![path.to_owned(), format!("{path}/")],
        };
        let mut any = false;
        for c in candidates {
            any |= disk.unpin(&c).map_err(StoreError::from)?;
        }
        Ok(any)
    }

    /// The pinned paths (relative to the mount; a directory's ends in `/`).
    pub fn pins(&self) -> Vec<String> {
        self.read
            .disk
            .as_ref()
            .map(|d| d.pins())
            .unwrap_or_default()
    }

    /// Every regular file under `node` (itself, if it is one), as S3 has them.
    async fn files_under(&self, node: &super::inodes::NodeInfo) -> FsResult<Vec<PinnedFile>> {
        let mut out = Vec::new();
        if node.kind != Kind::Dir {
            if node.kind == Kind::File && !node.etag.is_empty() {
                out.push(PinnedFile {
                    rel: node.rel.clone(),
                    etag: node.etag.clone(),
                    size: node.found.size,
                });
            }
            return Ok(out);
        }
        let mut dirs = vec![(node.ino, node.rel.clone())];
        while let Some((ino, rel)) = dirs.pop() {
            let listing = self.list_dir(ino, &rel).await?;
            let listing = self.fill_metadata(ino, &rel, listing, None).await;
            for e in listing.iter() {
                let Some(n) = self.inodes.get(e.ino) else {
                    continue;
                };
                match n.kind {
                    Kind::Dir => dirs.push((n.ino, n.rel)),
                    // Not in S3 yet (being written here): the pending area keeps it.
                    Kind::File if !n.etag.is_empty() => out.push(PinnedFile {
                        rel: n.rel,
                        etag: n.etag,
                        size: n.found.size,
                    }),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Fetches the blocks of `f` the disk cache lacks, straight into it; the bytes fetched.
    async fn fetch_to_disk(&self, disk: &Arc<DiskCache>, f: &PinnedFile) -> StoreResultU64 {
        let bs = self.read.block_size;
        let key = |block| BlockKey {
            key: f.rel.clone(),
            etag: f.etag.clone(),
            block,
        };
        let blocks = f.size.div_ceil(bs);
        let per_get = (PIN_GET_BYTES / bs).max(1);
        let mut fetched = 0;
        let mut b = 0;
        while b < blocks {
            if disk.contains(&key(b)) {
                b += 1;
                continue;
            }
            let mut end = b + 1;
            while end < blocks && end - b < per_get && !disk.contains(&key(end)) {
                end += 1;
            }
            let start = b * bs;
            let len = (end * bs).min(f.size) - start;
            let pieces = std::sync::Mutex::new(Vec::<(usize, Bytes)>::new());
            let collect = |i: usize, data: Bytes| pieces.lock().unwrap().push((i, data));
            self.store
                .get_range_pieces(&f.rel, &f.etag, start, len, bs, &collect)
                .await?;
            let mut pieces = pieces.into_inner().unwrap();
            pieces.sort_by_key(|(i, _)| *i);
            pieces.dedup_by_key(|(i, _)| *i);
            let (disk, first) = (disk.clone(), b);
            let keys: Vec<BlockKey> = (0..pieces.len() as u64).map(|i| key(first + i)).collect();
            tokio::task::spawn_blocking(move || {
                for ((_, data), k) in pieces.iter().zip(keys) {
                    disk.put_now(&k, data)?;
                }
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| StoreError::Local(e.to_string()))??;
            fetched += len;
            b = end;
        }
        Ok(fetched)
    }
}

type StoreResultU64 = Result<u64, StoreError>;
