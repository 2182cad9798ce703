//! Object storage behind devstack's S3 endpoint.
//!
//! Keys are arbitrary strings, so nothing about a key touches the file system: every body is a
//! file under `blobs/` named by a random id, and an index maps key → (blob, size, etag,
//! last-modified, user metadata, content type). That is what lets a marker `d/` sit beside
//! `d/f`, and `a` beside `a/b`, which a key-to-path mapping cannot hold.
//!
//! Durability: the index lives in memory and is mirrored by an append-only journal
//! (`index.jsonl`, one JSON record per put or delete), appended only after the blob it names
//! is complete on disk. On open the journal is replayed, rewritten compactly, and blobs no
//! record names (left by a crash mid-upload) are removed. Blobs are immutable once written:
//! an overwrite writes a new blob, so a reader that opened the old one keeps reading
//! consistent bytes, and CopyObject is a hard link.
//!
//! Multipart uploads live under `uploads/{id}/` (`upload.json` plus one file per part) until
//! completed or aborted; they survive a restart too.
//!
//! Conditional writes ([`Precondition`], [`WriteCheck`]) are checked under the index lock in
//! the same critical section that commits the write, so no other write of the key can come
//! between check and commit. A conditional write in progress holds a [`WriteMarker`]: a
//! CompleteMultipartUpload that finds one on its key is refused ([`StoreError::Conflict`],
//! S3's `409 ConditionalRequestConflict`), as is a marked write whose key was deleted while it
//! was in progress.
//!
//! This file holds the store and its object operations (put, get, delete, copy, list); the
//! journal is in `journal.rs` and multipart uploads in `multipart.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use journal::JournalRecord;
use multipart::Upload;
pub use multipart::{MIN_PART_SIZE, PartInfo, UploadInfo};

mod journal;
mod multipart;

/// What the index knows about one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectMeta {
    pub blob: String,
    pub size: u64,
    /// Without quotes: hex MD5, or `hex-N` for a multipart object.
    pub etag: String,
    /// Nanoseconds since the Unix epoch.
    pub last_modified_ns: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub content_type: Option<String>,
}

impl ObjectMeta {
    pub fn last_modified(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.last_modified_ns)
    }
}

/// Attributes the caller sets on a new object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewObjectAttrs {
    pub metadata: BTreeMap<String, String>,
    pub content_type: Option<String>,
}

struct Index {
    objects: BTreeMap<String, ObjectMeta>,
    uploads: HashMap<String, Upload>,
    journal: File,
    /// Conditional writes in progress, by key ([`WriteMarker`]).
    writing: HashMap<String, Vec<Writing>>,
    next_write_id: u64,
}

/// One conditional write in progress.
struct Writing {
    id: u64,
    /// The key was deleted while it was in progress: it must not commit.
    conflicted: bool,
}

/// What a conditional write or delete requires of the key's current object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `If-None-Match: *`: no object at the key.
    Absent,
    /// `If-Match: *`: an object at the key.
    Exists,
    /// `If-Match: <etag>`: an object at the key with this etag (quoted or not).
    Etag(String),
    /// `x-amz-copy-source-if-none-match: <etag>`: an object at the key with another etag.
    NotEtag(String),
}

impl Precondition {
    /// Ok, or what S3 answers: `NoSuchKey` when an object is required and there is none,
    /// else `PreconditionFailed`.
    pub fn check(&self, current: Option<&ObjectMeta>) -> Result<(), StoreError> {
        match (self, current) {
            (Precondition::Absent, None) => Ok(()),
            (Precondition::Absent, Some(_)) => Err(StoreError::PreconditionFailed),
            (_, None) => Err(StoreError::NoSuchKey),
            (Precondition::Exists, Some(_)) => Ok(()),
            (Precondition::Etag(e), Some(m)) if same_etag(e, &m.etag) => Ok(()),
            (Precondition::NotEtag(e), Some(m)) if !same_etag(e, &m.etag) => Ok(()),
            _ => Err(StoreError::PreconditionFailed),
        }
    }
}

