//! `cognifs conflicts [list]`: the writes each running mount of the profile lost to another
//! device or client since it started, and where each version went (asked of the mounts
//! over their status sockets). The copies themselves are ordinary files, named
//! `NAME.conflict-DEVICE-TIME`, seen by every device.

use std::fmt::Write;

use super::status::{fmt_duration, mount_statuses};
use crate::auth::tokens::unix_now;
use crate::config::{self, ConfigSource};
use crate::metrics::MountStatus;

/// The text `list` prints for `mounts`, at `now`.
pub fn conflicts_text(mounts: &[MountStatus], now: u64) -> String {
    let mut o = String::new();
    if mounts.is_empty() {
        o.push_str("no running mounts\n");
    }
    for m in mounts {
        let _ = writeln!(o, "{} ({})", m.mountpoint.display(), m.s3_url);
        let Some(live) = &m.live else {
            o.push_str("  not answering\n");
            continue;
        };
        let w = &live.writes;
        if w.recent_conflicts.is_empty() {
            o.push_str("  no conflicts since the mount started\n");
        }
        for c in &w.recent_conflicts {
            let what = match &c.kept_as {
                Some(copy) => format!("this device's version kept as {copy}"),
                None => "not applied: the other client's newer version stays".to_owned(),
            };
            let ago = fmt_duration(now.saturating_sub(c.time));
            let _ = writeln!(o, "  {ago} ago  {}: {what}", c.path);
        }
        if w.conflicts > w.recent_conflicts.len() as u64 {
            let _ = writeln!(o, "  ({} in all; the latest are shown)", w.conflicts);
        }
    }
    o
}

pub fn list(src: &ConfigSource) -> anyhow::Result<()> {
    let profile = config::load(src)?;
    print!(
        "{}",
        conflicts_text(&mount_statuses(&profile.name), unix_now())
    );
    Ok(())
}
