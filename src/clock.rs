//! Wall-clock time in whole Unix seconds, the unit token expiries and mount records store.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 rather than a panic if the clock reads before 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The UTC calendar date and time of day of `unix`: (year, month, day, hour, minute,
/// second). Days since 1970-01-01 to a civil date by Howard Hinnant's algorithm.
pub fn utc_parts(unix: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (unix / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = unix % 86_400;
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}
