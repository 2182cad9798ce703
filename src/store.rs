//! The only code that speaks S3.
//!
//! [`Store`] is scoped to one key prefix (`<identity-id>/`). Every method takes a path
//! *relative* to that prefix and validates it segment by segment, so no key outside the
//! prefix can be formed through this API: there is no `..`, no empty segment, no leading
//! `/`. The S3 → errno mapping lives here too, in [`StoreError::errno`], and nowhere else.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use bytes::Bytes;

/// S3's limit on a whole key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// One object as a listing or HEAD reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the listed directory (for `head`, the last path segment). Raw: may be
    /// empty or otherwise unusable as a file name; the fs layer decides what to hide.
    pub name: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    /// From `x-amz-meta-mtime` ("secs.nanos"); only HEAD returns user metadata.
    pub mtime: Option<SystemTime>,
    /// Permission bits from `x-amz-meta-mode` (octal); only HEAD returns user metadata.
    pub mode: Option<u32>,
}

/// Part size of a multipart copy (S3 allows 5 MiB to 5 GiB).
const COPY_PART_SIZE: u64 = 512 << 20;

/// The user metadata cognifs keeps on an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub mtime: Option<SystemTime>,
    pub mode: Option<u32>,
}

impl Meta {
    fn to_map(self) -> Option<std::collections::HashMap<String, String>> {
        let mut m = std::collections::HashMap::new();
        if let Some(t) = self.mtime {
            m.insert("mtime".to_owned(), format_mtime(t));
        }
        if let Some(mode) = self.mode {
            m.insert("mode".to_owned(), format!("{:o}", mode & 0o7777));
        }
        (!m.is_empty()).then_some(m)
    }
}

/// One part of a multipart upload, as CompleteMultipartUpload needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartDone {
    pub number: i32,
    pub etag: String,
}

/// A multipart upload in progress, from ListMultipartUploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// Relative to the prefix.
    pub rel: String,
    pub upload_id: String,
    /// When the upload was created, if the server said.
    pub initiated: Option<SystemTime>,
}

/// One page of a delimited listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub files: Vec<ObjectInfo>,
    /// Common prefixes relative to the listed directory, without the trailing `/`.
    /// Raw, like [`ObjectInfo::name`]: `a//b` under `a/` shows up here as `""`.
    pub dirs: Vec<String>,
    /// Continuation token for the next page, if any.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such key")]
    NotFound,
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("object changed while reading")]
    Changed,
    #[error("key too long")]
    KeyTooLong,
    #[error("invalid relative path {0:?}")]
    InvalidPath(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// The local spool (or a file being uploaded) could not be written: disk full.
    #[error("no space left in the local spool")]
    NoSpace,
    /// A local file could not be read or written for a reason other than space.
    #[error("local I/O: {0}")]
    Local(String),
    /// Throttling and 5xx after the SDK's retries, transport failures, malformed replies.
    #[error("S3 error: {0}")]
    Other(String),
}

