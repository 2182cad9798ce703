//! Listing indexes: what lets a machine that never saw a directory `ls -l` it with the LIST
//! pages and one GET instead of a HEAD per file, when cognifs wrote it elsewhere.
//!
//! ListObjects carries no user metadata, so the stored modes, owners, times and symlink types
//! cost a HEAD per file the first time a machine lists a directory. A mount that changes a
//! directory therefore writes behind, once the directory has been quiet for a moment, an
//! **index object** for it: `.cognifs/index/HHHHHHHHHHHHHHHH` (a hash of the directory's
//! path) at the prefix's root, JSON lines — a header naming the directory, then per object its
//! name, etag, Last-Modified (whole seconds) and user metadata, and a symlink's target.
//!
//! Each entry is what a HEAD of exactly that version returned (this mount's HEADs, or the
//! on-disk memory of them, [`super::metacache`]; the writer HEADs the objects it knows no
//! such answer for, its own uploads included), so an entry says no more than S3 would — and
//! only from a HEAD sent after the second of the version's Last-Modified, the one answer no
//! later write can share a version with (`asked.rs`; a fresher object is left out). A
//! reader uses an entry only for an object its listing shows with the same name, etag and
//! Last-Modified second; anything else (a version written since by anyone, an entry missing,
//! an index that does not parse, names another directory or is too large) is HEADed as
//! before. A stale or damaged index costs HEADs, never wrong attributes. Objects keep their
//! own metadata (s3fs's keys): the index is a copy for speed, not where anything lives.
//!
//! The index is written conditionally on the version read (`If-Match`, or `If-None-Match: *`)
//! so two machines never overwrite each other's blindly (a lost race is tried again at the
//! next round); no write of a user's file ever waits for or depends on it. The root's
//! `.cognifs` is cognifs's own: never listed, looked up as absent, and not creatable
//! (`EPERM`). Directories written by other clients keep their HEADs (128 in flight).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Fs;
use super::asked::version_second;
use super::inodes::Kind;
use crate::store::{Expect, ObjectInfo, UserMeta};

/// The root's name that cognifs keeps for itself.
pub const INDEX_DIR: &str = ".cognifs";
/// Objects an index describes at most (a larger directory gets none).
const MAX_ENTRIES: usize = 100_000;
/// The largest index read back.
const MAX_BYTES: u64 = 48 << 20;
/// How long an unmount waits at most for the indexes still to write.
const AT_UNMOUNT: Duration = Duration::from_secs(10);
/// How long a directory stays unchanged before its index is written.
const QUIET: Duration = Duration::from_secs(2);
/// HEADs in flight while an index is written.
const HEADS_IN_FLIGHT: usize = 64;
/// Indexes of removed directories waiting to be deleted, at most.
const MAX_STALE: usize = 10_000;
/// The longest symlink target an index keeps (PATH_MAX).
const MAX_TARGET: u64 = 4096;
/// Keys per LIST page.
const PAGE_KEYS: i32 = 1000;
/// Indexes fetched ahead of their listing, kept at most (each for the metadata TTL): with
/// [`PREFETCH_BYTES`], a few MiB of memory at worst for lookups no listing followed.
pub(super) const PREFETCHED_KEPT: usize = 4;
/// The most of an index fetched ahead of its listing (about 4,000 entries): a larger one is
/// read when the listing needs it.
const PREFETCH_BYTES: u64 = 1 << 20;

/// A directory's listing index, read once per listing (when a listed file's metadata is
/// first missing).
pub(super) type LazyIndex = tokio::sync::OnceCell<Option<Arc<Index>>>;

/// An index fetched ahead of its listing ([`Fs::prefetch_index`]).
pub(super) type PrefetchCell = tokio::sync::OnceCell<Prefetched>;

pub(super) enum Prefetched {
    /// What the GET found: an index, or none (none there, not one, or no answer).
    Read(Option<Arc<Index>>),
    /// Larger than [`PREFETCH_BYTES`]: for the listing to read.
    TooLarge,
}

