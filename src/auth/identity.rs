//! From a stored sign-in to AWS credentials, and keeping them fresh for as long as the
//! refresh token lives.
//!
//! [`Session::fetch_credentials`] does the whole exchange: refresh the ID token when it is
//! close to expiry, GetId once per sign-in (the identity id is stored with the tokens), then
//! GetCredentialsForIdentity. Both Cognito Identity calls are unsigned, as in AWS.
//!
//! [`start_refresher`] runs that exchange in a background task and publishes the result on a
//! watch channel. [`WatchedCredentials`] is the `ProvideCredentials` the S3 client signs with:
//! it only reads the channel, so a renewal never blocks an S3 call. Renewal happens when 80%
//! of the credentials' lifetime is used (at least 5 minutes before expiry when they last long
//! enough), with exponential backoff and jitter on network errors. A refused refresh token
//! (expired or revoked) puts the provider in a signed-out state — one error line saying
//! `run cognifs login`, S3 calls fail with that error — until the token file changes, which
//! is picked up without a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_sdk_cognitoidentity::error::ProvideErrorMetadata;
use rand::Rng;
use tokio::sync::watch;

use super::AuthError;
use super::tokens::{TokenState, TokenStore, error_chain, http_client, refresh};
use crate::config::Profile;

/// An ID token this close to expiry is refreshed before use.
const ID_TOKEN_MARGIN: Duration = Duration::from_secs(300);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often a signed-out refresher looks at the token file for a new sign-in.
const SIGNED_OUT_POLL: Duration = Duration::from_secs(2);

pub struct Session {
    pub profile: Profile,
    pub store: TokenStore,
    identity: aws_sdk_cognitoidentity::Client,
    http: reqwest::Client,
}

fn identity_client(profile: &Profile) -> aws_sdk_cognitoidentity::Client {
    let mut config = aws_sdk_cognitoidentity::Config::builder()
        .behavior_version(aws_sdk_cognitoidentity::config::BehaviorVersion::latest())
        .region(aws_sdk_cognitoidentity::config::Region::new(
            profile.region.clone(),
        ));
    if let Some(endpoint) = &profile.identity_endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_cognitoidentity::Client::from_conf(config.build())
}

fn identity_error<E, R>(
    err: aws_sdk_cognitoidentity::error::SdkError<E, R>,
    profile: &Profile,
) -> AuthError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_cognitoidentity::error::SdkError;
    match &err {
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or("error");
            let message = e.err().message().unwrap_or_default();
            AuthError::Identity(format!(
                "identity pool {} refused: {code}: {message}",
                profile.identity_pool_id
            ))
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            AuthError::Network(format!(
                "cannot reach Cognito Identity{}: {}",
                profile
                    .identity_endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default(),
                error_chain(&err)
            ))
        }
        _ => AuthError::Identity(error_chain(&err)),
    }
}

impl Session {
    pub fn new(profile: Profile) -> Self {
        let store = TokenStore::for_profile(&profile);
        Self::with_store(profile, store)
    }

    pub fn with_store(profile: Profile, store: TokenStore) -> Self {
        Self {
            identity: identity_client(&profile),
            http: http_client(),
            profile,
            store,
        }
    }

    /// The stored sign-in with an ID token good for a while longer.
    pub async fn fresh_tokens(&self) -> Result<TokenState, AuthError> {
        let state = self.store.load()?.ok_or_else(|| AuthError::NotSignedIn {
            profile: self.profile.name.clone(),
        })?;
        if state.id_token_fresh(ID_TOKEN_MARGIN) {
            return Ok(state);
        }
        refresh(&self.profile, &self.store, &self.http).await
    }

    /// The identity id, from the token file or (once per sign-in) from GetId.
    pub async fn identity_id(&self, state: &mut TokenState) -> Result<String, AuthError> {
        if let Some(id) = &state.identity_id {
            return Ok(id.clone());
        }
        let id = self
            .identity
            .get_id()
            .identity_pool_id(&self.profile.identity_pool_id)
            .logins(
                self.profile.provider_name(),
                state.id_token.clone().unwrap_or_default(),
            )
            .send()
            .await
            .map_err(|e| identity_error(e, &self.profile))?
            .identity_id
            .ok_or_else(|| AuthError::Identity("GetId returned no identity id".into()))?;
        state.identity_id = Some(id.clone());
        self.store.save(state)?;
        Ok(id)
    }

    /// Refresh if needed, GetId if needed, GetCredentialsForIdentity.
    pub async fn fetch_credentials(&self) -> Result<(String, Credentials), AuthError> {
        let mut state = self.fresh_tokens().await?;
        let identity_id = self.identity_id(&mut state).await?;
        let out = self
            .identity
            .get_credentials_for_identity()
            .identity_id(&identity_id)
            .logins(
                self.profile.provider_name(),
                state.id_token.clone().unwrap_or_default(),
            )
            .send()
            .await
            .map_err(|e| identity_error(e, &self.profile))?;
        let c = out.credentials.ok_or_else(|| {
            AuthError::Identity("GetCredentialsForIdentity returned no credentials".into())
        })?;
        let expiry = c.expiration.and_then(|e| SystemTime::try_from(e).ok());
        let (Some(key), Some(secret)) = (c.access_key_id, c.secret_key) else {
            return Err(AuthError::Identity(
                "GetCredentialsForIdentity returned incomplete credentials".into(),
            ));
        };
        Ok((
            identity_id,
            Credentials::new(key, secret, c.session_token, expiry, "cognifs"),
        ))
    }
}

