//! `cognifs login` and `cognifs logout`.

use crate::auth::login::{Browser, LoginOptions, login as sign_in};
use crate::auth::profile_flag;
use crate::auth::tokens::{TokenStore, http_client, revoke};
use crate::config::{self, ConfigSource};
use crate::daemon::runtime;

pub fn login(src: &ConfigSource, no_browser: bool) -> anyhow::Result<()> {
    let profile = config::load(src)?;
    let store = TokenStore::for_profile(&profile);
    let browser = if no_browser {
        Browser::Paste
    } else {
        Browser::System
    };
    let state = runtime()?.block_on(sign_in(
        &profile,
        &store,
        LoginOptions {
            browser,
            ..Default::default()
        },
    ))?;
    println!(
        "Signed in as {} (profile {}). Next: cognifs mount{} DIR",
        state
            .username
            .as_deref()
            .or(state.email.as_deref())
            .unwrap_or("?"),
        profile.name,
        profile_flag(&profile.name)
    );
    Ok(())
}

pub fn logout(src: &ConfigSource) -> anyhow::Result<()> {
    let profile = config::load(src)?;
    let store = TokenStore::for_profile(&profile);
    let Some(state) = store.load()? else {
        println!("Not signed in (profile {}).", profile.name);
        return Ok(());
    };
    if let Err(e) = runtime()?.block_on(revoke(&profile, &state.refresh_token, &http_client())) {
        eprintln!(
            "warning: could not revoke the sign-in at {} ({e}); deleting it locally anyway",
            profile.domain
        );
    }
    store.delete()?;
    println!("Signed out (profile {}).", profile.name);
    Ok(())
}
