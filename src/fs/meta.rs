//! Object user metadata ⇄ file attributes: the one place that knows which `x-amz-meta-*`
//! keys cognifs reads and writes, and their formats.
//!
//! - `mtime`: seconds since the epoch, optionally with a fraction (`secs.nanos`, written
//!   with nine digits; rclone's float seconds read the same way).
//! - `mode`: permission bits in octal (`644`).
//!
//! Keys cognifs does not know are not interpreted; files written without metadata (by the
//! console, `aws s3 cp`, a web app) show Last-Modified and the mount's default mode.

use std::time::{Duration, SystemTime};

use crate::store::UserMeta;

const MTIME: &str = "mtime";
const MODE: &str = "mode";

/// The attributes cognifs keeps on an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub mtime: Option<SystemTime>,
    /// Permission bits (no type bits).
    pub mode: Option<u32>,
}

impl Meta {
    /// Reads what it knows from an object's metadata; unreadable values count as absent.
    pub fn from_user(user: &UserMeta) -> Self {
        Meta {
            mtime: user.get(MTIME).and_then(|v| parse_mtime(v)),
            mode: user.get(MODE).and_then(|v| parse_mode(v)),
        }
    }

    /// The metadata to store with an object.
    pub fn to_user(self) -> UserMeta {
        let mut m = UserMeta::new();
        if let Some(t) = self.mtime {
            m.insert(MTIME.to_owned(), format_mtime(t));
        }
        if let Some(mode) = self.mode {
            m.insert(MODE.to_owned(), format!("{:o}", mode & 0o7777));
        }
        m
    }
}

/// Parses `x-amz-meta-mtime`: `secs` or `secs.fraction` (up to nine digits).
pub fn parse_mtime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    let nanos = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{frac:0<9}").parse().ok()?
    };
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Formats `x-amz-meta-mtime` as `secs.nanos` (nanos zero-padded to 9 digits).
pub fn format_mtime(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Parses `x-amz-meta-mode` (octal permission bits).
pub fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim(), 8).ok().map(|m| m & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_parses_seconds_and_nanos() {
        let t = |s, n| SystemTime::UNIX_EPOCH + Duration::new(s, n);
        assert_eq!(parse_mtime("12"), Some(t(12, 0)));
        assert_eq!(parse_mtime("12.5"), Some(t(12, 500_000_000)));
        assert_eq!(parse_mtime("12.000000001"), Some(t(12, 1)));
        assert_eq!(parse_mtime("x"), None);
        assert_eq!(parse_mtime("1.0000000001"), None);
        assert_eq!(parse_mtime("-1"), None);
    }

    #[test]
    fn metadata_round_trips() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(12, 5);
        assert_eq!(format_mtime(t), "12.000000005");
        assert_eq!(parse_mtime(&format_mtime(t)), Some(t));
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("x"), None);
        let meta = Meta {
            mtime: Some(t),
            mode: Some(0o600),
        };
        let user = meta.to_user();
        assert_eq!(user["mode"], "600");
        assert_eq!(Meta::from_user(&user), meta);
        assert!(Meta::default().to_user().is_empty());
        let junk = UserMeta::from([("mode".to_owned(), "rwx".to_owned())]);
        assert_eq!(Meta::from_user(&junk), Meta::default());
    }
}
