//! The pending-upload area: files whose upload failed at `flush`/`fsync`/`close`, kept on
//! disk under the profile's state directory until they are in S3.
//!
//! One record per key: `<id>.json` (what to upload where: the S3 location, the key relative
//! to the prefix, the etag the writer started from, the metadata, the size) and the data
//! file it names, `<id>-<seq>.data`. A record is written data first (fsync'd), then its
//! JSON through a temporary name (fsync'd, renamed, directory fsync'd), so a crash at any
//! point leaves either the old record or the new one, never a record naming missing or
//! partial data. Data files no record names are removed when the area is opened.
//!
//! The mount that owns the key uploads records in the background (`fs/pending.rs`); the
//! next mount of the profile picks up what is left; `cognifs pending drop` removes a record,
//! which a running mount notices on its next pass.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::store::UserMeta;

/// What one pending upload is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// `s3://bucket/prefix/`: which mount's record this is.
    pub location: String,
    /// The key relative to the prefix.
    pub rel: String,
    /// The etag of the object the writer started from; `None`: there was none (a new file).
    /// If S3 holds anything else by the time of the upload, the data goes beside it.
    pub base_etag: Option<String>,
    pub size: u64,
    /// The user metadata the upload carries (mode, owner, times, xattrs).
    pub meta: UserMeta,
    /// When the first upload failed (Unix seconds).
    pub since: u64,
    /// The latest failure, for `cognifs status`.
    pub last_error: String,
    /// The data file's name, beside the record.
    pub data: String,
}

impl PendingRecord {
    /// The record's stable id: one record per location and key.
    pub fn id_of(location: &str, rel: &str) -> String {
        // FNV-1a, 64 bits: stable across builds (unlike std's hasher) and plenty for a name.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in location.bytes().chain([0]).chain(rel.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    pub fn id(&self) -> String {
        Self::id_of(&self.location, &self.rel)
    }
}

/// The first line of an error, at most 200 characters: what `cognifs status` shows (the
/// log has it whole).
pub fn brief(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

/// The records in `dir`, oldest first, without opening (creating, cleaning) the area.
pub fn records_in(dir: &Path) -> Vec<PendingRecord> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PendingRecord> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            let text = fs::read(e.path()).ok()?;
            match serde_json::from_slice(&text) {
                Ok(r) => Some(r),
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "unreadable pending-upload record");
                    None
                }
            }
        })
        .collect();
    out.sort_by(|a, b| (a.since, &a.rel).cmp(&(b.since, &b.rel)));
    out
}

