//! What the mount has measured of its link to S3: the round trip of a GET (to its first
//! bytes) and the bandwidth of one GET stream, as moving averages. Random reads size their
//! fetches by them: when S3 is near (a round trip under [`NEAR_RTT`]) a miss fetches just
//! the piece it needs, because a whole block costs more than the round trip; when it is
//! far, a miss also prefetches the bytes one more GET brings in about a round trip (the
//! bandwidth-delay product), which nearby reads then find cached, because a round trip per
//! read is what costs there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A round trip under this is a near S3 (loopback, a LAN); real S3 answers a GET's first
/// bytes in 10 to 50 ms.
pub const NEAR_RTT: Duration = Duration::from_millis(2);

/// The shortest transfer a bandwidth sample is taken from.
const MIN_TRANSFER: Duration = Duration::from_millis(1);

/// Moving averages (1/8 weight per sample); 0 until measured. Races between updates
/// lose a sample at most.
#[derive(Default)]
pub struct LinkEstimate {
    rtt_us: AtomicU64,
    bytes_per_sec: AtomicU64,
    /// Tests: measurements no longer move the estimate ([`LinkEstimate::pin`]).
    #[cfg(test)]
    pinned: std::sync::atomic::AtomicBool,
}

fn blend(slot: &AtomicU64, sample: u64) {
    let old = slot.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        (old * 7 + sample) / 8
    };
    slot.store(new.max(1), Ordering::Relaxed);
}

impl LinkEstimate {
    /// One GET of `len` bytes: its first piece (`first_len` bytes) arrived after `first`,
    /// the whole after `total`.
    pub fn record(&self, first: Duration, first_len: u64, total: Duration, len: u64) {
        #[cfg(test)]
        if self.pinned.load(Ordering::Relaxed) {
            return;
        }
        // The rest of the body must have taken a while to say anything: a body that came
        // in one burst (buffered on the way) tells nothing of the bandwidth.
        if len > first_len && total >= first + MIN_TRANSFER {
            let rest = (total - first).as_secs_f64();
            blend(
                &self.bytes_per_sec,
                ((len - first_len) as f64 / rest) as u64,
            );
        }
        // The first piece's transfer is not round trip: take out what the bandwidth says.
        let transfer = match self.bandwidth() {
            Some(bw) => Duration::from_secs_f64(first_len as f64 / bw as f64),
            None => Duration::ZERO,
        };
        blend(
            &self.rtt_us,
            first.saturating_sub(transfer).as_micros() as u64,
        );
    }

    pub fn rtt(&self) -> Option<Duration> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub fn bandwidth(&self) -> Option<u64> {
        match self.bytes_per_sec.load(Ordering::Relaxed) {
            0 => None,
            bw => Some(bw),
        }
    }

    /// Whether S3 is near: unmeasured counts as near, so the first random read fetches a
    /// small piece and measures.
    pub fn is_near(&self) -> bool {
        self.rtt().is_none_or(|rtt| rtt < NEAR_RTT)
    }

    /// Tests: the link as given, whatever the GETs measure from now on (a loaded machine
    /// must not decide what a test of the near or far path sees).
    #[cfg(test)]
    pub fn pin(&self, rtt: Duration, bytes_per_sec: Option<u64>) {
        self.rtt_us
            .store(rtt.as_micros().max(1) as u64, Ordering::Relaxed);
        self.bytes_per_sec
            .store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
        self.pinned.store(true, Ordering::Relaxed);
    }

    /// Bytes one GET stream brings in a round trip; `None` until both are measured.
    pub fn bandwidth_delay(&self) -> Option<u64> {
        Some((self.rtt()?.as_secs_f64() * self.bandwidth()? as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn round_trip_and_bandwidth_come_from_the_pieces_timing() {
        let link = LinkEstimate::default();
        assert!(link.is_near(), "unmeasured counts as near");
        // 8 MiB: the first MiB after 21 ms, the rest 7 ms later (1 MiB per ms).
        link.record(21 * MS, 1 << 20, 28 * MS, 8 << 20);
        assert_eq!(link.bandwidth(), Some(((1u64 << 20) as f64 / 1e-3) as u64));
        // Next time the first piece's transfer (1 ms) is not counted as round trip.
        let link2 = LinkEstimate::default();
        link2.record(21 * MS, 1 << 20, 28 * MS, 8 << 20);
        link2.record(21 * MS, 1 << 20, 28 * MS, 8 << 20);
        let rtt = link2.rtt().unwrap();
        assert!(rtt > 19 * MS && rtt < 21 * MS, "{rtt:?}");
        assert!(!link2.is_near());
        let bdp = link2.bandwidth_delay().unwrap();
        assert!(bdp > 19 << 20 && bdp < 21 << 20, "{bdp}");
    }

    #[test]
    fn a_small_quick_get_is_near() {
        let link = LinkEstimate::default();
        link.record(
            Duration::from_micros(300),
            65536,
            Duration::from_micros(300),
            65536,
        );
        assert!(link.is_near());
        assert_eq!(link.bandwidth_delay(), None, "no bandwidth measured yet");
    }
}
