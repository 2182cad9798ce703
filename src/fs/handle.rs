//! Open file handles: what each one reads from and writes to, as one enum, and the
//! operations that only need the handle (open, read).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Fs;
use super::error::{FsError, FsResult};
use super::inodes::Kind;
use super::read::FileReader;
use super::write::WriteState;
use crate::store::StoreError;

/// One open file handle.
pub(super) enum Handle {
    /// Reads S3 through the block cache, pinned to one version: the one seen at open, or
    /// one this mount wrote since ([`Fs::readers_follow`]). Once the mount learns that
    /// another client replaced it, reads fail with `ESTALE`: no read mixes two versions.
    /// `keep_cache`: the kernel may keep the pages it has of the file (same version as at
    /// the previous open).
    Reader {
        ino: u64,
        reader: std::sync::Mutex<Arc<FileReader>>,
        keep_cache: bool,
    },
    /// Opened for reading while this mount was writing the file: reads the spool as long
    /// as the file is open for writing, then what the writer uploaded — or, if the name
    /// was unlinked meanwhile (nothing was uploaded), the spool it kept.
    ReaderOfWritten { ino: u64, state: Arc<WriteState> },
    /// Open for writing: reads and writes go to the inode's shared write state.
    Writer { ino: u64, state: Arc<WriteState> },
}

impl Handle {
    pub fn ino(&self) -> u64 {
        match self {
            Handle::Reader { ino, .. }
            | Handle::ReaderOfWritten { ino, .. }
            | Handle::Writer { ino, .. } => *ino,
        }
    }

    pub fn write_state(&self) -> Option<&Arc<WriteState>> {
        match self {
            Handle::Writer { state, .. } => Some(state),
            _ => None,
        }
    }
}

impl Fs {
    /// Whether the kernel may keep its page cache of the file open as `fh`: it holds the
    /// same version (etag) as at the previous open in this mount, so warm re-reads never
    /// reach the filesystem. Otherwise the kernel drops those pages at open.
    pub fn keeps_page_cache(&self, fh: u64) -> bool {
        self.handle(fh).is_ok_and(|h| {
            matches!(
                *h,
                Handle::Reader {
                    keep_cache: true,
                    ..
                }
            )
        })
    }

    /// Notes the version `ino` is opened at; true if it is the one of the previous open.
    fn same_version_as_last_open(&self, ino: u64, etag: Option<&str>) -> bool {
        let mut opened = self.opened_versions.lock().unwrap();
        match etag {
            Some(etag) => opened.insert(ino, etag.to_owned()).as_deref() == Some(etag),
            None => {
                opened.remove(&ino);
                false
            }
        }
    }

    pub(super) fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(fh, Arc::new(handle));
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(FsError::new(libc::EBADF))
    }

    /// Opens a file; `write` for write access, `trunc` for `O_TRUNC`.
    pub async fn open(&self, ino: u64, write: bool, trunc: bool) -> FsResult<u64> {
        // A file a conflict moved aside, opened before the kernel looked it up by its new
        // name: the open came through the name it left, whose entry the kernel has not
        // dropped yet (the invalidation is sent behind). That name now holds another
        // writer's version: ESTALE makes the kernel look it up again, so nothing is read
        // from, or written over, the version the name no longer shows.
        if self.inodes.is_aside(ino) {
            return Err(FsError::new(libc::ESTALE));
        }
        if write || trunc {
            // Written through this mount: pages may change under other opens' feet.
            self.same_version_as_last_open(ino, None);
            return self.open_write(ino, trunc).await;
        }
        if let Some(state) = self.write_state(ino) {
            self.same_version_as_last_open(ino, None);
            return Ok(self.add_handle(Handle::ReaderOfWritten { ino, state }));
        }
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        if node.kind == Kind::Dir {
            return Err(FsError::new(libc::EISDIR));
        }
        let (etag, size) = if node.fresh {
            (node.etag.clone(), node.attr.size)
        } else {
            match self.refresh_file(&node).await {
                // Offline: the version last seen, read from the disk cache.
                Err(e) if e.is_unreachable() => {}
                other => {
                    other?;
                }
            }
            let n = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
            (n.etag, n.attr.size)
        };
        // A new version found (here or by a lookup just before): the kernel drops the old
        // one's pages and attributes before this reader fills the cache, not after (which
        // would drop the new pages and have them read twice).
        self.kernel_caught_up().await;
        let keep_cache = !etag.is_empty() && self.same_version_as_last_open(ino, Some(&etag));
        let reader = FileReader::new(self.read.clone(), node.rel.clone(), etag, size);
        Ok(self.add_handle(Handle::Reader {
            ino,
            reader: std::sync::Mutex::new(Arc::new(reader)),
            keep_cache,
        }))
    }

    /// This mount changed `ino` (an upload, a metadata copy, a rename, a conflict copy): its
    /// open readers read the version it now has, as on a local disk.
    pub(super) fn readers_follow(&self, ino: u64) {
        let Some(node) = self.inodes.get(ino) else {
            return;
        };
        let handles: Vec<Arc<Handle>> = self.handles.lock().unwrap().values().cloned().collect();
        for h in handles {
            if let Handle::Reader { ino: i, reader, .. } = &*h
                && *i == ino
            {
                *reader.lock().unwrap() = Arc::new(FileReader::new(
                    self.read.clone(),
                    node.rel.clone(),
                    node.etag.clone(),
                    node.attr.size,
                ));
            }
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let data = self.read_inner(fh, offset, size).await?;
        self.counters.read(data.len() as u64);
        Ok(data)
    }

    async fn read_inner(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let handle = self.handle(fh)?;
        let ino = handle.ino();
        // A file being written is read from its spool, by every handle.
        let writing = handle
            .write_state()
            .cloned()
            .or_else(|| self.write_state(ino))
            .or_else(|| match &*handle {
                Handle::ReaderOfWritten { state, .. } if state.is_unlinked() => Some(state.clone()),
                _ => None,
            });
        if let Some(ws) = writing {
            let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
            ws.ensure_loaded(&self.read, &node.rel, &node.etag, node.attr.size)
                .await?;
            return Ok(ws.read(offset, size).await?);
        }
        let result = match &*handle {
            Handle::Reader { reader, .. } => {
                let reader = reader.lock().unwrap().clone();
                // The mount knows of a newer version than this handle's (another client
                // replaced the object): serving either would mix two versions.
                if let Some(node) = self.inodes.get(ino)
                    && !node.etag.is_empty()
                    && node.etag != reader.etag()
                {
                    return Err(FsError::new(libc::ESTALE));
                }
                reader.read(offset, size).await
            }
            // The writer has closed: read what it uploaded.
            _ => {
                let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
                let reader =
                    FileReader::new(self.read.clone(), node.rel, node.etag, node.attr.size);
                reader.read(offset, size).await
            }
        };
        result.map_err(|e| {
            if matches!(*e, StoreError::Changed) {
                // The next open must see the new version, not retry the old etag.
                self.inodes.invalidate(ino);
            }
            if e.is_unreachable() {
                self.uncached_offline(ino);
            }
            FsError::from(e)
        })
    }
}