/// What the S3 client signs with right now.
#[derive(Clone, Debug)]
pub enum CredentialState {
    Ready(Credentials),
    SignedOut(String),
}

/// `ProvideCredentials` backed by the refresher's watch channel.
#[derive(Clone, Debug)]
pub struct WatchedCredentials {
    rx: watch::Receiver<CredentialState>,
    /// When the credentials in use were obtained: at start, then at each renewal.
    obtained: Arc<Mutex<SystemTime>>,
}

impl WatchedCredentials {
    pub fn current(&self) -> CredentialState {
        self.rx.borrow().clone()
    }

    /// When the credentials were last obtained (the first fetch, then each renewal).
    pub fn last_renewal(&self) -> SystemTime {
        *self.obtained.lock().unwrap()
    }

    pub fn expiry(&self) -> Option<SystemTime> {
        match &*self.rx.borrow() {
            CredentialState::Ready(c) => c.expiry(),
            CredentialState::SignedOut(_) => None,
        }
    }
}

impl ProvideCredentials for WatchedCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(match self.current() {
            CredentialState::Ready(c) => Ok(c),
            CredentialState::SignedOut(why) => Err(CredentialsError::not_loaded(why)),
        })
    }
}

/// When to renew credentials obtained at `obtained` that expire at `expiry`.
pub fn renew_delay(obtained: SystemTime, expiry: Option<SystemTime>) -> Duration {
    let Some(expiry) = expiry else {
        return Duration::from_secs(3000);
    };
    let lifetime = expiry.duration_since(obtained).unwrap_or_default();
    let mut at = lifetime.mul_f64(0.8);
    if lifetime >= Duration::from_secs(25 * 60) {
        at = at.min(lifetime - Duration::from_secs(300));
    }
    let elapsed = SystemTime::now()
        .duration_since(obtained)
        .unwrap_or_default();
    at.saturating_sub(elapsed).max(Duration::from_millis(200))
}

fn with_jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..1.0))
}

pub struct Refresher {
    pub identity_id: String,
    pub credentials: WatchedCredentials,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fetches credentials once (failing fast: not signed in, refused, unreachable), then keeps
/// them fresh in the background.
pub async fn start_refresher(session: Session) -> Result<Refresher, AuthError> {
    let (identity_id, first) = session.fetch_credentials().await?;
    let (tx, rx) = watch::channel(CredentialState::Ready(first.clone()));
    let obtained = Arc::new(Mutex::new(SystemTime::now()));
    let task = tokio::spawn(refresh_loop(session, tx, first.expiry(), obtained.clone()));
    Ok(Refresher {
        identity_id,
        credentials: WatchedCredentials { rx, obtained },
        task,
    })
}

async fn refresh_loop(
    session: Session,
    tx: watch::Sender<CredentialState>,
    mut expiry: Option<SystemTime>,
    renewed: Arc<Mutex<SystemTime>>,
) {
    let mut obtained = *renewed.lock().unwrap();
    let profile = session.profile.name.clone();
    let mut backoff = BACKOFF_START;
    let mut delay = renew_delay(obtained, expiry);
    loop {
        tokio::time::sleep(delay).await;
        // Taken before the attempt, so a login that lands while it fails is not missed.
        let seen = session.store.fingerprint();
        match session.fetch_credentials().await {
            Ok((_, creds)) => {
                obtained = SystemTime::now();
                *renewed.lock().unwrap() = obtained;
                expiry = creds.expiry();
                tracing::info!(profile, expires_in = ?expiry.and_then(|e| e.duration_since(obtained).ok()), "credentials renewed");
                let _ = tx.send(CredentialState::Ready(creds));
                backoff = BACKOFF_START;
                delay = renew_delay(obtained, expiry);
            }
            Err(
                err @ (AuthError::SignedOut { .. }
                | AuthError::NotSignedIn { .. }
                | AuthError::Insecure(_)),
            ) => {
                tracing::error!(profile, "{err}");
                let _ = tx.send(CredentialState::SignedOut(err.to_string()));
                while session.store.fingerprint() == seen {
                    tokio::time::sleep(SIGNED_OUT_POLL).await;
                }
                tracing::info!(profile, "token file changed; signing in again");
                backoff = BACKOFF_START;
                delay = Duration::ZERO;
            }
            Err(err) => {
                // Keep what we have (it may still be valid) and try again soon.
                tracing::warn!(profile, retry_in = ?backoff, "credential renewal failed: {err}");
                delay = with_jitter(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_80_percent_or_five_minutes_before_expiry() {
        let now = SystemTime::now();
        let hour = renew_delay(now, Some(now + Duration::from_secs(3600)));
        assert!(
            hour <= Duration::from_secs(2880) && hour > Duration::from_secs(2870),
            "{hour:?}"
        );
        let short = renew_delay(now, Some(now + Duration::from_secs(10)));
        assert!(
            short <= Duration::from_secs(8) && short > Duration::from_secs(7),
            "{short:?}"
        );
        // Thirty minutes: 80% is 24 min, 5 minutes before expiry is 25: the earlier wins.
        let half = renew_delay(now, Some(now + Duration::from_secs(1800)));
        assert!(half <= Duration::from_secs(1440), "{half:?}");
        // Already past due: soon, but never a tight loop.
        assert_eq!(
            renew_delay(now - Duration::from_secs(100), Some(now)),
            Duration::from_millis(200)
        );
    }
}
