//! Changes to the tree: mkdir, mknod, symlink, unlink, rmdir (setattr: `namespace/setattr.rs`;
//! renames: `rename.rs`).
//!
//! Each one updates the inode table and drops the affected listings, so the mount sees its
//! own changes at once, whatever the metadata TTL, and each names the version it changes
//! (see docs/SEMANTICS.md, *Two devices*).

use std::time::SystemTime;

use super::Fs;
use super::error::{FsError, FsResult};
use super::handle::Handle;
use super::inodes::{Attr, Found, Kind, valid_name};
use super::meta::MAX_USER_META_BYTES;
use super::meta::Meta;
use crate::store::{Expect, ObjectStore, StoreError, StoreResult};

mod setattr;
pub use setattr::SetAttr;

/// Refuses metadata S3 would refuse (over 2 KiB): the change fails, nothing is dropped.
fn check_meta_size(meta: &Meta) -> FsResult<()> {
    if meta.stored_size() > MAX_USER_META_BYTES {
        Err(FsError::new(libc::ENOSPC))
    } else {
        Ok(())
    }
}

/// Who asks for a new entry: its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Deletes version `etag` of `rel`, once more if the first attempt fails: a rename's copy
/// is already done, and a transient failure should not leave two names. A version that
/// another client replaced meanwhile is not deleted ([`StoreError::Changed`]).
pub(super) async fn delete_with_retry(
    store: &dyn ObjectStore,
    rel: &str,
    etag: &str,
) -> StoreResult<()> {
    let expect = Expect::Version(etag.to_owned());
    match store.delete_if(rel, &expect).await {
        Ok(()) => Ok(()),
        Err(StoreError::Changed) => Err(StoreError::Changed),
        Err(e) => {
            tracing::debug!(key = rel, error = %e, "delete failed; trying again");
            store.delete_if(rel, &expect).await
        }
    }
}

/// Metadata rewrites of one object tried when other writers keep changing it.
pub(super) const REWRITE_TRIES: u32 = 3;

