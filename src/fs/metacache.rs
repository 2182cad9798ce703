//! Object metadata learnt by HEAD, kept on disk per mount location and keyed by key and
//! version (etag + Last-Modified), so that a later mount's `ls -l` of objects that have not
//! changed costs the LIST alone: an entry is used only while the listing shows the same
//! version. A new upload changes the etag; a metadata-only change (chmod by CopyObject,
//! which keeps the etag of a single-part object) changes Last-Modified — unless made within
//! the same second: so only answers from HEADs sent after that second are kept, and none
//! sent before this mount's own last write of the key (`asked.rs`).
//!
//! The file is a log of JSON lines (`{"k":key,"e":etag,"m":{metadata}}`, later lines win),
//! loaded at mount and appended to as HEADs answer. It is bounded: past `max_entries` the
//! oldest-loaded half is forgotten and the file rewritten. It holds what the listing's owner
//! could read anyway (modes, owners, times, xattrs), never credentials; mode 0600.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::asked::{Asked, RecentWrites};
use crate::store::UserMeta;

/// A line longer than this is not one of ours (a key is at most 1 KiB, metadata 2 KiB,
/// and JSON escapes at most sextuple them).
const MAX_LINE_BYTES: usize = 32 << 10;
/// Keys this mount changed, remembered at most (past it, HEADs sent before the older half's
/// writes are not remembered either).
const WRITES_KEPT: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Line {
    k: String,
    e: String,
    m: UserMeta,
    /// Unsettled: from a HEAD sent within the version's second (`asked.rs`); absent: settled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    u: bool,
}

/// What was learnt of one key.
struct Known {
    /// When the key was first added, in additions (eviction goes oldest first): a number
    /// instead of a second copy of every key in an ordered list.
    added: u64,
    etag: String,
    meta: UserMeta,
    /// From a HEAD sent after the version's second: it describes that version alone, and
    /// stands for it online. Otherwise it is used only while S3 does not answer (what a HEAD
    /// said of the version then is better than nothing).
    settled: bool,
}

struct Inner {
    map: HashMap<String, Known>,
    /// Keys added so far.
    added: u64,
    log: Option<BufWriter<std::fs::File>>,
    /// Keys this mount changed lately: HEADs sent before are not remembered.
    written: RecentWrites<String>,
}

impl Inner {
    /// Remembers `etag` and `meta` for `key`; true if the key is new.
    fn insert(&mut self, key: String, etag: String, meta: UserMeta, settled: bool) -> bool {
        match self.map.get_mut(&key) {
            Some(k) => {
                (k.etag, k.meta, k.settled) = (etag, meta, settled);
                false
            }
            None => {
                self.added += 1;
                let added = self.added;
                let known = Known {
                    added,
                    etag,
                    meta,
                    settled,
                };
                self.map.insert(key, known);
                true
            }
        }
    }
}

pub struct MetaCache {
    path: PathBuf,
    max_entries: usize,
    inner: Mutex<Inner>,
}

