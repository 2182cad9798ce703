//! Wall-clock time in whole Unix seconds, the unit token expiries and mount records store.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 rather than a panic if the clock reads before 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
