//! [`ObjectStore`] in memory, for tests of the filesystem without S3, FUSE or root.
//!
//! It behaves as S3 does where the filesystem can tell: any key (a marker `d/` beside `d/f`,
//! an object `a` beside `a/b`), delimited listings in pages with continuation tokens,
//! `If-Match` reads, multipart uploads whose parts (but the last) must be at least 5 MiB,
//! CopyObject with COPY or REPLACE metadata (a copy of a single-part object keeps its etag,
//! as S3's MD5 etags do), deletes of missing keys that succeed, and S3's conditional writes
//! (`If-Match`, `If-None-Match: *`, copy-source `If-Match`: 412 as [`StoreError::Changed`],
//! `If-Match` on a missing key 404) — or, like some S3-compatible servers, ignores them
//! ([`MemoryStore::set_ignores_conditions`]). Keys
//! outside the store's prefix can be planted (`insert_raw`) to check they stay invisible.
//!
//! For failure tests it injects errors by operation (the n-th next request, or every one),
//! a fraction of 503 SlowDown answers, and latency; it counts requests by kind.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{
    Expect, ListPage, ObjectInfo, ObjectStore, PartDone, RequestKind, Scope, StoreError,
    StoreResult, UploadInfo, UserMeta,
};

/// S3's smallest part (all but the last part of an upload).
const MIN_PART_SIZE: usize = 5 << 20;

/// An injected failure: what the request answers instead of doing its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// 503 SlowDown after the SDK's retries.
    SlowDown,
    /// 403, as for revoked or expired credentials.
    AccessDenied,
    /// The request timed out.
    Timeout,
    /// 403 `ExpiredToken`: credentials that a renewal would fix.
    ExpiredToken,
    /// No answer: connection refused (S3 or the network is down).
    Unreachable,
}

impl Fault {
    fn error(self, op: RequestKind) -> StoreError {
        match self {
            Fault::SlowDown => StoreError::Other(format!("injected 503 SlowDown on {op:?}")),
            Fault::AccessDenied => StoreError::AccessDenied("injected AccessDenied".into()),
            Fault::Timeout => StoreError::Timeout(format!("injected timeout on {op:?}")),
            Fault::ExpiredToken => StoreError::AccessDenied("ExpiredToken".into()),
            Fault::Unreachable => {
                StoreError::Unreachable(format!("injected: connection refused on {op:?}"))
            }
        }
    }
}

/// Requests by kind since creation or the last [`MemoryStore::reset_counts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts(pub BTreeMap<RequestKind, u64>);

impl RequestCounts {
    pub fn get(&self, op: RequestKind) -> u64 {
        self.0.get(&op).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

struct Object {
    body: Bytes,
    etag: String,
    last_modified: SystemTime,
    meta: UserMeta,
    /// Completed from parts: its etag is not of its body, and a copy gets a new one.
    multipart: bool,
}

struct Upload {
    key: String,
    meta: UserMeta,
    parts: BTreeMap<i32, (String, Bytes)>,
    initiated: SystemTime,
}

struct Armed {
    op: Option<RequestKind>,
    /// Matching requests still let through before this one fires.
    skip: u64,
    fault: Fault,
    /// Fires on every matching request from then on.
    sticky: bool,
}

#[derive(Default)]
struct Faults {
    armed: Vec<Armed>,
    slowdown_fraction: f64,
    latency: Duration,
    /// Faults that fired, by kind.
    fired: BTreeMap<FaultKind, u64>,
    /// Conditional completes still to answer 409 ConditionalRequestConflict.
    races: u64,
}

/// A fault as counted by [`MemoryStore::fired`]: an injected [`Fault`], or a 409 race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Injected(Fault),
    Race,
}

/// An in-memory bucket, scoped like [`super::S3Store`] to one prefix.
pub struct MemoryStore {
    bucket: String,
    scope: Scope,
    objects: Mutex<BTreeMap<String, Object>>,
    uploads: Mutex<HashMap<String, Upload>>,
    counts: Mutex<RequestCounts>,
    faults: Mutex<Faults>,
    page_size: AtomicU64,
    seq: AtomicU64,
    ignores_conditions: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("bucket", &self.bucket)
            .field("prefix", &self.scope.prefix())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    pub fn new(bucket: &str, prefix: &str) -> Self {
        MemoryStore {
            bucket: bucket.to_owned(),
            scope: Scope::new(prefix),
            objects: Mutex::new(BTreeMap::new()),
            uploads: Mutex::new(HashMap::new()),
            counts: Mutex::new(RequestCounts::default()),
            faults: Mutex::new(Faults::default()),
            page_size: AtomicU64::new(1000),
            seq: AtomicU64::new(0),
            ignores_conditions: Default::default(),
        }
    }

