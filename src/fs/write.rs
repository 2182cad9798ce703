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
use crate::store::{Expect, StoreError, StoreResult};
pub(super) use kept::{Retry, Snapshot};

/// How often an upload that raced another conditional write (409) starts over before the
/// conflict rule applies.
const MAX_RACES: u32 = 3;
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

impl Fs {
    pub(super) fn write_state(&self, ino: u64) -> Option<Arc<WriteState>> {
        self.writes.lock().unwrap().get(&ino).cloned()
    }

    /// Every live write state (for listings, shutdown and status).
    pub(super) fn write_states(&self) -> Vec<Arc<WriteState>> {
        self.writes.lock().unwrap().values().cloned().collect()
    }

    /// The live write state of `ino`, created if needed, with one more handle counted.
    /// `stream_to`: the key, when the file starts empty (created or `O_TRUNC`).
    /// `base`: the metadata, and the etag of the object the contents start from.
    fn attach_write(
        &self,
        ino: u64,
        base: (Meta, Option<String>),
        stream_to: Option<String>,
    ) -> FsResult<Arc<WriteState>> {
        let mut writes = self.writes.lock().unwrap();
        let ws = match writes.get(&ino) {
            Some(ws) => ws.clone(),
            None => {
                let spool = Spool::create(&self.opts.spool_dir, ino)?;
                let ws = Arc::new(WriteState::new(
                    self.upload.clone(),
                    spool,
                    ino,
                    base,
                    stream_to,
                ));
                writes.insert(ino, ws.clone());
                ws
            }
        };
        ws.inner.lock().unwrap().handles += 1;
        Ok(ws)
    }

    /// Drops one handle; the last one uploads anything still dirty and frees the spool.
    pub(super) async fn detach_write(&self, ws: &Arc<WriteState>) -> FsResult<()> {
        self.detach_write_keeping(ws, true).await
    }

    /// [`Fs::detach_write`]; `keep`: a failed last upload is kept (see `pending.rs`). A
    /// truncate(2)'s own short-lived handle passes false unless the file is kept already:
    /// a truncate that fails changes nothing.
    pub(super) async fn detach_write_keeping(
        &self,
        ws: &Arc<WriteState>,
        keep: bool,
    ) -> FsResult<()> {
        if !ws.drop_handle() {
            return Ok(());
        }
        let mut result = self.flush_state(ws).await;
        // Offline, a truncate's change is kept like any other (it would fail otherwise).
        if let Err(e) = &result
            && (keep || self.keeps_offline(e))
        {
            self.keep_pending(ws, e).await;
        }
        loop {
            {
                // Under the writes lock, which setattr holds while it marks metadata dirty:
                // a chmod/utime that lands while this release is in flight is either seen
                // here (and flushed) or finds no write state and copies the object itself.
                let mut writes = self.writes.lock().unwrap();
                let inner = ws.inner.lock().unwrap();
                if inner.handles != 0 {
                    return result;
                }
                // A kept upload stays live: the mount shows it and retries it.
                if result.is_err() && inner.kept.is_some() && inner.upload_pending() {
                    break;
                }
                if !inner.upload_pending() || result.is_err() {
                    if writes.get(&ws.ino).is_some_and(|w| Arc::ptr_eq(w, ws)) {
                        writes.remove(&ws.ino);
                    }
                    drop((inner, writes));
                    if result.is_ok() {
                        self.cache_written(ws);
                    }
                    break;
                }
            }
            result = self.flush_state(ws).await;
        }
        if let Err(e) = &result
            && ws.inner.lock().unwrap().kept.is_none()
        {
            tracing::error!(ino = ws.ino, error = %e, "last upload failed; data dropped");
        }
        match result {
            // Offline: safe on this disk (fsync'd), sent when S3 answers.
            Err(e) if self.kept_offline(ws, &e) => Ok(()),
            other => other,
        }
    }

    /// A file this mount wrote and closed, its version in S3: its contents go to the disk
    /// cache, so reading it (after a remount, offline) needs no GET.
    pub(super) fn cache_written(&self, ws: &WriteState) {
        let (Some(disk), Some(node)) = (&self.read.disk, self.inodes.get(ws.ino)) else {
            return;
        };
        let etag = node.found.etag.clone();
        let size = ws.size();
        let same_version = ws.base_etag().as_deref() == Some(etag.as_str());
        if ws.is_unlinked() || !same_version || size != node.found.size {
            return;
        }
        if let Ok(file) = ws.spool_file() {
            disk.ingest(&node.rel, &etag, file, size);
        }
    }

