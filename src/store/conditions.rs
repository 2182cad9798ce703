//! Does the server honour conditional writes? And, where it does not, a HEAD before each
//! conditional write instead ([`EmulatedConditions`]).
//!
//! AWS S3 honours `If-Match` / `If-None-Match: *` on PutObject, CompleteMultipartUpload and
//! CopyObject, `x-amz-copy-source-if-match`, and `If-Match` on DeleteObject. Some
//! S3-compatible servers accept the headers and write anyway, which would turn every
//! conflict into a silent overwrite. So a mount asks once ([`probe_conditions`]): on a key
//! of its own it makes requests that must fail if the conditions are honoured. Where they
//! are not (or until the server could be asked), each conditional request is preceded by a
//! HEAD that checks the condition: best effort (a write landing between the two is still
//! overwritten), which `cognifs status` says.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Expect, ListPage, ObjectInfo, ObjectStore, PartDone, PieceSink, Scope, StoreError, StoreResult,
    UploadInfo, UserMeta,
};

/// Which conditions the server was seen to honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConditionSupport {
    /// PutObject / CompleteMultipartUpload / CopyObject conditions (both kinds).
    pub writes: bool,
    /// `If-Match` on DeleteObject.
    pub deletes: bool,
}

impl ConditionSupport {
    pub const FULL: ConditionSupport = ConditionSupport {
        writes: true,
        deletes: true,
    };

    /// Every condition is checked by the server, atomically with the write.
    pub fn atomic(&self) -> bool {
        self.writes && self.deletes
    }
}

/// The etag no object has: a condition on it must fail.
const NO_SUCH_ETAG: &str = "\"cognifs-probe-no-such-version\"";

