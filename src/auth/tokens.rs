//! The sign-in kept on disk, one directory per profile under the state dir:
//! `tokens.json` holds the refresh token, the last ID token and its expiry, and the identity
//! id. The directory is 0700 and the file 0600, written atomically (temp file + rename), and
//! a file that group or others can read is refused, as ssh refuses a loose private key.
//!
//! The refresh_token grant lives here too: it is what turns the stored refresh token into a
//! fresh ID token.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, ClientId, EndpointNotSet, EndpointSet, ExtraTokenFields, RedirectUrl, RefreshToken,
    RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::AuthError;
/// Re-exported: token expiries are in these units, and callers already import it from here.
pub use crate::clock::unix_now;
use crate::config::Profile;

/// Cognito's token response carries an `id_token`, which oauth2's basic response drops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenField {
    pub id_token: Option<String>,
    /// Some token endpoints say how long the refresh token lasts (Cognito does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_in: Option<u64>,
}
impl ExtraTokenFields for IdTokenField {}

pub type CognitoTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

pub type CognitoClient = oauth2::Client<
    BasicErrorResponse,
    CognitoTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The OAuth client for a profile's hosted UI (a public client: no secret).
pub fn oauth_client(profile: &Profile) -> Result<CognitoClient, AuthError> {
    let url = |path: &str| format!("{}{path}", profile.domain);
    let bad = |e: url::ParseError| {
        AuthError::Config(format!(
            "domain {:?} does not make a valid URL: {e}",
            profile.domain
        ))
    };
    Ok(
        oauth2::Client::new(ClientId::new(profile.client_id.clone()))
            .set_auth_uri(AuthUrl::new(url("/oauth2/authorize")).map_err(bad)?)
            .set_token_uri(TokenUrl::new(url("/oauth2/token")).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(profile.redirect_uri()).map_err(bad)?),
    )
}

/// An HTTP client for the token endpoint: no redirects (a token request must never be
/// forwarded), bounded time.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client builds")
}

/// Describes a failed token request without echoing any part of a response body (which
/// could hold a token).
pub fn describe_token_error<RE: std::error::Error + 'static>(
    err: RequestTokenError<RE, BasicErrorResponse>,
    profile: &Profile,
) -> AuthError {
    match err {
        RequestTokenError::ServerResponse(resp) => {
            // Shown to the user: the server's words, without control characters.
            let code = crate::httpd::printable(resp.error().as_ref(), 100);
            if code == "invalid_grant" {
                AuthError::SignedOut {
                    profile: profile.name.clone(),
                }
            } else {
                AuthError::Token(format!("the token endpoint refused the request: {code}"))
            }
        }
        RequestTokenError::Request(e) => AuthError::Network(format!(
            "cannot reach {}: {}",
            profile.domain,
            error_chain(&e)
        )),
        RequestTokenError::Parse(_, _) => {
            AuthError::Token("the token endpoint's answer could not be read".into())
        }
        RequestTokenError::Other(why) => AuthError::Token(why),
    }
}

/// `e: cause: cause`, for errors whose Display hides the useful part in `source()`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

/// The token file: the state, whose secrets are blank when the keyring keeps them.
#[derive(Serialize, Deserialize)]
struct FileRecord {
    #[serde(flatten)]
    state: TokenState,
    /// The refresh and ID tokens are in the OS keyring, not here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    in_keyring: bool,
}

/// What the OS keyring keeps for a sign-in.
#[derive(Serialize, Deserialize)]
struct Secrets {
    refresh_token: String,
    id_token: Option<String>,
}

/// Where a sign-in's secrets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStorage {
    /// The OS keyring (Secret Service).
    Keyring,
    /// The 0600 token file.
    File,
}

impl TokenStorage {
    pub fn name(self) -> &'static str {
        match self {
            TokenStorage::Keyring => "keyring",
            TokenStorage::File => "file",
        }
    }
}

/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 64 << 10;

/// What is stored for a signed-in profile.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenState {
    pub refresh_token: String,
    pub id_token: Option<String>,
    /// Unix seconds.
    pub id_token_expires: Option<u64>,
    pub identity_id: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    /// Unix seconds of the sign-in (the code exchange); kept by refreshes.
    #[serde(default)]
    pub signed_in_at: Option<u64>,
    /// Unix seconds when the refresh token ends, when the token endpoint said.
    #[serde(default)]
    pub refresh_token_expires: Option<u64>,
}

