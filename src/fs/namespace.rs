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
use super::meta::Meta;
use crate::store::{ObjectStore, StoreResult, UserMeta};

/// Keys copied or deleted at once by a directory rename.
const RENAME_CONCURRENCY: usize = 8;

/// What `setattr` asks for, in fs terms.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
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

    /// The mode to store with a new file: only when it differs from the mount's default.
    pub(super) fn stored_mode(&self, mode: u32) -> Option<u32> {
        let mode = mode & 0o7777;
        (mode != u32::from(self.opts.file_mode)).then_some(mode)
    }

    pub async fn setattr(&self, ino: u64, fh: Option<u64>, req: SetAttr) -> FsResult<Attr> {
        if req.uid.is_some_and(|u| u != self.opts.uid)
            || req.gid.is_some_and(|g| g != self.opts.gid)
        {
            return Err(FsError::new(libc::EPERM));
        }
        let changes = req.size.is_some() || req.mode.is_some() || req.mtime.is_some();
        if changes {
            self.writable()?;
        }
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        if node.kind == Kind::Dir {
            // S3 has no directory metadata; accept chmod/utime so `cp -a` and rsync work.
            if req.size.is_some() {
                return Err(FsError::new(libc::EISDIR));
            }
            return self.getattr(ino).await;
        }
        let mode = req.mode.map(|m| m & 0o7777);
        if let Some(size) = req.size {
            let handle_ws = fh
                .and_then(|fh| self.handle(fh).ok())
                .and_then(|h| h.write_state().cloned());
            let (ws, temporary) = match handle_ws {
                Some(ws) => (ws, false),
                None => {
                    // truncate(2) without an open file: a short-lived handle of our own.
                    let fh = self.open_write(ino, size == 0).await?;
                    let handle = self.handles.lock().unwrap().remove(&fh);
                    let ws = handle.as_deref().and_then(Handle::write_state).cloned();
                    (ws.ok_or(FsError::new(libc::EIO))?, true)
                }
            };
            let result = async {
                ws.truncate(size).await?;
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
            .ok_or(FsError::new(libc::ENOENT))?;
        let stored = Meta::from_user(info.meta.as_ref().unwrap_or(&UserMeta::new()));
        let meta = Meta {
            mtime: req.mtime.or(stored.mtime),
            mode: mode.or(stored.mode),
        };
        let mut user = info.meta.unwrap_or_default();
        user.extend(meta.to_user());
        let etag = self.store.copy(&node.rel, &node.rel, Some(&user)).await?;
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
            .ok_or(FsError::new(libc::ENOENT))
    }

    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.writable()?;
        let parent_rel = self.new_name(parent, name)?;
        match self.lookup_attr(parent, name, false).await {
            Ok(_) => return Err(FsError::new(libc::EEXIST)),
            Err(e) if e.errno == libc::ENOENT => {}
            Err(e) => return Err(e),
        }
        let marker = format!("{parent_rel}{name}/");
        self.store
            .put(&marker, bytes::Bytes::new(), &UserMeta::new())
            .await?;
        let attr = self.inodes.upsert(parent, name, Found::dir(), true);
        self.inodes.invalidate_listing(parent);
        Ok(attr)
    }

    /// `mknod` of a regular file: an empty object, uploaded before the reply.
    pub async fn mknod(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(FsError::new(libc::EPERM));
        }
        let (attr, fh) = self.create(parent, name, mode).await?;
        let flushed = self.flush(fh).await;
        let released = self.release(fh).await;
        flushed.and(released)?;
        self.getattr(attr.ino).await
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
            ws.mark_unlinked();
        }
        self.inodes.remove(parent, name);
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
        self.store.delete(&node.rel).await?;
        self.inodes.remove(parent, name);
        Ok(())
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
            Kind::File => {
                if dst.as_ref().is_some_and(|d| d.kind == Kind::Dir) {
                    return Err(FsError::new(libc::EISDIR));
                }
                let dst_rel = format!("{new_parent_rel}{new_name}");
                self.store.check_object(&dst_rel)?;
                if let Some(ws) = self.write_state(src.ino) {
                    // The copy must carry what was written so far.
                    self.flush_state(&ws).await?;
                }
                self.store.copy(&src_node.rel, &dst_rel, None).await?;
                delete_with_retry(&*self.store, &src_node.rel).await?;
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
                self.rename_dir(&src_node.rel, &dst_rel, dst.is_some())
                    .await?;
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
