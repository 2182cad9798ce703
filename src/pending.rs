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
//! which a running mount notices within 5 s.
//!
//! The area's files are input like any other (another local user or a tampered backup may
//! have put them there): a record is read only from a regular file of this user named
//! `<id>.json` for its own id, opened without following a symlink; its key must be a path
//! the mount could have made (every segment a valid name) and its data file a name this
//! area makes (`<id>-<pid>-<seq>.data`, never a path), opened the same careful way.
//! Anything else is skipped with a warning and left alone.
//!
//! Several processes use one area (two mounts, `cognifs pending drop`): each holds a shared
//! `flock` on `.lock` for as long as it has the area open, and leftovers are removed only by
//! an opener that gets it exclusively (no one else has the area open, so nothing is in
//! flight); a change of records holds an exclusive `flock` on the directory.
//!
//! A record is uploaded by one mount at a time: the mount that keeps or adopts it holds an
//! exclusive `flock` on its data file (its *claim*) until the record is gone or the mount
//! ends. Another mount adopts only records nobody claims, so a mount still finishing its
//! unmount and the next mount of the profile never both upload one record (each would
//! have made its own conflict copy of the same bytes).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::statefile::{check_own_file, open_own_file, read_own_file};
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

    /// Err (saying why) unless this is a record the area could have written: its key a path
    /// the mount could have made, its data file a name the area makes for its id, its size
    /// one S3 could hold.
    pub fn check(&self) -> Result<(), String> {
        check_rel(&self.rel)?;
        if !is_data_name(&self.data, &self.id()) {
            return Err(format!(
                "data file {:?} is not one this area makes",
                self.data
            ));
        }
        if self.size > MAX_OBJECT_SIZE {
            return Err(format!("size {} is past S3's largest object", self.size));
        }
        Ok(())
    }
}

/// S3's largest object: no kept upload is larger.
const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// A record file larger than this is not one of ours (its metadata is at most 2 KiB).
const MAX_RECORD_BYTES: u64 = 64 << 10;
/// Held shared by every process that has the area open.
const PRESENCE_LOCK: &str = ".lock";

/// A key relative to the prefix that a file of the mount can have: `seg(/seg)*`, each
/// segment a name the kernel can be given.
fn check_rel(rel: &str) -> Result<(), String> {
    crate::store::Scope::new("")
        .object_key(rel)
        .map_err(|e| format!("key {rel:?}: {e}"))?;
    if !rel.split('/').all(crate::fs::inodes::valid_name) {
        return Err(format!("key {rel:?} holds a name that cannot be a file's"));
    }
    Ok(())
}

/// `<id>.json`'s id: 16 lowercase hex digits.
fn record_id_of_file(name: &str) -> Option<&str> {
    let id = name.strip_suffix(".json")?;
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (id.len() == 16 && id.bytes().all(hex)).then_some(id)
}

/// The `<seq>` of data file names: unique in this process (areas of one process share it),
/// starting from the clock so that a later process with the same pid starts elsewhere.
fn next_data_seq() -> u64 {
    static SEQ: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    SEQ.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        AtomicU64::new(now.as_micros() as u64)
    })
    .fetch_add(1, Ordering::Relaxed)
}

/// `<id>-<pid>-<seq>.data`: the only data file names [`PendingArea::put`] makes.
fn is_data_name(name: &str, id: &str) -> bool {
    let decimal = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name
        .strip_prefix(id)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".data"))
    else {
        return false;
    };
    matches!(rest.split_once('-'), Some((pid, seq)) if decimal(pid) && decimal(seq))
}

/// The record in the file `name` of `dir`, if it is a sound one (see [`PendingRecord::check`]).
fn read_record(dir: &Path, name: &str) -> Result<PendingRecord, String> {
    let id = record_id_of_file(name).ok_or("not a record's file name")?;
    let text = read_own_file(&dir.join(name), MAX_RECORD_BYTES).map_err(|e| e.to_string())?;
    let record: PendingRecord = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    if record.id() != id {
        return Err(format!(
            "the record's id is {}, not its file's",
            record.id()
        ));
    }
    record.check()?;
    Ok(record)
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
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.ends_with(".json") {
                return None;
            }
            match read_record(dir, &name) {
                Ok(r) => Some(r),
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "unusable pending-upload record; left alone");
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
    /// Serializes changes of records within this process (`dir_lock` across processes).
    lock: Mutex<()>,
    /// The directory, `flock`ed exclusively around each change of records.
    dir_lock: File,
    /// `.lock`, `flock`ed shared while this area is open: other processes then leave files
    /// they did not name alone (they may be ours, in flight).
    _presence: File,
    /// Bytes of data held, as of the last change or [`PendingArea::refresh_used`].
    used: AtomicU64,
    /// When the records on disk were last looked at ([`PendingArea::refresh_due`]).
    looked: std::sync::Mutex<Option<std::time::Instant>>,
    /// The data files of the records this area claims, by name, their `flock` held (a
    /// closed file lets its claim go).
    claims: Mutex<std::collections::HashMap<String, File>>,
}