/// Whether two etags name the same version: compared by value, quoted or not (S3 takes
/// either), strong or weak (`W/"…"`).
pub fn same_etag(a: &str, b: &str) -> bool {
    fn bare(e: &str) -> &str {
        let e = e.trim();
        e.strip_prefix("W/").unwrap_or(e).trim_matches('"')
    }
    bare(a) == bare(b)
}

/// What must hold for a write to commit; the default: nothing.
#[derive(Default)]
pub struct WriteCheck<'a> {
    /// Each must hold, checked atomically with the commit.
    pub preconditions: Vec<Precondition>,
    /// The write's in-progress marker, if it is a conditional one: when the key was deleted
    /// since the marker was taken, the write fails with [`StoreError::Conflict`].
    pub marker: Option<&'a WriteMarker<'a>>,
    /// PutObject's Content-MD5, in hex: a body that hashes otherwise is `BadDigest`, and
    /// nothing is written.
    pub md5: Option<String>,
}

/// A conditional write of one key in progress ([`ObjectStore::begin_conditional_write`]),
/// until dropped.
pub struct WriteMarker<'a> {
    store: &'a ObjectStore,
    key: String,
    id: u64,
}

impl Drop for WriteMarker<'_> {
    fn drop(&mut self) {
        let mut index = self
            .store
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = index.writing.get_mut(&self.key) {
            list.retain(|w| w.id != self.id);
            if list.is_empty() {
                index.writing.remove(&self.key);
            }
        }
    }
}

/// A body on disk under `tmp/`, not yet any key's ([`ObjectStore::stage`]); removed if
/// dropped uncommitted.
pub struct Staged {
    tmp: Option<PathBuf>,
    blob: String,
    pub size: u64,
    /// Hex MD5 of the body.
    pub etag: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

impl Index {
    /// Whether `check` holds for a write of `key` now.
    fn check(&self, key: &str, check: &WriteCheck<'_>) -> Result<(), StoreError> {
        if let Some(marker) = check.marker {
            let conflicted = self
                .writing
                .get(&marker.key)
                .and_then(|list| list.iter().find(|w| w.id == marker.id))
                .is_some_and(|w| w.conflicted);
            if conflicted {
                return Err(StoreError::Conflict);
            }
        }
        let current = self.objects.get(key);
        check
            .preconditions
            .iter()
            .try_for_each(|p| p.check(current))
    }

    /// Makes `meta` the current version of `key` if `check` holds; returns the version it
    /// replaces.
    fn commit(
        &mut self,
        key: &str,
        meta: &ObjectMeta,
        check: &WriteCheck<'_>,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        self.check(key, check)?;
        journal::append(
            &mut self.journal,
            &JournalRecord::Put {
                key: key.to_owned(),
                meta: meta.clone(),
            },
        )?;
        Ok(self.objects.insert(key.to_owned(), meta.clone()))
    }

    /// Removes `key`'s object, if any; a conditional write of the key in progress then fails.
    fn remove(&mut self, key: &str) -> io::Result<Option<ObjectMeta>> {
        if !self.objects.contains_key(key) {
            return Ok(None);
        }
        journal::append(
            &mut self.journal,
            &JournalRecord::Del {
                key: key.to_owned(),
            },
        )?;
        if let Some(list) = self.writing.get_mut(key) {
            for w in list {
                w.conflicted = true;
            }
        }
        Ok(self.objects.remove(key))
    }
}

pub struct ObjectStore {
    root: PathBuf,
    index: Mutex<Index>,
}

/// One entry of a delimited listing, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntry {
    Object(String, ObjectMeta),
    CommonPrefix(String),
}

