//! The mount's operations on files open for writing: open, create, write, flush, release,
//! and the conditional upload each flush makes (the write state itself is in `write.rs`).

use super::*;

/// How often an upload that raced another conditional write (409) starts over before the
/// conflict rule applies.
const MAX_RACES: u32 = 3;

impl Fs {
    pub(in crate::fs) fn write_state(&self, ino: u64) -> Option<Arc<WriteState>> {
        self.writes.lock().unwrap().get(&ino).cloned()
    }

    /// Every live write state (for listings, shutdown and status).
    pub(in crate::fs) fn write_states(&self) -> Vec<Arc<WriteState>> {
        self.writes.lock().unwrap().values().cloned().collect()
    }

    /// The live write state of `ino`, created if needed, with one more handle counted.
    /// `stream_to`: the key, when the file starts empty (created or `O_TRUNC`).
    /// `base`: the metadata, and the etag of the object the contents start from.
    pub(super) fn attach_write(
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
    pub(in crate::fs) async fn detach_write(&self, ws: &Arc<WriteState>) -> FsResult<()> {
        self.detach_write_keeping(ws, true).await
    }

    /// [`Fs::detach_write`]; `keep`: a failed last upload is kept (see `pending.rs`). A
    /// truncate(2)'s own short-lived handle passes false unless the file is kept already:
    /// a truncate that fails changes nothing.
    pub(in crate::fs) async fn detach_write_keeping(
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
    pub(in crate::fs) fn cache_written(&self, ws: &WriteState) {
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
    pub(in crate::fs) async fn release_kept_handle(&self, ws: &Arc<WriteState>) {
        if ws.drop_handle() {
            self.keep_pending(ws, &FsError::new(libc::EIO)).await;
        }
    }

    /// Uploads the spool if dirty; on success the inode shows what S3 now holds.
    pub(in crate::fs) async fn flush_state(&self, ws: &Arc<WriteState>) -> FsResult<()> {
        self.flush_state_checked(ws).await.map(drop)
    }

    /// [`Fs::flush_state`]. Every upload is conditional on the version the writer started
    /// from (`If-Match` on its etag; `If-None-Match: *` for a new name). When another writer
    /// got there first, the data goes beside the object as a conflict copy, the file follows
    /// it there (`pending.rs`: [`Fs::keep_beside`]), and its name is returned.
    pub(in crate::fs) async fn flush_state_checked(
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
    pub(in crate::fs) async fn open_write(&self, ino: u64, trunc: bool) -> FsResult<u64> {
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
    pub(super) fn admitted_writer(&self, fh: u64, end: u64) -> FsResult<Arc<WriteState>> {
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
