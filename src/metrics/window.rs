//! Counts over the last minute: a ring of per-second buckets.

use std::sync::Mutex;
use std::time::Instant;

/// Seconds a [`Window`] covers.
pub const WINDOW_SECS: u64 = 60;

/// How many events happened in the last [`WINDOW_SECS`] seconds. Each bucket remembers the
/// second it counts, so a bucket left over from an earlier lap of the ring is ignored
/// (and reset when that slot is next written).
pub struct Window {
    base: Instant,
    ring: Mutex<[(u64, u64); WINDOW_SECS as usize]>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            base: Instant::now(),
            // Second u64::MAX: never "current", so an untouched slot counts nothing.
            ring: Mutex::new([(u64::MAX, 0); WINDOW_SECS as usize]),
        }
    }
}

impl Window {
    fn now(&self) -> u64 {
        self.base.elapsed().as_secs()
    }

    pub fn add(&self, n: u64) {
        self.add_at(self.now(), n);
    }

    /// Events in the last minute, this second included.
    pub fn sum(&self) -> u64 {
        self.sum_at(self.now())
    }

    /// `n` events in second `sec` (seconds since the window was made).
    pub fn add_at(&self, sec: u64, n: u64) {
        let mut ring = self.ring.lock().unwrap();
        let slot = &mut ring[(sec % WINDOW_SECS) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += n;
    }

    /// Events in seconds `sec - 59 ..= sec`.
    pub fn sum_at(&self, sec: u64) -> u64 {
        let oldest = sec.saturating_sub(WINDOW_SECS - 1);
        let ring = self.ring.lock().unwrap();
        ring.iter()
            .filter(|(s, _)| *s != u64::MAX && *s >= oldest && *s <= sec)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_last_sixty_seconds() {
        let w = Window::default();
        assert_eq!(w.sum_at(0), 0);
        w.add_at(0, 2);
        w.add_at(0, 1);
        w.add_at(30, 5);
        assert_eq!(w.sum_at(30), 8);
        assert_eq!(w.sum_at(59), 8, "second 0 is still inside at 59");
        assert_eq!(w.sum_at(60), 5, "second 0 has left the window");
        assert_eq!(w.sum_at(89), 5);
        assert_eq!(w.sum_at(90), 0);
        // Slot 0 again, one lap later: the old count is replaced, not added to.
        w.add_at(120, 4);
        assert_eq!(w.sum_at(120), 4);
        assert_eq!(w.sum_at(179), 4);
        assert_eq!(w.sum_at(1000), 0);
    }

    #[test]
    fn the_real_clock_counts_now() {
        let w = Window::default();
        w.add(3);
        w.add(1);
        assert_eq!(w.sum(), 4);
    }
}