pub struct ListPage {
    pub entries: Vec<ListEntry>,
    /// Opaque resume point when the page was cut at `max_keys`.
    pub next_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such key")]
    NoSuchKey,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("part order is not ascending")]
    InvalidPartOrder,
    #[error("a part other than the last is smaller than 5 MiB")]
    EntityTooSmall,
    #[error("invalid continuation token")]
    InvalidToken,
    /// A write's or delete's precondition does not hold (412).
    #[error("a precondition does not hold")]
    PreconditionFailed,
    /// Another conditional write of the key is in progress, or the key was deleted while this
    /// one was (409 `ConditionalRequestConflict`).
    #[error("a conflicting conditional write is in progress")]
    Conflict,
    /// The body does not hash to its Content-MD5.
    #[error("the body does not match its Content-MD5")]
    BadDigest,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("body stream failed: {0}")]
    Body(String),
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The last code point: every key that starts with `p` sorts below `p + SENTINEL`
/// unless its next character is that very code point, which the listing loop still checks.
const SENTINEL: char = char::MAX;

impl ObjectStore {
    /// Opens (or creates) a store in `root`, replaying and compacting its journal.
    pub fn open(root: &Path) -> io::Result<Self> {
        for dir in ["blobs", "uploads", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        // Partial bodies from a crash are garbage by definition.
        for entry in fs::read_dir(root.join("tmp"))? {
            let _ = fs::remove_file(entry?.path());
        }
        let journal_path = root.join("index.jsonl");
        let objects = journal::replay(&journal_path)?;
        // Compact: one record per live object.
        journal::compact(&journal_path, &objects)?;
        let live: std::collections::HashSet<&str> =
            objects.values().map(|m| m.blob.as_str()).collect();
        for entry in fs::read_dir(root.join("blobs"))? {
            let entry = entry?;
            if !live.contains(entry.file_name().to_string_lossy().as_ref()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        let uploads = Self::load_uploads(&root.join("uploads"))?;
        let journal = OpenOptions::new().append(true).open(&journal_path)?;
        Ok(Self {
            root: root.to_path_buf(),
            index: Mutex::new(Index {
                objects,
                uploads,
                journal,
                writing: HashMap::new(),
                next_write_id: 0,
            }),
        })
    }

    fn blob_path(&self, blob: &str) -> PathBuf {
        self.root.join("blobs").join(blob)
    }

    /// Streams a body into `path`, returning (size, hex md5).
    async fn write_stream<S, E>(path: &Path, mut body: S) -> Result<(u64, String), StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let file = tokio::fs::File::create(path).await?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Md5::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    drop(out);
                    let _ = tokio::fs::remove_file(path).await;
                    return Err(StoreError::Body(e.to_string()));
                }
            };
            hasher.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok((size, hex::encode(hasher.finalize())))
    }

