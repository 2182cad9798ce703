//! Uploads that failed are kept, shown and retried: nothing accepted is dropped.
//!
//! When the upload at `flush`/`fsync`/`close` fails, the call still reports the error, but
//! the file's contents are copied into the profile's pending area (`crate::pending`,
//! fsync'd) and its write state stays live: the mount keeps showing the file as written,
//! reads see it, and [`Fs::retry_pending`] (every second, from the mount) uploads it with
//! backoff once S3 and the credentials are back. A new mount of the profile adopts what an
//! earlier one left ([`Fs::adopt_pending`]).
//!
//! A kept upload is never written over someone else's: if the object's etag is no longer
//! the one the writer started from (or a new file's name was taken meanwhile), the data goes
//! beside it as `NAME.conflict-<UTC timestamp>`.
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

const RETRY_START: Duration = Duration::from_secs(1);
/// At most this long between tries: once S3 is back, a kept upload leaves within it.
const RETRY_MAX: Duration = Duration::from_secs(15);

/// `NAME.conflict-YYYYMMDDTHHMMSSZ` for `rel` at `t`.
pub fn conflict_name(rel: &str, t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{rel}.conflict-{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
fn available_bytes(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is NUL-terminated; `st` is written by the call before it is read.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// The free space the pending area's filesystem keeps by default: 5% of it, at most 1 GiB.
fn default_min_free(total: u64) -> u64 {
    (total / 20).min(1 << 30)
}

impl Fs {
    /// `s3://bucket/prefix/`: whose records are this mount's.
    fn location(&self) -> String {
        format!(
            "s3://{}/{}",
            self.store.bucket(),
            self.store.scope().prefix()
        )
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
        if let Some((free, total)) = available_bytes(area.dir()) {
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
        area.refresh_used();
        let mut s3_answers = false;
        for ws in self.write_states() {
            let (kept, idle, due) = ws.retry_status();
            // Other states are the business of their handles (`detach_write`).
            let Some(kept) = kept else {
                continue;
            };
            if area
                .get(&kept.location, &kept.rel)
                .is_none_or(|r| r.data != kept.data)
            {
                tracing::warn!(key = %kept.rel, "pending upload dropped by request; the file shows what S3 holds");
                ws.drop_kept();
                self.release_idle(&ws);
                self.inodes.invalidate(ws.ino);
                continue;
            }
            if !(idle && due) {
                continue;
            }
            match self.retry_one(&ws).await {
                Ok(false) => {
                    s3_answers = true;
                    tracing::info!(key = %kept.rel, size = kept.size, "pending upload is in S3");
                    self.counters.pending_uploaded();
                }
                // Logged and counted by `conflict_check`.
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
            let unaborted = std::mem::take(&mut *self.upload.unaborted.lock().unwrap());
            for (rel, id) in unaborted {
                super::upload::abort(&*self.store, &self.upload.unaborted, &rel, &id).await;
            }
        }
    }

    /// [`Fs::retry_pending`] with every kept upload due now (tests; after S3 came back).
    pub async fn retry_pending_now(&self) {
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
        }
    }

    /// Uploads a kept state to its name, or beside it if S3 holds something else there.
    /// Returns whether it went beside (a conflict copy).
    async fn retry_one(&self, ws: &Arc<WriteState>) -> FsResult<bool> {
        Ok(self.flush_state_checked(ws).await?.is_some())
    }

    /// For a kept upload about to be uploaded at `rel` (under its `io` lock): if S3 no
    /// longer holds the version the writer started from, uploads the data beside it as
    /// `NAME.conflict-…`, lets the kept state go, and returns that name.
    pub(super) async fn conflict_check(
        &self,
        ws: &Arc<WriteState>,
        rel: &str,
        size: u64,
    ) -> FsResult<Option<String>> {
        let current = self.store.head(rel).await?.map(|o| o.etag);
        if current == ws.base_etag() {
            return Ok(None);
        }
        let name = conflict_name(rel, SystemTime::now());
        let Snapshot { meta, .. } = ws.snapshot();
        whole::upload_spool(&self.upload, ws.spool(), &name, size, &meta).await?;
        tracing::warn!(key = %rel, conflict = %name, "the object changed in S3 while the upload was pending: kept beside it");
        self.counters.conflict(&name);
        if let Some(record) = ws.drop_kept() {
            self.forget_kept(&record);
        }
        // The name shows what S3 holds; the conflict copy shows up beside it.
        self.inodes.invalidate(ws.ino);
        if let Some(parent) = self.inodes.get(ws.ino).map(|n| n.parent) {
            self.inodes.invalidate_listing(parent);
        }
        Ok(Some(name))
    }

    /// Adopts the kept uploads an earlier mount of this prefix left: each becomes a live
    /// write state again (shown, read, retried at once).
    pub(super) async fn adopt_pending(&self) {
        let Some(area) = self.pending.clone() else {
            return;
        };
        let location = self.location();
        for record in area.list() {
            if record.location != location || self.opts.read_only {
                continue;
            }
            match self.adopt(&area, record.clone()).await {
                Ok(()) => {
                    tracing::info!(key = %record.rel, size = record.size, since = record.since, "resuming a pending upload")
                }
                Err(e) => {
                    tracing::error!(key = %record.rel, error = %e, "cannot resume a pending upload; it stays on disk")
                }
            }
        }
    }

    async fn adopt(
        &self,
        area: &crate::pending::PendingArea,
        record: PendingRecord,
    ) -> FsResult<()> {
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
        let spool = Spool::copy_of(
            &self.opts.spool_dir,
            ino,
            &area.data_path(&record),
            record.size,
        )
        .await?;
        let ws = Arc::new(WriteState::adopted(
            self.upload.clone(),
            spool,
            ino,
            meta,
            record,
        ));
        self.writes.lock().unwrap().insert(ino, ws);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_carry_the_utc_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_707_601);
        assert_eq!(
            conflict_name("a/b.txt", t),
            "a/b.txt.conflict-20261126T154001Z"
        );
        assert_eq!(
            conflict_name(
                "x",
                SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)
            ),
            "x.conflict-20000229T000000Z"
        );
    }

    #[test]
    fn the_default_free_space_guard_is_5_percent_up_to_a_gibibyte() {
        assert_eq!(default_min_free(10 << 30), 512 << 20);
        assert_eq!(default_min_free(100 << 30), 1 << 30);
    }
}
