//! Reading objects through a per-open-handle [`FileReader`].
//!
//! # Design
//!
//! An object is read in fixed blocks (1 MiB by default). Every block is one ranged GET that
//! carries `If-Match: <etag seen at open>`, so a file replaced under a reader fails with
//! EIO ("object changed while reading") instead of mixing bytes of two versions. Fetched
//! blocks go into the shared [`BlockCache`], keyed by (key, etag, block), and any read
//! whose blocks are all cached never touches S3.
//!
//! The kernel sends reads of at most 1 MiB (128 KiB where its readahead could not be
//! raised), so a sequential reader only gets S3 throughput if the next megabytes are
//! already on their way when it asks. Each handle therefore tracks where the last read
//! ended:
//!
//! - A read that starts at that point, or before it by less than the kernel's readahead
//!   (async reads arrive out of order), or skips forward by less than the current window,
//!   is *sequential*. Each time a sequential reader enters a new block, its readahead
//!   window doubles, from one block up to `max_readahead` (64 MiB by default), and every
//!   block inside `[end, end + window)` that is neither cached nor in flight is requested
//!   at once. Consecutive missing blocks share a GET of up to [`PREFETCH_GET_BYTES`] (as a
//!   direct client would read), whose blocks are handed over one by one as they arrive.
//! - Any other read is *random*: the window falls back to one block, and sequential
//!   prefetches in flight for this handle are dropped (aborting their GETs). What it
//!   fetches depends on the link (`link.rs`): with S3 near, only the pages it covers (not
//!   cached: a block would cost more than the round trip), until the misses of that version
//!   have cost as much as fetching their span would (`misses.rs`: then the region around
//!   each further miss is fetched too, in the background); with S3 far, the
//!   blocks it covers and, in the background, the region around them that one more GET
//!   brings in about a round trip, so the reads that follow nearby find it cached.
//!
//! # Backpressure
//!
//! Two semaphores shared by every handle of the mount bound the work:
//! - `fetch_permits` bounds prefetch GETs in flight across the mount, so fifty sequential
//!   readers share the connection pool fairly (tokio's semaphore is FIFO). Demand fetches
//!   (blocks a read is waiting for right now) do not queue behind it, so a reader always
//!   makes progress.
//! - `readahead_budget` counts blocks that were prefetched but not yet consumed, so
//!   memory held by readahead is bounded mount-wide. When it is exhausted a reader simply
//!   prefetches less (`try_acquire`); the permit returns when the reader moves past the
//!   block, seeks elsewhere, or closes. A sequential reader holds at most its share of it
//!   (the budget over the sequential readers open, never less than a GET's worth): a
//!   reader whose window has grown does not starve the others, whose kernel readahead
//!   would otherwise ask for blocks nobody fetched ahead — a GET per block, waited for,
//!   each beside the budget.
//!
//! Dropping the handle drops its in-flight map, which aborts GETs nobody waits for.
//!
//! # Two levels
//!
//! The block cache in memory is a small hot set; below it the disk cache
//! ([`crate::local::DiskCache`]), when the mount has one, keeps blocks across mounts. A
//! fetch first takes what the disk has of its blocks (verified: a torn block is fetched
//! again), then GETs the rest; every block fetched from S3 is written behind to disk. The
//! lookup that an open needs anyway gives the etag, which is the validation: a remount reads
//! an unchanged cached file with no GET, and while S3 is away the disk answers alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::sync::Semaphore;

use crate::fs::cache::{BlockCache, BlockKey};
use crate::local::DiskCache;
use crate::store::{ObjectStore, StoreError};
use fetch::{Fetch, FetchFuture};

mod fetch;
mod link;
mod misses;
pub use link::LinkEstimate;

pub type ReadResult<T> = Result<T, Arc<StoreError>>;

/// The kernel readahead the mount asks for (`fuse/readahead.rs`): the kernel keeps this
/// much in 1 MiB reads in flight, which may arrive in any order.
pub const KERNEL_READAHEAD: u64 = 4 << 20;
/// The largest GET of a sequential reader's prefetch: a direct client's part size. Larger
/// GETs cost fewer requests; this one arrives within a few ms of its first byte.
pub const PREFETCH_GET_BYTES: u64 = 8 << 20;
/// What a random read fetches with S3 near: its range, rounded out to this (a page). A
/// larger piece serves nothing, as pieces are not cached: 64 KiB pieces cost 4 KiB O_DIRECT
/// reads at 0 ms about a third of their rate.
const RANDOM_PIECE: u64 = 4 << 10;

