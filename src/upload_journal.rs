//! The multipart uploads this machine started, per profile (`$XDG_STATE_HOME/cognifs/
//! PROFILE/uploads/`, one small file each, mode 0600), so that a later mount aborts only
//! the uploads it can prove dead — their process is gone — and never a live one of another
//! mount, another device or the web app (those are left to S3's own age limit, or to the
//! mount's `stray_upload_age`).
//!
//! The files are input like any other: each is at most [`MAX_ENTRY_BYTES`], parsed as JSON,
//! and only its upload id and process id are trusted, for a comparison and a liveness
//! check. Nothing is read from or written to a path a file names.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A journal file larger than this is not one of ours: ignored.
const MAX_ENTRY_BYTES: u64 = 8 << 10;
/// At most this many journal files are read at mount.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// `s3://bucket/prefix/`.
    pub location: String,
    pub rel: String,
    pub upload_id: String,
    /// The process that started it.
    pub pid: u32,
}

#[derive(Debug)]
pub struct UploadJournal {
    dir: PathBuf,
}

/// Whether process `pid` is gone (not merely someone else's).
pub fn process_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return true;
    };
    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
}

impl UploadJournal {
    /// The journal beside a profile's pending area (`…/PROFILE/pending` → `…/PROFILE/uploads`).
    pub fn beside(pending_dir: &Path) -> std::io::Result<Self> {
        let dir = pending_dir
            .parent()
            .map_or_else(|| pending_dir.join("uploads"), |p| p.join("uploads"));
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(UploadJournal { dir })
    }

    fn file_of(&self, upload_id: &str) -> PathBuf {
        // The id is S3's (any bytes): the file is named by a hash of it, never by it.
        let hash = upload_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        self.dir.join(format!("{hash:016x}.json"))
    }

    /// Notes an upload this process started. A failure is logged: without the note the
    /// upload is only aborted once it is older than the stray age.
    pub fn started(&self, location: &str, rel: &str, upload_id: &str) {
        self.note(location, rel, upload_id, std::process::id());
    }

    /// Notes that nothing will complete the upload (its abort could not be sent): the next
    /// cleanup of any mount of this machine aborts it, whether this process lives or not.
    pub fn abandoned(&self, location: &str, rel: &str, upload_id: &str) {
        self.note(location, rel, upload_id, 0);
    }

    fn note(&self, location: &str, rel: &str, upload_id: &str, pid: u32) {
        let entry = Started {
            location: location.to_owned(),
            rel: rel.to_owned(),
            upload_id: upload_id.to_owned(),
            pid,
        };
        let path = self.file_of(upload_id);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(&entry).map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(key = rel, error = %e, "cannot note a multipart upload in the journal");
        }
    }

    /// The upload is completed or aborted.
    pub fn ended(&self, upload_id: &str) {
        let _ = std::fs::remove_file(self.file_of(upload_id));
    }

    /// Uploads under `location` that a process of this machine started and that is gone.
    pub fn dead(&self, location: &str) -> Vec<Started> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        dir.flatten()
            .take(MAX_ENTRIES)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let bytes = crate::statefile::read_own_file(&e.path(), MAX_ENTRY_BYTES).ok()?;
                let entry: Started = serde_json::from_slice(&bytes).ok()?;
                // A file of another upload under this one's name is not trusted.
                (self.file_of(&entry.upload_id) == e.path()).then_some(entry)
            })
            .filter(|s| s.location == location && process_gone(s.pid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any bytes in a journal file: never a panic, and nothing trusted unless it is the
        /// entry of its own file name.
        #[test]
        fn any_journal_file_is_read_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            pid in proptest::prelude::any::<u32>(),
            id in ".{0,12}",
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let j = UploadJournal::beside(&tmp.path().join("pending")).unwrap();
            std::fs::write(j.file_of(&id), &bytes).unwrap();
            let entry = serde_json::json!({"location": "s3://b/p/", "rel": "a", "upload_id": id, "pid": pid});
            std::fs::write(j.file_of("other"), entry.to_string()).unwrap();
            for s in j.dead("s3://b/p/") {
                proptest::prop_assert_eq!(j.file_of(&s.upload_id), j.file_of("other"));
            }
        }
    }

    #[test]
    fn only_uploads_of_dead_processes_of_this_location_are_dead() {
        let tmp = tempfile::tempdir().unwrap();
        let j = UploadJournal::beside(&tmp.path().join("pending")).unwrap();
        j.started("s3://b/p/", "a", "id-live");
        assert!(j.dead("s3://b/p/").is_empty(), "this process is alive");
        // A process that is gone: an entry written by hand as an earlier mount would have.
        let gone = Started {
            location: "s3://b/p/".into(),
            rel: "b".into(),
            upload_id: "id-dead".into(),
            pid: i32::MAX as u32,
        };
        std::fs::write(j.file_of("id-dead"), serde_json::to_vec(&gone).unwrap()).unwrap();
        assert_eq!(j.dead("s3://b/p/"), vec![gone.clone()]);
        assert!(j.dead("s3://b/other/").is_empty());
        // Under another upload's file name, or oversized, or not JSON: ignored.
        std::fs::write(j.file_of("x"), serde_json::to_vec(&gone).unwrap()).unwrap();
        std::fs::write(j.file_of("y"), vec![b'{'; 9000]).unwrap();
        assert_eq!(j.dead("s3://b/p/").len(), 1);
        j.ended("id-dead");
        assert!(j.dead("s3://b/p/").is_empty());
    }
}
