//! `cognifs login` and `cognifs logout`.

use crate::auth::identity::Session;
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
    let rt = runtime()?;
    let state = rt.block_on(sign_in(
        &profile,
        &store,
        LoginOptions {
            browser,
            ..Default::default()
        },
    ))?;
    // GetId now, stored with the tokens as a mount stores it, so `cognifs status` can show the
    // identity and where the data lives before the first mount. Not fatal: a mount retries it.
    let session = Session::with_store(profile.clone(), store);
    let mut fresh = state.clone();
    match rt.block_on(session.identity_id(&mut fresh)) {
        Ok(id) => println!(
            "Identity {id}: your files are s3://{}/{}",
            profile.bucket,
            profile.prefix_for(&id)
        ),
        Err(e) => eprintln!("warning: signed in, but could not look up the identity yet: {e}"),
    }
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