impl StoreError {
    /// The one place S3 failures become errno values.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NotFound => libc::ENOENT,
            StoreError::AccessDenied(_) => libc::EACCES,
            StoreError::Changed => libc::EIO,
            StoreError::KeyTooLong => libc::ENAMETOOLONG,
            StoreError::InvalidPath(_) => libc::EINVAL,
            StoreError::Timeout(_) => libc::ETIMEDOUT,
            StoreError::NoSpace => libc::ENOSPC,
            StoreError::Local(_) => libc::EIO,
            StoreError::Other(_) => libc::EIO,
        }
    }

    fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = match &err {
            SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
            SdkError::ResponseError(e) => Some(e.raw().status().as_u16()),
            _ => None,
        };
        let code = err.code().map(str::to_owned);
        let text = DisplayErrorContext(&err).to_string();
        match (&err, code.as_deref(), status) {
            (_, Some("NoSuchKey" | "NotFound"), _) | (_, _, Some(404)) => StoreError::NotFound,
            (_, Some("PreconditionFailed"), _) | (_, _, Some(412)) => StoreError::Changed,
            (_, Some("KeyTooLongError" | "KeyTooLong"), _) => StoreError::KeyTooLong,
            (
                _,
                Some(
                    "AccessDenied"
                    | "ExpiredToken"
                    | "InvalidAccessKeyId"
                    | "InvalidToken"
                    | "SignatureDoesNotMatch"
                    | "TokenRefreshRequired"
                    | "AllAccessDisabled",
                ),
                _,
            )
            | (_, _, Some(403)) => StoreError::AccessDenied(code.unwrap_or_default()),
            (SdkError::TimeoutError(_), _, _) => StoreError::Timeout(text),
            (SdkError::DispatchFailure(d), _, _) if d.is_timeout() => StoreError::Timeout(text),
            // Identity resolution failures (no or expired credentials) surface before any
            // request is sent; they mean "not allowed", not "broken".
            (SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_), _, _)
                if text.to_ascii_lowercase().contains("credential") =>
            {
                StoreError::AccessDenied("credentials unavailable".into())
            }
            _ => StoreError::Other(text),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => StoreError::NoSpace,
            _ => StoreError::Local(e.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A relative path is `seg(/seg)*`, optionally ending in `/` where a directory is meant.
fn check_segments(rel: &str) -> StoreResult<()> {
    let body = rel.strip_suffix('/').unwrap_or(rel);
    let bad = body.is_empty()
        || body
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\0') || s.len() > 255);
    if bad {
        Err(StoreError::InvalidPath(rel.to_owned()))
    } else {
        Ok(())
    }
}

/// A path to an object: non-empty, no trailing `/`.
fn check_object_rel(rel: &str) -> StoreResult<()> {
    if rel.ends_with('/') {
        return Err(StoreError::InvalidPath(rel.to_owned()));
    }
    check_segments(rel)
}

/// A directory path: `""` (the prefix itself) or `seg(/seg)*/`.
fn check_dir_rel(rel: &str) -> StoreResult<()> {
    if rel.is_empty() {
        return Ok(());
    }
    if !rel.ends_with('/') {
        return Err(StoreError::InvalidPath(rel.to_owned()));
    }
    check_segments(rel)
}

fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Parses `x-amz-meta-mtime`: `secs` or `secs.nanos` (nanos as a decimal fraction).
pub fn parse_mtime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    let nanos = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{frac:0<9}").parse().ok()?
    };
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Formats `x-amz-meta-mtime` as `secs.nanos` (nanos zero-padded to 9 digits).
pub fn format_mtime(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Parses `x-amz-meta-mode` (octal permission bits).
pub fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim(), 8).ok().map(|m| m & 0o7777)
}

