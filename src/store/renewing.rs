//! [`RenewingStore`]: a request refused because the credentials are stale (expired, revoked,
//! a clock jump) renews them at once and is tried once more, instead of failing until the
//! renewal schedule comes round.
//!
//! Renewals are coalesced by generation: every request notes which credentials were in use
//! when it started; a refused one asks for a renewal *after* that generation, so a burst of
//! refusals (a listing's HEADs, a multipart upload's parts) costs one renewal, and a
//! request refused with credentials already replaced just tries again.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Expect, ListPage, ObjectInfo, ObjectStore, PartDone, PieceSink, Scope, StoreResult, UploadInfo,
    UserMeta,
};

/// What renews the credentials a store signs with.
#[async_trait]
pub trait Renewer: Send + Sync {
    /// Which credentials are in use now; grows with every renewal.
    fn generation(&self) -> u64;

    /// Renews the credentials unless that happened since `stale` was current, and waits
    /// (bounded) for the outcome.
    async fn renew_after(&self, stale: u64);
}

/// Wraps a store: a request refused for stale credentials is retried once, after a renewal.
pub struct RenewingStore {
    inner: Arc<dyn ObjectStore>,
    renewer: Arc<dyn Renewer>,
}

impl std::fmt::Debug for RenewingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewingStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl RenewingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, renewer: Arc<dyn Renewer>) -> Self {
        RenewingStore { inner, renewer }
    }
}

/// Runs `$call` (an expression evaluated afresh for the retry), renewing and retrying once
/// if it was refused for stale credentials.
macro_rules! renewing {
    ($self:ident, $what:literal, $rel:expr, $call:expr) => {{
        let seen = $self.renewer.generation();
        match $call.await {
            Err(e) if e.is_stale_credentials() => {
                tracing::info!(request = $what, key = %$rel, error = %e, "credentials refused; renewing and retrying");
                $self.renewer.renew_after(seen).await;
                $call.await
            }
            r => r,
        }
    }};
}

