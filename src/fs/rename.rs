//! Renames of files and directories, each conditional on the versions this mount saw
//! (see docs/SEMANTICS.md, *Two devices*).
//!
//! A file's rename is a CopyObject of the version seen onto the target seen, then a delete
//! of that source version; a directory's copies every key below it, then deletes the
//! originals. An operation that takes several S3 requests either completes or leaves the
//! tree as it was: a directory rename whose copy fails removes what it copied; a delete
//! that fails is tried again before the rename gives up (then the source is still there
//! beside the complete target).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use super::Fs;
use super::error::{FsError, FsResult};
use super::inodes::{Found, Kind};
use super::namespace::{REWRITE_TRIES, delete_with_retry};
use crate::store::{Expect, StoreError, StoreResult, UserMeta};

/// Keys copied or deleted at once by a directory rename.
const RENAME_CONCURRENCY: usize = 8;

/// Where a rename put its object, and the version it made.
struct Placed {
    rel: String,
    etag: String,
}

impl Fs {
    /// Files open for writing were copied to new keys by a directory rename: their base
    /// is now the copy's version (`copies`: new key → etag), not a HEAD's, which could
    /// already see another client's.
    /// What this machine keeps of a renamed object follows it to the key it was copied to
    /// (`from`, `to`: key and etag): the copy is an object of its own, and offline after a
    /// remount only what is cached under its key reads. A symlink's target known here goes
    /// to the block caches (the model found a renamed symlink unreadable there); a file's
    /// blocks on disk are kept under the new key too, written behind.
    fn carry_cached(&self, ino: u64, from: (&str, &str), to: (&str, &str)) {
        let Some(node) = self.inodes.get(ino) else {
            return;
        };
        match node.kind {
            Kind::Symlink => {
                if let Some(target) = self.inodes.link_target(ino, from.1) {
                    self.read.keep_small(to.0, to.1, &target);
                    self.inodes.set_link_target(ino, to.1, target);
                }
            }
            Kind::File => self.read.carry(from, to, node.attr.size),
            _ => {}
        }
    }

    fn rebase_writes(&self, copies: &std::collections::HashMap<String, String>) {
        for ws in self.write_states() {
            if ws.base_etag().is_none() {
                continue;
            }
            if let Some(etag) = self.inodes.get(ws.ino).and_then(|n| copies.get(&n.rel)) {
                ws.set_base_etag(etag.clone());
            }
        }
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        noreplace: bool,
    ) -> FsResult<()> {
        match self
            .rename_online(parent, name, new_parent, new_name, noreplace)
            .await
        {
            // S3 did not answer (nothing of the rename was done): only what needs no
            // request is done now (`offline.rs`).
            Err(e) if e.is_unreachable() => {
                self.rename_offline(parent, name, new_parent, new_name, e)
                    .await
            }
            other => other,
        }
    }

