//! The kernel's readahead for the mount, raised past FUSE's 128 KiB.
//!
//! FUSE's INIT can only lower the readahead the kernel offers (its default, 128 KiB), and
//! the kernel's page-cache reads of a FUSE file are cut to the readahead window: with the
//! default, a sequential reader costs one FUSE round trip per 128 KiB however large its
//! `read(2)` calls. The mount's backing device takes a larger value through sysfs
//! (`/sys/class/bdi/MAJ:MIN/read_ahead_kb`, root only), after which the kernel sends reads
//! of up to `max_pages` (1 MiB, from `max_write`) and keeps several in flight. Without
//! root this is skipped: reads work as before, in 128 KiB requests.

use std::path::Path;

/// Sets the readahead of the FUSE mount at `mountpoint` to `bytes`. Err: why not (not
/// root, the mount not found); harmless.
pub(super) fn raise(mountpoint: &Path, bytes: u64) -> std::io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    // The parent, not the mount itself: a stat of the mount's root would be a request to
    // this file system, which may have to ask S3.
    let not_found = || std::io::Error::new(std::io::ErrorKind::NotFound, "no parent directory");
    let parent = mountpoint.parent().ok_or_else(not_found)?;
    let parent = if parent.as_os_str().is_empty() {
        std::env::current_dir()?
    } else {
        parent.canonicalize()?
    };
    let wanted = parent.join(mountpoint.file_name().ok_or_else(not_found)?);
    let device = device_of(&mountinfo, &wanted.to_string_lossy()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the mount is not in /proc/self/mountinfo",
        )
    })?;
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    std::fs::write(knob, format!("{}\n", bytes / 1024))
}

/// The `MAJ:MIN` of the last mount at `mountpoint` in a mountinfo text (the last one is on
/// top). Mount points there escape space, tab, newline and backslash in octal.
fn device_of(mountinfo: &str, mountpoint: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let point = fields.nth(1)?;
            (unescape(point) == mountpoint).then(|| device.to_owned())
        })
        .next_back()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:53 / /tmp/a\\040b rw,nosuid,nodev - fuse.cognifs cognifs rw,user_id=0
99 22 0:54 / /mnt/x rw - fuse.cognifs cognifs rw
100 22 0:57 / /mnt/x rw - fuse.cognifs cognifs rw
";

    #[test]
    fn finds_the_topmost_mount_and_unescapes_its_path() {
        assert_eq!(device_of(MOUNTINFO, "/tmp/a b").as_deref(), Some("0:53"));
        assert_eq!(device_of(MOUNTINFO, "/mnt/x").as_deref(), Some("0:57"));
        assert_eq!(device_of(MOUNTINFO, "/mnt"), None);
    }
}