impl std::fmt::Debug for TokenState {
    // Tokens never reach a log, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenState")
            .field("username", &self.username)
            .field("identity_id", &self.identity_id)
            .field("id_token_expires", &self.id_token_expires)
            .field("signed_in_at", &self.signed_in_at)
            .finish_non_exhaustive()
    }
}

/// Claims cognifs reads from an ID token. The token came straight from the token endpoint
/// over TLS, so it is read, not verified; the identity pool verifies it.
#[derive(Debug, Default, Deserialize)]
pub struct IdClaims {
    pub exp: Option<u64>,
    #[serde(rename = "cognito:username")]
    pub username: Option<String>,
    pub email: Option<String>,
}

pub fn read_claims(id_token: &str) -> IdClaims {
    id_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or_default()
}

impl TokenState {
    /// Builds the state from a token response; `previous_refresh` is kept when the answer
    /// carries no new refresh token (Cognito rotates only when rotation is enabled).
    pub fn from_response(
        resp: &CognitoTokenResponse,
        previous: Option<&TokenState>,
    ) -> Result<Self, AuthError> {
        let id_token = resp.extra_fields().id_token.clone().ok_or_else(|| {
            AuthError::Token(
                "the token endpoint returned no id_token (is the `openid` scope allowed?)".into(),
            )
        })?;
        let refresh_token = match (resp.refresh_token(), previous) {
            (Some(r), _) => r.secret().clone(),
            (None, Some(p)) => p.refresh_token.clone(),
            (None, None) => {
                return Err(AuthError::Token(
                    "the token endpoint returned no refresh_token".into(),
                ));
            }
        };
        let claims = read_claims(&id_token);
        let expires = claims
            .exp
            .or_else(|| resp.expires_in().map(|d| unix_now() + d.as_secs()));
        Ok(Self {
            refresh_token,
            id_token: Some(id_token),
            id_token_expires: expires,
            // A new sign-in may be a different user: the identity is looked up again.
            identity_id: previous
                .filter(|p| p.username == claims.username)
                .and_then(|p| p.identity_id.clone()),
            username: claims.username,
            email: claims.email,
            signed_in_at: previous.and_then(|p| p.signed_in_at),
            refresh_token_expires: resp
                .extra_fields()
                .refresh_token_expires_in
                .map(|secs| unix_now().saturating_add(secs))
                .or_else(|| previous.and_then(|p| p.refresh_token_expires)),
        })
    }

    /// When this sign-in ends and what says so: the token endpoint's own word, else the
    /// sign-in time plus `lifetime` (the profile's `sign_in_lifetime`). `None` for a sign-in
    /// stored before cognifs kept its time.
    pub fn sign_in_ends(&self, lifetime: Duration) -> Option<(u64, SignInEndFrom)> {
        if let Some(t) = self.refresh_token_expires {
            return Some((t, SignInEndFrom::TokenEndpoint));
        }
        self.signed_in_at.map(|t| {
            (
                t.saturating_add(lifetime.as_secs()),
                SignInEndFrom::Lifetime,
            )
        })
    }

    /// Whether the ID token is good for at least `margin` more.
    pub fn id_token_fresh(&self, margin: Duration) -> bool {
        self.id_token.is_some()
            && self
                .id_token_expires
                .is_some_and(|exp| exp > unix_now() + margin.as_secs())
    }
}

/// What a sign-in's end was learnt from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInEndFrom {
    /// The token endpoint's `refresh_token_expires_in`.
    TokenEndpoint,
    /// The sign-in time plus the profile's `sign_in_lifetime`.
    Lifetime,
}

impl SignInEndFrom {
    pub fn name(self) -> &'static str {
        match self {
            SignInEndFrom::TokenEndpoint => "token endpoint",
            SignInEndFrom::Lifetime => "sign_in_lifetime",
        }
    }
}

/// The token file of one profile.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
    /// Whether the OS keyring may keep the secrets (where there is one).
    use_keyring: bool,
}

impl TokenStore {
    pub fn new(state_dir: &Path, profile: &str) -> Self {
        Self {
            dir: state_dir.join(profile),
            use_keyring: true,
        }
    }

    /// The same store, never using the OS keyring (tests that must not touch the user's).
    pub fn file_only(mut self) -> Self {
        self.use_keyring = false;
        self
    }

