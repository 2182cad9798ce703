//! Shutdown and crash recovery: what is still to upload, uploading it, and cleaning up
//! after a mount that crashed or was killed.

use std::time::SystemTime;

use super::Fs;
use super::error::FsResult;

/// A spool file name `PID-INO-SEQ` whose process is gone (a crash between creating and
/// unlinking it).
fn stale_spool_name(name: &str) -> bool {
    let mut parts = name.split('-');
    let pid = parts.next().and_then(|p| p.parse::<libc::pid_t>().ok());
    let rest_ok = parts.clone().count() == 2 && parts.all(|p| p.parse::<u64>().is_ok());
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return false;
    };
    if !rest_ok || pid as u32 == std::process::id() {
        return false;
    }
    crate::upload_journal::process_gone(pid as u32)
}

impl Fs {
    /// Files open for writing with changes not yet in S3: (key relative to the prefix,
    /// current size). For shutdown logs.
    pub fn pending_writes(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .write_states()
            .iter()
            .filter_map(|ws| {
                let size = ws.pending_size()?;
                Some((self.inodes.get(ws.ino)?.rel, size))
            })
            .collect();
        out.sort();
        out
    }

    /// Uploads every file whose changes are not in S3 yet, as it stands now (what `fsync`
    /// would do), and pending directory times (and listing indexes), and waits for the
    /// uploads. Used at shutdown
    /// for what is still open when the grace period ends; returns the first error after
    /// trying them all.
    pub async fn flush_all(&self) -> FsResult<()> {
        let mut result = self.flush_dir_times().await;
        self.write_indexes_at_unmount().await;
        for ws in self.write_states() {
            let (Some(size), Some(node)) = (ws.pending_size(), self.inodes.get(ws.ino)) else {
                continue;
            };
            tracing::info!(key = %node.rel, size, "uploading a file still open for writing");
            match self.flush_state(&ws).await {
                Ok(()) => tracing::info!(key = %node.rel, size, "uploaded"),
                Err(e) => {
                    tracing::error!(key = %node.rel, size, error = %e, "upload at shutdown failed");
                    self.keep_pending(&ws, &e).await;
                    result = result.and(Err(e));
                }
            }
        }
        result
    }

    /// Cleans up after a previous mount that crashed or was killed: aborts the multipart
    /// uploads under the prefix that a process of this machine started and that is gone
    /// (the journal says), and any older than `stray_upload_age` (24 h), whoever started
    /// them; a live upload of another mount, device or the web app is never touched. Also
    /// removes spool files of dead processes. Spool files are unlinked right after
    /// creation, so a leftover one can only come from a crash in between: it is empty,
    /// there is nothing to upload. Failures are logged, never fatal: a mount without
    /// cleanup still works.
    pub async fn recover(&self) {
        if let Ok(dir) = std::fs::read_dir(&self.opts.spool_dir) {
            for e in dir.flatten() {
                let name = e.file_name();
                if name.to_str().is_some_and(stale_spool_name) {
                    match std::fs::remove_file(e.path()) {
                        Ok(()) => {
                            tracing::info!(file = %e.path().display(), "removed a stale spool file")
                        }
                        Err(err) => {
                            tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a stale spool file")
                        }
                    }
                }
            }
        }
        if self.opts.read_only {
            return;
        }
        self.adopt_journal();
        self.adopt_pending().await;
        // Offline changes an earlier mount left go to S3 before the kernel sees this one.
        self.replay_journal().await;
        self.abort_stray_uploads().await;
    }

    /// Aborts the multipart uploads under the prefix that this machine's journal shows
    /// nothing will complete (their process is gone, or their abort could not be sent), and
    /// any older than the stray age (at mount, and when S3 answers again).
    pub(super) async fn abort_stray_uploads(&self) {
        if self.opts.read_only {
            return;
        }
        let dead: Vec<crate::upload_journal::Started> = match &self.upload.journal {
            Some((location, journal)) => journal.dead(location),
            None => Vec::new(),
        };
        let uploads = match self.store.list_uploads("").await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list multipart uploads; stray ones stay");
                return;
            }
        };
        let now = SystemTime::now();
        for u in &uploads {
            let age = u.initiated.and_then(|t| now.duration_since(t).ok());
            let ours_and_dead = dead.iter().any(|d| d.upload_id == u.upload_id);
            let abandoned = age.is_some_and(|a| a >= self.opts.stray_upload_age);
            if !(ours_and_dead || abandoned) {
                continue;
            }
            match self.store.abort_multipart(&u.rel, &u.upload_id).await {
                Ok(()) => {
                    self.upload.upload_ended(&u.upload_id);
                    let why = if ours_and_dead {
                        "left by a mount of this machine that is gone"
                    } else {
                        "older than the stray-upload age"
                    };
                    tracing::info!(key = %u.rel, age_secs = age.map(|a| a.as_secs()), why, "aborted a stray multipart upload")
                }
                Err(e) => {
                    tracing::warn!(key = %u.rel, error = %e, "cannot abort a stray multipart upload")
                }
            }
        }
        // Noted uploads S3 no longer has (completed, or aborted by a lifecycle rule).
        for d in &dead {
            if !uploads.iter().any(|u| u.upload_id == d.upload_id) {
                self.upload.upload_ended(&d.upload_id);
            }
        }
    }
}
