//! The filesystem: a semantic core ([`Fs`]) that answers lookups, attributes, listings,
//! reads and writes in terms of an [`ObjectStore`], and a thin FUSE adapter (`fuse/`) that
//! links kernel requests to it. The core has no FUSE types in it, so tests drive it
//! directly over a [`crate::store::MemoryStore`], without a mount or root.
//!
//! Layers:
//! - `fuse/` → [`Fs`], whose operations live by job: `lookup.rs` (lookups, attributes,
//!   listings), `handle.rs` (open handles, reads), `write.rs` (files open for writing),
//!   `namespace.rs` (setattr, mkdir, mknod, symlink, readlink, unlink, rmdir), `rename.rs`,
//!   `xattr.rs` (extended attributes), `recovery.rs` (shutdown, crash cleanup), `stats.rs`
//!   (what status and `/metrics` report);
//! - below them: `inodes.rs` (the inode table, TTLs, mapping rules), `meta.rs` (object
//!   metadata ⇄ attributes), `read.rs` (readers, readahead) → `cache.rs` (blocks),
//!   `spool.rs` (local copies of files being written) → `upload/` (streaming and whole-file
//!   uploads);
//! - `error.rs` chooses every errno, from typed store errors.
//!
//! `fs/` never builds S3 requests; the store never knows about inodes.

mod ahead;
mod asked;
pub mod cache;
mod dirtimes;
pub mod error;
mod fuse;
mod handle;
mod index;
pub mod inodes;
mod kernel;
mod listing;
mod lookup;
pub mod meta;
mod metacache;
mod mount;
mod namespace;
mod offline;
mod pending;
mod pin;
pub mod read;
mod recovery;
mod rename;
mod spool;
pub mod stats;
pub mod upload;
mod write;
mod xattr;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::ObjectStore;
use cache::BlockCache;
use dirtimes::DirTimes;
pub use error::{FsError, FsResult};
use handle::Handle;
pub use inodes::{Attr, DirEntry, Kind, ROOT_INO};
use inodes::{Defaults, Inodes};
pub use kernel::Invalidate;
use kernel::{KernelQueue, KernelSink};
pub use mount::{Mount, mount};
pub use namespace::{Caller, SetAttr};
pub use offline::OfflineStats;
pub use pending::{conflict_name, device_label as pending_device_label};
pub use pin::PinReport;
use read::ReadShared;
use upload::UploadCtx;
use write::WriteState;

/// How a mount behaves. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    /// The block cache in memory, in bytes (8 MiB): a hot set above the disk cache (the
    /// kernel's page cache is the first level, and the disk cache's files are in it too).
    pub cache_bytes: u64,
    /// Where blocks are kept on disk across mounts (`$XDG_CACHE_HOME/cognifs/PROFILE/blocks`
    /// for the daemon); `None`: no disk cache, blocks live in memory only.
    pub disk_cache: Option<PathBuf>,
    /// The disk cache's budget in bytes (`--cache-size`); `None`: 5% of its filesystem, at
    /// most 10 GiB.
    pub disk_cache_bytes: Option<u64>,
    /// Where the listings last seen are kept, per directory, for answering while S3 is away
    /// (`$XDG_CACHE_HOME/cognifs/PROFILE/tree` for the daemon); `None`: in memory only.
    pub known_tree: Option<PathBuf>,
    /// Blocks prefetched and not yet read, mount-wide, in bytes (48 MiB): with the hot set
    /// and the parts of uploads in flight, what bounds the mount's memory.
    pub readahead_bytes: u64,
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
    /// How often directory times moved by changes of their entries are written to their
    /// markers (1 s): at most one PUT per directory per interval.
    pub dir_times_interval: Duration,
    /// Where uploads that failed are kept until they are in S3 (the profile's
    /// `pending` directory); `None`: nowhere — a failed upload's data is dropped.
    pub pending_dir: Option<PathBuf>,
    /// Most bytes the pending area may hold, counting every file open for writing (which
    /// may have to be kept); past it, writes fail with `ENOSPC`. `None`: no limit but
    /// `min_free`.
    pub pending_max: Option<u64>,
    /// Free space the pending area's filesystem keeps; writes that could eat into it fail
    /// with `ENOSPC`. `None`: 5% of that filesystem, at most 1 GiB.
    pub min_free: Option<u64>,
    /// Where metadata learnt by HEAD is kept across mounts (by key and etag), so a later
    /// mount's `ls -l` of unchanged objects costs the LIST alone. `None`: in memory only.
    pub meta_cache: Option<PathBuf>,
    /// Attributes from listings alone, never a HEAD: Last-Modified as mtime, the mount's
    /// owner and modes, every object a regular file (like rclone's --use-server-modtime).
    pub list_only: bool,
    /// This machine's name in conflict copies (`NAME.conflict-DEVICE-TIME`); the host name.
    pub device_name: String,
    /// A `close`/`fsync` whose data went beside the object as a conflict copy fails with
    /// `ESTALE` (the data is safe in S3 all the same); by default it returns 0.
    pub conflict_error: bool,
    /// While S3 does not answer, `close`/`fsync` fail (`EIO`; the data is kept all the same)
    /// and changes to the tree are refused, as before offline mode; by default they are kept
    /// on disk, reported done, and sent when S3 answers.
    pub offline_strict: bool,
    /// Multipart uploads under the prefix older than this are taken for abandoned and
    /// aborted at mount (24 h), whoever started them; younger ones only if this machine's
    /// own record proves them dead.
    pub stray_upload_age: Duration,
}

