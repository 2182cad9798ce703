//! The filesystem: a semantic core ([`Fs`]) that answers lookups, attributes, listings and
//! reads in terms of [`Store`], and a thin FUSE adapter (`fuse.rs`) that links kernel
//! requests to it. The core has no FUSE types in it, so it can be driven directly.
//!
//! Layers: `fuse.rs` → [`Fs`] → `inodes.rs` (metadata, TTLs) / `read.rs` (readers,
//! readahead) → `cache.rs` (blocks) → [`Store`] (S3); `write.rs` (spool, uploads,
//! namespace changes) → [`Store`].

pub mod cache;
mod fuse;
pub mod inodes;
pub mod read;
pub mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use crate::store::{Store, StoreError};
use cache::BlockCache;
use inodes::{Attr, DirEntry, Found, Inodes, Kind, ROOT_INO, build_listing, valid_name};
use read::{FileReader, ReadShared};
pub use write::SetAttr;
use write::{UploadCtx, WriteState};

/// HEAD requests in flight while a listing's metadata is filled in.
const METADATA_FETCHES_IN_FLIGHT: usize = 32;

/// How a mount behaves. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    /// Block cache budget in bytes (256 MiB).
    pub cache_bytes: u64,
    /// Read block size, one ranged GET each (1 MiB).
    pub block_size: u64,
    /// Readahead window cap per sequential reader (64 MiB).
    pub max_readahead: u64,
    /// How long attributes, listings and negative lookups are trusted (5 s); also the
    /// kernel's entry and attribute timeouts. Zero is raised to 1 ms: never exactly zero.
    pub metadata_ttl: Duration,
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// Prefetch GETs in flight across the mount.
    pub max_prefetch_gets: usize,
    /// FUSE worker threads (they only dispatch; work runs on the tokio runtime).
    pub fuse_threads: usize,
    /// Where files open for writing are spooled (anonymous files; nothing persists).
    pub spool_dir: PathBuf,
    /// Uploads of this size or more are multipart, in parts of this size (8 MiB).
    pub part_size: u64,
    /// Parts of one multipart upload in flight at once.
    pub parts_in_flight: usize,
    /// Parts buffered for upload across the mount (memory ≈ this × `part_size`); writers
    /// beyond it wait.
    pub upload_parts_budget: usize,
}

/// `$XDG_CACHE_HOME/cognifs/spool`, else `~/.cache/cognifs/spool`, else a temp dir.
pub fn default_spool_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        });
    match cache {
        Some(c) => c.join("cognifs").join("spool"),
        None => std::env::temp_dir().join("cognifs-spool"),
    }
}

impl Default for MountOptions {
    fn default() -> Self {
        // SAFETY: geteuid/getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        MountOptions {
            read_only: false,
            allow_other: false,
            cache_bytes: 256 << 20,
            block_size: 1 << 20,
            max_readahead: 64 << 20,
            metadata_ttl: Duration::from_secs(5),
            uid,
            gid,
            file_mode: 0o644,
            dir_mode: 0o755,
            max_prefetch_gets: 32,
            fuse_threads: 2,
            spool_dir: default_spool_dir(),
            part_size: 8 << 20,
            parts_in_flight: 4,
            upload_parts_budget: 32,
        }
    }
}

/// An errno, the only error the FUSE side needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsError(pub i32);

pub type FsResult<T> = Result<T, FsError>;

impl From<&StoreError> for FsError {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::NotFound => {}
            StoreError::Changed => tracing::warn!("object changed while reading"),
            e => tracing::warn!(error = %e, "S3 request failed"),
        }
        FsError(e.errno())
    }
}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        FsError::from(&e)
    }
}

struct OpenFile {
    ino: u64,
    /// Reads of S3 (absent for handles opened for writing: they read the spool).
    reader: Option<FileReader>,
    write: Option<Arc<WriteState>>,
}

