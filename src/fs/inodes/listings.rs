//! The listings the inode table keeps per directory: for the TTL a fresh one answers
//! `readdir` and lookups of names it lacks with no request; after it, the last one seen is
//! what is shown while S3 does not answer (and what is kept on disk for a later mount).
//! Entries this mount creates or changes are put in place; a readdir that holds a listing
//! keeps its snapshot.

use std::sync::Arc;
use std::time::Instant;

use super::{Asked, Attr, DirEntry, Found, Inodes, Meta, State};

impl Inodes {
    /// Makes a directory's cached listing stale (its contents changed through the mount):
    /// listed again when next needed; kept, as the last one seen, for answering offline.
    pub fn invalidate_listing(&self, ino: u64) {
        Self::expire_listing(&mut self.state.lock().unwrap(), ino);
    }

    pub(super) fn expire_listing(state: &mut State, ino: u64) {
        if let Some(Some((_, until))) = state.nodes.get_mut(&ino).map(|n| &mut n.listing) {
            *until = Instant::now();
        }
    }

    /// `parent/name` was just made by this mount: a fresh listing of `parent` gets it (so
    /// lookups of other names there still need no request); a stale one stays stale.
    pub fn add_to_listing(&self, parent: u64, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.entries_written.wrote(parent);
        let Some(attr) = state
            .children
            .get(&(parent, name.to_owned()))
            .and_then(|&c| state.nodes.get(&c).map(|n| self.attr(c, &n.found)))
        else {
            return;
        };
        Self::put_in_listing(&mut state, parent, name, &attr);
    }

    /// Inserts or updates `name` in `parent`'s listing, if it has one (a stale one too: it
    /// is what is shown while S3 does not answer, and kept on disk).
    pub(super) fn put_in_listing(state: &mut State, parent: u64, name: &str, attr: &Attr) {
        let Some(p) = state.nodes.get_mut(&parent) else {
            return;
        };
        let Some((listing, _)) = &mut p.listing else {
            return;
        };
        // In place unless an open readdir still holds this listing: then it keeps its
        // snapshot and this gets a copy. (A copy every time cost a create in a directory of
        // n files O(n): 2,000 new files made 2 million entry copies.)
        let entries = Arc::make_mut(listing);
        let entry = DirEntry {
            name: name.to_owned(),
            ino: attr.ino,
            attr: attr.clone(),
        };
        match entries.binary_search_by(|e| e.name.as_str().cmp(name)) {
            Ok(i) => entries[i] = entry,
            Err(i) => entries.insert(i, entry),
        }
    }

    /// The directory's listing if fetched within the TTL.
    pub fn fresh_listing(&self, ino: u64) -> Option<Arc<Vec<DirEntry>>> {
        let state = self.state.lock().unwrap();
        match &state.nodes.get(&ino)?.listing {
            Some((entries, until)) if Instant::now() < *until => Some(entries.clone()),
            _ => None,
        }
    }

    /// How many entries the directory's last listing had, fresh or not (`None`: never
    /// listed, or the listing was dropped).
    pub fn last_listing_len(&self, ino: u64) -> Option<usize> {
        self.any_listing(ino).map(|l| l.len())
    }

    /// Stores a complete listing (already filtered by [`build_listing`]), the answer to a
    /// request sent at `asked`, and records every entry in the table (but those this mount
    /// wrote since), so readdir can report the same inode numbers lookup will.
    pub fn set_listing(
        &self,
        ino: u64,
        entries: Vec<(String, Found)>,
        asked: Asked,
    ) -> Arc<Vec<DirEntry>> {
        self.set_listing_until(ino, entries, Instant::now() + self.ttl, Some(asked))
    }

    /// A listing last seen some time ago (kept on disk; S3 does not answer): shown, and
    /// stale at once, so that the first lookup with S3 back asks again.
    pub fn set_old_listing(&self, ino: u64, entries: Vec<(String, Found)>) -> Arc<Vec<DirEntry>> {
        let listing = self.set_listing_until(ino, entries, Instant::now(), None);
        self.state.lock().unwrap().dirty.remove(&ino);
        listing
    }

    /// Whether this mount changed `dir`'s entries (made, wrote, removed or renamed one)
    /// after `asked`: a listing asked then is older than what the table shows.
    pub fn entries_changed_since(&self, dir: u64, asked: Asked) -> bool {
        self.state
            .lock()
            .unwrap()
            .entries_written
            .stale(&dir, asked)
    }