/// Whether a request the server should refuse was refused (412, or 404 for `If-Match` on a
/// missing key).
fn refused<T>(r: StoreResult<T>) -> StoreResult<bool> {
    match r {
        Ok(_) => Ok(false),
        Err(StoreError::Changed | StoreError::NotFound) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Asks the server, on a key of its own (`.cognifs-probe-…` at the prefix's root, deleted
/// again), whether it honours each kind of condition. Seven requests.
pub async fn probe_conditions(store: &dyn ObjectStore) -> StoreResult<ConditionSupport> {
    let key = format!(".cognifs-probe-{:016x}", rand::random::<u64>());
    let none = UserMeta::new();
    let wrong = Expect::Version(NO_SUCH_ETAG.to_owned());
    store
        .put_if(&key, Bytes::new(), &none, &Expect::Absent)
        .await?;
    let support = async {
        let absent = refused(
            store
                .put_if(&key, Bytes::new(), &none, &Expect::Absent)
                .await,
        )?;
        let version = refused(store.put_if(&key, Bytes::new(), &none, &wrong).await)?;
        let copy_source = refused(
            store
                .copy_if(
                    &key,
                    Some(NO_SUCH_ETAG),
                    &key,
                    Some(&none),
                    &Expect::Anything,
                )
                .await,
        )?;
        let copy_target = refused(
            store
                .copy_if(&key, None, &key, Some(&none), &Expect::Absent)
                .await,
        )?;
        let deletes = refused(store.delete_if(&key, &wrong).await)?;
        Ok(ConditionSupport {
            writes: absent && version && copy_source && copy_target,
            deletes,
        })
    }
    .await;
    if let Err(e) = store.delete(&key).await {
        tracing::warn!(key, error = %e, "could not delete the conditional-write probe");
    }
    support
}

/// Probes `store` and wraps it in [`EmulatedConditions`], which checks conditions itself
/// wherever the server was not seen to: everywhere until a probe succeeds (S3 unreachable
/// at mount: [`EmulatedConditions::recheck`] asks again later), nowhere for AWS.
pub async fn checked_store(store: Arc<dyn ObjectStore>) -> Arc<EmulatedConditions> {
    let checked = Arc::new(EmulatedConditions::new(store, None));
    checked.recheck().await;
    checked
}

/// A store whose server ignores (some) conditions, or has not been asked yet: each
/// conditional write it is not known to check is preceded by a HEAD that checks it. Not
/// atomic, but no worse than the server allows; where the server checks, a pass-through.
#[derive(Debug)]
pub struct EmulatedConditions {
    inner: Arc<dyn ObjectStore>,
    support: std::sync::RwLock<Option<ConditionSupport>>,
}

impl EmulatedConditions {
    /// `support`: what the server is known to check (`None`: unknown, so nothing).
    pub fn new(inner: Arc<dyn ObjectStore>, support: Option<ConditionSupport>) -> Self {
        EmulatedConditions {
            inner,
            support: std::sync::RwLock::new(support),
        }
    }

    /// What the server was seen to check; `None` until a probe succeeded.
    pub fn support(&self) -> Option<ConditionSupport> {
        *self.support.read().unwrap()
    }

    /// Asks the server (if not known yet) which conditions it checks.
    pub async fn recheck(&self) {
        if self.support().is_some() {
            return;
        }
        match probe_conditions(&*self.inner).await {
            Ok(support) => {
                if !support.atomic() {
                    tracing::warn!(
                        ?support,
                        "the S3 server ignores conditional writes: conflicts are detected by a HEAD before each write (best effort)"
                    );
                }
                *self.support.write().unwrap() = Some(support);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not ask the S3 server whether it checks conditional writes; checking them by a HEAD first until it answers");
            }
        }
    }

    fn writes_checked(&self) -> bool {
        self.support().is_some_and(|s| s.writes)
    }

    fn deletes_checked(&self) -> bool {
        self.support().is_some_and(|s| s.deletes)
    }

    /// Err unless `rel` holds what `expect` says, by a HEAD.
    async fn check(&self, rel: &str, expect: &Expect) -> StoreResult<()> {
        if *expect == Expect::Anything {
            return Ok(());
        }
        let current = self.inner.head(rel).await?;
        expect.check(current.as_ref().map(|o| o.etag.as_str()))
    }
}

#[async_trait]
impl ObjectStore for EmulatedConditions {
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
        self.inner.head(rel).await
    }

    async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        self.inner.list_page(dir_rel, continuation, max_keys).await
    }

    async fn list_recursive(&self, dir_rel: &str) -> StoreResult<Vec<ObjectInfo>> {
        self.inner.list_recursive(dir_rel).await
    }

    async fn get_range(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Bytes> {
        self.inner.get_range(rel, if_match_etag, start, len).await
    }

    async fn get_small(&self, rel: &str, max: u64) -> StoreResult<Option<Bytes>> {
        self.inner.get_small(rel, max).await
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
        self.inner
            .get_range_pieces(rel, if_match_etag, start, len, piece, on_piece)
            .await
    }

    async fn put_if(
        &self,
        rel: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<String> {
        if self.writes_checked() {
            return self.inner.put_if(rel, body, meta, expect).await;
        }
        self.check(rel, expect).await?;
        self.inner.put_if(rel, body, meta, &Expect::Anything).await
    }

    async fn create_multipart(&self, rel: &str, meta: &UserMeta) -> StoreResult<String> {
        self.inner.create_multipart(rel, meta).await
    }

    async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<PartDone> {
        self.inner.upload_part(rel, upload_id, number, body).await
    }

    async fn complete_multipart_if(
        &self,
        rel: &str,
        upload_id: &str,
        parts: Vec<PartDone>,
        expect: &Expect,
    ) -> StoreResult<String> {
        if self.writes_checked() {
            return self
                .inner
                .complete_multipart_if(rel, upload_id, parts, expect)
                .await;
        }
        self.check(rel, expect).await?;
        self.inner
            .complete_multipart_if(rel, upload_id, parts, &Expect::Anything)
            .await
    }

    async fn abort_multipart(&self, rel: &str, upload_id: &str) -> StoreResult<()> {
        self.inner.abort_multipart(rel, upload_id).await
    }

    async fn list_uploads(&self, dir_rel: &str) -> StoreResult<Vec<UploadInfo>> {
        self.inner.list_uploads(dir_rel).await
    }

    async fn delete_if(&self, rel: &str, expect: &Expect) -> StoreResult<()> {
        if self.deletes_checked() || !matches!(expect, Expect::Version(_)) {
            return self.inner.delete_if(rel, expect).await;
        }
        match self.check(rel, expect).await {
            // The version to delete is gone already.
            Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
            Ok(()) => self.inner.delete_if(rel, &Expect::Anything).await,
        }
    }

    async fn copy_if(
        &self,
        src: &str,
        src_etag: Option<&str>,
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &Expect,
    ) -> StoreResult<String> {
        if self.writes_checked() {
            return self.inner.copy_if(src, src_etag, dst, meta, expect).await;
        }
        if let Some(e) = src_etag {
            self.check(src, &Expect::Version(e.to_owned())).await?;
        }
        self.check(dst, expect).await?;
        self.inner
            .copy_if(src, None, dst, meta, &Expect::Anything)
            .await
    }

    async fn check_access(&self) -> StoreResult<()> {
        self.inner.check_access().await
    }

    async fn probe(&self) -> StoreResult<()> {
        self.inner.probe().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, RequestKind};

    #[tokio::test]
    async fn the_probe_tells_a_server_that_honours_conditions_from_one_that_ignores_them() {
        let honest = Arc::new(MemoryStore::new("b", "p"));
        assert_eq!(
            probe_conditions(&*honest).await.unwrap(),
            ConditionSupport::FULL
        );
        assert!(honest.keys().is_empty(), "the probe key is gone");
        assert_eq!(honest.counts().total(), 7);

        let careless = Arc::new(MemoryStore::new("b", "p"));
        careless.set_ignores_conditions(true);
        let support = probe_conditions(&*careless).await.unwrap();
        assert_eq!(
            support,
            ConditionSupport {
                writes: false,
                deletes: false
            }
        );
        assert!(careless.keys().is_empty(), "the probe key is gone");
    }

    #[tokio::test]
    async fn until_the_server_answers_the_probe_conditions_are_checked_by_head() {
        let careless = Arc::new(MemoryStore::new("b", "p"));
        careless.set_ignores_conditions(true);
        careless.fail_always(None, crate::store::Fault::Timeout);
        let store = checked_store(careless.clone()).await;
        assert_eq!(store.support(), None, "the probe could not run");
        careless.clear_faults();
        careless.insert_raw("p/f", b"theirs", UserMeta::new());
        assert!(matches!(
            store
                .put_if(
                    "f",
                    Bytes::from_static(b"mine"),
                    &UserMeta::new(),
                    &Expect::Absent
                )
                .await,
            Err(StoreError::Changed)
        ));
        assert_eq!(&careless.get_raw("p/f").unwrap().0[..], b"theirs");
        store.recheck().await;
        assert_eq!(store.support().map(|s| s.atomic()), Some(false));
    }

    #[tokio::test]
    async fn emulated_conditions_refuse_what_the_server_would_have_written() {
        let careless = Arc::new(MemoryStore::new("b", "p"));
        careless.set_ignores_conditions(true);
        let store = checked_store(careless.clone()).await;
        assert_eq!(store.support().map(|s| s.atomic()), Some(false));
        let none = UserMeta::new();
        let e1 = store
            .put_if("f", Bytes::from_static(b"1"), &none, &Expect::Absent)
            .await
            .unwrap();
        assert!(matches!(
            store
                .put_if("f", Bytes::from_static(b"2"), &none, &Expect::Absent)
                .await,
            Err(StoreError::Changed)
        ));
        assert!(matches!(
            store
                .put_if("g", Bytes::new(), &none, &Expect::Version(e1.clone()))
                .await,
            Err(StoreError::NotFound)
        ));
        careless.reset_counts();
        let e2 = store
            .put_if(
                "f",
                Bytes::from_static(b"3"),
                &none,
                &Expect::Version(e1.clone()),
            )
            .await
            .unwrap();
        assert_eq!(
            (
                careless.counts().get(RequestKind::Head),
                careless.counts().get(RequestKind::Put)
            ),
            (1, 1),
            "one HEAD before the PUT"
        );
        assert!(matches!(
            store.delete_if("f", &Expect::Version(e1)).await,
            Err(StoreError::Changed)
        ));
        assert_eq!(&careless.get_raw("p/f").unwrap().0[..], b"3");
        store.delete_if("f", &Expect::Version(e2)).await.unwrap();
        assert!(careless.get_raw("p/f").is_none());
    }
}
