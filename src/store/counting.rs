//! [`CountingStore`]: an [`ObjectStore`] around another that counts requests and errors by
//! kind (in total and over the last minute) and remembers the last error, for `cognifs
//! status` and `/metrics`. It changes nothing about the requests themselves.
//!
//! One call is one count: `list_recursive`, which pages through ListObjectsV2 inside the
//! inner store, counts as one `list`.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Expect, ListPage, ObjectInfo, ObjectStore, PartDone, PieceSink, RequestKind, Scope, StoreError,
    StoreResult, UploadInfo, UserMeta,
};
use crate::metrics::Window;
use crate::metrics::latency::{Histogram, HistogramSnapshot};

#[derive(Default)]
struct Series {
    total: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    recent: Window,
    recent_errors: Window,
    /// From the call to its answer, retries inside the SDK included.
    latency: Histogram,
}

/// Counts of one kind of request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCount {
    pub total: u64,
    pub errors: u64,
    pub last_minute: u64,
    pub errors_last_minute: u64,
}

/// The most recent failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub at: SystemTime,
    /// `KIND PATH: ERROR`, the path relative to the mount's prefix.
    pub message: String,
}

/// What a [`CountingStore`] counts; shared with whoever reports it.
#[derive(Default)]
pub struct RequestStats {
    series: [Series; RequestKind::ALL.len()],
    last_error: Mutex<Option<LastError>>,
}

impl RequestStats {
    pub fn record<T>(&self, kind: RequestKind, rel: &str, result: &StoreResult<T>) {
        self.record_timed(kind, rel, None, result)
    }

    /// [`RequestStats::record`], with the time the request took.
    pub fn record_timed<T>(
        &self,
        kind: RequestKind,
        rel: &str,
        took: Option<std::time::Duration>,
        result: &StoreResult<T>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.series[kind as usize];
        if let Some(took) = took {
            s.latency.observe(took);
        }
        s.total.fetch_add(1, Relaxed);
        s.recent.add(1);
        // A condition that held a write back (412, 409) is the request doing its job, not
        // a failure: conflicts are counted where they are handled.
        if let Err(e) = result
            && !matches!(e, StoreError::Changed | StoreError::Raced)
        {
            s.errors.fetch_add(1, Relaxed);
            s.recent_errors.add(1);
            *self.last_error.lock().unwrap() = Some(LastError {
                at: SystemTime::now(),
                message: format!("{} {rel:?}: {e}", kind.name()),
            });
        }
    }

    pub fn get(&self, kind: RequestKind) -> RequestCount {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.series[kind as usize];
        RequestCount {
            total: s.total.load(Relaxed),
            errors: s.errors.load(Relaxed),
            last_minute: s.recent.sum(),
            errors_last_minute: s.recent_errors.sum(),
        }
    }

    /// How long requests of `kind` took.
    pub fn latency(&self, kind: RequestKind) -> HistogramSnapshot {
        self.series[kind as usize].latency.snapshot()
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().unwrap().clone()
    }
}

/// Counts every request to `inner` into `stats`.
#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<RequestStats>,
}

