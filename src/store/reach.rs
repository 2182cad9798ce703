//! Whether S3 can be reached: the mount's online/offline state, and the [`Reach`] wrapper
//! that keeps it.
//!
//! A request that gets no answer at all (refused, reset, no route, DNS, timed out, after the
//! SDK's own retries) makes the mount **offline**; an answer of any kind, a refusal
//! included, is not. While offline, requests are not sent: they fail at once with
//! [`StoreError::Unreachable`], so a lookup or a close does not wait for a dead network at
//! every call, and the filesystem answers from what this machine keeps. A probe (one
//! one-key LIST) is sent every [`PROBE_EVERY`] instead; the first that is answered makes the
//! mount online again, which the filesystem hears ([`ReachState::generation`]) and uses to
//! send what it queued.
//!
//! Verdicts are ordered by when their requests were **sent**: an answer to a request sent
//! after the probe that found S3 away brings the mount back, an older one does not; a probe
//! that got no answer takes the mount offline only if no request sent after it was answered
//! (a request in flight across an outage may report long after S3 is back).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Expect, ListPage, ObjectInfo, ObjectStore, PartDone, PieceSink, Scope, StoreError, StoreResult,
    UploadInfo, UserMeta,
};

/// How often an offline mount asks whether S3 answers again: S3's return is noticed within
/// this (plus one request's time).
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// What is known of S3's reachability, shared by the store wrapper and whoever reports it.
#[derive(Debug)]
pub struct ReachState {
    offline: AtomicBool,
    /// When the mount went offline, and why (the first unanswered request).
    since: Mutex<Option<(SystemTime, String)>>,
    last_probe: Mutex<Option<Instant>>,
    /// Grows at each return online.
    generation: AtomicU64,
    /// Times the mount went offline since it started.
    outages: AtomicU64,
    /// When the latest requests that decided something were sent.
    heard: Mutex<Heard>,
}

/// Send times of the latest request S3 answered and of the latest probe it did not.
#[derive(Debug, Default)]
struct Heard {
    answered: Option<Instant>,
    unanswered: Option<Instant>,
}

impl Default for ReachState {
    fn default() -> Self {
        ReachState {
            offline: AtomicBool::new(false),
            since: Mutex::new(None),
            last_probe: Mutex::new(None),
            generation: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            heard: Mutex::default(),
        }
    }
}

/// The state for `status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connectivity {
    pub online: bool,
    /// Offline: since when, and the failure that said so.
    pub offline_since: Option<(SystemTime, String)>,
    /// Times the mount went offline since it started.
    pub outages: u64,
}

impl Default for Connectivity {
    fn default() -> Self {
        Connectivity {
            online: true,
            offline_since: None,
            outages: 0,
        }
    }
}

