//! Object user metadata ⇄ file attributes: the one place that knows which `x-amz-meta-*`
//! keys cognifs reads and writes, and their formats.
//!
//! cognifs writes s3fs's keys and formats, so a bucket reads the same through s3fs:
//!
//! | key | format |
//! |---|---|
//! | `mode` | decimal `st_mode`, type bits included (`33188` = regular file 0644) |
//! | `uid`, `gid` | decimal |
//! | `mtime`, `atime`, `ctime` | seconds since the epoch, `secs` or `secs.nnnnnnnnn` (nanoseconds, nine digits) |
//! | `rdev` | decimal device number (character and block devices) |
//! | `xattr` | URL-encoded `{"name":"base64(value)",…}` |
//!
//! It also reads what other tools write: rclone's `mtime` as float seconds (`12.5`), AWS
//! DataSync / FSx for Lustre's `file-permissions` (octal with type bits), `file-owner`,
//! `file-group`, `file-mtime`/`file-atime` (nanoseconds, optionally suffixed `ns`), and the
//! `mode` cognifs wrote before it used s3fs's format (octal permission bits only, no type
//! bits: a `mode` whose decimal value has no type bits is read that way).
//!
//! Keys cognifs does not know are kept when it rewrites an object's metadata. Objects with
//! no metadata (uploaded by the console, `aws s3 cp`, a web app) show Last-Modified and the
//! mount's default owner and modes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::store::{UserMeta, percent_encode};

/// S3's limit on user metadata per object: keys and values, in bytes.
pub const MAX_USER_META_BYTES: usize = 2048;

const MODE: &str = "mode";
const UID: &str = "uid";
const GID: &str = "gid";
const MTIME: &str = "mtime";
const ATIME: &str = "atime";
const CTIME: &str = "ctime";
const RDEV: &str = "rdev";
const XATTR: &str = "xattr";
/// Keys only read (other tools'), never written.
const FOREIGN: [&str; 5] = [
    "file-permissions",
    "file-owner",
    "file-group",
    "file-mtime",
    "file-atime",
];

/// The attributes an object's metadata holds. `None`: not stored (the mount shows its
/// default, or Last-Modified for times).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// `st_mode`; the type bits may be zero when a tool stored permission bits only.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
    pub ctime: Option<SystemTime>,
    pub rdev: Option<u32>,
    /// Extended attributes by full name (`user.foo`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Keys cognifs does not interpret, kept as they are.
    pub other: UserMeta,
}

impl Meta {
    /// Reads what it knows from an object's metadata; unreadable values count as absent.
    pub fn from_user(user: &UserMeta) -> Self {
        let get = |k: &str| user.get(k).map(String::as_str);
        let mode = get(MODE)
            .and_then(parse_mode)
            .or_else(|| get("file-permissions").and_then(parse_octal));
        let ns = |k: &str| get(k).and_then(parse_nanos);
        Meta {
            mode,
            uid: get(UID)
                .or(get("file-owner"))
                .and_then(|v| v.trim().parse().ok()),
            gid: get(GID)
                .or(get("file-group"))
                .and_then(|v| v.trim().parse().ok()),
            mtime: get(MTIME).and_then(parse_time).or_else(|| ns("file-mtime")),
            atime: get(ATIME).and_then(parse_time).or_else(|| ns("file-atime")),
            ctime: get(CTIME).and_then(parse_time),
            rdev: get(RDEV).and_then(|v| v.trim().parse().ok()),
            xattrs: get(XATTR).map(parse_xattrs).unwrap_or_default(),
            other: user
                .iter()
                .filter(|(k, _)| {
                    ![MODE, UID, GID, MTIME, ATIME, CTIME, RDEV, XATTR].contains(&k.as_str())
                        && !FOREIGN.contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The metadata to store with an object.
    pub fn to_user(&self) -> UserMeta {
        let mut m = self.other.clone();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put(MODE, self.mode.map(|v| v.to_string()));
        put(UID, self.uid.map(|v| v.to_string()));
        put(GID, self.gid.map(|v| v.to_string()));
        put(MTIME, self.mtime.map(format_time));
        put(ATIME, self.atime.map(format_time));
        put(CTIME, self.ctime.map(format_time));
        put(RDEV, self.rdev.map(|v| v.to_string()));
        if !self.xattrs.is_empty() {
            put(XATTR, Some(format_xattrs(&self.xattrs)));
        }
        m
    }

    /// Bytes S3 counts against its 2 KiB limit for this metadata.
    pub fn stored_size(&self) -> usize {
        self.to_user().iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The type bits of `mode` (`0` when unknown).
    pub fn file_type(&self) -> u32 {
        self.mode.unwrap_or(0) & libc::S_IFMT
    }

    /// Permission bits (with setuid, setgid and sticky), if stored.
    pub fn perm(&self) -> Option<u32> {
        self.mode.map(|m| m & 0o7777)
    }
}

/// `mode`: decimal `st_mode` (s3fs); a value without type bits is cognifs' earlier octal
/// permission bits.
fn parse_mode(s: &str) -> Option<u32> {
    let s = s.trim();
    let decimal: u32 = s.parse().ok()?;
    if decimal & libc::S_IFMT != 0 {
        return Some(decimal);
    }
    parse_octal(s).map(|m| m & 0o7777)
}

fn parse_octal(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim(), 8).ok()
}

/// `secs` or `secs.fraction`: the fraction is decimal (rclone's `12.5` is half a second;
/// s3fs's nine digits are nanoseconds).
pub fn parse_time(s: &str) -> Option<SystemTime> {
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

/// s3fs's format: `secs`, or `secs.nnnnnnnnn` when there are nanoseconds.
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    match d.subsec_nanos() {
        0 => d.as_secs().to_string(),
        n => format!("{}.{n:09}", d.as_secs()),
    }
}

/// DataSync's nanoseconds since the epoch, optionally suffixed `ns`.
fn parse_nanos(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let n: u64 = s.strip_suffix("ns").unwrap_or(s).parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(n))
}

/// Whether s3fs's layout can hold an attribute name: its parser splits on `,` and `:` and
/// does not unescape quotes.
pub fn storable_xattr_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['"', ',', ':', '%', '{', '}'])
}

fn format_xattrs(xattrs: &BTreeMap<String, Vec<u8>>) -> String {
    let json: Vec<String> = xattrs
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{}\"", STANDARD.encode(v)))
        .collect();
    percent_encode(&format!("{{{}}}", json.join(",")))
}

