//! `cognifs offline`: files kept on this disk for when S3 is away. `pin PATH…` asks the
//! running mount that holds each path to fetch it (a file, or a whole tree) into its disk
//! cache and keep it there; `unpin` lets it go; `list` shows what each mount keeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::OfflineCommand;
use crate::config;
use crate::control::{Reply, Request, ask};
use crate::mounts::{self, MountRecord};

/// A pin fetches as long as it needs; this is only a bound on a mount that stopped answering.
const PIN_WAIT: Duration = Duration::from_secs(24 * 3600);
const QUICK_WAIT: Duration = Duration::from_secs(10);

pub fn run(command: OfflineCommand) -> anyhow::Result<()> {
    let state = config::state_dir();
    let mounts = mounts::all_running(&state);
    match command {
        OfflineCommand::Pin { paths } => {
            for path in paths {
                let (mount, rel) = locate(&mounts, &path)?;
                eprintln!(
                    "pinning {} (fetching what is not on disk yet)...",
                    path.display()
                );
                match ask(
                    &control(&state, mount),
                    &Request::Pin { path: rel },
                    PIN_WAIT,
                )
                .with_context(|| format!("asking the mount at {}", mount.mountpoint.display()))?
                {
                    Reply::Pinned(done) => {
                        println!(
                            "{}: pinned, {} file(s), {} ({} fetched now)",
                            path.display(),
                            done.files,
                            human(done.bytes),
                            human(done.fetched)
                        );
                        for (file, why) in &done.failed {
                            println!("  not fetched: {file}: {why}");
                        }
                        if !done.failed.is_empty() {
                            bail!(
                                "{} file(s) could not be fetched; pin again when S3 answers",
                                done.failed.len()
                            );
                        }
                    }
                    other => bail!("{}: {}", path.display(), failure(other)),
                }
            }
        }
        OfflineCommand::Unpin { paths } => {
            for path in paths {
                let (mount, rel) = locate(&mounts, &path)?;
                match ask(
                    &control(&state, mount),
                    &Request::Unpin { path: rel },
                    QUICK_WAIT,
                )? {
                    Reply::Unpinned { was_pinned: true } => {
                        println!("{}: unpinned", path.display())
                    }
                    Reply::Unpinned { was_pinned: false } => {
                        println!(
                            "{}: was not pinned (`cognifs offline list`)",
                            path.display()
                        )
                    }
                    other => bail!("{}: {}", path.display(), failure(other)),
                }
            }
        }
        OfflineCommand::List => {
            if mounts.is_empty() {
                println!("no running mounts");
            }
            for m in &mounts {
                match ask(&control(&state, m), &Request::Pins, QUICK_WAIT) {
                    Ok(Reply::Pins { paths, bytes }) => {
                        println!(
                            "{} ({}): {} pinned",
                            m.mountpoint.display(),
                            m.profile,
                            human(bytes)
                        );
                        for p in paths {
                            println!("  {}", m.mountpoint.join(p).display());
                        }
                    }
                    Ok(other) => println!("{}: {}", m.mountpoint.display(), failure(other)),
                    Err(e) => println!("{}: does not answer ({e})", m.mountpoint.display()),
                }
            }
        }
    }
    Ok(())
}

fn control(state: &Path, m: &MountRecord) -> PathBuf {
    mounts::control_path(state, &m.profile, m.pid)
}

/// The running mount that holds `path`, and the path relative to its root.
fn locate<'m>(mounts: &'m [MountRecord], path: &Path) -> anyhow::Result<(&'m MountRecord, String)> {
    let abs = std::fs::canonicalize(path)
        .with_context(|| format!("{} (it must exist in a running mount)", path.display()))?;
    let found = mounts
        .iter()
        .filter_map(|m| Some((m, abs.strip_prefix(&m.mountpoint).ok()?)))
        .max_by_key(|(m, _)| m.mountpoint.as_os_str().len());
    let Some((m, rel)) = found else {
        bail!(
            "{} is not in a running cognifs mount (`cognifs status` lists them)",
            path.display()
        );
    };
    let rel = rel
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    Ok((m, rel.to_owned()))
}

fn failure(reply: Reply) -> String {
    match reply {
        Reply::Failed { error } => error,
        other => format!("unexpected answer {other:?}"),
    }
}

fn human(bytes: u64) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (MIB * 1024.0))
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}