/// Percent-encodes a key for `x-amz-copy-source` (everything but unreserved bytes and `/`).
fn encode_copy_source(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// S3 access scoped to `bucket/prefix`.
#[derive(Clone)]
pub struct Store {
    client: Client,
    bucket: String,
    prefix: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// `prefix` is the identity's key prefix, e.g. `us-east-1:uuid/`; a missing trailing
    /// `/` is added so that `abc` can never reach `abcd/...`.
    pub fn new(client: Client, bucket: String, prefix: String) -> Self {
        let mut prefix = prefix;
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Store {
            client,
            bucket,
            prefix,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rel: &str) -> StoreResult<String> {
        let key = format!("{}{}", self.prefix, rel);
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::KeyTooLong);
        }
        Ok(key)
    }

    /// Can we list our own prefix? (AWS policy forbids HeadBucket for these identities.)
    pub async fn check_access(&self) -> StoreResult<()> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// HEAD an object; `Ok(None)` when it does not exist.
    pub async fn head(&self, rel: &str) -> StoreResult<Option<ObjectInfo>> {
        check_object_rel(rel)?;
        let key = self.key(rel)?;
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                return match StoreError::from_sdk(e) {
                    StoreError::NotFound => Ok(None),
                    e => Err(e),
                };
            }
        };
        let mtime = out
            .metadata()
            .and_then(|m| m.get("mtime"))
            .and_then(|v| parse_mtime(v));
        let mode = out
            .metadata()
            .and_then(|m| m.get("mode"))
            .and_then(|v| parse_mode(v));
        Ok(Some(ObjectInfo {
            name: rel.rsplit('/').next().unwrap_or(rel).to_owned(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_owned(),
            last_modified: to_system_time(out.last_modified()),
            mtime,
            mode,
        }))
    }

    /// One page (up to 1000 entries) of the directory `dir_rel` (`""` or `a/b/`).
    pub async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
    ) -> StoreResult<ListPage> {
        self.list_page_max(dir_rel, continuation, 1000).await
    }

    /// [`Store::list_page`] with a page size; `max_keys` 1 answers "is there anything here?".
    pub async fn list_page_max(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        check_dir_rel(dir_rel)?;
        let prefix = self.key(dir_rel)?;
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .max_keys(max_keys)
            .set_continuation_token(continuation)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let files = out
            .contents()
            .iter()
            .filter_map(|o| {
                let name = o.key()?.strip_prefix(&prefix)?.to_owned();
                Some(ObjectInfo {
                    name,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_owned(),
                    last_modified: to_system_time(o.last_modified()),
                    mtime: None,
                    mode: None,
                })
            })
            .collect();
        let dirs = out
            .common_prefixes()
            .iter()
            .filter_map(|p| {
                let rest = p.prefix()?.strip_prefix(&prefix)?;
                Some(rest.strip_suffix('/').unwrap_or(rest).to_owned())
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage { files, dirs, next })
    }

    /// `len` bytes from `start`, only if the object still has `if_match_etag`
    /// (otherwise [`StoreError::Changed`]).
    pub async fn get_range(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Bytes> {
        check_object_rel(rel)?;
        let key = self.key(rel)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_match(if_match_etag)
            .range(format!("bytes={}-{}", start, start + len - 1))
            .send()
            .await
            .map_err(|e| {
                let e = StoreError::from_sdk(e);
                if matches!(e, StoreError::Changed) {
                    tracing::warn!(key = rel, "object changed while reading");
                }
                e
            })?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Other(format!("reading body: {e}")))?;
        Ok(body.into_bytes())
    }

    /// Fails with [`StoreError::KeyTooLong`] / [`StoreError::InvalidPath`] when `rel`
    /// cannot name an object; lets callers refuse a name before any data is written.
    pub fn check_object(&self, rel: &str) -> StoreResult<()> {
        check_object_rel(rel)?;
        self.key(rel).map(drop)
    }

    /// PutObject of a whole body; returns the new etag.
    pub async fn put(&self, rel: &str, body: Bytes, meta: Meta) -> StoreResult<String> {
        check_object_rel(rel)?;
        let key = self.key(rel)?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_metadata(meta.to_map())
            .body(body.into())
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    /// PutObject streaming a local file; returns the new etag.
    pub async fn put_file(
        &self,
        rel: &str,
        path: &std::path::Path,
        meta: Meta,
    ) -> StoreResult<String> {
        check_object_rel(rel)?;
        let key = self.key(rel)?;
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| StoreError::Local(e.to_string()))?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_metadata(meta.to_map())
            .body(body)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    /// The zero-byte marker object `dir/` (`dir_rel` ends in `/`).
    pub async fn put_dir_marker(&self, dir_rel: &str) -> StoreResult<()> {
        if dir_rel.is_empty() {
            return Err(StoreError::InvalidPath(String::new()));
        }
        check_dir_rel(dir_rel)?;
        let key = self.key(dir_rel)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(Bytes::new().into())
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    pub async fn create_multipart(&self, rel: &str, meta: Meta) -> StoreResult<String> {
        check_object_rel(rel)?;
        let key = self.key(rel)?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .set_metadata(meta.to_map())
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Other("CreateMultipartUpload without an upload id".into()))
    }

    /// Uploads part `number` (1-based).
    pub async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<PartDone> {
        check_object_rel(rel)?;
        let key = self.key(rel)?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(upload_id)
            .part_number(number)
            .body(body.into())
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(PartDone {
            number,
            etag: out.e_tag().unwrap_or_default().to_owned(),
        })
    }

    /// Completes an upload from its parts (any order; sorted here); returns the etag.
    pub async fn complete_multipart(
        &self,
        rel: &str,
        upload_id: &str,
        mut parts: Vec<PartDone>,
    ) -> StoreResult<String> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        check_object_rel(rel)?;
        let key = self.key(rel)?;
        parts.sort_by_key(|p| p.number);
        let done = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .into_iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(p.etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(upload_id)
            .multipart_upload(done)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    pub async fn abort_multipart(&self, rel: &str, upload_id: &str) -> StoreResult<()> {
        check_object_rel(rel)?;
        let key = self.key(rel)?;
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Multipart uploads in progress under `dir_rel` (`""` for the whole prefix).
    pub async fn list_uploads(&self, dir_rel: &str) -> StoreResult<Vec<UploadInfo>> {
        check_dir_rel(dir_rel)?;
        let prefix = self.key(dir_rel)?;
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id())
                    && let Some(rel) = k.strip_prefix(&self.prefix)
                {
                    out.push(UploadInfo {
                        rel: rel.to_owned(),
                        upload_id: id.to_owned(),
                        initiated: u.initiated().and_then(|t| SystemTime::try_from(*t).ok()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// DeleteObject of a file (`a/b`) or a directory marker (`a/b/`). Deleting a key that
    /// does not exist succeeds, as in S3.
    pub async fn delete(&self, rel: &str) -> StoreResult<()> {
        check_segments(rel)?;
        let key = self.key(rel)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match StoreError::from_sdk(e) {
                StoreError::NotFound => Ok(()),
                e => Err(e),
            },
        }
    }

    /// CopyObject `src` → `dst` (both files, or both markers ending in `/`). `meta: None`
    /// keeps the source's metadata (directive COPY); `Some` replaces it (REPLACE), which is
    /// also how metadata of an object is changed in place (`src == dst`). Returns the etag.
    pub async fn copy(&self, src: &str, dst: &str, meta: Option<Meta>) -> StoreResult<String> {
        use aws_sdk_s3::types::MetadataDirective;
        check_segments(src)?;
        check_segments(dst)?;
        if src.ends_with('/') != dst.ends_with('/') {
            return Err(StoreError::InvalidPath(dst.to_owned()));
        }
        let src_key = self.key(src)?;
        let dst_key = self.key(dst)?;
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(&dst_key)
            .copy_source(encode_copy_source(&format!("{}/{}", self.bucket, src_key)));
        req = match meta {
            None => req.metadata_directive(MetadataDirective::Copy),
            Some(m) => req
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(m.to_map()),
        };
        let out = match req.send().await {
            Ok(out) => out,
            // S3 copies at most 5 GiB in one CopyObject; bigger objects go part by part.
            Err(e)
                if e.code() == Some("InvalidRequest")
                    && DisplayErrorContext(&e)
                        .to_string()
                        .contains("copy source is larger") =>
            {
                return self.copy_by_parts(&src_key, dst, meta).await;
            }
            Err(e) => return Err(StoreError::from_sdk(e)),
        };
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_owned())
    }

    /// CopyObject for objects over S3's single-copy limit: a multipart upload whose parts
    /// are UploadPartCopy ranges of the source, aborted if any part fails.
    async fn copy_by_parts(
        &self,
        src_key: &str,
        dst: &str,
        meta: Option<Meta>,
    ) -> StoreResult<String> {
        use futures::{StreamExt, TryStreamExt};
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(src_key)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        let metadata = match meta {
            Some(m) => m.to_map(),
            None => head.metadata().cloned(),
        };
        let dst_key = self.key(dst)?;
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&dst_key)
            .set_metadata(metadata)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let upload_id = upload.upload_id().unwrap_or_default().to_owned();
        let source = encode_copy_source(&format!("{}/{}", self.bucket, src_key));
        let ranges: Vec<(i32, u64, u64)> = (0..size.div_ceil(COPY_PART_SIZE).max(1))
            .map(|i| {
                (
                    i as i32 + 1,
                    i * COPY_PART_SIZE,
                    ((i + 1) * COPY_PART_SIZE).min(size),
                )
            })
            .collect();
        let parts: StoreResult<Vec<PartDone>> = futures::stream::iter(ranges)
            .map(|(number, start, end)| {
                let req = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(&dst_key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{}", end.max(start + 1) - 1));
                async move {
                    let out = req.send().await.map_err(StoreError::from_sdk)?;
                    let etag = out
                        .copy_part_result()
                        .and_then(|r| r.e_tag())
                        .unwrap_or_default()
                        .to_owned();
                    Ok(PartDone { number, etag })
                }
            })
            .buffer_unordered(4)
            .try_collect()
            .await;
        let result = match parts {
            Ok(parts) => self.complete_multipart(dst, &upload_id, parts).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = self.abort_multipart(dst, &upload_id).await;
        }
        result
    }

    /// Every key under `dir_rel` (no delimiter), names relative to `dir_rel`; the marker
    /// of `dir_rel` itself, if any, has the name `""`.
    pub async fn list_recursive(&self, dir_rel: &str) -> StoreResult<Vec<ObjectInfo>> {
        check_dir_rel(dir_rel)?;
        let prefix = self.key(dir_rel)?;
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(next.take())
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            for o in page.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(&prefix)) {
                    out.push(ObjectInfo {
                        name: name.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        etag: o.e_tag().unwrap_or_default().to_owned(),
                        last_modified: to_system_time(o.last_modified()),
                        mtime: None,
                        mode: None,
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            next = page.next_continuation_token().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_cannot_escape_the_prefix() {
        for bad in [
            "", "/", "/a", "a//b", "../x", "a/../b", "./a", "a/.", "a\0b", "a/", "..",
        ] {
            assert!(check_object_rel(bad).is_err(), "{bad:?} accepted as object");
        }
        for bad in ["/", "a", "a//", "../", "a/./", "//"] {
            assert!(check_dir_rel(bad).is_err(), "{bad:?} accepted as dir");
        }
        assert!(check_object_rel(&"x".repeat(256)).is_err());
        for good in ["a", "a/b", "a b/ü.txt", "...", "a:b"] {
            check_object_rel(good).unwrap();
        }
        for good in ["", "a/", "a/b/"] {
            check_dir_rel(good).unwrap();
        }
    }

    #[test]
    fn mtime_parses_seconds_and_nanos() {
        let t = |s, n| SystemTime::UNIX_EPOCH + Duration::new(s, n);
        assert_eq!(parse_mtime("12"), Some(t(12, 0)));
        assert_eq!(parse_mtime("12.5"), Some(t(12, 500_000_000)));
        assert_eq!(parse_mtime("12.000000001"), Some(t(12, 1)));
        assert_eq!(parse_mtime("x"), None);
        assert_eq!(parse_mtime("1.0000000001"), None);
        assert_eq!(parse_mtime("-1"), None);
    }

    #[test]
    fn errnos() {
        assert_eq!(StoreError::NotFound.errno(), libc::ENOENT);
        assert_eq!(StoreError::AccessDenied("x".into()).errno(), libc::EACCES);
        assert_eq!(StoreError::Changed.errno(), libc::EIO);
        assert_eq!(StoreError::KeyTooLong.errno(), libc::ENAMETOOLONG);
        assert_eq!(StoreError::Other("503".into()).errno(), libc::EIO);
        assert_eq!(StoreError::NoSpace.errno(), libc::ENOSPC);
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(StoreError::from(full).errno(), libc::ENOSPC);
    }

    #[test]
    fn metadata_round_trips() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(12, 5);
        assert_eq!(format_mtime(t), "12.000000005");
        assert_eq!(parse_mtime(&format_mtime(t)), Some(t));
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("x"), None);
        let m = Meta {
            mtime: Some(t),
            mode: Some(0o600),
        }
        .to_map()
        .unwrap();
        assert_eq!(m["mode"], "600");
        assert_eq!(
            encode_copy_source("b/a b#%+?ü"),
            "b/a%20b%23%25%2B%3F%C3%BC"
        );
    }
}