    async fn rename_online(
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
                let dst_etag = dst
                    .as_ref()
                    .and_then(|d| self.inodes.get(d.ino))
                    .map(|n| n.etag);
                // The version the copy is of (If-Match), after the flush above.
                let copied = self.inodes.get(src.ino).map(|n| (n.rel, n.found.etag));
                let placed = self
                    .rename_object(src.ino, &dst_rel, dst_etag.as_deref())
                    .await?;
                if let Some(ws) = self.write_state(src.ino) {
                    ws.set_base_etag(placed.etag.clone());
                }
                // The file's own name now (a flush above may have moved it aside).
                let (from_parent, from_name) = self
                    .inodes
                    .get(src.ino)
                    .zip(self.inodes.name(src.ino))
                    .map_or((parent, name.to_owned()), |(n, name)| (n.parent, name));
                let to_name = placed.rel.rsplit('/').next().unwrap_or(new_name);
                self.inodes
                    .rename(from_parent, &from_name, new_parent, to_name);
                // The copy is a version of its own (a multipart copy has a new etag): the
                // next write names that one.
                if let Some(node) = self.inodes.get(src.ino) {
                    let found = Found {
                        etag: placed.etag.clone(),
                        ..node.found
                    };
                    self.inodes.set_written(src.ino, found);
                }
                if let Some((rel, etag)) = &copied {
                    self.carry_cached(src.ino, (rel, etag), (&placed.rel, &placed.etag));
                }
                self.readers_follow(src.ino);
                if placed.rel != dst_rel {
                    // The kernel moves its entry to `new_name`, which names the other
                    // writer's version: it must look it up again (and an open through that
                    // entry before it does is refused as stale).
                    self.inodes.set_aside(src.ino);
                    self.tell_kernel(super::Invalidate::Entry(new_parent, new_name.to_owned()));
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
                let copies = self
                    .rename_dir(&src_node.rel, &dst_rel, dst.is_some())
                    .await?;
                self.dir_times.forget(dst.as_ref().map(|d| d.ino));
                self.inodes.rename(parent, name, new_parent, new_name);
                for (rel, etag) in &copies {
                    // Only a copy of the version known here (a single-part copy keeps its
                    // etag; a changed or multipart object is left to be read anew).
                    if let Some(ino) = self.inodes.find(rel)
                        && let Some(node) = self.inodes.get(ino)
                        && node.found.etag == *etag
                        && let Some(from_rel) = rel.strip_prefix(dst_rel.as_str())
                    {
                        let from_rel = format!("{}{from_rel}", src_node.rel);
                        self.carry_cached(ino, (&from_rel, &node.found.etag), (rel, etag));
                    }
                }
                // Its copies are new versions: a new index, the old one's gone.
                self.index_gone(&src_node.rel);
                self.index_changed(src_node.ino);
                self.rebase_writes(&copies);
                self.kept_moved().await;
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
        self.touch_dirs(&[parent, new_parent]);
        Ok(())
    }

    /// The object half of renaming the file `ino` to `dst_rel`: a copy of the version this
    /// mount knows, conditional on it and on `dst_rel` holding `dst_etag` (the version this
    /// mount saw there; `None`: nothing), then a delete of that version. If another client
    /// changed the source meanwhile, its new version is what moves; if it changed the
    /// target, the file goes beside it as a conflict copy instead. A source changed again
    /// between copy and delete stays (nothing of the other client's is deleted).
    async fn rename_object(
        &self,
        ino: u64,
        dst_rel: &str,
        dst_etag: Option<&str>,
    ) -> FsResult<Placed> {
        let src = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        let mut src_etag = src.etag.clone();
        let mut target = dst_rel.to_owned();
        let mut expect = Expect::from_base(dst_etag);
        let mut conflicts = 0;
        let mut tries = 0;
        let etag = loop {
            tries += 1;
            if tries > REWRITE_TRIES + super::pending::CONFLICT_NAMES_TRIED {
                return Err(FsError::new(libc::EIO));
            }
            let copied = self
                .store
                .copy_if(&src.rel, Some(&src_etag), &target, None, &expect)
                .await;
            match copied {
                Ok(etag) => break etag,
                Err(StoreError::Changed) => match self.store.head(&src.rel).await? {
                    None => return Err(FsError::new(libc::ENOENT)),
                    // The source is a new version: that is the file that moves.
                    Some(info) if info.etag != src_etag => src_etag = info.etag,
                    // The target changed since this mount saw it: beside it.
                    Some(_) => {
                        target = super::pending::conflict_name(
                            dst_rel,
                            &self.opts.device_name,
                            SystemTime::now(),
                            conflicts,
                        );
                        self.store.check_object(&target)?;
                        conflicts += 1;
                        expect = Expect::Absent;
                    }
                },
                // The target this mount saw is gone: the name is free, if still so.
                Err(StoreError::NotFound) if matches!(expect, Expect::Version(_)) => {
                    expect = Expect::Absent;
                }
                Err(StoreError::Raced) => {}
                Err(e) => return Err(e.into()),
            }
        };
        match delete_with_retry(&*self.store, &src.rel, &src_etag).await {
            Err(StoreError::Changed) => {
                tracing::warn!(key = %src.rel, "renamed, but another client wrote the old name meanwhile: its version stays there");
                self.counters.conflict(&src.rel, None);
            }
            // The copy is done and S3 stopped answering: the delete is kept in the journal,
            // so the rename is whole once S3 answers (never two names for good).
            Err(e) if e.is_unreachable() => self.delete_later(&src.rel, &src_etag, e)?,
            other => other?,
        }
        if target != dst_rel {
            tracing::warn!(key = %dst_rel, conflict = %target, "another client changed the rename's target since this mount saw it: the file is kept beside it");
            self.counters.conflict(dst_rel, Some(&target));
        }
        Ok(Placed { rel: target, etag })
    }

    /// Copies every key below `src` to `dst`, then deletes the originals; bounded
    /// concurrency, progress in the log. A failed copy removes what was copied, and the
    /// marker of a `dst` that existed is replaced only after every other copy, so the tree
    /// is as it was, that directory's own metadata included.
    async fn rename_dir(
        &self,
        src: &str,
        dst: &str,
        dst_existed: bool,
    ) -> FsResult<std::collections::HashMap<String, String>> {
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
        // Each key as listed: (from, to, its etag). Every copy is of that version, onto a
        // name nothing holds (but an existing target's own marker).
        let moves: Vec<(String, String, String)> = keys
            .iter()
            .map(|k| {
                (
                    format!("{src}{}", k.name),
                    format!("{dst}{}", k.name),
                    k.etag.clone(),
                )
            })
            .collect();
        let copy = |(from, to, etag): (String, String, String)| {
            let (store, copied) = (self.store.clone(), copied.clone());
            let src = src.to_owned();
            let expect = if dst_existed && to == dst {
                Expect::Anything
            } else {
                Expect::Absent
            };
            async move {
                let r = store
                    .copy_if(&from, Some(&etag), &to, None, &expect)
                    .await
                    .map(|etag| (to, etag));
                let n = copied.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 100 == 0 {
                    tracing::info!(from = src, copied = n, total, "renaming directory");
                }
                r
            }
        };
        // The marker of a `dst` that exists is replaced last, once everything else is
        // copied: a copy that fails before leaves that directory's own metadata (its times,
        // mode, owner) as it was, and a failed marker copy changed nothing of it either.
        let (marker, rest): (Vec<_>, Vec<_>) = moves
            .iter()
            .cloned()
            .partition(|(_, to, _)| dst_existed && to == dst);
        let mut done: Vec<StoreResult<(String, String)>> = futures::stream::iter(rest)
            .map(&copy)
            .buffer_unordered(RENAME_CONCURRENCY)
            .collect()
            .await;
        if done.iter().all(Result::is_ok) {
            for m in marker {
                done.push(copy(m).await);
            }
        }
        if let Some(pos) = done.iter().position(Result::is_err) {
            let copies: Vec<(String, String)> = done
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .filter(|(to, _)| !(dst_existed && to.as_str() == dst))
                .cloned()
                .collect();
            self.remove_keys(&copies).await;
            let e = done.swap_remove(pos).unwrap_err();
            // Refused offline (EXDEV) rather than failed: nothing of it stays.
            return Err(e.into());
        }
        if keys.is_empty() {
            // An empty directory known only to this mount: give it a marker at the target.
            let put = self
                .store
                .put_if(dst, bytes::Bytes::new(), &UserMeta::new(), &Expect::Absent)
                .await;
            match put {
                // Another client made that directory meanwhile: it is there.
                Ok(_) | Err(StoreError::Changed) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let kept_back = futures::stream::iter(moves)
            .map(|(from, _, etag)| {
                let store = self.store.clone();
                async move {
                    match delete_with_retry(&*store, &from, &etag).await {
                        // Another client wrote it after the copy: its version stays.
                        Err(StoreError::Changed) => Ok(Some(from)),
                        // S3 stopped answering: the delete is kept for when it does.
                        Err(e) if e.is_unreachable() => {
                            self.delete_later(&from, &etag, e).map(|()| None)
                        }
                        other => other.map(|()| None).map_err(FsError::from),
                    }
                }
            })
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        for key in kept_back.into_iter().flatten() {
            tracing::warn!(
                key,
                "renamed, but another client wrote the old name meanwhile: its version stays there"
            );
            self.counters.conflict(&key, None);
        }
        tracing::info!(from = src, to = dst, keys = total, "directory renamed");
        Ok(done.into_iter().flatten().collect())
    }

    /// A delete that S3 did not answer, kept in the journal (the version `etag` of `rel`
    /// goes when S3 answers, unless another client changed it).
    fn delete_later(&self, rel: &str, etag: &str, e: StoreError) -> FsResult<()> {
        let change = crate::local::journal::Change::Unlink {
            rel: rel.to_owned(),
            etag: etag.to_owned(),
        };
        self.journal_change(change, e.into())
    }

    /// Best-effort cleanup of a failed directory rename's copies: (key, the copy's etag);
    /// what S3 does not answer for is removed when it does (the journal).
    async fn remove_keys(&self, keys: &[(String, String)]) {
        let failed = futures::stream::iter(keys.iter().cloned())
            .map(|(k, etag)| {
                let store = self.store.clone();
                async move {
                    match delete_with_retry(&*store, &k, &etag).await {
                        Err(e) if e.is_unreachable() => self
                            .delete_later(&k, &etag, e)
                            .err()
                            .map(|e| (k, StoreError::Other(e.to_string()))),
                        r => r.err().map(|e| (k, e)),
                    }
                }
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
