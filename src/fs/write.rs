//! Writes and namespace changes.
//!
//! # Design (simplest correct first)
//!
//! Every inode open for writing has one [`WriteState`], shared by all its handles: an
//! anonymous spool file (created under `MountOptions::spool_dir`, unlinked at once so a
//! crash leaves nothing behind) that holds the file's whole current contents, its size, and
//! whether it differs from S3 (`dirty`).
//!
//! - Opening with `O_TRUNC` (or creating) starts from an empty spool. Opening an existing
//!   file otherwise copies the object into the spool first (ranged GETs pinned to the etag
//!   seen at open), so appends, holes and writes in the middle are plain `pwrite`s.
//! - `write`, `truncate` and reads by any handle of that inode go to the spool, so the
//!   mount sees a file being written at its current size and contents.
//! - `flush` (every `close`), `fsync` and the last `release` upload the whole spool if it
//!   is dirty: one PutObject below the part size, else a multipart upload with a few parts
//!   in flight (memory: part size × parts in flight); a failed multipart upload is
//!   aborted. The upload finishes before `flush` replies and `flush` returns its error, so
//!   **close returning 0 means the data is in S3**.
//! - Loads and uploads of one inode are serialized by `WriteState::io`; a write that lands
//!   during an upload marks the state dirty again, so the next flush uploads it.
//!
//! # Streaming (the fast path for `cp`)
//!
//! A file that starts empty (created, or opened with `O_TRUNC`) and is written front to
//! back also feeds a [`Stream`]: once a part's worth of bytes has arrived, a multipart
//! upload is started and each full part is sent in the background while the writer goes
//! on, so most of the upload is done when `close` comes and only the last part and the
//! completion remain. Memory per handle is bounded by part size × (parts in flight + 1),
//! and mount-wide by [`UploadCtx::budget`] (parts buffered for upload): a writer over
//! budget waits for a permit, it never fails. The spool still receives every byte, so
//! the stream is purely an optimization: a write anywhere but the end, a truncate, a
//! rename, or a failed part abandons it (the upload is aborted) and the flush uploads the
//! spool instead. Metadata set after the stream started (`cp -p`'s utimens/chmod) is
//! applied after completion by a CopyObject onto itself.
//!
//! Namespace changes (mkdir, rmdir, unlink, rename, metadata) are here too. Each one
//! updates the inode table and drops the affected listings, so the mount sees its own
//! changes at once, whatever the metadata TTL.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::inodes::{Attr, Found, Kind, valid_name};
use super::{Fs, FsError, FsResult, OpenFile};
use crate::store::{Meta, PartDone, Store, StoreError, StoreResult};

/// Chunk size for copying an existing object into the spool.
const LOAD_CHUNK: u64 = 8 << 20;
/// Keys copied or deleted at once by a directory rename.
const RENAME_CONCURRENCY: usize = 8;

static SPOOL_SEQ: AtomicU64 = AtomicU64::new(0);

struct Inner {
    size: u64,
    /// The spool holds the object's contents (or the file was truncated/created).
    loaded: bool,
    /// The spool differs from S3.
    dirty: bool,
    /// The name was unlinked while open: nothing is uploaded any more.
    unlinked: bool,
    /// Open handles using this state.
    handles: usize,
    meta: Meta,
    modified: SystemTime,
}

/// What every upload of one mount shares.
pub struct UploadCtx {
    pub store: Arc<Store>,
    pub part_size: u64,
    pub parts_in_flight: usize,
    /// Parts buffered for upload (streamed or flushed), mount-wide.
    pub budget: Arc<Semaphore>,
}

/// A multipart upload fed while a file is written front to back.
struct Stream {
    rel: String,
    meta: Meta,
    upload_id: Option<String>,
    /// Accepted bytes not yet sent as a part.
    buf: BytesMut,
    /// Bytes accepted so far; the next sequential write starts here.
    end: u64,
    next_part: i32,
    parts: Vec<JoinHandle<StoreResult<PartDone>>>,
    /// Parts of this stream in flight.
    in_flight: Arc<Semaphore>,
}

impl Stream {
    fn new(rel: String, meta: Meta, ctx: &UploadCtx) -> Self {
        Stream {
            rel,
            meta,
            upload_id: None,
            buf: BytesMut::new(),
            end: 0,
            next_part: 1,
            parts: Vec::new(),
            in_flight: Arc::new(Semaphore::new(ctx.parts_in_flight.max(1))),
        }
    }