/// `s3://bucket/prefix/`: the location records of this mount's prefix carry.
pub(crate) fn location_of(store: &dyn ObjectStore) -> String {
    format!("s3://{}/{}", store.bucket(), store.scope().prefix())
}

/// This machine's host name (`device` when it has none that fits).
pub fn host_name() -> String {
    let uname = rustix::system::uname();
    match uname.nodename().to_str() {
        Ok(name) if !name.is_empty() => name.to_owned(),
        _ => "device".to_owned(),
    }
}

/// (free for an unprivileged user, total) bytes of the filesystem holding `path`.
pub fn filesystem_space(path: &std::path::Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(path).ok()?;
    let frsize = st.f_frsize;
    Some((st.f_bavail * frsize, st.f_blocks * frsize))
}

/// `$XDG_CACHE_HOME/cognifs/spool` (the one XDG rule of `config::xdg_dir`).
pub fn default_spool_dir() -> PathBuf {
    crate::config::xdg_dir(crate::config::XdgBase::Cache).join("spool")
}

impl Default for MountOptions {
    fn default() -> Self {
        let (uid, gid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        MountOptions {
            read_only: false,
            allow_other: false,
            cache_bytes: 8 << 20,
            disk_cache: None,
            disk_cache_bytes: None,
            readahead_bytes: 48 << 20,
            known_tree: None,
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
            upload_parts_budget: 12,
            dir_times_interval: Duration::from_secs(1),
            pending_dir: None,
            pending_max: None,
            min_free: None,
            meta_cache: None,
            list_only: false,
            device_name: host_name(),
            conflict_error: false,
            offline_strict: false,
            stray_upload_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Objects whose metadata the on-disk cache remembers (about 200 bytes each).
const META_CACHE_ENTRIES: usize = 200_000;

/// The semantic core of the mount.
pub struct Fs {
    /// S3, through [`crate::store::Reach`]: while it does not answer, nothing is sent.
    store: Arc<dyn ObjectStore>,
    reach: Arc<crate::store::Reach>,
    /// The listings last seen, on disk (`local/tree.rs`).
    tree: Option<Arc<crate::local::KnownTree>>,
    /// Changes to the tree made offline, until S3 has them (`offline.rs`).
    journal: Option<crate::local::journal::Journal>,
    replay: Mutex<offline::ReplayState>,
    /// One replay of the journal at a time.
    replaying: tokio::sync::Mutex<()>,
    /// The return online last acted upon ([`crate::store::ReachState::generation`]).
    seen_generation: AtomicU64,
    /// Files whose uncached reads failed offline, logged once per outage.
    offline_reads: Mutex<std::collections::HashSet<u64>>,
    inodes: Arc<Inodes>,
    dir_times: Arc<DirTimes>,
    read: Arc<ReadShared>,
    opts: MountOptions,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// Open directories (`listing.rs`: `DirHandle`).
    dirs: Mutex<HashMap<u64, Arc<listing::DirHandle>>>,
    /// Write state per inode open for writing.
    writes: Mutex<HashMap<u64, Arc<WriteState>>>,
    upload: Arc<UploadCtx>,
    /// Object metadata learnt by HEAD, on disk (`metacache.rs`).
    meta_cache: Option<Arc<metacache::MetaCache>>,
    /// Where failed uploads are kept (`pending.rs`).
    pending: Option<Arc<crate::pending::PendingArea>>,
    /// The etag each file was last opened for reading at (`Fs::keeps_page_cache`).
    opened_versions: Mutex<HashMap<u64, String>>,
    /// Directories whose entries this mount changed, since when: their listing indexes are
    /// written once they are quiet (`index.rs`).
    index_due: Mutex<HashMap<u64, std::time::Instant>>,
    /// Directories removed or moved away: their indexes are deleted (`index.rs`).
    index_stale: Mutex<Vec<String>>,
    /// Indexes fetched ahead of a listing a lookup made likely, by directory (`index.rs`).
    index_prefetch: ahead::Ahead<String, Arc<index::PrefetchCell>>,
    /// First pages of listings that lookups brought, by directory (`lookup.rs`).
    first_pages: ahead::Ahead<u64, lookup::KeptPage>,
    next_fh: AtomicU64,
    counters: stats::FsCounters,
    /// Where kernel invalidations go (the FUSE session's notifier), once mounted.
    kernel: std::sync::OnceLock<KernelSink>,
    /// What checks the conditions of writes: the server, or a HEAD first (`store/conditions.rs`).
    conditions: std::sync::OnceLock<Arc<crate::store::EmulatedConditions>>,
    /// [`Fs::inject_panic`] (tests).
    injected_panic: Mutex<Option<(&'static str, bool)>>,
    panic_armed: std::sync::atomic::AtomicBool,
}

impl Fs {
    pub fn new(store: Arc<dyn ObjectStore>, mut opts: MountOptions) -> Self {
        opts.metadata_ttl = opts.metadata_ttl.max(Duration::from_millis(1));
        let reach = Arc::new(crate::store::Reach::new(store));
        let store: Arc<dyn ObjectStore> = reach.clone();
        let offline_journal = offline::open_journal(&opts, &*store);
        let tree = opts.known_tree.as_deref().and_then(|dir| {
            crate::local::KnownTree::open(dir, &location_of(&*store))
                .inspect_err(|e| tracing::error!(dir = %dir.display(), error = %e, "cannot keep listings on disk; offline, only what this mount saw is shown"))
                .ok()
        });
        let cache = Arc::new(BlockCache::new(opts.cache_bytes));
        let block = opts.block_size.max(4096);
        let disk = opts.disk_cache.as_deref().and_then(|dir| {
            let budget = opts
                .disk_cache_bytes
                .unwrap_or_else(|| crate::local::blocks::default_budget(dir));
            crate::local::DiskCache::open(dir, &location_of(&*store), block, budget)
                .inspect_err(|e| tracing::error!(dir = %dir.display(), error = %e, "cannot open the disk cache; blocks are cached in memory only"))
                .ok()
        });
        let read = Arc::new(
            ReadShared::new(
                store.clone(),
                cache,
                block,
                opts.max_readahead,
                opts.max_prefetch_gets,
                (opts.readahead_bytes / block).max(4) as usize,
            )
            .with_disk(disk),
        );
        let journal = opts.pending_dir.as_deref().and_then(|dir| {
            crate::upload_journal::UploadJournal::beside(dir)
                .inspect_err(|e| tracing::warn!(error = %e, "no journal of multipart uploads: the ones a crash leaves are aborted only once they are old"))
                .ok()
                .map(|j| (location_of(&*store), Arc::new(j)))
        });
        let upload = Arc::new(UploadCtx {
            journal,
            store: store.clone(),
            // S3's minimum part size is 5 MiB (except the last part).
            part_size: opts.part_size.max(5 << 20),
            parts_in_flight: opts.parts_in_flight.max(1),
            budget: Arc::new(tokio::sync::Semaphore::new(opts.upload_parts_budget.max(1))),
            progress: Default::default(),
            unaborted: Default::default(),
            abort_tried: Default::default(),
        });
        let pending = opts.pending_dir.as_ref().and_then(|dir| {
            crate::pending::PendingArea::open(dir)
                .inspect_err(|e| {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot open the pending-upload area; failed uploads will not be kept")
                })
                .ok()
                .map(Arc::new)
        });
        // Files being written and what HEADs said are nobody else's business: 0700.
        if let Err(e) = crate::statefile::private_dir(&opts.spool_dir) {
            tracing::error!(dir = %opts.spool_dir.display(), error = %e, "cannot make the spool directory private");
        }
        let meta_cache = opts
            .meta_cache
            .as_deref()
            .map(|p| Arc::new(metacache::MetaCache::open(p, META_CACHE_ENTRIES)));
        // What this mount changes is forgotten there: a metadata change within the second
        // of the version's Last-Modified would otherwise look like the version remembered.
        if let Some(cache) = &meta_cache {
            let cache = Arc::downgrade(cache);
            reach.on_written(Box::new(move |rel| {
                if let Some(cache) = cache.upgrade() {
                    cache.forget(rel);
                }
            }));
        }
        Fs {
            upload,
            meta_cache,
            pending,
            store,
            reach,
            tree,
            journal: offline_journal,
            replay: Default::default(),
            replaying: Default::default(),
            seen_generation: AtomicU64::new(0),
            offline_reads: Default::default(),
            inodes: Arc::new(Inodes::new(
                opts.metadata_ttl,
                Defaults {
                    uid: opts.uid,
                    gid: opts.gid,
                    file_mode: opts.file_mode,
                    dir_mode: opts.dir_mode,
                },
            )),
            dir_times: Arc::new(DirTimes::new(opts.dir_times_interval, opts.dir_mode)),
            read,
            opts,
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            index_due: Mutex::new(HashMap::new()),
            index_stale: Mutex::new(Vec::new()),
            index_prefetch: ahead::Ahead::new(index::PREFETCHED_KEPT),
            writes: Mutex::new(HashMap::new()),
            opened_versions: Mutex::new(HashMap::new()),
            first_pages: ahead::Ahead::new(lookup::FIRST_PAGES_KEPT),
            next_fh: AtomicU64::new(1),
            counters: Default::default(),
            kernel: Default::default(),
            conditions: Default::default(),
            injected_panic: Mutex::new(None),
            panic_armed: Default::default(),
        }
    }

    /// From now on, invalidations are queued for the FUSE layer, which serves the queue
    /// returned and sends them to the kernel.
    fn connect_kernel(&self) -> KernelQueue {
        let (sink, queue) = kernel::kernel_channel();
        self.inodes.report_replaced(sink.clone());
        let _ = self.kernel.set(sink);
        queue
    }

    /// Waits (boundedly) until the kernel was told everything queued so far.
    pub(crate) async fn kernel_caught_up(&self) {
        if let Some(k) = self.kernel.get() {
            k.caught_up().await;
        }
    }

    /// Tells the kernel to forget something (never waits: the FUSE layer sends it).
    pub(crate) fn tell_kernel(&self, what: Invalidate) {
        if let Some(k) = self.kernel.get() {
            k.send(what);
        }
    }

    /// The store's condition checker (the same object as the store), for status and for
    /// asking the server again.
    pub fn set_conditions(&self, checker: Arc<crate::store::EmulatedConditions>) {
        let _ = self.conditions.set(checker);
    }

    /// What the server was seen to check: `None` before a probe succeeded.
    pub fn condition_support(&self) -> Option<crate::store::ConditionSupport> {
        self.conditions.get().and_then(|c| c.support())
    }

    /// Asks the server which conditions it checks, if that is not known yet.
    pub async fn recheck_conditions(&self) {
        if let Some(c) = self.conditions.get() {
            c.recheck().await;
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

    /// The path of `ino` relative to the mount's prefix (`a/b`, `a/` for a directory), for
    /// logs.
    pub fn path_of(&self, ino: u64) -> Option<String> {
        self.inodes.get(ino).map(|n| n.rel)
    }

    fn dir_node(&self, ino: u64) -> FsResult<inodes::NodeInfo> {
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        if node.kind != Kind::Dir {
            return Err(FsError::new(libc::ENOTDIR));
        }
        Ok(node)
    }

    /// The entries of these directories changed now (see `dirtimes.rs`).
    fn touch_dirs(&self, dirs: &[u64]) {
        for &d in dirs {
            self.dir_times.touch(&self.inodes, &self.store, d);
            self.index_changed(d);
        }
    }

    /// Writes the directory times still pending (at unmount; also every second).
    pub async fn flush_dir_times(&self) -> FsResult<()> {
        self.dir_times.flush(&self.inodes, &*self.store).await
    }

    /// The kernel dropped `n` references to `ino`: at none, and with nothing using it, the
    /// inode table lets it go (`Inodes::evict`).
    pub fn forget(&self, ino: u64, n: u64) {
        if ino != ROOT_INO && self.inodes.forget(ino, n) == 0 {
            self.evict_if_unused(ino);
        }
    }

    /// Lets `ino` go from the inode table if the kernel holds no reference to it and no
    /// handle, write state or kept upload uses it.
    pub(crate) fn evict_if_unused(&self, ino: u64) {
        let mut busy: std::collections::HashSet<u64> =
            self.writes.lock().unwrap().keys().copied().collect();
        busy.extend(self.handles.lock().unwrap().values().map(|h| h.ino()));
        let gone = self.inodes.evict(ino, &|i| busy.contains(&i));
        if gone.is_empty() {
            return;
        }
        let mut versions = self.opened_versions.lock().unwrap();
        for i in gone {
            versions.remove(&i);
            self.first_pages.forget(&i);
        }
    }

    /// The number to hand the kernel for an entry of `dir`'s listing (readdirplus), which
    /// may have been forgotten since the listing was taken.
    pub fn listed_ino(&self, dir: u64, entry: &DirEntry) -> u64 {
        self.inodes.listed_ino(dir, entry)
    }

    /// Writes out what the caches on disk still hold in memory (at unmount): blocks queued
    /// for the disk cache, metadata lines.
    pub fn close_caches(&self) {
        if let Some(disk) = &self.read.disk {
            disk.close();
        }
        if let Some(tree) = &self.tree {
            self.save_known_tree();
            tree.close();
        }
        if let Some(cache) = &self.meta_cache {
            cache.flush();
        }
    }

    /// Tests: the next FUSE call `op` panics (on the FUSE thread, or after waiting once on
    /// the runtime if `after_wait`), to prove that a panic fails that call alone (`EIO`)
    /// and the mount goes on. Nothing else calls it.
    #[doc(hidden)]
    pub fn inject_panic(&self, op: &'static str, after_wait: bool) {
        *self.injected_panic.lock().unwrap() = Some((op, after_wait));
        self.panic_armed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Takes the panic injected for `op`, if any (one check of an atomic otherwise).
    pub(crate) fn take_injected_panic(&self, op: &str) -> Option<bool> {
        if !self.panic_armed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut armed = self.injected_panic.lock().unwrap();
        match *armed {
            Some((o, after_wait)) if o == op => {
                *armed = None;
                self.panic_armed
                    .store(false, std::sync::atomic::Ordering::Release);
                Some(after_wait)
            }
            _ => None,
        }
    }

    /// The disk cache, if the mount has one.
    pub fn disk_cache(&self) -> Option<&Arc<crate::local::DiskCache>> {
        self.read.disk.as_ref()
    }

    /// Checks that the prefix can be listed (used before mounting).
    pub async fn check_access(&self) -> FsResult<()> {
        Ok(self.store.check_access().await?)
    }
}
