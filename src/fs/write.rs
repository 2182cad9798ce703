//! Files open for writing.
//!
//! # Design
//!
//! Every inode open for writing has one [`WriteState`], shared by all its handles: a
//! [`Spool`] that holds the file's whole current contents, its size, and whether it differs
//! from S3.
//!
//! - Opening with `O_TRUNC` (or creating) starts from an empty spool. Opening an existing
//!   file otherwise copies the object into the spool first (ranged GETs pinned to the etag
//!   seen at open), so appends, holes and writes in the middle are plain `pwrite`s.
//! - `write`, `truncate` and reads by any handle of that inode go to the spool, so the
//!   mount sees a file being written at its current size and contents.
//! - `flush` (every `close`), `fsync` and the last `release` upload the spool if it is
//!   dirty (`upload/`), before replying, and return the upload's error: **close returning 0
//!   means the data is in S3**.
//! - Loads and uploads of one inode are serialized by `WriteState::io`; a write that lands
//!   during an upload marks the state dirty again, so the next flush uploads it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::Fs;
use super::error::{FsError, FsResult};
use super::handle::Handle;
use super::inodes::{Attr, Found, Kind};
use super::meta::Meta;
use super::namespace::Caller;
use super::spool::Spool;
use super::upload::{self, Stream, UploadCtx};
use crate::pending::PendingRecord;

mod kept;
mod ops;
use crate::store::{Expect, StoreError, StoreResult};
pub(super) use kept::{Retry, Snapshot};

/// Chunk size for copying an existing object into the spool.
const LOAD_CHUNK: u64 = 8 << 20;
/// S3's largest object: a file cannot grow past it.
const MAX_OBJECT_SIZE: u64 = 5 << 40;

pub(super) fn check_size(end: u64) -> StoreResult<()> {
    if end > MAX_OBJECT_SIZE {
        Err(StoreError::TooLarge)
    } else {
        Ok(())
    }
}

struct Inner {
    size: u64,
    /// The spool holds the object's contents (or the file was truncated/created).
    loaded: bool,
    /// The spool (or the metadata) differs from S3.
    dirty: bool,
    /// The name was unlinked while open: nothing is uploaded any more.
    unlinked: bool,
    /// Open handles using this state.
    handles: usize,
    meta: Meta,
    modified: SystemTime,
    /// The etag of the object these contents started from (`None`: there was none); the
    /// etag of each successful upload from then on. A pending upload finding anything else
    /// in S3 goes beside it (`pending.rs`).
    base_etag: Option<String>,
    /// Grows with every change of contents or metadata.
    version: u64,
    /// The pending-upload record holding a copy of these contents, and the version copied.
    pub(super) kept: Option<(PendingRecord, u64)>,
    /// Background retries of a kept upload.
    pub(super) retry: Retry,
}

impl Inner {
    /// Whether S3 lacks what this state holds: the one test of "something to upload".
    fn upload_pending(&self) -> bool {
        self.dirty && self.loaded && !self.unlinked
    }

    /// New contents: dirty, and the upload's mtime and ctime are "now" again (the object's
    /// Last-Modified), not an earlier utimens.
    fn touched(&mut self) {
        self.dirty = true;
        self.version += 1;
        self.modified = SystemTime::now();
        self.meta.mtime = None;
        self.meta.ctime = None;
    }
}

/// The dirty contents of one inode open for writing.
pub struct WriteState {
    pub ino: u64,
    spool: Spool,
    inner: Mutex<Inner>,
    /// Serializes loading and uploading.
    io: tokio::sync::Mutex<()>,
    ctx: Arc<UploadCtx>,
    stream: tokio::sync::Mutex<Option<Stream>>,
}