    /// Sends the first `len` buffered bytes as the next part, starting the upload if needed.
    /// Waits for a permit when this stream or the mount has too many parts in flight.
    async fn send_part(&mut self, ctx: &UploadCtx, len: usize) -> StoreResult<()> {
        let id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = ctx.store.create_multipart(&self.rel, self.meta).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let local = self.in_flight.clone().acquire_owned().await;
        let global = ctx.budget.clone().acquire_owned().await;
        let part = self.buf.split_to(len).freeze();
        let number = self.next_part;
        self.next_part += 1;
        let (store, rel) = (ctx.store.clone(), self.rel.clone());
        self.parts.push(tokio::spawn(async move {
            let r = store.upload_part(&rel, &id, number, part).await;
            drop((local, global));
            r
        }));
        Ok(())
    }

    /// Sends the rest and completes the upload; aborts it on any failure.
    async fn finish(mut self, ctx: &UploadCtx) -> StoreResult<String> {
        let rest = self.buf.len();
        let mut result = if rest > 0 {
            self.send_part(ctx, rest).await
        } else {
            Ok(())
        };
        let mut done = Vec::with_capacity(self.parts.len());
        for task in std::mem::take(&mut self.parts) {
            match task.await {
                Ok(Ok(p)) => done.push(p),
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(e) => result = result.and(Err(StoreError::Other(format!("part task: {e}")))),
            }
        }
        let id = self.upload_id.clone().unwrap_or_default();
        let result = match result {
            Ok(()) => ctx.store.complete_multipart(&self.rel, &id, done).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.abandon(ctx);
        }
        result
    }

    /// Stops streaming: cancels parts in flight and aborts the upload in the background.
    fn abandon(self, ctx: &UploadCtx) {
        for t in &self.parts {
            t.abort();
        }
        if let Some(id) = self.upload_id {
            let (store, rel) = (ctx.store.clone(), self.rel);
            tokio::spawn(async move {
                if let Err(e) = store.abort_multipart(&rel, &id).await {
                    tracing::warn!(key = %rel, error = %e, "could not abort a multipart upload");
                }
            });
        }
    }
}

/// The dirty contents of one inode open for writing.
pub struct WriteState {
    pub ino: u64,
    file: std::fs::File,
    inner: Mutex<Inner>,
    /// Serializes loading and uploading.
    io: tokio::sync::Mutex<()>,
    ctx: Arc<UploadCtx>,
    stream: tokio::sync::Mutex<Option<Stream>>,
}

/// Runs blocking spool I/O off the async workers.
async fn spool_io<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(e) => Err(StoreError::Local(format!("spool task failed: {e}"))),
    }
}

