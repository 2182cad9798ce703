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
        Ok(Some(ObjectInfo {
            name: rel.rsplit('/').next().unwrap_or(rel).to_owned(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_owned(),
            last_modified: to_system_time(out.last_modified()),
            mtime,
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
    }
}
