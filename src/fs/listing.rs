//! Listings: an open directory ([`DirHandle`]) hands its entries out page by page as S3
//! sends them; each page's files whose metadata is not known are filled in (the disk
//! memory of HEADs, the directory's listing index, else HEADs, many at a time) while the
//! next page is listed. Also the listing as this mount shows it (open writes laid over)
//! and, while S3 does not answer, the listing last seen.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Fs;
use super::error::{FsError, FsResult};
use super::inodes::{self, Asked, Attr, DirEntry, Found, Kind, build_listing};
use super::lookup::LIST_PAGE_KEYS;

/// HEAD requests in flight while a listing's metadata is filled in: on a link with 20 ms
/// per request, 5,000 files take about a second.
const METADATA_FETCHES_IN_FLIGHT: usize = 128;
/// Entries one `readdir` call hands back at most (a reply holds fewer: the kernel asks
/// again from where it stopped).
const READDIR_CHUNK: usize = 512;

/// An open directory: the entries handed out so far (`.` and `..` first, then the listing in
/// S3's key order, [`inodes::key_order`]) and, while its listing is still being read, what
/// comes next. Offsets are indices into `.`, `..` and `shown`, which only grows until a
/// rewind (offset 0), so they stay valid while the kernel pages through.
#[derive(Default)]
pub(super) struct DirHandle {
    state: tokio::sync::Mutex<DirState>,
}

#[derive(Default)]
struct DirState {
    started: bool,
    /// `.` and `..`.
    dots: Vec<DirEntry>,
    shown: Shown,
    /// The listing being read from S3; `None` once it is complete.
    reading: Option<Reading>,
}

impl DirState {
    fn len(&self) -> usize {
        self.dots.len() + self.shown.entries().len()
    }

    /// At most `n` entries from `offset` on.
    fn chunk(&self, offset: usize, n: usize) -> Vec<DirEntry> {
        let dots = self.dots.get(offset..).unwrap_or_default();
        let rest = offset.saturating_sub(self.dots.len());
        let listed = self.shown.entries().get(rest..).unwrap_or_default();
        dots.iter().chain(listed).take(n).cloned().collect()
    }
}

/// A handle's entries after `.` and `..`: its own while they are read page by page or differ
/// from the inode table's listing (files being written laid over, another order), else that
/// listing itself. A copy of a 100,000-entry listing is 15 MB.
enum Shown {
    Own(Vec<DirEntry>),
    Table(Arc<Vec<DirEntry>>),
}

impl Default for Shown {
    fn default() -> Self {
        Shown::Own(Vec::new())
    }
}

impl Shown {
    fn entries(&self) -> &[DirEntry] {
        match self {
            Shown::Own(v) => v,
            Shown::Table(t) => t,
        }
    }

    /// The entries to add to while a listing is read (a table's listing is never added to).
    fn own(&mut self) -> &mut Vec<DirEntry> {
        if let Shown::Table(t) = self {
            *self = Shown::Own(t.to_vec());
        }
        match self {
            Shown::Own(v) => v,
            Shown::Table(_) => unreachable!("made its own above"),
        }
    }
}

use super::index::LazyIndex;

/// An entry's place in S3's key order ([`inodes::key_order`]): its name, and whether it is a
/// directory (listed as `name/`).
fn key(e: &DirEntry) -> (&str, bool) {
    (e.name.as_str(), e.attr.kind == Kind::Dir)
}

/// A listing being read page by page.
struct Reading {
    dir_rel: String,
    /// When the first page's LIST was sent: what the listing says is not recorded over a
    /// node this mount wrote since.
    asked: Asked,
    stream: inodes::ListingStream,
    /// The next page, listed while the previous page's metadata was fetched.
    ready: Option<crate::store::ListPage>,
    /// The continuation of the listing after `ready` (or, without it, the next page's).
    next: Option<String>,
    /// The page after the first, listed ahead by the lookup that brought the first.
    after: Option<Arc<super::lookup::NextPage>>,
    /// Files being written here when the listing started, in key order: each shows where
    /// it sorts, unless S3 lists it (then S3's entry shows, with the write's attributes).
    local: std::collections::VecDeque<DirEntry>,
    /// Entries shown that S3 does not list (from `local`), by number.
    shown_local: std::collections::HashSet<u64>,
    /// S3's entries shown with a write's attributes instead, as S3 listed them.
    overlaid: Vec<DirEntry>,
    /// The directory's listing index (`index.rs`), read when a file first needs it.
    index: Arc<LazyIndex>,
}

