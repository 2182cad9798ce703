//! Questions about single names: lookups and attributes. Answers come from the inode table
//! while fresh (the metadata TTL), else from S3: a lookup asks HEAD and LIST at once (a
//! directory wins over an object of the same name; the LIST's page is the start of the
//! directory's listing, so `ls DIR` costs no extra round trip). Listings themselves are
//! `listing.rs`.

use std::sync::Arc;

use super::Fs;
use super::error::{FsError, FsResult};
use super::inodes::{self, Asked, Attr, Found, Kind, build_listing, valid_name};

/// A directory whose last listing had at most this many entries (one LIST page) is listed
/// again to answer a lookup once that listing is stale.
const RELIST_ENTRIES: usize = 1000;
/// Keys per LIST page (S3's most).
pub(super) const LIST_PAGE_KEYS: i32 = 1000;
/// First pages of listings kept from lookups, waiting for a readdir of their directory.
pub(super) const FIRST_PAGES_KEPT: usize = 64;

/// A listing's page being listed ahead (`None`: that LIST failed; it is asked again).
pub(super) type NextPage = tokio::sync::OnceCell<Option<crate::store::ListPage>>;

/// A first page a lookup's LIST brought, kept for the listing that follows.
pub(super) struct KeptPage {
    pub page: crate::store::ListPage,
    /// When its LIST was sent.
    pub asked: Asked,
    /// The page after it, listed ahead (for a directory this machine knows nothing of).
    pub after: Option<Arc<NextPage>>,
}

/// What identifies an object's version for the metadata cache: its etag, which a
/// metadata-only change (CopyObject onto itself) keeps, and its Last-Modified, which that
/// changes — in whole seconds, the precision HEAD and listings share.
fn version_of(etag: &str, last_modified: std::time::SystemTime) -> String {
    if etag.is_empty() {
        return String::new();
    }
    format!("{etag}@{}", super::asked::version_second(last_modified))
}

impl Fs {
    /// A directory as its marker `dir_rel` (`a/b/`) says (no marker: a directory with
    /// nothing stored). What the marker holds is remembered on disk by its version.
    pub(super) async fn read_marker(&self, dir_rel: &str) -> FsResult<Found> {
        let asked = Asked::now();
        let marker = self.store.head(dir_rel).await?;
        if let Some(info) = &marker {
            self.remember(dir_rel, info, asked);
        }
        Ok(Found::dir_with(marker.as_ref()))
    }

    /// The directory whose marker a listing showed as `marker`, from what an earlier HEAD
    /// of the same version of it found.
    fn remembered_marker(&self, dir_rel: &str, marker: &crate::store::ObjectInfo) -> Option<Found> {
        let info = self.recall(dir_rel, marker.clone())?;
        Some(Found::dir_with(Some(&info)))
    }

    /// The first page of the directory `ino`'s listing, which a lookup's LIST brought: the
    /// whole listing when it is the only page, else the start of the next listing (with the
    /// second page, if it is being listed ahead: `after`).
    fn keep_first_page(
        &self,
        ino: u64,
        page: crate::store::ListPage,
        asked: Asked,
        after: Option<Arc<NextPage>>,
    ) {
        if page.next.is_none() {
            self.inodes.set_listing(ino, build_listing(&[page]), asked);
            return;
        }
        let kept = KeptPage { page, asked, after };
        self.first_pages.keep(ino, kept, self.inodes.ttl());
    }

    /// The first page of `ino`'s listing a lookup kept, unless this mount changed the
    /// directory since it was listed (a `touch d/new` after the lookup of `d`: the page would
    /// not show it).
    pub(super) fn kept_first_page(&self, ino: u64) -> Option<KeptPage> {
        let kept = self.first_pages.take(&ino, self.inodes.ttl())?;
        (!self.inodes.entries_changed_since(ino, kept.asked)).then_some(kept)
    }