impl WriteState {
    /// `stream_to`: the key a file that starts empty streams to.
    fn new(
        ctx: Arc<UploadCtx>,
        spool: Spool,
        ino: u64,
        (meta, base_etag): (Meta, Option<String>),
        stream_to: Option<String>,
    ) -> Self {
        let empty = stream_to.is_some();
        let stream = stream_to.map(|rel| Stream::new(rel, meta.clone(), &ctx));
        WriteState {
            ino,
            spool,
            inner: Mutex::new(Inner {
                size: 0,
                loaded: empty,
                dirty: empty,
                unlinked: false,
                handles: 0,
                meta,
                modified: SystemTime::now(),
                base_etag,
                version: 0,
                kept: None,
                retry: Retry::default(),
            }),
            io: tokio::sync::Mutex::new(()),
            stream: tokio::sync::Mutex::new(stream),
            ctx,
        }
    }

    /// One handle fewer; true if it was the last.
    fn drop_handle(&self) -> bool {
        let mut i = self.inner.lock().unwrap();
        i.handles = i.handles.saturating_sub(1);
        i.handles == 0
    }

    pub fn size(&self) -> u64 {
        self.inner.lock().unwrap().size
    }

    /// The size to upload, if there is anything to upload.
    pub fn pending_size(&self) -> Option<u64> {
        let i = self.inner.lock().unwrap();
        i.upload_pending().then_some(i.size)
    }

    /// What the mount should show for the file while this state is live.
    pub fn overlay(&self, mut found: Found) -> Found {
        let i = self.inner.lock().unwrap();
        found.kind = Kind::File;
        found.size = i.size;
        found.meta = i.meta.clone();
        found.meta.mtime = found.meta.mtime.or(Some(i.modified));
        found.meta_known = true;
        found
    }

    /// The metadata the next upload carries (the file's, changed by `f`).
    pub fn meta(&self) -> Meta {
        self.inner.lock().unwrap().meta.clone()
    }

    /// Copies the object into the spool unless that was done (or not needed), through the
    /// block caches (so a file cached on disk opens for writing without S3).
    pub(super) async fn ensure_loaded(
        &self,
        read: &Arc<super::read::ReadShared>,
        rel: &str,
        etag: &str,
        size: u64,
    ) -> FsResult<()> {
        if self.inner.lock().unwrap().loaded {
            return Ok(());
        }
        let _io = self.io.lock().await;
        if self.inner.lock().unwrap().loaded {
            return Ok(());
        }
        let reader =
            super::read::FileReader::new(read.clone(), rel.to_owned(), etag.to_owned(), size);
        let mut off = 0;
        while off < size {
            let len = LOAD_CHUNK.min(size - off);
            let data = reader.read(off, len as u32).await?;
            crate::store::check_length(data.len() as u64, off, len)?;
            self.spool.write_at(data, off).await?;
            off += len;
        }
        let mut i = self.inner.lock().unwrap();
        i.loaded = true;
        i.size = size;
        Ok(())
    }

    pub async fn write(&self, offset: u64, data: Vec<u8>) -> StoreResult<u32> {
        if data.is_empty() {
            // POSIX: a zero-length write has no other result (no growth, no new mtime).
            return Ok(0);
        }
        check_size(offset.saturating_add(data.len() as u64))?;
        let data = Bytes::from(data);
        let len = data.len();
        self.spool.write_at(data.clone(), offset).await?;
        self.spooled(offset, len);
        if self.stream_now(offset, &data) {
            self.stream_write(offset, &data).await;
        }
        Ok(len as u32)
    }

    /// [`WriteState::write`] on the calling thread, which may block on the spool (a FUSE
    /// thread, never an async worker), without copying `data` first. Returns whether the
    /// stream still has to take `data` ([`WriteState::stream_write`]): when it fills a part,
    /// which has to wait for S3. A zero-length write does nothing.
    pub fn write_now(&self, offset: u64, data: &[u8]) -> StoreResult<bool> {
        if data.is_empty() {
            return Ok(false);
        }
        check_size(offset.saturating_add(data.len() as u64))?;
        self.spool.write_now(data, offset)?;
        self.spooled(offset, data.len());
        Ok(self.stream_now(offset, data))
    }

    /// `len` bytes at `offset` are in the spool.
    fn spooled(&self, offset: u64, len: usize) {
        let mut i = self.inner.lock().unwrap();
        i.size = i.size.max(offset + len as u64);
        i.touched();
    }

