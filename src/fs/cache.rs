//! LRU block cache under a byte budget.
//!
//! Keys carry the etag, so a block of an object that has since been replaced is never
//! served: the new version has a different key and the old blocks simply age out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// Path relative to the mount's prefix.
    pub key: String,
    pub etag: String,
    pub block: u64,
}

pub struct BlockCache {
    budget: u64,
    inner: Mutex<Inner>,
    /// Lookups by [`BlockCache::get`] that found the block, and that did not.
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner {
    lru: LruCache<BlockKey, Bytes>,
    bytes: u64,
}

impl BlockCache {
    pub fn new(budget_bytes: u64) -> Self {
        BlockCache {
            budget: budget_bytes,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The block, if cached; counted as a hit or a miss.
    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let found = self.inner.lock().unwrap().lru.get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// (hits, misses) of [`BlockCache::get`] so far.
    pub fn lookups(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.inner.lock().unwrap().lru.contains(key)
    }

    /// Inserts and evicts least-recently-used blocks until the budget holds again. A block
    /// larger than the whole budget is not kept.
    pub fn insert(&self, key: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        if len > self.budget {
            return;
        }
        let mut inner = self.inner.lock().unwrap();
        if let Some(old) = inner.lru.put(key, data) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += len;
        while inner.bytes > self.budget {
            match inner.lru.pop_lru() {
                Some((_, evicted)) => inner.bytes -= evicted.len() as u64,
                None => break,
            }
        }
    }

    /// Bytes currently held.
    pub fn used(&self) -> u64 {
        self.inner.lock().unwrap().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(block: u64) -> BlockKey {
        BlockKey {
            key: "f".into(),
            etag: "\"e\"".into(),
            block,
        }
    }

    #[test]
    fn evicts_least_recently_used_under_budget() {
        let c = BlockCache::new(30);
        c.insert(k(0), Bytes::from(vec![0; 10]));
        c.insert(k(1), Bytes::from(vec![1; 10]));
        c.insert(k(2), Bytes::from(vec![2; 10]));
        assert!(c.get(&k(0)).is_some()); // 0 is now most recent
        c.insert(k(3), Bytes::from(vec![3; 10]));
        assert_eq!(c.used(), 30);
        assert!(c.get(&k(1)).is_none(), "1 was least recently used");
        assert!(c.get(&k(0)).is_some() && c.get(&k(2)).is_some() && c.get(&k(3)).is_some());
        c.insert(k(9), Bytes::from(vec![9; 31]));
        assert!(!c.contains(&k(9)), "larger than the budget");
        assert_eq!(c.used(), 30);
        assert_eq!(c.budget(), 30);
    }

    #[test]
    fn lookups_count_hits_and_misses() {
        let c = BlockCache::new(100);
        assert_eq!(c.lookups(), (0, 0));
        assert!(c.get(&k(0)).is_none());
        c.insert(k(0), Bytes::from_static(b"abc"));
        assert!(c.get(&k(0)).is_some());
        assert!(c.get(&k(0)).is_some());
        assert!(!c.contains(&k(1)), "contains is no lookup: not counted");
        assert_eq!(c.lookups(), (2, 1));
    }

    #[test]
    fn etag_is_part_of_the_key() {
        let c = BlockCache::new(100);
        c.insert(k(0), Bytes::from_static(b"old"));
        let mut other = k(0);
        other.etag = "\"new\"".into();
        assert!(c.get(&other).is_none());
    }
}