impl WriteState {
    /// `stream_to`: the key a file that starts empty streams to.
    fn new(
        ctx: Arc<UploadCtx>,
        spool_dir: &Path,
        ino: u64,
        meta: Meta,
        stream_to: Option<String>,
    ) -> StoreResult<Self> {
        let empty = stream_to.is_some();
        std::fs::create_dir_all(spool_dir)?;
        let path = spool_dir.join(format!(
            "{}-{}-{}",
            std::process::id(),
            ino,
            SPOOL_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Anonymous from here on: the data dies with the handle, never left behind.
        std::fs::remove_file(&path)?;
        Ok(WriteState {
            ino,
            file,
            inner: Mutex::new(Inner {
                size: 0,
                loaded: empty,
                dirty: empty,
                unlinked: false,
                handles: 0,
                meta,
                modified: SystemTime::now(),
            }),
            io: tokio::sync::Mutex::new(()),
            stream: tokio::sync::Mutex::new(stream_to.map(|rel| Stream::new(rel, meta, &ctx))),
            ctx,
        })
    }

    pub fn size(&self) -> u64 {
        self.inner.lock().unwrap().size
    }

    /// Attributes as the mount should show them while this state is live.
    pub fn overlay(&self, mut attr: Attr) -> Attr {
        let i = self.inner.lock().unwrap();
        attr.size = i.size;
        attr.mtime = i.meta.mtime.unwrap_or(i.modified);
        attr.mode = i.meta.mode;
        attr.meta_known = true;
        attr
    }

    /// Copies the object into the spool unless that was done (or not needed).
    pub(super) async fn ensure_loaded(
        self: &Arc<Self>,
        store: &Store,
        rel: &str,
        etag: &str,
        size: u64,
    ) -> StoreResult<()> {
        if self.inner.lock().unwrap().loaded {
            return Ok(());
        }
        let _io = self.io.lock().await;
        if self.inner.lock().unwrap().loaded {
            return Ok(());
        }
        let mut off = 0;
        while off < size {
            let len = LOAD_CHUNK.min(size - off);
            let data = store.get_range(rel, etag, off, len).await?;
            if data.len() as u64 != len {
                return Err(StoreError::Other("short read while loading".into()));
            }
            let me = self.clone();
            spool_io(move || me.file.write_all_at(&data, off)).await?;
            off += len;
        }
        let mut i = self.inner.lock().unwrap();
        i.loaded = true;
        i.size = size;
        Ok(())
    }

    pub async fn write(self: &Arc<Self>, offset: u64, data: Vec<u8>) -> StoreResult<u32> {
        let data = Bytes::from(data);
        let me = self.clone();
        let len = data.len();
        let spooled = data.clone();
        spool_io(move || me.file.write_all_at(&spooled, offset)).await?;
        {
            let mut i = self.inner.lock().unwrap();
            i.size = i.size.max(offset + len as u64);
            i.dirty = true;
            i.modified = SystemTime::now();
            // New contents: the upload's mtime is "now" again, not an earlier utimens.
            i.meta.mtime = None;
        }
        let mut stream = self.stream.lock().await;
        if let Some(s) = stream.as_mut() {
            if offset != s.end {
                tracing::debug!(
                    ino = self.ino,
                    "non-sequential write: uploading from the spool"
                );
                if let Some(s) = stream.take() {
                    s.abandon(&self.ctx);
                }
                return Ok(len as u32);
            }
            s.buf.extend_from_slice(&data);
            s.end += len as u64;
            let part = self.ctx.part_size as usize;
            while s.buf.len() >= part {
                if let Err(e) = s.send_part(&self.ctx, part).await {
                    // The spool has everything; the flush will upload it whole.
                    tracing::warn!(ino = self.ino, error = %e, "streaming upload failed");
                    if let Some(s) = stream.take() {
                        s.abandon(&self.ctx);
                    }
                    break;
                }
            }
        }
        Ok(len as u32)
    }

    /// Stops streaming (the flush will upload the spool).
    async fn stop_stream(&self) {
        if let Some(s) = self.stream.lock().await.take() {
            s.abandon(&self.ctx);
        }
    }

    pub async fn read(self: &Arc<Self>, offset: u64, size: u32) -> StoreResult<Bytes> {
        let end = self.size().min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Bytes::new());
        }
        let me = self.clone();
        spool_io(move || {
            let mut buf = vec![0u8; (end - offset) as usize];
            me.file.read_exact_at(&mut buf, offset)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    pub async fn truncate(self: &Arc<Self>, size: u64) -> StoreResult<()> {
        let keeps_stream = matches!(&*self.stream.lock().await, Some(s) if s.end == size);
        if !keeps_stream {
            self.stop_stream().await;
        }
        let me = self.clone();
        spool_io(move || me.file.set_len(size)).await?;
        let mut i = self.inner.lock().unwrap();
        i.size = size;
        i.dirty = true;
        i.modified = SystemTime::now();
        i.meta.mtime = None;
        Ok(())
    }

    fn set_meta(&self, mode: Option<u32>, mtime: Option<SystemTime>) {
        let mut i = self.inner.lock().unwrap();
        if mode.is_some() {
            i.meta.mode = mode;
        }
        if mtime.is_some() {
            i.meta.mtime = mtime;
        }
        i.dirty = true;
    }

    pub fn is_unlinked(&self) -> bool {
        self.inner.lock().unwrap().unlinked
    }

    fn mark_unlinked(&self) {
        self.inner.lock().unwrap().unlinked = true;
    }

    /// Uploads `size` bytes of the spool to `rel`; returns the new etag.
    async fn upload(self: &Arc<Self>, rel: &str, size: u64, meta: Meta) -> StoreResult<String> {
        let ctx = &self.ctx;
        let (store, part_size, parts_in_flight) = (&ctx.store, ctx.part_size, ctx.parts_in_flight);
        if size < part_size {
            let _permit = ctx.budget.acquire().await;
            let data = self.read_exact(0, size).await?;
            return store.put(rel, data, meta).await;
        }
        let id = store.create_multipart(rel, meta).await?;
        let parts = size.div_ceil(part_size);
        let result = async {
            // Owned per part: borrowed captures here trip the higher-ranked
            // `Send` check on the FUSE tasks that await this.
            let done = futures::stream::iter(0..parts)
                .map(|i| {
                    let (me, store, rel, id) =
                        (self.clone(), store.clone(), rel.to_owned(), id.clone());
                    async move {
                        let _permit = me.ctx.budget.acquire().await;
                        let off = i * part_size;
                        let data = me.read_exact(off, part_size.min(size - off)).await?;
                        store.upload_part(&rel, &id, i as i32 + 1, data).await
                    }
                })
                .buffer_unordered(parts_in_flight.max(1))
                .try_collect::<Vec<_>>()
                .await?;
            store.complete_multipart(rel, &id, done).await
        }
        .await;
        if result.is_err()
            && let Err(e) = store.abort_multipart(rel, &id).await
        {
            tracing::warn!(key = rel, error = %e, "could not abort a failed multipart upload");
        }
        result
    }

    async fn read_exact(self: &Arc<Self>, offset: u64, len: u64) -> StoreResult<Bytes> {
        let me = self.clone();
        spool_io(move || {
            let mut buf = vec![0u8; len as usize];
            me.file.read_exact_at(&mut buf, offset)?;
            Ok(Bytes::from(buf))
        })
        .await
    }
}

/// What `setattr` asks for, in fs terms.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
}

impl Fs {
    fn writable(&self) -> FsResult<()> {
        if self.opts.read_only {
            Err(FsError(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// A name that may be created under `parent`; returns the parent's `rel`.
    fn new_name(&self, parent: u64, name: &str) -> FsResult<String> {
        if name.len() > 255 {
            return Err(FsError(libc::ENAMETOOLONG));
        }
        if !valid_name(name) {
            return Err(FsError(libc::EINVAL));
        }
        Ok(self.dir_node(parent)?.rel)
    }

    /// The mode to store with a new file: only when it differs from the mount's default.
    fn stored_mode(&self, mode: u32) -> Option<u32> {
        let mode = mode & 0o7777;
        (mode != u32::from(self.opts.file_mode)).then_some(mode)
    }

    pub(super) fn write_state(&self, ino: u64) -> Option<Arc<WriteState>> {
        self.writes.lock().unwrap().get(&ino).cloned()
    }

    /// The live write state of `ino`, created if needed, with one more handle counted.
    /// `stream_to`: the key, when the file starts empty (created or `O_TRUNC`).
    fn attach_write(
        &self,
        ino: u64,
        meta: Meta,
        stream_to: Option<String>,
    ) -> FsResult<Arc<WriteState>> {
        let mut writes = self.writes.lock().unwrap();
        let ws = match writes.get(&ino) {
            Some(ws) => ws.clone(),
            None => {
                let ws = Arc::new(
                    WriteState::new(
                        self.upload.clone(),
                        &self.opts.spool_dir,
                        ino,
                        meta,
                        stream_to,
                    )
                    .map_err(FsError::from)?,
                );
                writes.insert(ino, ws.clone());
                ws
            }
        };
        ws.inner.lock().unwrap().handles += 1;
        Ok(ws)
    }

    /// Drops one handle; the last one uploads anything still dirty and frees the spool.
    async fn detach_write(&self, ws: &Arc<WriteState>) -> FsResult<()> {
        let last = {
            let mut i = ws.inner.lock().unwrap();
            i.handles = i.handles.saturating_sub(1);
            i.handles == 0
        };
        if !last {
            return Ok(());
        }
        let mut result = self.flush_state(ws).await;
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
                if !inner.dirty || inner.unlinked || !inner.loaded || result.is_err() {
                    if writes.get(&ws.ino).is_some_and(|w| Arc::ptr_eq(w, ws)) {
                        writes.remove(&ws.ino);
                    }
                    break;
                }
            }
            result = self.flush_state(ws).await;
        }
        if let Err(e) = result {
            tracing::error!(
                ino = ws.ino,
                errno = e.0,
                "last upload failed; data dropped"
            );
        }
        result
    }

    /// Uploads the spool if dirty; on success the inode shows what S3 now holds.
    async fn flush_state(&self, ws: &Arc<WriteState>) -> FsResult<()> {
        let _io = ws.io.lock().await;
        let (size, meta) = {
            let mut i = ws.inner.lock().unwrap();
            let skip = !i.dirty || i.unlinked || !i.loaded;
            if !skip {
                i.dirty = false;
            }
            (!skip).then_some((i.size, i.meta))
        }
        .unzip();
        let stream = ws.stream.lock().await.take();
        let (Some(size), Some(meta), Some(node)) = (size, meta, self.inodes.get(ws.ino)) else {
            if let Some(s) = stream {
                s.abandon(&ws.ctx);
            }
            return Ok(());
        };
        let mut streamed = None;
        if let Some(s) = stream {
            if s.upload_id.is_some() && s.end == size && s.rel == node.rel {
                let started_with = s.meta;
                match s.finish(&ws.ctx).await {
                    Ok(etag) if started_with == meta => streamed = Some(Ok(etag)),
                    // Metadata set after the upload started: apply it server-side.
                    Ok(_) => {
                        streamed = Some(self.store.copy(&node.rel, &node.rel, Some(meta)).await)
                    }
                    Err(e) => {
                        tracing::warn!(key = %node.rel, error = %e, "streamed upload failed; uploading from the spool");
                    }
                }
            } else {
                s.abandon(&ws.ctx);
            }
        }
        let result = match streamed {
            Some(r) => r,
            None => ws.upload(&node.rel, size, meta).await,
        };
        match result {
            Ok(etag) => {
                self.inodes.set_written(
                    ws.ino,
                    Found {
                        kind: Kind::File,
                        size,
                        etag,
                        last_modified: SystemTime::now(),
                        head_mtime: meta.mtime,
                        mode: meta.mode,
                        meta_known: true,
                    },
                );
                Ok(())
            }
            Err(e) => {
                ws.inner.lock().unwrap().dirty = true;
                tracing::warn!(key = %node.rel, error = %e, "upload failed");
                Err(FsError(e.errno()))
            }
        }
    }

    fn add_handle(&self, ino: u64, ws: Arc<WriteState>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().unwrap().insert(
            fh,
            Arc::new(OpenFile {
                ino,
                reader: None,
                write: Some(ws),
            }),
        );
        fh
    }

    /// Opens an existing file for writing; `trunc` starts from empty.
    pub(super) async fn open_write(&self, ino: u64, trunc: bool) -> FsResult<u64> {
        self.writable()?;
        let node = self.inodes.get(ino).ok_or(FsError(libc::ENOENT))?;
        if node.kind == Kind::Dir {
            return Err(FsError(libc::EISDIR));
        }
        let live = self.write_state(ino).is_some();
        let node = if node.fresh || live {
            node
        } else {
            self.refresh_file(&node).await?;
            self.inodes.get(ino).ok_or(FsError(libc::ENOENT))?
        };
        let meta = Meta {
            mtime: None,
            mode: node.attr.mode,
        };
        let ws = self.attach_write(ino, meta, trunc.then(|| node.rel.clone()))?;
        let prepared = if trunc {
            ws.truncate(0).await
        } else {
            ws.ensure_loaded(&self.store, &node.rel, &node.etag, node.attr.size)
                .await
        };
        if let Err(e) = prepared {
            let _ = self.detach_write(&ws).await;
            return Err(FsError::from(e));
        }
        Ok(self.add_handle(ino, ws))
    }

    /// Creates (or recreates) `parent/name` as an empty file open for writing. The object
    /// appears in S3 at the first flush.
    pub async fn create(&self, parent: u64, name: &str, mode: u32) -> FsResult<(Attr, u64)> {
        self.writable()?;
        let parent_rel = self.new_name(parent, name)?;
        self.store
            .check_object(&format!("{parent_rel}{name}"))
            .map_err(FsError::from)?;
        let mode = self.stored_mode(mode);
        let attr = self.inodes.upsert(
            parent,
            name,
            Found {
                kind: Kind::File,
                size: 0,
                etag: String::new(),
                last_modified: SystemTime::now(),
                head_mtime: None,
                mode,
                meta_known: true,
            },
            true,
        );
        self.inodes.invalidate_listing(parent);
        let meta = Meta { mtime: None, mode };
        let ws = self.attach_write(attr.ino, meta, Some(format!("{parent_rel}{name}")))?;
        ws.truncate(0).await.map_err(FsError::from)?;
        let fh = self.add_handle(attr.ino, ws.clone());
        Ok((ws.overlay(attr), fh))
    }

    /// `mknod` of a regular file: an empty object, uploaded before the reply.
    pub async fn mknod(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(FsError(libc::EPERM));
        }
        let (attr, fh) = self.create(parent, name, mode).await?;
        let flushed = self.flush(fh).await;
        let released = self.release(fh).await;
        flushed.and(released)?;
        self.getattr(attr.ino).await
    }

    pub async fn write(&self, fh: u64, offset: u64, data: Vec<u8>) -> FsResult<u32> {
        let ws = self
            .open_file(fh)?
            .write
            .clone()
            .ok_or(FsError(libc::EBADF))?;
        ws.write(offset, data).await.map_err(FsError::from)
    }

    /// flush and fsync: upload now if dirty, and report the outcome.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        match self.open_file(fh)?.write.clone() {
            Some(ws) => self.flush_state(&ws).await,
            None => Ok(()),
        }
    }

    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let file = self.files.lock().unwrap().remove(&fh);
        match file.and_then(|f| f.write.clone()) {
            Some(ws) => self.detach_write(&ws).await,
            None => Ok(()),
        }
    }

