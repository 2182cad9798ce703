//! Getting a file's contents into S3: one entry point, [`upload`], over two paths.
//!
//! - **Streaming** ([`streaming::Stream`], the fast path for `cp`): a file that starts
//!   empty (created, or opened with `O_TRUNC`) and is written front to back feeds a
//!   multipart upload while it is written. Once a part's worth of bytes has arrived the
//!   upload is started, and each full part is sent in the background while the writer goes
//!   on, so at `close` only the last part and the completion remain.
//! - **Whole file** ([`whole::upload_spool`]): anything else is uploaded from the spool at
//!   flush: one PutObject below the part size, else a multipart upload with a few parts in
//!   flight.
//!
//! The spool always receives every byte, so the stream is purely an optimization: a write
//! anywhere but the end, a truncate, a rename, or a failed part abandons it (its upload is
//! aborted) and [`upload`] falls back to the whole-file path. Metadata set after the stream
//! started (`cp -p`'s utimens/chmod) is applied after completion by a CopyObject onto
//! itself.
//!
//! Memory is bounded mount-wide by [`UploadCtx::budget`] (parts buffered for upload,
//! streamed or flushed): a writer over budget waits for a permit, it never fails.

pub mod progress;
pub mod streaming;
pub mod whole;

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Semaphore;

use super::meta::Meta;
use super::spool::Spool;
use crate::store::{Expect, ObjectStore, StoreError, StoreResult};
pub use streaming::Stream;

/// What every upload of one mount shares.
pub struct UploadCtx {
    pub store: Arc<dyn ObjectStore>,
    /// Uploads of this size or more are multipart, in parts of this size.
    pub part_size: u64,
    /// Parts of one upload in flight at once.
    pub parts_in_flight: usize,
    /// Parts buffered for upload (streamed or flushed), mount-wide.
    pub budget: Arc<Semaphore>,
    /// Uploads in flight and their progress (for status).
    pub progress: Arc<progress::Uploads>,
    /// Multipart uploads whose abort failed (S3 was away): (key, upload id), aborted
    /// again with the next retry of kept uploads, so no parts are left to be paid for.
    pub unaborted: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// When aborting those was last tried.
    pub abort_tried: std::sync::Mutex<Option<std::time::Instant>>,
    /// Where multipart uploads this mount starts are noted, so that a later mount can tell
    /// them dead (`s3://bucket/prefix/` and the journal), if anywhere.
    pub journal: Option<(String, Arc<crate::upload_journal::UploadJournal>)>,
}

/// Puts the first `size` bytes of `spool` at `rel` with `meta`, only if `rel` holds what
/// `expect` says: by finishing `stream` if it carried exactly that, else by one PUT of
/// `held` if it is those bytes (a small file's contents, still in memory), else from the
/// spool. Returns the new etag and the metadata stored. A failed condition
/// ([`StoreError::Changed`], or `NotFound` for a version that is gone) is returned at once:
/// uploading again would not change it.
///
/// Like s3fs, every upload stores an mtime: `meta`'s if one was set (utimens), else the
/// time of the last write (`modified`) — or, for a streamed upload, the time its first
/// part left, so that a large `cp` costs no CopyObject to fix the time afterwards.
impl UploadCtx {
    /// A multipart upload of `rel` began (see [`UploadCtx::journal`]).
    pub fn upload_started(&self, rel: &str, id: &str) {
        if let Some((location, journal)) = &self.journal {
            journal.started(location, rel, id);
        }
    }

    /// A multipart upload was completed or aborted.
    pub fn upload_ended(&self, id: &str) {
        if let Some((_, journal)) = &self.journal {
            journal.ended(id);
        }
    }

    /// The upload's abort could not be sent: any later cleanup aborts it.
    pub fn upload_abandoned(&self, rel: &str, id: &str) {
        if let Some((location, journal)) = &self.journal {
            journal.abandoned(location, rel, id);
        }
    }

