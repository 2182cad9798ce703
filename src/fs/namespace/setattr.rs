//! `setattr`: truncation through the file's write state, and changes of mode, owner and
//! times, each a conditional rewrite of the object's metadata (a copy onto itself) on the
//! version this mount knows; offline, journaled.

use super::*;

/// What `setattr` asks for, in fs terms.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    /// Permission bits (type bits, if any, are ignored).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

impl SetAttr {
    pub(super) fn changes_meta(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }

    /// Applies the metadata part to `meta` of a `kind`; ctime moves.
    pub(super) fn apply(&self, meta: &mut Meta, kind: Kind) {
        if let Some(m) = self.mode {
            meta.mode = Some(kind.type_bits() | (m & 0o7777));
        }
        meta.uid = self.uid.or(meta.uid);
        meta.gid = self.gid.or(meta.gid);
        meta.atime = self.atime.or(meta.atime);
        meta.mtime = self.mtime.or(meta.mtime);
        meta.ctime = Some(SystemTime::now());
    }
}

impl Fs {
    pub async fn setattr(&self, ino: u64, fh: Option<u64>, req: SetAttr) -> FsResult<Attr> {
        if req.size.is_some() || req.changes_meta() {
            self.writable()?;
        }
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        if let Some(size) = req.size {
            match node.kind {
                Kind::Dir => return Err(FsError::new(libc::EISDIR)),
                Kind::File => self.truncate(ino, fh, size, req).await?,
                _ => return Err(FsError::new(libc::EINVAL)),
            }
            return self.getattr(ino).await;
        }
        if !req.changes_meta() {
            return self.getattr(ino).await;
        }
        self.change_meta(ino, |meta, kind| {
            req.apply(meta, kind);
            Ok(())
        })
        .await
    }

    /// truncate(2) and ftruncate(2), with whatever else the same setattr changes.
    pub(super) async fn truncate(
        &self,
        ino: u64,
        fh: Option<u64>,
        size: u64,
        req: SetAttr,
    ) -> FsResult<()> {
        let handle_ws = fh
            .and_then(|fh| self.handle(fh).ok())
            .and_then(|h| h.write_state().cloned());
        let (ws, temporary) = match handle_ws {
            Some(ws) => (ws, false),
            None => {
                // truncate(2) without a handle: a short-lived one of our own.
                let fh = self.open_write(ino, size == 0).await?;
                let handle = self.handles.lock().unwrap().remove(&fh);
                let ws = handle.as_deref().and_then(Handle::write_state).cloned();
                (ws.ok_or(FsError::new(libc::EIO))?, true)
            }
        };
        let result = async {
            self.admit(&ws, size)?;
            ws.truncate(size).await?;
            if req.changes_meta() {
                ws.update_meta(|m| req.apply(m, Kind::File));
            }
            Ok(())
        }
        .await;
        // Releasing our short-lived handle uploads the file if no one else has it open for
        // writing; if someone does, their close uploads it (as for their own ftruncate).
        if temporary {
            if ws.kept().is_some() {
                // A kept file (its upload failed before) is changed locally and kept again;
                // the retrier uploads it with the rest.
                self.release_kept_handle(&ws).await;
                return result;
            }
            let released = self.detach_write_keeping(&ws, false).await;
            result.and(released)
        } else {
            result
        }
    }

    /// Changes the stored metadata of `ino` with `f` (which may refuse, e.g. an xattr that
    /// exists): on a file open for writing it goes up with the next flush; on a directory
    /// the marker is rewritten (and made, if the directory had none); on any other object
    /// it is copied onto itself with the new metadata. Returns the new attributes.
    pub(in crate::fs) async fn change_meta(
        &self,
        ino: u64,
        f: impl Fn(&mut Meta, Kind) -> FsResult<()>,
    ) -> FsResult<Attr> {
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        // An upload in flight (any close of a descriptor flushes: a dup's, a child's at
        // exec) is waited for, and no other starts until the change is stored.
        let mut idle_ws = self.write_state(ino);
        let _idle = loop {
            let guard = match &idle_ws {
                Some(ws) => Some(ws.idle().await),
                None => None,
            };
            let now = self.write_state(ino);
            match (&idle_ws, &now) {
                (Some(a), Some(b)) if std::sync::Arc::ptr_eq(a, b) => break guard,
                (None, None) => break guard,
                _ => {}
            }
            drop(guard);
            idle_ws = now;
        };
        let open_for_writing = {
            // Changed under the writes lock so a release in flight cannot miss it.
            let writes = self.writes.lock().unwrap();
            match writes.get(&ino).cloned() {
                Some(ws) => {
                    // Nothing of it waits for an upload (it was flushed, and its release may
                    // be in flight): the change is stored now, server-side, as for a closed
                    // file, so that it is in S3 when the call returns.
                    let clean = ws.pending_size().is_none() && ws.kept().is_none();
                    let mut meta = ws.meta();
                    f(&mut meta, Kind::File)?;
                    check_meta_size(&meta)?;
                    if !clean {
                        ws.update_meta(|m| *m = meta);
                        Err(ws)
                    } else {
                        Ok(Some((ws, meta)))
                    }
                }
                None => Ok(None),
            }
        };
        let open_for_writing = match open_for_writing {
            Ok(o) => o,
            Err(ws) => {
                // A kept file nobody has open: the change is kept with its data, so that
                // it survives this mount too.
                if ws.kept().is_some() && !ws.has_handles() {
                    self.keep_pending(&ws, &FsError::new(libc::EIO)).await;
                }
                return Ok(self.inodes.attr(ino, &ws.overlay(node.found)));
            }
        };
        if let Some((ws, meta)) = open_for_writing {
            // S3 first: a failed copy changes nothing.
            match self.copy_with_meta(&node, &f).await {
                // Offline: it goes up with the file's next upload (kept if S3 still does
                // not answer then).
                Err(e) if self.keeps_offline(&e) => {
                    ws.update_meta(|m| *m = meta);
                    return Ok(self.inodes.attr(ino, &ws.overlay(node.found)));
                }
                other => {
                    other?;
                }
            }
            ws.meta_stored(meta);
            if let Some(n) = self.inodes.get(ino) {
                ws.set_base_etag(n.etag);
            }
            return Ok(self.inodes.attr(ino, &ws.overlay(node.found)));
        }
        let changed = if node.kind == Kind::Dir {
            self.change_dir_meta(&node, &f).await
        } else {
            self.copy_with_meta(&node, &f).await
        };
        match changed {
            Err(e) if self.keeps_offline(&e) => self.change_meta_offline(&node, &f, e),
            other => other,
        }
    }