    pub async fn setattr(&self, ino: u64, fh: Option<u64>, req: SetAttr) -> FsResult<Attr> {
        if req.uid.is_some_and(|u| u != self.opts.uid)
            || req.gid.is_some_and(|g| g != self.opts.gid)
        {
            return Err(FsError(libc::EPERM));
        }
        let changes = req.size.is_some() || req.mode.is_some() || req.mtime.is_some();
        if changes {
            self.writable()?;
        }
        let node = self.inodes.get(ino).ok_or(FsError(libc::ENOENT))?;
        if node.kind == Kind::Dir {
            // S3 has no directory metadata; accept chmod/utime so `cp -a` and rsync work.
            if req.size.is_some() {
                return Err(FsError(libc::EISDIR));
            }
            return self.getattr(ino).await;
        }
        let mode = req.mode.map(|m| m & 0o7777);
        if let Some(size) = req.size {
            let handle_ws = fh.and_then(|fh| self.open_file(fh).ok()?.write.clone());
            let (ws, temporary) = match handle_ws {
                Some(ws) => (ws, false),
                None => {
                    // truncate(2) without an open file: a short-lived handle of our own.
                    let fh = self.open_write(ino, size == 0).await?;
                    let file = self.files.lock().unwrap().remove(&fh);
                    let ws = file.and_then(|f| f.write.clone());
                    (ws.ok_or(FsError(libc::EIO))?, true)
                }
            };
            let result = async {
                ws.truncate(size).await.map_err(FsError::from)?;
                ws.set_meta(mode, req.mtime);
                if temporary {
                    self.flush_state(&ws).await?;
                }
                Ok(())
            }
            .await;
            if temporary {
                let released = self.detach_write(&ws).await;
                result.and(released)?;
            } else {
                result?;
            }
            return self.getattr(ino).await;
        }
        if mode.is_none() && req.mtime.is_none() {
            return self.getattr(ino).await;
        }
        let open_for_writing = {
            // Marked under the writes lock so a release in flight cannot miss it.
            let writes = self.writes.lock().unwrap();
            writes
                .get(&ino)
                .cloned()
                .inspect(|ws| ws.set_meta(mode, req.mtime))
        };
        if let Some(ws) = open_for_writing {
            // Open for writing: the metadata goes up with the contents at the next flush.
            return Ok(ws.overlay(node.attr));
        }
        // Metadata only: copy the object onto itself with the new metadata.
        let info = self
            .store
            .head(&node.rel)
            .await?
            .ok_or(FsError(libc::ENOENT))?;
        let meta = Meta {
            mtime: req.mtime.or(info.mtime),
            mode: mode.or(info.mode),
        };
        let etag = self.store.copy(&node.rel, &node.rel, Some(meta)).await?;
        self.inodes
            .set_written(
                ino,
                Found {
                    kind: Kind::File,
                    size: info.size,
                    etag,
                    last_modified: SystemTime::now(),
                    head_mtime: meta.mtime,
                    mode: meta.mode,
                    meta_known: true,
                },
            )
            .ok_or(FsError(libc::ENOENT))
    }

    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.writable()?;
        let parent_rel = self.new_name(parent, name)?;
        match self.lookup_attr(parent, name, false).await {
            Ok(_) => return Err(FsError(libc::EEXIST)),
            Err(FsError(libc::ENOENT)) => {}
            Err(e) => return Err(e),
        }
        self.store
            .put_dir_marker(&format!("{parent_rel}{name}/"))
            .await?;
        let attr = self.inodes.upsert(parent, name, Found::dir(), true);
        self.inodes.invalidate_listing(parent);
        Ok(attr)
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let attr = self.lookup_attr(parent, name, false).await?;
        if attr.kind == Kind::Dir {
            return Err(FsError(libc::EISDIR));
        }
        let node = self.inodes.get(attr.ino).ok_or(FsError(libc::ENOENT))?;
        if let Some(ws) = self.write_state(attr.ino) {
            // Open handles keep their data, but nothing of it reaches S3 any more.
            ws.mark_unlinked();
        }
        self.store.delete(&node.rel).await?;
        self.inodes.remove(parent, name);
        Ok(())
    }

    /// Whether anything at all (markers and hidden keys included) lies below `dir_rel`.
    async fn has_children(&self, dir_rel: &str) -> FsResult<bool> {
        let page = self.store.list_page_max(dir_rel, None, 2).await?;
        Ok(!page.dirs.is_empty() || page.files.iter().any(|f| !f.name.is_empty()))
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let attr = self.lookup_attr(parent, name, false).await?;
        if attr.kind != Kind::Dir {
            return Err(FsError(libc::ENOTDIR));
        }
        let node = self.inodes.get(attr.ino).ok_or(FsError(libc::ENOENT))?;
        if self.has_children(&node.rel).await? {
            return Err(FsError(libc::ENOTEMPTY));
        }
        self.store.delete(&node.rel).await?;
        self.inodes.remove(parent, name);
        Ok(())
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        noreplace: bool,
    ) -> FsResult<()> {
        self.writable()?;
        let new_parent_rel = self.new_name(new_parent, new_name)?;
        let src = self.lookup_attr(parent, name, false).await?;
        let dst = match self.lookup_attr(new_parent, new_name, false).await {
            Ok(a) => Some(a),
            Err(FsError(libc::ENOENT)) => None,
            Err(e) => return Err(e),
        };
        if let Some(d) = &dst {
            if d.ino == src.ino {
                return Ok(());
            }
            if noreplace {
                return Err(FsError(libc::EEXIST));
            }
        }
        let src_node = self.inodes.get(src.ino).ok_or(FsError(libc::ENOENT))?;
        match src.kind {
            Kind::File => {
                if dst.as_ref().is_some_and(|d| d.kind == Kind::Dir) {
                    return Err(FsError(libc::EISDIR));
                }
                let dst_rel = format!("{new_parent_rel}{new_name}");
                self.store.check_object(&dst_rel).map_err(FsError::from)?;
                if let Some(ws) = self.write_state(src.ino) {
                    // The copy must carry what was written so far.
                    self.flush_state(&ws).await?;
                }
                self.store.copy(&src_node.rel, &dst_rel, None).await?;
                self.store.delete(&src_node.rel).await?;
            }
            Kind::Dir => {
                let dst_rel = format!("{new_parent_rel}{new_name}/");
                if let Some(d) = &dst {
                    if d.kind != Kind::Dir {
                        return Err(FsError(libc::ENOTDIR));
                    }
                    if self.has_children(&dst_rel).await? {
                        return Err(FsError(libc::ENOTEMPTY));
                    }
                }
                self.rename_dir(&src_node.rel, &dst_rel).await?;
            }
        }
        if let Some(d) = &dst
            && let Some(ws) = self.write_state(d.ino)
        {
            // The replaced file's open handles no longer name anything.
            ws.mark_unlinked();
        }
        self.inodes.rename(parent, name, new_parent, new_name);
        Ok(())
    }

    /// Copies every key below `src` to `dst`, then deletes the originals; bounded
    /// concurrency, progress in the log. A failure leaves the source complete.
    async fn rename_dir(&self, src: &str, dst: &str) -> FsResult<()> {
        let (keys, unusable): (Vec<_>, Vec<_>) = self
            .store
            .list_recursive(src)
            .await?
            .into_iter()
            .partition(|k| {
                let name = k.name.strip_suffix('/').unwrap_or(&k.name);
                name.is_empty() || self.store.check_object(name).is_ok()
            });
        if !unusable.is_empty() {
            // Keys like `a//b` cannot be named through the store; they stay where they are.
            tracing::warn!(
                from = src,
                keys = unusable.len(),
                "hidden keys left in place"
            );
        }
        for k in &keys {
            // Refuse before copying anything if some key would become too long.
            let target = format!("{dst}{}", k.name);
            self.store
                .check_object(target.trim_end_matches('/'))
                .map_err(FsError::from)?;
        }
        tracing::info!(
            from = src,
            to = dst,
            keys = keys.len(),
            "renaming directory"
        );
        let total = keys.len();
        let copied = Arc::new(AtomicU64::new(0));
        let pairs: Vec<(String, String)> = keys
            .iter()
            .map(|k| (format!("{src}{}", k.name), format!("{dst}{}", k.name)))
            .collect();
        futures::stream::iter(pairs.clone())
            .map(|(from, to)| {
                let (store, copied) = (self.store.clone(), copied.clone());
                let src = src.to_owned();
                async move {
                    let r = store.copy(&from, &to, None).await;
                    let n = copied.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % 100 == 0 {
                        tracing::info!(from = src, copied = n, total, "renaming directory");
                    }
                    r
                }
            })
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        if keys.is_empty() {
            // An empty directory known only to this mount: give it a marker at the target.
            self.store.put_dir_marker(dst).await?;
        }
        futures::stream::iter(pairs)
            .map(|(from, _)| {
                let store = self.store.clone();
                async move { store.delete(&from).await }
            })
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        tracing::info!(from = src, to = dst, keys = total, "directory renamed");
        Ok(())
    }
}

