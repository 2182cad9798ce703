//! `cognifs service install`: the systemd user unit for a profile.

use std::path::PathBuf;

use anyhow::Context;

use super::mount::default_mount_point;
use crate::auth::profile_flag;
use crate::auth::tokens::TokenStore;
use crate::config::{self, ConfigSource};

pub fn install(src: &ConfigSource) -> anyhow::Result<()> {
    let profile = config::load(src)?;
    if src.path.is_some() || std::env::var_os("COGNIFS_CONFIG").is_some() {
        eprintln!(
            "warning: the unit reads the default config file; {} is not it unless it lives there",
            profile.config_path.display()
        );
    }
    let exe = std::env::current_exe().context("locating the cognifs executable")?;
    let report = crate::service::install(&exe, &profile.name)?;
    println!("wrote {}", report.unit_path.display());
    for (cmd, result) in &report.ran {
        match result {
            Ok(()) => println!("ran {cmd}"),
            Err(e) => eprintln!("failed: {cmd}: {e}"),
        }
    }
    let dir = profile
        .mount_point
        .clone()
        .or_else(default_mount_point)
        .unwrap_or_else(|| PathBuf::from("~/cloud"));
    if report.todo.is_empty() {
        println!(
            "{} is enabled and started: it mounts {} now and at every login.",
            report.instance,
            dir.display()
        );
    } else {
        println!("to enable it, run:");
        for cmd in &report.todo {
            println!("  {cmd}");
        }
    }
    println!("logs: journalctl --user -u {}", report.instance);
    if TokenStore::for_profile(&profile).load()?.is_none() {
        println!(
            "note: profile {} is not signed in; the service exits (status 3, no restart loop) until you run cognifs login{}",
            profile.name,
            profile_flag(&profile.name)
        );
    }
    Ok(())
}
