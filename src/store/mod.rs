//! The object-store seam: the only way the filesystem reaches S3.
//!
//! [`ObjectStore`] is what `fs/` needs of S3, in S3's own terms (keys, etags, user
//! metadata, multipart uploads) and nothing more: no inodes, no errnos, no file modes. Two
//! implementations: [`S3Store`] speaks S3 through aws-sdk-s3 (the only code in the crate that
//! does), and [`MemoryStore`] keeps objects in memory for tests, with injected failures,
//! latency and request counts.
//!
//! A store is scoped to one key prefix (`<identity-id>/`). Every method takes a path
//! *relative* to that prefix, validated segment by segment by [`Scope`], so no key outside
//! the prefix can be formed through this API: there is no `..`, no empty segment, no leading
//! `/`. Both implementations share that check.

mod conditions;
pub mod counting;
mod memory;
mod profile;
pub mod reach;
mod renewing;
mod s3;

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

pub use conditions::{ConditionSupport, EmulatedConditions, checked_store, probe_conditions};
pub use counting::{CountingStore, LastError, RequestCount, RequestStats};
pub use memory::{Fault, MemoryStore, RequestCounts};
pub use profile::{ProfileStore, profile_store};
pub use reach::{Connectivity, Reach, ReachState};
pub use renewing::{Renewer, RenewingStore};
pub use s3::{S3Store, s3_client};

/// S3's limit on a whole key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The most keys [`ObjectStore::list_recursive`] returns (about 200 bytes each in memory):
/// past it, [`StoreError::TooManyKeys`], and a directory rename is refused with `EXDEV`
/// (`mv` then moves the tree itself, file by file).
pub const MAX_RECURSIVE_KEYS: usize = 100_000;

/// User metadata of an object: `x-amz-meta-NAME` headers, keyed by `NAME` (lowercase, as S3
/// returns them). What the keys mean is the filesystem's business (`fs/meta.rs`).
pub type UserMeta = BTreeMap<String, String>;

/// A kind of S3 request: what the counting store reports (`cognifs status`, `/metrics`)
/// and what the memory store counts and aims injected failures at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    Head,
    List,
    Get,
    Put,
    CreateMultipart,
    UploadPart,
    CompleteMultipart,
    AbortMultipart,
    ListUploads,
    Delete,
    Copy,
}

impl RequestKind {
    pub const ALL: [RequestKind; 11] = [
        RequestKind::Head,
        RequestKind::List,
        RequestKind::Get,
        RequestKind::Put,
        RequestKind::CreateMultipart,
        RequestKind::UploadPart,
        RequestKind::CompleteMultipart,
        RequestKind::AbortMultipart,
        RequestKind::ListUploads,
        RequestKind::Delete,
        RequestKind::Copy,
    ];

    /// The stable name (JSON key, Prometheus `kind` label).
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Head => "head",
            RequestKind::List => "list",
            RequestKind::Get => "get",
            RequestKind::Put => "put",
            RequestKind::CreateMultipart => "create_multipart",
            RequestKind::UploadPart => "upload_part",
            RequestKind::CompleteMultipart => "complete_multipart",
            RequestKind::AbortMultipart => "abort_multipart",
            RequestKind::ListUploads => "list_uploads",
            RequestKind::Delete => "delete",
            RequestKind::Copy => "copy",
        }
    }
}

/// One object as a listing or HEAD reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the listed directory (for `head`, the last path segment). Raw: may be
    /// empty or otherwise unusable as a file name; the fs layer decides what to hide.
    pub name: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    /// The object's user metadata; `None` from a listing, which carries none.
    pub meta: Option<UserMeta>,
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

/// What a write expects to find at its key: S3's conditional-write headers. Every write the
/// filesystem makes names one, so that it never replaces a version it did not start from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expect {
    /// Whatever is there (no header): other clients in tests, the mount's own probe key.
    Anything,
    /// No object at the key (`If-None-Match: *`).
    Absent,
    /// The object with this etag (`If-Match`).
    Version(String),
}