    /// Makes `meta` (its blob already under `blobs/`) the current version of `key` if `check`
    /// holds, and drops the blob it replaces; if `check` does not hold, drops `meta`'s blob.
    fn commit(
        &self,
        key: &str,
        meta: &ObjectMeta,
        check: &WriteCheck<'_>,
    ) -> Result<(), StoreError> {
        let committed = self.index.lock().unwrap().commit(key, meta, check);
        match committed {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    let _ = fs::remove_file(self.blob_path(&old.blob));
                }
                Ok(())
            }
            Err(err) => {
                let _ = fs::remove_file(self.blob_path(&meta.blob));
                Err(err)
            }
        }
    }

    /// Marks a conditional write of `key` as in progress until the marker is dropped.
    /// `exclusive` (a CompleteMultipartUpload): refused with [`StoreError::Conflict`] when
    /// another conditional write of `key` is in progress.
    pub fn begin_conditional_write(
        &self,
        key: &str,
        exclusive: bool,
    ) -> Result<WriteMarker<'_>, StoreError> {
        let mut index = self.index.lock().unwrap();
        if exclusive && index.writing.contains_key(key) {
            return Err(StoreError::Conflict);
        }
        index.next_write_id += 1;
        let id = index.next_write_id;
        index
            .writing
            .entry(key.to_owned())
            .or_default()
            .push(Writing {
                id,
                conflicted: false,
            });
        Ok(WriteMarker {
            store: self,
            key: key.to_owned(),
            id,
        })
    }

    /// How many conditional writes of `key` are in progress.
    pub fn conditional_writes_in_progress(&self, key: &str) -> usize {
        self.index
            .lock()
            .unwrap()
            .writing
            .get(key)
            .map_or(0, Vec::len)
    }

    pub async fn put<S, E>(
        &self,
        key: &str,
        body: S,
        attrs: NewObjectAttrs,
    ) -> Result<ObjectMeta, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.put_if(key, body, attrs, &WriteCheck::default()).await
    }

    /// A PutObject: the body becomes `key`'s object if `check` holds once it is all in.
    pub async fn put_if<S, E>(
        &self,
        key: &str,
        body: S,
        attrs: NewObjectAttrs,
        check: &WriteCheck<'_>,
    ) -> Result<ObjectMeta, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let staged = self.stage(body).await?;
        self.commit_staged(key, staged, attrs, check)
    }

    /// Writes a body to disk, as no key's object yet: [`ObjectStore::commit_staged`] makes it one.
    pub async fn stage<S, E>(&self, body: S) -> Result<Staged, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let blob = new_id();
        let tmp = self.root.join("tmp").join(&blob);
        let (size, etag) = Self::write_stream(&tmp, body).await?;
        Ok(Staged {
            tmp: Some(tmp),
            blob,
            size,
            etag,
        })
    }

    /// Makes a staged body `key`'s object if `check` holds (atomically with the commit).
    pub fn commit_staged(
        &self,
        key: &str,
        mut staged: Staged,
        attrs: NewObjectAttrs,
        check: &WriteCheck<'_>,
    ) -> Result<ObjectMeta, StoreError> {
        if check
            .md5
            .as_ref()
            .is_some_and(|md5| !md5.eq_ignore_ascii_case(&staged.etag))
        {
            return Err(StoreError::BadDigest);
        }
        let tmp = staged.tmp.take().expect("a staged body is committed once");
        if let Err(err) = fs::rename(&tmp, self.blob_path(&staged.blob)) {
            let _ = fs::remove_file(&tmp);
            return Err(err.into());
        }
        let meta = ObjectMeta {
            blob: staged.blob.clone(),
            size: staged.size,
            etag: staged.etag.clone(),
            last_modified_ns: now_ns(),
            metadata: attrs.metadata,
            content_type: attrs.content_type,
        };
        self.commit(key, &meta, check)?;
        Ok(meta)
    }

    pub fn head(&self, key: &str) -> Option<ObjectMeta> {
        self.index.lock().unwrap().objects.get(key).cloned()
    }

    /// The object's metadata and an open handle on its (immutable) body.
    pub fn open_object(&self, key: &str) -> Result<(ObjectMeta, File), StoreError> {
        let index = self.index.lock().unwrap();
        let meta = index
            .objects
            .get(key)
            .cloned()
            .ok_or(StoreError::NoSuchKey)?;
        // Opened under the lock so an overwrite cannot unlink the blob in between.
        let file = File::open(self.blob_path(&meta.blob))?;
        Ok((meta, file))
    }

    pub fn delete(&self, key: &str) -> io::Result<bool> {
        let removed = self.index.lock().unwrap().remove(key)?;
        Ok(self.drop_removed(removed))
    }

    /// A DeleteObject with preconditions (`If-Match`), checked atomically with the delete.
    /// Returns whether there was an object.
    pub fn delete_if(&self, key: &str, preconditions: &[Precondition]) -> Result<bool, StoreError> {
        let removed = {
            let mut index = self.index.lock().unwrap();
            let current = index.objects.get(key);
            preconditions.iter().try_for_each(|p| p.check(current))?;
            index.remove(key)?
        };
        Ok(self.drop_removed(removed))
    }

    fn drop_removed(&self, removed: Option<ObjectMeta>) -> bool {
        match removed {
            Some(old) => {
                let _ = fs::remove_file(self.blob_path(&old.blob));
                true
            }
            None => false,
        }
    }

    /// CopyObject: the destination shares the source's bytes (a hard link), with either the
    /// source's attributes or `replace`. Its etag is the source's, as S3 keeps it for a
    /// single-part object (the MD5 of the body), a metadata-only copy onto itself included.
    pub fn copy(
        &self,
        src: &str,
        dst: &str,
        replace: Option<NewObjectAttrs>,
    ) -> Result<ObjectMeta, StoreError> {
        self.copy_if(src, dst, replace, &[], &WriteCheck::default())
    }

    /// [`ObjectStore::copy`] if the source (which must exist: else `NoSuchKey`) is what
    /// `source` says and `check` holds for the destination: reading the source, checking and
    /// committing are one critical section.
    pub fn copy_if(
        &self,
        src: &str,
        dst: &str,
        replace: Option<NewObjectAttrs>,
        source: &[Precondition],
        check: &WriteCheck<'_>,
    ) -> Result<ObjectMeta, StoreError> {
        let blob = new_id();
        let (meta, replaced) = {
            let mut index = self.index.lock().unwrap();
            let src_meta = index
                .objects
                .get(src)
                .cloned()
                .ok_or(StoreError::NoSuchKey)?;
            source.iter().try_for_each(|p| p.check(Some(&src_meta)))?;
            index.check(dst, check)?;
            fs::hard_link(self.blob_path(&src_meta.blob), self.blob_path(&blob))?;
            let (metadata, content_type) = match replace {
                Some(a) => (a.metadata, a.content_type),
                None => (src_meta.metadata, src_meta.content_type),
            };
            let meta = ObjectMeta {
                blob,
                size: src_meta.size,
                etag: src_meta.etag,
                last_modified_ns: now_ns(),
                metadata,
                content_type,
            };
            match index.commit(dst, &meta, check) {
                Ok(replaced) => (meta, replaced),
                Err(err) => {
                    let _ = fs::remove_file(self.blob_path(&meta.blob));
                    return Err(err);
                }
            }
        };
        self.drop_removed(replaced);
        Ok(meta)
    }

    /// One page of ListObjectsV2 semantics.
    pub fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        token: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let index = self.index.lock().unwrap();
        // The cursor is exclusive; a resumed common prefix skips everything under it.
        let mut cursor: Option<(String, bool)> = match token {
            Some(t) => Some(decode_token(t)?),
            None => start_after
                .filter(|s| !s.is_empty())
                .map(|s| (s.to_owned(), false)),
        };
        if cursor.as_ref().is_none_or(|(c, _)| c.as_str() < prefix) && !prefix.is_empty() {
            // Start at the prefix itself (inclusive): use an exclusive bound just below it.
            cursor = None;
        }
        let mut entries = Vec::new();
        let mut next_token = None;
        let mut iter_from: Bound<String> = match &cursor {
            Some((c, true)) => Bound::Excluded(format!("{c}{SENTINEL}")),
            Some((c, false)) => Bound::Excluded(c.clone()),
            None => Bound::Included(prefix.to_owned()),
        };
        let skip_under = cursor
            .as_ref()
            .filter(|(_, cp)| *cp)
            .map(|(c, _)| c.clone());
        'outer: loop {
            let mut advanced = None;
            for (key, meta) in index.objects.range((iter_from.clone(), Bound::Unbounded)) {
                if !key.starts_with(prefix) {
                    break 'outer;
                }
                if let Some(skip) = &skip_under
                    && key.starts_with(skip.as_str())
                {
                    continue;
                }
                if entries.len() >= max_keys {
                    next_token = entries.last().map(encode_token);
                    break 'outer;
                }
                let rest = &key[prefix.len()..];
                match delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
                    Some(end) => {
                        let common = key[..prefix.len() + end].to_owned();
                        entries.push(ListEntry::CommonPrefix(common.clone()));
                        advanced = Some(common);
                        break;
                    }
                    None => entries.push(ListEntry::Object(key.clone(), meta.clone())),
                }
            }
            match advanced {
                // Jump past everything under the prefix just emitted.
                Some(common) => {
                    let mut bound = format!("{common}{SENTINEL}");
                    // Keys that continue with SENTINEL itself sort after the bound; walk them.
                    while let Some((k, _)) = index
                        .objects
                        .range((Bound::Excluded(bound.clone()), Bound::Unbounded))
                        .next()
                    {
                        if k.starts_with(common.as_str()) {
                            bound = k.clone();
                        } else {
                            break;
                        }
                    }
                    iter_from = Bound::Excluded(bound);
                }
                None => break,
            }
        }
        Ok(ListPage {
            entries,
            next_token,
        })
    }
}