    /// Feeds a write that is in the spool to the streaming upload, if there is one, when
    /// that needs no waiting. True when [`WriteState::stream_write`] must still take it: it
    /// fills a part, or the stream is busy.
    fn stream_now(&self, offset: u64, data: &[u8]) -> bool {
        let Ok(mut stream) = self.stream.try_lock() else {
            return true;
        };
        let Some(s) = stream.as_mut() else {
            return false;
        };
        match s.accept_now(&self.ctx, offset, data) {
            Some(true) => false,
            Some(false) => {
                self.abandon_non_sequential(&mut stream);
                false
            }
            None => true,
        }
    }

    /// Feeds a write that is in the spool to the streaming upload, if there is one: it
    /// takes the bytes if they continue it, else it is abandoned.
    pub async fn stream_write(&self, offset: u64, data: &[u8]) {
        let mut stream = self.stream.lock().await;
        if let Some(s) = stream.as_mut() {
            match s.accept(&self.ctx, offset, data).await {
                Ok(true) => {}
                Ok(false) => self.abandon_non_sequential(&mut stream),
                Err(e) => {
                    // The spool has everything; the flush will upload it whole.
                    tracing::warn!(ino = self.ino, error = %e, "streaming upload failed");
                    if let Some(s) = stream.take() {
                        s.abandon(&self.ctx);
                    }
                }
            }
        }
    }

    /// A write landed elsewhere than the stream's end: the stream goes, and the flush
    /// uploads the spool.
    fn abandon_non_sequential(&self, stream: &mut Option<Stream>) {
        tracing::debug!(
            ino = self.ino,
            "non-sequential write: uploading from the spool"
        );
        if let Some(s) = stream.take() {
            s.abandon(&self.ctx);
        }
    }

    /// Stops streaming (the flush will upload the spool).
    async fn stop_stream(&self) {
        if let Some(s) = self.stream.lock().await.take() {
            s.abandon(&self.ctx);
        }
    }

    pub async fn read(&self, offset: u64, size: u32) -> StoreResult<Bytes> {
        let end = self.size().min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Bytes::new());
        }
        self.spool.read_exact(offset, end - offset).await
    }

    pub async fn truncate(&self, size: u64) -> StoreResult<()> {
        check_size(size)?;
        let keeps_stream = matches!(&*self.stream.lock().await, Some(s) if s.end() == size);
        if !keeps_stream {
            self.stop_stream().await;
        }
        // A loaded spool is as long as the file: the same size needs no call (a create, an
        // `O_TRUNC` of an empty file).
        let same = {
            let i = self.inner.lock().unwrap();
            i.loaded && i.size == size
        };
        if !same {
            self.spool.set_len(size).await?;
        }
        let mut i = self.inner.lock().unwrap();
        i.size = size;
        i.touched();
        Ok(())
    }

    /// Waits for the load or upload in flight, if any, and holds off the next one while the
    /// guard lives: a metadata change stored server-side must not race an upload (during
    /// one the state looks clean, yet S3 holds the old version, or for a new file nothing).
    pub(super) async fn idle(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.io.lock().await
    }

    /// Changes the metadata the next upload carries.
    pub(super) fn update_meta(&self, f: impl FnOnce(&mut Meta)) {
        let mut i = self.inner.lock().unwrap();
        f(&mut i.meta);
        i.dirty = true;
        i.version += 1;
    }

    /// `meta` was stored in S3 by other means (a CopyObject): later uploads carry it, and
    /// it alone makes nothing to upload.
    pub(super) fn meta_stored(&self, meta: Meta) {
        let mut i = self.inner.lock().unwrap();
        i.meta = meta;
        i.version += 1;
    }

    pub fn is_unlinked(&self) -> bool {
        self.inner.lock().unwrap().unlinked
    }

    /// The name is gone: nothing is uploaded any more. Returns the kept record, if any,
    /// which the caller forgets.
    #[must_use]
    pub(super) fn mark_unlinked(&self) -> Option<PendingRecord> {
        let mut i = self.inner.lock().unwrap();
        i.unlinked = true;
        i.kept.take().map(|(record, _)| record)
    }
}