impl Expect {
    /// `Version(etag)`, or `Absent` for no (or an empty) etag: what a writer that started
    /// from `etag` expects.
    pub fn from_base(etag: Option<&str>) -> Self {
        match etag {
            Some(e) if !e.is_empty() => Expect::Version(e.to_owned()),
            _ => Expect::Absent,
        }
    }

    /// Whether a key whose object has etag `current` (`None`: no object) meets this
    /// condition, as S3 judges it: [`StoreError::Changed`] (412) if not, or
    /// [`StoreError::NotFound`] (404) for `Version` on a missing key. Etags compare without
    /// their quotes.
    pub fn check(&self, current: Option<&str>) -> StoreResult<()> {
        match (self, current) {
            (Expect::Anything, _) | (Expect::Absent, None) => Ok(()),
            (Expect::Absent, Some(_)) => Err(StoreError::Changed),
            (Expect::Version(_), None) => Err(StoreError::NotFound),
            (Expect::Version(e), Some(c)) if e.trim_matches('"') == c.trim_matches('"') => Ok(()),
            (Expect::Version(_), Some(_)) => Err(StoreError::Changed),
        }
    }

    /// The `If-Match` and `If-None-Match` header values.
    pub fn headers(&self) -> (Option<String>, Option<String>) {
        match self {
            Expect::Anything => (None, None),
            Expect::Absent => (None, Some("*".to_owned())),
            Expect::Version(e) => (Some(e.clone()), None),
        }
    }
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

/// What went wrong, in S3's terms. The filesystem picks the errno (`fs/error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such key")]
    NotFound,
    /// Denied, or the credentials are missing, expired or revoked (the code says which).
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The object is not the version the request named (412): a read pinned to an etag, or
    /// a conditional write that another writer got to first.
    #[error("the object is not the version expected (changed by another client)")]
    Changed,
    /// Two conditional writes of one key raced (409 `ConditionalRequestConflict`): start over.
    #[error("a conditional write raced another (409 ConditionalRequestConflict)")]
    Raced,
    #[error("key too long")]
    KeyTooLong,
    #[error("invalid relative path {0:?}")]
    InvalidPath(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// S3 could not be reached: connection refused or reset, no route, DNS failure (after
    /// the SDK's retries). With [`StoreError::Timeout`], what makes a mount offline.
    #[error("S3 unreachable: {0}")]
    Unreachable(String),
    /// A recursive listing found more than [`MAX_RECURSIVE_KEYS`] keys.
    #[error("more than {MAX_RECURSIVE_KEYS} keys below one directory")]
    TooManyKeys,
    /// The local spool (or a file being uploaded) could not be written: disk full.
    #[error("no space left in the local spool")]
    NoSpace,
    /// Larger than an object can be (S3: 5 TiB) or than the spool's filesystem allows.
    #[error("file too large")]
    TooLarge,
    /// A local file could not be read or written for a reason other than space.
    #[error("local I/O: {0}")]
    Local(String),
    /// Throttling and 5xx after retries, transport failures, malformed replies.
    #[error("S3 error: {0}")]
    Other(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => StoreError::NoSpace,
            Some(libc::EFBIG) => StoreError::TooLarge,
            _ => StoreError::Local(e.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// S3 error codes that mean "these credentials are no longer good" (expired, revoked, or
/// signed at a time S3 disagrees with): a renewal fixes them, unlike a policy's denial.
pub const STALE_CREDENTIAL_CODES: &[&str] = &[
    "ExpiredToken",
    "InvalidToken",
    "InvalidAccessKeyId",
    "RequestTimeTooSkewed",
    "TokenRefreshRequired",
    // A HEAD refused with 403 carries no error code. Within the mount's own prefix a policy
    // allows everything, so stale credentials are the likely cause: renew and retry once.
    "Forbidden",
];

impl StoreError {
    /// S3 did not answer (unreachable, timed out): a request that would not have been
    /// refused. What the mount's offline state is about; never an answer of S3's.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unreachable(_) | StoreError::Timeout(_))
    }

    /// Refused because the credentials are stale (see [`STALE_CREDENTIAL_CODES`]).
    pub fn is_stale_credentials(&self) -> bool {
        matches!(self, StoreError::AccessDenied(code) if STALE_CREDENTIAL_CODES.contains(&code.as_str()))
    }
}

/// The key prefix a store is confined to, and the rules for paths relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    prefix: String,
}

impl Scope {
    /// `prefix` is the identity's key prefix, e.g. `us-east-1:uuid/`; a missing trailing
    /// `/` is added so that `abc` can never reach `abcd/...`.
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Scope { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full_key(&self, rel: &str) -> StoreResult<String> {
        let key = format!("{}{}", self.prefix, rel);
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::KeyTooLong);
        }
        Ok(key)
    }

    /// The key of an object: `rel` is `seg(/seg)*`.
    pub fn object_key(&self, rel: &str) -> StoreResult<String> {
        if rel.ends_with('/') {
            return Err(StoreError::InvalidPath(rel.to_owned()));
        }
        check_segments(rel)?;
        self.full_key(rel)
    }

    /// The key of a directory (a listing prefix or a marker): `""` or `seg(/seg)*/`.
    pub fn dir_key(&self, rel: &str) -> StoreResult<String> {
        if !rel.is_empty() {
            if !rel.ends_with('/') {
                return Err(StoreError::InvalidPath(rel.to_owned()));
            }
            check_segments(rel)?;
        }
        self.full_key(rel)
    }

    /// The key of an object or of a directory marker (`rel` ending in `/`). `""` is the
    /// marker of the prefix itself (the mount's root; s3fs reads a mount point's attributes
    /// there too), when there is a prefix.
    pub fn entry_key(&self, rel: &str) -> StoreResult<String> {
        if rel.is_empty() && !self.prefix.is_empty() {
            return Ok(self.prefix.clone());
        }
        check_segments(rel)?;
        self.full_key(rel)
    }

    /// `key` relative to the prefix, if it lies under it.
    pub fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.prefix)
    }
}