/// Reads s3fs's layout; a malformed pair is skipped, as s3fs does, and so is a name the
/// kernel could not list (empty, holding NUL, over 255 bytes).
fn parse_xattrs(s: &str) -> BTreeMap<String, Vec<u8>> {
    let json = url_decode(s);
    let (Some(start), Some(end)) = (json.find('{'), json.rfind('}')) else {
        return BTreeMap::new();
    };
    if end <= start {
        return BTreeMap::new();
    }
    json[start + 1..end]
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once(':')?;
            let k = k.trim().strip_prefix('"')?.strip_suffix('"')?;
            let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
            if k.is_empty() || k.len() > 255 || k.contains('\0') {
                return None;
            }
            Some((k.to_owned(), STANDARD.decode(v).ok()?))
        })
        .collect()
}

/// `%XX` decoded on bytes (a `%` not followed by two hex digits stays as it is, as in s3fs);
/// invalid UTF-8 replaced.
fn url_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: u64, n: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(s, n)
    }

    fn user(pairs: &[(&str, &str)]) -> UserMeta {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn times_parse_seconds_fractions_and_nanos() {
        assert_eq!(parse_time("12"), Some(t(12, 0)));
        assert_eq!(parse_time("12.5"), Some(t(12, 500_000_000)));
        assert_eq!(parse_time("12.000000001"), Some(t(12, 1)));
        assert_eq!(parse_time("x"), None);
        assert_eq!(parse_time("1.0000000001"), None);
        assert_eq!(parse_time("-1"), None);
        assert_eq!(format_time(t(12, 5)), "12.000000005");
        assert_eq!(format_time(t(12, 0)), "12");
        assert_eq!(parse_nanos("1500000000ns"), Some(t(1, 500_000_000)));
    }

    #[test]
    fn s3fs_layout_round_trips() {
        let meta = Meta {
            mode: Some(libc::S_IFLNK | 0o777),
            uid: Some(1000),
            gid: Some(100),
            mtime: Some(t(1_700_000_000, 123)),
            atime: Some(t(1_600_000_000, 0)),
            ctime: Some(t(1_700_000_001, 0)),
            rdev: None,
            xattrs: BTreeMap::from([
                ("user.a".to_owned(), b"hello".to_vec()),
                ("user.bin".to_owned(), vec![0, 255, 10]),
                ("user.empty".to_owned(), vec![]),
            ]),
            other: user(&[("content-origin", "web")]),
        };
        let stored = meta.to_user();
        assert_eq!(stored["mode"], "41471");
        assert_eq!(stored["uid"], "1000");
        assert_eq!(stored["mtime"], "1700000000.000000123");
        assert_eq!(stored["content-origin"], "web");
        assert_eq!(Meta::from_user(&stored), meta);
        // What s3fs itself writes for `setfattr -n user.a -v hello`.
        let s3fs = user(&[("xattr", "%7B%22user.a%22%3A%22aGVsbG8%3D%22%7D")]);
        assert_eq!(Meta::from_user(&s3fs).xattrs["user.a"], b"hello");
        assert_eq!(
            format_xattrs(&BTreeMap::from([("user.a".to_owned(), b"hello".to_vec())])),
            "%7B%22user.a%22%3A%22aGVsbG8%3D%22%7D"
        );
    }

    #[test]
    fn other_tools_formats_are_read() {
        // cognifs before s3fs's layout: octal permission bits.
        assert_eq!(Meta::from_user(&user(&[("mode", "644")])).mode, Some(0o644));
        assert_eq!(
            Meta::from_user(&user(&[("mode", "33188")])).mode,
            Some(0o100644)
        );
        let datasync = Meta::from_user(&user(&[
            ("file-permissions", "0100640"),
            ("file-owner", "501"),
            ("file-group", "20"),
            ("file-mtime", "1600000000000000001ns"),
        ]));
        assert_eq!(datasync.mode, Some(0o100640));
        assert_eq!((datasync.uid, datasync.gid), (Some(501), Some(20)));
        assert_eq!(datasync.mtime, Some(t(1_600_000_000, 1)));
        assert!(
            datasync.other.is_empty(),
            "foreign keys are not copied as ours"
        );
        assert_eq!(
            Meta::from_user(&user(&[("mtime", "12.5")])).mtime,
            Some(t(12, 500_000_000))
        );
        let junk = Meta::from_user(&user(&[("mode", "rwx"), ("uid", "-1"), ("xattr", "{x")]));
        assert_eq!((junk.mode, junk.uid), (None, None));
        assert!(junk.xattrs.is_empty());
    }

    #[test]
    fn a_percent_before_a_multibyte_character_decodes_without_panicking() {
        // `%1é`: slicing the text at byte offsets split `é` and panicked the FUSE thread.
        for value in ["%1é", "%é", "%", "%%", "%1", "%zz", "é%", "%4"] {
            let m = Meta::from_user(&user(&[("xattr", value)]));
            assert!(m.xattrs.is_empty(), "{value:?}");
        }
        assert_eq!(url_decode("%41%1é%4"), "A%1é%4");
        assert_eq!(url_decode("%e9%C3%A9"), "\u{fffd}é");
    }

    #[test]
    fn xattr_names_the_kernel_cannot_list_are_skipped() {
        let stored =
            |name: &str| percent_encode(&format!("{{\"{name}\":\"aGk=\",\"user.ok\":\"aGk=\"}}"));
        for bad in ["", "user.a\0b", &"n".repeat(256)] {
            let m = Meta::from_user(&user(&[("xattr", &stored(bad))]));
            assert_eq!(m.xattrs.keys().collect::<Vec<_>>(), ["user.ok"], "{bad:?}");
        }
    }

    /// The encoder s3fs has (`urlEncode`), byte for byte: the reference for ours.
    fn s3fs_url_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn any_metadata_is_read_without_panicking(
            pairs in prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "mode", "uid", "gid", "mtime", "atime", "ctime", "rdev", "xattr",
                        "file-permissions", "file-owner", "file-group", "file-mtime", "file-atime",
                    ]).prop_map(str::to_owned),
                    ".{0,8}",
                ],
                prop_oneof![
                    ".{0,40}",
                    "(%[0-9a-fA-F]?.?){0,6}",
                    "[0-9. +-]{0,25}(ns)?",
                    "%7B(%22.{0,6}%22%3A%22[A-Za-z0-9+/=]{0,8}%22,?){0,3}%7D",
                ],
                0..8,
            ),
            raw in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let meta = Meta::from_user(&pairs);
            let again = Meta::from_user(&meta.to_user());
            prop_assert_eq!(&again.xattrs, &meta.xattrs);
            let _ = meta.stored_size();
            let lossy = String::from_utf8_lossy(&raw).into_owned();
            let _ = Meta::from_user(&user(&[("xattr", &lossy), ("mtime", &lossy), ("mode", &lossy)]));
        }

        #[test]
        fn percent_encoding_is_s3fs_and_decodes_back(s in "\\PC{0,40}") {
            prop_assert_eq!(percent_encode(&s), s3fs_url_encode(&s));
            prop_assert_eq!(url_decode(&percent_encode(&s)), s);
        }
    }

    #[test]
    fn size_counts_keys_and_values() {
        let mut m = Meta {
            mode: Some(0o100644),
            ..Meta::default()
        };
        assert_eq!(m.stored_size(), "mode".len() + "33188".len());
        m.xattrs.insert("user.big".into(), vec![1; 2000]);
        assert!(m.stored_size() > MAX_USER_META_BYTES);
        assert!(storable_xattr_name("user.x.y-z"));
        assert!(!storable_xattr_name("user.a:b"));
    }
}