async fn prefetch(store: &dyn crate::store::ObjectStore, dir_rel: &str) -> Prefetched {
    match fetch_index(store, dir_rel, PREFETCH_BYTES).await {
        Err(crate::store::StoreError::TooLarge) => Prefetched::TooLarge,
        read => Prefetched::Read(read.ok().flatten()),
    }
}

/// The index of `dir_rel` as `store` holds it, if there is one that parses (of at most
/// `max` bytes): one GET.
async fn fetch_index(
    store: &dyn crate::store::ObjectStore,
    dir_rel: &str,
    max: u64,
) -> crate::store::StoreResult<Option<Arc<Index>>> {
    let Some(body) = store.get_small(&index_rel(dir_rel), max).await? else {
        return Ok(None);
    };
    let index = Index::parse(dir_rel, &body);
    if index.is_none() {
        tracing::debug!(dir = dir_rel, "a listing index that is not one; ignored");
    }
    Ok(index.map(Arc::new))
}

/// Whether `name` in the directory `dir_rel` is cognifs's own (never shown).
pub fn reserved(dir_rel: &str, name: &str) -> bool {
    dir_rel.is_empty() && name == INDEX_DIR
}

/// The index object of the directory `dir_rel` (`""` for the root, `a/b/`).
pub fn index_rel(dir_rel: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir_rel.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{INDEX_DIR}/index/{h:016x}")
}

#[derive(Serialize, Deserialize)]
struct Header {
    v: u32,
    dir: String,
}

#[derive(Serialize, Deserialize)]
struct Line {
    /// Name in the directory.
    n: String,
    /// Etag, and Last-Modified in whole seconds: the version the metadata is of.
    e: String,
    t: u64,
    m: UserMeta,
    /// A symlink's target (UTF-8 targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
}

/// An index as read back: per name, the version its metadata is of.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<String, (String, u64, UserMeta, Option<String>)>,
}

impl Index {
    /// Parses an index of `dir_rel`; `None` if it is not one (wrong header, not ours).
    pub fn parse(dir_rel: &str, body: &[u8]) -> Option<Index> {
        let mut lines = body.split(|&b| b == b'\n');
        let header: Header = serde_json::from_slice(lines.next()?).ok()?;
        if header.v != 1 || header.dir != dir_rel {
            return None;
        }
        let mut entries = HashMap::new();
        for line in lines.filter(|l| !l.is_empty()).take(MAX_ENTRIES) {
            // A line that does not parse is skipped: its object is HEADed.
            if let Ok(l) = serde_json::from_slice::<Line>(line) {
                entries.insert(l.n, (l.e, l.t, l.m, l.l));
            }
        }
        Some(Index { entries })
    }

    /// The metadata of `name` if the index has the very version a listing shows (`etag`,
    /// `last_modified`).
    pub fn meta_of(&self, name: &str, etag: &str, last_modified: SystemTime) -> Option<&UserMeta> {
        let (e, t, meta, _) = self.entries.get(name)?;
        (!etag.is_empty() && e == etag && *t == version_second(last_modified)).then_some(meta)
    }

    /// A symlink's target kept with the version `etag` of `name`.
    pub fn target_of(&self, name: &str, etag: &str) -> Option<&str> {
        match self.entries.get(name)? {
            (e, _, _, Some(target)) if e == etag => Some(target),
            _ => None,
        }
    }

    fn render(dir_rel: &str, lines: &[Line]) -> Bytes {
        let mut out = serde_json::to_vec(&Header {
            v: 1,
            dir: dir_rel.to_owned(),
        })
        .expect("plain data");
        for l in lines {
            out.push(b'\n');
            out.extend(serde_json::to_vec(l).expect("plain data"));
        }
        out.push(b'\n');
        out.into()
    }
}