impl std::fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingStore")
            .field("inner", &self.inner)
            .finish()
    }
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, stats: Arc<RequestStats>) -> Self {
        CountingStore { inner, stats }
    }

    pub fn stats(&self) -> &Arc<RequestStats> {
        &self.stats
    }

    fn count<T>(
        &self,
        kind: RequestKind,
        rel: &str,
        started: Instant,
        r: StoreResult<T>,
    ) -> StoreResult<T> {
        tracing::trace!(request = ?kind, key = rel, ok = r.is_ok(), "S3 request");
        self.stats
            .record_timed(kind, rel, Some(started.elapsed()), &r);
        r
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    fn scope(&self) -> &Scope {
        self.inner.scope()
    }

    fn check_object(&self, rel: &str) -> StoreResult<()> {
        self.inner.check_object(rel)
    }

    async fn head(&self, rel: &str) -> StoreResult<Option<ObjectInfo>> {
        let started = Instant::now();
        let r = self.inner.head(rel).await;
        self.count(RequestKind::Head, rel, started, r)
    }

    async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        let started = Instant::now();
        let r = self.inner.list_page(dir_rel, continuation, max_keys).await;
        self.count(RequestKind::List, dir_rel, started, r)
    }

    async fn list_recursive(&self, dir_rel: &str) -> StoreResult<Vec<ObjectInfo>> {
        let started = Instant::now();
        let r = self.inner.list_recursive(dir_rel).await;
        self.count(RequestKind::List, dir_rel, started, r)
    }

    async fn get_range(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Bytes> {
        let started = Instant::now();
        let r = self.inner.get_range(rel, if_match_etag, start, len).await;
        self.count(RequestKind::Get, rel, started, r)
    }

    async fn get_small(&self, rel: &str, max: u64) -> StoreResult<Option<Bytes>> {
        let started = Instant::now();
        let r = self.inner.get_small(rel, max).await;
        self.count(RequestKind::Get, rel, started, r)
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
        let started = Instant::now();
        let r = self
            .inner
            .get_range_pieces(rel, if_match_etag, start, len, piece, on_piece)
            .await;
        self.count(RequestKind::Get, rel, started, r)
    }

    async fn put_if(
        &self,
        rel: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<String> {
        let started = Instant::now();
        let r = self.inner.put_if(rel, body, meta, expect).await;
        self.count(RequestKind::Put, rel, started, r)
    }

    async fn create_multipart(&self, rel: &str, meta: &UserMeta) -> StoreResult<String> {
        let started = Instant::now();
        let r = self.inner.create_multipart(rel, meta).await;
        self.count(RequestKind::CreateMultipart, rel, started, r)
    }

    async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<PartDone> {
        let started = Instant::now();
        let r = self.inner.upload_part(rel, upload_id, number, body).await;
        self.count(RequestKind::UploadPart, rel, started, r)
    }

    async fn complete_multipart_if(
        &self,
        rel: &str,
        upload_id: &str,
        parts: Vec<PartDone>,
        expect: &Expect,
    ) -> StoreResult<String> {
        let started = Instant::now();
        let r = self
            .inner
            .complete_multipart_if(rel, upload_id, parts, expect)
            .await;
        self.count(RequestKind::CompleteMultipart, rel, started, r)
    }

    async fn abort_multipart(&self, rel: &str, upload_id: &str) -> StoreResult<()> {
        let started = Instant::now();
        let r = self.inner.abort_multipart(rel, upload_id).await;
        self.count(RequestKind::AbortMultipart, rel, started, r)
    }

    async fn list_uploads(&self, dir_rel: &str) -> StoreResult<Vec<UploadInfo>> {
        let started = Instant::now();
        let r = self.inner.list_uploads(dir_rel).await;
        self.count(RequestKind::ListUploads, dir_rel, started, r)
    }

    async fn delete_if(&self, rel: &str, expect: &Expect) -> StoreResult<()> {
        let started = Instant::now();
        let r = self.inner.delete_if(rel, expect).await;
        self.count(RequestKind::Delete, rel, started, r)
    }

    async fn copy_if(
        &self,
        src: &str,
        src_etag: Option<&str>,
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &Expect,
    ) -> StoreResult<String> {
        let started = Instant::now();
        let r = self.inner.copy_if(src, src_etag, dst, meta, expect).await;
        self.count(RequestKind::Copy, dst, started, r)
    }

    async fn check_access(&self) -> StoreResult<()> {
        let started = Instant::now();
        let r = self.inner.check_access().await;
        self.count(RequestKind::List, "", started, r)
    }

    async fn probe(&self) -> StoreResult<()> {
        let started = Instant::now();
        let r = self.inner.probe().await;
        self.count(RequestKind::List, "", started, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fault, MemoryStore};

    #[tokio::test]
    async fn counts_requests_and_errors_by_kind() {
        let mem = Arc::new(MemoryStore::new("b", "p"));
        let stats = Arc::new(RequestStats::default());
        let store = CountingStore::new(mem.clone(), stats.clone());
        store
            .put("a", Bytes::from_static(b"x"), &UserMeta::new())
            .await
            .unwrap();
        let info = store.head("a").await.unwrap().unwrap();
        store.get_range("a", &info.etag, 0, 1).await.unwrap();
        store.list_page("", None, 1000).await.unwrap();
        store.copy("a", "b", None).await.unwrap();
        store.delete("b").await.unwrap();
        assert_eq!(stats.last_error(), None);

        mem.fail_nth(Some(RequestKind::Get), 0, Fault::SlowDown);
        let before = SystemTime::now();
        assert!(store.get_range("a", &info.etag, 0, 1).await.is_err());
        let after = SystemTime::now();

        let put = stats.get(RequestKind::Put);
        assert_eq!(
            put,
            RequestCount {
                total: 1,
                errors: 0,
                last_minute: 1,
                errors_last_minute: 0
            }
        );
        let get = stats.get(RequestKind::Get);
        assert_eq!(
            (
                get.total,
                get.errors,
                get.last_minute,
                get.errors_last_minute
            ),
            (2, 1, 2, 1)
        );
        for kind in [
            RequestKind::Head,
            RequestKind::List,
            RequestKind::Copy,
            RequestKind::Delete,
        ] {
            assert_eq!(stats.get(kind).total, 1, "{kind:?}");
        }
        assert_eq!(stats.get(RequestKind::UploadPart), RequestCount::default());
        let last = stats.last_error().expect("the failed GET is remembered");
        assert!(last.message.starts_with("get \"a\": "), "{}", last.message);
        assert!(before <= last.at && last.at <= after, "{:?}", last.at);
        // Every call reached the inner store, once.
        assert_eq!(mem.counts().get(RequestKind::Get), 2);
    }

    #[test]
    fn kind_names_are_distinct_and_indexed_in_order() {
        let names: std::collections::BTreeSet<_> =
            RequestKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), RequestKind::ALL.len());
        for (i, k) in RequestKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
