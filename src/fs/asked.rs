//! When an answer from S3 can be trusted, by when its request was sent ([`Asked`]).
//!
//! Against this mount's own writes: an answer is older than a write of ours that finished
//! after the request was sent (a HEAD that read a directory's marker just before the times
//! written behind replaced it), so it must not be recorded over what that write left, in the
//! inode table or in the disk cache of HEADs; each remembers when this mount last wrote each
//! entry ([`RecentWrites`]).
//!
//! Against everyone's writes, for what is kept by version (the disk cache of HEADs, listing
//! indexes): S3 dates a version to the second, and a metadata change keeps the etag (a
//! directory marker's is every empty object's), so two writes within one second (`mkdir` then
//! `chmod`, on any machine) can look like one version holding two metadata. A HEAD sent
//! after that second read a version no later write can share: only such an answer is kept
//! by version ([`Asked::settled`]; a second more for the clocks of S3 and this machine to
//! differ).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant, SystemTime};

/// How long after the second of a version's Last-Modified a HEAD must have been sent for
/// its answer to stand for that version.
pub const SETTLED: Duration = Duration::from_secs(2);

/// The second S3 dates a version to (HEAD and listings share that precision).
pub fn version_second(last_modified: SystemTime) -> u64 {
    last_modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When a request to S3 was sent.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    at: Instant,
    wall: SystemTime,
}

impl Asked {
    pub fn now() -> Self {
        Asked {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Whether the answer describes the version last modified at `last_modified` alone: no
    /// write after it can carry the same etag and second.
    pub fn settled(&self, last_modified: SystemTime) -> bool {
        let second = version_second(last_modified);
        self.wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .is_ok_and(|d| d >= Duration::from_secs(second) + SETTLED)
    }
}

/// This mount's latest write of each entry it wrote lately, within a bound: past it the
/// older half is forgotten, and answers asked before the newest of those are held stale for
/// every entry (they cost a request later, never a wrong answer).
pub struct RecentWrites<K> {
    written: HashMap<K, Instant>,
    /// Writes before this are forgotten.
    since: Instant,
    kept: usize,
}

impl<K: Hash + Eq> RecentWrites<K> {
    pub fn new(kept: usize) -> Self {
        RecentWrites {
            written: HashMap::new(),
            since: Instant::now(),
            kept: kept.max(2),
        }
    }

    /// This mount wrote `key` just now (the write is done).
    pub fn wrote(&mut self, key: K) {
        if self.written.len() >= self.kept {
            let mut times: Vec<Instant> = self.written.values().copied().collect();
            let (_, &mut median, _) = times.select_nth_unstable(self.kept / 2);
            self.written.retain(|_, t| *t > median);
            self.since = median;
        }
        self.written.insert(key, Instant::now());
    }

    /// Whether an answer about `key` to a request sent at `asked` is older than this
    /// mount's last write of it.
    pub fn stale<Q>(&self, key: &Q, asked: Asked) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        asked.at <= self.since || self.written.get(key).is_some_and(|&w| asked.at <= w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next reading of the clock is later than the last (whatever its resolution).
    fn tick() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }

    #[test]
    fn an_answer_asked_before_a_write_is_stale_and_one_asked_after_is_not() {
        let mut recent = RecentWrites::new(8);
        let before = Asked::now();
        tick();
        recent.wrote("a");
        tick();
        let after = Asked::now();
        assert!(recent.stale(&"a", before));
        assert!(!recent.stale(&"a", after));
        assert!(!recent.stale(&"b", before), "another entry's answer stands");
    }

    #[test]
    fn past_the_bound_older_answers_are_stale_for_every_entry() {
        let mut recent = RecentWrites::new(4);
        let early = Asked::now();
        for key in 0..4 {
            tick();
            recent.wrote(key);
        }
        tick();
        let between = Asked::now();
        tick();
        recent.wrote(4);
        assert!(recent.written.len() <= 4, "bounded");
        assert!(
            recent.stale(&99, early),
            "asked before forgotten writes: stale"
        );
        assert!(!recent.stale(&99, between), "asked after them: not");
        assert!(recent.stale(&4, between), "the newest write is still known");
        assert!(
            !recent.stale(&3, between),
            "a kept write before the question: not"
        );
    }

    #[test]
    fn an_answer_stands_for_a_version_only_when_asked_after_its_second() {
        let asked = Asked::now();
        let second = |ago: u64| {
            let now = asked.wall.duration_since(SystemTime::UNIX_EPOCH).unwrap();
            SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() - ago)
        };
        assert!(!asked.settled(second(0)), "written this second");
        assert!(
            !asked.settled(second(1)),
            "the clocks may differ by a second"
        );
        assert!(asked.settled(second(2)));
        assert!(asked.settled(SystemTime::UNIX_EPOCH));
        assert!(
            !asked.settled(SystemTime::now() + Duration::from_secs(60)),
            "S3 ahead"
        );
    }
}
