//! Working while S3 is away (see docs/SEMANTICS.md, *Offline*).
//!
//! The store wrapper ([`crate::store::Reach`]) knows whether S3 answers. When a question
//! to S3 gets no answer, the core answers from what this machine keeps: the inode table
//! (whatever this mount saw, however old), the listings kept on disk (`local/tree.rs`, with
//! the metadata cache for attributes) and the disk cache for data (`read.rs`). Changes are
//! kept on disk and sent in order once S3 answers again:
//! - file contents (creates, writes, truncates, and the metadata of those files) as kept
//!   uploads in the pending area (`pending.rs`), which `close` returns 0 for once they are
//!   fsync'd there;
//! - `mkdir`, metadata changes of other entries, `unlink` and `rmdir` in the journal
//!   (`local/journal.rs`), each replayed as one conditional request (or two, for `rmdir`),
//!   all or nothing, under the same rules as online (*Two devices*).
//!
//! What cannot be kept that way is refused: a rename that S3 would have to do (`EXDEV`, so
//! `mv` copies and removes instead), `symlink` and `mknod` of special files (`EIO`).
//!
//! Back online (noticed by the store's probe, every 5 s), the journal is replayed first,
//! then the kept uploads, and every listing and attribute is taken as stale, so the next
//! look at the tree shows what changed in S3 meanwhile.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Fs;
use super::error::{FsError, FsResult};
use super::inodes::{Attr, Found, Kind};
use super::meta::Meta;
use crate::local::journal::{Change, Journal, rebase_meta};
use crate::store::{Expect, StoreError, UserMeta};

/// Journal replays that failed (S3 refused) are tried again after this, doubling up to
/// [`REPLAY_RETRY_MAX`].
const REPLAY_RETRY_START: Duration = Duration::from_secs(1);
const REPLAY_RETRY_MAX: Duration = Duration::from_secs(30);

/// What the journal's replay last met.
#[derive(Debug, Default)]
pub(super) struct ReplayState {
    next_try: Option<Instant>,
    delay: Duration,
    last_error: Option<String>,
}

/// The offline figures for status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineStats {
    /// Changes to the tree kept in the journal, waiting for S3.
    pub queued_changes: u64,
    /// When the oldest of them was made (Unix seconds).
    pub oldest_change: Option<u64>,
    /// Why the last replay stopped, if it did.
    pub replay_error: Option<String>,
    /// Times S3 was found unreachable since the mount started.
    pub outages: u64,
}

/// Opens the journal of offline changes beside the pending area (`None` without one).
pub(super) fn open_journal(
    opts: &super::MountOptions,
    store: &dyn crate::store::ObjectStore,
) -> Option<Journal> {
    let dir = opts.pending_dir.as_ref()?.parent()?.join("journal");
    Journal::open(&dir, &super::location_of(store), store.scope())
        .inspect_err(|e| tracing::error!(dir = %dir.display(), error = %e, "cannot open the journal of offline changes; mkdir, unlink and the like fail while S3 is away"))
        .ok()
}

impl Fs {
    /// Whether S3 is known not to answer.
    pub fn is_offline(&self) -> bool {
        self.reach.state().is_offline()
    }

    pub fn connectivity(&self) -> crate::store::Connectivity {
        self.reach.state().connectivity()
    }

    pub fn offline_stats(&self) -> OfflineStats {
        let queued = self
            .journal
            .as_ref()
            .map(Journal::queued)
            .unwrap_or_default();
        OfflineStats {
            queued_changes: queued.len() as u64,
            oldest_change: queued.first().map(|q| q.at),
            replay_error: self.replay.lock().unwrap().last_error.clone(),
            outages: self.connectivity().outages,
        }
    }

    /// Whether a change that S3 did not answer for may be kept and reported done (the
    /// default), rather than fail as before offline mode (`--offline-strict`).
    pub(super) fn keeps_offline(&self, e: &FsError) -> bool {
        // The mount is offline (a probe got no answer either), not a request that failed.
        e.is_unreachable() && self.is_offline() && !self.opts.offline_strict
    }

    /// A kept upload of `ws` after an upload that got no answer: reported done (the data is
    /// fsync'd in the pending area and goes to S3 when it answers).
    pub(super) fn kept_offline(&self, ws: &super::write::WriteState, e: &FsError) -> bool {
        self.keeps_offline(e) && ws.kept().is_some()
    }

