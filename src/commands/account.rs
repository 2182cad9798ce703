//! `cognifs login` and `cognifs logout`.

use std::time::{Duration, Instant};

use crate::auth::identity::Session;
use crate::auth::login::{Browser, LoginOptions, login as sign_in};
use crate::auth::profile_flag;
use crate::auth::tokens::{TokenStore, http_client, revoke};
use crate::config::{self, ConfigSource};
use crate::daemon::runtime;
use crate::metrics::server::{self, SocketCommand};
use crate::mounts;

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

/// Revokes the sign-in (whatever the token file's mode: a file others could read is when
/// revoking matters most), deletes it, and tells the profile's running mounts, which stop
/// using it and keep what they cannot upload until the next `cognifs login`.
pub fn logout(src: &ConfigSource) -> anyhow::Result<()> {
    let profile = config::load(src)?;
    let store = TokenStore::for_profile(&profile);
    match store.load_whatever_mode()? {
        None => println!("Not signed in (profile {}).", profile.name),
        Some((state, loose_mode)) => {
            if let Some(mode) = loose_mode {
                eprintln!(
                    "warning: {} had permissions {mode:04o}: others on this machine could read your sign-in; revoking it",
                    store.path().display()
                );
            }
            if let Err(e) =
                runtime()?.block_on(revoke(&profile, &state.refresh_token, &http_client()))
            {
                eprintln!(
                    "warning: could not revoke the sign-in at {} ({e}); deleting it locally anyway",
                    profile.domain
                );
            }
            store.delete()?;
            println!("Signed out (profile {}).", profile.name);
        }
    }
    tell_mounts_signed_out(&profile.name);
    Ok(())
}

/// How long `logout` waits for a mount to confirm it stopped using the sign-in.
const SIGN_OUT_CONFIRM: Duration = Duration::from_secs(10);

/// Tells each running mount of `profile` over its status socket, and waits (bounded) until
/// each says it is signed out.
fn tell_mounts_signed_out(profile: &str) {
    let state = config::state_dir();
    for m in mounts::running(&state, profile) {
        let socket = mounts::socket_path(&state, profile, m.pid);
        let confirmed = server::tell(&socket, SocketCommand::SignedOut).is_ok() && {
            let deadline = Instant::now() + SIGN_OUT_CONFIRM;
            loop {
                let signed_out = server::query(&socket)
                    .ok()
                    .and_then(|s| s.live)
                    .is_some_and(|l| l.credentials.signed_out.is_some());
                if signed_out || Instant::now() > deadline {
                    break signed_out;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        if confirmed {
            println!(
                "The mount at {} stopped using the sign-in; files it cannot upload are kept until the next `cognifs login`.",
                m.mountpoint.display()
            );
        } else {
            eprintln!(
                "warning: the mount at {} (pid {}) did not confirm it stopped using the sign-in; its credentials stay valid up to an hour. \
                 `cognifs unmount {}` ends it.",
                m.mountpoint.display(),
                m.pid,
                m.mountpoint.display()
            );
        }
    }
}
