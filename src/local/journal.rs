//! The journal of changes to the tree made while S3 was away (`mkdir`, metadata changes,
//! `unlink`, `rmdir`), kept on disk in order until S3 has them. File contents are not here:
//! they are kept uploads in the pending area (`crate::pending`).
//!
//! One file per change, `DIR/SSSSSSSSSSSSSSSSSSSS.json` (its sequence number, 20 digits), with
//! the location it belongs to; written through a temporary name, fsync'd, renamed, and the
//! directory fsync'd before the change is reported done: a change the mount accepted
//! survives a crash. Applied changes are removed. Everything read back is untrusted: only
//! files named as the journal names them, opened `O_NOFOLLOW`, regular, small, whose number
//! is the one inside, of this location, with paths that pass the store's rules.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store::{Scope, UserMeta};

/// The largest journal file read back.
const MAX_ENTRY_BYTES: u64 = 64 << 10;

/// One change to the tree, in S3's terms (paths relative to the prefix; a directory's ends
/// in `/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A directory made: its marker is put (`If-None-Match: *`).
    Mkdir { rel: String, meta: UserMeta },
    /// An object's (or a directory marker's) metadata changed from `before` to `after`, on
    /// version `etag` (`""`: a directory without a marker). Replayed on that version, or, if
    /// another client changed it meanwhile, as the same change of keys on the new version.
    SetMeta {
        rel: String,
        etag: String,
        before: UserMeta,
        after: UserMeta,
    },
    /// Version `etag` of a file (or of a directory marker, `rel` ending in `/`: what a
    /// directory rename left behind) deleted; not deleted if another client changed it.
    Unlink { rel: String, etag: String },
    /// An empty directory removed: its marker deleted, if S3 shows nothing below it.
    Rmdir { rel: String },
}

impl Change {
    /// The path the change is about.
    pub fn rel(&self) -> &str {
        match self {
            Change::Mkdir { rel, .. }
            | Change::SetMeta { rel, .. }
            | Change::Unlink { rel, .. }
            | Change::Rmdir { rel } => rel,
        }
    }

    /// Whether its path is one the store accepts (a file's, or a directory's ending in `/`).
    fn valid(&self, scope: &Scope) -> bool {
        let rel = self.rel();
        match self {
            Change::Mkdir { .. } | Change::Rmdir { .. } => {
                !rel.is_empty() && scope.dir_key(rel).is_ok()
            }
            Change::Unlink { .. } => !rel.is_empty() && scope.entry_key(rel).is_ok(),
            Change::SetMeta { .. } => scope.entry_key(rel).is_ok(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    location: String,
    seq: u64,
    /// When the change was made (Unix seconds).
    at: u64,
    change: Change,
}

/// A change waiting for S3, with its place in the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub seq: u64,
    pub at: u64,
    pub change: Change,
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    location: String,
    /// In order; the disk holds the same.
    queue: Mutex<Vec<Queued>>,
}

fn entry_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

fn parse_name(name: &[u8]) -> Option<u64> {
    let digits = name.strip_suffix(b".json")?;
    if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens (creating, mode 0700) the journal in `dir` and loads this location's changes.
    pub fn open(dir: &Path, location: &str, scope: &Scope) -> std::io::Result<Journal> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut queue = Vec::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name();
            let Some(seq) = parse_name(name.as_encoded_bytes()) else {
                continue;
            };
            match read_entry(&e.path()) {
                Some(entry) if entry.seq == seq && entry.location == location => {
                    if entry.change.valid(scope) {
                        queue.push(Queued {
                            seq,
                            at: entry.at,
                            change: entry.change,
                        });
                    } else {
                        tracing::warn!(file = %e.path().display(), "journal entry with a path outside the rules: ignored");
                    }
                }
                // Another location's: another mount's business.
                Some(entry) if entry.location != location => {}
                _ => {
                    tracing::warn!(file = %e.path().display(), "unreadable journal entry: ignored (left on disk)");
                }
            }
        }
        queue.sort_by_key(|q| q.seq);
        Ok(Journal {
            dir: dir.to_path_buf(),
            location: location.to_owned(),
            queue: Mutex::new(queue),
        })
    }

