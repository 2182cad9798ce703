//! Running mounts: a small registry under the state dir (`{profile}/mounts/{pid}.json`) that
//! `cognifs status` and `cognifs unmount` read, beside each mount's status socket
//! (`{pid}.sock`, see `metrics`), and the kernel's view of what is mounted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountRecord {
    pub pid: u32,
    pub mountpoint: PathBuf,
    pub profile: String,
    pub s3_url: String,
    /// Unix seconds when the mount started.
    pub started: u64,
    /// Unix seconds when the credentials in use expire (renewed well before).
    #[serde(default)]
    pub credentials_expire: Option<u64>,
}

fn dir(state_dir: &Path, profile: &str) -> PathBuf {
    state_dir.join(profile).join("mounts")
}

/// Where the mount process `pid` of `profile` answers status queries.
pub fn socket_path(state_dir: &Path, profile: &str, pid: u32) -> PathBuf {
    dir(state_dir, profile).join(format!("{pid}.sock"))
}

/// Where the mount process `pid` of `profile` takes requests (`cognifs offline pin`).
pub fn control_path(state_dir: &Path, profile: &str, pid: u32) -> PathBuf {
    dir(state_dir, profile).join(format!("{pid}.ctl"))
}

/// Whether process `pid` is still running. A zombie is not: it has exited and only waits
/// to be reaped by its parent, which may be late (a `mount --foreground` under a supervisor
/// or a script), and `cognifs unmount` would otherwise wait for it in vain.
fn alive(pid: u32) -> bool {
    // `PID (COMM) STATE …`: COMM may hold spaces and parentheses, so the state is the first
    // field after the last `)`.
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .iter()
            .rposition(|&b| b == b')')
            .and_then(|end| stat.get(end + 2))
            .is_none_or(|state| !matches!(state, b'Z' | b'X')),
        Err(_) => false,
    }
}

/// Records this process's mount; the guard removes the record when dropped.
pub fn register(state_dir: &Path, record: MountRecord) -> std::io::Result<Registration> {
    let dir = dir(state_dir, &record.profile);
    crate::statefile::private_dir(&dir)?;
    let registration = Registration {
        path: dir.join(format!("{}.json", record.pid)),
    };
    registration.update(&record)?;
    Ok(registration)
}

pub struct Registration {
    path: PathBuf,
}

impl Registration {
    /// Rewrites the record atomically, so `status` never reads half of it.
    pub fn update(&self, record: &MountRecord) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, &self.path)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Mounts of `profile` whose process is still running; stale records are removed.
pub fn running(state_dir: &Path, profile: &str) -> Vec<MountRecord> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir, profile)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(record) = std::fs::read(entry.path())
            .ok()
            .and_then(|raw| serde_json::from_slice::<MountRecord>(&raw).ok())
        else {
            continue;
        };
        if alive(record.pid) && is_mounted(&record.mountpoint) {
            out.push(record);
        } else if !alive(record.pid) {
            let _ = std::fs::remove_file(entry.path());
            let _ = std::fs::remove_file(socket_path(state_dir, profile, record.pid));
        }
    }
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    out
}

/// Every running mount of this user, whatever its profile (the demo's included), ordered by
/// profile then mount point.
pub fn all_running(state_dir: &Path) -> Vec<MountRecord> {
    let Ok(profiles) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = profiles
        .flatten()
        .filter_map(|p| p.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|profile| running(state_dir, profile))
        .collect()
}

/// The running mount at `mountpoint`, whatever its profile (for `unmount`, which is given
/// only a path).
pub fn find_by_mountpoint(state_dir: &Path, mountpoint: &Path) -> Option<MountRecord> {
    all_running(state_dir)
        .into_iter()
        .find(|r| r.mountpoint == mountpoint)
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0"), 8)
                .unwrap_or(b'?');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/mountinfo`.
struct MountEntry<'a> {
    /// The backing device, `MAJ:MIN`.
    device: &'a str,
    mountpoint: PathBuf,
    fstype: &'a str,
}

/// The mounts of a mountinfo text, in its order (a later mount on a path is on top).
fn mount_entries(info: &str) -> impl Iterator<Item = MountEntry<'_>> {
    info.lines().filter_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let mountpoint = PathBuf::from(unescape_mountinfo(fields.nth(1)?));
        let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
        Some(MountEntry {
            device,
            mountpoint,
            fstype,
        })
    })
}

/// Whether a cognifs FUSE filesystem is mounted at `path` (already canonical).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mount_entries(&info).any(|m| m.mountpoint == path && m.fstype.starts_with("fuse"))
}

/// The backing device (`MAJ:MIN`) of the topmost mount at `path` (already canonical).
pub fn device_of(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    device_in(&info, path)
}

fn device_in(info: &str, path: &Path) -> Option<String> {
    mount_entries(info)
        .filter(|m| m.mountpoint == path)
        .last()
        .map(|m| m.device.to_owned())
}

/// Waits until `pid` is gone, up to `limit`.
pub fn wait_for_exit(pid: u32, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_alive() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited and not reaped yet: a zombie until the wait below.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "still a zombie"
        );
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mountinfo(r"/home/me/my\040cloud"),
            "/home/me/my cloud"
        );
        assert_eq!(unescape_mountinfo(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/ends\040"), "/ends ");
    }

    const MOUNTINFO: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:53 / /tmp/a\\040b rw,nosuid,nodev - fuse.cognifs cognifs rw,user_id=0
99 22 0:54 / /mnt/x rw - fuse.cognifs cognifs rw
100 22 0:57 / /mnt/x rw - fuse.cognifs cognifs rw
";

    #[test]
    fn the_device_is_the_topmost_mounts_and_paths_are_unescaped() {
        let device = |p: &str| device_in(MOUNTINFO, Path::new(p));
        assert_eq!(device("/tmp/a b").as_deref(), Some("0:53"));
        assert_eq!(device("/mnt/x").as_deref(), Some("0:57"));
        assert_eq!(device("/mnt"), None);
    }

    #[test]
    fn registry_lists_live_records_and_drops_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        let dead = MountRecord {
            pid: u32::MAX - 1,
            mountpoint: "/x".into(),
            profile: "p".into(),
            s3_url: "s3://b/x/".into(),
            started: 0,
            credentials_expire: None,
        };
        let reg = register(dir.path(), dead).unwrap();
        let sock = socket_path(dir.path(), "p", u32::MAX - 1);
        std::fs::write(&sock, b"").unwrap();
        assert!(running(dir.path(), "p").is_empty());
        assert!(!reg.path.exists(), "a dead process's record is cleaned up");
        assert!(!sock.exists(), "and its socket");
    }
}
