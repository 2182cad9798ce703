//! What devstack's Cognito keeps across a restart when it has a data dir of its own, as the
//! real services do: the user pool's signing key, refresh-token grants, and the AWS
//! credentials the identity pool issued. Authorization codes live five minutes and are not
//! kept.
//!
//! One JSON file, [`FILE_NAME`], beside the object store's `blobs/`, `tmp/`, `uploads/` and
//! `index.jsonl`. It is rewritten whole on every change (temporary file, fsync, rename, fsync
//! of the directory), so a crash leaves the old state or the new one, never a torn file. Mode
//! 0600: it holds secret keys. Refresh tokens are kept only as SHA-256 digests, so the file
//! cannot be used to sign in.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Inside the data dir; no name the object store uses.
pub const FILE_NAME: &str = "cognito-state.json";

/// Bumped when the format changes incompatibly; a file of another version is refused.
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The pool the grants belong to; another `--region` is another pool.
    pub user_pool_id: String,
    pub signing_key: SigningKey,
    /// By SHA-256 (base64url) of the refresh token.
    pub refresh_grants: BTreeMap<String, RefreshGrant>,
    /// By access key id.
    pub credentials: BTreeMap<String, Credentials>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// PKCS#8 DER, base64.
    pub pkcs8: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RefreshGrant {
    pub username: String,
    /// Unix seconds.
    pub expires: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub secret_key: String,
    pub session_token: String,
    pub identity_id: String,
    /// Unix seconds, as GetCredentialsForIdentity reported it.
    pub expires: u64,
}

/// `Ok(None)` when there is no file yet.
pub fn load(path: &Path) -> anyhow::Result<Option<State>> {
    let raw = match fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let state: State = serde_json::from_slice(&raw)?;
    anyhow::ensure!(
        state.version == VERSION,
        "state file version {} is not {VERSION}",
        state.version
    );
    Ok(Some(state))
}

/// Replaces the file at `path` with `state`: all of it or none of it, even across a crash.
pub fn save(path: &Path, state: &State) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    // A leftover from a crash may have other permissions; start from a file we create 0600.
    let _ = fs::remove_file(&tmp);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn sample() -> State {
        State {
            version: VERSION,
            user_pool_id: "us-east-1_abc".into(),
            signing_key: SigningKey {
                kid: "k".into(),
                pkcs8: "AAAA".into(),
            },
            refresh_grants: [(
                "digest".to_owned(),
                RefreshGrant {
                    username: "alice".into(),
                    expires: 10,
                },
            )]
            .into(),
            credentials: BTreeMap::new(),
        }
    }

    #[test]
    fn saves_atomically_with_mode_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(load(&path).unwrap().is_none());
        // A stale temporary file with loose permissions is not reused.
        fs::write(path.with_extension("json.tmp"), b"stale").unwrap();
        save(&path, &sample()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("json.tmp").exists());
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.refresh_grants["digest"].username, "alice");

        let mut other = sample();
        other.version = VERSION + 1;
        save(&path, &other).unwrap();
        assert!(load(&path).is_err());
        fs::write(&path, b"{").unwrap();
        assert!(load(&path).is_err());
    }
}