    /// The files of a directory's first page whose metadata this machine does not remember
    /// (counted up to two: one is HEADed as fast as anything else is read).
    fn unknown_files(&self, dir_rel: &str, page: &crate::store::ListPage) -> usize {
        page.files
            .iter()
            .filter(|f| {
                !f.name.is_empty()
                    && self
                        .recall(&format!("{dir_rel}{}", f.name), (*f).clone())
                        .is_none()
            })
            .take(2)
            .count()
    }

    /// Lists the page after `page` in the background, for the listing a lookup made likely.
    fn prefetch_next_page(
        &self,
        dir_rel: &str,
        page: &crate::store::ListPage,
    ) -> Option<Arc<NextPage>> {
        let next = page.next.clone()?;
        let cell: Arc<NextPage> = Arc::default();
        let (store, dir_rel, c) = (self.store.clone(), dir_rel.to_owned(), cell.clone());
        tokio::spawn(async move {
            c.get_or_init(|| async {
                store
                    .list_page(&dir_rel, Some(next), LIST_PAGE_KEYS)
                    .await
                    .ok()
            })
            .await;
        });
        Some(cell)
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.lookup_attr(parent, name, true).await
    }

    /// Resolves `parent/name`; `count` when the kernel gets a reference to the result.
    pub(super) async fn lookup_attr(&self, parent: u64, name: &str, count: bool) -> FsResult<Attr> {
        let add = |ino| {
            if count {
                self.inodes.add_lookup(ino);
            }
        };
        if name.len() > 255 {
            return Err(FsError::new(libc::ENAMETOOLONG));
        }
        if !valid_name(name) || (parent == super::ROOT_INO && name == super::index::INDEX_DIR) {
            return Err(FsError::new(libc::ENOENT));
        }
        let dir = self.dir_node(parent)?;
        if let Some(child) = self.inodes.child(parent, name) {
            if let Some(ws) = self.write_state(child.ino) {
                // Being written here: S3 may not have it yet.
                add(child.ino);
                return Ok(self.inodes.attr(child.ino, &ws.overlay(child.found)));
            }
            if child.fresh && (child.attr.meta_known || !count || self.opts.list_only) {
                add(child.ino);
                return Ok(child.attr);
            }
        }
        if self.inodes.is_negative(parent, name) {
            return Err(FsError::new(libc::ENOENT));
        }
        match self.lookup_remote(parent, &dir, name, count).await {
            // S3 does not answer: what this machine last saw.
            Err(e) if e.is_unreachable() => self.lookup_known(parent, &dir.rel, name, count).await,
            other => other,
        }
    }

