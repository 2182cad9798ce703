//! A directory's mtime and ctime moved by a change of its entries: shown at once, stored
//! behind (`fs/dirtimes.rs` writes them), and not taken back by what S3 says meanwhile.

use std::time::SystemTime;

use super::{Found, Inodes, Kind, Meta, PendingTimes};

impl Inodes {
    /// What S3 holds of `ino` as far as this mount knows: its metadata without the
    /// directory times still to be written.
    pub fn stored(&self, ino: u64) -> Option<Found> {
        let state = self.state.lock().unwrap();
        let node = state.nodes.get(&ino)?;
        let mut found = node.found.clone();
        if let Some(p) = &node.pending_times {
            (found.meta.mtime, found.meta.ctime) = p.stored;
        }
        Some(found)
    }

    /// A change of `ino`'s entries at `now` (if it is a directory): its mtime and ctime
    /// show `now` from here on. Returns whether it is a directory.
    pub fn touch_dir(&self, ino: u64, now: SystemTime) -> bool {
        let mut state = self.state.lock().unwrap();
        match state.nodes.get_mut(&ino) {
            Some(n) if n.found.kind == Kind::Dir => {
                let stored = (n.found.meta.mtime, n.found.meta.ctime);
                n.pending_times
                    .get_or_insert_with(|| Box::new(PendingTimes { at: now, stored }))
                    .at = now;
                (n.found.meta.mtime, n.found.meta.ctime) = (Some(now), Some(now));
                let parent = n.parent;
                state.dirty.insert(parent);
                true
            }
            _ => false,
        }
    }

    /// A directory's marker now holds `meta`, as version `etag` (its times written behind):
    /// pending times it carries are stored, newer ones stay pending.
    pub fn set_dir_meta(&self, ino: u64, meta: Meta, etag: String) {
        let mut state = self.state.lock().unwrap();
        state.written.wrote(ino);
        if let Some(parent) = state.nodes.get(&ino).map(|n| n.parent) {
            state.dirty.insert(parent);
        }
        if let Some(n) = state.nodes.get_mut(&ino) {
            if n.pending_times.as_ref().map(|p| p.at) == meta.mtime {
                n.pending_times = None;
            }
            n.found.meta_known = true;
            n.set_found(Found {
                meta,
                etag,
                ..n.found.clone()
            });
        }
    }
}