/// Every byte but `[A-Za-z0-9-_.~/]`: s3fs's `urlEncode` set.
pub const S3FS_URL_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes every byte but `[A-Za-z0-9-_.~/]` (uppercase hex): what
/// `x-amz-copy-source` wants, and exactly s3fs's `urlEncode` (its `x-amz-meta-xattr` layout).
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, S3FS_URL_ENCODE).to_string()
}

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

/// Receives the pieces of [`ObjectStore::get_range_pieces`]: their index and bytes.
pub type PieceSink<'a> = dyn Fn(usize, Bytes) + Send + Sync + 'a;

/// Err unless a ranged GET of `len` bytes from `start` returned all of them.
pub fn check_length(got: u64, start: u64, len: u64) -> StoreResult<()> {
    if got == len {
        Ok(())
    } else {
        Err(StoreError::Other(format!(
            "short read: {got} of {len} bytes at {start}"
        )))
    }
}

/// What the filesystem needs of S3, scoped to one prefix. Paths are relative to it (see
/// [`Scope`]): objects `a/b`, directories `""` or `a/b/`.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    fn bucket(&self) -> &str;

    fn scope(&self) -> &Scope;

    fn prefix(&self) -> &str {
        self.scope().prefix()
    }

    /// Fails with [`StoreError::KeyTooLong`] / [`StoreError::InvalidPath`] when `rel`
    /// cannot name an object; lets callers refuse a name before any data is written.
    fn check_object(&self, rel: &str) -> StoreResult<()> {
        self.scope().object_key(rel).map(drop)
    }

    /// HEAD an object or a directory marker (`a/`, `""` for the prefix's), with its user
    /// metadata; `Ok(None)` when it does not exist.
    async fn head(&self, rel: &str) -> StoreResult<Option<ObjectInfo>>;

    /// One page (at most `max_keys` entries) of the directory `dir_rel`, delimited by `/`.
    async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage>;

    /// Every key under `dir_rel` (no delimiter), names relative to `dir_rel`; the marker of
    /// `dir_rel` itself, if any, has the name `""`. At most [`MAX_RECURSIVE_KEYS`]; past
    /// that, [`StoreError::TooManyKeys`], without holding more.
    async fn list_recursive(&self, dir_rel: &str) -> StoreResult<Vec<ObjectInfo>>;

    /// `len` bytes from `start`, only if the object still has `if_match_etag` (otherwise
    /// [`StoreError::Changed`]).
    async fn get_range(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Bytes>;

    /// The whole object at `rel`, whatever its version: `None` if there is none,
    /// [`StoreError::TooLarge`] if it holds more than `max` bytes (of which at most
    /// `max + 1` are fetched). For small objects read whole, in one request where the store
    /// can (the default asks for the size first).
    async fn get_small(&self, rel: &str, max: u64) -> StoreResult<Option<Bytes>> {
        let Some(info) = self.head(rel).await? else {
            return Ok(None);
        };
        if info.size > max {
            return Err(StoreError::TooLarge);
        }
        match self.get_range(rel, &info.etag, 0, info.size).await {
            Ok(body) => Ok(Some(body)),
            // Replaced or deleted between the two requests: as if read a moment later.
            Err(StoreError::Changed | StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The same bytes as [`ObjectStore::get_range`], handed to `on_piece(index, bytes)` in
    /// pieces of `piece` bytes (the last may be shorter) as each arrives, so a reader
    /// waiting for the start of a large GET need not wait for its end, and each piece is an
    /// allocation of its own (cached and freed on its own). A piece may be handed over
    /// twice when the request is retried; Err after some pieces: the rest never came.
    async fn get_range_pieces(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
        piece: u64,
        on_piece: &PieceSink<'_>,
    ) -> StoreResult<()> {
        let data = self.get_range(rel, if_match_etag, start, len).await?;
        check_length(data.len() as u64, start, len)?;
        for (i, from) in (0..len).step_by(piece.max(1) as usize).enumerate() {
            let to = (from + piece).min(len);
            on_piece(i, data.slice(from as usize..to as usize));
        }
        Ok(())
    }

    /// PutObject of a whole body (an object, or a directory marker when `rel` ends in `/`),
    /// only if the key holds what `expect` says ([`StoreError::Changed`] if not; for
    /// `Version` on a missing key, [`StoreError::NotFound`]); returns the new etag.
    async fn put_if(
        &self,
        rel: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<String>;

    /// An unconditional [`ObjectStore::put_if`], as another client writes (tests).
    async fn put(&self, rel: &str, body: Bytes, meta: &UserMeta) -> StoreResult<String> {
        self.put_if(rel, body, meta, &Expect::Anything).await
    }

    async fn create_multipart(&self, rel: &str, meta: &UserMeta) -> StoreResult<String>;

    /// Uploads part `number` (1-based).
    async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<PartDone>;

    /// Completes an upload from its parts (any order) if the key holds what `expect` says
    /// (as for [`ObjectStore::put_if`]; two racing completes: [`StoreError::Raced`]);
    /// returns the etag.
    async fn complete_multipart_if(
        &self,
        rel: &str,
        upload_id: &str,
        parts: Vec<PartDone>,
        expect: &Expect,
    ) -> StoreResult<String>;

    /// An unconditional [`ObjectStore::complete_multipart_if`].
    async fn complete_multipart(
        &self,
        rel: &str,
        upload_id: &str,
        parts: Vec<PartDone>,
    ) -> StoreResult<String> {
        self.complete_multipart_if(rel, upload_id, parts, &Expect::Anything)
            .await
    }

    async fn abort_multipart(&self, rel: &str, upload_id: &str) -> StoreResult<()>;

    /// Multipart uploads in progress under `dir_rel` (`""` for the whole prefix).
    async fn list_uploads(&self, dir_rel: &str) -> StoreResult<Vec<UploadInfo>>;

    /// DeleteObject of a file (`a/b`) or a directory marker (`a/b/`), only if it is the
    /// version `expect` names (`Version`; [`StoreError::Changed`] if not; `Absent` is taken
    /// as `Anything`). Deleting a key that does not exist succeeds, as in S3.
    async fn delete_if(&self, rel: &str, expect: &Expect) -> StoreResult<()>;

    /// An unconditional [`ObjectStore::delete_if`].
    async fn delete(&self, rel: &str) -> StoreResult<()> {
        self.delete_if(rel, &Expect::Anything).await
    }

    /// CopyObject `src` → `dst` (both files, or both markers ending in `/`), of any size,
    /// only if the source has `src_etag` (when given) and `dst` holds what `expect` says
    /// ([`StoreError::Changed`] if either fails). `meta: None` keeps the source's
    /// metadata; `Some` replaces it, which is also how the metadata of an object is changed
    /// in place (`src == dst`). Returns the new etag.
    async fn copy_if(
        &self,
        src: &str,
        src_etag: Option<&str>,
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &Expect,
    ) -> StoreResult<String>;

    /// An unconditional [`ObjectStore::copy_if`].
    async fn copy(&self, src: &str, dst: &str, meta: Option<&UserMeta>) -> StoreResult<String> {
        self.copy_if(src, None, dst, meta, &Expect::Anything).await
    }

    /// Can the prefix be listed? (AWS policy forbids HeadBucket for these identities.)
    async fn check_access(&self) -> StoreResult<()> {
        self.list_page("", None, 1).await.map(drop)
    }

    /// Does S3 answer at all? One request of one key, tried once: what an offline mount
    /// asks every few seconds, and what confirms that a request with no answer means an
    /// outage ([`reach::Reach`]). Any answer, a refusal included, is `Ok`-or-refusal;
    /// no answer is [`StoreError::is_unreachable`].
    async fn probe(&self) -> StoreResult<()> {
        self.list_page("", None, 1).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_cannot_escape_the_prefix() {
        let s = Scope::new("p");
        assert_eq!(s.prefix(), "p/");
        for bad in [
            "", "/", "/a", "a//b", "../x", "a/../b", "./a", "a/.", "a\0b", "a/", "..",
        ] {
            assert!(s.object_key(bad).is_err(), "{bad:?} accepted as object");
        }
        for bad in ["/", "a", "a//", "../", "a/./", "//"] {
            assert!(s.dir_key(bad).is_err(), "{bad:?} accepted as dir");
        }
        assert!(s.object_key(&"x".repeat(256)).is_err());
        for good in ["a", "a/b", "a b/ü.txt", "...", "a:b"] {
            assert_eq!(s.object_key(good).unwrap(), format!("p/{good}"));
        }
        for good in ["", "a/", "a/b/"] {
            s.dir_key(good).unwrap();
        }
        assert_eq!(s.entry_key("").unwrap(), "p/");
        assert!(Scope::new("").entry_key("").is_err());
        assert!(matches!(
            s.object_key(&"a/".repeat(600)[..1100]),
            Err(StoreError::InvalidPath(_) | StoreError::KeyTooLong)
        ));
        let long = format!(
            "{}/{}/{}/x",
            "a".repeat(255),
            "b".repeat(255),
            "c".repeat(255)
        );
        assert!(s.object_key(&long).is_ok());
        let too_long = format!("{long}/{}", "d".repeat(255));
        assert!(matches!(
            s.object_key(&too_long),
            Err(StoreError::KeyTooLong)
        ));
    }

    #[test]
    fn disk_full_is_its_own_error() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(StoreError::from(full), StoreError::NoSpace));
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(StoreError::from(other), StoreError::Local(_)));
    }
}