    /// A metadata change S3 did not answer for: kept in the journal (on the version seen)
    /// and shown at once.
    pub(super) fn change_meta_offline(
        &self,
        node: &crate::fs::inodes::NodeInfo,
        f: &impl Fn(&mut Meta, Kind) -> FsResult<()>,
        cause: FsError,
    ) -> FsResult<Attr> {
        let before = node.found.meta.clone();
        let mut after = before.clone();
        f(&mut after, node.kind)?;
        if node.kind == Kind::Dir {
            after.mode = after
                .mode
                .or(Some(libc::S_IFDIR | u32::from(self.opts.dir_mode)));
        }
        check_meta_size(&after)?;
        self.journal_change(
            crate::local::journal::Change::SetMeta {
                rel: node.rel.clone(),
                etag: node.found.etag.clone(),
                before: before.to_user(),
                after: after.to_user(),
            },
            cause,
        )?;
        let found = Found {
            meta: after,
            meta_known: true,
            ..node.found.clone()
        };
        self.inodes
            .set_written(node.ino, found)
            .ok_or(FsError::new(libc::ENOENT))
    }

    /// Rewrites an object's metadata with `f` by copying it onto itself, conditional on the
    /// version it read: if another client replaces the object meanwhile, the change is
    /// made again to the new version's metadata (its data and metadata are never undone).
    pub(super) async fn copy_with_meta(
        &self,
        node: &crate::fs::inodes::NodeInfo,
        f: &impl Fn(&mut Meta, Kind) -> FsResult<()>,
    ) -> FsResult<Attr> {
        let ino = node.ino;
        let mut tries = 1;
        loop {
            // Read what S3 holds now: the copy replaces all of it.
            let info = self
                .store
                .head(&node.rel)
                .await?
                .ok_or(FsError::new(libc::ENOENT))?;
            let found = Found::object(&info);
            let mut meta = found.meta.clone();
            f(&mut meta, found.kind)?;
            check_meta_size(&meta)?;
            let copied = self
                .store
                .copy_if(
                    &node.rel,
                    Some(&info.etag),
                    &node.rel,
                    Some(&meta.to_user()),
                    &Expect::Version(info.etag.clone()),
                )
                .await;
            match copied {
                Ok(etag) => {
                    let written = Found::written(found.kind, info.size, etag, meta);
                    let attr = self
                        .inodes
                        .set_written(ino, written)
                        .ok_or(FsError::new(libc::ENOENT))?;
                    self.readers_follow(ino);
                    return Ok(attr);
                }
                Err(StoreError::Changed | StoreError::NotFound | StoreError::Raced)
                    if tries < REWRITE_TRIES =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) async fn change_dir_meta(
        &self,
        node: &crate::fs::inodes::NodeInfo,
        f: &impl Fn(&mut Meta, Kind) -> FsResult<()>,
    ) -> FsResult<Attr> {
        // Serialized with the write-behind of directory times: the last write wins, never
        // an older time written late.
        let _gate = self.dir_times.gate.lock().await;
        let node = self
            .inodes
            .get(node.ino)
            .ok_or(FsError::new(libc::ENOENT))?;
        // What the marker holds, with any directory times still to be written.
        let known = node
            .found
            .meta_known
            .then(|| (node.found.meta.clone(), node.found.etag.clone()));
        let dir_mode = libc::S_IFDIR | u32::from(self.opts.dir_mode);
        let (etag, meta) =
            crate::fs::dirtimes::rewrite_marker(&*self.store, &node.rel, known, dir_mode, |m| {
                f(m, Kind::Dir)?;
                m.mode = m.mode.or(Some(dir_mode));
                check_meta_size(m)
            })
            .await?;
        self.dir_times.written(node.ino);
        let found = Found {
            meta,
            etag,
            meta_known: true,
            ..node.found
        };
        self.inodes
            .set_written(node.ino, found)
            .ok_or(FsError::new(libc::ENOENT))
    }
}