    /// Keeps `change` in the journal, durably. `Err` (the original error) when it cannot be.
    pub(super) fn journal_change(&self, change: Change, cause: FsError) -> FsResult<()> {
        if !self.keeps_offline(&cause) {
            return Err(cause);
        }
        let Some(journal) = &self.journal else {
            return Err(cause);
        };
        match journal.push(change.clone()) {
            Ok(()) => {
                tracing::info!(path = %change.rel(), change = ?ChangeKind(&change), "offline: kept, sent when S3 answers");
                Ok(())
            }
            Err(e) => {
                tracing::error!(path = %change.rel(), error = %e, "offline: cannot keep the change");
                Err(FsError::from(StoreError::from(e)))
            }
        }
    }

    /// A file kept for upload under `rel`: the journal's changes of that path which its
    /// upload makes moot go — a metadata change (the upload carries the metadata), a
    /// deletion (the upload replaces that version instead: it becomes its base).
    pub(super) fn absorb_journal(&self, ws: &super::write::WriteState, rel: &str) {
        let Some(journal) = &self.journal else {
            return;
        };
        for q in journal.queued() {
            if q.change.rel() != rel {
                continue;
            }
            match &q.change {
                Change::SetMeta { .. } => {}
                Change::Unlink { etag, .. } => {
                    if ws.base_etag().is_none() {
                        ws.set_base_to(Some(etag.clone()));
                    }
                }
                _ => continue,
            }
            if let Err(e) = journal.replace(q.seq, None) {
                tracing::error!(path = rel, error = %e, "cannot fold a change into its file's upload");
            }
        }
    }

    /// A lookup while S3 does not answer: what this mount saw of the name, else the
    /// directory's listing kept on disk. A name found nowhere is `ENOENT` (creating it is
    /// safe: its upload will not replace anything it did not see).
    pub(super) async fn lookup_known(
        &self,
        parent: u64,
        dir_rel: &str,
        name: &str,
        count: bool,
    ) -> FsResult<Attr> {
        let found = match self.inodes.child(parent, name) {
            Some(child) => Some(child.ino),
            None => self.known_listing(parent, dir_rel).await.and_then(|l| {
                l.binary_search_by(|e| e.name.as_str().cmp(name))
                    .ok()
                    .map(|i| self.inodes.listed_ino(parent, &l[i]))
            }),
        };
        let Some(ino) = found else {
            return Err(FsError::new(libc::ENOENT));
        };
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        // Attributes HEADed by an earlier mount (same version), if the listing had none.
        if !node.found.meta_known
            && node.kind != Kind::Dir
            && let Some(found) = self.remembered(ino, &node.rel)
        {
            self.inodes.upsert_old(parent, name, found);
        }
        if count {
            self.inodes.add_lookup(ino);
        }
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        match self.write_state(ino) {
            Some(ws) => Ok(self.inodes.attr(ino, &ws.overlay(node.found))),
            None => Ok(node.attr),
        }
    }