    /// Accept conditional writes and ignore their conditions, as some S3-compatible
    /// servers do.
    pub fn set_ignores_conditions(&self, ignore: bool) {
        self.ignores_conditions.store(ignore, Ordering::Relaxed);
    }

    /// The faults that fired since creation (or [`Self::clear_faults`]), by kind.
    pub fn fired(&self) -> BTreeMap<FaultKind, u64> {
        self.faults.lock().unwrap().fired.clone()
    }

    /// How many faults fired in all.
    pub fn fired_total(&self) -> u64 {
        self.faults.lock().unwrap().fired.values().sum()
    }

    /// The next `n` conditional writes (PUT, complete, copy) answer 409
    /// ConditionalRequestConflict, as S3 does to the loser of two racing writes.
    pub fn race_next(&self, n: u64) {
        self.faults.lock().unwrap().races = n;
    }

    /// Checks `expect` against what `key` holds (under the objects lock, so check and write
    /// are one step, as in S3).
    fn check(
        &self,
        objects: &BTreeMap<String, Object>,
        key: &str,
        expect: &Expect,
    ) -> StoreResult<()> {
        if self.ignores_conditions.load(Ordering::Relaxed) {
            return Ok(());
        }
        expect.check(objects.get(key).map(|o| o.etag.as_str()))
    }

    /// A conditional write lost a race this time (see [`Self::race_next`]).
    fn raced(&self, expect: &Expect) -> bool {
        if *expect == Expect::Anything || self.ignores_conditions.load(Ordering::Relaxed) {
            return false;
        }
        let mut f = self.faults.lock().unwrap();
        if f.races == 0 {
            return false;
        }
        f.races -= 1;
        *f.fired.entry(FaultKind::Race).or_default() += 1;
        true
    }

    /// Stores `body` under the full `key` (prefix included, no validation), as another
    /// client could: keys that cannot be names, keys of other identities.
    pub fn insert_raw(&self, key: &str, body: &[u8], meta: UserMeta) {
        let object = self.object(Bytes::copy_from_slice(body), meta);
        self.objects.lock().unwrap().insert(key.to_owned(), object);
    }

    /// Time passes: every object was last modified at least `by` ago (older ones keep
    /// their dates, so their versions stay the same).
    pub fn age(&self, by: Duration) {
        let then = SystemTime::now() - by;
        for o in self.objects.lock().unwrap().values_mut() {
            o.last_modified = o.last_modified.min(then);
        }
    }

    /// Replaces the metadata under a full key as another client's CopyObject within the same
    /// second would look: same etag (a single-part object's, an empty marker's), same
    /// Last-Modified second. False if there is no such key.
    pub fn replace_meta_raw(&self, key: &str, meta: UserMeta) -> bool {
        match self.objects.lock().unwrap().get_mut(key) {
            Some(o) => {
                o.meta = meta;
                true
            }
            None => false,
        }
    }

    /// The body and metadata under a full key, read without counting a request.
    pub fn get_raw(&self, key: &str) -> Option<(Bytes, UserMeta)> {
        let objects = self.objects.lock().unwrap();
        objects.get(key).map(|o| (o.body.clone(), o.meta.clone()))
    }

    /// The etag of the object under a full key, read without counting a request.
    pub fn etag_raw(&self, key: &str) -> Option<String> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .map(|o| o.etag.clone())
    }

