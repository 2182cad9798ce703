//! `cognifs status`: who is signed in, where the data lives, and the running mounts.

use std::process::ExitCode;

use super::EXIT_SIGNED_OUT;
use crate::auth::profile_flag;
use crate::auth::tokens::{TokenStore, read_claims, unix_now};
use crate::config::{self, ConfigSource};
use crate::mounts;

fn fmt_time(unix: u64) -> String {
    let now = unix_now();
    if unix > now {
        format!("in {}m{:02}s", (unix - now) / 60, (unix - now) % 60)
    } else {
        format!(
            "{}m{:02}s ago (expired; renewed on next use)",
            (now - unix) / 60,
            (now - unix) % 60
        )
    }
}

pub fn status(src: &ConfigSource) -> anyhow::Result<ExitCode> {
    let profile = config::load(src)?;
    let store = TokenStore::for_profile(&profile);
    let Some(state) = store.load()? else {
        eprintln!(
            "Not signed in (profile {}). Run: cognifs login{}",
            profile.name,
            profile_flag(&profile.name)
        );
        return Ok(ExitCode::from(EXIT_SIGNED_OUT));
    };
    let claims = state
        .id_token
        .as_deref()
        .map(read_claims)
        .unwrap_or_default();
    println!(
        "profile        {} ({})",
        profile.name,
        profile.config_path.display()
    );
    println!(
        "signed in as   {} <{}>",
        claims.username.as_deref().unwrap_or("?"),
        claims.email.as_deref().unwrap_or("no email")
    );
    match &state.identity_id {
        Some(id) => {
            println!("identity       {id}");
            println!(
                "data           s3://{}/{}",
                profile.bucket,
                profile.prefix_for(id)
            );
        }
        None => println!("identity       not looked up yet (first mount does it)"),
    }
    if let Some(exp) = state.id_token_expires {
        println!("ID token       expires {}", fmt_time(exp));
    }
    let running = mounts::running(&config::state_dir(), &profile.name);
    if running.is_empty() {
        println!("mounts         none");
    }
    for m in running {
        let creds = m
            .credentials_expire
            .map(|e| format!(", credentials expire {}", fmt_time(e)));
        println!(
            "mount          {} (pid {}{})",
            m.mountpoint.display(),
            m.pid,
            creds.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
