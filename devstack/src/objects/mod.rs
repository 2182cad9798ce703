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

    /// Makes `meta` the current version of `key`; drops the blob it replaces.
    fn commit(&self, key: &str, meta: ObjectMeta) -> io::Result<()> {
        let replaced = {
            let mut index = self.index.lock().unwrap();
            journal::append(
                &mut index.journal,
                &JournalRecord::Put {
                    key: key.to_owned(),
                    meta: meta.clone(),
                },
            )?;
            index.objects.insert(key.to_owned(), meta)
        };
        if let Some(old) = replaced {
            let _ = fs::remove_file(self.blob_path(&old.blob));
        }
        Ok(())
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
        let blob = new_id();
        let tmp = self.root.join("tmp").join(&blob);
        let (size, etag) = Self::write_stream(&tmp, body).await?;
        tokio::fs::rename(&tmp, self.blob_path(&blob)).await?;
        let meta = ObjectMeta {
            blob,
            size,
            etag,
            last_modified_ns: now_ns(),
            metadata: attrs.metadata,
            content_type: attrs.content_type,
        };
        self.commit(key, meta.clone())?;
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
        let removed = {
            let mut index = self.index.lock().unwrap();
            if !index.objects.contains_key(key) {
                return Ok(false);
            }
            journal::append(
                &mut index.journal,
                &JournalRecord::Del {
                    key: key.to_owned(),
                },
            )?;
            index.objects.remove(key)
        };
        if let Some(old) = removed {
            let _ = fs::remove_file(self.blob_path(&old.blob));
        }
        Ok(true)
    }

    /// CopyObject: the destination shares the source's bytes (a hard link), with either the
    /// source's attributes or `replace`.
    pub fn copy(
        &self,
        src: &str,
        dst: &str,
        replace: Option<NewObjectAttrs>,
    ) -> Result<ObjectMeta, StoreError> {
        let blob = new_id();
        let src_meta = {
            let index = self.index.lock().unwrap();
            let meta = index
                .objects
                .get(src)
                .cloned()
                .ok_or(StoreError::NoSuchKey)?;
            fs::hard_link(self.blob_path(&meta.blob), self.blob_path(&blob))?;
            meta
        };
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
        self.commit(dst, meta.clone())?;
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
}
