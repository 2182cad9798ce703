//! Uploads that failed are kept, shown and retried: nothing accepted is dropped.
//!
//! When the upload at `flush`/`fsync`/`close` fails, the call still reports the error, but
//! the file's contents are copied into the profile's pending area (`crate::pending`,
//! fsync'd) and its write state stays live: the mount keeps showing the file as written,
//! reads see it, and [`Fs::retry_pending`] (every second, from the mount) uploads it with
//! backoff once S3 and the credentials are back. A new mount of the profile adopts what an
//! earlier one left ([`Fs::adopt_pending`]).
//!
//! A kept upload is never written over someone else's: its upload is conditional on the
//! version the writer started from, like every upload ([`Fs::flush_state_checked`]); if
//! another writer got there first (or took a new file's name), the data goes beside it as
//! `NAME.conflict-<device>-<UTC timestamp>` ([`Fs::keep_beside`]).
//!
//! Space: everything open for writing may have to be kept, so a write that grows a file is
//! refused with `ENOSPC` unless the pending area could hold it (`pending_max`, and the free
//! space its filesystem must keep, `min_free`), before the data is accepted.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Fs;
use super::error::{FsError, FsResult};
use super::inodes::{Found, Kind};
use super::meta::Meta;
use super::spool::Spool;
use super::upload::whole;
use super::write::{Snapshot, WriteState};
use crate::pending::{PendingRecord, brief};
use crate::store::{Expect, StoreError};

const RETRY_START: Duration = Duration::from_secs(1);
/// How often the retry pass looks at the pending area on disk for what others changed.
const AREA_LOOK_EVERY: Duration = Duration::from_secs(5);
/// At most this long between tries: once S3 is back, a kept upload leaves within it.
const RETRY_MAX: Duration = Duration::from_secs(15);

/// Conflict names tried for one conflict copy (`…Z`, `…Z-2`, …) before giving up.
pub(super) const CONFLICT_NAMES_TRIED: u32 = 8;
/// At most this much of the device's name goes into a conflict copy's name.
const MAX_DEVICE_NAME: usize = 64;

/// The device's name as it appears in conflict copies: `[A-Za-z0-9._-]` only, at most 64
/// bytes (`device` if nothing is left).
pub fn device_label(device: &str) -> String {
    let label: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_DEVICE_NAME)
        .collect();
    let label = label.trim_matches(|c| c == '.' || c == '-').to_owned();
    if label.is_empty() {
        "device".to_owned()
    } else {
        label
    }
}

/// `NAME.conflict-DEVICE-YYYYMMDDTHHMMSSZ` for `rel` at `t` (`-N` after it for the
/// `attempt`-th other name, from 2), with NAME shortened so the name fits in 255 bytes.
pub fn conflict_name(rel: &str, device: &str, t: SystemTime, attempt: u32) -> String {
    let (dir, name) = match rel.rfind('/') {
        Some(i) => rel.split_at(i + 1),
        None => ("", rel),
    };
    let mut suffix = format!(".conflict-{}-{}", device_label(device), utc_stamp(t));
    if attempt > 0 {
        suffix.push_str(&format!("-{}", attempt + 1));
    }
    let mut keep = name.len().min(255usize.saturating_sub(suffix.len()));
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{dir}{}{suffix}", &name[..keep])
}

/// `YYYYMMDDTHHMMSSZ`: `t` in UTC.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day, hour, minute, second) = crate::clock::utc_parts(secs);
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z")
}

/// The free space the pending area's filesystem keeps by default: 5% of it, at most 1 GiB.
fn default_min_free(total: u64) -> u64 {
    (total / 20).min(1 << 30)
}

impl Fs {
    /// `s3://bucket/prefix/`: whose records are this mount's.
    pub(super) fn location(&self) -> String {
        super::location_of(&*self.store)
    }