/// What every reader of one mount shares.
pub struct ReadShared {
    pub store: Arc<dyn ObjectStore>,
    pub cache: Arc<BlockCache>,
    /// Blocks kept on disk across mounts, if the mount has a disk cache.
    pub disk: Option<Arc<DiskCache>>,
    pub block_size: u64,
    pub max_readahead: u64,
    fetch_permits: Arc<Semaphore>,
    readahead_budget: Arc<Semaphore>,
    /// The budget's size in blocks, and the sequential readers sharing it.
    readahead_blocks: u64,
    sequential_readers: AtomicUsize,
    /// Round trip and bandwidth of GETs, as measured.
    pub link: LinkEstimate,
    /// Random misses per version: when a reader's region is worth fetching (`misses.rs`).
    misses: misses::Misses,
}

impl ReadShared {
    /// `max_prefetch_gets`: prefetch GETs in flight mount-wide; `readahead_blocks`: blocks
    /// prefetched but not yet read, mount-wide.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        cache: Arc<BlockCache>,
        block_size: u64,
        max_readahead: u64,
        max_prefetch_gets: usize,
        readahead_blocks: usize,
    ) -> Self {
        ReadShared {
            store,
            cache,
            disk: None,
            block_size: block_size.max(4096),
            max_readahead: max_readahead.max(block_size),
            fetch_permits: Arc::new(Semaphore::new(max_prefetch_gets.max(1))),
            readahead_budget: Arc::new(Semaphore::new(readahead_blocks.max(1))),
            readahead_blocks: readahead_blocks.max(1) as u64,
            sequential_readers: AtomicUsize::new(0),
            link: LinkEstimate::default(),
            misses: misses::Misses::default(),
        }
    }

    /// Keeps blocks on `disk` too.
    pub fn with_disk(mut self, disk: Option<Arc<DiskCache>>) -> Self {
        self.disk = disk;
        self
    }

    /// Caches `data`, the whole of version `etag` of `rel` (this mount wrote it), when it
    /// fits one block: read later without S3, offline too.
    pub fn keep_small(&self, rel: &str, etag: &str, data: &Bytes) {
        if data.is_empty() || data.len() as u64 > self.block_size || etag.is_empty() {
            return;
        }
        let key = BlockKey {
            key: rel.to_owned(),
            etag: etag.to_owned(),
            block: 0,
        };
        self.cache.insert(key.clone(), data.clone());
        if let Some(disk) = &self.disk {
            disk.write_behind(key, data.clone());
        }
    }

    /// Version `from` (`size` bytes) was copied to `to` in S3: what the disk keeps of it is
    /// kept under the new key too (written behind).
    pub fn carry(&self, from: (&str, &str), to: (&str, &str), size: u64) {
        if let Some(disk) = &self.disk {
            disk.carry(from, to, size.div_ceil(self.block_size));
        }
    }

    /// Whether the block is on disk (no I/O: the disk cache's index).
    fn on_disk(&self, key: &BlockKey) -> bool {
        self.disk.as_ref().is_some_and(|d| d.contains(key))
    }
}

struct State {
    /// End offset of the furthest sequential read so far.
    last_end: u64,
    /// Highest block a sequential read has entered.
    last_block: Option<u64>,
    window: u64,
    inflight: HashMap<u64, Fetch>,
    /// Counted among the sequential readers sharing the readahead budget.
    sharing: bool,
}

impl State {
    /// Blocks this reader holds permits of the readahead budget for.
    fn budgeted(&self) -> u64 {
        self.inflight
            .values()
            .filter(|f| f._budget.is_some())
            .count() as u64
    }
}

pub struct FileReader {
    shared: Arc<ReadShared>,
    rel: String,
    etag: String,
    size: u64,
    state: Mutex<State>,
}

enum Part {
    Ready(Bytes),
    Pending(FetchFuture),
}

/// How a read is answered, decided under the handle's lock.
enum Plan {
    /// From the blocks it covers, cached or on their way.
    Blocks(Vec<Part>),
    /// From the object's bytes `from..to` alone, fetched now and not cached (a random read
    /// with S3 near).
    Piece { from: u64, to: u64 },
}