fn open_log(path: &Path, truncate: bool) -> std::io::Result<BufWriter<std::fs::File>> {
    if let Some(dir) = path.parent() {
        crate::statefile::private_dir(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.create(true).mode(0o600);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    Ok(BufWriter::new(o.open(path)?))
}

impl MetaCache {
    /// Loads the cache at `path` (missing or unreadable lines: skipped).
    pub fn open(path: &Path, max_entries: usize) -> Self {
        let mut inner = Inner {
            map: HashMap::new(),
            added: 0,
            log: None,
            written: RecentWrites::new(WRITES_KEPT),
        };
        let mut lines = 0usize;
        // The file is input: its own regular file, lines bounded, unreadable ones skipped.
        if let Ok(f) = crate::statefile::open_own_file(path) {
            let reader = std::io::BufReader::new(f);
            crate::statefile::for_each_line(reader, MAX_LINE_BYTES, |line| {
                lines += 1;
                if let Ok(l) = serde_json::from_slice::<Line>(line) {
                    inner.insert(l.k, l.e, l.m, !l.u);
                }
            });
        }
        let cache = MetaCache {
            path: path.to_path_buf(),
            max_entries: max_entries.max(16),
            inner: Mutex::new(inner),
        };
        {
            let mut inner = cache.inner.lock().unwrap();
            // Rewritten when mostly superseded lines, or over the bound.
            let rewrite = lines > 2 * inner.map.len() + 1000 || inner.map.len() > cache.max_entries;
            cache.trim(&mut inner);
            inner.log = if rewrite {
                cache.rewrite(&inner)
            } else {
                open_log(path, false).ok()
            };
        }
        cache
    }

    /// The metadata of `key` if it was learnt at `etag` — from a settled answer, or any
    /// answer when `offline` (S3 cannot be asked).
    pub fn get(&self, key: &str, etag: &str, offline: bool) -> Option<UserMeta> {
        if etag.is_empty() {
            return None;
        }
        let inner = self.inner.lock().unwrap();
        match inner.map.get(key) {
            Some(k) if k.etag == etag && (k.settled || offline) => Some(k.meta.clone()),
            _ => None,
        }
    }

    /// Forgets what was learnt of `key` (this mount changed it: the version it had may come
    /// back with other metadata within the same second of Last-Modified).
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().unwrap();
        // HEADs of it already on their way read what may be gone now.
        inner.written.wrote(key.to_owned());
        if inner.map.get(key).is_some_and(|k| !k.etag.is_empty()) {
            // An empty version never matches: a tombstone, on disk too.
            self.store(&mut inner, key, "", &UserMeta::new(), true);
        }
    }

    /// Remembers what a HEAD of `key` sent at `asked` said, `settled` or not (`Known`) —
    /// not if this mount changed `key` since it was sent: the answer may be of the version
    /// before, under the same etag and second.
    pub fn put(&self, key: &str, etag: &str, meta: &UserMeta, asked: Asked, settled: bool) {
        // Checked and stored under one lock: a write of the key in between is seen.
        let mut inner = self.inner.lock().unwrap();
        if etag.is_empty() || inner.written.stale(key, asked) {
            return;
        }
        self.store(&mut inner, key, etag, meta, settled);
    }

    fn store(&self, inner: &mut Inner, key: &str, etag: &str, meta: &UserMeta, settled: bool) {
        if inner
            .map
            .get(key)
            .is_some_and(|k| k.etag == etag && k.meta == *meta && k.settled >= settled)
        {
            return;
        }
        inner.insert(key.to_owned(), etag.to_owned(), meta.clone(), settled);
        if inner.map.len() > self.max_entries {
            self.trim(inner);
            inner.log = self.rewrite(inner);
            return;
        }
        let line = Line {
            k: key.to_owned(),
            e: etag.to_owned(),
            m: meta.clone(),
            u: !settled,
        };
        if let Some(log) = inner.log.as_mut()
            && let Ok(text) = serde_json::to_string(&line)
            && writeln!(log, "{text}").is_err()
        {
            inner.log = None;
        }
    }

    /// Writes buffered lines out (at unmount; also when the buffer fills).
    pub fn flush(&self) {
        if let Some(log) = self.inner.lock().unwrap().log.as_mut() {
            let _ = log.flush();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().map.len()
    }

    /// Forgets the oldest entries down to half the bound, when over it.
    fn trim(&self, inner: &mut Inner) {
        if inner.map.len() <= self.max_entries {
            return;
        }
        let drop = inner.map.len() - self.max_entries / 2;
        let mut added: Vec<u64> = inner.map.values().map(|k| k.added).collect();
        // The `drop` oldest go (additions are numbered uniquely).
        let (_, &mut newest_dropped, _) = added.select_nth_unstable(drop - 1);
        inner.map.retain(|_, k| k.added > newest_dropped);
    }

    /// Rewrites the file with what is kept; returns the log to append to.
    fn rewrite(&self, inner: &Inner) -> Option<BufWriter<std::fs::File>> {
        let tmp = self.path.with_extension("tmp");
        let written = (|| {
            let mut w = open_log(&tmp, true)?;
            let mut known: Vec<(&String, &Known)> = inner.map.iter().collect();
            known.sort_unstable_by_key(|(_, k)| k.added);
            for (key, k) in known {
                let line = Line {
                    k: key.clone(),
                    e: k.etag.clone(),
                    m: k.meta.clone(),
                    u: !k.settled,
                };
                writeln!(
                    w,
                    "{}",
                    serde_json::to_string(&line).map_err(std::io::Error::other)?
                )?;
            }
            w.flush()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot rewrite the metadata cache");
        }
        open_log(&self.path, false).ok()
    }
}

impl Drop for MetaCache {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn meta(mode: &str) -> UserMeta {
        UserMeta::from([("mode".to_owned(), mode.to_owned())])
    }

    /// An answer of a HEAD sent within its version's second stands in only while S3 does
    /// not answer, on disk too, until a settled one of the same version replaces it; and an
    /// answer asked before this mount changed the key is not kept at all.
    #[test]
    fn unsettled_answers_serve_offline_only_and_stale_ones_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let c = MetaCache::open(&path, 1000);
        c.put("a", "\"e\"", &meta("1"), Asked::now(), false);
        assert_eq!(c.get("a", "\"e\"", false), None);
        assert_eq!(c.get("a", "\"e\"", true), Some(meta("1")));
        drop(c);
        let c = MetaCache::open(&path, 1000);
        assert_eq!(
            c.get("a", "\"e\"", false),
            None,
            "still unsettled after a reopen"
        );
        assert_eq!(c.get("a", "\"e\"", true), Some(meta("1")));
        c.put("a", "\"e\"", &meta("1"), Asked::now(), true);
        drop(c);
        let c = MetaCache::open(&path, 1000);
        assert_eq!(c.get("a", "\"e\"", false), Some(meta("1")), "settled since");

        let asked = Asked::now();
        std::thread::sleep(std::time::Duration::from_millis(1));
        c.forget("b");
        c.put("b", "\"e\"", &meta("2"), asked, true);
        assert_eq!(
            c.get("b", "\"e\"", true),
            None,
            "asked before this mount wrote it"
        );
    }

    #[test]
    fn entries_hold_for_their_etag_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m/cache.jsonl");
        let c = MetaCache::open(&path, 1000);
        c.put("a", "\"e1\"", &meta("33188"), Asked::now(), true);
        c.put("b", "\"e2\"", &meta("33261"), Asked::now(), true);
        c.put("a", "\"e3\"", &meta("33152"), Asked::now(), true);
        assert_eq!(
            c.get("a", "\"e1\"", false),
            None,
            "a new etag replaces the old"
        );
        assert_eq!(c.get("a", "\"e3\"", false), Some(meta("33152")));
        drop(c);
        let c = MetaCache::open(&path, 1000);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", "\"e3\"", false), Some(meta("33152")));
        assert_eq!(c.get("b", "\"e2\"", false), Some(meta("33261")));
        assert_eq!(c.get("b", "\"other\"", false), None);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    proptest::proptest! {
        /// The file is input: any bytes load without a panic, and whatever loads reads as
        /// metadata without one (a `%1é` here once killed every later mount).
        #[test]
        fn any_file_loads_and_reads_without_panicking(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                    "[a-z%é]{0,6}".prop_map(|x| {
                        format!(r#"{{"k":"a","e":"e","m":{{"xattr":"{x}","mtime":"{x}"}}}}"#).into_bytes()
                    }),
                ],
                0..12,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cache.jsonl");
            std::fs::write(&path, lines.join(&b'\n')).unwrap();
            let c = MetaCache::open(&path, 100);
            if let Some(m) = c.get("a", "e", false) {
                let _ = crate::fs::meta::Meta::from_user(&m);
            }
        }
    }

    #[test]
    fn over_long_and_non_utf8_lines_are_skipped_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let good = |k: &str| format!(r#"{{"k":"{k}","e":"e","m":{{"mode":"33188"}}}}"#);
        let long = format!(
            r#"{{"k":"x","e":"e","m":{{"v":"{}"}}}}"#,
            "a".repeat(MAX_LINE_BYTES)
        );
        let text = [
            good("a").into_bytes(),
            b"\xff\xfe".to_vec(),
            long.into_bytes(),
            good("b").into_bytes(),
        ]
        .join(&b'\n');
        std::fs::write(&path, text).unwrap();
        let c = MetaCache::open(&path, 100);
        assert_eq!(c.get("a", "e", false), Some(meta("33188")));
        assert_eq!(
            c.get("b", "e", false),
            Some(meta("33188")),
            "reading stopped at a bad line"
        );
        assert_eq!(c.get("x", "e", false), None);
    }

    #[test]
    fn it_stays_bounded_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.jsonl");
        let c = MetaCache::open(&path, 100);
        for i in 0..250 {
            c.put(&format!("k{i}"), "\"e\"", &meta("1"), Asked::now(), true);
        }
        assert!(c.len() <= 100, "{}", c.len());
        assert!(c.get("k249", "\"e\"", false).is_some());
        assert!(c.get("k0", "\"e\"", false).is_none());
        drop(c);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 150, "{lines} lines on disk");
        let c = MetaCache::open(&path, 100);
        assert!(c.get("k249", "\"e\"", false).is_some());
    }
}