/// The semantic core of the mount.
pub struct Fs {
    store: Arc<Store>,
    inodes: Inodes,
    read: Arc<ReadShared>,
    opts: MountOptions,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Option<Arc<Vec<DirEntry>>>>>,
    /// Write state per inode open for writing.
    writes: Mutex<HashMap<u64, Arc<WriteState>>>,
    upload: Arc<UploadCtx>,
    next_fh: AtomicU64,
}

impl Fs {
    pub fn new(store: Store, mut opts: MountOptions) -> Self {
        opts.metadata_ttl = opts.metadata_ttl.max(Duration::from_millis(1));
        let store = Arc::new(store);
        let cache = Arc::new(BlockCache::new(opts.cache_bytes));
        let block = opts.block_size.max(4096);
        let read = Arc::new(ReadShared::new(
            store.clone(),
            cache,
            block,
            opts.max_readahead,
            opts.max_prefetch_gets,
            // Unread prefetched blocks may use up to half the cache budget.
            ((opts.cache_bytes / 2) / block).max(4) as usize,
        ));
        let upload = Arc::new(UploadCtx {
            store: store.clone(),
            // S3's minimum part size is 5 MiB (except the last part).
            part_size: opts.part_size.max(5 << 20),
            parts_in_flight: opts.parts_in_flight.max(1),
            budget: Arc::new(tokio::sync::Semaphore::new(opts.upload_parts_budget.max(1))),
        });
        Fs {
            upload,
            store,
            inodes: Inodes::new(opts.metadata_ttl),
            read,
            opts,
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            writes: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    pub fn options(&self) -> &MountOptions {
        &self.opts
    }

    pub fn inodes(&self) -> &Inodes {
        &self.inodes
    }

    pub fn ttl(&self) -> Duration {
        self.opts.metadata_ttl
    }

    fn dir_node(&self, ino: u64) -> FsResult<inodes::NodeInfo> {
        let node = self.inodes.get(ino).ok_or(FsError(libc::ENOENT))?;
        if node.kind != Kind::Dir {
            return Err(FsError(libc::ENOTDIR));
        }
        Ok(node)
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.lookup_attr(parent, name, true).await
    }

    /// Resolves `parent/name`; `count` when the kernel gets a reference to the result.
    async fn lookup_attr(&self, parent: u64, name: &str, count: bool) -> FsResult<Attr> {
        let add = |ino| {
            if count {
                self.inodes.add_lookup(ino);
            }
        };
        if name.len() > 255 {
            return Err(FsError(libc::ENAMETOOLONG));
        }
        if !valid_name(name) {
            return Err(FsError(libc::ENOENT));
        }
        let dir = self.dir_node(parent)?;
        if let Some(child) = self.inodes.child(parent, name) {
            if let Some(ws) = self.write_state(child.ino) {
                // Being written here: S3 may not have it yet.
                add(child.ino);
                return Ok(ws.overlay(child.attr));
            }
            if child.fresh && (child.attr.meta_known || !count) {
                add(child.ino);
                return Ok(child.attr);
            }
        }
        if self.inodes.is_negative(parent, name) {
            return Err(FsError(libc::ENOENT));
        }
        if let Some(listing) = self.inodes.fresh_listing(parent) {
            return match listing.binary_search_by(|e| e.name.as_str().cmp(name)) {
                // What the kernel is told must carry the stored mtime and mode (rsync
                // compares mtimes); a listing has neither, so HEAD the file once.
                Ok(i) if count && !listing[i].attr.meta_known => {
                    self.head_lookup(parent, name, &format!("{}{name}", dir.rel))
                        .await
                }
                Ok(i) => {
                    add(listing[i].ino);
                    Ok(listing[i].attr.clone())
                }
                Err(_) => {
                    self.inodes.set_negative(parent, name);
                    Err(FsError(libc::ENOENT))
                }
            };
        }
        // Ask S3 both questions at once: is `name/` a directory (it wins), is `name` an object?
        let file_rel = format!("{}{name}", dir.rel);
        let dir_rel = format!("{file_rel}/");
        let (head, list) = tokio::join!(
            self.store.head(&file_rel),
            self.store.list_page_max(&dir_rel, None, 1)
        );
        let list = list?;
        if !list.files.is_empty() || !list.dirs.is_empty() {
            return Ok(self.inodes.upsert(parent, name, Found::dir(), count));
        }
        match head? {
            Some(info) => Ok(self.inodes.upsert(parent, name, Found::file(&info), count)),
            None => {
                self.inodes.set_negative(parent, name);
                Err(FsError(libc::ENOENT))
            }
        }
    }

    /// A counted lookup of a file known from a listing: HEAD it for its user metadata.
    async fn head_lookup(&self, parent: u64, name: &str, rel: &str) -> FsResult<Attr> {
        match self.store.head(rel).await? {
            Some(info) => Ok(self.inodes.upsert(parent, name, Found::file(&info), true)),
            None => {
                self.inodes.set_negative(parent, name);
                Err(FsError(libc::ENOENT))
            }
        }
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let node = self.inodes.get(ino).ok_or(FsError(libc::ENOENT))?;
        if let Some(ws) = self.write_state(ino) {
            return Ok(ws.overlay(node.attr));
        }
        if node.fresh && node.attr.meta_known {
            return Ok(node.attr);
        }
        match node.kind {
            Kind::Dir => {
                self.inodes.touch(ino);
                Ok(node.attr)
            }
            Kind::File => self.refresh_file(&node).await,
        }
    }

    async fn refresh_file(&self, node: &inodes::NodeInfo) -> FsResult<Attr> {
        match self.store.head(&node.rel).await? {
            Some(info) => self
                .inodes
                .refresh(node.ino, Found::file(&info))
                .ok_or(FsError(libc::ENOENT)),
            None => Err(FsError(libc::ENOENT)),
        }
    }

    /// Opens a file; `write` for write access, `trunc` for `O_TRUNC`.
    pub async fn open(&self, ino: u64, write: bool, trunc: bool) -> FsResult<u64> {
        if write || trunc {
            return self.open_write(ino, trunc).await;
        }
        if self.write_state(ino).is_some() {
            // Being written in this mount: reads go to the spool, see `read`.
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            let file = OpenFile {
                ino,
                reader: None,
                write: None,
            };
            self.files.lock().unwrap().insert(fh, Arc::new(file));
            return Ok(fh);
        }
        let node = self.inodes.get(ino).ok_or(FsError(libc::ENOENT))?;
        if node.kind == Kind::Dir {
            return Err(FsError(libc::EISDIR));
        }
        let (etag, size) = if node.fresh {
            (node.etag.clone(), node.attr.size)
        } else {
            self.refresh_file(&node).await?;
            let n = self.inodes.get(ino).ok_or(FsError(libc::ENOENT))?;
            (n.etag, n.attr.size)
        };
        let reader = FileReader::new(self.read.clone(), node.rel.clone(), etag, size);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().unwrap().insert(
            fh,
            Arc::new(OpenFile {
                ino,
                reader: Some(reader),
                write: None,
            }),
        );
        Ok(fh)
    }

    fn open_file(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        self.files
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(FsError(libc::EBADF))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let file = self.open_file(fh)?;
        // A dirty inode is read from its spool, by every handle.
        if let Some(ws) = file.write.clone().or_else(|| self.write_state(file.ino)) {
            let node = self.inodes.get(file.ino).ok_or(FsError(libc::ENOENT))?;
            ws.ensure_loaded(&self.store, &node.rel, &node.etag, node.attr.size)
                .await?;
            return ws.read(offset, size).await.map_err(FsError::from);
        }
        let Some(reader) = &file.reader else {
            // Opened while the file was being written and the writer has since closed.
            return self.read_after_writer(&file, offset, size).await;
        };
        reader.read(offset, size).await.map_err(|e| {
            if matches!(*e, StoreError::Changed) {
                // The next open must see the new version, not retry the old etag.
                self.inodes.invalidate(file.ino);
            }
            FsError::from(&*e)
        })
    }

    async fn read_after_writer(&self, file: &OpenFile, offset: u64, size: u32) -> FsResult<Bytes> {
        let node = self.inodes.get(file.ino).ok_or(FsError(libc::ENOENT))?;
        let reader = FileReader::new(self.read.clone(), node.rel, node.etag, node.attr.size);
        reader
            .read(offset, size)
            .await
            .map_err(|e| FsError::from(&*e))
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.dir_node(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().unwrap().insert(fh, None);
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    /// The entries of a directory handle, `.` and `..` first. The listing is taken when the
    /// handle is first read (or rewound to offset 0) and kept for the handle's life, so
    /// offsets stay meaningful across the kernel's successive readdir calls.
    pub async fn readdir(&self, ino: u64, fh: u64, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        if offset > 0
            && let Some(Some(snapshot)) = self.dirs.lock().unwrap().get(&fh)
        {
            return Ok(snapshot.clone());
        }
        let dir = self.dir_node(ino)?;
        let listing = self.list_dir(ino, &dir.rel).await?;
        let parent = self
            .inodes
            .get(dir.parent)
            .map(|p| p.attr)
            .unwrap_or_else(|| dir.attr.clone());
        let mut entries = Vec::with_capacity(listing.len() + 2);
        entries.push(DirEntry {
            name: ".".into(),
            ino,
            attr: dir.attr.clone(),
        });
        entries.push(DirEntry {
            name: "..".into(),
            ino: parent.ino,
            attr: parent,
        });
        let listing = self.fill_metadata(ino, &dir.rel, &listing).await;
        entries.extend(self.with_open_writes(ino, &listing));
        let snapshot = Arc::new(entries);
        if let Some(slot) = self.dirs.lock().unwrap().get_mut(&fh) {
            *slot = Some(snapshot.clone());
        }
        Ok(snapshot)
    }

    /// HEADs, many at once, the files a listing knows without their stored mtime and mode,
    /// so `ls -l` and rsync see stored values without one sequential round trip per file.
    /// A file whose HEAD fails keeps its listing attributes (and is asked again on lookup).
    async fn fill_metadata(
        &self,
        parent: u64,
        dir_rel: &str,
        listing: &[DirEntry],
    ) -> Vec<DirEntry> {
        use futures::StreamExt;
        let mut filled = listing.to_vec();
        let missing: Vec<usize> = (0..filled.len())
            .filter(|&i| filled[i].attr.kind == Kind::File && !filled[i].attr.meta_known)
            .collect();
        let heads: Vec<_> = futures::stream::iter(missing)
            .map(|i| {
                let rel = format!("{dir_rel}{}", filled[i].name);
                async move { (i, self.store.head(&rel).await) }
            })
            .buffer_unordered(METADATA_FETCHES_IN_FLIGHT)
            .collect()
            .await;
        for (i, head) in heads {
            if let Ok(Some(info)) = head {
                let name = filled[i].name.clone();
                filled[i].attr = self.inodes.upsert(parent, &name, Found::file(&info), false);
                filled[i].ino = filled[i].attr.ino;
            }
        }
        filled
    }

    /// The listing as this mount sees it: files being written here show their current size,
    /// and ones S3 does not have yet (created, not yet flushed) are added.
    fn with_open_writes(&self, dir: u64, listing: &[DirEntry]) -> Vec<DirEntry> {
        let live: Vec<Arc<WriteState>> = self.writes.lock().unwrap().values().cloned().collect();
        if live.is_empty() {
            return listing.to_vec();
        }
        let mut out: Vec<DirEntry> = listing.to_vec();
        for ws in live {
            let Some(node) = self.inodes.get(ws.ino) else {
                continue;
            };
            let Some(name) = self.inodes.name(ws.ino) else {
                continue;
            };
            let named = self
                .inodes
                .child(dir, &name)
                .is_some_and(|c| c.ino == ws.ino);
            if node.parent != dir || !named || ws.is_unlinked() {
                continue;
            }
            let attr = ws.overlay(node.attr);
            match out.binary_search_by(|e| e.name.as_str().cmp(&name)) {
                Ok(i) if out[i].ino == ws.ino => out[i].attr = attr,
                Ok(_) => {}
                Err(i) => out.insert(
                    i,
                    DirEntry {
                        name,
                        ino: ws.ino,
                        attr,
                    },
                ),
            }
        }
        out
    }

    /// Every page of the directory's listing, cached for the metadata TTL.
    async fn list_dir(&self, ino: u64, rel: &str) -> FsResult<Arc<Vec<DirEntry>>> {
        if let Some(l) = self.inodes.fresh_listing(ino) {
            return Ok(l);
        }
        let mut pages = Vec::new();
        let mut next = None;
        loop {
            let page = self.store.list_page(rel, next).await?;
            next = page.next.clone();
            pages.push(page);
            if next.is_none() {
                break;
            }
        }
        Ok(self.inodes.set_listing(ino, build_listing(&pages)))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if ino != ROOT_INO {
            self.inodes.forget(ino, n);
        }
    }

    /// Checks that the prefix can be listed (used before mounting).
    pub async fn check_access(&self) -> FsResult<()> {
        self.store.check_access().await.map_err(FsError::from)
    }
}

/// A live mount; dropping it unmounts.
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    fs: Arc<Fs>,
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// Unmounts and waits for the FUSE session thread to finish.
    pub fn unmount(mut self) -> anyhow::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> anyhow::Result<()> {
        if let Some(session) = self.session.take() {
            session
                .umount_and_join()
                .with_context(|| format!("unmounting {}", self.mountpoint.display()))?;
        }
        Ok(())
    }

    /// Lazy unmount: the mount leaves the namespace at once (nothing new can be opened),
    /// while files already open keep working; the session ends when the last one is
    /// closed (see [`Mount::join`]). A plain unmount would fail with `EBUSY` instead.
    pub fn detach(&self) -> anyhow::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes())?;
        // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err).with_context(|| format!("detaching {}", self.mountpoint.display()));
        }
        // Not root: the setuid helper may unmount what this user mounted.
        for helper in ["fusermount3", "fusermount"] {
            let status = std::process::Command::new(helper)
                .args(["-u", "-z", "--"])
                .arg(&self.mountpoint)
                .stdin(std::process::Stdio::null())
                .status();
            if status.is_ok_and(|s| s.success()) {
                return Ok(());
            }
        }
        anyhow::bail!("could not detach {}", self.mountpoint.display())
    }

    /// Blocks until the filesystem is unmounted from outside (e.g. `fusermount3 -u`), or
    /// after [`Mount::detach`], until the last open file is closed.
    pub fn join(mut self) -> anyhow::Result<()> {
        if let Some(session) = self.session.take() {
            session.join()?;
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!("{e:#}");
        }
    }
}

/// Mounts `store` at `mountpoint`. FUSE callbacks hand their work to `runtime` and reply
/// from there, so no FUSE thread ever waits on the network.
pub fn mount(
    store: Store,
    opts: MountOptions,
    mountpoint: &Path,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<Mount> {
    let fs = Arc::new(Fs::new(store, opts));
    // Before the kernel sees the mount: clean up after a previous crash of this prefix.
    runtime.block_on(fs.recover());
    let session = fuse::spawn(fs.clone(), mountpoint, runtime)
        .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    Ok(Mount {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        fs,
    })
}