/// The directory of pending uploads of one profile.
#[derive(Debug)]
pub struct PendingArea {
    dir: PathBuf,
    /// Serializes writers of the directory within this process.
    lock: Mutex<()>,
    seq: AtomicU64,
    /// Bytes of data held, as of the last change or [`PendingArea::refresh_used`].
    used: AtomicU64,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl PendingArea {
    /// `state_dir/<profile>/pending`.
    pub fn for_profile(state_dir: &Path, profile: &str) -> PathBuf {
        state_dir.join(profile).join("pending")
    }

    /// Opens (creating, mode 0700) the area at `dir` and removes data files no record names.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let area = PendingArea {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
            seq: AtomicU64::new(0),
            used: AtomicU64::new(0),
        };
        area.remove_orphans();
        area.refresh_used();
        Ok(area)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn remove_orphans(&self) {
        let _guard = self.lock.lock().unwrap();
        let named: std::collections::HashSet<String> =
            self.list().into_iter().map(|r| r.data).collect();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let orphan_data = name.ends_with(".data") && !named.contains(&name);
            if orphan_data || name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Every readable record, oldest first. Unreadable ones are logged and skipped (never
    /// removed: a person may want to look at them).
    pub fn list(&self) -> Vec<PendingRecord> {
        records_in(&self.dir)
    }

    /// The record of `location`/`rel`, if there is one.
    pub fn get(&self, location: &str, rel: &str) -> Option<PendingRecord> {
        let path = self
            .dir
            .join(format!("{}.json", PendingRecord::id_of(location, rel)));
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    pub fn data_path(&self, record: &PendingRecord) -> PathBuf {
        self.dir.join(&record.data)
    }

    /// Bytes of data the area holds.
    pub fn used_bytes(&self) -> u64 {
        self.list().iter().map(|r| r.size).sum()
    }

    /// [`PendingArea::used_bytes`] as last counted (cheap: for every write that grows a file).
    pub fn used_bytes_cached(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts again (records may have been dropped by another process).
    pub fn refresh_used(&self) {
        self.used.store(self.used_bytes(), Ordering::Relaxed);
    }

    /// Rewrites a record's JSON (its `last_error`), keeping its data.
    pub fn update_error(&self, record: &PendingRecord) {
        let _guard = self.lock.lock().unwrap();
        if self
            .get(&record.location, &record.rel)
            .is_none_or(|r| r.data != record.data)
        {
            return;
        }
        let _ = self.write_json(record);
    }

    fn write_json(&self, record: &PendingRecord) -> std::io::Result<()> {
        let id = record.id();
        let tmp = self.dir.join(format!("{id}.json.tmp"));
        let mut json = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        json.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
        json.sync_all()?;
        fs::rename(&tmp, self.dir.join(format!("{id}.json")))?;
        fsync_dir(&self.dir)
    }

    /// Stores `record` with the first `record.size` bytes of `source` as its data, durably,
    /// replacing any record of the same key. `record.data` is chosen here.
    pub fn put(&self, mut record: PendingRecord, source: &File) -> std::io::Result<PendingRecord> {
        let _guard = self.lock.lock().unwrap();
        let id = record.id();
        let old = self.get(&record.location, &record.rel);
        record.data = format!(
            "{id}-{}-{}.data",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let data_path = self.dir.join(&record.data);
        let written = (|| {
            let mut data = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&data_path)?;
            copy_prefix(source, &mut data, record.size)?;
            data.sync_all()?;
            self.write_json(&record)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&data_path);
            return Err(e);
        }
        if let Some(old) = old.filter(|o| o.data != record.data) {
            let _ = fs::remove_file(self.dir.join(old.data));
        }
        self.refresh_used();
        Ok(record)
    }

    /// Removes the record of `location`/`rel` if it still names `data` (a newer record of
    /// the same key stays). Returns whether it was removed.
    pub fn remove_if(&self, location: &str, rel: &str, data: &str) -> bool {
        let _guard = self.lock.lock().unwrap();
        match self.get(location, rel) {
            Some(r) if r.data == data => {
                self.remove_record(&r);
                true
            }
            _ => false,
        }
    }

    /// Removes a record and its data (`cognifs pending drop`).
    pub fn remove(&self, record: &PendingRecord) {
        let _guard = self.lock.lock().unwrap();
        self.remove_record(record);
    }

    fn remove_record(&self, r: &PendingRecord) {
        let _ = fs::remove_file(self.dir.join(format!("{}.json", r.id())));
        let _ = fs::remove_file(self.dir.join(&r.data));
        let _ = fsync_dir(&self.dir);
        self.refresh_used();
    }
}

/// Copies the first `len` bytes of `from` into `to` (copy_file_range where the kernel can).
fn copy_prefix(from: &File, to: &mut File, len: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut from = from.try_clone()?;
    from.seek(SeekFrom::Start(0))?;
    let copied = std::io::copy(&mut (&from).take(len), to)?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the spool holds {copied} bytes, {len} expected"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rel: &str, size: u64) -> PendingRecord {
        PendingRecord {
            location: "s3://b/p/".into(),
            rel: rel.into(),
            base_etag: Some("\"e\"".into()),
            size,
            meta: UserMeta::from([("mode".to_owned(), "33188".to_owned())]),
            since: 1,
            last_error: "S3 error: down".into(),
            data: String::new(),
        }
    }

    fn source(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn records_round_trip_replace_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let area = PendingArea::open(&dir.path().join("pending")).unwrap();
        let first = area.put(record("a/b", 3), &source(b"abcdef")).unwrap();
        assert_eq!(fs::read(area.data_path(&first)).unwrap(), b"abc");
        assert_eq!(area.list(), vec![first.clone()]);
        assert_eq!(area.used_bytes(), 3);
        // A newer failure of the same key replaces the record and its data.
        let second = area.put(record("a/b", 5), &source(b"vwxyz")).unwrap();
        assert_eq!(area.list(), vec![second.clone()]);
        assert!(!area.data_path(&first).exists());
        // Removing by an outdated data name keeps the newer record.
        assert!(!area.remove_if(&first.location, &first.rel, &first.data));
        assert!(area.remove_if(&second.location, &second.rel, &second.data));
        assert!(area.list().is_empty());
        assert_eq!(fs::read_dir(area.dir()).unwrap().count(), 0);
    }

    #[test]
    fn files_are_private_and_leftovers_of_a_crash_are_cleaned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending");
        let area = PendingArea::open(&path).unwrap();
        let r = area.put(record("x", 2), &source(b"xy")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&area.data_path(&r)), 0o600);
        // A crash between writing data and its record, or mid-record.
        fs::write(path.join("0000000000000000-1-1.data"), b"partial").unwrap();
        fs::write(path.join("0000000000000000.json.tmp"), b"{").unwrap();
        let reopened = PendingArea::open(&path).unwrap();
        assert_eq!(reopened.list(), vec![r.clone()]);
        assert_eq!(fs::read_dir(&path).unwrap().count(), 2);
        assert_eq!(fs::read(reopened.data_path(&r)).unwrap(), b"xy");
    }

    #[test]
    fn a_short_source_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let area = PendingArea::open(dir.path()).unwrap();
        assert!(area.put(record("x", 10), &source(b"xy")).is_err());
        assert!(area.list().is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