/// The resume point of a ListObjects (v1) `marker`: listing continues after the marker key,
/// and, as in S3, after every key that rolls up into the same common prefix as the marker (a
/// `NextMarker` that is a common prefix must not bring that prefix back on the next page).
pub fn marker_token(prefix: &str, delimiter: Option<&str>, marker: &str) -> String {
    let rolled_up = delimiter
        .filter(|d| !d.is_empty())
        .filter(|_| marker.starts_with(prefix))
        .and_then(|d| {
            let rest = &marker[prefix.len()..];
            rest.find(d).map(|i| &marker[..prefix.len() + i + d.len()])
        });
    use base64::Engine;
    let raw = match rolled_up {
        Some(common) => format!("P{common}"),
        None => format!("K{marker}"),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn encode_token(entry: &ListEntry) -> String {
    use base64::Engine;
    let raw = match entry {
        ListEntry::Object(k, _) => format!("K{k}"),
        ListEntry::CommonPrefix(p) => format!("P{p}"),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// (cursor, cursor-is-a-common-prefix)
fn decode_token(token: &str) -> Result<(String, bool), StoreError> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StoreError::InvalidToken)?;
    let raw = String::from_utf8(raw).map_err(|_| StoreError::InvalidToken)?;
    match raw.split_at_checked(1) {
        Some(("K", k)) => Ok((k.to_owned(), false)),
        Some(("P", p)) => Ok((p.to_owned(), true)),
        _ => Err(StoreError::InvalidToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn body(
        data: &'static [u8],
    ) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        futures::stream::iter(vec![Ok(Bytes::from_static(data))])
    }

    fn names(page: &ListPage) -> Vec<String> {
        page.entries
            .iter()
            .map(|e| match e {
                ListEntry::Object(k, _) => k.clone(),
                ListEntry::CommonPrefix(p) => format!("{p}*"),
            })
            .collect()
    }

    #[tokio::test]
    async fn listing_pages_through_objects_and_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        for k in ["p/a", "p/b/1", "p/b/2", "p/b/", "p/c", "p/d/x", "q"] {
            store
                .put(k, body(b"x"), NewObjectAttrs::default())
                .await
                .unwrap();
        }
        let all = store.list("p/", Some("/"), None, None, 1000).unwrap();
        assert_eq!(names(&all), ["p/a", "p/b/*", "p/c", "p/d/*"]);
        let mut token = None;
        let mut seen = Vec::new();
        loop {
            let page = store
                .list("p/", Some("/"), None, token.as_deref(), 1)
                .unwrap();
            seen.extend(names(&page));
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, names(&all));
        let flat = store.list("p/b/", None, None, None, 1000).unwrap();
        assert_eq!(names(&flat), ["p/b/", "p/b/1", "p/b/2"]);
        let after = store.list("", None, Some("p/c"), None, 1000).unwrap();
        assert_eq!(names(&after), ["p/d/x", "q"]);
    }

    #[test]
    fn etags_match_quoted_or_not() {
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("abc", "abc"));
        assert!(same_etag("W/\"abc-2\"", "abc-2"));
        assert!(!same_etag("\"abd\"", "abc"));
    }

    fn errs<T>(r: Result<T, StoreError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(StoreError::PreconditionFailed) => "412",
            Err(StoreError::NoSuchKey) => "404",
            Err(StoreError::Conflict) => "409",
            Err(StoreError::BadDigest) => "bad digest",
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[tokio::test]
    async fn conditional_puts_copies_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let absent = || WriteCheck {
            preconditions: vec![Precondition::Absent],
            ..WriteCheck::default()
        };
        let version = |e: &str| WriteCheck {
            preconditions: vec![Precondition::Etag(e.to_owned())],
            ..WriteCheck::default()
        };
        let a = NewObjectAttrs::default;
        let first = store.put_if("k", body(b"1"), a(), &absent()).await.unwrap();
        assert_eq!(
            errs(store.put_if("k", body(b"2"), a(), &absent()).await),
            "412"
        );
        assert_eq!(
            errs(store.put_if("k", body(b"2"), a(), &version("0")).await),
            "412"
        );
        assert_eq!(
            errs(store.put_if("none", body(b"2"), a(), &version("0")).await),
            "404"
        );
        let md5 = WriteCheck {
            md5: Some("00".repeat(16)),
            ..WriteCheck::default()
        };
        assert_eq!(
            errs(store.put_if("k", body(b"2"), a(), &md5).await),
            "bad digest"
        );
        assert_eq!(
            store.head("k").unwrap(),
            first,
            "failed writes leave the object"
        );
        let quoted = format!("\"{}\"", first.etag);
        let second = store
            .put_if("k", body(b"2"), a(), &version(&quoted))
            .await
            .unwrap();

        let stale = [Precondition::Etag(first.etag.clone())];
        assert_eq!(
            errs(store.copy_if("k", "c", None, &stale, &WriteCheck::default())),
            "412"
        );
        assert_eq!(
            errs(store.copy_if("gone", "c", None, &[], &WriteCheck::default())),
            "404"
        );
        assert_eq!(errs(store.copy_if("k", "k", None, &[], &absent())), "412");
        let copied = store
            .copy_if("k", "k", None, &[], &version(&second.etag))
            .unwrap();
        assert_eq!(copied.etag, second.etag);

        assert_eq!(errs(store.delete_if("k", &stale)), "412");
        assert_eq!(errs(store.delete_if("none", &stale)), "404");
        assert!(
            store
                .delete_if(
                    "k",
                    &[Precondition::Etag(
                        quoted.replace(&first.etag, &second.etag)
                    )]
                )
                .unwrap()
        );
        assert!(store.head("k").is_none());
        // Nothing but live objects' blobs is left behind.
        assert_eq!(fs::read_dir(dir.path().join("blobs")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn markers_conflict_with_completes_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store
            .put("k", body(b"1"), NewObjectAttrs::default())
            .await
            .unwrap();
        let put = store.begin_conditional_write("k", false).unwrap();
        assert_eq!(errs(store.begin_conditional_write("k", true)), "409");
        let other = store.begin_conditional_write("k", false).unwrap();
        assert_eq!(store.conditional_writes_in_progress("k"), 2);
        drop(other);
        assert!(
            store.begin_conditional_write("j", true).is_ok(),
            "another key"
        );
        // A delete while the write is in progress: the write may not commit.
        store.delete("k").unwrap();
        let check = WriteCheck {
            preconditions: vec![Precondition::Absent],
            marker: Some(&put),
            md5: None,
        };
        assert_eq!(
            errs(
                store
                    .put_if("k", body(b"2"), NewObjectAttrs::default(), &check)
                    .await
            ),
            "409"
        );
        drop(check);
        drop(put);
        assert_eq!(store.conditional_writes_in_progress("k"), 0);
        assert!(store.begin_conditional_write("k", true).is_ok());
    }
}