    /// Every full key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// Multipart uploads not completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().unwrap().len()
    }

    /// Entries per listing page (S3: 1000); smaller pages exercise continuation.
    pub fn set_page_size(&self, n: u64) {
        self.page_size.store(n.max(1), Ordering::Relaxed);
    }

    pub fn counts(&self) -> RequestCounts {
        self.counts.lock().unwrap().clone()
    }

    pub fn reset_counts(&self) {
        self.counts.lock().unwrap().0.clear();
    }

    /// The request after `skip` more requests of kind `op` (of any kind: `None`) fails.
    pub fn fail_nth(&self, op: Option<RequestKind>, skip: u64, fault: Fault) {
        self.faults.lock().unwrap().armed.push(Armed {
            op,
            skip,
            fault,
            sticky: false,
        });
    }

    /// Every request of kind `op` (of any kind: `None`) fails until [`Self::clear_faults`].
    pub fn fail_always(&self, op: Option<RequestKind>, fault: Fault) {
        self.faults.lock().unwrap().armed.push(Armed {
            op,
            skip: 0,
            fault,
            sticky: true,
        });
    }

    /// A fraction (0..=1) of all requests answers 503 SlowDown.
    pub fn set_slowdown_fraction(&self, fraction: f64) {
        self.faults.lock().unwrap().slowdown_fraction = fraction.clamp(0.0, 1.0);
    }

    /// Every request waits this long before it is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.faults.lock().unwrap().latency = latency;
    }

    /// Disarms every fault (the counts of fired ones stay).
    pub fn clear_faults(&self) {
        let mut f = self.faults.lock().unwrap();
        f.armed.clear();
        f.slowdown_fraction = 0.0;
        f.races = 0;
    }

    /// Whether a fault is still armed (one that has not fired yet).
    pub fn armed(&self) -> bool {
        let f = self.faults.lock().unwrap();
        !f.armed.is_empty() || f.races > 0
    }

    fn object(&self, body: Bytes, meta: UserMeta) -> Object {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        Object {
            body,
            etag: format!("\"{n:032x}\""),
            last_modified: SystemTime::now(),
            meta,
            multipart: false,
        }
    }

    /// Counts a request of kind `op` and answers the failure armed for it, if any, doing
    /// nothing else: for a test store that puts its own faults in front of another store.
    pub async fn inject(&self, op: RequestKind) -> StoreResult<()> {
        self.request(op).await
    }

    /// Counts the request, waits the injected latency, and answers an injected failure if
    /// one is due.
    async fn request(&self, op: RequestKind) -> StoreResult<()> {
        *self.counts.lock().unwrap().0.entry(op).or_default() += 1;
        let (latency, fault) = {
            let mut f = self.faults.lock().unwrap();
            let mut fault = None;
            let mut fired = None;
            for (i, a) in f.armed.iter_mut().enumerate() {
                if a.op.is_some_and(|o| o != op) {
                    continue;
                }
                if a.skip > 0 {
                    a.skip -= 1;
                    continue;
                }
                fault = Some(a.fault);
                if !a.sticky {
                    fired = Some(i);
                }
                break;
            }
            if let Some(i) = fired {
                f.armed.remove(i);
            }
            if fault.is_none()
                && f.slowdown_fraction > 0.0
                && rand::random::<f64>() < f.slowdown_fraction
            {
                fault = Some(Fault::SlowDown);
            }
            if let Some(fault) = fault {
                *f.fired.entry(FaultKind::Injected(fault)).or_default() += 1;
            }
            (f.latency, fault)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Some(f) => Err(f.error(op)),
            None => Ok(()),
        }
    }

    fn info(name: &str, o: &Object, with_meta: bool) -> ObjectInfo {
        ObjectInfo {
            name: name.to_owned(),
            size: o.body.len() as u64,
            etag: o.etag.clone(),
            last_modified: o.last_modified,
            meta: with_meta.then(|| o.meta.clone()),
        }
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn scope(&self) -> &Scope {
        &self.scope
    }

    async fn head(&self, rel: &str) -> StoreResult<Option<ObjectInfo>> {
        let key = self.scope.entry_key(rel)?;
        self.request(RequestKind::Head).await?;
        let objects = self.objects.lock().unwrap();
        let name = rel.rsplit('/').next().unwrap_or(rel);
        Ok(objects.get(&key).map(|o| Self::info(name, o, true)))
    }

    async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        let prefix = self.scope.dir_key(dir_rel)?;
        self.request(RequestKind::List).await?;
        let limit = (max_keys.max(1) as u64).min(self.page_size.load(Ordering::Relaxed)) as usize;
        let objects = self.objects.lock().unwrap();
        // The token is the last key or common prefix returned; a common prefix stands for
        // every key under it.
        let start = match &continuation {
            Some(token) => Bound::Excluded(token.clone()),
            None => Bound::Included(prefix.clone()),
        };
        let mut page = ListPage::default();
        let mut last: Option<String> = None;
        let mut count = 0;
        for (key, o) in objects.range((start, Bound::Unbounded)) {
            let Some(rest) = key.strip_prefix(&prefix) else {
                break;
            };
            if let Some(t) = last.as_deref().or(continuation.as_deref())
                && t.ends_with('/')
                && key.starts_with(t)
                && t.len() > prefix.len()
            {
                continue;
            }
            if count == limit {
                page.next = last.clone();
                break;
            }
            match rest.find('/') {
                Some(i) => {
                    page.dirs.push(rest[..i].to_owned());
                    last = Some(format!("{prefix}{}", &rest[..=i]));
                }
                None => {
                    page.files.push(Self::info(rest, o, false));
                    last = Some(key.clone());
                }
            }
            count += 1;
        }
        Ok(page)
    }

    async fn list_recursive(&self, dir_rel: &str) -> StoreResult<Vec<ObjectInfo>> {
        let prefix = self.scope.dir_key(dir_rel)?;
        let matching: Vec<ObjectInfo> = {
            let objects = self.objects.lock().unwrap();
            objects
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .take(super::MAX_RECURSIVE_KEYS + 1)
                .map(|(k, o)| Self::info(&k[prefix.len()..], o, false))
                .collect()
        };
        if matching.len() > super::MAX_RECURSIVE_KEYS {
            self.request(RequestKind::List).await?;
            return Err(StoreError::TooManyKeys);
        }
        let pages = (matching.len() as u64)
            .div_ceil(self.page_size.load(Ordering::Relaxed))
            .max(1);
        for _ in 0..pages {
            self.request(RequestKind::List).await?;
        }
        Ok(matching)
    }

    async fn get_range(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Bytes> {
        let key = self.scope.object_key(rel)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.request(RequestKind::Get).await?;
        let objects = self.objects.lock().unwrap();
        let o = objects.get(&key).ok_or(StoreError::NotFound)?;
        if o.etag != if_match_etag {
            return Err(StoreError::Changed);
        }
        let size = o.body.len() as u64;
        if start >= size {
            return Err(StoreError::Other("416 InvalidRange".into()));
        }
        let end = (start + len).min(size);
        Ok(o.body.slice(start as usize..end as usize))
    }

    async fn get_small(&self, rel: &str, max: u64) -> StoreResult<Option<Bytes>> {
        let key = self.scope.object_key(rel)?;
        self.request(RequestKind::Get).await?;
        let objects = self.objects.lock().unwrap();
        match objects.get(&key) {
            Some(o) if o.body.len() as u64 > max => Err(StoreError::TooLarge),
            found => Ok(found.map(|o| o.body.clone())),
        }
    }

    async fn put_if(
        &self,
        rel: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<String> {
        let key = self.scope.entry_key(rel)?;
        self.request(RequestKind::Put).await?;
        if self.raced(expect) {
            return Err(StoreError::Raced);
        }
        let mut objects = self.objects.lock().unwrap();
        self.check(&objects, &key, expect)?;
        let object = self.object(body, meta.clone());
        let etag = object.etag.clone();
        objects.insert(key, object);
        Ok(etag)
    }

    async fn create_multipart(&self, rel: &str, meta: &UserMeta) -> StoreResult<String> {
        let key = self.scope.object_key(rel)?;
        self.request(RequestKind::CreateMultipart).await?;
        let id = format!("upload-{}", self.seq.fetch_add(1, Ordering::Relaxed));
        let upload = Upload {
            key,
            meta: meta.clone(),
            parts: BTreeMap::new(),
            initiated: SystemTime::now(),
        };
        self.uploads.lock().unwrap().insert(id.clone(), upload);
        Ok(id)
    }

    async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<PartDone> {
        let key = self.scope.object_key(rel)?;
        self.request(RequestKind::UploadPart).await?;
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or(StoreError::NotFound)?;
        let etag = format!("\"part-{}\"", self.seq.fetch_add(1, Ordering::Relaxed));
        upload.parts.insert(number, (etag.clone(), body));
        Ok(PartDone { number, etag })
    }

    async fn complete_multipart_if(
        &self,
        rel: &str,
        upload_id: &str,
        mut parts: Vec<PartDone>,
        expect: &Expect,
    ) -> StoreResult<String> {
        let key = self.scope.entry_key(rel)?;
        self.request(RequestKind::CompleteMultipart).await?;
        if self.raced(expect) {
            return Err(StoreError::Raced);
        }
        parts.sort_by_key(|p| p.number);
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or(StoreError::NotFound)?;
        let mut body = BytesMut::new();
        for (i, p) in parts.iter().enumerate() {
            let Some((etag, data)) = upload.parts.get(&p.number) else {
                return Err(StoreError::Other(format!("InvalidPart {}", p.number)));
            };
            if *etag != p.etag {
                return Err(StoreError::Other(format!("InvalidPart {}", p.number)));
            }
            if i + 1 < parts.len() && data.len() < MIN_PART_SIZE {
                return Err(StoreError::Other(format!(
                    "EntityTooSmall: part {}",
                    p.number
                )));
            }
            body.extend_from_slice(data);
        }
        let mut objects = self.objects.lock().unwrap();
        // A failed condition leaves the upload open, as in S3 (the writer aborts it).
        self.check(&objects, &key, expect)?;
        let Some(upload) = uploads.remove(upload_id) else {
            return Err(StoreError::NotFound);
        };
        drop(uploads);
        let mut object = self.object(body.freeze(), upload.meta);
        object.multipart = true;
        let etag = object.etag.clone();
        objects.insert(key, object);
        Ok(etag)
    }

    async fn abort_multipart(&self, rel: &str, upload_id: &str) -> StoreResult<()> {
        self.scope.entry_key(rel)?;
        self.request(RequestKind::AbortMultipart).await?;
        match self.uploads.lock().unwrap().remove(upload_id) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound),
        }
    }

    async fn list_uploads(&self, dir_rel: &str) -> StoreResult<Vec<UploadInfo>> {
        let prefix = self.scope.dir_key(dir_rel)?;
        self.request(RequestKind::ListUploads).await?;
        let uploads = self.uploads.lock().unwrap();
        let mut out: Vec<UploadInfo> = uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(&prefix))
            .filter_map(|(id, u)| {
                Some(UploadInfo {
                    rel: self.scope.relative(&u.key)?.to_owned(),
                    upload_id: id.clone(),
                    initiated: Some(u.initiated),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.rel, &a.upload_id).cmp(&(&b.rel, &b.upload_id)));
        Ok(out)
    }

    async fn delete_if(&self, rel: &str, expect: &Expect) -> StoreResult<()> {
        let key = self.scope.entry_key(rel)?;
        self.request(RequestKind::Delete).await?;
        let mut objects = self.objects.lock().unwrap();
        if let Expect::Version(_) = expect {
            match self.check(&objects, &key, expect) {
                // The version to delete is gone already.
                Err(StoreError::NotFound) => return Ok(()),
                other => other?,
            }
        }
        objects.remove(&key);
        Ok(())
    }

    async fn copy_if(
        &self,
        src: &str,
        src_etag: Option<&str>,
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &Expect,
    ) -> StoreResult<String> {
        if src.ends_with('/') != dst.ends_with('/') {
            return Err(StoreError::InvalidPath(dst.to_owned()));
        }
        let src_key = self.scope.entry_key(src)?;
        let dst_key = self.scope.entry_key(dst)?;
        self.request(RequestKind::Copy).await?;
        if self.raced(expect) {
            return Err(StoreError::Raced);
        }
        let mut objects = self.objects.lock().unwrap();
        let source = objects.get(&src_key).ok_or(StoreError::NotFound)?;
        if let Some(e) = src_etag
            && !self.ignores_conditions.load(Ordering::Relaxed)
        {
            Expect::Version(e.to_owned()).check(Some(&source.etag))?;
        }
        self.check(&objects, &dst_key, expect)?;
        let meta = meta.cloned().unwrap_or_else(|| source.meta.clone());
        let (body, multipart, etag) = (source.body.clone(), source.multipart, source.etag.clone());
        let mut object = self.object(body, meta);
        if !multipart {
            // S3's etag of a single-part object is its body's MD5: a copy keeps it.
            object.etag = etag;
        }
        let etag = object.etag.clone();
        objects.insert(dst_key, object);
        Ok(etag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> MemoryStore {
        MemoryStore::new("b", "id")
    }

    #[tokio::test]
    async fn listing_pages_dirs_and_files_like_s3() {
        let s = store();
        for k in [
            "id/a", "id/b/x", "id/b/y", "id/c/", "id/d", "id/e/f/g", "other/z",
        ] {
            s.insert_raw(k, b"x", UserMeta::new());
        }
        s.set_page_size(2);
        let mut names = Vec::new();
        let mut next = None;
        let mut pages = 0;
        loop {
            let p = s.list_page("", next, 1000).await.unwrap();
            pages += 1;
            names.extend(p.files.iter().map(|f| f.name.clone()));
            names.extend(p.dirs.iter().map(|d| format!("{d}/")));
            next = p.next;
            if next.is_none() {
                break;
            }
        }
        names.sort();
        assert_eq!(names, ["a", "b/", "c/", "d", "e/"]);
        assert_eq!(pages, 3);
        let c = s.list_page("c/", None, 1000).await.unwrap();
        assert_eq!(c.files.len(), 1);
        assert_eq!(c.files[0].name, "");
        assert!(c.files[0].meta.is_none());
    }

    #[tokio::test]
    async fn reads_are_pinned_to_the_etag() {
        let s = store();
        let m = UserMeta::new();
        let e1 = s.put("f", Bytes::from_static(b"hello"), &m).await.unwrap();
        assert_eq!(&s.get_range("f", &e1, 1, 3).await.unwrap()[..], b"ell");
        assert_eq!(&s.get_range("f", &e1, 3, 10).await.unwrap()[..], b"lo");
        s.put("f", Bytes::from_static(b"world"), &m).await.unwrap();
        assert!(matches!(
            s.get_range("f", &e1, 0, 1).await,
            Err(StoreError::Changed)
        ));
    }

    #[tokio::test]
    async fn multipart_needs_big_parts_and_copy_keeps_or_replaces_metadata() {
        let s = store();
        let meta = UserMeta::from([("mode".to_owned(), "33188".to_owned())]);
        let id = s.create_multipart("f", &meta).await.unwrap();
        let p1 = s.upload_part("f", &id, 1, Bytes::from(vec![1; 10])).await;
        let p2 = s.upload_part("f", &id, 2, Bytes::from(vec![2; 10])).await;
        let parts = vec![p1.unwrap(), p2.unwrap()];
        assert!(s.complete_multipart("f", &id, parts).await.is_err());
        let big = s.upload_part("f", &id, 1, Bytes::from(vec![1; MIN_PART_SIZE]));
        let p1 = big.await.unwrap();
        let p2 = s.upload_part("f", &id, 2, Bytes::from(vec![2; 3])).await;
        s.complete_multipart("f", &id, vec![p2.unwrap(), p1])
            .await
            .unwrap();
        assert_eq!(s.open_uploads(), 0);
        let (body, m) = s.get_raw("id/f").unwrap();
        assert_eq!(body.len(), MIN_PART_SIZE + 3);
        assert_eq!(m, meta);
        s.copy("f", "g", None).await.unwrap();
        assert_eq!(s.get_raw("id/g").unwrap().1, meta);
        s.copy("f", "f", Some(&UserMeta::new())).await.unwrap();
        assert!(s.get_raw("id/f").unwrap().1.is_empty());
    }

    #[tokio::test]
    async fn injected_faults_and_counts() {
        let s = store();
        s.fail_nth(Some(RequestKind::Head), 1, Fault::SlowDown);
        assert!(s.head("a").await.unwrap().is_none());
        assert!(matches!(s.head("a").await, Err(StoreError::Other(_))));
        assert!(s.head("a").await.is_ok());
        s.fail_always(None, Fault::AccessDenied);
        assert!(matches!(
            s.delete("a").await,
            Err(StoreError::AccessDenied(_))
        ));
        s.clear_faults();
        s.delete("a").await.unwrap();
        let c = s.counts();
        assert_eq!(
            (
                c.get(RequestKind::Head),
                c.get(RequestKind::Delete),
                c.total()
            ),
            (3, 2, 5)
        );
        s.set_slowdown_fraction(1.0);
        assert!(s.list_page("", None, 1).await.is_err());
    }
}