    /// [`Fs::lookup_attr`] past what the inode table answers alone: from the directory's
    /// listing (fresh, or listed again when small), else a HEAD and a LIST at once.
    async fn lookup_remote(
        &self,
        parent: u64,
        dir: &inodes::NodeInfo,
        name: &str,
        count: bool,
    ) -> FsResult<Attr> {
        let add = |ino| {
            if count {
                self.inodes.add_lookup(ino);
            }
        };
        let listing = match self.inodes.fresh_listing(parent) {
            Some(l) => Some(l),
            // A small directory listed before, its listing expired: one LIST answers this
            // lookup and those that follow (a `cp` of many files into it) for the next TTL,
            // instead of a HEAD and a LIST per name.
            None if self
                .inodes
                .last_listing_len(parent)
                .is_some_and(|n| n <= RELIST_ENTRIES) =>
            {
                Some(self.list_dir(parent, &dir.rel).await?)
            }
            None => None,
        };
        if let Some(listing) = listing {
            return match listing.binary_search_by(|e| e.name.as_str().cmp(name)) {
                // What the kernel is told must carry the stored type, owner, mode and
                // mtime (rsync compares mtimes); a listing has none, so HEAD it once.
                Ok(i) if count && !listing[i].attr.meta_known && !self.opts.list_only => {
                    let is_dir = listing[i].attr.kind == Kind::Dir;
                    if !is_dir
                        && let Some(found) =
                            self.remembered(listing[i].ino, &format!("{}{name}", dir.rel))
                    {
                        return Ok(self.inodes.upsert(parent, name, found, true));
                    }
                    self.head_lookup(parent, name, &format!("{}{name}", dir.rel), is_dir)
                        .await
                }
                Ok(i) => {
                    // The entry may have been forgotten since the listing was taken.
                    let ino = self.inodes.listed_ino(parent, &listing[i]);
                    add(ino);
                    Ok(Attr {
                        ino,
                        ..listing[i].attr.clone()
                    })
                }
                Err(_) => {
                    self.inodes.set_negative(parent, name);
                    Err(FsError::new(libc::ENOENT))
                }
            };
        }
        // Ask S3 both questions at once: is `name/` a directory (it wins), is `name` an object?
        let file_rel = format!("{}{name}", dir.rel);
        let dir_rel = format!("{file_rel}/");
        let asked = Asked::now();
        let (head, list) = tokio::join!(
            self.store.head(&file_rel),
            self.store.list_page(&dir_rel, None, LIST_PAGE_KEYS)
        );
        let list = list?;
        if !list.files.is_empty() || !list.dirs.is_empty() {
            // A directory this machine knows nothing of: `ls -l` of it is likely next. What
            // its listing will wait for (its index, its second page) is asked for now, while
            // the lookup still reads the marker and the kernel comes back to list.
            let after = if self.unknown_files(&dir_rel, &list) >= 2 {
                self.prefetch_index(&dir_rel);
                self.prefetch_next_page(&dir_rel, &list)
            } else {
                None
            };
            // The marker `name/`, if any, sorts first; it holds the directory's attributes.
            let found = match list.files.first() {
                Some(marker) if marker.name.is_empty() => {
                    match self.remembered_marker(&dir_rel, marker) {
                        Some(found) => found,
                        None => self.read_marker(&dir_rel).await?,
                    }
                }
                _ => Found::dir_with(None),
            };
            let attr = self
                .inodes
                .upsert_answer(parent, name, found, count, Some(asked));
            self.keep_first_page(attr.ino, list, asked, after);
            return Ok(attr);
        }
        match head? {
            Some(info) => {
                let found = self.headed(&file_rel, &info, asked);
                Ok(self
                    .inodes
                    .upsert_answer(parent, name, found, count, Some(asked)))
            }
            None => {
                self.inodes.set_negative(parent, name);
                Err(FsError::new(libc::ENOENT))
            }
        }
    }

    /// What a HEAD of `rel` sent at `asked` said, remembered on disk for later mounts, by
    /// key and version.
    pub(super) fn headed(&self, rel: &str, info: &crate::store::ObjectInfo, asked: Asked) -> Found {
        self.remember(rel, info, asked);
        Found::object(info)
    }

    /// Keeps the user metadata a HEAD of `rel` sent at `asked` found, on disk, by key and
    /// version, saying whether the answer stands for that version alone (`asked.rs`).
    fn remember(&self, rel: &str, info: &crate::store::ObjectInfo, asked: Asked) {
        if let (Some(cache), Some(meta)) = (&self.meta_cache, &info.meta) {
            let version = version_of(&info.etag, info.last_modified);
            let settled = asked.settled(info.last_modified);
            cache.put(rel, &version, meta, asked, settled);
        }
    }

    /// `info` (as a listing shows `rel`) with the user metadata an earlier HEAD of the same
    /// version found, if it is remembered.
    pub(super) fn recall(
        &self,
        rel: &str,
        info: crate::store::ObjectInfo,
    ) -> Option<crate::store::ObjectInfo> {
        let version = version_of(&info.etag, info.last_modified);
        // Online, only what stands for the version alone; offline, any answer of it.
        let offline = self.is_offline();
        let meta = self.meta_cache.as_ref()?.get(rel, &version, offline)?;
        Some(crate::store::ObjectInfo {
            meta: Some(meta),
            ..info
        })
    }

