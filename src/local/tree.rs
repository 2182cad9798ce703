//! The listings last seen, per directory, kept on disk: what a mount shows of a directory
//! while S3 is away, however old, also after a remount.
//!
//! One file per directory, `DIR/HHHHHHHHHHHHHHHH.list` (a hash of location and directory),
//! written whole through a temporary name when a complete listing from S3 differs from the
//! one saved (by a thread of its own: never on a reader's path). A file is JSON lines: a
//! header naming the location and directory, then one line per entry (`{"d":name}` for a
//! directory, `{"f":name,"s":size,"e":etag,"t":secs,"n":nanos}` for an object), each with
//! the user metadata last known of it (`"m"`: modes, owners, times, xattrs), if any.
//!
//! Bounded: a listing of more than [`MAX_ENTRIES_PER_DIR`] entries is not kept, and past
//! [`MAX_TOTAL_BYTES`] the least recently saved files go. Everything read back is untrusted:
//! sizes bounded, each line parsed on its own, the header must name this very directory, and
//! entries pass through the same mapping rules as a listing from S3 (`build_listing`).

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::store::{ListPage, ObjectInfo, UserMeta};

/// Entries of one directory kept at most (a larger listing is not kept).
pub const MAX_ENTRIES_PER_DIR: usize = 200_000;
/// Bytes all saved listings take at most.
pub const MAX_TOTAL_BYTES: u64 = 256 << 20;
/// The largest file read back (a bigger one is not ours).
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Listings queued for writing, in entries, beyond which a listing is not saved this time.
const MAX_QUEUED_ENTRIES: usize = 400_000;

#[derive(Serialize, Deserialize)]
struct HeaderLine {
    location: String,
    dir: String,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum EntryLine {
    Dir {
        d: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        m: Option<UserMeta>,
    },
    File {
        f: String,
        s: u64,
        e: String,
        t: u64,
        n: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        m: Option<UserMeta>,
    },
}

/// One entry as last seen: a directory (its marker's metadata) or an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SavedEntry {
    pub name: String,
    pub dir: bool,
    pub size: u64,
    pub etag: String,
    pub modified: SystemTime,
    /// The user metadata last known, if it was (HEAD, or this mount's own write).
    pub meta: Option<UserMeta>,
}

/// One directory's listing as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedListing {
    pub entries: Vec<SavedEntry>,
}

impl SavedListing {
    /// As a listing page, for the mapping rules (the metadata is laid over the result).
    pub fn to_page(&self) -> ListPage {
        let mut page = ListPage::default();
        for e in &self.entries {
            if e.dir {
                page.dirs.push(e.name.clone());
            } else {
                page.files.push(ObjectInfo {
                    name: e.name.clone(),
                    size: e.size,
                    etag: e.etag.clone(),
                    last_modified: e.modified,
                    meta: None,
                });
            }
        }
        page
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// A hash of the content, to skip rewriting an unchanged listing.
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.entries.hash(&mut h);
        h.finish()
    }
}

struct Save {
    dir_rel: String,
    listing: SavedListing,
}

pub struct KnownTree {
    dir: PathBuf,
    location: String,
    /// What was last saved (or found on disk) per directory: its fingerprint.
    saved: Mutex<HashMap<String, u64>>,
    jobs: Mutex<Option<mpsc::Sender<Save>>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for KnownTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownTree").field("dir", &self.dir).finish()
    }
}

fn file_name(location: &str, dir_rel: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in location.bytes().chain([0]).chain(dir_rel.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}.list")
}