    /// Refuses (`ENOSPC`) a change that makes `ws`'s file `end` bytes long unless the
    /// pending area could keep every file open for writing should their uploads fail.
    pub(super) fn admit(&self, ws: &WriteState, end: u64) -> FsResult<()> {
        // Past S3's largest object it is EFBIG, whatever the room.
        super::write::check_size(end)?;
        let growth = end.saturating_sub(ws.size());
        let Some(area) = &self.pending else {
            return Ok(());
        };
        if growth == 0 {
            return Ok(());
        }
        let states = self.write_states();
        let live: u64 = states.iter().map(|w| w.size()).sum();
        let adopted: u64 = states.iter().map(|w| w.kept_size()).sum();
        let needed = live + growth;
        if let Some(max) = self.opts.pending_max {
            let others = area.used_bytes_cached().saturating_sub(adopted);
            if others + needed > max {
                tracing::warn!(
                    needed = others + needed,
                    max,
                    "refusing a write: the pending-upload area could not keep it"
                );
                return Err(FsError::new(libc::ENOSPC));
            }
        }
        if let Some((free, total)) = super::filesystem_space(area.dir()) {
            let keep = self
                .opts
                .min_free
                .unwrap_or_else(|| default_min_free(total));
            if free < needed.saturating_add(keep) {
                tracing::warn!(
                    free,
                    needed,
                    keep,
                    "refusing a write: no room to keep it should its upload fail"
                );
                return Err(FsError::new(libc::ENOSPC));
            }
        }
        Ok(())
    }

    /// After a failed upload of `ws`: copies its contents into the pending area (unless
    /// this version is there already), so that they survive this mount.
    pub(super) async fn keep_pending(&self, ws: &Arc<WriteState>, err: &FsError) {
        let Some(area) = self.pending.clone() else {
            return;
        };
        let Some(node) = self.inodes.get(ws.ino) else {
            return;
        };
        if !ws.needs_keeping() {
            return;
        }
        self.absorb_journal(ws, &node.rel);
        let Snapshot {
            meta,
            size,
            base_etag,
            version,
        } = ws.snapshot();
        // A kept file changed again keeps when its upload first failed and the error it
        // last met.
        let earlier = ws.kept();
        let record = PendingRecord {
            location: self.location(),
            rel: node.rel.clone(),
            base_etag,
            size,
            meta: meta.to_user(),
            since: earlier
                .as_ref()
                .map_or_else(crate::clock::unix_now, |k| k.since),
            last_error: earlier.map_or_else(|| brief(&err.to_string()), |k| k.last_error),
            data: String::new(),
        };
        let kept = match ws.spool_file() {
            Ok(file) => tokio::task::spawn_blocking(move || area.put(record, &file))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(e) => Err(e),
        };
        match kept {
            Ok(record) => {
                tracing::warn!(
                    key = %record.rel,
                    size,
                    error = %err,
                    "upload failed; kept as a pending upload, retried in the background"
                );
                ws.set_kept(record, version);
                self.counters.kept_upload();
            }
            Err(e) => {
                tracing::error!(key = %node.rel, error = %e, "cannot keep the failed upload")
            }
        }
    }

    /// Kept files that a directory rename moved: each record follows its file (the new
    /// record is written before the old one goes).
    pub(super) async fn kept_moved(&self) {
        for ws in self.write_states() {
            let (Some(old), Some(node)) = (ws.kept(), self.inodes.get(ws.ino)) else {
                continue;
            };
            if old.rel == node.rel {
                continue;
            }
            ws.kept_is_stale();
            self.keep_pending(&ws, &FsError::new(libc::EIO)).await;
            if ws.kept().is_some_and(|k| k.rel != old.rel) {
                self.forget_kept(&old);
            }
        }
    }

    /// Removes a kept record whose contents are in S3 (or no longer wanted).
    pub(super) fn forget_kept(&self, record: &PendingRecord) {
        if let Some(area) = &self.pending {
            area.remove_if(&record.location, &record.rel, &record.data);
        }
    }