    fn keyring(&self) -> Option<super::keyring::Keyring> {
        self.use_keyring.then(super::keyring::keyring).flatten()
    }

    pub fn for_profile(profile: &Profile) -> Self {
        Self::new(&crate::config::state_dir(), &profile.name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("tokens.json")
    }

    /// The stored state, `None` when not signed in. A file others can read is refused.
    pub fn load(&self) -> Result<Option<TokenState>, AuthError> {
        let Some((state, loose_mode)) = self.load_whatever_mode()? else {
            return Ok(None);
        };
        if let Some(mode) = loose_mode {
            let path = self.path();
            return Err(AuthError::Insecure(format!(
                "permissions {mode:04o} for {} are too open: the file holds your sign-in and must be readable by you alone. \
                 Run `chmod 600 {}` (or `cognifs login` again).",
                path.display(),
                path.display()
            )));
        }
        Ok(Some(state))
    }

    /// The stored state whatever the file's mode, with the mode when group or others can
    /// read it: for `logout`, which must revoke a sign-in exactly when it may have leaked.
    /// Secrets kept in the OS keyring are fetched from it.
    pub fn load_whatever_mode(&self) -> Result<Option<(TokenState, Option<u32>)>, AuthError> {
        let Some((record, mode)) = self.read_record()? else {
            return Ok(None);
        };
        let mut state = record.state;
        if record.in_keyring {
            let Some(secrets) = self.keyring_secrets()? else {
                // The keyring lost it (or someone removed it): signed out.
                return Ok(None);
            };
            state.refresh_token = secrets.refresh_token;
            state.id_token = secrets.id_token;
        }
        Ok(Some((state, mode)))
    }

    /// What the token file says without the secrets (never asks the keyring): who, which
    /// identity, since when, and where the secrets are. For `status`.
    pub fn load_public(&self) -> Result<Option<(TokenState, TokenStorage)>, AuthError> {
        Ok(self.read_record()?.map(|(mut r, _)| {
            r.state.refresh_token.clear();
            r.state.id_token = None;
            let storage = if r.in_keyring {
                TokenStorage::Keyring
            } else {
                TokenStorage::File
            };
            (r.state, storage)
        }))
    }

    fn keyring_secrets(&self) -> Result<Option<Secrets>, AuthError> {
        let unreachable = |why: String| {
            AuthError::Io(format!(
                "the sign-in of {} is kept in the OS keyring, which cannot be reached ({why}); \
                 unlock it, or sign in again with `cognifs login` (COGNIFS_TOKEN_STORAGE=file keeps it in the file)",
                self.path().display()
            ))
        };
        let keyring = self
            .keyring()
            .ok_or_else(|| unreachable("no Secret Service on the session bus".into()))?;
        let Some(raw) = keyring.get(&self.path()).map_err(unreachable)? else {
            return Ok(None);
        };
        serde_json::from_str(&raw).map(Some).map_err(|_| {
            AuthError::Io(
                "the sign-in kept in the OS keyring is damaged; run `cognifs login` again".into(),
            )
        })
    }

    /// The token file as written: the state (secrets blank when in the keyring) and the
    /// mode when group or others can read it.
    fn read_record(&self) -> Result<Option<(FileRecord, Option<u32>)>, AuthError> {
        use std::io::Read;
        let path = self.path();
        let read_err =
            |e: std::io::Error| AuthError::Io(format!("reading {}: {e}", path.display()));
        // Never through a symlink: the file is ours, in our 0700 directory.
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o777;
        // A token file is a few KiB; more is not ours.
        let mut raw = Vec::new();
        Read::by_ref(&mut file)
            .take(MAX_TOKEN_FILE + 1)
            .read_to_end(&mut raw)
            .map_err(read_err)?;
        let damaged = |why: String| {
            AuthError::Io(format!(
                "{} is damaged ({why}); run `cognifs login` again",
                path.display()
            ))
        };
        if raw.len() as u64 > MAX_TOKEN_FILE {
            return Err(damaged(format!("larger than {MAX_TOKEN_FILE} bytes")));
        }
        let record = serde_json::from_slice(&raw).map_err(|e| damaged(e.to_string()))?;
        Ok(Some((record, (mode & 0o077 != 0).then_some(mode))))
    }

    /// Keeps `state`: its secrets in the OS keyring when there is one (the file then holds
    /// the rest), else all of it in the file. The file is written atomically: a reader
    /// sees the old file or the new one, never half of one.
    pub fn save(&self, state: &TokenState) -> Result<(), AuthError> {
        let secrets = Secrets {
            refresh_token: state.refresh_token.clone(),
            id_token: state.id_token.clone(),
        };
        let in_keyring = match self.keyring() {
            Some(k) => {
                let json =
                    serde_json::to_string(&secrets).map_err(|e| AuthError::Io(e.to_string()))?;
                match k.set(&self.path(), &json) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!("keeping the sign-in in the token file instead: {e}");
                        false
                    }
                }
            }
            None => false,
        };
        let mut kept = state.clone();
        if in_keyring {
            kept.refresh_token.clear();
            kept.id_token = None;
        }
        self.write_file(&FileRecord {
            state: kept,
            in_keyring,
        })?;
        if !in_keyring && let Some(k) = self.keyring() {
            // An older sign-in kept there must not outlive this one.
            let _ = k.delete(&self.path());
        }
        Ok(())
    }

    /// Where the secrets of a saved sign-in are.
    pub fn storage(&self) -> Option<TokenStorage> {
        self.load_public().ok().flatten().map(|(_, s)| s)
    }

    fn write_file(&self, record: &FileRecord) -> Result<(), AuthError> {
        let io = |what: &str, e: std::io::Error| {
            AuthError::Io(format!("{what} {}: {e}", self.dir.display()))
        };
        fs::create_dir_all(&self.dir).map_err(|e| io("creating", e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io("securing", e))?;
        // A name of our own, created here (O_EXCL) and never through a symlink planted in
        // its place (O_NOFOLLOW).
        let tmp = self.dir.join(format!(
            ".tokens.json.{}.{:016x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| io("writing tokens in", e))
    }

    /// Deletes the sign-in: the file, and what the OS keyring keeps for it.
    pub fn delete(&self) -> Result<bool, AuthError> {
        if let Some(k) = self.keyring()
            && let Err(e) = k.delete(&self.path())
        {
            return Err(AuthError::Io(format!("deleting the sign-in from {e}")));
        }
        match fs::remove_file(self.path()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(AuthError::Io(format!(
                "deleting {}: {e}",
                self.path().display()
            ))),
        }
    }

    /// Changes whenever the file is rewritten, replaced or chmod-ed (ctime, inode, mode), to
    /// notice a new `cognifs login` or a permissions fix by another process.
    pub fn fingerprint(&self) -> Option<(i64, i64, u64, u32)> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(self.path()).ok()?;
        Some((m.ctime(), m.ctime_nsec(), m.ino(), m.mode()))
    }
}

/// The refresh_token grant. Re-reads the file first: another cognifs process of the same
/// profile may have rotated the refresh token already. Stores the answer at once.
pub async fn refresh(
    profile: &Profile,
    store: &TokenStore,
    http: &reqwest::Client,
) -> Result<TokenState, AuthError> {
    let current = store.load()?.ok_or_else(|| AuthError::NotSignedIn {
        profile: profile.name.clone(),
    })?;
    let client = oauth_client(profile)?;
    let resp = client
        .exchange_refresh_token(&RefreshToken::new(current.refresh_token.clone()))
        .request_async(http)
        .await
        .map_err(|e| describe_token_error(e, profile))?;
    let mut next = TokenState::from_response(&resp, Some(&current))?;
    next.identity_id = current.identity_id.clone();
    // If a login replaced the file while we were asking, its state wins over ours.
    if let Some(now) = store.load()?
        && now.refresh_token != current.refresh_token
    {
        return Ok(now);
    }
    store.save(&next)?;
    Ok(next)
}

/// Revokes the refresh token at the hosted UI (RFC 7009).
pub async fn revoke(
    profile: &Profile,
    refresh_token: &str,
    http: &reqwest::Client,
) -> Result<(), AuthError> {
    // Sent by hand: the oauth2 crate refuses a revocation endpoint that is not https, which
    // rules out devstack and any loopback test server.
    let resp = http
        .post(format!("{}/oauth2/revoke", profile.domain))
        .form(&[
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
            ("client_id", profile.client_id.as_str()),
        ])
        .send()
        .await
        .map_err(|e| {
            AuthError::Network(format!(
                "cannot reach {}: {}",
                profile.domain,
                error_chain(&e)
            ))
        })?;
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    let code = resp
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["error"].as_str().map(|e| crate::httpd::printable(e, 100)))
        .unwrap_or_else(|| status.to_string());
    Err(AuthError::Token(format!("revocation refused: {code}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(refresh: &str) -> TokenState {
        TokenState {
            refresh_token: refresh.into(),
            id_token: Some("h.e.s".into()),
            id_token_expires: Some(unix_now() + 600),
            identity_id: Some("us-east-1:abc".into()),
            username: Some("alice".into()),
            email: None,
            signed_in_at: Some(1_700_000_000),
            refresh_token_expires: None,
        }
    }

    #[test]
    fn saves_0600_in_a_0700_dir_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path(), "default").file_only();
        assert!(store.load().unwrap().is_none());
        // One state, saved and compared: two calls of `state` may fall in two seconds.
        let saved = state("r1");
        store.save(&saved).unwrap();
        assert_eq!(
            fs::metadata(store.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(store.load().unwrap().unwrap(), saved);
        store.save(&state("r2")).unwrap();
        assert_eq!(store.load().unwrap().unwrap().refresh_token, "r2");
        assert_eq!(
            fs::read_dir(store.dir()).unwrap().count(),
            1,
            "no temp files left"
        );
        assert!(store.delete().unwrap());
        assert!(!store.delete().unwrap());
    }

    #[test]
    fn refuses_a_token_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path(), "work").file_only();
        store.save(&state("r1")).unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");
    }

    #[test]
    fn logout_reads_a_loose_file_and_says_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path(), "work").file_only();
        store.save(&state("r1")).unwrap();
        let (s, loose) = store.load_whatever_mode().unwrap().unwrap();
        assert_eq!((s.refresh_token.as_str(), loose), ("r1", None));
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let (s, loose) = store.load_whatever_mode().unwrap().unwrap();
        assert_eq!((s.refresh_token.as_str(), loose), ("r1", Some(0o644)));
    }

    #[test]
    fn the_token_file_is_never_read_or_written_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path(), "p").file_only();
        store.save(&state("r1")).unwrap();
        let elsewhere = dir.path().join("elsewhere.json");
        fs::rename(store.path(), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.path()).unwrap();
        assert!(store.load().is_err(), "a symlinked token file is refused");
        // Saving replaces the link (rename), and never writes through it.
        store.save(&state("r2")).unwrap();
        assert!(!fs::symlink_metadata(store.path()).unwrap().is_symlink());
        assert_eq!(
            serde_json::from_slice::<TokenState>(&fs::read(&elsewhere).unwrap())
                .unwrap()
                .refresh_token,
            "r1"
        );
    }

    #[test]
    fn the_sign_in_ends_when_the_server_says_else_after_the_lifetime() {
        let month = Duration::from_secs(30 * 86_400);
        let mut s = state("r");
        assert_eq!(
            s.sign_in_ends(month),
            Some((1_700_000_000 + 30 * 86_400, SignInEndFrom::Lifetime))
        );
        s.refresh_token_expires = Some(1_700_500_000);
        assert_eq!(
            s.sign_in_ends(month),
            Some((1_700_500_000, SignInEndFrom::TokenEndpoint))
        );
        s.refresh_token_expires = None;
        s.signed_in_at = None;
        assert_eq!(s.sign_in_ends(month), None);
        // A token file from before these fields still reads.
        let old = r#"{"refresh_token":"r","id_token":null,"id_token_expires":null,"identity_id":null,"username":null,"email":null}"#;
        let read: TokenState = serde_json::from_str(old).unwrap();
        assert_eq!(read.signed_in_at, None);
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let shown = format!("{:?}", state("super-secret-refresh"));
        assert!(
            !shown.contains("super-secret") && !shown.contains("h.e.s"),
            "{shown}"
        );
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let payload =
            URL_SAFE_NO_PAD.encode(r#"{"exp":42,"cognito:username":"bob","email":"b@x"}"#);
        let claims = read_claims(&format!("h.{payload}.s"));
        assert_eq!(
            (
                claims.exp,
                claims.username.as_deref(),
                claims.email.as_deref()
            ),
            (Some(42), Some("bob"), Some("b@x"))
        );
        assert!(read_claims("garbage").exp.is_none());
    }
}