impl KnownTree {
    /// Opens (creating, mode 0700) the saved listings of `location` in `dir`.
    pub fn open(dir: &Path, location: &str) -> std::io::Result<Arc<KnownTree>> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let tree = Arc::new(KnownTree {
            dir: dir.to_path_buf(),
            location: location.to_owned(),
            saved: Mutex::new(HashMap::new()),
            jobs: Mutex::new(None),
            queued: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        let (tx, rx) = mpsc::channel::<Save>();
        *tree.jobs.lock().unwrap() = Some(tx);
        let weak = Arc::downgrade(&tree);
        std::thread::Builder::new()
            .name("cognifs-tree".into())
            .spawn(move || {
                let mut since_trim = 0usize;
                while let Ok(save) = rx.recv() {
                    let Some(tree) = weak.upgrade() else { break };
                    let n = save.listing.len() + 1;
                    if let Err(e) = tree.write(&save.dir_rel, &save.listing) {
                        tracing::debug!(dir = %save.dir_rel, error = %e, "listing not saved");
                    }
                    tree.queued
                        .fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
                    since_trim += 1;
                    if since_trim >= 64 {
                        since_trim = 0;
                        tree.trim();
                    }
                }
            })?;
        Ok(tree)
    }

    /// Keeps `listing` as what `dir_rel` holds (written behind, when it changed).
    pub fn save(&self, dir_rel: &str, listing: SavedListing) {
        use std::sync::atomic::Ordering;
        // One more than the entries: an empty listing is a write to wait for too.
        let n = listing.len() + 1;
        if n > MAX_ENTRIES_PER_DIR {
            return;
        }
        let print = listing.fingerprint();
        {
            let mut saved = self.saved.lock().unwrap();
            if saved.get(dir_rel) == Some(&print) {
                return;
            }
            saved.insert(dir_rel.to_owned(), print);
        }
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > MAX_QUEUED_ENTRIES {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.saved.lock().unwrap().remove(dir_rel);
            return;
        }
        let sent = match &*self.jobs.lock().unwrap() {
            Some(tx) => tx
                .send(Save {
                    dir_rel: dir_rel.to_owned(),
                    listing,
                })
                .is_ok(),
            None => false,
        };
        if !sent {
            self.queued.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Waits (bounded) until what was saved so far is on disk (tests, unmount).
    pub fn settle(&self, limit: Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        while self.queued.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Stops the writer once what is queued is written.
    pub fn close(&self) {
        self.settle(Duration::from_secs(10));
        self.jobs.lock().unwrap().take();
    }

    fn write(&self, dir_rel: &str, listing: &SavedListing) -> std::io::Result<()> {
        let path = self.dir.join(file_name(&self.location, dir_rel));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        let header = HeaderLine {
            location: self.location.clone(),
            dir: dir_rel.to_owned(),
        };
        writeln!(w, "{}", serde_json::to_string(&header)?)?;
        for e in &listing.entries {
            let line = if e.dir {
                EntryLine::Dir {
                    d: e.name.clone(),
                    m: e.meta.clone(),
                }
            } else {
                let since = e
                    .modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                EntryLine::File {
                    f: e.name.clone(),
                    s: e.size,
                    e: e.etag.clone(),
                    t: since.as_secs(),
                    n: since.subsec_nanos(),
                    m: e.meta.clone(),
                }
            };
            writeln!(w, "{}", serde_json::to_string(&line)?)?;
        }
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, &path)
    }

    /// The listing last saved for `dir_rel`, if any (blocking I/O; bounded).
    pub fn load(&self, dir_rel: &str) -> Option<SavedListing> {
        let path = self.dir.join(file_name(&self.location, dir_rel));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.file_type().is_file() || meta.len() > MAX_FILE_BYTES {
            return None;
        }
        let listing = parse(
            std::io::BufReader::new(file.take(MAX_FILE_BYTES)),
            &self.location,
            dir_rel,
        );
        if listing.is_none() {
            tracing::warn!(file = %path.display(), "unreadable saved listing: ignored");
        }
        listing
    }

    /// Removes the oldest saved listings while they take more than [`MAX_TOTAL_BYTES`].
    fn trim(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        if total <= MAX_TOTAL_BYTES {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= MAX_TOTAL_BYTES * 9 / 10 {
                break;
            }
            let _ = std::fs::remove_file(path);
            total -= len;
        }
        // Forgotten fingerprints make the next listing be saved again.
        self.saved.lock().unwrap().clear();
    }
}

/// Parses a saved listing; `None` unless its header names `location` and `dir_rel`. A line
/// that is not an entry is skipped; at most [`MAX_ENTRIES_PER_DIR`] entries are read.
fn parse(reader: impl BufRead, location: &str, dir_rel: &str) -> Option<SavedListing> {
    let mut lines = reader.split(b'\n');
    let header: HeaderLine = serde_json::from_slice(&lines.next()?.ok()?).ok()?;
    if header.location != location || header.dir != dir_rel {
        return None;
    }
    let mut out = SavedListing::default();
    for line in lines {
        let Ok(line) = line else { break };
        if out.len() >= MAX_ENTRIES_PER_DIR {
            break;
        }
        match serde_json::from_slice::<EntryLine>(&line) {
            Ok(EntryLine::Dir { d, m }) => out.entries.push(SavedEntry {
                name: d,
                dir: true,
                size: 0,
                etag: String::new(),
                modified: SystemTime::UNIX_EPOCH,
                meta: m,
            }),
            Ok(EntryLine::File { f, s, e, t, n, m }) => {
                let at = SystemTime::UNIX_EPOCH
                    .checked_add(Duration::new(t, n.min(999_999_999)))
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.entries.push(SavedEntry {
                    name: f,
                    dir: false,
                    size: s,
                    etag: e,
                    modified: at,
                    meta: m,
                });
            }
            Err(_) => continue,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> SavedListing {
        let file = |name: &str, size, etag: &str, modified, meta: Option<UserMeta>| SavedEntry {
            name: name.into(),
            dir: false,
            size,
            etag: etag.into(),
            modified,
            meta,
        };
        SavedListing {
            entries: vec![
                SavedEntry {
                    name: "sub".into(),
                    dir: true,
                    size: 0,
                    etag: String::new(),
                    modified: SystemTime::UNIX_EPOCH,
                    meta: Some(UserMeta::from([("mode".into(), "16832".into())])),
                },
                file(
                    "a",
                    3,
                    "\"e1\"",
                    SystemTime::UNIX_EPOCH + Duration::new(5, 7),
                    Some(UserMeta::from([("mode".into(), "33261".into())])),
                ),
                file("b c", 0, "\"e2\"", SystemTime::UNIX_EPOCH, None),
            ],
        }
    }

    #[test]
    fn listings_survive_a_reopen_and_name_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let t = KnownTree::open(dir.path(), "s3://b/p/").unwrap();
        t.save("x/", listing());
        assert!(t.settle(Duration::from_secs(5)));
        t.close();
        drop(t);
        let t = KnownTree::open(dir.path(), "s3://b/p/").unwrap();
        assert_eq!(t.load("x/"), Some(listing()));
        assert_eq!(t.load("y/"), None);
        // Another location's tree does not see it.
        let other = KnownTree::open(dir.path(), "s3://b/q/").unwrap();
        assert_eq!(other.load("x/"), None);
        // A file copied over another directory's name is refused by its header.
        let from = dir.path().join(file_name("s3://b/p/", "x/"));
        std::fs::copy(&from, dir.path().join(file_name("s3://b/p/", "y/"))).unwrap();
        assert_eq!(t.load("y/"), None);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..300))| {
            let mut text = br#"{"location":"l","dir":"d/"}"#.to_vec();
            text.push(b'\n');
            text.extend_from_slice(&bytes);
            let _ = parse(&text[..], "l", "d/");
            let _ = parse(&bytes[..], "l", "d/");
        });
        let text = b"{\"location\":\"l\",\"dir\":\"d/\"}\n{\"f\":\"x\",\"s\":1,\"e\":\"e\",\"t\":18446744073709551615,\"n\":4294967295}\nnot json\n{\"d\":\"s\"}\n";
        let l = parse(&text[..], "l", "d/").unwrap();
        assert_eq!(l.entries.len(), 2);
        assert!(l.entries[1].dir && l.entries[1].name == "s");
    }
}