    /// The records of the uploads this mount keeps, by key.
    pub fn pending_uploads(&self) -> Vec<PendingRecord> {
        let mut out: Vec<PendingRecord> = self
            .write_states()
            .iter()
            .filter_map(|w| w.kept())
            .collect();
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        out
    }

    /// One pass over kept uploads: each one due is tried again (backoff 1 s … 15 s); a
    /// record dropped by `cognifs pending drop` is let go. The mount calls this every second.
    pub async fn retry_pending(&self) {
        if let Some(cache) = &self.meta_cache {
            cache.flush();
        }
        let Some(area) = self.pending.clone() else {
            return;
        };
        // What other processes did to the area (`cognifs pending drop`) is looked at every
        // few seconds: reading every record each second costs O(records).
        let look_at_disk = area.refresh_due(AREA_LOOK_EVERY);
        let offline = self.is_offline();
        if look_at_disk && !offline && !self.journal_pending() {
            self.adopt_pending().await;
        }
        let mut s3_answers = false;
        for ws in self.write_states() {
            let (kept, idle, due) = ws.retry_status();
            // Other states are the business of their handles (`detach_write`).
            let Some(kept) = kept else {
                continue;
            };
            if look_at_disk {
                match area.get(&kept.location, &kept.rel) {
                    None => {
                        tracing::warn!(key = %kept.rel, "pending upload dropped by request; the file shows what S3 holds");
                        area.release(&kept.data);
                        ws.drop_kept();
                        self.release_idle(&ws);
                        self.inodes.invalidate(ws.ino);
                        continue;
                    }
                    // A newer version is being kept: its record lands before its write
                    // state learns of it (`keep_pending`). Not a drop: it was taken for one,
                    // and the file showed S3's older version (found by tests/chaos.rs).
                    Some(r) if r.data != kept.data => continue,
                    Some(_) => {}
                }
            }
            // Offline changes to the tree go first: the upload may be inside a directory
            // the journal makes, or replace a file it deletes.
            // Offline, nothing is tried (the return online sends them all at once).
            if !(idle && due) || offline || self.journal_pending() {
                continue;
            }
            match self.retry_one(&ws).await {
                Ok(false) => {
                    s3_answers = true;
                    tracing::info!(key = %kept.rel, size = kept.size, "pending upload is in S3");
                    self.counters.pending_uploaded();
                }
                // Logged and counted by `keep_beside`.
                Ok(true) => s3_answers = true,
                Err(e) => {
                    let attempts = ws.backoff(RETRY_START, RETRY_MAX);
                    tracing::info!(key = %kept.rel, attempts, error = %e, "pending upload still failing");
                    if let Some(mut r) = area.get(&kept.location, &kept.rel) {
                        r.last_error = brief(&e.to_string());
                        area.update_error(&r);
                    }
                }
            }
            self.release_idle(&ws);
        }
        // Multipart uploads whose abort failed: tried again on the retry pace, and at once
        // when a kept upload just went through (S3 is back).
        if s3_answers || self.upload.abort_retry_due(RETRY_MAX) {
            self.retry_aborts().await;
        }
    }

    /// Aborts again the multipart uploads whose abort failed (S3 is back).
    pub(super) async fn retry_aborts(&self) {
        let unaborted = std::mem::take(&mut *self.upload.unaborted.lock().unwrap());
        for (rel, id) in unaborted {
            super::upload::abort(&self.upload, &rel, &id).await;
        }
    }

    /// [`Fs::retry_pending`] with every kept upload due now (tests; after S3 came back).
    pub async fn retry_pending_now(&self) {
        if let Some(area) = &self.pending {
            area.refresh_soon();
        }
        for ws in self.write_states() {
            ws.retry_now();
        }
        self.retry_pending().await;
    }