impl FileReader {
    /// The version this reader reads.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    pub fn new(shared: Arc<ReadShared>, rel: String, etag: String, size: u64) -> Self {
        let window = shared.block_size;
        FileReader {
            shared,
            rel,
            etag,
            size,
            state: Mutex::new(State {
                last_end: 0,
                last_block: None,
                window,
                inflight: HashMap::new(),
                sharing: false,
            }),
        }
    }

    fn block_key(&self, block: u64) -> BlockKey {
        BlockKey {
            key: self.rel.clone(),
            etag: self.etag.clone(),
            block,
        }
    }

    /// Prefetches the blocks of `[from, to]` that are neither cached nor in flight, each run
    /// of them in GETs of at most `per_get` blocks, each block holding a permit of the
    /// readahead budget (none left: no further). `reader_at`: a sequential reader's block,
    /// for which a short run at the far end waits for the reader to move on and lengthen
    /// it (one GET of `per_get` blocks rather than a GET per block entered), unless the
    /// reader is about to need it.
    fn prefetch(
        &self,
        st: &mut State,
        from: u64,
        to: u64,
        per_get: u64,
        reader_at: Option<u64>,
        around_random: bool,
    ) {
        let last_block = (self.size - 1) / self.shared.block_size;
        let missing = |st: &State, b: u64| {
            !st.inflight.contains_key(&b) && !self.shared.cache.contains(&self.block_key(b))
        };
        // Blocks the disk cache holds hide no S3 round trip: a sequential reader has them
        // read a GET's worth ahead, not a whole window ahead (memory held meanwhile; four
        // readers of one file's quarters ran that far into each other's).
        let on_disk_far = |b: u64| {
            reader_at.is_some_and(|at| b > at + per_get) && self.shared.on_disk(&self.block_key(b))
        };
        let mut b = from;
        while b <= to {
            if !missing(st, b) {
                b += 1;
                continue;
            }
            if on_disk_far(b) {
                break;
            }
            let mut end = b;
            while end < to && end + 1 - b < per_get && missing(st, end + 1) && !on_disk_far(end + 1)
            {
                end += 1;
            }
            let short = end + 1 - b < per_get;
            if let Some(at) = reader_at
                && short
                && end == to
                && end != last_block
                && b > at + per_get
            {
                break;
            }
            // A sequential reader's share of the budget: what it holds already counts.
            let room = match reader_at {
                Some(_) => self.budget_share(st, per_get),
                None => u64::MAX,
            };
            let mut permits = Vec::new();
            while permits.len() as u64 <= end - b && (permits.len() as u64) < room {
                match self.shared.readahead_budget.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let got = permits.len() as u64;
            if got > 0 {
                let futs = self.start_fetches(b, got, true);
                for ((block, permit), fut) in (b..).zip(permits).zip(futs) {
                    st.inflight.insert(
                        block,
                        Fetch {
                            fut,
                            _budget: Some(permit),
                            around_random,
                        },
                    );
                }
            }
            if got <= end - b {
                return;
            }
            b = end + 1;
        }
    }

    /// How many more blocks of the readahead budget this sequential reader may take: its
    /// share (the budget over the sequential readers, at least `per_get`) less what it holds.
    fn budget_share(&self, st: &mut State, per_get: u64) -> u64 {
        let sh = &self.shared;
        if !st.sharing {
            st.sharing = true;
            sh.sequential_readers.fetch_add(1, Ordering::Relaxed);
        }
        let readers = sh.sequential_readers.load(Ordering::Relaxed).max(1) as u64;
        let share = (sh.readahead_blocks / readers).max(per_get);
        share.saturating_sub(st.budgeted())
    }

    /// The region of `region_blocks` around `block` that this version's random misses have
    /// made worth fetching (`misses.rs`), if the disk cache and the readahead budget can take
    /// it now (a region dropped on its way would be paid for again).
    fn region_to_buy(&self, block: u64, region_blocks: u64) -> Option<(u64, u64)> {
        let disk = self.shared.disk.as_ref()?;
        let bs = self.shared.block_size;
        if disk.write_room() < (region_blocks * bs).min(PREFETCH_GET_BYTES)
            || (self.shared.readahead_budget.available_permits() as u64) < region_blocks
        {
            return None;
        }
        let terms = misses::Terms {
            block_size: bs,
            region_blocks,
            bandwidth: self.shared.link.bandwidth(),
            limit: disk.budget() / 2,
        };
        self.shared.misses.buy(&self.rel, &self.etag, block, &terms)
    }

    /// Reads up to `size` bytes at `offset`; fewer only at end of file.
    pub async fn read(&self, offset: u64, size: u32) -> ReadResult<Bytes> {
        if offset >= self.size || size == 0 {
            return Ok(Bytes::new());
        }
        let bs = self.shared.block_size;
        let end = (offset + u64::from(size)).min(self.size);
        let first = offset / bs;
        let last = (end - 1) / bs;

        // How far behind the furthest read a read may start and still be sequential.
        let behind = bs.max(KERNEL_READAHEAD);
        let plan = {
            let mut st = self.state.lock().unwrap();
            let skip = st.window.max(behind);
            let sequential =
                offset >= st.last_end.saturating_sub(behind) && offset <= st.last_end + skip;
            if sequential {
                if st.last_block.is_some_and(|b| last > b) {
                    st.window = (st.window * 2).min(self.shared.max_readahead);
                } else if st.last_block.is_none() && offset == 0 {
                    // A reader starting at the beginning (most read the whole file): its
                    // first window is at least what one GET brings in a round trip, which
                    // costs about nothing more than the block asked for (a 5 MiB file with S3
                    // 20 ms away: one round trip instead of three).
                    let bdp = self.shared.link.bandwidth_delay().unwrap_or(0);
                    st.window = st.window.max(bdp / bs * bs).min(self.shared.max_readahead);
                }
                st.last_block = Some(st.last_block.map_or(last, |b| b.max(last)));
                st.last_end = st.last_end.max(end);
            } else {
                st.window = bs;
                st.inflight.retain(|_, f| f.around_random);
                st.last_block = Some(last);
                st.last_end = end;
            }
            // Blocks behind the reader are let go (aborting their GETs when no other block
            // shares them), but for reads the kernel may still send out of order.
            let keep_from = first.saturating_sub(behind / bs);
            st.inflight.retain(|&b, f| {
                if f.around_random {
                    // Arrived (so cached): its budget permit goes back. Nobody awaits
                    // these, so a poll is what tells.
                    f.fut.clone().now_or_never().is_none()
                } else {
                    b >= keep_from
                }
            });
            let near = self.shared.link.is_near();
            if !sequential
                && near
                && first == last
                && !st.inflight.contains_key(&first)
                && !self.shared.cache.contains(&self.block_key(first))
                && !self.shared.on_disk(&self.block_key(first))
            {
                // A dense random reader's misses buy the regions they fall in (misses.rs),
                // in the background: this read still takes its piece.
                let region_blocks = (PREFETCH_GET_BYTES / bs).max(1);
                if let Some((from, to)) = self.region_to_buy(first, region_blocks) {
                    let to = to.min((self.size - 1) / bs);
                    self.prefetch(&mut st, from, to, to + 1 - from, None, true);
                }
                let from = offset / RANDOM_PIECE * RANDOM_PIECE;
                let to = end.div_ceil(RANDOM_PIECE) * RANDOM_PIECE;
                Plan::Piece {
                    from,
                    to: to.min((first + 1) * bs).min(self.size),
                }
            } else {
                let mut parts = Vec::with_capacity((last - first + 1) as usize);
                for b in first..=last {
                    if let Some(f) = st.inflight.get(&b) {
                        parts.push(Part::Pending(f.fut.clone()));
                    } else if let Some(data) = self.shared.cache.get(&self.block_key(b)) {
                        parts.push(Part::Ready(data));
                    } else {
                        let fut = self.start_fetches(b, 1, false).remove(0);
                        st.inflight.insert(
                            b,
                            Fetch {
                                fut: fut.clone(),
                                _budget: None,
                                around_random: false,
                            },
                        );
                        parts.push(Part::Pending(fut));
                    }
                }
                if !sequential && !near {
                    // One more GET's worth around the read, aligned, in the background.
                    // Bandwidth not measured yet: a prefetch GET's worth, which measures it.
                    let bdp = self
                        .shared
                        .link
                        .bandwidth_delay()
                        .unwrap_or(PREFETCH_GET_BYTES);
                    let cap = (self.shared.max_readahead / 2 / bs).max(1);
                    let blocks = (bdp / bs).clamp(1, cap).next_power_of_two().min(cap);
                    let from = first / blocks * blocks;
                    let to = (from + blocks - 1).min((self.size - 1) / bs);
                    self.prefetch(&mut st, from, to, blocks, None, true);
                }

                if sequential {
                    let ra_end = (st.last_end + st.window).min(self.size);
                    let ra_last = ra_end.saturating_sub(1) / bs;
                    // A window holds at least four GETs, so one is always on its way.
                    let per_get =
                        (PREFETCH_GET_BYTES.min(self.shared.max_readahead / 4) / bs).max(1);
                    self.prefetch(&mut st, last + 1, ra_last, per_get, Some(last), false);
                }
                Plan::Blocks(parts)
            }
        };
        let parts = match plan {
            Plan::Blocks(parts) => parts,
            Plan::Piece { from, to } => {
                let started = std::time::Instant::now();
                let piece = self
                    .shared
                    .store
                    .get_range(&self.rel, &self.etag, from, to - from)
                    .await
                    .map_err(Arc::new)?;
                crate::store::check_length(piece.len() as u64, from, to - from)
                    .map_err(Arc::new)?;
                let took = started.elapsed();
                self.shared.link.record(took, to - from, took, to - from);
                self.shared
                    .misses
                    .note(&self.rel, &self.etag, from / bs, took);
                return Ok(piece.slice((offset - from) as usize..(end - from) as usize));
            }
        };

        let mut blocks = Vec::with_capacity(parts.len());
        for p in parts {
            blocks.push(match p {
                Part::Ready(b) => b,
                Part::Pending(f) => f.await?,
            });
        }
        let base = first * bs;
        let (from, to) = ((offset - base) as usize, (end - base) as usize);
        if blocks.len() == 1 {
            return Ok(blocks.pop().unwrap().slice(from..to));
        }
        let mut out = BytesMut::with_capacity(to - from);
        let mut pos = 0usize;
        for b in blocks {
            let (s, e) = (pos, pos + b.len());
            let lo = from.max(s);
            let hi = to.min(e);
            if lo < hi {
                out.extend_from_slice(&b[lo - s..hi - s]);
            }
            pos = e;
        }
        Ok(out.freeze())
    }

    /// Current readahead window in bytes (for tests and diagnostics).
    pub fn window(&self) -> u64 {
        self.state.lock().unwrap().window
    }

    /// Blocks requested and not yet passed by the reader.
    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap().inflight.len()
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.sharing {
            self.shared
                .sequential_readers
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, RequestKind, UserMeta};

    const MIB: u64 = 1 << 20;

    /// A 32 MiB object and a reader over it with 1 MiB blocks and an 8 MiB window cap.
    async fn reader() -> (Arc<MemoryStore>, FileReader) {
        reader_with_window(8 * MIB).await
    }

    async fn reader_with_window(max_readahead: u64) -> (Arc<MemoryStore>, FileReader) {
        let store = Arc::new(MemoryStore::new("b", "p"));
        let body: Vec<u8> = (0..32 * MIB).map(|i| (i % 251) as u8).collect();
        let etag = store
            .put("f", Bytes::from(body), &UserMeta::new())
            .await
            .unwrap();
        let cache = Arc::new(BlockCache::new(64 * MIB));
        let shared = Arc::new(ReadShared::new(
            store.clone(),
            cache,
            MIB,
            max_readahead,
            32,
            64,
        ));
        let reader = FileReader::new(shared, "f".into(), etag, 32 * MIB);
        (store, reader)
    }

    fn expected(offset: u64, len: u64) -> Vec<u8> {
        (offset..offset + len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn sequential_reads_double_the_window_up_to_the_cap() {
        let (store, r) = reader().await;
        let mut windows = Vec::new();
        let mut off = 0;
        while off < 16 * MIB {
            let data = r.read(off, 128 << 10).await.unwrap();
            assert_eq!(data[..], expected(off, 128 << 10)[..]);
            off += data.len() as u64;
            if off % MIB == 0 {
                windows.push(r.window() / MIB);
            }
        }
        // The window doubles each time the reader enters a new block, then stays at the cap.
        assert_eq!(&windows[..6], [1, 2, 4, 8, 8, 8]);
        // Every block was fetched once, readahead included: the 16 MiB read and its
        // readahead take 12 GETs; a block fetched twice would be one more.
        assert_eq!(store.counts().get(RequestKind::Get), 12);
    }

    #[tokio::test]
    async fn a_sequential_reader_prefetches_in_large_gets() {
        let (store, r) = reader_with_window(32 * MIB).await;
        let mut off = 0;
        while off < 32 * MIB {
            let data = r.read(off, 1 << 20).await.unwrap();
            assert_eq!(data[..], expected(off, 1 << 20)[..]);
            off += data.len() as u64;
        }
        // Small GETs while the window opens (1, 2, 4 blocks), then 8 MiB ones: not a GET
        // per block.
        let gets = store.counts().get(RequestKind::Get);
        assert_eq!(gets, 8, "GETs for 32 blocks");
    }

    #[tokio::test]
    async fn reads_out_of_order_within_the_kernel_readahead_stay_sequential() {
        let (store, r) = reader_with_window(32 * MIB).await;
        // 1 MiB reads, each group of four answered in reverse, as async reads may come.
        for group in 0..8u64 {
            for i in (0..4u64).rev() {
                let off = (group * 4 + i) * MIB;
                let data = r.read(off, 1 << 20).await.unwrap();
                assert_eq!(data[..], expected(off, 1 << 20)[..]);
            }
        }
        assert_eq!(r.window(), 32 * MIB, "the window kept growing");
        let gets = store.counts().get(RequestKind::Get);
        assert_eq!(gets, 14, "GETs for 32 blocks");
    }

    #[tokio::test]
    async fn a_random_read_with_s3_near_fetches_only_its_piece() {
        let (store, r) = reader().await;
        // Near as loopback is, whatever a loaded machine makes an in-memory GET take.
        r.shared
            .link
            .pin(std::time::Duration::from_micros(100), None);
        for off in (0..4 * MIB).step_by(128 << 10) {
            r.read(off, 128 << 10).await.unwrap();
        }
        assert!(r.window() > MIB);
        let before = store.counts().get(RequestKind::Get);
        let data = r.read(20 * MIB + 5, 4096).await.unwrap();
        assert_eq!(data[..], expected(20 * MIB + 5, 4096)[..]);
        assert_eq!(r.window(), MIB, "a seek resets the window");
        assert_eq!(
            store.counts().get(RequestKind::Get) - before,
            1,
            "a random read fetches only its own piece"
        );
        assert_eq!(
            r.in_flight(),
            0,
            "prefetches of the old position were dropped"
        );
    }

    #[tokio::test]
    async fn a_random_read_with_s3_far_prefetches_the_region_around_it() {
        let (store, r) = reader_with_window(32 * MIB).await;
        store.set_latency(std::time::Duration::from_millis(20));
        // The first read measures the link: a piece, one round trip.
        r.read(20 * MIB + 5, 4096).await.unwrap();
        assert!(!r.shared.link.is_near());
        let before = store.counts().get(RequestKind::Get);
        let data = r.read(5 * MIB + 7, 4096).await.unwrap();
        assert_eq!(data[..], expected(5 * MIB + 7, 4096)[..]);
        // Its block, and the aligned 8 MiB around it (blocks 0-4 and 6-7) in the background:
        // waited for until they are cached, then counted.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !(0..8).all(|b| r.shared.cache.contains(&r.block_key(b))) {
            assert!(
                std::time::Instant::now() < deadline,
                "the region never arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(store.counts().get(RequestKind::Get) - before, 3);
        for off in [7, 2 * MIB + 100, 7 * MIB + 4000] {
            let data = r.read(off, 4096).await.unwrap();
            assert_eq!(data[..], expected(off, 4096)[..]);
        }
        assert_eq!(
            store.counts().get(RequestKind::Get) - before,
            3,
            "reads near the first were served from the cache"
        );
        assert_eq!(
            r.shared.readahead_budget.available_permits(),
            64,
            "arrived region blocks gave their budget back"
        );
    }

    /// [`reader`] with a disk cache in `dir` and the link pinned near, at `bandwidth`.
    async fn near_reader_on_disk(
        dir: &std::path::Path,
        bandwidth: u64,
    ) -> (Arc<MemoryStore>, FileReader) {
        reader_on_disk(
            dir,
            std::time::Duration::from_micros(100),
            bandwidth,
            8 * MIB,
        )
        .await
    }

    /// [`reader_with_window`] with a disk cache in `dir` and the link pinned.
    async fn reader_on_disk(
        dir: &std::path::Path,
        rtt: std::time::Duration,
        bandwidth: u64,
        max_readahead: u64,
    ) -> (Arc<MemoryStore>, FileReader) {
        let (store, r) = reader().await;
        let disk = DiskCache::open(dir, "loc", MIB, 1 << 30).unwrap();
        let shared = ReadShared::new(
            store.clone(),
            r.shared.cache.clone(),
            MIB,
            max_readahead,
            32,
            64,
        )
        .with_disk(Some(disk));
        shared.link.pin(rtt, Some(bandwidth));
        let r = FileReader::new(Arc::new(shared), "f".into(), r.etag.clone(), 32 * MIB);
        (store, r)
    }

    /// A sequential reader of a file the disk cache holds has its blocks read a GET's worth
    /// ahead (8 here), not a whole window (32): memory holds no more than that meanwhile.
    #[tokio::test]
    async fn a_sequential_reader_of_blocks_on_disk_holds_a_get_s_worth_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let far = std::time::Duration::from_millis(20);
        let (store, first) = reader_on_disk(dir.path(), far, 400_000_000, 32 * MIB).await;
        let whole = |r: FileReader| async move {
            let mut most = 0;
            for b in 0..32 {
                let data = r.read(b * MIB, MIB as u32).await.unwrap();
                assert_eq!(data[..], expected(b * MIB, MIB)[..]);
                most = most.max(r.in_flight());
            }
            most
        };
        let disk = first.shared.disk.clone().unwrap();
        let etag = first.etag.clone();
        assert!(whole(first).await >= 24, "from S3, a whole window ahead");
        assert!(disk.settle(std::time::Duration::from_secs(10)));
        // A later mount: the same disk cache, nothing in memory.
        let shared = ReadShared::new(
            store.clone(),
            Arc::new(BlockCache::new(64 * MIB)),
            MIB,
            32 * MIB,
            32,
            64,
        )
        .with_disk(Some(disk));
        shared.link.pin(far, Some(400_000_000));
        let gets = store.counts().get(RequestKind::Get);
        let again = FileReader::new(Arc::new(shared), "f".into(), etag, 32 * MIB);
        let most = whole(again).await;
        // (And up to the kernel's readahead behind: its reads may come out of order.)
        let behind = (KERNEL_READAHEAD / MIB) as usize + 1;
        assert!(most <= 8 + behind, "{most} blocks held");
        assert_eq!(store.counts().get(RequestKind::Get), gets, "all from disk");
    }

    fn budgeted(r: &FileReader) -> u64 {
        r.state.lock().unwrap().budgeted()
    }

    /// Two sequential readers share the budget: the first, alone, takes all of it; once a
    /// second reads too, the first takes no more until it is down to half, and the second
    /// gets what the first gives back.
    #[tokio::test]
    async fn sequential_readers_share_the_readahead_budget() {
        let store = Arc::new(MemoryStore::new("b", "p"));
        let body: Vec<u8> = (0..32 * MIB).map(|i| (i % 251) as u8).collect();
        let body = Bytes::from(body);
        let meta = UserMeta::new();
        let etag_a = store.put("a", body.clone(), &meta).await.unwrap();
        let etag_b = store.put("b", body, &meta).await.unwrap();
        // 16 blocks of budget; windows up to 32 MiB; a GET's worth is 8 blocks.
        let shared = Arc::new(ReadShared::new(
            store.clone(),
            Arc::new(BlockCache::new(64 * MIB)),
            MIB,
            32 * MIB,
            32,
            16,
        ));
        let a = FileReader::new(shared.clone(), "a".into(), etag_a, 32 * MIB);
        let b = FileReader::new(shared.clone(), "b".into(), etag_b, 32 * MIB);
        async fn read(r: &FileReader, block: u64) {
            let data = r.read(block * MIB, MIB as u32).await.unwrap();
            assert_eq!(data[..], expected(block * MIB, MIB)[..]);
        }
        for block in 0..8 {
            read(&a, block).await;
        }
        assert_eq!(budgeted(&a), 16, "alone, a reader takes the whole budget");
        read(&b, 0).await;
        for block in 8..20 {
            read(&a, block).await;
            assert!(budgeted(&a) <= 16, "never more than the budget");
        }
        assert!(
            budgeted(&a) <= 8,
            "{} blocks held beside another reader",
            budgeted(&a)
        );
        for block in 1..4 {
            read(&b, block).await;
        }
        assert!(
            budgeted(&b) >= 4,
            "the second reader prefetches: {} blocks",
            budgeted(&b)
        );
        drop(b);
        for block in 20..24 {
            read(&a, block).await;
        }
        assert!(
            budgeted(&a) > 8,
            "alone again, its share is the whole budget"
        );
    }

    /// Pages spread over the first `span` bytes (a fixed sequence).
    fn scattered(n: u64, span: u64) -> impl Iterator<Item = u64> {
        let pages = span / 4096 - 1;
        (0..n).map(move |i| (i.wrapping_mul(2_654_435_761) % pages) * 4096 + 7)
    }

    #[tokio::test]
    async fn a_dense_random_reader_has_its_region_fetched_then_reads_it_without_s3() {
        let dir = tempfile::tempdir().unwrap();
        // Fetching the 32 MiB span costs 0.34 ms at this bandwidth: a few misses pay for it.
        let (store, r) = near_reader_on_disk(dir.path(), 100_000_000_000).await;
        // Reads in the second and the last 8 MiB in turn: never two in a row near enough
        // to count as sequential (which would fetch blocks anyway), none at the start (a
        // reader from offset 0 is given a round trip's worth of blocks at once).
        let dense = |n| {
            scattered(n, 8 * MIB)
                .enumerate()
                .map(|(i, off)| off + if i % 2 == 1 { 24 * MIB } else { 8 * MIB })
        };
        let blocks: Vec<u64> = (8..16).chain(24..32).collect();
        let fetched = |r: &FileReader| {
            blocks.iter().all(|&b| {
                r.shared.on_disk(&r.block_key(b)) || r.shared.cache.contains(&r.block_key(b))
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // (A read across a block boundary fetches blocks anyway: so few reads that those
        // cannot have fetched the regions.)
        for off in dense(2_000) {
            if fetched(&r) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the regions were never fetched"
            );
            let data = r.read(off, 4096).await.unwrap();
            assert_eq!(data[..], expected(off, 4096)[..]);
        }
        assert!(fetched(&r), "the regions were not fetched");
        assert_eq!(r.shared.misses.bought("f", &r.etag), 2);
        let before = store.counts().get(RequestKind::Get);
        for off in dense(200) {
            let data = r.read(off + 100, 3000).await.unwrap();
            assert_eq!(data[..], expected(off + 100, 3000)[..]);
        }
        assert_eq!(
            store.counts().get(RequestKind::Get),
            before,
            "reads in the fetched regions cost no request"
        );
    }

    #[tokio::test]
    async fn a_sparse_random_reader_only_ever_fetches_its_pieces() {
        let dir = tempfile::tempdir().unwrap();
        // 32 MiB cost 32 s at 1 MB/s: far more than these misses ever wait.
        let (store, r) = near_reader_on_disk(dir.path(), 1_000_000).await;
        for off in scattered(100, 32 * MIB) {
            let data = r.read(off, 4096).await.unwrap();
            assert_eq!(data[..], expected(off, 4096)[..]);
        }
        assert_eq!(
            r.shared.misses.bought("f", &r.etag),
            0,
            "no region was worth it"
        );
        // Pieces, read by read (a read that lands just after another counts as sequential).
        assert!(store.counts().get(RequestKind::Get) >= 50);
    }

    #[tokio::test]
    async fn a_reader_from_the_start_with_s3_far_asks_a_round_trip_worth_at_once() {
        let (store, r) = reader_with_window(32 * MIB).await;
        // 20 ms at 400 MB/s: one GET brings 8 MB in a round trip.
        r.shared
            .link
            .pin(std::time::Duration::from_millis(20), Some(400_000_000));
        let data = r.read(0, 4096).await.unwrap();
        assert_eq!(data[..], expected(0, 4096)[..]);
        assert!(r.window() >= 7 * MIB, "window {}", r.window());
        // The first block, and the next ones in one GET, on their way at once.
        assert!(r.in_flight() >= 7, "{} blocks asked for", r.in_flight());
        let gets = store.counts().get(RequestKind::Get);
        assert!(gets <= 2, "{gets} GETs");
    }

    #[tokio::test]
    async fn reads_across_blocks_and_past_the_end() {
        let (_, r) = reader().await;
        let data = r.read(MIB - 10, 20).await.unwrap();
        assert_eq!(data[..], expected(MIB - 10, 20)[..]);
        let tail = r.read(32 * MIB - 3, 100).await.unwrap();
        assert_eq!(tail.len(), 3);
        assert!(r.read(32 * MIB, 100).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_replaced_object_fails_instead_of_mixing_versions() {
        let (store, r) = reader().await;
        store
            .put("f", Bytes::from_static(b"new"), &UserMeta::new())
            .await
            .unwrap();
        let err = r.read(0, 10).await.unwrap_err();
        assert!(matches!(*err, StoreError::Changed));
    }
}
