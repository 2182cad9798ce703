//! The OS keyring: where a Secret Service (GNOME Keyring, KWallet) answers on the session
//! bus, the sign-in's secrets (refresh and ID token) are kept there instead of in the token
//! file, through `dbus-secret-service` (libdbus; the crate keyring-rs' Linux store is built
//! on). The session is "plain": the secret crosses the user's own session bus, which other
//! users cannot read, and no second crypto stack is linked in.
//!
//! One item per token file: attributes `service=cognifs`, `username=<the token file's
//! path>`, so profiles and state directories never share one. Without a session bus (a
//! server, a container, CI), without a Secret Service on it, or with
//! `COGNIFS_TOKEN_STORAGE=file`, the 0600 file keeps them.

use std::collections::HashMap;
use std::path::Path;

use dbus_secret_service::{EncryptionType, Error, SecretService};

/// The Secret Service `service` attribute of cognifs' items.
pub const SERVICE: &str = "cognifs";

/// How long an operation may wait for the user to unlock the keyring.
const PROMPT_SECONDS: u64 = 30;

/// A connection to the Secret Service.
pub struct Keyring(SecretService);

/// Whether this process may look for a keyring at all: a session bus is there, and the
/// user did not ask for the file.
fn session_bus() -> bool {
    if std::env::var("COGNIFS_TOKEN_STORAGE").is_ok_and(|v| v == "file") {
        return false;
    }
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists())
}

/// The keyring, `None` without a session bus or a Secret Service on it.
pub fn keyring() -> Option<Keyring> {
    if !session_bus() {
        return None;
    }
    match SecretService::connect_with_max_prompt_timeout(EncryptionType::Plain, PROMPT_SECONDS) {
        Ok(ss) => Some(Keyring(ss)),
        Err(e) => {
            tracing::debug!("no Secret Service on the session bus: {e}");
            None
        }
    }
}

fn describe(e: Error) -> String {
    // The service's errors carry its message, never the secret.
    format!("the OS keyring: {e}")
}

fn attributes(token_file: &Path) -> (String, &'static str) {
    (token_file.to_string_lossy().into_owned(), SERVICE)
}

impl Keyring {
    /// The items kept for `token_file`, unlocked.
    fn items(&self, token_file: &Path) -> Result<Vec<dbus_secret_service::Item<'_>>, String> {
        let (user, service) = attributes(token_file);
        let found = self
            .0
            .search_items(HashMap::from([
                ("service", service),
                ("username", user.as_str()),
            ]))
            .map_err(describe)?;
        if !found.locked.is_empty() {
            let locked: Vec<_> = found.locked.iter().collect();
            self.0.unlock_all(&locked).map_err(describe)?;
        }
        Ok(found.unlocked.into_iter().chain(found.locked).collect())
    }

    /// Keeps `secret` for `token_file`, replacing what was there.
    pub fn set(&self, token_file: &Path, secret: &str) -> Result<(), String> {
        let (user, service) = attributes(token_file);
        let collection = self.0.get_any_collection().map_err(describe)?;
        collection.ensure_unlocked().map_err(describe)?;
        collection
            .create_item(
                &format!("cognifs sign-in ({user})"),
                HashMap::from([("service", service), ("username", user.as_str())]),
                secret.as_bytes(),
                true,
                "text/plain",
            )
            .map_err(describe)?;
        Ok(())
    }

    /// What is kept for `token_file`, `None` when nothing is.
    pub fn get(&self, token_file: &Path) -> Result<Option<String>, String> {
        let Some(item) = self.items(token_file)?.into_iter().next() else {
            return Ok(None);
        };
        let secret = item.get_secret().map_err(describe)?;
        String::from_utf8(secret)
            .map(Some)
            .map_err(|_| "the OS keyring: the item is not text".to_owned())
    }

    /// Forgets what is kept for `token_file`; false when there was nothing.
    pub fn delete(&self, token_file: &Path) -> Result<bool, String> {
        let items = self.items(token_file)?;
        for item in &items {
            item.delete().map_err(describe)?;
        }
        Ok(!items.is_empty())
    }
}