    /// Drops a write state nobody has open and nothing remains to upload.
    pub(super) fn release_idle(&self, ws: &Arc<WriteState>) {
        let mut writes = self.writes.lock().unwrap();
        if ws.is_idle_and_clean() && writes.get(&ws.ino).is_some_and(|w| Arc::ptr_eq(w, ws)) {
            writes.remove(&ws.ino);
            drop(writes);
            self.cache_written(ws);
        }
    }

    /// Uploads a kept state to its name, or beside it if S3 holds another version there.
    /// Returns whether it went beside (a conflict copy).
    async fn retry_one(&self, ws: &Arc<WriteState>) -> FsResult<bool> {
        Ok(self.flush_state_checked(ws).await?.is_some())
    }

    /// Another writer got to the object first (its condition failed): puts this version
    /// beside it as `NAME.conflict-DEVICE-TIME` (itself a conditional write, so no two
    /// devices ever take one name), and the file follows its data there: the open handles
    /// now write the conflict copy, and the name shows what the other writer stored.
    /// Called under `ws`'s `io` lock. Returns the conflict copy's key.
    pub(super) async fn keep_beside(
        &self,
        ws: &Arc<WriteState>,
        node: &super::inodes::NodeInfo,
        size: u64,
        meta: &Meta,
        held: Option<bytes::Bytes>,
    ) -> FsResult<String> {
        let now = SystemTime::now();
        let mut placed = None;
        for attempt in 0..CONFLICT_NAMES_TRIED {
            let rel = conflict_name(&node.rel, &self.opts.device_name, now, attempt);
            self.store.check_object(&rel)?;
            let put = whole::upload(
                &self.upload,
                ws.spool(),
                &rel,
                size,
                meta,
                held.clone(),
                &Expect::Absent,
            );
            match put.await {
                Ok(etag) => {
                    placed = Some((rel, etag));
                    break;
                }
                // That name is taken (or being taken): the next one.
                Err(StoreError::Changed | StoreError::Raced) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let Some((rel, etag)) = placed else {
            return Err(FsError::new(libc::EEXIST));
        };
        let original = self.inodes.name(node.ino).unwrap_or_default();
        let copy_name = rel.rsplit('/').next().unwrap_or(&rel).to_owned();
        self.inodes.move_aside(node.ino, &copy_name);
        ws.set_base_etag(etag.clone());
        if let Some(record) = ws.take_kept() {
            self.forget_kept(&record);
        }
        self.inodes.set_written(
            node.ino,
            Found::written(Kind::File, size, etag, meta.clone()),
        );
        self.readers_follow(node.ino);
        tracing::warn!(key = %node.rel, conflict = %rel, "another client changed the object since this version started from it: this version is kept beside it");
        self.counters.conflict(&node.rel, Some(&rel));
        // The kernel's entry for the name still points at this file: the name must be
        // looked up again, to show the other writer's version.
        self.tell_kernel(super::Invalidate::Entry(node.parent, original));
        Ok(rel)
    }

    /// Adopts the kept uploads an earlier mount of this prefix left and no running mount
    /// claims: each becomes a live write state again (shown, read, retried at once). Also
    /// called as the retries look at the area: a mount that was still ending when this one
    /// started lets its records go when it exits.
    pub(super) async fn adopt_pending(&self) {
        let Some(area) = self.pending.clone() else {
            return;
        };
        if self.opts.read_only {
            return;
        }
        let location = self.location();
        // A key this mount writes already is its own business (a newer version, or the
        // record of this very state).
        let writing: std::collections::HashSet<String> = self
            .write_states()
            .iter()
            .filter_map(|ws| self.inodes.get(ws.ino).map(|n| n.rel))
            .collect();
        for record in area.list() {
            if record.location != location || writing.contains(&record.rel) {
                continue;
            }
            match self.adopt(&area, record.clone()).await {
                Ok(true) => {
                    tracing::info!(key = %record.rel, size = record.size, since = record.since, "resuming a pending upload")
                }
                Ok(false) => {
                    tracing::debug!(key = %record.rel, "a pending upload another mount is sending")
                }
                Err(e) => {
                    tracing::error!(key = %record.rel, error = %e, "cannot resume a pending upload; it stays on disk")
                }
            }
        }
    }

    /// Adopts `record` if no one claims it; `false` if someone does.
    async fn adopt(
        &self,
        area: &crate::pending::PendingArea,
        record: PendingRecord,
    ) -> FsResult<bool> {
        // Nothing of a record reaches the inode table or the disk before it is checked: its
        // key a path under this prefix, its data a file of the area.
        if let Err(e) = record.check() {
            tracing::warn!(file = %area.dir().display(), error = %e, "unsound pending-upload record");
            return Err(FsError::new(libc::EINVAL));
        }
        self.store.check_object(&record.rel)?;
        let source = match area.claim(&record) {
            Ok(crate::pending::Claim::New(data)) => data,
            Ok(crate::pending::Claim::Held) => return Ok(false),
            Err(e) => {
                tracing::warn!(key = %record.rel, error = %e, "a pending upload's data cannot be opened");
                return Err(FsError::new(e.raw_os_error().unwrap_or(libc::EIO)));
            }
        };
        let mut parent = super::ROOT_INO;
        let mut parts: Vec<&str> = record.rel.split('/').collect();
        let name = parts.pop().unwrap_or_default().to_owned();
        for dir in parts {
            parent = match self.lookup_attr(parent, dir, false).await {
                Ok(a) if a.kind == Kind::Dir => a.ino,
                Ok(_) => return Err(FsError::new(libc::ENOTDIR)),
                // Not in S3 (or S3 not answering): the directory is implied by the file.
                Err(_) => {
                    self.inodes
                        .upsert(parent, dir, Found::dir_with(None), false)
                        .ino
                }
            };
        }
        let meta = Meta::from_user(&record.meta);
        let found = Found::written(
            Kind::File,
            record.size,
            record.base_etag.clone().unwrap_or_default(),
            meta.clone(),
        );
        let ino = self.inodes.upsert(parent, &name, found, false).ino;
        self.inodes.invalidate_listing(parent);
        let spool = Spool::copy_of(&self.opts.spool_dir, ino, source, record.size).await?;
        let ws = Arc::new(WriteState::adopted(
            self.upload.clone(),
            spool,
            ino,
            meta,
            record,
        ));
        self.writes.lock().unwrap().insert(ino, ws);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_carry_the_device_and_the_utc_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_707_601);
        assert_eq!(
            conflict_name("a/b.txt", "laptop", t, 0),
            "a/b.txt.conflict-laptop-20261126T154001Z"
        );
        assert_eq!(
            conflict_name("a/b.txt", "laptop", t, 1),
            "a/b.txt.conflict-laptop-20261126T154001Z-2"
        );
        assert_eq!(
            conflict_name(
                "x",
                "Kim's Mac/2",
                SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400),
                0
            ),
            "x.conflict-Kim-s-Mac-2-20000229T000000Z"
        );
        assert_eq!(device_label("../.."), "device");
        // A long name is shortened (at a character boundary) so the whole fits in 255 bytes.
        let long = format!("d/{}", "é".repeat(127));
        let c = conflict_name(&long, "pc", t, 3);
        let name = c.strip_prefix("d/").unwrap();
        assert!(name.len() <= 255, "{}", name.len());
        assert!(name.ends_with(".conflict-pc-20261126T154001Z-4"));
        assert!(name.starts_with("éé"));
    }

    #[test]
    fn the_default_free_space_guard_is_5_percent_up_to_a_gibibyte() {
        assert_eq!(default_min_free(10 << 30), 512 << 20);
        assert_eq!(default_min_free(100 << 30), 1 << 30);
    }
}
