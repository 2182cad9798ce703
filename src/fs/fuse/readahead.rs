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
    // The parent, not the mount itself: a stat of the mount's root would be a request to
    // this file system, which may have to ask S3.
    let not_found = |what| std::io::Error::new(std::io::ErrorKind::NotFound, what);
    let parent = mountpoint
        .parent()
        .ok_or_else(|| not_found("no parent directory"))?;
    let parent = if parent.as_os_str().is_empty() {
        std::env::current_dir()?
    } else {
        parent.canonicalize()?
    };
    let name = mountpoint
        .file_name()
        .ok_or_else(|| not_found("no file name"))?;
    let device = crate::mounts::device_of(&parent.join(name))
        .ok_or_else(|| not_found("the mount is not in /proc/self/mountinfo"))?;
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    std::fs::write(knob, format!("{}\n", bytes / 1024))
}
