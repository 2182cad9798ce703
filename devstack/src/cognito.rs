//! The state of devstack's Cognito: users, authorization codes, refresh tokens, identities
//! and the AWS credentials issued to them. HTTP shapes live in `hosted_ui.rs` and
//! `identity.rs`; this module holds the rules. With a state file ([`Cognito::keep_state_in`])
//! the signing key, refresh grants and issued credentials survive a restart.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::jwt::Signer;
use crate::state;

/// How long an authorization code may wait for its token request (Cognito: 5 minutes).
pub const CODE_TTL: Duration = Duration::from_secs(300);

/// How long a refresh token works (Cognito's default app-client setting: 30 days).
pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Expired credentials are remembered this long so they are refused as `ExpiredToken`, as
/// AWS does, rather than as unknown; after that they are dropped so memory stays bounded.
const EXPIRED_CREDENTIALS_KEPT: Duration = Duration::from_secs(3600);

pub struct User {
    pub password: String,
    pub sub: String,
    pub email: String,
}

pub struct PendingCode {
    pub username: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub issued: SystemTime,
}

struct RefreshGrant {
    username: String,
    expires: SystemTime,
}

/// Credentials handed out by GetCredentialsForIdentity.
#[derive(Clone)]
pub struct IssuedCredentials {
    pub secret_key: String,
    pub session_token: String,
    pub identity_id: String,
    pub expires: SystemTime,
}

#[derive(Default)]
struct Grants {
    codes: HashMap<String, PendingCode>,
    /// By [`grant_key`] of the refresh token; a revoked grant is removed.
    refresh: HashMap<String, RefreshGrant>,
    /// By access key id.
    credentials: HashMap<String, IssuedCredentials>,
}

impl Grants {
    /// Drops what can no longer be used, so a long-running devstack (and its state file)
    /// does not grow without bound.
    fn prune(&mut self, now: SystemTime) {
        self.codes
            .retain(|_, c| now.duration_since(c.issued).unwrap_or_default() <= CODE_TTL);
        self.refresh.retain(|_, g| g.expires > now);
        let horizon = now - EXPIRED_CREDENTIALS_KEPT;
        self.credentials.retain(|_, c| c.expires > horizon);
    }
}

/// Refresh tokens are held by digest: the state file must not be a way to sign in.
fn grant_key(refresh_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(refresh_token.as_bytes()))
}

fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub struct Cognito {
    pub region: String,
    pub user_pool_id: String,
    pub client_id: String,
    pub identity_pool_id: String,
    pub callback_urls: Vec<String>,
    /// `http://127.0.0.1:PORT`, known once the listener is bound.
    pub base_url: String,
    pub token_ttl: Duration,
    pub credentials_ttl: Duration,
    /// How long a sign-in (its refresh token) works; [`REFRESH_TTL`] unless set.
    pub refresh_ttl: Duration,
    users: HashMap<String, User>,
    signer: Signer,
    grants: Mutex<Grants>,
    /// Where the grants are kept across restarts; `None`: in memory only.
    state_path: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    InvalidGrant(&'static str),
    InvalidClient,
    InvalidRequest(&'static str),
    UnsupportedGrantType,
}

#[derive(Debug, PartialEq, Eq)]
pub enum IdentityError {
    NotAuthorized(String),
    ResourceNotFound(String),
    InvalidParameter(String),
}

/// SHA-256 through aws-lc-rs, the one crypto library in the tree.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    URL_SAFE_NO_PAD.encode(buf)
}

fn random_upper(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A UUID that is the same every time for the same name: ids survive a restart of devstack.
fn stable_uuid(name: &str) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&sha256(name.as_bytes())[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cognito {
    pub fn new(
        region: &str,
        users: &[(String, String)],
        callback_port: u16,
        token_ttl: Duration,
        credentials_ttl: Duration,
    ) -> Self {
        // Fixed ids (per region) so a config written once keeps working across restarts.
        let pool_suffix: String =
            stable_uuid(&format!("pool:{region}")).simple().to_string()[..9].to_owned();
        let user_pool_id = format!("{region}_{pool_suffix}");
        let client_id = stable_uuid(&format!("client:{user_pool_id}"))
            .simple()
            .to_string()[..26]
            .to_owned();
        let identity_pool_id = format!(
            "{region}:{}",
            stable_uuid(&format!("identity-pool:{user_pool_id}"))
        );
        let users = users
            .iter()
            .map(|(name, password)| {
                let user = User {
                    password: password.clone(),
                    sub: stable_uuid(&format!("sub:{user_pool_id}:{name}")).to_string(),
                    email: format!("{name}@example.com"),
                };
                (name.clone(), user)
            })
            .collect();
        Self {
            region: region.to_owned(),
            user_pool_id,
            client_id,
            identity_pool_id,
            callback_urls: vec![
                format!("http://localhost:{callback_port}/callback"),
                format!("http://127.0.0.1:{callback_port}/callback"),
            ],
            base_url: String::new(),
            token_ttl,
            credentials_ttl,
            refresh_ttl: REFRESH_TTL,
            users,
            signer: Signer::generate(),
            grants: Mutex::new(Grants::default()),
            state_path: None,
        }
    }

    /// Keeps the signing key, refresh grants and issued credentials in the file at `path`
    /// (format in [`crate::state`]), first taking up what a previous run left there, so a
    /// restart is an outage rather than a sign-out. Rewrites the file at once, so the key is
    /// on disk before the first token is signed with it.
    pub fn keep_state_in(&mut self, path: PathBuf) -> anyhow::Result<()> {
        let loaded = state::load(&path).with_context(|| {
            format!(
                "reading {} (remove it to start afresh; everyone then signs in again)",
                path.display()
            )
        })?;
        match loaded {
            Some(saved) if saved.user_pool_id == self.user_pool_id => self
                .restore(saved)
                .with_context(|| format!("restoring from {}", path.display()))?,
            Some(saved) => tracing::info!(
                saved = saved.user_pool_id,
                current = self.user_pool_id,
                "state file is another user pool's (another --region); starting afresh"
            ),
            None => {}
        }
        let shown = path.display().to_string();
        self.state_path = Some(path);
        let mut grants = self.grants.lock().unwrap();
        grants.prune(SystemTime::now());
        let written = self.save(&grants);
        drop(grants);
        written.with_context(|| format!("writing {shown}"))
    }

    fn restore(&mut self, saved: state::State) -> anyhow::Result<()> {
        let pkcs8 = STANDARD
            .decode(&saved.signing_key.pkcs8)
            .context("signing key is not base64")?;
        self.signer = Signer::from_pkcs8(&pkcs8, saved.signing_key.kid)?;
        let grants = self.grants.get_mut().unwrap();
        // A user no longer configured cannot refresh, as a deleted Cognito user cannot.
        grants.refresh = saved
            .refresh_grants
            .into_iter()
            .filter(|(_, g)| self.users.contains_key(&g.username))
            .map(|(key, g)| {
                let grant = RefreshGrant {
                    username: g.username,
                    expires: from_unix_secs(g.expires),
                };
                (key, grant)
            })
            .collect();
        grants.credentials = saved
            .credentials
            .into_iter()
            .map(|(access_key, c)| {
                let issued = IssuedCredentials {
                    secret_key: c.secret_key,
                    session_token: c.session_token,
                    identity_id: c.identity_id,
                    expires: from_unix_secs(c.expires),
                };
                (access_key, issued)
            })
            .collect();
        Ok(())
    }

    /// Writes the state file, if there is one. Called with the grants locked, so writes land
    /// in the order of the changes they record.
    fn save(&self, grants: &Grants) -> io::Result<()> {
        let Some(path) = &self.state_path else {
            return Ok(());
        };
        let saved = state::State {
            version: state::VERSION,
            user_pool_id: self.user_pool_id.clone(),
            signing_key: state::SigningKey {
                kid: self.signer.kid().to_owned(),
                pkcs8: STANDARD.encode(self.signer.to_pkcs8()),
            },
            refresh_grants: grants
                .refresh
                .iter()
                .map(|(key, g)| {
                    let grant = state::RefreshGrant {
                        username: g.username.clone(),
                        expires: unix_secs(g.expires),
                    };
                    (key.clone(), grant)
                })
                .collect(),
            credentials: grants
                .credentials
                .iter()
                .map(|(access_key, c)| {
                    let saved = state::Credentials {
                        secret_key: c.secret_key.clone(),
                        session_token: c.session_token.clone(),
                        identity_id: c.identity_id.clone(),
                        expires: unix_secs(c.expires),
                    };
                    (access_key.clone(), saved)
                })
                .collect(),
        };
        state::save(path, &saved)
    }

    /// After a change to refresh grants or credentials: prune, then persist. A failed write
    /// is logged, not fatal: the grant works until a restart, as it would without a data dir.
    fn commit(&self, grants: &mut Grants) {
        grants.prune(SystemTime::now());
        if let Err(err) = self.save(grants) {
            tracing::warn!(%err, "could not write the state file; this change is lost on restart");
        }
    }

    pub fn issuer(&self) -> String {
        format!("{}/{}", self.base_url, self.user_pool_id)
    }

    /// The `Logins` map key that names this user pool.
    pub fn provider_name(&self) -> String {
        format!(
            "cognito-idp.{}.amazonaws.com/{}",
            self.region, self.user_pool_id
        )
    }

    pub fn jwks(&self) -> Value {
        self.signer.jwks()
    }

    pub fn check_password(&self, username: &str, password: &str) -> bool {
        // Compare hashes so the time taken says nothing about the password.
        self.users
            .get(username)
            .is_some_and(|u| sha256(u.password.as_bytes()) == sha256(password.as_bytes()))
    }

    pub fn issue_code(&self, pending: PendingCode) -> String {
        let code = random_token(24);
        self.grants
            .lock()
            .unwrap()
            .codes
            .insert(code.clone(), pending);
        code
    }

    fn tokens_for(&self, username: &str, scope: &str) -> Value {
        let user = &self.users[username];
        let now = unix_secs(SystemTime::now());
        let exp = now + self.token_ttl.as_secs();
        let id_token = self.signer.sign(&json!({
            "sub": user.sub,
            "aud": self.client_id,
            "email_verified": true,
            "token_use": "id",
            "auth_time": now,
            "iss": self.issuer(),
            "cognito:username": username,
            "exp": exp,
            "iat": now,
            "email": user.email,
            "jti": Uuid::new_v4().to_string(),
        }));
        let access_token = self.signer.sign(&json!({
            "sub": user.sub,
            "token_use": "access",
            "scope": scope,
            "auth_time": now,
            "iss": self.issuer(),
            "exp": exp,
            "iat": now,
            "client_id": self.client_id,
            "username": username,
            "jti": Uuid::new_v4().to_string(),
        }));
        json!({
            "id_token": id_token,
            "access_token": access_token,
            "expires_in": self.token_ttl.as_secs(),
            "token_type": "Bearer",
        })
    }

    /// `grant_type=authorization_code`. The code is spent by the attempt, right or wrong.
    pub fn exchange_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Value, TokenError> {
        if client_id != self.client_id {
            return Err(TokenError::InvalidClient);
        }
        let pending = self
            .grants
            .lock()
            .unwrap()
            .codes
            .remove(code)
            .ok_or(TokenError::InvalidGrant("unknown or used code"))?;
        if pending.issued.elapsed().unwrap_or_default() > CODE_TTL {
            return Err(TokenError::InvalidGrant("code expired"));
        }
        if pending.client_id != client_id || pending.redirect_uri != redirect_uri {
            return Err(TokenError::InvalidGrant(
                "redirect_uri or client_id does not match",
            ));
        }
        if verifier.len() < 43 || verifier.len() > 128 {
            return Err(TokenError::InvalidRequest(
                "code_verifier must be 43 to 128 characters",
            ));
        }
        if URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes())) != pending.code_challenge {
            return Err(TokenError::InvalidGrant("code_verifier does not match"));
        }
        let mut tokens = self.tokens_for(&pending.username, &pending.scope);
        let refresh = random_token(48);
        let mut grants = self.grants.lock().unwrap();
        grants.refresh.insert(
            grant_key(&refresh),
            RefreshGrant {
                username: pending.username,
                expires: SystemTime::now() + self.refresh_ttl,
            },
        );
        self.commit(&mut grants);
        tokens["refresh_token"] = Value::String(refresh);
        Ok(tokens)
    }

    /// `grant_type=refresh_token`: new ID and access tokens, no new refresh token.
    pub fn refresh(&self, refresh_token: &str, client_id: &str) -> Result<Value, TokenError> {
        if client_id != self.client_id {
            return Err(TokenError::InvalidClient);
        }
        let username = {
            let grants = self.grants.lock().unwrap();
            match grants.refresh.get(&grant_key(refresh_token)) {
                Some(g) if g.expires > SystemTime::now() => g.username.clone(),
                _ => {
                    return Err(TokenError::InvalidGrant(
                        "refresh token is invalid or revoked",
                    ));
                }
            }
        };
        Ok(self.tokens_for(&username, "openid email profile"))
    }

    pub fn revoke(&self, refresh_token: &str, client_id: &str) -> Result<(), TokenError> {
        if client_id != self.client_id {
            return Err(TokenError::InvalidClient);
        }
        // Revoking an unknown token is not an error (RFC 7009). A revoked grant is dropped: an
        // unknown token is refused exactly as a revoked one is.
        let mut grants = self.grants.lock().unwrap();
        if grants.refresh.remove(&grant_key(refresh_token)).is_some() {
            self.commit(&mut grants);
        }
        Ok(())
    }

    /// Verifies an ID token as the identity pool does and returns its user's `sub`.
    fn verify_id_token(&self, logins: &Value) -> Result<String, IdentityError> {
        let logins = logins
            .as_object()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                IdentityError::NotAuthorized(
                    "Unauthenticated access is not supported for this identity pool.".into(),
                )
            })?;
        let token = logins
            .get(&self.provider_name())
            .and_then(Value::as_str)
            .ok_or_else(|| {
                IdentityError::NotAuthorized(
                    "Invalid login token. Not a valid provider for this identity pool.".into(),
                )
            })?;
        let invalid =
            |why: &str| IdentityError::NotAuthorized(format!("Invalid login token. {why}"));
        let claims = self
            .signer
            .verify(token)
            .map_err(|_| invalid("Signature verification failed."))?;
        if claims["exp"]
            .as_u64()
            .is_none_or(|exp| exp <= unix_secs(SystemTime::now()))
        {
            return Err(invalid("Token expired."));
        }
        if claims["aud"] != self.client_id.as_str() || claims["iss"] != self.issuer().as_str() {
            return Err(invalid(
                "Token is not from a supported provider of this identity pool.",
            ));
        }
        if claims["token_use"] != "id" {
            return Err(invalid("Not an ID token."));
        }
        claims["sub"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid("No sub."))
    }

    fn identity_for_sub(&self, sub: &str) -> String {
        format!(
            "{}:{}",
            self.region,
            stable_uuid(&format!("identity:{}:{sub}", self.identity_pool_id))
        )
    }

    pub fn get_id(&self, identity_pool_id: &str, logins: &Value) -> Result<String, IdentityError> {
        if identity_pool_id != self.identity_pool_id {
            return Err(IdentityError::ResourceNotFound(format!(
                "IdentityPool '{identity_pool_id}' not found."
            )));
        }
        let sub = self.verify_id_token(logins)?;
        Ok(self.identity_for_sub(&sub))
    }

    pub fn credentials_for(
        &self,
        identity_id: &str,
        logins: &Value,
    ) -> Result<(String, IssuedCredentials), IdentityError> {
        let (region, rest) = identity_id.split_once(':').ok_or_else(|| {
            IdentityError::InvalidParameter(
                "1 validation error detected: Value at 'identityId' failed to satisfy constraint"
                    .into(),
            )
        })?;
        if region != self.region || Uuid::parse_str(rest).is_err() {
            return Err(IdentityError::ResourceNotFound(format!(
                "Identity '{identity_id}' not found."
            )));
        }
        let sub = self.verify_id_token(logins)?;
        if self.identity_for_sub(&sub) != identity_id {
            return Err(IdentityError::NotAuthorized(
                "Logins don't match. Please include at least one valid login for this identity."
                    .into(),
            ));
        }
        let access_key = format!("ASIA{}", random_upper(16));
        let issued = IssuedCredentials {
            secret_key: random_token(30),
            session_token: random_token(96),
            identity_id: identity_id.to_owned(),
            expires: SystemTime::now() + self.credentials_ttl,
        };
        let mut grants = self.grants.lock().unwrap();
        grants
            .credentials
            .insert(access_key.clone(), issued.clone());
        self.commit(&mut grants);
        Ok((access_key, issued))
    }

    /// Forgets every AWS credential issued so far, as revoking them would: S3 then refuses
    /// them as unknown (`InvalidAccessKeyId`). Sign-ins (refresh grants) are kept, so a client
    /// gets fresh credentials from GetCredentialsForIdentity. Returns how many were forgotten.
    pub fn forget_credentials(&self) -> usize {
        let mut grants = self.grants.lock().unwrap();
        let forgotten = grants.credentials.len();
        grants.credentials.clear();
        self.commit(&mut grants);
        forgotten
    }

    pub fn lookup_credentials(&self, access_key: &str) -> Option<IssuedCredentials> {
        self.grants
            .lock()
            .unwrap()
            .credentials
            .get(access_key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_well_formed() {
        let users = [("alice".to_owned(), "pw".to_owned())];
        let a = Cognito::new(
            "eu-west-1",
            &users,
            53682,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let b = Cognito::new(
            "eu-west-1",
            &users,
            53682,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        assert_eq!(a.user_pool_id, b.user_pool_id);
        assert!(a.user_pool_id.starts_with("eu-west-1_"));
        assert_eq!(a.client_id.len(), 26);
        assert_eq!(a.identity_for_sub("s"), b.identity_for_sub("s"));
        assert_ne!(a.identity_for_sub("s"), a.identity_for_sub("t"));
        assert!(a.check_password("alice", "pw"));
        assert!(!a.check_password("alice", "PW"));
        assert!(!a.check_password("bob", "pw"));
    }
}
