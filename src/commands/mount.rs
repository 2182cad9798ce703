//! `cognifs mount` (checks, then serve in the foreground or daemonize) and `cognifs unmount`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::auth::identity::Session;
use crate::cli::MountArgs;
use crate::config::{self, ConfigSource};
use crate::daemon::{self, Extras, init_logging, runtime, serve_with_metrics};
use crate::metrics::server::{self, exposure_warning};
use crate::mounts;

/// The checks that need no network: a mount point that is a directory, empty, and FUSE.
pub fn check_mountpoint(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = dir.canonicalize().with_context(|| {
        format!(
            "mount point {} does not exist (create it with mkdir)",
            dir.display()
        )
    })?;
    if !dir.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    if mounts::is_mounted(&dir) {
        bail!(
            "{} is already mounted (cognifs unmount {} first)",
            dir.display(),
            dir.display()
        );
    }
    if std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "mount point {} is not empty; cognifs mounts only on an empty directory",
            dir.display()
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "/dev/fuse is missing: FUSE is not available. Install it (Debian/Ubuntu: apt-get install fuse3) and load the module (modprobe fuse)"
        );
    }
    Ok(dir)
}

/// `~/cloud`: where a profile without `mount_point` mounts (the systemd unit relies on it).
pub fn default_mount_point() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join("cloud"))
}

pub fn mount(src: &ConfigSource, args: MountArgs, argv: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let profile = config::load(src)?;
    let dir = match (&args.dir, &profile.mount_point) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            let Some(d) = default_mount_point() else {
                bail!(
                    "no mount point: give DIR, or set mount_point in profile [{}] of {}",
                    profile.name,
                    profile.config_path.display()
                )
            };
            // Only the default is created: a DIR or mount_point that does not exist is more
            // likely a typo than a wish for a new directory.
            std::fs::create_dir_all(&d)
                .with_context(|| format!("creating the default mount point {}", d.display()))?;
            d
        }
    };
    let dir = check_mountpoint(&dir)?;
    let opts = args.mount_options()?;
    let shutdown_grace = args.shutdown_grace()?;
    if let Some(warning) = args.metrics_addr.as_ref().and_then(exposure_warning) {
        eprintln!("cognifs: warning: {warning}");
    }
    if !args.foreground {
        return daemon::daemonize(&dir, &profile, argv);
    }
    let log = config::state_dir().join(&profile.name).join("cognifs.log");
    init_logging(Some(&log), !daemon::is_daemon_child())?;
    let rt = runtime()?;
    let session = Session::new(profile.clone());
    serve_with_metrics(
        &rt,
        session,
        &dir,
        opts,
        Extras {
            shutdown_grace: Some(shutdown_grace),
            ..Extras::default()
        },
        args.metrics_addr,
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn unmount(dir: &Path) -> anyhow::Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{} does not exist", dir.display()))?;
    if !mounts::is_mounted(&dir) {
        bail!("{} is not mounted", dir.display());
    }
    let record = mounts::find_by_mountpoint(&config::state_dir(), &dir);
    let fusermount = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&dir)
        .status();
    let ok = match fusermount {
        Ok(s) if s.success() => true,
        _ => std::process::Command::new("umount")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
    };
    if !ok {
        bail!(
            "could not unmount {} (is a file in it still open? `fuser -m {}` lists who uses it)",
            dir.display(),
            dir.display()
        );
    }
    if let Some(r) = &record
        && !wait_showing_uploads(r, Duration::from_secs(60))
    {
        bail!(
            "unmounted, but cognifs process {} has not exited yet",
            r.pid
        );
    }
    println!("unmounted {}", dir.display());
    if let Some(r) = &record {
        let pending = crate::pending::records_in(&crate::pending::PendingArea::for_profile(
            &config::state_dir(),
            &r.profile,
        ));
        if !pending.is_empty() {
            let bytes: u64 = pending.iter().map(|p| p.size).sum();
            println!(
                "{} upload(s) that failed ({}) are kept on disk and will be retried by the next \
                 mount of profile {} (`cognifs pending list` shows them)",
                pending.len(),
                super::status::fmt_bytes(bytes),
                r.profile
            );
        }
    }
    Ok(())
}

/// Waits for the mount process to exit, printing (once a second) the uploads it is still
/// finishing, as its status socket reports them.
fn wait_showing_uploads(r: &mounts::MountRecord, limit: Duration) -> bool {
    let socket = mounts::socket_path(&config::state_dir(), &r.profile, r.pid);
    let deadline = std::time::Instant::now() + limit;
    let mut next_report = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        if mounts::wait_for_exit(r.pid, Duration::from_millis(100)) {
            return true;
        }
        let now = std::time::Instant::now();
        if now > deadline {
            return false;
        }
        if now < next_report {
            continue;
        }
        next_report = now + Duration::from_secs(1);
        if let Some(lines) = server::query(&socket)
            .ok()
            .and_then(|s| s.live)
            .and_then(|l| upload_report(&l.writes))
        {
            eprintln!("{lines}");
        }
    }
}

/// What an unmount waits for, or `None` when nothing is left to upload.
fn upload_report(w: &crate::metrics::WriteStatus) -> Option<String> {
    if w.bytes_waiting == 0 && w.uploads.is_empty() {
        return None;
    }
    let mut out = format!(
        "waiting for uploads: {} to go",
        super::status::fmt_bytes(w.bytes_waiting)
    );
    for u in &w.uploads {
        out.push_str("\n  ");
        out.push_str(&super::status::upload_line(u));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{UploadStatus, WriteStatus};

    #[test]
    fn unmount_reports_uploads_only_while_there_are_some() {
        let mut w = WriteStatus {
            files_open: 0,
            bytes_waiting: 0,
            uploads_in_flight: 0,
            uploads: vec![],
            ..WriteStatus::default()
        };
        assert_eq!(upload_report(&w), None);
        w.bytes_waiting = 40 << 20;
        w.uploads.push(UploadStatus {
            path: "a/big.bin".into(),
            bytes_sent: 24 << 20,
            bytes_total: 64 << 20,
            streaming: false,
        });
        assert_eq!(
            upload_report(&w).unwrap(),
            "waiting for uploads: 40.0 MiB to go\n  a/big.bin  24.0 MiB of 64.0 MiB (37%)"
        );
    }
}