impl ReachState {
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// Grows each time S3 answers again after an outage.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn connectivity(&self) -> Connectivity {
        Connectivity {
            online: !self.is_offline(),
            offline_since: self.since.lock().unwrap().clone(),
            outages: self.outages.load(Ordering::Relaxed),
        }
    }

    /// What the outcome of a request (or a probe: no answer takes the mount offline only
    /// from a probe) sent at `sent` says about reachability.
    fn observe<T>(&self, sent: Instant, result: &StoreResult<T>) {
        match result {
            Err(e) if e.is_unreachable() => self.unanswered(sent, e),
            // Any answer, a refusal included: S3 is there (unless a later probe says no).
            _ => self.answered(sent),
        }
    }

    fn unanswered(&self, sent: Instant, cause: &StoreError) {
        let mut heard = self.heard.lock().unwrap();
        heard.unanswered = heard.unanswered.max(Some(sent));
        // S3 answered a request sent after this one: it is there.
        if heard.answered.is_none_or(|a| a <= sent) {
            self.went_offline(cause);
        }
    }

    fn answered(&self, sent: Instant) {
        let mut heard = self.heard.lock().unwrap();
        heard.answered = heard.answered.max(Some(sent));
        if heard.unanswered.is_none_or(|u| u <= sent) {
            self.came_back();
        }
    }

    /// The mount is offline from now on (if it was not already).
    fn went_offline(&self, cause: &StoreError) {
        if self.offline.swap(true, Ordering::AcqRel) {
            return;
        }
        self.outages.fetch_add(1, Ordering::Relaxed);
        *self.since.lock().unwrap() = Some((SystemTime::now(), cause.to_string()));
        *self.last_probe.lock().unwrap() = Some(Instant::now());
        tracing::warn!(error = %cause, "S3 does not answer: offline. Reads come from the disk cache, changes are kept on disk and sent when S3 answers again");
    }

    fn came_back(&self) {
        if !self.offline.swap(false, Ordering::AcqRel) {
            return;
        }
        let since = self.since.lock().unwrap().take();
        let offline_for = since
            .and_then(|(t, _)| t.elapsed().ok())
            .map_or(0, |d| d.as_secs());
        self.generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(offline_for_secs = offline_for, "S3 answers again: online");
    }

    /// Whether a probe is due (offline, and the last one is older than [`PROBE_EVERY`]);
    /// if so, it counts as sent now.
    fn probe_due(&self) -> bool {
        if !self.is_offline() {
            return false;
        }
        let mut last = self.last_probe.lock().unwrap();
        if last.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Told of each key a request of this store changed (a write or a delete that succeeded).
pub type WrittenHook = Box<dyn Fn(&str) + Send + Sync>;

/// An [`ObjectStore`] that keeps [`ReachState`] and, while offline, sends nothing.
pub struct Reach {
    inner: Arc<dyn ObjectStore>,
    state: Arc<ReachState>,
    written: std::sync::OnceLock<WrittenHook>,
    /// One confirmation of an outage at a time (many requests fail together).
    confirming: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach")
            .field("inner", &self.inner)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Reach {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Reach {
            inner,
            state: Arc::new(ReachState::default()),
            written: Default::default(),
            confirming: Default::default(),
        }
    }

    /// From now on `hook` hears of every key this store changes.
    pub fn on_written(&self, hook: WrittenHook) {
        let _ = self.written.set(hook);
    }

    async fn changed<T>(&self, sent: Instant, rel: &str, result: StoreResult<T>) -> StoreResult<T> {
        // Also when it failed: a write whose answer was lost (a timeout) may have landed.
        if let Some(hook) = self.written.get() {
            hook(rel);
        }
        self.seen(sent, result).await
    }

    pub fn state(&self) -> &Arc<ReachState> {
        &self.state
    }

    /// While offline, one LIST of one key every [`PROBE_EVERY`]; true once S3 answers.
    pub async fn probe_if_due(&self) -> bool {
        if !self.state.probe_due() {
            return !self.state.is_offline();
        }
        self.probe_answered().await
    }

    /// Asks S3 now, whatever the schedule and online or not (tests; a user's `status
    /// --probe`; after a sleep): an answer also outranks any older request still to report
    /// no answer.
    pub async fn probe_now(&self) -> bool {
        *self.state.last_probe.lock().unwrap() = Some(Instant::now());
        self.probe_answered().await
    }

    async fn probe_answered(&self) -> bool {
        if let Err(e) = ObjectStore::probe(self).await {
            tracing::debug!(error = %e, "S3 does not answer the probe");
        }
        !self.state.is_offline()
    }

    /// Refuses a request while offline; else returns when it is sent.
    fn refuse(&self) -> StoreResult<Instant> {
        if self.state.is_offline() {
            Err(StoreError::Unreachable(
                "offline (not sent; S3 is probed every 5 s)".into(),
            ))
        } else {
            Ok(Instant::now())
        }
    }

    /// What a request's outcome says. A request with no answer makes the mount offline only
    /// once a probe gets none either: one request can fail to be sent while S3 answers
    /// others (a connection reset, a 503 that closed the connection before a large body was
    /// read), and that is no outage.
    async fn seen<T>(&self, sent: Instant, result: StoreResult<T>) -> StoreResult<T> {
        match &result {
            Err(e) if e.is_unreachable() => {
                let _one = self.confirming.lock().await;
                if !self.state.is_offline() {
                    let probed = Instant::now();
                    match self.inner.probe().await {
                        // Offline, for the request's reason.
                        Err(p) if p.is_unreachable() => self.state.unanswered(probed, e),
                        answer => {
                            self.state.observe(probed, &answer);
                            tracing::debug!(error = %e, "a request got no answer, but S3 answers: not offline")
                        }
                    }
                }
            }
            other => self.state.observe(sent, other),
        }
        result
    }
}

#[async_trait]
impl ObjectStore for Reach {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    fn scope(&self) -> &Scope {
        self.inner.scope()
    }

    async fn head(&self, rel: &str) -> StoreResult<Option<ObjectInfo>> {
        let sent = self.refuse()?;
        self.seen(sent, self.inner.head(rel).await).await
    }

    async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        let sent = self.refuse()?;
        self.seen(
            sent,
            self.inner.list_page(dir_rel, continuation, max_keys).await,
        )
        .await
    }

    async fn list_recursive(&self, dir_rel: &str) -> StoreResult<Vec<ObjectInfo>> {
        let sent = self.refuse()?;
        self.seen(sent, self.inner.list_recursive(dir_rel).await)
            .await
    }

    async fn get_range(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Bytes> {
        let sent = self.refuse()?;
        self.seen(
            sent,
            self.inner.get_range(rel, if_match_etag, start, len).await,
        )
        .await
    }

    async fn get_small(&self, rel: &str, max: u64) -> StoreResult<Option<Bytes>> {
        let sent = self.refuse()?;
        self.seen(sent, self.inner.get_small(rel, max).await).await
    }

    async fn get_range_pieces(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
        piece: u64,
        on_piece: &PieceSink<'_>,
    ) -> StoreResult<()> {
        let sent = self.refuse()?;
        let got = self
            .inner
            .get_range_pieces(rel, if_match_etag, start, len, piece, on_piece)
            .await;
        self.seen(sent, got).await
    }

    async fn put_if(
        &self,
        rel: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<String> {
        let sent = self.refuse()?;
        self.changed(sent, rel, self.inner.put_if(rel, body, meta, expect).await)
            .await
    }

    async fn create_multipart(&self, rel: &str, meta: &UserMeta) -> StoreResult<String> {
        let sent = self.refuse()?;
        self.seen(sent, self.inner.create_multipart(rel, meta).await)
            .await
    }

    async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<PartDone> {
        let sent = self.refuse()?;
        self.seen(
            sent,
            self.inner.upload_part(rel, upload_id, number, body).await,
        )
        .await
    }

    async fn complete_multipart_if(
        &self,
        rel: &str,
        upload_id: &str,
        parts: Vec<PartDone>,
        expect: &Expect,
    ) -> StoreResult<String> {
        let sent = self.refuse()?;
        let done = self
            .inner
            .complete_multipart_if(rel, upload_id, parts, expect)
            .await;
        self.changed(sent, rel, done).await
    }

    async fn abort_multipart(&self, rel: &str, upload_id: &str) -> StoreResult<()> {
        let sent = self.refuse()?;
        self.seen(sent, self.inner.abort_multipart(rel, upload_id).await)
            .await
    }

    async fn list_uploads(&self, dir_rel: &str) -> StoreResult<Vec<UploadInfo>> {
        let sent = self.refuse()?;
        self.seen(sent, self.inner.list_uploads(dir_rel).await)
            .await
    }

    async fn delete_if(&self, rel: &str, expect: &Expect) -> StoreResult<()> {
        let sent = self.refuse()?;
        self.changed(sent, rel, self.inner.delete_if(rel, expect).await)
            .await
    }

    async fn copy_if(
        &self,
        src: &str,
        src_etag: Option<&str>,
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &Expect,
    ) -> StoreResult<String> {
        let sent = self.refuse()?;
        let copied = self.inner.copy_if(src, src_etag, dst, meta, expect).await;
        self.changed(sent, dst, copied).await
    }

    async fn check_access(&self) -> StoreResult<()> {
        let sent = self.refuse()?;
        self.seen(sent, self.inner.check_access().await).await
    }

    async fn probe(&self) -> StoreResult<()> {
        let sent = Instant::now();
        let answer = self.inner.probe().await;
        self.state.observe(sent, &answer);
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fault, MemoryStore, RequestKind};

    #[tokio::test]
    async fn no_answer_makes_it_offline_and_a_probe_brings_it_back() {
        let memory = Arc::new(MemoryStore::new("b", "p"));
        let reach = Reach::new(memory.clone());
        reach
            .put("a", Bytes::from_static(b"x"), &UserMeta::new())
            .await
            .unwrap();
        assert!(!reach.state().is_offline());
        // A refusal is an answer: still online.
        memory.fail_nth(None, 0, Fault::AccessDenied);
        assert!(reach.head("a").await.is_err());
        assert!(!reach.state().is_offline());
        // One request with no answer while S3 answers others (a reset, a 503 that closed
        // the connection early): the error stands, but the mount is not offline.
        memory.fail_nth(None, 0, Fault::Unreachable);
        assert!(reach.head("a").await.unwrap_err().is_unreachable());
        assert!(!reach.state().is_offline(), "a probe got an answer");
        memory.fail_always(None, Fault::Unreachable);
        assert!(reach.head("a").await.unwrap_err().is_unreachable());
        assert!(reach.state().is_offline());
        let c = reach.state().connectivity();
        assert!(!c.online && c.offline_since.is_some() && c.outages == 1);
        // Offline, nothing is sent.
        memory.reset_counts();
        assert!(reach.head("a").await.unwrap_err().is_unreachable());
        assert_eq!(memory.counts().total(), 0);
        // The probe is sent on its schedule; while S3 is down it keeps the mount offline.
        assert!(!reach.probe_now().await);
        assert_eq!(memory.counts().get(RequestKind::List), 1);
        assert!(!reach.probe_if_due().await, "not due yet");
        assert_eq!(memory.counts().get(RequestKind::List), 1);
        memory.clear_faults();
        let generation = reach.state().generation();
        assert!(reach.probe_now().await);
        assert!(!reach.state().is_offline());
        assert_eq!(reach.state().generation(), generation + 1);
        assert!(reach.head("a").await.unwrap().is_some());
    }

    /// A request sent while S3 was away reports no answer (and its confirming probe none
    /// either) after a later probe got one: the later answer stands, the mount stays online.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_outranks_an_older_request_s_late_report_of_none() {
        let memory = Arc::new(MemoryStore::new("b", "p"));
        let reach = Arc::new(Reach::new(memory.clone()));
        memory.fail_always(None, Fault::Unreachable);
        memory.set_latency(Duration::from_millis(300));
        let r = reach.clone();
        // Fails at 300 ms; its confirming probe, sent then, reports none at 600 ms.
        let late = tokio::spawn(async move { r.head("a").await });
        tokio::time::sleep(Duration::from_millis(450)).await;
        memory.clear_faults();
        memory.set_latency(Duration::ZERO);
        assert!(reach.probe_now().await, "S3 answers again");
        assert!(late.await.unwrap().unwrap_err().is_unreachable());
        assert_eq!(
            memory.counts().get(RequestKind::List),
            2,
            "both probes sent"
        );
        assert!(
            !reach.state().is_offline(),
            "the older probe's silence does not outrank the answer"
        );
    }
}