    /// Drops one handle of a kept state without trying S3 now: the change is written to the
    /// pending area (if it is the last handle) and left to the retrier.
    pub(super) async fn release_kept_handle(&self, ws: &Arc<WriteState>) {
        if ws.drop_handle() {
            self.keep_pending(ws, &FsError::new(libc::EIO)).await;
        }
    }

    /// Uploads the spool if dirty; on success the inode shows what S3 now holds.
    pub(super) async fn flush_state(&self, ws: &Arc<WriteState>) -> FsResult<()> {
        self.flush_state_checked(ws).await.map(drop)
    }

    /// [`Fs::flush_state`]. Every upload is conditional on the version the writer started
    /// from (`If-Match` on its etag; `If-None-Match: *` for a new name). When another writer
    /// got there first, the data goes beside the object as a conflict copy, the file follows
    /// it there (`pending.rs`: [`Fs::keep_beside`]), and its name is returned.
    pub(super) async fn flush_state_checked(
        &self,
        ws: &Arc<WriteState>,
    ) -> FsResult<Option<String>> {
        let _io = ws.io.lock().await;
        let pending = {
            let mut i = ws.inner.lock().unwrap();
            let pending = i
                .upload_pending()
                .then(|| (i.size, (i.meta.clone(), i.modified)));
            if pending.is_some() {
                i.dirty = false;
            }
            pending
        };
        let node = self.inodes.get(ws.ino);
        let (stream, held) = {
            let mut stream = ws.stream.lock().await;
            match stream.as_ref() {
                // A stream that has not sent a part yet stays: a flush this early (a shell's
                // `>`, `dd`, a child that inherits the descriptor and exits) must not cost the
                // rest of the file its streaming upload. What it holds may be the whole file.
                Some(s) if !s.started() => {
                    let held = pending
                        .as_ref()
                        .zip(node.as_ref())
                        .and_then(|((size, _), node)| s.held(&node.rel, *size));
                    (None, held)
                }
                _ => (stream.take(), None),
            }
        };
        let (Some((size, meta)), Some(node)) = (pending, node) else {
            if let Some(s) = stream {
                s.abandon(&ws.ctx);
            }
            return Ok(None);
        };
        let (meta, modified) = meta;
        let mut expect = Expect::from_base(ws.base_etag().as_deref());
        let mut stream = stream;
        let mut races = 0;
        let uploaded = loop {
            let attempt = upload::upload(
                &ws.ctx,
                &ws.spool,
                &node.rel,
                size,
                (&meta, modified),
                stream.take(),
                held.clone(),
                &expect,
            )
            .await;
            match attempt {
                // The version this writer started from was deleted meanwhile: nothing of
                // anyone's is lost by bringing the name back, if it is still free.
                Err(StoreError::NotFound) if matches!(expect, Expect::Version(_)) => {
                    expect = Expect::Absent;
                }
                // Two conditional writes raced: S3 says start over (a few times).
                Err(StoreError::Raced) if races < MAX_RACES => races += 1,
                other => break other,
            }
        };
        match uploaded {
            // The data is S3's version `etag`; the metadata set meanwhile is not: it is
            // still to upload, on that version.
            Ok(upload::Uploaded {
                etag,
                meta,
                meta_error: Some(e),
            }) => {
                {
                    let mut i = ws.inner.lock().unwrap();
                    i.base_etag = Some(etag.clone());
                    i.dirty = true;
                }
                let found = Found::written(Kind::File, size, etag, meta);
                self.inodes.set_written(ws.ino, found);
                self.readers_follow(ws.ino);
                Err(e.into())
            }
            Ok(upload::Uploaded { etag, meta, .. }) => {
                let kept = {
                    let mut i = ws.inner.lock().unwrap();
                    i.base_etag = Some(etag.clone());
                    i.retry = Retry::default();
                    i.kept.take()
                };
                if let Some((record, _)) = kept {
                    self.forget_kept(&record);
                }
                let found = Found::written(Kind::File, size, etag, meta);
                self.inodes.set_written(ws.ino, found);
                self.readers_follow(ws.ino);
                Ok(None)
            }
            Err(StoreError::Changed | StoreError::Raced) => {
                let mut meta = meta;
                meta.mtime = meta.mtime.or(Some(modified));
                match self.keep_beside(ws, &node, size, &meta, held).await {
                    Ok(name) => Ok(Some(name)),
                    Err(e) => {
                        ws.inner.lock().unwrap().dirty = true;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                ws.inner.lock().unwrap().dirty = true;
                Err(e.into())
            }
        }
    }

    /// Opens an existing file for writing; `trunc` starts from empty.
    pub(super) async fn open_write(&self, ino: u64, trunc: bool) -> FsResult<u64> {
        self.writable()?;
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        if node.kind == Kind::Dir {
            return Err(FsError::new(libc::EISDIR));
        }
        if node.kind != Kind::File {
            // Symlinks and special files are never opened through the filesystem.
            return Err(FsError::new(libc::EINVAL));
        }
        let live = self.write_state(ino).is_some();
        // The upload rewrites the object's metadata: it must be what S3 holds.
        let node = if live || (node.fresh && node.found.meta_known) {
            node
        } else {
            match self.refresh_file(&node).await {
                // Offline: the version last seen; the upload names it, so a version
                // another client stored meanwhile is not replaced.
                Err(e) if e.is_unreachable() => {}
                other => {
                    other?;
                }
            }
            self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?
        };
        // Opening changes nothing: the stored times stay until something is written.
        let meta = node.found.meta.clone();
        let base_etag = Some(node.etag.clone()).filter(|e| !e.is_empty());
        let ws = self.attach_write(ino, (meta, base_etag), trunc.then(|| node.rel.clone()))?;
        let prepared = if trunc {
            ws.truncate(0).await.map_err(FsError::from)
        } else {
            ws.ensure_loaded(&self.read, &node.rel, &node.etag, node.attr.size)
                .await
        };
        if let Err(e) = prepared {
            let _ = self.detach_write(&ws).await;
            return Err(e);
        }
        Ok(self.add_handle(Handle::Writer { ino, state: ws }))
    }

    /// Creates (or recreates) `parent/name` as an empty file open for writing, owned by
    /// `caller`. The object appears in S3 at the first flush.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<(Attr, u64)> {
        self.writable()?;
        let parent_rel = self.new_name(parent, name)?;
        self.store.check_object(&format!("{parent_rel}{name}"))?;
        let meta = self.new_meta(parent, libc::S_IFREG | (mode & 0o7777), caller);
        let found = Found::written(Kind::File, 0, String::new(), meta.clone());
        let attr = self.inodes.upsert(parent, name, found.clone(), true);
        self.inodes.add_to_listing(parent, name);
        self.touch_dirs(&[parent]);
        let ws = self.attach_write(attr.ino, (meta, None), Some(format!("{parent_rel}{name}")))?;
        ws.truncate(0).await?;
        let fh = self.add_handle(Handle::Writer {
            ino: attr.ino,
            state: ws.clone(),
        });
        Ok((self.inodes.attr(attr.ino, &ws.overlay(found)), fh))
    }

    /// The write state behind `fh`, once a write ending at `end` is admitted.
    fn admitted_writer(&self, fh: u64, end: u64) -> FsResult<Arc<WriteState>> {
        let handle = self.handle(fh)?;
        let ws = handle.write_state().ok_or(FsError::new(libc::EBADF))?;
        self.admit(ws, end)?;
        Ok(ws.clone())
    }

    pub async fn write(&self, fh: u64, offset: u64, data: Vec<u8>) -> FsResult<u32> {
        let ws = self.admitted_writer(fh, offset.saturating_add(data.len() as u64))?;
        let n = ws.write(offset, data).await?;
        self.counters.written(u64::from(n));
        Ok(n)
    }

    /// [`Fs::write`] on a thread that may block (a FUSE thread), from the caller's buffer.
    /// `Some(state)`: the data is written, but a part of the streaming upload filled, so
    /// the caller must still give it to `WriteState::stream_write` before replying.
    pub fn write_now(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> FsResult<Option<Arc<WriteState>>> {
        let ws = self.admitted_writer(fh, offset.saturating_add(data.len() as u64))?;
        let stream_next = ws.write_now(offset, data)?;
        self.counters.written(data.len() as u64);
        Ok(stream_next.then_some(ws))
    }

    /// flush and fsync: upload now if dirty, and report the outcome.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        match self.handle(fh)?.write_state() {
            Some(ws) => match self.flush_state_checked(ws).await {
                // The data is safe in S3 beside the object; a mount that must tell says so.
                Ok(Some(_)) if self.opts.conflict_error => Err(FsError::new(libc::ESTALE)),
                Ok(_) => Ok(()),
                Err(e) => {
                    self.keep_pending(ws, &e).await;
                    if self.kept_offline(ws, &e) {
                        // Offline: safe on this disk (fsync'd), sent when S3 answers.
                        return Ok(());
                    }
                    Err(e)
                }
            },
            None => Ok(()),
        }
    }

    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let handle = self.handles.lock().unwrap().remove(&fh);
        let result = match handle.as_deref().and_then(Handle::write_state) {
            Some(ws) => self.detach_write(ws).await,
            None => Ok(()),
        };
        // The kernel may have forgotten the inode while it was open (the last handle
        // of an unlinked file, a write state that outlived its name).
        if let Some(h) = handle
            && self.inodes.lookups(h.ino()) == 0
        {
            self.evict_if_unused(h.ino());
        }
        result
    }
}