#[async_trait]
impl ObjectStore for RenewingStore {
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
        renewing!(self, "head", rel, self.inner.head(rel))
    }

    async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        renewing!(
            self,
            "list",
            dir_rel,
            self.inner
                .list_page(dir_rel, continuation.clone(), max_keys)
        )
    }

    async fn list_recursive(&self, dir_rel: &str) -> StoreResult<Vec<ObjectInfo>> {
        renewing!(self, "list", dir_rel, self.inner.list_recursive(dir_rel))
    }

    async fn get_range(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Bytes> {
        renewing!(
            self,
            "get",
            rel,
            self.inner.get_range(rel, if_match_etag, start, len)
        )
    }

    async fn get_small(&self, rel: &str, max: u64) -> StoreResult<Option<Bytes>> {
        renewing!(self, "get", rel, self.inner.get_small(rel, max))
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
        renewing!(
            self,
            "get",
            rel,
            self.inner
                .get_range_pieces(rel, if_match_etag, start, len, piece, on_piece)
        )
    }

    async fn put_if(
        &self,
        rel: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<String> {
        renewing!(
            self,
            "put",
            rel,
            self.inner.put_if(rel, body.clone(), meta, expect)
        )
    }

    async fn create_multipart(&self, rel: &str, meta: &UserMeta) -> StoreResult<String> {
        renewing!(
            self,
            "create_multipart",
            rel,
            self.inner.create_multipart(rel, meta)
        )
    }

    async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<PartDone> {
        renewing!(
            self,
            "upload_part",
            rel,
            self.inner.upload_part(rel, upload_id, number, body.clone())
        )
    }

    async fn complete_multipart_if(
        &self,
        rel: &str,
        upload_id: &str,
        parts: Vec<PartDone>,
        expect: &Expect,
    ) -> StoreResult<String> {
        renewing!(
            self,
            "complete_multipart",
            rel,
            self.inner
                .complete_multipart_if(rel, upload_id, parts.clone(), expect)
        )
    }

    async fn abort_multipart(&self, rel: &str, upload_id: &str) -> StoreResult<()> {
        renewing!(
            self,
            "abort_multipart",
            rel,
            self.inner.abort_multipart(rel, upload_id)
        )
    }

    async fn list_uploads(&self, dir_rel: &str) -> StoreResult<Vec<UploadInfo>> {
        renewing!(
            self,
            "list_uploads",
            dir_rel,
            self.inner.list_uploads(dir_rel)
        )
    }

    async fn delete_if(&self, rel: &str, expect: &Expect) -> StoreResult<()> {
        renewing!(self, "delete", rel, self.inner.delete_if(rel, expect))
    }

    async fn copy_if(
        &self,
        src: &str,
        src_etag: Option<&str>,
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &Expect,
    ) -> StoreResult<String> {
        renewing!(
            self,
            "copy",
            dst,
            self.inner.copy_if(src, src_etag, dst, meta, expect)
        )
    }

    async fn check_access(&self) -> StoreResult<()> {
        renewing!(self, "list", "", self.inner.check_access())
    }

    async fn probe(&self) -> StoreResult<()> {
        renewing!(self, "list", "", self.inner.probe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fault, MemoryStore, RequestKind, StoreError};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts renewals; each one is a new generation.
    #[derive(Default)]
    struct CountingRenewer {
        generation: AtomicU64,
        renewals: AtomicU64,
    }

    #[async_trait]
    impl Renewer for CountingRenewer {
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
        async fn renew_after(&self, stale: u64) {
            if self
                .generation
                .compare_exchange(stale, stale + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.renewals.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn setup() -> (Arc<MemoryStore>, Arc<CountingRenewer>, RenewingStore) {
        let mem = Arc::new(MemoryStore::new("b", "p"));
        let renewer = Arc::new(CountingRenewer::default());
        let store = RenewingStore::new(mem.clone(), renewer.clone());
        (mem, renewer, store)
    }

    #[tokio::test]
    async fn a_stale_credential_refusal_renews_and_retries_once() {
        let (mem, renewer, store) = setup();
        mem.fail_nth(Some(RequestKind::Put), 0, Fault::ExpiredToken);
        store
            .put("a", Bytes::from_static(b"x"), &UserMeta::new())
            .await
            .expect("retried after the renewal");
        assert_eq!(renewer.renewals.load(Ordering::SeqCst), 1);
        assert_eq!(mem.counts().get(RequestKind::Put), 2);
        assert_eq!(&mem.get_raw("p/a").unwrap().0[..], b"x");

        // Refused again after the renewal: the error stands, after one retry.
        mem.reset_counts();
        mem.fail_always(Some(RequestKind::Head), Fault::ExpiredToken);
        let err = store.head("a").await.unwrap_err();
        assert!(err.is_stale_credentials(), "{err}");
        assert_eq!(mem.counts().get(RequestKind::Head), 2);
        assert_eq!(renewer.renewals.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn other_refusals_and_failures_are_not_retried_here() {
        let (mem, renewer, store) = setup();
        for fault in [Fault::AccessDenied, Fault::SlowDown, Fault::Timeout] {
            mem.clear_faults();
            mem.reset_counts();
            mem.fail_nth(Some(RequestKind::Get), 0, fault);
            let err = store.get_range("a", "etag", 0, 1).await.unwrap_err();
            assert!(!matches!(err, StoreError::NotFound), "{err}");
            assert_eq!(mem.counts().get(RequestKind::Get), 1, "{fault:?}");
        }
        assert_eq!(renewer.renewals.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn stale_codes_are_the_ones_a_renewal_fixes() {
        for code in [
            "ExpiredToken",
            "InvalidToken",
            "InvalidAccessKeyId",
            "RequestTimeTooSkewed",
        ] {
            assert!(StoreError::AccessDenied(code.into()).is_stale_credentials());
        }
        for code in [
            "AccessDenied",
            "SignatureDoesNotMatch",
            "credentials unavailable",
        ] {
            assert!(!StoreError::AccessDenied(code.into()).is_stale_credentials());
        }
    }
}
