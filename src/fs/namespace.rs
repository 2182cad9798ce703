//! Changes to the tree: setattr, mkdir, mknod, unlink, rmdir, rename.
//!
//! Each one updates the inode table and drops the affected listings, so the mount sees its
//! own changes at once, whatever the metadata TTL. An operation that takes several S3
//! requests either completes or leaves the tree as it was: a rename whose copy fails
//! removes what it copied; a rename whose delete fails tries the delete again before it
//! gives up (then the source is still there beside the complete target).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use super::Fs;
use super::error::{FsError, FsResult};
use super::handle::Handle;
use super::inodes::{Attr, Found, Kind, valid_name};
use super::meta::MAX_USER_META_BYTES;
use super::meta::Meta;
use crate::store::{ObjectStore, StoreResult, UserMeta};

/// Refuses metadata S3 would refuse (over 2 KiB): the change fails, nothing is dropped.
fn check_meta_size(meta: &Meta) -> FsResult<()> {
    if meta.stored_size() > MAX_USER_META_BYTES {
        Err(FsError::new(libc::ENOSPC))
    } else {
        Ok(())
    }
}

/// Keys copied or deleted at once by a directory rename.
const RENAME_CONCURRENCY: usize = 8;

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
    fn changes_meta(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }

    /// Applies the metadata part to `meta` of a `kind`; ctime moves.
    fn apply(&self, meta: &mut Meta, kind: Kind) {
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

/// Who asks for a new entry: its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Deletes `rel`, once more if the first attempt fails: a rename's copy is already done,
/// and a transient failure should not leave two names.
async fn delete_with_retry(store: &dyn ObjectStore, rel: &str) -> StoreResult<()> {
    match store.delete(rel).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::debug!(key = rel, error = %e, "delete failed; trying again");
            store.delete(rel).await
        }
    }
}