    /// The changes waiting, in order.
    pub fn queued(&self) -> Vec<Queued> {
        self.queue.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `change` durably (fsync'd) after folding it into what is queued for the same
    /// path (see [`fold`]); returns once it is on disk.
    pub fn push(&self, change: Change) -> std::io::Result<()> {
        let mut queue = self.queue.lock().unwrap();
        let seq = queue
            .last()
            .map_or(1, |q| q.seq + 1)
            .max(next_seq_floor(&self.dir));
        let mut next = queue.clone();
        let at = crate::clock::unix_now();
        fold(&mut next, Queued { seq, at, change });
        self.store(&queue, &next)?;
        *queue = next;
        Ok(())
    }

    /// Removes the change numbered `seq` (applied, or given up on).
    pub fn remove(&self, seq: u64) -> std::io::Result<()> {
        let mut queue = self.queue.lock().unwrap();
        let next: Vec<Queued> = queue.iter().filter(|q| q.seq != seq).cloned().collect();
        self.store(&queue, &next)?;
        *queue = next;
        Ok(())
    }

    /// Changes the queued change `seq` into `change` (a change learnt more about), or removes
    /// it (`None`).
    pub fn replace(&self, seq: u64, change: Option<Change>) -> std::io::Result<()> {
        let mut queue = self.queue.lock().unwrap();
        let mut next = queue.clone();
        match change {
            Some(c) => {
                if let Some(q) = next.iter_mut().find(|q| q.seq == seq) {
                    q.change = c;
                }
            }
            None => next.retain(|q| q.seq != seq),
        }
        self.store(&queue, &next)?;
        *queue = next;
        Ok(())
    }

    /// Makes the disk hold `next` where it held `old`: new and changed entries written
    /// (fsync'd) first, then the ones gone removed, then the directory fsync'd.
    fn store(&self, old: &[Queued], next: &[Queued]) -> std::io::Result<()> {
        for q in next {
            if old.iter().any(|o| o == q) {
                continue;
            }
            let entry = Entry {
                location: self.location.clone(),
                seq: q.seq,
                at: q.at,
                change: q.change.clone(),
            };
            let path = self.dir.join(entry_name(q.seq));
            let tmp = self.dir.join(format!("{}.tmp", entry_name(q.seq)));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(&entry).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
        }
        for o in old {
            if !next.iter().any(|q| q.seq == o.seq) {
                let _ = std::fs::remove_file(self.dir.join(entry_name(o.seq)));
            }
        }
        fsync_dir(&self.dir)
    }
}

/// The numbers already used on disk by any location (two mounts of a profile share the
/// directory): new entries come after them.
fn next_seq_floor(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| parse_name(e.file_name().as_encoded_bytes()))
                .max()
                .map_or(1, |m| m + 1)
        })
        .unwrap_or(1)
}

fn read_entry(path: &Path) -> Option<Entry> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || meta.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY_BYTES).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The keys `before → after` changed, applied to `current`: what a metadata change made on
/// one version means for another (another client's other keys stay).
pub fn rebase_meta(before: &UserMeta, after: &UserMeta, current: &UserMeta) -> UserMeta {
    let mut out = current.clone();
    for (k, v) in after {
        if before.get(k) != Some(v) {
            out.insert(k.clone(), v.clone());
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.remove(k);
        }
    }
    out
}