/// A multipart upload under the prefix older than this at mount time is stray (left by a
/// crashed or killed mount) and is aborted. Aborting a live upload of another mount of the
/// same prefix costs that mount only a retry: its completion fails and it uploads from its
/// spool instead.
const STRAY_UPLOAD_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// A spool file name `PID-INO-SEQ` whose process is gone (a crash between creating and
/// unlinking it).
fn stale_spool_name(name: &str) -> bool {
    let mut parts = name.split('-');
    let pid = parts.next().and_then(|p| p.parse::<libc::pid_t>().ok());
    let rest_ok = parts.clone().count() == 2 && parts.all(|p| p.parse::<u64>().is_ok());
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return false;
    };
    if !rest_ok || pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

impl Fs {
    /// Files open for writing with changes not yet in S3: (key relative to the prefix,
    /// current size). For shutdown logs.
    pub fn pending_writes(&self) -> Vec<(String, u64)> {
        let live: Vec<Arc<WriteState>> = self.writes.lock().unwrap().values().cloned().collect();
        let mut out: Vec<(String, u64)> = live
            .iter()
            .filter_map(|ws| {
                let i = ws.inner.lock().unwrap();
                if !i.dirty || i.unlinked || !i.loaded {
                    return None;
                }
                let rel = self.inodes.get(ws.ino)?.rel;
                Some((rel, i.size))
            })
            .collect();
        out.sort();
        out
    }