impl Fs {
    pub(super) fn writable(&self) -> FsResult<()> {
        if self.opts.read_only {
            Err(FsError::new(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// A name that may be created under `parent`; returns the parent's `rel`.
    pub(super) fn new_name(&self, parent: u64, name: &str) -> FsResult<String> {
        if name.len() > 255 {
            return Err(FsError::new(libc::ENAMETOOLONG));
        }
        if !valid_name(name) {
            return Err(FsError::new(libc::EINVAL));
        }
        Ok(self.dir_node(parent)?.rel)
    }

    /// A name that may be created under `parent` and is not taken (`EEXIST`); returns the
    /// parent's `rel`.
    async fn free_name(&self, parent: u64, name: &str) -> FsResult<String> {
        self.writable()?;
        let parent_rel = self.new_name(parent, name)?;
        match self.lookup_attr(parent, name, false).await {
            Ok(_) => Err(FsError::new(libc::EEXIST)),
            Err(e) if e.errno == libc::ENOENT => Ok(parent_rel),
            Err(e) => Err(e),
        }
    }

    /// The metadata of a new entry under `parent`: `mode` (type bits included), owned by
    /// `caller`, except that a setgid directory passes its group on (and, to directories,
    /// its setgid bit), as on a local disk.
    pub(super) fn new_meta(&self, parent: u64, mode: u32, caller: Caller) -> Meta {
        let mut meta = Meta {
            mode: Some(mode),
            uid: Some(caller.uid),
            gid: Some(caller.gid),
            ..Meta::default()
        };
        if mode & libc::S_IFMT != libc::S_IFREG {
            // Written once, now (a regular file's times are those of its upload).
            let now = SystemTime::now();
            (meta.mtime, meta.ctime) = (Some(now), Some(now));
        }
        if let Some(p) = self.inodes.get(parent)
            && p.attr.perm & libc::S_ISGID as u16 != 0
        {
            meta.gid = Some(p.attr.gid);
            if mode & libc::S_IFMT == libc::S_IFDIR {
                meta.mode = Some(mode | libc::S_ISGID);
            }
        }
        meta
    }

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
    async fn truncate(&self, ino: u64, fh: Option<u64>, size: u64, req: SetAttr) -> FsResult<()> {
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
    pub(super) async fn change_meta(
        &self,
        ino: u64,
        f: impl Fn(&mut Meta, Kind) -> FsResult<()>,
    ) -> FsResult<Attr> {
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
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
                        return Ok(self.inodes.attr(ino, &ws.overlay(node.found)));
                    }
                    Some((ws, meta))
                }
                None => None,
            }
        };
        if let Some((ws, meta)) = open_for_writing {
            // S3 first: a failed copy changes nothing.
            self.copy_with_meta(&node, &f).await?;
            ws.meta_stored(meta);
            if let Some(n) = self.inodes.get(ino) {
                ws.set_base_etag(n.etag);
            }
            return Ok(self.inodes.attr(ino, &ws.overlay(node.found)));
        }
        if node.kind == Kind::Dir {
            return self.change_dir_meta(&node, f).await;
        }
        self.copy_with_meta(&node, &f).await
    }

    /// Rewrites an object's metadata with `f` by copying it onto itself.
    async fn copy_with_meta(
        &self,
        node: &super::inodes::NodeInfo,
        f: &impl Fn(&mut Meta, Kind) -> FsResult<()>,
    ) -> FsResult<Attr> {
        let ino = node.ino;
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
        let etag = self
            .store
            .copy(&node.rel, &node.rel, Some(&meta.to_user()))
            .await?;
        let written = Found::written(found.kind, info.size, etag, meta);
        self.inodes
            .set_written(ino, written)
            .ok_or(FsError::new(libc::ENOENT))
    }

    async fn change_dir_meta(
        &self,
        node: &super::inodes::NodeInfo,
        f: impl Fn(&mut Meta, Kind) -> FsResult<()>,
    ) -> FsResult<Attr> {
        // Serialized with the write-behind of directory times: the last write wins, never
        // an older time written late.
        let _gate = self.dir_times.gate.lock().await;
        let node = self
            .inodes
            .get(node.ino)
            .ok_or(FsError::new(libc::ENOENT))?;
        let mut found = if node.found.meta_known {
            // What the marker holds, with any directory times still to be written.
            node.found.clone()
        } else {
            self.read_marker(&node.rel).await?
        };
        f(&mut found.meta, Kind::Dir)?;
        if found.meta.mode.is_none() {
            found.meta.mode = Some(libc::S_IFDIR | u32::from(self.opts.dir_mode));
        }
        check_meta_size(&found.meta)?;
        self.store
            .put(&node.rel, bytes::Bytes::new(), &found.meta.to_user())
            .await?;
        self.dir_times.written(node.ino);
        self.inodes
            .set_written(node.ino, found)
            .ok_or(FsError::new(libc::ENOENT))
    }

    pub async fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let parent_rel = self.free_name(parent, name).await?;
        let marker = format!("{parent_rel}{name}/");
        let meta = self.new_meta(parent, libc::S_IFDIR | (mode & 0o7777), caller);
        self.store
            .put(&marker, bytes::Bytes::new(), &meta.to_user())
            .await?;
        let found = Found {
            meta,
            meta_known: true,
            last_modified: SystemTime::now(),
            ..Found::dir()
        };
        let attr = self.inodes.upsert(parent, name, found, true);
        // Known empty: lookups of names in it (a `cp -r` into it) need no request.
        self.inodes.set_listing(attr.ino, Vec::new());
        self.inodes.invalidate_listing(parent);
        self.touch_dirs(&[parent]);
        Ok(attr)
    }