    /// The directory's listing however old (`None`: never listed, or dropped).
    pub fn any_listing(&self, ino: u64) -> Option<Arc<Vec<DirEntry>>> {
        let state = self.state.lock().unwrap();
        state
            .nodes
            .get(&ino)?
            .listing
            .as_ref()
            .map(|(l, _)| l.clone())
    }

    pub(super) fn set_listing_until(
        &self,
        ino: u64,
        entries: Vec<(String, Found)>,
        expires: Instant,
        asked: Option<Asked>,
    ) -> Arc<Vec<DirEntry>> {
        let mut state = self.state.lock().unwrap();
        // Asked before this mount changed the directory: shown, but not trusted (the next
        // lookup or readdir lists again), and no name removed since is brought back.
        let stale = asked.is_some_and(|a| state.entries_written.stale(&ino, a));
        let mut out = Vec::with_capacity(entries.len());
        for (name, found) in entries {
            if stale && state.negative.contains_key(&(ino, name.clone())) {
                continue;
            }
            let child = self.upsert_locked_until(&mut state, ino, &name, found, expires, asked);
            let attr = self.attr(child, &state.nodes[&child].found);
            out.push(DirEntry {
                name,
                ino: child,
                attr,
            });
        }
        let out = Arc::new(out);
        Self::keep_listing(
            &mut state,
            ino,
            &out,
            if stale { Instant::now() } else { expires },
        );
        out
    }

    /// `listing` is `ino`'s, trusted until `expires`.
    fn keep_listing(state: &mut State, ino: u64, listing: &Arc<Vec<DirEntry>>, expires: Instant) {
        if let Some(n) = state.nodes.get_mut(&ino) {
            n.listing = Some((listing.clone(), expires));
        }
        state.dirty.insert(ino);
        // Names absent from a fresh listing are known-absent for the TTL too.
        if expires > Instant::now() {
            state.negative.retain(|(p, _), _| *p != ino);
        }
    }

    /// Stores the listing of `ino` read page by page (its first LIST sent at `asked`), whose
    /// entries are already in the table (recorded as each page came): in name order, it and
    /// its entries trusted until `expires` — unless this mount changed the directory since
    /// `asked` (then kept stale, as in [`Inodes::set_listing`]).
    pub fn set_listed(
        &self,
        ino: u64,
        mut entries: Vec<DirEntry>,
        expires: Instant,
        asked: Asked,
    ) -> Arc<Vec<DirEntry>> {
        // Mostly in order already (S3 lists in key order): a sort would allocate half the
        // listing again as scratch space, 6 MB for 100,000 entries.
        if !entries.is_sorted_by(|a, b| a.name <= b.name) {
            entries.sort_by(|a, b| a.name.cmp(&b.name));
        }
        // A name listed twice (a server repeating itself across pages): once.
        entries.dedup_by(|a, b| a.name == b.name);
        // Kept for the TTL: without the room its growth left (up to half of it).
        entries.shrink_to_fit();
        let out = Arc::new(entries);
        let mut state = self.state.lock().unwrap();
        let expires = if state.entries_written.stale(&ino, asked) {
            Instant::now()
        } else {
            expires
        };
        // Its entries are as fresh as the listing (a lookup after the last page must not ask
        // S3 about the first page's names again).
        for e in out.iter() {
            if let Some(n) = state.nodes.get_mut(&e.ino)
                && n.expires < expires
            {
                n.expires = expires;
            }
        }
        Self::keep_listing(&mut state, ino, &out, expires);
        out
    }

    /// The number to hand the kernel for `entry` of `parent`'s listing (readdirplus): its
    /// own while the table has it; if it was forgotten since the listing was taken, the
    /// name's current entry, or a new one that the next use looks at afresh.
    pub fn listed_ino(&self, parent: u64, entry: &DirEntry) -> u64 {
        let mut state = self.state.lock().unwrap();
        if state.nodes.contains_key(&entry.ino) {
            return entry.ino;
        }
        if let Some(&ino) = state.children.get(&(parent, entry.name.clone())) {
            return ino;
        }
        let found = Found {
            kind: entry.attr.kind,
            size: entry.attr.size,
            etag: String::new(),
            last_modified: entry.attr.mtime,
            meta: Meta::default(),
            meta_known: false,
        };
        let ino = self.upsert_locked(&mut state, parent, &entry.name, found);
        if let Some(n) = state.nodes.get_mut(&ino) {
            n.expires = Instant::now();
        }
        ino
    }
}