impl Fs {
    /// The directory `ino`'s entries changed in this mount: its index is written once it has
    /// been quiet for a moment.
    pub(super) fn index_changed(&self, dir: u64) {
        if self.opts.read_only || self.opts.list_only {
            return;
        }
        self.index_due.lock().unwrap().insert(dir, Instant::now());
    }

    /// The directory `dir_rel` was removed or moved away: its index, if any, is deleted in
    /// the background.
    pub(super) fn index_gone(&self, dir_rel: &str) {
        if self.opts.read_only || self.opts.list_only {
            return;
        }
        let mut stale = self.index_stale.lock().unwrap();
        if stale.len() < MAX_STALE {
            stale.push(dir_rel.to_owned());
        }
    }

    /// The index of `dir_rel` as stored, if there is one that parses: what a lookup fetched
    /// ahead ([`Fs::prefetch_index`]; waited for if still on its way), else one GET now.
    pub(super) async fn read_index(&self, dir_rel: &str) -> Option<Arc<Index>> {
        if self.opts.list_only {
            return None;
        }
        let ahead = self
            .index_prefetch
            .take(&dir_rel.to_owned(), self.inodes.ttl());
        if let Some(cell) = ahead
            && let Prefetched::Read(index) =
                cell.get_or_init(|| prefetch(&*self.store, dir_rel)).await
        {
            return index.clone();
        }
        fetch_index(&*self.store, dir_rel, MAX_BYTES).await.ok()?
    }

    /// A lookup's LIST found `dir_rel` to be a directory with files (two or more) this
    /// machine knows no metadata of: an `ls -l` of it is likely next, and its listing would
    /// wait a round trip for the index. The index is fetched now, in the background, for the
    /// listing to find (once per TTL, at most [`PREFETCH_BYTES`] of it: a lookup that only
    /// passes through costs one bounded GET).
    pub(super) fn prefetch_index(&self, dir_rel: &str) {
        if self.opts.list_only {
            return;
        }
        let cell: Arc<PrefetchCell> = Arc::default();
        let ttl = self.inodes.ttl();
        if !self
            .index_prefetch
            .keep_new(dir_rel.to_owned(), cell.clone(), ttl)
        {
            return;
        }
        let (store, dir_rel) = (self.store.clone(), dir_rel.to_owned());
        tokio::spawn(async move {
            cell.get_or_init(|| prefetch(&*store, &dir_rel)).await;
        });
    }

    /// The directories whose entries this mount changed since the last call: their indexes
    /// are due.
    fn note_changed_dirs(&self) {
        for dir in self.inodes.take_changed_here() {
            self.index_changed(dir);
        }
    }

    /// At unmount: the indexes still due, for [`AT_UNMOUNT`] at most (none while offline: an
    /// unmount never waits for a dead network).
    pub async fn write_indexes_at_unmount(&self) {
        if self.is_offline() {
            return;
        }
        let _ = tokio::time::timeout(AT_UNMOUNT, async {
            self.note_changed_dirs();
            // What was written in the last moments would be left out, its version's second
            // not over (`asked.rs`): that is waited out once, at most 2 s.
            let newest = self.index_due.lock().unwrap().values().max().copied();
            if let Some(at) = newest {
                tokio::time::sleep(super::asked::SETTLED.saturating_sub(at.elapsed())).await;
            }
            self.write_due_indexes(true).await;
        })
        .await;
    }

