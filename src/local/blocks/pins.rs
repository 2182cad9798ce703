//! The pins file (`pins.json`): the paths kept from eviction, a JSON array of strings.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub(super) fn is_pinned(pins: &[String], rel: &str) -> bool {
    pins.iter()
        .any(|p| p == rel || (p.is_empty() || p.ends_with('/')) && rel.starts_with(p.as_str()))
}

/// The pins file: a JSON array of paths. Untrusted like every file here: bounded, and
/// anything that is not a list of strings is ignored (logged).
pub(super) fn load_pins(path: &Path) -> Vec<String> {
    const MAX_PINS_FILE: u64 = 4 << 20;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return Vec::new();
    };
    let mut text = Vec::new();
    if file.take(MAX_PINS_FILE).read_to_end(&mut text).is_err() {
        return Vec::new();
    }
    match serde_json::from_slice::<Vec<String>>(&text) {
        Ok(pins) => pins,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "unreadable pins file; nothing pinned");
            Vec::new()
        }
    }
}

pub(super) fn save_pins(path: &Path, pins: &[String]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(pins).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