/// What [`PendingArea::claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// The record is this area's now: its data, opened for reading.
    New(File),
    /// This area or another process (a running mount) claims it already, or it changed
    /// since it was listed.
    Held,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl PendingArea {
    /// `state_dir/<profile>/pending`.
    pub fn for_profile(state_dir: &Path, profile: &str) -> PathBuf {
        state_dir.join(profile).join("pending")
    }

    /// Opens (creating, mode 0700) the area at `dir`, and removes data files no record
    /// names unless another process has the area open.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let dir_lock = File::open(dir)?;
        if !dir_lock.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", dir.display()),
            ));
        }
        let presence = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(dir.join(PRESENCE_LOCK))?;
        check_own_file(&presence)?;
        let alone = match presence.try_lock() {
            Ok(()) => true,
            Err(fs::TryLockError::WouldBlock) => false,
            Err(fs::TryLockError::Error(e)) => return Err(e),
        };
        let area = PendingArea {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
            dir_lock,
            _presence: presence,
            used: AtomicU64::new(0),
            looked: std::sync::Mutex::new(None),
            claims: Mutex::new(Default::default()),
        };
        if alone {
            area.remove_orphans();
        }
        // From exclusive (or nothing) to shared: others may now open the area too.
        area._presence.lock_shared()?;
        area.refresh_used();
        Ok(area)
    }

    /// Holds the area for a change of records: within this process and across processes.
    fn exclusive(&self) -> AreaGuard<'_> {
        let held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Should flock fail (it does not on local filesystems), the change goes ahead as
        // it would have without it.
        let locked = self.dir_lock.lock().is_ok();
        AreaGuard {
            _held: held,
            dir: locked.then_some(&self.dir_lock),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Called only while no other process has the area open.
    fn remove_orphans(&self) {
        let _guard = self.exclusive();
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

    /// The record of `location`/`rel`, if there is a sound one.
    pub fn get(&self, location: &str, rel: &str) -> Option<PendingRecord> {
        let name = format!("{}.json", PendingRecord::id_of(location, rel));
        read_record(&self.dir, &name).ok()
    }

    /// Where a record's data is. A record whose data name is not one this area makes
    /// (see [`PendingRecord::check`]) gets the area's directory itself, which no file
    /// operation reads or removes as a file.
    pub fn data_path(&self, record: &PendingRecord) -> PathBuf {
        if is_data_name(&record.data, &record.id()) {
            self.dir.join(&record.data)
        } else {
            self.dir.clone()
        }
    }

    /// A sound record's data, opened for reading (a regular file of this user, not
    /// reached through a symlink).
    pub fn open_data(&self, record: &PendingRecord) -> io::Result<File> {
        record
            .check()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        open_own_file(&self.data_path(record))
    }

    /// Claims a sound record that neither this area nor another process claims, to upload
    /// it (see the module's text).
    pub fn claim(&self, record: &PendingRecord) -> io::Result<Claim> {
        // Under the area's lock: the record may have been replaced or removed since it was
        // listed (a claim of stale data would upload an older version).
        let _guard = self.exclusive();
        if self.get(&record.location, &record.rel).as_ref() != Some(record) {
            return Ok(Claim::Held);
        }
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        if claims.contains_key(&record.data) {
            return Ok(Claim::Held);
        }
        let data = self.open_data(record)?;
        match data.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(Claim::Held),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        // The same open file (a dup): the lock lasts while either is open.
        claims.insert(record.data.clone(), data.try_clone()?);
        Ok(Claim::New(data))
    }

    /// Lets go of the claim on `data` (its record was removed by someone else).
    pub fn release(&self, data: &str) {
        self.claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(data);
    }

    /// Bytes of data the area holds.
    pub fn used_bytes(&self) -> u64 {
        self.list()
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.size))
    }

    /// [`PendingArea::used_bytes`] as last counted (cheap: for every write that grows a file).
    pub fn used_bytes_cached(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts again (records may have been dropped by another process).
    pub fn refresh_used(&self) {
        self.used.store(self.used_bytes(), Ordering::Relaxed);
    }

    /// Whether the area should be looked at again for what other processes changed (at most
    /// every `every`); if so, the count of bytes is taken again now.
    pub fn refresh_due(&self, every: std::time::Duration) -> bool {
        let mut last = self.looked.lock().unwrap();
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        drop(last);
        self.refresh_used();
        true
    }

    /// The next [`PendingArea::refresh_due`] says yes.
    pub fn refresh_soon(&self) {
        *self.looked.lock().unwrap() = None;
    }

    /// Rewrites a record's JSON (its `last_error`), keeping its data.
    pub fn update_error(&self, record: &PendingRecord) {
        let _guard = self.exclusive();
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
        check_rel(&record.rel).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let _guard = self.exclusive();
        let id = record.id();
        let old = self.get(&record.location, &record.rel);
        // A name no file has: never one an earlier record still names (another area of this
        // process, a dead process with the same pid), which a failure here would remove.
        let (mut data, data_path) = loop {
            record.data = format!("{id}-{}-{}.data", std::process::id(), next_data_seq());
            let path = self.dir.join(&record.data);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let written = (|| {
            // A new file: nobody else can hold its lock. Claimed before the record names it.
            let claim = data.try_clone()?;
            let _ = claim.try_lock();
            copy_prefix(source, &mut data, record.size)?;
            data.sync_all()?;
            self.write_json(&record)?;
            Ok(claim)
        })();
        let claim = match written {
            Ok(claim) => claim,
            Err(e) => {
                let _ = fs::remove_file(&data_path);
                return Err(e);
            }
        };
        let replaced = old.as_ref().map_or(0, |o| o.size);
        {
            let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = &old {
                claims.remove(&old.data);
            }
            claims.insert(record.data.clone(), claim);
        }
        if let Some(old) = old.filter(|o| o.data != record.data) {
            let _ = fs::remove_file(self.data_path(&old));
        }
        // Counted as it changes: a count from the records on disk is O(records) per call
        // (5,000 files kept offline took minutes to queue and to send).
        self.adjust_used(record.size, replaced);
        Ok(record)
    }

    /// Removes the record of `location`/`rel` if it still names `data` (a newer record of
    /// the same key stays). Returns whether it was removed.
    pub fn remove_if(&self, location: &str, rel: &str, data: &str) -> bool {
        let _guard = self.exclusive();
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
        let _guard = self.exclusive();
        self.remove_record(record);
    }

    fn remove_record(&self, r: &PendingRecord) {
        let _ = fs::remove_file(self.dir.join(format!("{}.json", r.id())));
        let _ = fs::remove_file(self.data_path(r));
        let _ = fsync_dir(&self.dir);
        self.adjust_used(0, r.size);
        self.release(&r.data);
    }

    fn adjust_used(&self, added: u64, removed: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_add(added).saturating_sub(removed))
            });
    }
}