    /// Writes the indexes of the directories changed and quiet since (`all`: every one, at
    /// unmount). A failure leaves the directory due for the next round.
    pub async fn write_due_indexes(&self, all: bool) {
        self.note_changed_dirs();
        let stale = std::mem::take(&mut *self.index_stale.lock().unwrap());
        for dir_rel in stale {
            // Nothing reads an index of a directory that is gone: a failure leaves garbage.
            let _ = self.store.delete(&index_rel(&dir_rel)).await;
        }
        let due: Vec<u64> = {
            let mut due = self.index_due.lock().unwrap();
            let ready: Vec<u64> = due
                .iter()
                .filter(|(_, at)| all || at.elapsed() >= QUIET)
                .map(|(d, _)| *d)
                .collect();
            for d in &ready {
                due.remove(d);
            }
            ready
        };
        for dir in due {
            let Some(node) = self.inodes.get(dir) else {
                continue;
            };
            if node.kind != Kind::Dir {
                continue;
            }
            if let Err(e) = self.write_index(dir, &node.rel).await {
                tracing::debug!(dir = %node.rel, error = %e, "listing index not written; tried again later");
                self.index_due
                    .lock()
                    .unwrap()
                    .entry(dir)
                    .or_insert_with(Instant::now);
            }
        }
    }

    /// Lists `dir_rel` and stores its index: each object with the metadata a HEAD of its
    /// listed version gave (remembered, else HEADed now).
    async fn write_index(&self, dir: u64, dir_rel: &str) -> crate::store::StoreResult<()> {
        use futures::StreamExt;
        let rel = index_rel(dir_rel);
        let (old, listed) = tokio::join!(self.store.head(&rel), self.list_objects(dir_rel));
        let expect = Expect::from_base(old?.as_ref().map(|i| i.etag.as_str()));
        let Some(listed) = listed? else {
            return Ok(());
        };
        if listed.is_empty() {
            // Nothing to describe: no index (one left from before goes).
            return match expect {
                Expect::Version(_) => self.store.delete_if(&rel, &expect).await,
                _ => Ok(()),
            };
        }
        let lines: Vec<Option<Line>> = futures::stream::iter(listed)
            .map(|info| async move { self.index_line(dir, dir_rel, info).await })
            .buffered(HEADS_IN_FLIGHT)
            .collect()
            .await;
        let lines: Vec<Line> = lines.into_iter().flatten().collect();
        let body = Index::render(dir_rel, &lines);
        self.store
            .put_if(&rel, body, &UserMeta::new(), &expect)
            .await
            .map(drop)
    }