    /// Whether uploads whose abort failed are to be tried again now (at most every `every`).
    pub fn abort_retry_due(&self, every: std::time::Duration) -> bool {
        if self.unaborted.lock().unwrap().is_empty() {
            return false;
        }
        let mut tried = self.abort_tried.lock().unwrap();
        let due = tried.is_none_or(|t| t.elapsed() >= every);
        if due {
            *tried = Some(std::time::Instant::now());
        }
        due
    }
}

/// Aborts a multipart upload; if S3 cannot be reached, remembers it in `unaborted`.
pub async fn abort(ctx: &UploadCtx, rel: &str, id: &str) {
    let (store, unaborted) = (&*ctx.store, &ctx.unaborted);
    match store.abort_multipart(rel, id).await {
        // Gone already (completed, or aborted by S3's lifecycle): nothing to pay for.
        Ok(()) | Err(StoreError::NotFound) => ctx.upload_ended(id),
        Err(e) => {
            tracing::warn!(key = %rel, error = %e, "could not abort a multipart upload; trying again later");
            // Also for a later mount, should this one end first.
            ctx.upload_abandoned(rel, id);
            unaborted
                .lock()
                .unwrap()
                .push((rel.to_owned(), id.to_owned()));
        }
    }
}

/// Whether an upload failed on its condition: the key no longer holds the version expected.
pub fn lost_condition(e: &StoreError) -> bool {
    matches!(e, StoreError::Changed | StoreError::NotFound)
}

#[allow(clippy::too_many_arguments)]
pub async fn upload(
    ctx: &Arc<UploadCtx>,
    spool: &Spool,
    rel: &str,
    size: u64,
    (meta, modified): (&Meta, SystemTime),
    stream: Option<Stream>,
    held: Option<bytes::Bytes>,
    expect: &Expect,
) -> StoreResult<Uploaded> {
    let mut meta = meta.clone();
    if let Some(s) = stream {
        if s.covers(rel, size) {
            let started_with = s.meta().clone();
            if meta.mtime.is_none() {
                meta.mtime = started_with.mtime;
            }
            match s.finish(ctx, expect).await {
                Ok(etag) if started_with == meta => return Ok(Uploaded::whole(etag, meta)),
                // Metadata set after the upload started: apply it server-side, to the
                // version just completed only.
                Ok(etag) => {
                    let fixed = ctx
                        .store
                        .copy_if(
                            rel,
                            Some(&etag),
                            rel,
                            Some(&meta.to_user()),
                            &Expect::Version(etag.clone()),
                        )
                        .await;
                    return match fixed {
                        Ok(etag) => Ok(Uploaded::whole(etag, meta)),
                        // Another writer replaced it since: the data did reach S3; the
                        // metadata fix is theirs to lose, not a reason to upload again.
                        Err(e) if lost_condition(&e) => {
                            tracing::warn!(key = %rel, "replaced by another client right after its upload; its metadata was not applied");
                            Ok(Uploaded::whole(etag, started_with))
                        }
                        // The data is in S3 as version `etag`; the metadata is still to go.
                        Err(e) => Ok(Uploaded {
                            etag,
                            meta: started_with,
                            meta_error: Some(e),
                        }),
                    };
                }
                Err(e) if lost_condition(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(key = %rel, error = %e, "streamed upload failed; uploading from the spool");
                }
            }
        } else {
            s.abandon(ctx);
        }
    }
    if meta.mtime.is_none() {
        meta.mtime = Some(modified);
    }
    let etag = whole::upload(ctx, spool, rel, size, &meta, held, expect).await?;
    Ok(Uploaded::whole(etag, meta))
}

/// What an upload stored: the new version's etag and the metadata it carries, and, when
/// the data went up but the metadata set meanwhile could not follow it, why.
pub struct Uploaded {
    pub etag: String,
    pub meta: Meta,
    pub meta_error: Option<StoreError>,
}

impl Uploaded {
    fn whole(etag: String, meta: Meta) -> Self {
        Uploaded {
            etag,
            meta,
            meta_error: None,
        }
    }
}