    /// Lays the journal's changes under `dir_rel` over a listing kept on disk: removed
    /// names go, made directories come, changed metadata shows.
    pub(super) fn overlay_local_changes(&self, dir_rel: &str, entries: &mut Vec<(String, Found)>) {
        let Some(journal) = &self.journal else {
            return;
        };
        for q in journal.queued() {
            let rel = q.change.rel();
            let Some(rest) = rel.strip_prefix(dir_rel) else {
                continue;
            };
            let name = rest.strip_suffix('/').unwrap_or(rest);
            if name.is_empty() || name.contains('/') {
                continue;
            }
            let at = entries.binary_search_by(|(n, _)| n.as_str().cmp(name));
            match (&q.change, at) {
                (Change::Unlink { .. } | Change::Rmdir { .. }, Ok(i)) => {
                    entries.remove(i);
                }
                (Change::Mkdir { meta, .. }, Err(i)) => {
                    let found = Found {
                        meta: Meta::from_user(meta),
                        meta_known: true,
                        ..Found::dir()
                    };
                    entries.insert(i, (name.to_owned(), found));
                }
                (Change::SetMeta { after, .. }, Ok(i)) => {
                    let found = &mut entries[i].1;
                    found.meta = Meta::from_user(after);
                    found.meta_known = true;
                    if found.kind != Kind::Dir {
                        found.kind = Kind::of_object(found.meta.file_type());
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether the journal makes the directory `rel` (it is not in S3 yet).
    pub(super) fn made_offline(&self, rel: &str) -> bool {
        self.journal.as_ref().is_some_and(|j| {
            j.queued()
                .iter()
                .any(|q| matches!(&q.change, Change::Mkdir { rel: r, .. } if r == rel))
        })
    }

    /// Makes the journal's directories known to the inode table (a new mount, offline):
    /// they show, with their metadata, before S3 has them.
    pub(super) fn adopt_journal(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        for q in journal.queued() {
            if let Change::Mkdir { rel, meta } = &q.change {
                let mut parent = super::ROOT_INO;
                let segments: Vec<&str> = rel.trim_end_matches('/').split('/').collect();
                for (i, seg) in segments.iter().enumerate() {
                    let last = i + 1 == segments.len();
                    let found = Found {
                        meta: if last {
                            Meta::from_user(meta)
                        } else {
                            Meta::default()
                        },
                        meta_known: last,
                        ..Found::dir()
                    };
                    parent = match self.inodes.child(parent, seg) {
                        Some(c) if c.kind == Kind::Dir && !last => c.ino,
                        _ => self.inodes.upsert_old(parent, seg, found).ino,
                    };
                }
            }
        }
    }

    /// Keeps on disk the listings whose entries changed (with what this mount knows of each
    /// entry: its own writes, HEADs, offline changes), for answering after a remount while
    /// S3 does not answer. Files never uploaded are not listed: the pending area has them.
    pub fn save_known_tree(&self) {
        let dirty = self.inodes.take_dirty();
        let Some(tree) = &self.tree else {
            return;
        };
        for dir in dirty {
            let (Some(node), Some(listing)) = (self.inodes.get(dir), self.inodes.any_listing(dir))
            else {
                continue;
            };
            if node.kind != Kind::Dir {
                continue;
            }
            // A directory replaced by a rename (or removed) keeps its node, and its path,
            // while the kernel still holds it: only the one its name leads to says what the
            // path holds (the model found the replaced one's empty listing saved over it).
            let name = node
                .rel
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            if dir != super::ROOT_INO
                && self
                    .inodes
                    .child(node.parent, name)
                    .is_none_or(|c| c.ino != dir)
            {
                continue;
            }
            let mut saved = crate::local::SavedListing::default();
            saved.entries.reserve_exact(listing.len());
            for e in listing.iter() {
                // What S3 holds (or the journal will make it hold): a directory's times not
                // written yet are not (a later mount would not write them).
                let Some(found) = self.inodes.stored(e.ino) else {
                    continue;
                };
                let is_dir = found.kind == Kind::Dir;
                if !is_dir && found.etag.is_empty() {
                    continue;
                }
                saved.entries.push(crate::local::tree::SavedEntry {
                    name: e.name.clone(),
                    dir: is_dir,
                    size: found.size,
                    etag: found.etag.clone(),
                    modified: found.last_modified,
                    // Known, or itself kept from an earlier mount's listing.
                    meta: Some(found.meta.to_user()).filter(|m| !m.is_empty()),
                });
            }
            tree.save(&node.rel, saved);
        }
    }

    /// Called every second by the mount: while offline, probes S3 on its schedule; online,
    /// replays the journal when it holds changes; back online, makes everything stale and
    /// retries the kept uploads at once.
    pub async fn stay_in_touch(&self) {
        self.save_known_tree();
        self.reach.probe_if_due().await;
        if self.is_offline() {
            return;
        }
        let generation = self.reach.state().generation();
        let returned = self.seen_generation.swap(generation, Ordering::AcqRel) != generation;
        if returned {
            // Failures before the outage say nothing about now.
            *self.replay.lock().unwrap() = ReplayState::default();
        }
        self.replay_journal().await;
        if returned {
            self.back_online().await;
        }
    }

    /// [`Fs::stay_in_touch`] with a probe now, online or not (tests; after a long sleep):
    /// its answer also outranks a request still in flight from before that reports none.
    pub async fn stay_in_touch_now(&self) {
        self.reach.probe_now().await;
        self.replay.lock().unwrap().next_try = None;
        self.stay_in_touch().await;
    }

    async fn back_online(&self) {
        tracing::info!(
            changes = self.journal.as_ref().map_or(0, Journal::len),
            uploads = self.pending_uploads().len(),
            "back online: sending what was kept, then showing what changed in S3"
        );
        self.inodes.expire_all();
        self.offline_reads.lock().unwrap().clear();
        self.retry_aborts().await;
        self.abort_stray_uploads().await;
        self.retry_pending_now().await;
    }

    /// Whether the journal still holds changes (kept uploads wait for them: they may be
    /// inside a directory the journal makes, or replace a file it deletes).
    pub(super) fn journal_pending(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    /// Sends the journal's changes to S3, in order, each removed once applied; stops at the
    /// first that fails (no answer: offline again; a refusal: tried again later, with
    /// backoff).
    pub(super) async fn replay_journal(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        if journal.is_empty() {
            return;
        }
        if self
            .replay
            .lock()
            .unwrap()
            .next_try
            .is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let _gate = self.replaying.lock().await;
        for q in journal.queued() {
            match self.apply_change(&q.change).await {
                Ok(()) => {
                    // What S3 holds now may not be what was shown (a change replayed onto
                    // another version keeps the other client's keys): asked again.
                    if let Some(ino) = self.inodes.find(q.change.rel()) {
                        self.inodes.forget_meta(ino);
                    }
                    if let Err(e) = journal.remove(q.seq) {
                        tracing::error!(error = %e, "cannot remove an applied change from the journal");
                        return;
                    }
                    tracing::info!(path = %q.change.rel(), change = ?ChangeKind(&q.change), "offline change is in S3");
                    self.counters.change_replayed();
                }
                // Offline again: sent when S3 answers (the probe tells).
                Err(e) if e.is_unreachable() => return,
                Err(e) => {
                    let mut replay = self.replay.lock().unwrap();
                    replay.delay = (replay.delay * 2).clamp(REPLAY_RETRY_START, REPLAY_RETRY_MAX);
                    replay.next_try = Some(Instant::now() + replay.delay);
                    replay.last_error = Some(crate::pending::brief(&e.to_string()));
                    tracing::warn!(path = %q.change.rel(), error = %e, "offline change not sent yet; tried again later");
                    return;
                }
            }
        }
        *self.replay.lock().unwrap() = ReplayState::default();
        // What the journal held was shown from memory: S3 has it now.
        self.inodes.expire_all();
    }

    /// Sends one change, under the conditional-write rules. `Ok` when S3 has it, or when
    /// another client's change made it moot (logged, counted as a conflict).
    async fn apply_change(&self, change: &Change) -> FsResult<()> {
        match change {
            Change::Mkdir { rel, meta } => {
                match self
                    .store
                    .put_if(rel, bytes::Bytes::new(), meta, &Expect::Absent)
                    .await
                {
                    Ok(_) => Ok(()),
                    // Made meanwhile by another client: the directory is there.
                    Err(StoreError::Changed | StoreError::Raced) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Change::SetMeta {
                rel,
                etag,
                before,
                after,
            } => {
                if rel.ends_with('/') || rel.is_empty() {
                    let dir_mode = libc::S_IFDIR | u32::from(self.opts.dir_mode);
                    let _gate = self.dir_times.gate.lock().await;
                    super::dirtimes::rewrite_marker(&*self.store, rel, None, dir_mode, |m| {
                        *m = Meta::from_user(&rebase_meta(before, after, &m.to_user()));
                        Ok(())
                    })
                    .await
                    .map(drop)
                } else {
                    self.replay_set_meta(rel, etag, before, after).await
                }
            }
            Change::Unlink { rel, etag } => {
                match super::namespace::delete_with_retry(&*self.store, rel, etag).await {
                    Ok(()) | Err(StoreError::NotFound) => Ok(()),
                    Err(StoreError::Changed) => {
                        tracing::warn!(key = %rel, "not deleted: another client changed it while this mount was offline; its version stays");
                        self.counters.conflict(rel, None);
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Change::Rmdir { rel } => {
                let (children, marker) = self.children_and_marker(rel).await?;
                if children {
                    tracing::warn!(dir = %rel, "not removed: another client put entries in it while this mount was offline");
                    self.counters.conflict(rel, None);
                    return Ok(());
                }
                if let Some(etag) = marker {
                    match super::namespace::delete_with_retry(&*self.store, rel, &etag).await {
                        Err(StoreError::Changed) => self.store.delete(rel).await?,
                        other => other?,
                    }
                }
                Ok(())
            }
        }
    }

    /// A metadata change of a file made offline: on the version it was made on, else as the
    /// same change of keys on the version S3 has now.
    async fn replay_set_meta(
        &self,
        rel: &str,
        etag: &str,
        before: &UserMeta,
        after: &UserMeta,
    ) -> FsResult<()> {
        for _ in 0..super::namespace::REWRITE_TRIES {
            let Some(info) = self.store.head(rel).await? else {
                tracing::warn!(key = %rel, "metadata change not applied: the file was deleted while this mount was offline");
                self.counters.conflict(rel, None);
                return Ok(());
            };
            let current = info.meta.clone().unwrap_or_default();
            let meta = if info.etag == etag {
                after.clone()
            } else {
                rebase_meta(before, after, &current)
            };
            match self
                .store
                .copy_if(
                    rel,
                    Some(&info.etag),
                    rel,
                    Some(&meta),
                    &Expect::Version(info.etag.clone()),
                )
                .await
            {
                Ok(new_etag) => {
                    self.rebase_open_writers(rel, &info.etag, &new_etag);
                    return Ok(());
                }
                Err(StoreError::Changed | StoreError::NotFound | StoreError::Raced) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(FsError::new(libc::EIO))
    }

    /// A copy onto itself made version `old` of `rel` version `new` (a multipart object gets
    /// a new etag): a file open for writing that started from `old` now starts from `new`,
    /// as after an online chmod of an open file, so its upload is no conflict.
    fn rebase_open_writers(&self, rel: &str, old: &str, new: &str) {
        if old == new {
            return;
        }
        for ws in self.write_states() {
            if ws.base_etag().as_deref() == Some(old)
                && self.inodes.get(ws.ino).is_some_and(|n| n.rel == rel)
            {
                ws.set_base_etag(new.to_owned());
            }
        }
    }

    /// A read of data that is neither cached nor reachable: `EIO`, logged once per file per
    /// outage (the FUSE layer logs such failures at debug only).
    pub(super) fn uncached_offline(&self, ino: u64) {
        if self.offline_reads.lock().unwrap().insert(ino) {
            let path = self.path_of(ino).unwrap_or_default();
            tracing::warn!(%path, "offline, and this part of the file is not in the disk cache: EIO");
        }
    }

    /// Renames that need no request: a file this mount made and never uploaded (a kept or
    /// open new file) moves in the inode table, its kept record with it, and lands on the
    /// target's version (or on no version). Everything else is `EXDEV` while offline.
    pub(super) async fn rename_offline(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        cause: FsError,
    ) -> FsResult<()> {
        if !self.keeps_offline(&cause) {
            return Err(cause);
        }
        let exdev = || {
            tracing::info!(
                from = name,
                to = new_name,
                "offline: a rename S3 would have to do is refused (EXDEV: mv copies and removes instead)"
            );
            FsError::new(libc::EXDEV)
        };
        let src = self
            .inodes
            .child(parent, name)
            .ok_or(FsError::new(libc::ENOENT))?;
        // A directory over a directory this machine knows is not empty: that answer needs no
        // S3 (online it is `ENOTEMPTY` too).
        if src.kind == Kind::Dir
            && let Some(d) = self.inodes.child(new_parent, new_name)
            && d.kind == Kind::Dir
            && d.ino != src.ino
            && self
                .known_listing(d.ino, &d.rel)
                .await
                .is_some_and(|l| !l.is_empty())
        {
            return Err(FsError::new(libc::ENOTEMPTY));
        }
        let Some(ws) = self.write_state(src.ino) else {
            return Err(exdev());
        };
        // Only a file S3 has never seen: nothing there to copy or delete.
        if src.kind != Kind::File || !src.etag.is_empty() || ws.base_etag().is_some() {
            return Err(exdev());
        }
        let dst = self.inodes.child(new_parent, new_name);
        let base = match &dst {
            None => None,
            Some(d) if d.kind != Kind::File => return Err(exdev()),
            Some(d) => match self.write_state(d.ino) {
                // A file changed here since: what S3 has is what its own upload started from.
                Some(dws) => {
                    if let Some(record) = dws.mark_unlinked() {
                        self.forget_kept(&record);
                        self.release_idle(&dws);
                    }
                    dws.base_etag()
                }
                None => Some(d.etag.clone()).filter(|e| !e.is_empty()),
            },
        };
        ws.set_base_to(base);
        self.inodes.rename(parent, name, new_parent, new_name);
        self.touch_dirs(&[parent, new_parent]);
        // The kept record follows the file (a kept file goes under its new name now).
        self.kept_moved().await;
        if ws.kept().is_some() {
            ws.kept_is_stale();
            self.keep_pending(&ws, &cause).await;
        }
        Ok(())
    }
}

/// The kind of a change, for logs (paths are logged beside it; metadata is not).
struct ChangeKind<'a>(&'a Change);

impl std::fmt::Debug for ChangeKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Change::Mkdir { .. } => "mkdir",
            Change::SetMeta { .. } => "metadata",
            Change::Unlink { .. } => "unlink",
            Change::Rmdir { .. } => "rmdir",
        })
    }
}
