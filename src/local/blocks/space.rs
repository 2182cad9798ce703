//! The disk cache's room: what is admitted to the index, what is evicted (least recently
//! used first, within the budget and the free space the disk keeps), and the background
//! scan that indexes what an earlier mount left on disk.

use std::path::Path;
use std::time::SystemTime;

use super::*;

impl DiskCache {
    pub(super) fn admit(
        &self,
        index: &mut Index,
        name: FileName,
        key: &BlockKey,
        bytes: u64,
        at: SystemTime,
    ) {
        let entry = Entry {
            rel: key.key.as_str().into(),
            etag: key.etag.as_str().into(),
            bytes,
            touched: at,
        };
        if let Some(old) = index.lru.put(name, entry) {
            index.used -= old.bytes;
        }
        index.used += bytes;
    }

    pub(super) fn forget(&self, name: FileName) {
        let mut index = self.index.lock().unwrap();
        if let Some(old) = index.lru.pop(&name) {
            index.used -= old.bytes;
        }
    }

    /// The budget now: the configured one, less what the filesystem needs to keep free.
    pub(super) fn effective_budget(&self, used: u64) -> u64 {
        match crate::fs::filesystem_space(&self.dir) {
            Some((free, total)) => {
                let keep = (total / KEEP_FREE_FRACTION).min(KEEP_FREE_MAX);
                // What the cache may still grow by, plus what it holds.
                self.budget.min(used + free.saturating_sub(keep))
            }
            None => self.budget,
        }
    }

    /// Takes least recently used unpinned blocks out of the index until it fits the budget;
    /// returns their files, for removal outside the lock.
    pub(super) fn evict(&self, index: &mut Index) -> Vec<FileName> {
        if index.used <= self.budget.saturating_sub(self.budget / 10)
            && !index.lru.len().is_multiple_of(64)
        {
            return Vec::new();
        }
        let budget = self.effective_budget(index.used);
        if index.used <= budget {
            return Vec::new();
        }
        let pins = self.pins.lock().unwrap().clone();
        let latest = self.pinned_versions.lock().unwrap().clone();
        let kept = |e: &Entry| {
            is_pinned(&pins, &e.rel) && latest.get(&*e.rel).is_none_or(|v| **v == *e.etag)
        };
        let mut victims = Vec::new();
        let mut kept_pinned = Vec::new();
        // Down to 90% of the budget, so eviction runs once per many writes.
        let target = budget - budget / 10;
        while index.used > target {
            let Some((name, entry)) = index.lru.pop_lru() else {
                break;
            };
            if kept(&entry) {
                index.used -= entry.bytes;
                kept_pinned.push((name, entry));
                continue;
            }
            index.used -= entry.bytes;
            victims.push(name);
        }
        for (name, entry) in kept_pinned {
            index.used += entry.bytes;
            index.lru.put(name, entry);
        }
        self.evicted
            .fetch_add(victims.len() as u64, Ordering::Relaxed);
        victims
    }

    pub(super) fn remove_files(&self, names: Vec<FileName>) {
        for name in names {
            let _ = std::fs::remove_file(self.dir.join(name.relative()));
        }
    }

    /// Indexes what is on disk: every block file's size, key and mtime (its last use), oldest
    /// first. Files that are not block files of this layout are left alone; unreadable ones
    /// are removed.
    pub(super) fn scan(&self) {
        let mut found: Vec<(SystemTime, FileName, Entry)> = Vec::new();
        let Ok(subdirs) = std::fs::read_dir(&self.dir) else {
            self.scanned.store(true, Ordering::Release);
            return;
        };
        for sub in subdirs.flatten() {
            let sub_name = sub.file_name();
            let sub_name = sub_name.as_encoded_bytes();
            if sub_name.len() != 2 || !sub_name.iter().all(u8::is_ascii_hexdigit) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for file in files.flatten() {
                let Some(name) = FileName::parse(file.file_name().as_encoded_bytes()) else {
                    continue;
                };
                let path = file.path();
                match self.index_entry(&path) {
                    Ok((mtime, entry)) => found.push((mtime, name, entry)),
                    // Counted by whoever removes it (a read may have found it first).
                    Err(torn) => {
                        if std::fs::remove_file(&path).is_ok() && torn {
                            tracing::warn!(file = %path.display(), "torn block: removed from the disk cache");
                            self.corrupt.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        found.sort_by_key(|(mtime, ..)| *mtime);
        {
            // The newest version on disk of each pinned file is the one its pin keeps.
            let pins = self.pins();
            let mut latest = self.pinned_versions.lock().unwrap();
            for (_, _, e) in &found {
                if is_pinned(&pins, &e.rel) {
                    latest.insert(e.rel.to_string(), e.etag.to_string());
                }
            }
        }
        let victims = {
            let mut index = self.index.lock().unwrap();
            // Blocks written since the scan began are newer: they stay the most recent.
            let newer: Vec<(FileName, Entry)> =
                std::iter::from_fn(|| index.lru.pop_lru()).collect();
            index.used = 0;
            for (mtime, name, entry) in found {
                let bytes = entry.bytes;
                if let Some(old) = index.lru.put(
                    name,
                    Entry {
                        touched: mtime,
                        ..entry
                    },
                ) {
                    index.used -= old.bytes;
                }
                index.used += bytes;
            }
            for (name, entry) in newer {
                let bytes = entry.bytes;
                if let Some(old) = index.lru.put(name, entry) {
                    index.used -= old.bytes;
                }
                index.used += bytes;
            }
            self.evict(&mut index)
        };
        self.remove_files(victims);
        self.scanned.store(true, Ordering::Release);
    }

    /// A block file's modification time and index entry, from its header. `Err` if it is
    /// not a block file of this cache — `Err(true)`: one of ours, torn — (someone else's,
    /// another location's or block size's: the scan removes it, so that the budget counts
    /// everything in the directory).
    pub(super) fn index_entry(&self, path: &Path) -> Result<(SystemTime, Entry), bool> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|_| false)?;
        let meta = file.metadata().map_err(|_| false)?;
        if !meta.file_type().is_file() || meta.uid() != current_uid() {
            return Err(false);
        }
        let mut head = vec![0u8; MAX_HEADER.min(meta.len() as usize)];
        file.read_exact(&mut head).map_err(|_| true)?;
        let header = parse_header(&head).ok_or(true)?;
        if header.location != self.location.as_bytes() || header.block_size != self.block_size {
            return Err(false);
        }
        if meta.len() != (header.header_len + header.data_len) as u64 {
            return Err(true);
        }
        let rel = std::str::from_utf8(header.rel).map_err(|_| true)?;
        let etag = std::str::from_utf8(header.etag).map_err(|_| true)?;
        Ok((
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            Entry {
                rel: rel.into(),
                etag: etag.into(),
                bytes: meta.len(),
                touched: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            },
        ))
    }
}