/// The longest symlink target the kernel takes: `PATH_MAX` less its NUL.
const MAX_LINK_TARGET: u64 = 4095;

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
        // The root's `.cognifs` holds cognifs's listing indexes (`index.rs`).
        if parent == super::ROOT_INO && name == super::index::INDEX_DIR {
            return Err(FsError::new(libc::EPERM));
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
        let put = self
            .store
            .put_if(
                &marker,
                bytes::Bytes::new(),
                &meta.to_user(),
                &Expect::Absent,
            )
            .await;
        let etag = match put {
            Ok(etag) => etag,
            // Offline: kept in the journal, made when S3 answers.
            Err(e) if e.is_unreachable() => {
                let change = crate::local::journal::Change::Mkdir {
                    rel: marker.clone(),
                    meta: meta.to_user(),
                };
                self.journal_change(change, e.into())?;
                String::new()
            }
            Err(e) => return Err(self.name_taken(parent, e)),
        };
        let found = Found {
            meta,
            etag,
            meta_known: true,
            last_modified: SystemTime::now(),
            ..Found::dir()
        };
        let attr = self.inodes.upsert(parent, name, found, true);
        // Known empty: lookups of names in it (a `cp -r` into it) need no request.
        self.inodes
            .set_listing(attr.ino, Vec::new(), super::inodes::Asked::now());
        self.inodes.add_to_listing(parent, name);
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
        let etag = self
            .store
            .put_if(&rel, body.clone(), &meta.to_user(), &Expect::Absent)
            .await
            .map_err(|e| self.name_taken(parent, e))?;
        // What it holds (a symlink's target) is known: cached, as if read.
        self.read.keep_small(&rel, &etag, &body);
        let attr = self
            .inodes
            .upsert(parent, name, Found::written(kind, size, etag, meta), true);
        self.inodes.add_to_listing(parent, name);
        self.touch_dirs(&[parent]);
        Ok(attr)
    }

    /// A create's `If-None-Match: *` failed: another client took the name since it was
    /// looked up (`EEXIST`, as a local disk says; the listing is read again).
    fn name_taken(&self, parent: u64, e: StoreError) -> FsError {
        if matches!(e, StoreError::Changed | StoreError::Raced) {
            self.inodes.invalidate_listing(parent);
            FsError::new(libc::EEXIST)
        } else {
            e.into()
        }
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
        // No path is longer (PATH_MAX with its NUL): such an object is not fetched at all.
        if node.found.size > MAX_LINK_TARGET {
            tracing::warn!(key = %node.rel, size = node.found.size, "a symlink object too large to be a target; not read");
            return Err(FsError::new(libc::ENAMETOOLONG));
        }
        // Through the block caches: a target read once is there after a remount, offline.
        let reader = super::read::FileReader::new(
            self.read.clone(),
            node.rel.clone(),
            node.found.etag.clone(),
            node.found.size,
        );
        let len = u32::try_from(node.found.size).map_err(|_| FsError::new(libc::ENAMETOOLONG))?;
        let target = reader.read(0, len).await?;
        crate::store::check_length(target.len() as u64, 0, node.found.size)?;
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
        // Only the version this mount knows goes; a file it created and never uploaded has
        // none (whatever S3 has there now is someone else's).
        if !node.etag.is_empty() {
            match delete_with_retry(&*self.store, &node.rel, &node.etag).await {
                Ok(()) => {}
                // Offline: kept in the journal, deleted (that version only) when S3 answers.
                Err(e) if e.is_unreachable() => {
                    let change = crate::local::journal::Change::Unlink {
                        rel: node.rel.clone(),
                        etag: node.etag.clone(),
                    };
                    self.journal_change(change, e.into())?;
                }
                Err(StoreError::Changed) => {
                    // Another client saved a newer version since: it stays, and shows.
                    tracing::warn!(key = %node.rel, "not deleted: another client changed it since this mount saw it; its version stays");
                    self.counters.conflict(&node.rel, None);
                    self.inodes.invalidate(attr.ino);
                    self.tell_kernel(super::Invalidate::Entry(parent, name.to_owned()));
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
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

    /// Whether anything at all (markers and hidden keys included) lies below `dir_rel`,
    /// and the etag of its own marker, if it has one.
    pub(super) async fn children_and_marker(
        &self,
        dir_rel: &str,
    ) -> FsResult<(bool, Option<String>)> {
        let page = self.store.list_page(dir_rel, None, 2).await?;
        let marker = page
            .files
            .iter()
            .find(|f| f.name.is_empty())
            .map(|f| f.etag.clone());
        let children = !page.dirs.is_empty() || page.files.iter().any(|f| !f.name.is_empty());
        Ok((children, marker))
    }

    /// Whether anything at all (markers and hidden keys included) lies below `dir_rel`.
    pub(super) async fn has_children(&self, dir_rel: &str) -> FsResult<bool> {
        Ok(self.children_and_marker(dir_rel).await?.0)
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
        let (children, marker) = match self.children_and_marker(&node.rel).await {
            Err(e) if self.keeps_offline(&e) => {
                return self.rmdir_offline(parent, name, &node, e).await;
            }
            other => other?,
        };
        if children || self.has_open_writes_under(attr.ino) {
            return Err(FsError::new(libc::ENOTEMPTY));
        }
        {
            // No write-behind of its times may bring the marker back.
            let _gate = self.dir_times.gate.lock().await;
            if let Some(etag) = marker {
                // A marker another device rewrote since the listing holds only metadata
                // of this (empty) directory: deleting it is what rmdir asks.
                match delete_with_retry(&*self.store, &node.rel, &etag).await {
                    Err(StoreError::Changed) => self.store.delete(&node.rel).await?,
                    other => other?,
                }
            }
            self.dir_times.forget([attr.ino]);
            self.inodes.remove(parent, name);
        }
        self.index_gone(&node.rel);
        self.touch_dirs(&[parent]);
        Ok(())
    }

    /// An `rmdir` S3 did not answer for: a directory this machine knows to be empty (its
    /// last listing, with the changes kept since) is removed now and in S3 when it answers;
    /// one it never listed is `EIO` (it cannot tell).
    async fn rmdir_offline(
        &self,
        parent: u64,
        name: &str,
        node: &super::inodes::NodeInfo,
        cause: FsError,
    ) -> FsResult<()> {
        let Some(listing) = self.known_listing(node.ino, &node.rel).await else {
            tracing::info!(dir = %node.rel, "offline, and this directory was never listed here: cannot tell whether it is empty");
            return Err(cause);
        };
        if !listing.is_empty() || self.has_open_writes_under(node.ino) {
            return Err(FsError::new(libc::ENOTEMPTY));
        }
        let _gate = self.dir_times.gate.lock().await;
        let change = crate::local::journal::Change::Rmdir {
            rel: node.rel.clone(),
        };
        self.journal_change(change, cause)?;
        self.dir_times.forget([node.ino]);
        self.inodes.remove(parent, name);
        drop(_gate);
        self.touch_dirs(&[parent]);
        Ok(())
    }

    /// Whether a file created under `dir` is open for writing and not yet in S3.
    pub(super) fn has_open_writes_under(&self, dir: u64) -> bool {
        self.write_states()
            .iter()
            .any(|ws| !ws.is_unlinked() && self.inodes.get(ws.ino).is_some_and(|n| n.parent == dir))
    }
}
