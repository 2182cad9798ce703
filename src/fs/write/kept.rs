//! The write state's side of kept uploads (`fs/pending.rs`): what a failed upload keeps
//! (the record, the version copied, the etag it started from) and when it is tried again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::meta::Meta;
use super::super::spool::Spool;
use super::super::upload::UploadCtx;
use super::WriteState;
use crate::pending::PendingRecord;

/// When a kept upload is tried again.
#[derive(Debug, Default, Clone, Copy)]
pub(in crate::fs) struct Retry {
    pub attempts: u32,
    pub next: Option<Instant>,
}

/// What a kept or conflicting upload carries: the contents' size and metadata as an upload
/// would store them now.
pub(in crate::fs) struct Snapshot {
    pub meta: Meta,
    pub size: u64,
    pub base_etag: Option<String>,
    pub version: u64,
}

/// Kept uploads (see `pending.rs`).
impl WriteState {
    /// A live state for a kept upload an earlier mount left: contents in `spool`.
    pub(in crate::fs) fn adopted(
        ctx: Arc<UploadCtx>,
        spool: Spool,
        ino: u64,
        meta: Meta,
        record: PendingRecord,
    ) -> Self {
        let ws = WriteState::new(ctx, spool, ino, (meta, record.base_etag.clone()), None);
        {
            let mut i = ws.inner.lock().unwrap();
            i.loaded = true;
            i.dirty = true;
            i.size = record.size;
            i.kept = Some((record, 0));
        }
        ws
    }

    pub(in crate::fs) fn snapshot(&self) -> Snapshot {
        let i = self.inner.lock().unwrap();
        let mut meta = i.meta.clone();
        if meta.mtime.is_none() {
            meta.mtime = Some(i.modified);
        }
        Snapshot {
            meta,
            size: i.size,
            base_etag: i.base_etag.clone(),
            version: i.version,
        }
    }

    /// Something to upload that the pending area does not hold yet.
    pub(in crate::fs) fn needs_keeping(&self) -> bool {
        let i = self.inner.lock().unwrap();
        i.upload_pending() && i.kept.as_ref().is_none_or(|(_, v)| *v != i.version)
    }

    pub(in crate::fs) fn spool(&self) -> &Spool {
        &self.spool
    }

    pub(in crate::fs) fn spool_file(&self) -> std::io::Result<std::fs::File> {
        self.spool.file().try_clone()
    }

    pub(in crate::fs) fn base_etag(&self) -> Option<String> {
        self.inner.lock().unwrap().base_etag.clone()
    }

    /// S3 holds this mount's version of the file under a new etag (a CopyObject for a
    /// chmod or a rename): later uploads compare with that one.
    pub(in crate::fs) fn set_base_etag(&self, etag: String) {
        self.inner.lock().unwrap().base_etag = Some(etag).filter(|e| !e.is_empty());
    }

    /// The version the next upload replaces: `None` for none (a new name).
    pub(in crate::fs) fn set_base_to(&self, etag: Option<String>) {
        self.inner.lock().unwrap().base_etag = etag.filter(|e| !e.is_empty());
    }

    pub(in crate::fs) fn set_kept(&self, record: PendingRecord, version: u64) {
        let mut i = self.inner.lock().unwrap();
        if i.retry.next.is_none() {
            i.retry.next = Some(Instant::now() + Duration::from_secs(1));
        }
        i.kept = Some((record, version));
    }

    pub(in crate::fs) fn kept(&self) -> Option<PendingRecord> {
        self.inner
            .lock()
            .unwrap()
            .kept
            .as_ref()
            .map(|(r, _)| r.clone())
    }

    pub(in crate::fs) fn kept_size(&self) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .kept
            .as_ref()
            .map_or(0, |(r, _)| r.size)
    }

    /// The kept record no longer says what the state is (its file was moved): the next
    /// `keep_pending` writes it again.
    pub(in crate::fs) fn kept_is_stale(&self) {
        self.inner.lock().unwrap().version += 1;
    }

    /// Lets go of the kept record, whose contents are in S3 now (the state stays as it is).
    pub(in crate::fs) fn take_kept(&self) -> Option<PendingRecord> {
        let mut i = self.inner.lock().unwrap();
        i.retry = Retry::default();
        i.kept.take().map(|(r, _)| r)
    }

    /// Lets go of the kept record (and of the contents: S3's version shows again).
    pub(in crate::fs) fn drop_kept(&self) -> Option<PendingRecord> {
        let mut i = self.inner.lock().unwrap();
        i.dirty = false;
        i.kept.take().map(|(r, _)| r)
    }

    /// (the kept record, nobody has the file open, a retry is due).
    pub(in crate::fs) fn retry_status(&self) -> (Option<PendingRecord>, bool, bool) {
        let i = self.inner.lock().unwrap();
        let due = i.retry.next.is_none_or(|t| t <= Instant::now());
        (i.kept.as_ref().map(|(r, _)| r.clone()), i.handles == 0, due)
    }

    /// `Retry` after a failed attempt: the next one later; returns the attempts so far.
    pub(in crate::fs) fn backoff(&self, start: Duration, max: Duration) -> u32 {
        let mut i = self.inner.lock().unwrap();
        let attempts = i.retry.attempts.saturating_add(1);
        let wait = start.saturating_mul(1 << attempts.min(16)).min(max);
        i.retry = Retry {
            attempts,
            next: Some(Instant::now() + wait),
        };
        attempts
    }

    pub(in crate::fs) fn has_handles(&self) -> bool {
        self.inner.lock().unwrap().handles > 0
    }

    pub(in crate::fs) fn retry_now(&self) {
        self.inner.lock().unwrap().retry.next = None;
    }

    pub(in crate::fs) fn is_idle_and_clean(&self) -> bool {
        let i = self.inner.lock().unwrap();
        i.handles == 0 && !i.upload_pending()
    }
}
