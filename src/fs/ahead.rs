//! What a lookup fetched ahead for the listing likely to follow (a directory's first LIST
//! page, its listing index): kept for the metadata TTL, a bounded number at once, and taken
//! by the listing that uses it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) struct Ahead<K, V> {
    kept: Mutex<HashMap<K, (Instant, V)>>,
    most: usize,
}

impl<K: Eq + Hash, V> Ahead<K, V> {
    /// At most `most` kept at once.
    pub fn new(most: usize) -> Self {
        Ahead {
            kept: Mutex::new(HashMap::new()),
            most,
        }
    }

    /// Keeps `value` for `key` (what `key` had goes), unless `most` values younger than
    /// `ttl` are kept already; whether it was kept.
    pub fn keep(&self, key: K, value: V, ttl: Duration) -> bool {
        self.keep_with(key, value, ttl, true)
    }

    /// [`Ahead::keep`], but only if nothing younger than `ttl` is kept for `key` yet.
    pub fn keep_new(&self, key: K, value: V, ttl: Duration) -> bool {
        self.keep_with(key, value, ttl, false)
    }

    fn keep_with(&self, key: K, value: V, ttl: Duration, replace: bool) -> bool {
        let mut kept = self.kept.lock().unwrap();
        kept.retain(|_, (at, _)| at.elapsed() < ttl);
        if kept.len() >= self.most || (!replace && kept.contains_key(&key)) {
            return false;
        }
        kept.insert(key, (Instant::now(), value));
        true
    }

    /// What is kept for `key`, if it is younger than `ttl`; it is kept no longer.
    pub fn take(&self, key: &K, ttl: Duration) -> Option<V> {
        let (at, value) = self.kept.lock().unwrap().remove(key)?;
        (at.elapsed() < ttl).then_some(value)
    }

    /// Drops what is kept for `key` (the directory left the inode table).
    pub fn forget(&self, key: &K) {
        self.kept.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_values_are_bounded_taken_once_and_expire() {
        let ahead: Ahead<u32, &str> = Ahead::new(2);
        let ttl = Duration::from_secs(60);
        assert!(ahead.keep(1, "a", ttl));
        assert!(
            !ahead.keep_new(1, "b", ttl),
            "keep_new leaves what is there"
        );
        assert!(ahead.keep(1, "c", ttl), "keep replaces it");
        assert!(ahead.keep(2, "d", ttl));
        assert!(!ahead.keep(3, "e", ttl), "bounded");
        assert_eq!(ahead.take(&1, ttl), Some("c"));
        assert_eq!(ahead.take(&1, ttl), None, "taken once");
        ahead.forget(&2);
        assert_eq!(ahead.take(&2, ttl), None);
        assert!(ahead.keep(3, "e", Duration::ZERO));
        assert_eq!(ahead.take(&3, Duration::ZERO), None, "expired");
        // Expired values make room.
        assert!(ahead.keep(4, "f", ttl) && ahead.keep(5, "g", Duration::ZERO));
        assert!(ahead.keep(6, "h", ttl), "the expired one went");
    }
}