    /// Every object of `dir_rel` as listed (`None`: more than an index holds).
    async fn list_objects(
        &self,
        dir_rel: &str,
    ) -> crate::store::StoreResult<Option<Vec<ObjectInfo>>> {
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let page = self.store.list_page(dir_rel, next, PAGE_KEYS).await?;
            out.extend(
                page.files
                    .into_iter()
                    .filter(|f| super::inodes::valid_name(&f.name)),
            );
            if out.len() > MAX_ENTRIES {
                return Ok(None);
            }
            next = page.next;
            if next.is_none() {
                return Ok(Some(out));
            }
        }
    }

    /// One object's line: its listed version with the metadata a HEAD of that version gave.
    async fn index_line(&self, dir: u64, dir_rel: &str, info: ObjectInfo) -> Option<Line> {
        let rel = format!("{dir_rel}{}", info.name);
        let known = match self.recall(&rel, info.clone()) {
            Some(known) => known,
            None => {
                let asked = super::inodes::Asked::now();
                let head = self.store.head(&rel).await.ok()??;
                self.headed(&rel, &head, asked);
                // Written within the second before: left to the reader's HEAD (`asked.rs`).
                if !asked.settled(head.last_modified) {
                    return None;
                }
                head
            }
        };
        let meta = known.meta.clone()?;
        let found = super::inodes::Found::object(&known);
        // A symlink's target: as this mount read it for this version, else read now.
        let target = match found.kind {
            Kind::Symlink if known.size <= MAX_TARGET => {
                let cached = self
                    .inodes
                    .child(dir, &info.name)
                    .and_then(|n| self.inodes.link_target(n.ino, &known.etag));
                let bytes = match cached {
                    Some(bytes) => Some(bytes),
                    None => self
                        .store
                        .get_range(&rel, &known.etag, 0, known.size)
                        .await
                        .ok(),
                };
                bytes.and_then(|b| String::from_utf8(b.to_vec()).ok())
            }
            _ => None,
        };
        Some(Line {
            n: info.name,
            e: known.etag,
            t: version_second(known.last_modified),
            m: meta,
            l: target,
        })
    }

    /// The attributes of `name` (listed as `listed`) from `index`, recorded in the inode
    /// table (and remembered on disk, as a HEAD's are); `None` when the index does not have
    /// that version.
    pub(super) fn attr_from_index(
        &self,
        parent: u64,
        dir_rel: &str,
        index: &Index,
        name: &str,
        listed: &super::inodes::Found,
    ) -> Option<super::inodes::Attr> {
        let meta = index.meta_of(name, &listed.etag, listed.last_modified)?;
        let known = ObjectInfo {
            name: name.to_owned(),
            size: listed.size,
            etag: listed.etag.clone(),
            last_modified: listed.last_modified,
            meta: Some(meta.clone()),
        };
        // Of the version the table has now.
        let asked = super::inodes::Asked::now();
        let found = self.headed(&format!("{dir_rel}{name}"), &known, asked);
        let kind = found.kind;
        let attr = self.upsert_listed(parent, name, found, None);
        if kind == Kind::Symlink
            && let Some(target) = index.target_of(name, &listed.etag)
        {
            let target = Bytes::from(target.to_owned());
            // Into the block caches too: a new mount that knows this version's metadata
            // (and so reads no index) reads the target from disk, not by a GET per link.
            self.read
                .keep_small(&format!("{dir_rel}{name}"), &listed.etag, &target);
            self.inodes.set_link_target(attr.ino, &listed.etag, target);
        }
        Some(attr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, etag: &str, t: u64) -> ObjectInfo {
        ObjectInfo {
            name: name.into(),
            size: 1,
            etag: etag.into(),
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_millis(t * 1000 + 700),
            meta: None,
        }
    }

    #[test]
    fn an_entry_serves_only_its_own_version() {
        let mut meta = UserMeta::new();
        meta.insert("mode".into(), "41471".into());
        let lines = [Line {
            n: "l".into(),
            e: "\"e1\"".into(),
            t: 100,
            m: meta.clone(),
            l: Some("target".into()),
        }];
        let body = Index::render("d/", &lines);
        let index = Index::parse("d/", &body).unwrap();
        let of = |i: ObjectInfo| index.meta_of(&i.name, &i.etag, i.last_modified).cloned();
        assert_eq!(of(info("l", "\"e1\"", 100)), Some(meta));
        assert_eq!(index.target_of("l", "\"e1\""), Some("target"));
        // Rewritten (another etag), its metadata changed in place (same etag, later time),
        // another name: not from the index.
        assert_eq!(of(info("l", "\"e2\"", 100)), None);
        assert_eq!(of(info("l", "\"e1\"", 101)), None);
        assert_eq!(of(info("m", "\"e1\"", 100)), None);
        assert_eq!(index.target_of("l", "\"e2\""), None);
        // Another directory's index, or not an index at all: not used.
        assert!(Index::parse("e/", &body).is_none());
        assert!(Index::parse("d/", b"garbage\n{}").is_none());
        // A damaged line costs that entry alone.
        let mut torn = body.to_vec();
        torn.extend_from_slice(b"{\"n\":\"x\",\"e\"\n");
        let torn = Index::parse("d/", &torn).unwrap();
        let i = info("l", "\"e1\"", 100);
        assert!(torn.meta_of(&i.name, &i.etag, i.last_modified).is_some());
    }

    #[test]
    fn each_directory_has_its_own_key_under_the_reserved_name() {
        assert_ne!(index_rel(""), index_rel("a/"));
        assert!(index_rel("a/").starts_with(".cognifs/index/"));
        assert!(reserved("", ".cognifs"));
        assert!(!reserved("a/", ".cognifs"));
    }
}