impl Fs {
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.dir_node(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .unwrap()
            .insert(fh, Arc::new(DirHandle::default()));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    /// The whole listing of a directory handle, `.` and `..` first (what the kernel reads in
    /// pieces through [`Fs::readdir_chunk`]).
    pub async fn readdir(&self, ino: u64, fh: u64, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let mut all = Vec::new();
        let mut at = offset;
        loop {
            let chunk = self.readdir_chunk(ino, fh, at).await?;
            if chunk.is_empty() {
                break;
            }
            at += chunk.len() as u64;
            all.extend(chunk);
        }
        if offset == 0 {
            return Ok(Arc::new(all));
        }
        // From the start, as a handle's listing is numbered.
        let mut whole = self.readdir_chunk(ino, fh, 0).await?;
        whole.truncate(offset as usize);
        whole.extend(all);
        Ok(Arc::new(whole))
    }

    /// The entries of a directory handle from `offset` on, as many as are ready (at least one
    /// unless the listing ended there): offset 0 (re)starts the listing, and an offset past
    /// what was read waits for the next page.
    pub async fn readdir_chunk(&self, ino: u64, fh: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        let handle = self.dirs.lock().unwrap().get(&fh).cloned();
        // A handle the kernel never opened here: read on its own.
        let handle = handle.unwrap_or_default();
        let mut st = handle.state.lock().await;
        if offset == 0 || !st.started {
            self.start_listing(ino, &mut st).await?;
        }
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        while st.len() <= offset && st.reading.is_some() {
            self.read_more(ino, &mut st).await?;
        }
        Ok(st.chunk(offset, READDIR_CHUNK))
    }

    /// Starts a handle's listing: `.` and `..`, then the directory's listing if it is fresh
    /// (or, while S3 does not answer, the one last seen), else its first page.
    async fn start_listing(&self, ino: u64, st: &mut DirState) -> FsResult<()> {
        let dir = self.dir_node(ino)?;
        let parent = self
            .inodes
            .get(dir.parent)
            .map(|p| p.attr)
            .unwrap_or_else(|| dir.attr.clone());
        st.started = true;
        st.reading = None;
        st.shown = Shown::default();
        st.dots = vec![
            DirEntry {
                name: ".".into(),
                ino,
                attr: dir.attr.clone(),
            },
            DirEntry {
                name: "..".into(),
                ino: parent.ino,
                attr: parent,
            },
        ];
        let kept = self.kept_first_page(ino);
        let mut after = None;
        let mut asked = Asked::now();
        let first = match (self.inodes.fresh_listing(ino), kept) {
            (Some(listing), _) => Err(listing),
            (None, Some(k)) => {
                (after, asked) = (k.after, k.asked);
                Ok(k.page)
            }
            (None, _) => match self.store.list_page(&dir.rel, None, LIST_PAGE_KEYS).await {
                Ok(page) => Ok(page),
                Err(e) => {
                    let e = FsError::from(e);
                    if !e.is_unreachable() {
                        return Err(e);
                    }
                    // S3 does not answer: the listing last seen, whole.
                    Err(self.list_dir(ino, &dir.rel).await?)
                }
            },
        };
        match first {
            Ok(page) => {
                let mut local = self.open_writes_in(ino);
                local.sort_by(|a, b| a.name.cmp(&b.name));
                st.reading = Some(Reading {
                    dir_rel: dir.rel.clone(),
                    asked,
                    stream: inodes::ListingStream::hiding(
                        (ino == super::ROOT_INO).then_some(super::index::INDEX_DIR),
                    ),
                    index: Arc::default(),
                    next: page.next.clone(),
                    after,
                    ready: Some(page),
                    local: local.into(),
                    shown_local: Default::default(),
                    overlaid: Vec::new(),
                });
                self.read_more(ino, st).await
            }
            Err(listing) => {
                let index = LazyIndex::new();
                let filled = self
                    .fill_metadata(ino, &dir.rel, listing, Some(&index))
                    .await;
                let writes = self.open_writes_in(ino);
                let by_key = |a: &DirEntry, b: &DirEntry| inodes::key_order(key(a), key(b));
                st.shown = if writes.is_empty() && filled.is_sorted_by(|a, b| by_key(a, b).is_le())
                {
                    Shown::Table(filled)
                } else {
                    let mut shown = Self::laid_over(writes, Arc::unwrap_or_clone(filled));
                    shown.sort_by(by_key);
                    Shown::Own(shown)
                };
                Ok(())
            }
        }
    }

    /// The next page of a handle's listing: its entries, their metadata completed while the
    /// page after it is listed. The last page stores the listing in the inode table.
    async fn read_more(&self, ino: u64, st: &mut DirState) -> FsResult<()> {
        let Some(r) = st.reading.as_mut() else {
            return Ok(());
        };
        let page = match r.ready.take() {
            Some(page) => page,
            None => {
                let page = self
                    .store
                    .list_page(&r.dir_rel, r.next.clone(), LIST_PAGE_KEYS)
                    .await?;
                r.next = page.next.clone();
                page
            }
        };
        let last = page.next.is_none();
        let mut chunk = r.stream.push(&page);
        drop(page);
        if last {
            chunk.extend(std::mem::take(&mut r.stream).finish());
        }
        let (dir_rel, asked) = (r.dir_rel.clone(), r.asked);
        let index = r.index.clone();
        let filled = if last {
            self.fill_found(ino, &dir_rel, asked, &index, chunk).await
        } else {
            let (next, after) = (r.next.clone(), r.after.take());
            let look_ahead = async {
                let list = || self.store.list_page(&dir_rel, next.clone(), LIST_PAGE_KEYS);
                // The lookup's LIST of this page, waited for if still on its way.
                if let Some(after) = after
                    && let Some(page) = after.get_or_init(|| async { list().await.ok() }).await
                {
                    return Ok(page.clone());
                }
                list().await
            };
            let (filled, ready) = tokio::join!(
                self.fill_found(ino, &dir_rel, asked, &index, chunk),
                look_ahead
            );
            // A failed look ahead is asked again when its entries are needed.
            if let Ok(page) = ready {
                r.next = page.next.clone();
                r.ready = Some(page);
            }
            filled
        };
        let writes = self.open_writes_in(ino);
        let shown = st.shown.own();
        for mut e in filled {
            // Files being written that S3 does not list (yet) go where they sort.
            while let Some(w) = r.local.front() {
                match inodes::key_order(key(w), key(&e)) {
                    std::cmp::Ordering::Less => {
                        let w = r.local.pop_front().expect("front above");
                        r.shown_local.insert(w.ino);
                        shown.push(w);
                    }
                    _ if w.name == e.name => {
                        r.local.pop_front();
                    }
                    _ => break,
                }
            }
            if let Some(w) = writes.iter().find(|w| w.ino == e.ino) {
                r.overlaid.push(e.clone());
                e.attr = w.attr.clone();
            }
            shown.push(e);
        }
        if last {
            let mut r = st.reading.take().expect("reading above");
            let Shown::Own(mut shown) = std::mem::take(&mut st.shown) else {
                unreachable!("made its own above")
            };
            for w in r.local.drain(..) {
                r.shown_local.insert(w.ino);
                shown.push(w);
            }
            shown.shrink_to_fit();
            // Trusted for the TTL from now, as a listing read whole was (a 100,000-entry one
            // takes seconds: counted from its first page, its names would be stale before
            // `ls -l` could stat them, and each stat would ask S3 again).
            let expires = std::time::Instant::now() + self.inodes.ttl();
            let plain = r.shown_local.is_empty()
                && r.overlaid.is_empty()
                && shown.is_sorted_by(|a, b| a.name < b.name);
            st.shown = if plain {
                // What the handle shows is the table's listing: one copy of it.
                Shown::Table(self.inodes.set_listed(ino, shown, expires, r.asked))
            } else {
                self.inodes
                    .set_listed(ino, Self::as_listed(&shown, &r), expires, r.asked);
                Shown::Own(shown)
            };
        }
        Ok(())
    }

    /// What S3 listed of the entries a handle shows: without the files being written that
    /// it does not list, and with its own attributes where a write's were laid over.
    fn as_listed(shown: &[DirEntry], r: &Reading) -> Vec<DirEntry> {
        let overlaid: std::collections::HashMap<u64, &DirEntry> =
            r.overlaid.iter().map(|e| (e.ino, e)).collect();
        shown
            .iter()
            .filter(|e| !r.shown_local.contains(&e.ino))
            .map(|e| overlaid.get(&e.ino).map_or(e, |o| o).clone())
            .collect()
    }

    /// The entries of one piece of a listing (whose first LIST was sent at `asked`) with the
    /// metadata this mount knows of them (its own writes, earlier HEADs, the disk cache of
    /// HEADs, the directory's listing index), HEADing the rest many at a time; each is
    /// recorded in the inode table.
    async fn fill_found(
        &self,
        parent: u64,
        dir_rel: &str,
        asked: Asked,
        index: &LazyIndex,
        chunk: Vec<(String, inodes::Found)>,
    ) -> Vec<DirEntry> {
        let mut out = Vec::with_capacity(chunk.len());
        let mut missing = Vec::new();
        for (name, found) in chunk {
            let mut attr = self.upsert_listed(parent, &name, found, Some(asked));
            if !attr.meta_known && !self.opts.list_only {
                // (Of the version the table has now: what the listing said, or newer.)
                match self.remembered(attr.ino, &format!("{dir_rel}{name}")) {
                    Some(found) if attr.kind != Kind::Dir => {
                        attr = self.upsert_listed(parent, &name, found, None);
                    }
                    _ => missing.push(out.len()),
                }
            }
            out.push(DirEntry {
                name,
                ino: attr.ino,
                attr,
            });
        }
        self.fill_from_index(parent, dir_rel, index, &mut out, &mut missing)
            .await;
        self.head_entries(parent, dir_rel, &mut out, missing).await;
        out
    }

    /// What a listing found at `parent/name` goes into the table — unless this mount is
    /// writing the file that holds that name: then that file shows (its data is newer than
    /// anything S3 lists, and its upload names the version it replaces). Re-pointing the
    /// name would hide the open file behind S3's object (the model found a file made offline
    /// where a symlink was removed shown, once back online, as the symlink).
    /// `asked`: when the request that found it was sent (`None`: it is of the version the
    /// table has now).
    pub(super) fn upsert_listed(
        &self,
        parent: u64,
        name: &str,
        found: Found,
        asked: Option<Asked>,
    ) -> Attr {
        if let Some(child) = self.inodes.child(parent, name)
            && let Some(ws) = self.write_state(child.ino)
            && !ws.is_unlinked()
        {
            return self.inodes.attr(child.ino, &ws.overlay(child.found));
        }
        self.inodes.upsert_answer(parent, name, found, false, asked)
    }

    /// HEADs the `entries` at `missing`, [`METADATA_FETCHES_IN_FLIGHT`] at a time, and
    /// fills in what each found. A file whose HEAD fails keeps its listing attributes (the
    /// lookup that follows asks again).
    async fn head_entries(
        &self,
        parent: u64,
        dir_rel: &str,
        entries: &mut [DirEntry],
        missing: Vec<usize>,
    ) {
        use futures::StreamExt;
        let heads: Vec<_> = futures::stream::iter(missing)
            .map(|i| {
                let e: &DirEntry = &entries[i];
                let is_dir = e.attr.kind == Kind::Dir;
                // A directory's attributes are on its marker, if it has one.
                let rel = format!("{dir_rel}{}{}", e.name, if is_dir { "/" } else { "" });
                async move { (i, is_dir, Asked::now(), self.store.head(&rel).await) }
            })
            .buffer_unordered(METADATA_FETCHES_IN_FLIGHT)
            .collect()
            .await;
        for (i, is_dir, asked, head) in heads {
            let rel = format!("{dir_rel}{}", entries[i].name);
            let found = match head {
                Ok(marker) if is_dir => Found::dir_with(marker.as_ref()),
                Ok(Some(info)) => self.headed(&rel, &info, asked),
                // S3 does not answer: what a HEAD of this version said before, if anything
                // (offline, an answer from within the version's second will do).
                Err(e) if !is_dir && e.is_unreachable() => {
                    match self.remembered(entries[i].ino, &rel) {
                        Some(found) => found,
                        None => continue,
                    }
                }
                // Gone since the listing, or the HEAD failed: the lookup will ask again.
                _ => continue,
            };
            let name = entries[i].name.clone();
            entries[i].attr = self.upsert_listed(parent, &name, found, Some(asked));
            entries[i].ino = entries[i].attr.ino;
        }
    }

    /// The files of `entries` at `missing` (no metadata known) that the directory's listing
    /// index has at their listed version (read now, once per listing, if any is missing):
    /// filled in and taken out of `missing`.
    async fn fill_from_index(
        &self,
        parent: u64,
        dir_rel: &str,
        index: &LazyIndex,
        entries: &mut [DirEntry],
        missing: &mut Vec<usize>,
    ) {
        let files = missing
            .iter()
            .filter(|&&i| entries[i].attr.kind != Kind::Dir)
            .count();
        // One file is HEADed as fast as the index is found (a HEAD, then a GET).
        if files < 2 && index.get().is_none() {
            return;
        }
        let Some(index) = index.get_or_init(|| self.read_index(dir_rel)).await.clone() else {
            return;
        };
        missing.retain(|&i| {
            let e = &mut entries[i];
            let Some(listed) = self.inodes.get(e.ino).filter(|n| n.kind != Kind::Dir) else {
                return true;
            };
            match self.attr_from_index(parent, dir_rel, &index, &e.name, &listed.found) {
                Some(attr) => {
                    // (A kind learnt from the metadata, a symlink, is a new number.)
                    e.ino = attr.ino;
                    e.attr = attr;
                    false
                }
                None => true,
            }
        });
    }

    /// Files open for writing in `dir` as this mount shows them (current size; S3 may not
    /// have them yet).
    fn open_writes_in(&self, dir: u64) -> Vec<DirEntry> {
        let mut out = Vec::new();
        for ws in self.write_states() {
            let (Some(node), Some(name)) = (self.inodes.get(ws.ino), self.inodes.name(ws.ino))
            else {
                continue;
            };
            let named = self
                .inodes
                .child(dir, &name)
                .is_some_and(|c| c.ino == ws.ino);
            if node.parent != dir || !named || ws.is_unlinked() {
                continue;
            }
            out.push(DirEntry {
                name,
                ino: ws.ino,
                attr: self.inodes.attr(ws.ino, &ws.overlay(node.found)),
            });
        }
        out
    }

    /// HEADs, many at once, the files a listing knows without their stored mtime and mode,
    /// so `ls -l` and rsync see stored values without one sequential round trip per file.
    /// A file whose HEAD fails keeps its listing attributes (and is asked again on lookup).
    /// The listing itself when every entry's metadata is known already (no copy of it).
    pub(super) async fn fill_metadata(
        &self,
        parent: u64,
        dir_rel: &str,
        listing: Arc<Vec<DirEntry>>,
        index: Option<&LazyIndex>,
    ) -> Arc<Vec<DirEntry>> {
        if self.opts.list_only || listing.iter().all(|e| e.attr.meta_known) {
            // With --list-only, attributes from the listing alone: Last-Modified, the
            // mount's owner and modes.
            return listing;
        }
        let mut filled = Arc::unwrap_or_clone(listing);
        let mut missing = Vec::new();
        for (i, e) in filled.iter_mut().enumerate() {
            if e.attr.meta_known {
                continue;
            }
            // HEADed since the listing was taken (an earlier `ls -l`, a lookup): known.
            match self.inodes.child(parent, &e.name) {
                Some(c) if c.ino == e.ino && c.attr.meta_known => e.attr = c.attr,
                // HEADed by an earlier mount, and unchanged since (same etag).
                _ if e.attr.kind != Kind::Dir
                    && let Some(found) =
                        self.remembered(e.ino, &format!("{dir_rel}{}", e.name)) =>
                {
                    // A kind learnt from the metadata (a symlink) is a new number.
                    e.attr = self.upsert_listed(parent, &e.name.clone(), found, None);
                    e.ino = e.attr.ino;
                }
                _ => missing.push(i),
            }
        }
        if let Some(index) = index {
            self.fill_from_index(parent, dir_rel, index, &mut filled, &mut missing)
                .await;
        }
        self.head_entries(parent, dir_rel, &mut filled, missing)
            .await;
        Arc::new(filled)
    }

    /// The listing as this mount sees it: files being written here (`writes`) show their
    /// current size, and ones S3 does not have yet (created, not yet flushed) are added.
    fn laid_over(writes: Vec<DirEntry>, mut out: Vec<DirEntry>) -> Vec<DirEntry> {
        for w in writes {
            match out.binary_search_by(|e| e.name.as_str().cmp(&w.name)) {
                Ok(i) if out[i].ino == w.ino => out[i].attr = w.attr,
                Ok(_) => {}
                Err(i) => out.insert(i, w),
            }
        }
        out
    }

    /// Every page of the directory's listing, cached for the metadata TTL; while S3 does not
    /// answer, the listing last seen (in this mount, or kept on disk).
    pub(super) async fn list_dir(&self, ino: u64, rel: &str) -> FsResult<Arc<Vec<DirEntry>>> {
        match self.list_dir_remote(ino, rel).await {
            Err(e) if e.is_unreachable() => match self.known_listing(ino, rel).await {
                Some(listing) => Ok(listing),
                None => {
                    tracing::info!(
                        dir = rel,
                        "offline, and this directory was never listed on this machine"
                    );
                    Err(e)
                }
            },
            other => other,
        }
    }

    /// The listing of `ino` however old: this mount's last, else the one kept on disk (with
    /// this mount's own changes not yet in S3 laid over it). `None`: never seen.
    pub(super) async fn known_listing(&self, ino: u64, rel: &str) -> Option<Arc<Vec<DirEntry>>> {
        if let Some(l) = self.inodes.any_listing(ino) {
            return Some(l);
        }
        let saved = match self.tree.clone() {
            Some(tree) => {
                let dir_rel = rel.to_owned();
                tokio::task::spawn_blocking(move || tree.load(&dir_rel))
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        // A directory made offline holds nothing S3 has: what was made in it since.
        let saved = match saved {
            Some(s) => s,
            None if self.made_offline(rel) => crate::local::SavedListing::default(),
            None => return None,
        };
        let mut entries = build_listing(&[saved.to_page()]);
        entries.retain(|(name, _)| !super::index::reserved(rel, name));
        // The attributes last known of each entry, kept with the listing: shown, but not
        // taken for what S3 holds now (`meta_known` stays false: asked again once it answers).
        for e in &saved.entries {
            if let (Some(meta), Ok(i)) = (
                &e.meta,
                entries.binary_search_by(|(n, _)| n.as_str().cmp(&e.name)),
            ) && (entries[i].1.kind == Kind::Dir) == e.dir
            {
                let found = &mut entries[i].1;
                found.meta = super::meta::Meta::from_user(meta);
                if !e.dir {
                    found.kind = Kind::of_object(found.meta.file_type());
                }
            }
        }
        self.overlay_local_changes(rel, &mut entries);
        Some(self.inodes.set_old_listing(ino, entries))
    }

    async fn list_dir_remote(&self, ino: u64, rel: &str) -> FsResult<Arc<Vec<DirEntry>>> {
        if let Some(l) = self.inodes.fresh_listing(ino) {
            return Ok(l);
        }
        let mut pages = Vec::new();
        let mut next = None;
        let mut asked = Asked::now();
        if let Some(k) = self.kept_first_page(ino) {
            (next, asked) = (k.page.next.clone(), k.asked);
            pages.push(k.page);
        }
        loop {
            let page = self.store.list_page(rel, next, LIST_PAGE_KEYS).await?;
            next = page.next.clone();
            pages.push(page);
            if next.is_none() {
                break;
            }
        }
        let mut listing = build_listing(&pages);
        listing.retain(|(name, _)| !super::index::reserved(rel, name));
        Ok(self.inodes.set_listing(ino, listing, asked))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fs::{Caller, MountOptions, ROOT_INO};
    use crate::store::{MemoryStore, ObjectStore, UserMeta};

    const FILES: usize = 2_500;

    /// A mount over a directory `d` of [`FILES`] 3-byte files (three LIST pages).
    fn mount() -> (tokio::runtime::Runtime, Fs, tempfile::TempDir) {
        let store = Arc::new(MemoryStore::new("bucket", "p"));
        for i in 0..FILES {
            store.insert_raw(&format!("p/d/f{i:05}"), b"abc", UserMeta::new());
        }
        let spool = tempfile::tempdir().unwrap();
        let opts = MountOptions {
            metadata_ttl: Duration::from_secs(60),
            spool_dir: spool.path().to_path_buf(),
            ..MountOptions::default()
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let fs = Fs::new(store as Arc<dyn ObjectStore>, opts);
        (rt, fs, spool)
    }

    /// Reads a new handle of `dir` from `offset` 0 to its end: what it shows after `.`/`..`.
    async fn read_whole(fs: &Fs, dir: u64) -> (Arc<DirHandle>, Vec<DirEntry>) {
        let fh = fs.opendir(dir).unwrap();
        let all = fs.readdir(dir, fh, 0).await.unwrap();
        let handle = fs.dirs.lock().unwrap()[&fh].clone();
        (handle, all[2..].to_vec())
    }

    fn size_of(entries: &[DirEntry], name: &str) -> Option<u64> {
        entries.iter().find(|e| e.name == name).map(|e| e.attr.size)
    }

    #[test]
    fn a_handle_shows_the_table_s_listing_itself_not_a_copy() {
        let (rt, fs, _spool) = mount();
        rt.block_on(async {
            let d = fs.lookup(ROOT_INO, "d").await.unwrap();
            // Read page by page from S3, then again from the fresh listing.
            for read in ["from S3", "again"] {
                let (handle, shown) = read_whole(&fs, d.ino).await;
                assert_eq!(shown.len(), FILES, "{read}");
                let table = fs.inodes.any_listing(d.ino).unwrap();
                match &handle.state.lock().await.shown {
                    Shown::Table(t) => assert!(Arc::ptr_eq(t, &table), "{read}"),
                    Shown::Own(_) => panic!("{read}: the handle holds a copy"),
                }
            }
        });
    }

    #[test]
    fn a_file_s3_does_not_have_yet_shows_in_the_handle_not_in_the_table_s_listing() {
        let (rt, fs, _spool) = mount();
        let caller = Caller { uid: 1, gid: 1 };
        rt.block_on(async {
            let d = fs.lookup(ROOT_INO, "d").await.unwrap();
            // One file S3 lists, being rewritten longer; one S3 does not have yet.
            let f = fs.lookup(d.ino, "f01200").await.unwrap();
            let fh = fs.open(f.ino, true, false).await.unwrap();
            fs.write(fh, 0, vec![1; 10]).await.unwrap();
            let (_, nh) = fs.create(d.ino, "f01200x", 0o100644, caller).await.unwrap();
            fs.inodes.invalidate_listing(d.ino);
            for read in ["from S3", "again"] {
                let (handle, shown) = read_whole(&fs, d.ino).await;
                assert_eq!(shown.len(), FILES + 1, "{read}");
                assert_eq!(size_of(&shown, "f01200"), Some(10), "{read}");
                assert_eq!(size_of(&shown, "f01200x"), Some(0), "{read}");
                assert!(matches!(handle.state.lock().await.shown, Shown::Own(_)));
                // The table keeps what S3 lists: not the file S3 does not have yet.
                let table = fs.inodes.any_listing(d.ino).unwrap();
                assert_eq!(table.len(), FILES, "{read}");
                assert!(size_of(&table, "f01200").is_some(), "{read}");
                assert_eq!(size_of(&table, "f01200x"), None, "{read}");
            }
            fs.release(fh).await.unwrap();
            fs.release(nh).await.unwrap();
        });
    }
}