/// The area held for a change: the in-process lock and, where it was taken, the flock.
struct AreaGuard<'a> {
    _held: MutexGuard<'a, ()>,
    dir: Option<&'a File>,
}

impl Drop for AreaGuard<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.dir {
            let _ = dir.unlock();
        }
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
        assert_eq!(names_in(area.dir()), [PRESENCE_LOCK]);
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
        // A crash between writing data and its record, or mid-record (the process is gone).
        drop(area);
        fs::write(path.join("0000000000000000-1-1.data"), b"partial").unwrap();
        fs::write(path.join("0000000000000000.json.tmp"), b"{").unwrap();
        let reopened = PendingArea::open(&path).unwrap();
        assert_eq!(reopened.list(), vec![r.clone()]);
        assert_eq!(names_in(&path).len(), 3, "{:?}", names_in(&path));
        assert_eq!(fs::read(reopened.data_path(&r)).unwrap(), b"xy");
    }

    /// A later area of the same process (a remount in one process) replacing a record: its
    /// data file gets a name of its own (it once took the earlier one's, failed to create
    /// it, and removed the earlier data: the kept upload was lost).
    #[test]
    fn a_second_area_in_one_process_never_takes_a_kept_files_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = PendingArea::open(dir.path()).unwrap();
        let r1 = first.put(record("k", 3), &source(b"one")).unwrap();
        drop(first);
        let second = PendingArea::open(dir.path()).unwrap();
        let r2 = second.put(record("k", 3), &source(b"two")).unwrap();
        assert_ne!(r1.data, r2.data);
        assert_eq!(fs::read(second.data_path(&r2)).unwrap(), b"two");
        assert_eq!(second.list(), vec![r2]);
    }

    #[test]
    fn a_record_is_claimed_by_one_area_at_a_time_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending");
        let mine = PendingArea::open(&path).unwrap();
        let kept = mine.put(record("a", 3), &source(b"abc")).unwrap();
        // The area that kept it claims it; another (a second mount) may not take it, nor
        // may the first take it twice.
        let other = PendingArea::open(&path).unwrap();
        assert!(matches!(other.claim(&kept).unwrap(), Claim::Held));
        assert!(matches!(mine.claim(&kept).unwrap(), Claim::Held));
        // The first mount ends with the record still there: the other takes it, once.
        drop(mine);
        let Claim::New(mut data) = other.claim(&kept).unwrap() else {
            panic!("an unclaimed record was not claimed")
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut data, &mut bytes).unwrap();
        assert_eq!(bytes, b"abc");
        assert!(matches!(other.claim(&kept).unwrap(), Claim::Held));
        let third = PendingArea::open(&path).unwrap();
        assert!(matches!(third.claim(&kept).unwrap(), Claim::Held));
        // A record replaced since it was listed is not claimed (its data would be stale).
        let newer = other.put(record("a", 2), &source(b"xy")).unwrap();
        assert!(matches!(third.claim(&kept).unwrap(), Claim::Held));
        assert!(matches!(third.claim(&newer).unwrap(), Claim::Held));
        // Removed: its claim goes with it.
        assert!(other.remove_if(&newer.location, &newer.rel, &newer.data));
        assert!(other.claims.lock().unwrap().is_empty());
    }

    #[test]
    fn a_short_source_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let area = PendingArea::open(dir.path()).unwrap();
        assert!(area.put(record("x", 10), &source(b"xy")).is_err());
        assert!(area.list().is_empty());
        assert_eq!(names_in(dir.path()), [PRESENCE_LOCK]);
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Writes `record` as the area's JSON for its own id (or `file`), as a tamperer would.
    fn plant(dir: &Path, record: &PendingRecord, file: Option<&str>) {
        let name = file.map_or_else(|| format!("{}.json", record.id()), str::to_owned);
        fs::write(dir.join(name), serde_json::to_vec(record).unwrap()).unwrap();
    }

    #[test]
    fn a_record_naming_data_outside_the_area_is_skipped_and_nothing_outside_is_touched() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("victim");
        fs::write(&outside, b"secret").unwrap();
        let dir = root.path().join("state/p/pending");
        let area = PendingArea::open(&dir).unwrap();
        for data in ["../../../victim", "/etc/passwd", "x.data", ""] {
            let mut r = record("a", 6);
            r.data = data.to_owned();
            plant(&dir, &r, None);
            assert!(area.list().is_empty(), "{data:?} accepted");
            assert!(area.get(&r.location, &r.rel).is_none());
            assert!(area.open_data(&r).is_err());
            area.remove(&r);
            assert!(!area.remove_if(&r.location, &r.rel, &r.data));
        }
        assert_eq!(fs::read(&outside).unwrap(), b"secret");
        // A well-formed name of another id is not this record's either.
        let mut r = record("a", 6);
        r.data = format!("{}-1-1.data", PendingRecord::id_of("s3://b/p/", "b"));
        plant(&dir, &r, None);
        assert!(area.list().is_empty());
    }

    #[test]
    fn a_symlinked_or_foreign_data_file_or_record_is_not_read() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("victim");
        fs::write(&outside, b"secret").unwrap();
        let dir = root.path().join("pending");
        let area = PendingArea::open(&dir).unwrap();
        let mut r = record("a", 6);
        r.data = format!("{}-1-1.data", r.id());
        std::os::unix::fs::symlink(&outside, dir.join(&r.data)).unwrap();
        plant(&dir, &r, None);
        // The record itself is sound; its data is not opened through the link.
        assert_eq!(area.list(), vec![r.clone()]);
        let err = area.open_data(&r).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        // A record file that is a symlink is not read.
        let other = record("b", 1);
        let elsewhere = root.path().join("elsewhere.json");
        fs::write(&elsewhere, serde_json::to_vec(&other).unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join(format!("{}.json", other.id()))).unwrap();
        assert_eq!(area.list(), vec![r.clone()]);
        // A FIFO in place of data is refused without waiting for a writer.
        fs::remove_file(dir.join(&r.data)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join(&r.data),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(
            area.open_data(&r).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Not the user's: refused (as root, a file given away to another uid).
        fs::remove_file(dir.join(&r.data)).unwrap();
        fs::write(dir.join(&r.data), b"abcdef").unwrap();
        assert!(area.open_data(&r).is_ok());
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(dir.join(&r.data), Some(12345), None).unwrap();
            assert_eq!(
                area.open_data(&r).unwrap_err().kind(),
                io::ErrorKind::PermissionDenied
            );
        }
    }

    #[test]
    fn a_record_whose_file_name_is_not_its_id_or_whose_key_is_not_a_path_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let area = PendingArea::open(dir.path()).unwrap();
        let mut r = record("a", 1);
        r.data = format!("{}-1-1.data", r.id());
        plant(dir.path(), &r, Some("0123456789abcdef.json"));
        assert!(area.list().is_empty());
        for rel in [
            "../x",
            "a/../../x",
            "/abs",
            "a//b",
            "a/./b",
            "dir/",
            "",
            "a\0b",
        ] {
            let mut r = record(rel, 1);
            r.data = format!("{}-1-1.data", r.id());
            plant(dir.path(), &r, None);
            assert!(area.list().is_empty(), "{rel:?} accepted");
            assert!(area.put(r, &source(b"x")).is_err(), "{rel:?} kept");
        }
        let long = "n".repeat(256);
        assert!(area.put(record(&long, 1), &source(b"x")).is_err());
    }

    #[test]
    fn a_second_process_opening_the_area_leaves_in_flight_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let first = PendingArea::open(dir.path()).unwrap();
        // What `put` has on disk between its data and its record.
        let in_flight = dir.path().join(format!("{}-1-7.data", record("a", 1).id()));
        fs::write(&in_flight, b"x").unwrap();
        fs::write(dir.path().join("0000000000000000.json.tmp"), b"{").unwrap();
        // Another open of the area (its own file description, as another process has).
        let second = PendingArea::open(dir.path()).unwrap();
        assert!(in_flight.exists());
        drop(second);
        drop(first);
        // Alone, an opener cleans up.
        let _alone = PendingArea::open(dir.path()).unwrap();
        assert!(!in_flight.exists());
        assert_eq!(names_in(dir.path()), [PRESENCE_LOCK]);
    }

    proptest::proptest! {
        /// Any bytes as a record file, and any strings in a record's fields: never a panic,
        /// and a record that is listed names data inside the area.
        #[test]
        fn any_record_file_is_read_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            rel in "(\\.{0,2}/?[a-z]{0,2}/?){0,3}|.{0,8}",
            data in "(\\.\\./)?[0-9a-f-]{0,24}(\\.data)?|.{0,12}",
            size in proptest::prelude::any::<u64>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let area = PendingArea::open(dir.path()).unwrap();
            fs::write(dir.path().join("0123456789abcdef.json"), &bytes).unwrap();
            let mut r = record(&rel, size);
            r.data = data;
            plant(dir.path(), &r, None);
            let mut sound = r.clone();
            sound.data = format!("{}-1-1.data", r.id());
            plant(dir.path(), &sound, Some(&format!("{}.json", PendingRecord::id_of("x", &rel))));
            for listed in area.list() {
                proptest::prop_assert!(listed.check().is_ok());
                let path = area.data_path(&listed);
                proptest::prop_assert_eq!(path.parent(), Some(dir.path()));
            }
            let _ = area.get(&r.location, &r.rel);
            let _ = area.open_data(&r);
            let _ = area.used_bytes();
        }
    }

    #[test]
    fn sizes_past_s3s_largest_object_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let area = PendingArea::open(dir.path()).unwrap();
        for rel in ["a", "b"] {
            let mut r = record(rel, u64::MAX / 2 + 1);
            r.data = format!("{}-1-1.data", r.id());
            plant(dir.path(), &r, None);
        }
        assert!(area.list().is_empty());
        assert_eq!(area.used_bytes(), 0);
    }
}
