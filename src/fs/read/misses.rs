//! When a random reader should stop paying a round trip per read and have the regions it
//! reads in fetched instead: the rent-or-buy rule.
//!
//! With S3 near, a random read fetches its own pages only (`read.rs`): a whole block would
//! cost more than the round trip. Each such miss costs its wait (the rent). Fetching the span
//! the misses fall in would cost that span's bytes at the measured bandwidth, once (the
//! purchase). Nobody knows how many reads are still to come, so the rule is the classic one
//! for that: keep paying per read until the misses of a version have cost as much as fetching
//! their span would; from then on, each further miss also has the aligned region around it
//! (one GET's worth) fetched in the background into the caches, disk included. Its cost is
//! never more than twice that of the better choice in hindsight: a sparse reader (a few seeks
//! in a large file) never pays for neighbourhoods it does not use, and a dense one (many
//! reads over a bounded region) soon reads from disk instead of paying round trips. With S3
//! far, a random read already brings in the region one GET fetches in a round trip; the rule
//! is not applied there (making that region the largest the readahead allows once misses had
//! cost their span measured worse: 500 reads over 512 MiB at 20 ms, 216 IOPS against 275).
//!
//! Bounded: at most [`MAX_VERSIONS`] versions tracked (the oldest forgotten), regions bought
//! per version within a byte limit the caller gives (half the disk cache).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Versions whose misses are tracked at once.
const MAX_VERSIONS: usize = 256;
/// Misses after which, the bandwidth never having been measured (only pieces fetched), one
/// region is fetched to measure it.
const PROBE_AFTER: u64 = 16;

#[derive(Default)]
struct Record {
    count: u64,
    /// Time the misses waited, summed.
    spent: Duration,
    /// The lowest and highest block missed.
    lo: u64,
    hi: u64,
    /// Regions fetched (by index), so that each is fetched once.
    bought: HashSet<u64>,
}

/// A version: key and etag.
type Version = (String, String);

/// The random misses of the versions read lately.
#[derive(Default)]
pub struct Misses {
    /// The records, and the versions in the order they were first missed.
    state: Mutex<(HashMap<Version, Record>, VecDeque<Version>)>,
}

/// What [`Misses::buy`] needs to know of the mount.
pub struct Terms {
    pub block_size: u64,
    /// Blocks of a region (one GET's worth).
    pub region_blocks: u64,
    /// Bytes per second of one GET, if measured.
    pub bandwidth: Option<u64>,
    /// Bytes of regions one version may have fetched.
    pub limit: u64,
}

impl Misses {
    /// Notes that a random read of `block` of version `etag` of `rel` missed every cache and
    /// waited `took` for its piece.
    pub fn note(&self, rel: &str, etag: &str, block: u64, took: Duration) {
        let mut guard = self.state.lock().unwrap();
        let (records, order) = &mut *guard;
        let key = (rel.to_owned(), etag.to_owned());
        let record = match records.get_mut(&key) {
            Some(r) => r,
            None => {
                if order.len() >= MAX_VERSIONS
                    && let Some(oldest) = order.pop_front()
                {
                    records.remove(&oldest);
                }
                order.push_back(key.clone());
                records.entry(key).or_insert(Record {
                    lo: block,
                    hi: block,
                    ..Record::default()
                })
            }
        };
        record.count += 1;
        record.spent += took;
        record.lo = record.lo.min(block);
        record.hi = record.hi.max(block);
    }

    /// The blocks of the region around `block` to fetch now, if the misses so far say so
    /// (see the module's text); the region is then counted as fetched.
    pub fn buy(&self, rel: &str, etag: &str, block: u64, terms: &Terms) -> Option<(u64, u64)> {
        let mut guard = self.state.lock().unwrap();
        let record = guard.0.get_mut(&(rel.to_owned(), etag.to_owned()))?;
        let region_blocks = terms.region_blocks.max(1);
        let region = block / region_blocks;
        let region_bytes = region_blocks * terms.block_size;
        if record.bought.contains(&region)
            || (record.bought.len() as u64 + 1) * region_bytes > terms.limit
        {
            return None;
        }
        let worth = match terms.bandwidth {
            Some(bw) if bw > 0 => {
                let span = (record.hi - record.lo + 1) * terms.block_size;
                record.spent.as_secs_f64() >= span as f64 / bw as f64
            }
            // Never measured: one region fetched measures it.
            _ => record.count >= PROBE_AFTER && record.bought.is_empty(),
        };
        if !worth {
            return None;
        }
        record.bought.insert(region);
        let first = region * region_blocks;
        Some((first, first + region_blocks - 1))
    }
}

#[cfg(test)]
impl Misses {
    /// Regions bought for a version so far.
    pub fn bought(&self, rel: &str, etag: &str) -> usize {
        let guard = self.state.lock().unwrap();
        guard
            .0
            .get(&(rel.to_owned(), etag.to_owned()))
            .map_or(0, |r| r.bought.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn terms(bandwidth: Option<u64>) -> Terms {
        Terms {
            block_size: MIB,
            region_blocks: 8,
            bandwidth,
            limit: 64 * MIB,
        }
    }

    #[test]
    fn misses_that_cost_less_than_their_span_buy_nothing() {
        let m = Misses::default();
        // 256 MiB at 1 GB/s is 0.27 s; 100 misses of 1 ms are 0.1 s.
        for i in 0..100 {
            m.note("f", "e", (i * 37) % 256, Duration::from_millis(1));
        }
        assert_eq!(m.buy("f", "e", 100, &terms(Some(1_000_000_000))), None);
        assert_eq!(m.buy("other", "e", 100, &terms(Some(1_000_000_000))), None);
    }

    #[test]
    fn once_the_misses_cost_the_span_each_region_is_bought_once_within_the_limit() {
        let m = Misses::default();
        for i in 0..300 {
            m.note("f", "e", (i * 37) % 256, Duration::from_millis(1));
        }
        let t = terms(Some(1_000_000_000));
        assert_eq!(m.buy("f", "e", 100, &t), Some((96, 103)));
        assert_eq!(m.buy("f", "e", 101, &t), None, "a region is bought once");
        // Another version of the same key is another record.
        assert_eq!(m.buy("f", "e2", 100, &t), None);
        // 64 MiB of 8 MiB regions: seven more, then no more.
        let more: Vec<_> = (0..32).filter_map(|r| m.buy("f", "e", r * 8, &t)).collect();
        assert_eq!(more.len(), 7);
    }

    #[test]
    fn an_unmeasured_link_is_measured_by_one_region() {
        let m = Misses::default();
        for i in 0..PROBE_AFTER {
            assert_eq!(m.buy("f", "e", i, &terms(None)), None);
            m.note("f", "e", i * 10, Duration::from_millis(1));
        }
        assert!(m.buy("f", "e", 50, &terms(None)).is_some());
        assert_eq!(m.buy("f", "e", 90, &terms(None)), None, "one probe only");
    }

    #[test]
    fn tracking_is_bounded() {
        let m = Misses::default();
        for v in 0..(MAX_VERSIONS as u64 + 10) {
            m.note("f", &v.to_string(), 0, Duration::from_millis(1));
        }
        let guard = m.state.lock().unwrap();
        assert_eq!(guard.0.len(), MAX_VERSIONS);
        assert!(!guard.0.contains_key(&("f".to_owned(), "0".to_owned())));
    }
}