    /// `mknod`: a regular file is an empty object uploaded before the reply; fifos, sockets
    /// and devices are zero-byte objects whose metadata says what they are.
    pub async fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => {
                let (attr, fh) = self.create(parent, name, mode, caller).await?;
                let flushed = self.flush(fh).await;
                let released = self.release(fh).await;
                flushed.and(released)?;
                return self.getattr(attr.ino).await;
            }
            t => Kind::of_object(t),
        };
        if kind == Kind::File || kind == Kind::Symlink {
            return Err(FsError::new(libc::EPERM));
        }
        let mut meta = self.new_meta(parent, kind.type_bits() | (mode & 0o7777), caller);
        if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
            meta.rdev = Some(rdev);
        }
        self.put_object(parent, name, kind, bytes::Bytes::new(), meta)
            .await
    }

    /// `symlink`: an object whose body is the target, byte for byte, as s3fs stores them.
    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Attr> {
        if target.is_empty() || target.len() > libc::PATH_MAX as usize {
            return Err(FsError::new(libc::ENAMETOOLONG));
        }
        let meta = self.new_meta(parent, libc::S_IFLNK | 0o777, caller);
        let body = bytes::Bytes::copy_from_slice(target);
        self.put_object(parent, name, Kind::Symlink, body, meta)
            .await
    }

    /// Creates `parent/name` as one PUT of `body` (never over an existing name).
    async fn put_object(
        &self,
        parent: u64,
        name: &str,
        kind: Kind,
        body: bytes::Bytes,
        meta: Meta,
    ) -> FsResult<Attr> {
        let parent_rel = self.free_name(parent, name).await?;
        let rel = format!("{parent_rel}{name}");
        self.store.check_object(&rel)?;
        let size = body.len() as u64;
        let etag = self.store.put(&rel, body, &meta.to_user()).await?;
        let attr = self
            .inodes
            .upsert(parent, name, Found::written(kind, size, etag, meta), true);
        self.inodes.invalidate_listing(parent);
        self.touch_dirs(&[parent]);
        Ok(attr)
    }

    /// The target of a symlink (read once per version, then from the inode table).
    pub async fn readlink(&self, ino: u64) -> FsResult<bytes::Bytes> {
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        if node.kind != Kind::Symlink {
            return Err(FsError::new(libc::EINVAL));
        }
        if let Some(target) = self.inodes.link_target(ino, &node.found.etag) {
            return Ok(target);
        }
        let target = self
            .store
            .get_range(&node.rel, &node.found.etag, 0, node.found.size)
            .await?;
        self.inodes
            .set_link_target(ino, &node.found.etag, target.clone());
        Ok(target)
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let attr = self.lookup_attr(parent, name, false).await?;
        if attr.kind == Kind::Dir {
            return Err(FsError::new(libc::EISDIR));
        }
        let node = self
            .inodes
            .get(attr.ino)
            .ok_or(FsError::new(libc::ENOENT))?;
        self.store.delete(&node.rel).await?;
        if let Some(ws) = self.write_state(attr.ino) {
            // Open handles keep their data, but nothing of it reaches S3 any more.
            if let Some(record) = ws.mark_unlinked() {
                self.forget_kept(&record);
                // A kept upload nobody has open: nothing is left of it.
                self.release_idle(&ws);
            }
        }
        self.inodes.remove(parent, name);
        self.touch_dirs(&[parent]);
        Ok(())
    }

    /// Whether anything at all (markers and hidden keys included) lies below `dir_rel`.
    async fn has_children(&self, dir_rel: &str) -> FsResult<bool> {
        let page = self.store.list_page(dir_rel, None, 2).await?;
        Ok(!page.dirs.is_empty() || page.files.iter().any(|f| !f.name.is_empty()))
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let attr = self.lookup_attr(parent, name, false).await?;
        if attr.kind != Kind::Dir {
            return Err(FsError::new(libc::ENOTDIR));
        }
        let node = self
            .inodes
            .get(attr.ino)
            .ok_or(FsError::new(libc::ENOENT))?;
        if self.has_children(&node.rel).await? || self.has_open_writes_under(attr.ino) {
            return Err(FsError::new(libc::ENOTEMPTY));
        }
        {
            // No write-behind of its times may bring the marker back.
            let _gate = self.dir_times.gate.lock().await;
            self.store.delete(&node.rel).await?;
            self.dir_times.forget([attr.ino]);
            self.inodes.remove(parent, name);
        }
        self.touch_dirs(&[parent]);
        Ok(())
    }

    /// Files open for writing under `dir_rel` were copied to new keys by a directory
    /// rename: their base etag is now that of the copy (a HEAD each; usually none).
    async fn rebase_writes_under(&self, dir_rel: &str) {
        for ws in self.write_states() {
            let Some(node) = self.inodes.get(ws.ino) else {
                continue;
            };
            if !node.rel.starts_with(dir_rel) || ws.base_etag().is_none() {
                continue;
            }
            if let Ok(Some(info)) = self.store.head(&node.rel).await {
                ws.set_base_etag(info.etag);
            }
        }
    }

    /// Whether a file created under `dir` is open for writing and not yet in S3.
    fn has_open_writes_under(&self, dir: u64) -> bool {
        self.write_states()
            .iter()
            .any(|ws| !ws.is_unlinked() && self.inodes.get(ws.ino).is_some_and(|n| n.parent == dir))
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
            Err(e) if e.errno == libc::ENOENT => None,
            Err(e) => return Err(e),
        };
        if let Some(d) = &dst {
            if d.ino == src.ino {
                return Ok(());
            }
            if noreplace {
                return Err(FsError::new(libc::EEXIST));
            }
        }
        let src_node = self.inodes.get(src.ino).ok_or(FsError::new(libc::ENOENT))?;
        match src.kind {
            Kind::File
            | Kind::Symlink
            | Kind::Fifo
            | Kind::Socket
            | Kind::CharDevice
            | Kind::BlockDevice => {
                if dst.as_ref().is_some_and(|d| d.kind == Kind::Dir) {
                    return Err(FsError::new(libc::EISDIR));
                }
                let dst_rel = format!("{new_parent_rel}{new_name}");
                self.store.check_object(&dst_rel)?;
                if let Some(ws) = self.write_state(src.ino) {
                    // The copy must carry what was written so far.
                    self.flush_state(&ws).await?;
                }
                let etag = self.store.copy(&src_node.rel, &dst_rel, None).await?;
                delete_with_retry(&*self.store, &src_node.rel).await?;
                if let Some(ws) = self.write_state(src.ino) {
                    ws.set_base_etag(etag);
                }
            }
            Kind::Dir => {
                let dst_rel = format!("{new_parent_rel}{new_name}/");
                if let Some(d) = &dst {
                    if d.kind != Kind::Dir {
                        return Err(FsError::new(libc::ENOTDIR));
                    }
                    if self.has_children(&dst_rel).await? || self.has_open_writes_under(d.ino) {
                        return Err(FsError::new(libc::ENOTEMPTY));
                    }
                }
                // No write-behind of directory times may write at the old names meanwhile.
                let _gate = self.dir_times.gate.lock().await;
                self.rename_dir(&src_node.rel, &dst_rel, dst.is_some())
                    .await?;
                self.dir_times.forget(dst.as_ref().map(|d| d.ino));
                self.inodes.rename(parent, name, new_parent, new_name);
                self.rebase_writes_under(&dst_rel).await;
            }
        }
        if let Some(d) = &dst
            && let Some(ws) = self.write_state(d.ino)
        {
            // The replaced file's open handles no longer name anything.
            if let Some(record) = ws.mark_unlinked() {
                self.forget_kept(&record);
                self.release_idle(&ws);
            }
        }
        if src.kind != Kind::Dir {
            self.inodes.rename(parent, name, new_parent, new_name);
        }
        self.touch_dirs(&[parent, new_parent]);
        Ok(())
    }

    /// Copies every key below `src` to `dst`, then deletes the originals; bounded
    /// concurrency, progress in the log. A failed copy removes what was copied (but the
    /// marker of a `dst` that existed before), so the tree is as it was.
    async fn rename_dir(&self, src: &str, dst: &str, dst_existed: bool) -> FsResult<()> {
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
            self.store.check_object(target.trim_end_matches('/'))?;
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
        let done: Vec<StoreResult<String>> = futures::stream::iter(pairs.clone())
            .map(|(from, to)| {
                let (store, copied) = (self.store.clone(), copied.clone());
                let src = src.to_owned();
                async move {
                    let r = store.copy(&from, &to, None).await.map(|_| to);
                    let n = copied.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % 100 == 0 {
                        tracing::info!(from = src, copied = n, total, "renaming directory");
                    }
                    r
                }
            })
            .buffer_unordered(RENAME_CONCURRENCY)
            .collect()
            .await;
        if let Some(pos) = done.iter().position(Result::is_err) {
            let copies: Vec<String> = done
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .filter(|to| !(dst_existed && to.as_str() == dst))
                .cloned()
                .collect();
            self.remove_keys(&copies).await;
            let mut done = done;
            return Err(done.swap_remove(pos).unwrap_err().into());
        }
        if keys.is_empty() {
            // An empty directory known only to this mount: give it a marker at the target.
            self.store
                .put(dst, bytes::Bytes::new(), &UserMeta::new())
                .await?;
        }
        futures::stream::iter(pairs)
            .map(|(from, _)| {
                let store = self.store.clone();
                async move { delete_with_retry(&*store, &from).await }
            })
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        tracing::info!(from = src, to = dst, keys = total, "directory renamed");
        Ok(())
    }

    /// Best-effort cleanup of a failed directory rename's copies.
    async fn remove_keys(&self, keys: &[String]) {
        let failed = futures::stream::iter(keys.iter().cloned())
            .map(|k| {
                let store = self.store.clone();
                async move { delete_with_retry(&*store, &k).await.err().map(|e| (k, e)) }
            })
            .buffer_unordered(RENAME_CONCURRENCY)
            .filter_map(|r| async move { r })
            .collect::<Vec<_>>()
            .await;
        for (key, e) in failed {
            tracing::warn!(key, error = %e, "could not remove a copy of a failed rename");
        }
    }
}