    /// The object `ino` (known from a listing, at `rel`) with the metadata an earlier HEAD
    /// of the same version found, if it is remembered.
    pub(super) fn remembered(&self, ino: u64, rel: &str) -> Option<Found> {
        self.meta_cache.as_ref()?;
        let node = self.inodes.get(ino)?;
        let listed = crate::store::ObjectInfo {
            name: String::new(),
            size: node.found.size,
            etag: node.found.etag.clone(),
            last_modified: node.found.last_modified,
            meta: None,
        };
        Some(Found::object(&self.recall(rel, listed)?))
    }

    /// A counted lookup of an entry known from a listing: HEAD it (a directory: its
    /// marker) for its metadata.
    async fn head_lookup(
        &self,
        parent: u64,
        name: &str,
        rel: &str,
        is_dir: bool,
    ) -> FsResult<Attr> {
        let asked = Asked::now();
        if is_dir {
            let found = self.read_marker(&format!("{rel}/")).await?;
            return Ok(self
                .inodes
                .upsert_answer(parent, name, found, true, Some(asked)));
        }
        match self.store.head(rel).await? {
            Some(info) => {
                let found = self.headed(rel, &info, asked);
                Ok(self
                    .inodes
                    .upsert_answer(parent, name, found, true, Some(asked)))
            }
            None => {
                self.inodes.set_negative(parent, name);
                Err(FsError::new(libc::ENOENT))
            }
        }
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        if let Some(ws) = self.write_state(ino) {
            let mut attr = self.inodes.attr(ino, &ws.overlay(node.found));
            attr.nlink = node.attr.nlink;
            return Ok(attr);
        }
        // Unlinked but still open: its name is gone, there is nothing to ask S3.
        if (node.fresh || node.attr.nlink == 0) && (node.attr.meta_known || self.opts.list_only) {
            return Ok(node.attr);
        }
        let sent = Asked::now();
        let asked = match node.kind {
            Kind::Dir => match self.read_marker(&node.rel).await {
                Ok(found) => self
                    .inodes
                    .refresh(ino, found, sent)
                    .ok_or(FsError::new(libc::ENOENT)),
                // S3 answering 5xx (it answered: not offline) or timing out: the directory
                // keeps the attributes it showed. Failing would cut off every path through it
                // once the TTL ran out (the root's included), kept uploads below it too; an
                // answer from S3 still changes or removes it.
                Err(e) if matches!(e.errno, libc::EIO | libc::ETIMEDOUT) => Ok(node.attr.clone()),
                Err(e) => Err(e),
            },
            _ => self.refresh_file(&node).await,
        };
        match asked {
            // S3 does not answer: the attributes last seen, however old.
            Err(e) if e.is_unreachable() => Ok(node.attr),
            other => other,
        }
    }

    pub(super) async fn refresh_file(&self, node: &inodes::NodeInfo) -> FsResult<Attr> {
        let asked = Asked::now();
        match self.store.head(&node.rel).await? {
            Some(info) => self
                .inodes
                .refresh(node.ino, self.headed(&node.rel, &info, asked), asked)
                .ok_or(FsError::new(libc::ENOENT)),
            None => {
                // The caller is told the file is gone, so the name is known absent (as a
                // lookup that finds nothing makes it): what follows (a rename onto it, an
                // O_CREAT) starts from "nothing there", not from whatever another client
                // puts there next, which no one here has seen.
                if let Some(name) = self.inodes.name(node.ino)
                    && self
                        .inodes
                        .child(node.parent, &name)
                        .is_some_and(|c| c.ino == node.ino)
                {
                    self.inodes.set_negative(node.parent, &name);
                }
                Err(FsError::new(libc::ENOENT))
            }
        }
    }
}