/// Adds `new` to `queue`, folded into what is there for the same path, so the journal
/// holds one change per path wherever order cannot matter:
/// - metadata changes of one path become one (first version and `before`, last `after`);
/// - a metadata change of a directory made in the journal goes into its `Mkdir`;
/// - an `Rmdir` of a directory made in the journal (and nothing since under it) cancels it,
///   not what came before it (an `Rmdir` of the directory S3 holds, then a `Mkdir`);
/// - an `Unlink` drops the metadata changes of its file, and names the version they
///   started from.
pub fn fold(queue: &mut Vec<Queued>, new: Queued) {
    let rel = new.change.rel().to_owned();
    let last_for = |queue: &Vec<Queued>| queue.iter().rposition(|q| q.change.rel() == rel);
    match new.change {
        Change::SetMeta { ref after, .. } => {
            if let Some(i) = last_for(queue) {
                match &mut queue[i].change {
                    Change::SetMeta { after: a, .. } => {
                        *a = after.clone();
                        return;
                    }
                    Change::Mkdir { meta, .. } => {
                        *meta = after.clone();
                        return;
                    }
                    _ => {}
                }
            }
            queue.push(new);
        }
        Change::Rmdir { .. } => {
            let below =
                |q: &Queued| q.change.rel() != rel && q.change.rel().starts_with(rel.as_str());
            let made_here = queue
                .iter()
                .rposition(|q| q.change.rel() == rel && matches!(q.change, Change::Mkdir { .. }));
            if let Some(m) = made_here
                && !queue[m..].iter().any(below)
            {
                // That `Mkdir` and what followed it for this path go; anything before it (an
                // `Rmdir` of the directory S3 holds) stays.
                let mut at = 0;
                queue.retain(|q| {
                    at += 1;
                    at <= m || q.change.rel() != rel
                });
                return;
            }
            queue
                .retain(|q| !(q.change.rel() == rel && matches!(q.change, Change::SetMeta { .. })));
            queue.push(new);
        }
        Change::Unlink { .. } => {
            let mut new = new;
            // The version seen first is the one S3 has: nothing of the file was sent.
            if let Some(first) = queue.iter().find(|q| q.change.rel() == rel)
                && let Change::SetMeta { etag, .. } = &first.change
                && let Change::Unlink { etag: e, .. } = &mut new.change
            {
                *e = etag.clone();
            }
            queue
                .retain(|q| !(q.change.rel() == rel && matches!(q.change, Change::SetMeta { .. })));
            queue.push(new);
        }
        Change::Mkdir { .. } => queue.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> UserMeta {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn scope() -> Scope {
        Scope::new("p/")
    }

    #[test]
    fn changes_survive_a_reopen_in_order_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "s3://b/p/", &scope()).unwrap();
        j.push(Change::Mkdir {
            rel: "d/".into(),
            meta: meta(&[("mode", "16877")]),
        })
        .unwrap();
        j.push(Change::Unlink {
            rel: "f".into(),
            etag: "\"e\"".into(),
        })
        .unwrap();
        let first = j.queued();
        assert_eq!(first.len(), 2);
        drop(j);
        let j = Journal::open(dir.path(), "s3://b/p/", &scope()).unwrap();
        assert_eq!(j.queued(), first);
        j.remove(first[0].seq).unwrap();
        drop(j);
        let j = Journal::open(dir.path(), "s3://b/p/", &scope()).unwrap();
        assert_eq!(j.queued(), first[1..]);
        // Another location's journal does not see them.
        let other = Journal::open(dir.path(), "s3://b/q/", &scope()).unwrap();
        assert!(other.is_empty());
        // New numbers come after every number on disk.
        other.push(Change::Rmdir { rel: "x/".into() }).unwrap();
        assert!(other.queued()[0].seq > first[1].seq);
    }

    #[test]
    fn tampered_entries_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "s3://b/p/", &scope()).unwrap();
        j.push(Change::Unlink {
            rel: "ok".into(),
            etag: "\"e\"".into(),
        })
        .unwrap();
        let seq = j.queued()[0].seq;
        // A path that leaves the prefix, a number that is not the file's, a symlink.
        let bad = Entry {
            location: "s3://b/p/".into(),
            seq: 90,
            at: 0,
            change: Change::Unlink {
                rel: "../x".into(),
                etag: "e".into(),
            },
        };
        std::fs::write(
            dir.path().join(entry_name(90)),
            serde_json::to_vec(&bad).unwrap(),
        )
        .unwrap();
        let renumbered = Entry {
            seq: 5,
            ..bad.clone()
        };
        std::fs::write(
            dir.path().join(entry_name(91)),
            serde_json::to_vec(&renumbered).unwrap(),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            dir.path().join(entry_name(seq)),
            dir.path().join(entry_name(92)),
        )
        .unwrap();
        std::fs::write(dir.path().join("junk.json"), b"{").unwrap();
        let j = Journal::open(dir.path(), "s3://b/p/", &scope()).unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!(j.queued()[0].seq, seq);
    }

    #[test]
    fn changes_of_one_path_fold() {
        let mut q = Vec::new();
        let push = |q: &mut Vec<Queued>, change| {
            let seq = q.len() as u64 + 100;
            fold(q, Queued { seq, at: 0, change })
        };
        push(
            &mut q,
            Change::SetMeta {
                rel: "f".into(),
                etag: "\"e1\"".into(),
                before: meta(&[("mode", "33188")]),
                after: meta(&[("mode", "33261")]),
            },
        );
        push(
            &mut q,
            Change::SetMeta {
                rel: "f".into(),
                etag: "\"e1\"".into(),
                before: meta(&[("mode", "33261")]),
                after: meta(&[("mode", "33152")]),
            },
        );
        assert_eq!(q.len(), 1);
        assert!(matches!(&q[0].change, Change::SetMeta { before, after, .. }
            if before["mode"] == "33188" && after["mode"] == "33152"));
        push(
            &mut q,
            Change::Unlink {
                rel: "f".into(),
                etag: "\"later\"".into(),
            },
        );
        assert_eq!(q.len(), 1);
        assert!(matches!(&q[0].change, Change::Unlink { etag, .. } if etag == "\"e1\""));
        // A directory made and removed again leaves nothing; its metadata went into it.
        push(
            &mut q,
            Change::Mkdir {
                rel: "d/".into(),
                meta: meta(&[("mode", "16877")]),
            },
        );
        push(
            &mut q,
            Change::SetMeta {
                rel: "d/".into(),
                etag: String::new(),
                before: meta(&[("mode", "16877")]),
                after: meta(&[("mode", "16832")]),
            },
        );
        assert!(matches!(&q[1].change, Change::Mkdir { meta, .. } if meta["mode"] == "16832"));
        push(&mut q, Change::Rmdir { rel: "d/".into() });
        assert_eq!(q.len(), 1);
        // A directory that S3 has is removed for real.
        push(&mut q, Change::Rmdir { rel: "e/".into() });
        assert_eq!(q.len(), 2);
        // Made again and removed again: the removal of S3's directory stays.
        push(
            &mut q,
            Change::Mkdir {
                rel: "e/".into(),
                meta: meta(&[("mode", "16877")]),
            },
        );
        push(&mut q, Change::Rmdir { rel: "e/".into() });
        assert_eq!(q.len(), 2);
        assert!(matches!(&q[1].change, Change::Rmdir { rel } if rel == "e/"));
    }

    #[test]
    fn a_metadata_change_rebases_onto_another_version() {
        let before = meta(&[("mode", "33188"), ("uid", "1"), ("gone", "x")]);
        let after = meta(&[("mode", "33261"), ("uid", "1")]);
        let current = meta(&[
            ("mode", "33188"),
            ("uid", "2"),
            ("gone", "x"),
            ("theirs", "y"),
        ]);
        assert_eq!(
            rebase_meta(&before, &after, &current),
            meta(&[("mode", "33261"), ("uid", "2"), ("theirs", "y")])
        );
    }

    #[test]
    fn names_parse_strictly() {
        assert_eq!(parse_name(b"00000000000000000042.json"), Some(42));
        for bad in [
            &b"42.json"[..],
            b"0000000000000000004x.json",
            b"00000000000000000042.json.tmp",
            b"",
        ] {
            assert_eq!(parse_name(bad), None);
        }
    }
}