    /// Uploads every file whose changes are not in S3 yet, as it stands now (what `fsync`
    /// would do), and waits for the uploads. Used at shutdown for files still open when the
    /// grace period ends; returns the first error after trying them all.
    pub async fn flush_all(&self) -> FsResult<()> {
        let live: Vec<Arc<WriteState>> = self.writes.lock().unwrap().values().cloned().collect();
        let mut result = Ok(());
        for ws in live {
            let pending = {
                let i = ws.inner.lock().unwrap();
                (i.dirty && !i.unlinked && i.loaded).then_some(i.size)
            };
            let (Some(size), Some(node)) = (pending, self.inodes.get(ws.ino)) else {
                continue;
            };
            tracing::info!(key = %node.rel, size, "uploading a file still open for writing");
            match self.flush_state(&ws).await {
                Ok(()) => tracing::info!(key = %node.rel, size, "uploaded"),
                Err(e) => {
                    tracing::error!(key = %node.rel, size, errno = e.0, "upload at shutdown failed");
                    result = result.and(Err(e));
                }
            }
        }
        result
    }

    /// Cleans up after a previous mount that crashed or was killed: aborts multipart
    /// uploads under the prefix older than [`STRAY_UPLOAD_AGE`] and removes spool files
    /// of dead processes. Spool files are unlinked right after creation, so a leftover one
    /// can only come from a crash in between: it is empty, there is nothing to upload.
    /// Failures are logged, never fatal: a mount without cleanup still works.
    pub async fn recover(&self) {
        if let Ok(dir) = std::fs::read_dir(&self.opts.spool_dir) {
            for e in dir.flatten() {
                let name = e.file_name();
                if name.to_str().is_some_and(stale_spool_name) {
                    match std::fs::remove_file(e.path()) {
                        Ok(()) => {
                            tracing::info!(file = %e.path().display(), "removed a stale spool file")
                        }
                        Err(err) => {
                            tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a stale spool file")
                        }
                    }
                }
            }
        }
        if self.opts.read_only {
            return;
        }
        let uploads = match self.store.list_uploads("").await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list multipart uploads; stray ones stay");
                return;
            }
        };
        let now = SystemTime::now();
        for u in uploads {
            let age = u.initiated.and_then(|t| now.duration_since(t).ok());
            if age.is_none_or(|a| a < STRAY_UPLOAD_AGE) {
                continue;
            }
            match self.store.abort_multipart(&u.rel, &u.upload_id).await {
                Ok(()) => {
                    tracing::info!(key = %u.rel, age_secs = age.map(|a| a.as_secs()), "aborted a stray multipart upload")
                }
                Err(e) => {
                    tracing::warn!(key = %u.rel, error = %e, "cannot abort a stray multipart upload")
                }
            }
        }
    }
}
