//! A directory's mtime and ctime move when entries are created, removed or renamed in it,
//! as on a local disk.
//!
//! The new times show at once (the inode table), and reach S3 — on the directory's marker,
//! where s3fs reads them too — by write-behind: at most one marker PUT per directory per
//! `interval`, however many entries a `cp -r` adds meanwhile, and whatever is left at
//! unmount. A marker write never races the removal or rename of its directory: both hold
//! `gate`, and forget the directories they move or remove, so a flush can never bring a
//! removed directory back. Losing these times (a crash) loses nothing else.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::error::FsResult;
use super::inodes::{Found, Inodes, Kind};
use super::meta::Meta;
use crate::store::{Expect, ObjectStore, StoreError};

pub(super) struct DirTimes {
    dirty: Mutex<HashSet<u64>>,
    /// Held while markers are written, and while directories are removed or renamed.
    pub(super) gate: tokio::sync::Mutex<()>,
    flusher: AtomicBool,
    interval: Duration,
    dir_mode: u32,
}

impl DirTimes {
    pub fn new(interval: Duration, dir_mode: u16) -> Self {
        DirTimes {
            dirty: Mutex::new(HashSet::new()),
            gate: tokio::sync::Mutex::new(()),
            flusher: AtomicBool::new(false),
            interval,
            dir_mode: libc::S_IFDIR | u32::from(dir_mode),
        }
    }

    /// `dir` changed now: show it, and write it behind (starting the flusher if needed).
    pub fn touch(self: &Arc<Self>, inodes: &Arc<Inodes>, store: &Arc<dyn ObjectStore>, dir: u64) {
        if !inodes.touch_dir(dir, SystemTime::now()) {
            return;
        }
        self.dirty.lock().unwrap().insert(dir);
        if !self.flusher.swap(true, Ordering::AcqRel) {
            let (me, inodes, store) = (Arc::downgrade(self), inodes.clone(), store.clone());
            tokio::spawn(flush_loop(me, inodes, store));
        }
    }

    /// Stops writing times for `dirs` (removed or renamed away; call under `gate`).
    pub fn forget(&self, dirs: impl IntoIterator<Item = u64>) {
        let mut dirty = self.dirty.lock().unwrap();
        for d in dirs {
            dirty.remove(&d);
        }
    }

    /// A directory's times were just written some other way (an explicit utimens).
    pub fn written(&self, dir: u64) {
        self.dirty.lock().unwrap().remove(&dir);
    }

    /// Writes every pending directory time now; returns the first failure (the rest are
    /// still tried; failed ones stay pending).
    pub async fn flush(&self, inodes: &Inodes, store: &dyn ObjectStore) -> FsResult<()> {
        let _gate = self.gate.lock().await;
        let dirs: Vec<u64> = self.dirty.lock().unwrap().drain().collect();
        let mut result = Ok(());
        for dir in dirs {
            if let Err(e) = self.write_marker(inodes, store, dir).await {
                // Offline: written once S3 answers (said once, by the store, not here).
                if e.is_unreachable() {
                    tracing::debug!(ino = dir, error = %e, "directory times wait for S3");
                } else {
                    tracing::warn!(ino = dir, error = %e, "could not store a directory's times");
                }
                self.dirty.lock().unwrap().insert(dir);
                result = result.and(Err(e));
            }
        }
        result
    }

    async fn write_marker(
        &self,
        inodes: &Inodes,
        store: &dyn ObjectStore,
        dir: u64,
    ) -> FsResult<()> {
        let Some(node) = inodes.get(dir) else {
            return Ok(());
        };
        if node.kind != Kind::Dir || node.attr.nlink == 0 {
            return Ok(());
        }
        // Only the times are ours: the rest is what the marker holds (owner, mode, xattrs).
        let (mtime, ctime) = (node.found.meta.mtime, node.found.meta.ctime);
        let known = node
            .found
            .meta_known
            .then(|| (node.found.meta.clone(), node.found.etag.clone()));
        let (etag, meta) = rewrite_marker(store, &node.rel, known, self.dir_mode, |m| {
            (m.mtime, m.ctime) = (mtime, ctime);
            Ok(())
        })
        .await?;
        inodes.set_dir_meta(dir, meta, etag);
        Ok(())
    }
}

/// Rewrites of one marker tried when other writers keep changing it.
const MARKER_TRIES: u32 = 3;

/// Rewrites the directory marker `rel` with what `change` makes of the metadata it holds,
/// conditional on that version: starting from `known` (its metadata and etag, `""` for no
/// marker) when the mount knows it, else from a HEAD; after a lost race, from a new HEAD,
/// so another device's change to the marker is kept, not overwritten. `dir_mode` is stored
/// where no mode is. Returns the new etag and the metadata stored.
pub(super) async fn rewrite_marker(
    store: &dyn ObjectStore,
    rel: &str,
    known: Option<(Meta, String)>,
    dir_mode: u32,
    change: impl Fn(&mut Meta) -> FsResult<()>,
) -> FsResult<(String, Meta)> {
    let mut current = known;
    let mut tries = 1;
    loop {
        let (mut meta, etag) = match current.take() {
            Some(known) => known,
            None => {
                let marker = store.head(rel).await?;
                let etag = marker.as_ref().map(|m| m.etag.clone()).unwrap_or_default();
                (Found::dir_with(marker.as_ref()).meta, etag)
            }
        };
        change(&mut meta)?;
        meta.mode = meta.mode.or(Some(dir_mode));
        let expect = Expect::from_base(Some(&etag));
        match store
            .put_if(rel, Bytes::new(), &meta.to_user(), &expect)
            .await
        {
            Ok(etag) => return Ok((etag, meta)),
            Err(StoreError::Changed | StoreError::NotFound | StoreError::Raced)
                if tries < MARKER_TRIES =>
            {
                tries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn flush_loop(me: Weak<DirTimes>, inodes: Arc<Inodes>, store: Arc<dyn ObjectStore>) {
    loop {
        let Some(interval) = me.upgrade().map(|d| d.interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(times) = me.upgrade() else {
            return;
        };
        let _ = times.flush(&inodes, &*store).await;
    }
}
