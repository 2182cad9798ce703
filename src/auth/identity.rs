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
//! ± 10% (drawn each time) of the credentials' lifetime is used (at least 5 minutes before
//! expiry when they last long enough), with exponential backoff and jitter on network errors. A refused refresh token
//! (expired or revoked) puts the provider in a signed-out state — one error line saying
//! `run cognifs login`, S3 calls fail with that error — until the token file changes, which
//! is picked up without a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_sdk_cognitoidentity::error::ProvideErrorMetadata;
use rand::Rng;
use tokio::sync::{Notify, watch};

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
        ))
        .timeout_config(profile.sdk_timeouts());
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
        self.bounded(
            "the token endpoint",
            refresh(&self.profile, &self.store, &self.http),
        )
        .await
    }

    /// One step of the exchange, given at most the operation timeout: a server that accepts
    /// and then stalls must not hold the renewal until the credentials expire.
    async fn bounded<T>(
        &self,
        what: &str,
        step: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        let limit = self.profile.operation_timeout;
        tokio::time::timeout(limit, step).await.unwrap_or_else(|_| {
            Err(AuthError::Network(format!(
                "{what} did not answer within {} s (operation_timeout)",
                limit.as_secs()
            )))
        })
    }

    /// The identity id, from the token file or (once per sign-in) from GetId.
    pub async fn identity_id(&self, state: &mut TokenState) -> Result<String, AuthError> {
        if let Some(id) = &state.identity_id {
            return Ok(id.clone());
        }
        let get_id = self
            .identity
            .get_id()
            .identity_pool_id(&self.profile.identity_pool_id)
            .logins(
                self.profile.provider_name(),
                state.id_token.clone().unwrap_or_default(),
            )
            .send();
        let id = self
            .bounded("Cognito Identity (GetId)", async {
                get_id.await.map_err(|e| identity_error(e, &self.profile))
            })
            .await?
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
        let get_credentials = self
            .identity
            .get_credentials_for_identity()
            .identity_id(&identity_id)
            .logins(
                self.profile.provider_name(),
                state.id_token.clone().unwrap_or_default(),
            )
            .send();
        let out = self
            .bounded("Cognito Identity (GetCredentialsForIdentity)", async {
                get_credentials
                    .await
                    .map_err(|e| identity_error(e, &self.profile))
            })
            .await?;
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

/// What the refresher publishes: the credentials, and counters that let a caller wait for
/// a renewal it asked for.
#[derive(Clone, Debug)]
struct Published {
    state: CredentialState,
    /// Grows with every new set of credentials.
    generation: u64,
    /// Grows with every renewal attempt asked for by [`WatchedCredentials::renew_after`],
    /// successful or not, so that nobody waits for a renewal that failed.
    forced_attempts: u64,
}

/// `ProvideCredentials` backed by the refresher's watch channel.
#[derive(Clone, Debug)]
pub struct WatchedCredentials {
    rx: watch::Receiver<Published>,
    /// When the credentials in use were obtained: at start, then at each renewal.
    obtained: Arc<Mutex<SystemTime>>,
    /// Wakes the refresher for a renewal now.
    renew_now: Arc<Notify>,
    /// One more than the newest generation a request reported refused (0: none).
    refused: Arc<AtomicU64>,
}

impl WatchedCredentials {
    pub fn current(&self) -> CredentialState {
        self.rx.borrow().state.clone()
    }

    /// When the credentials were last obtained (the first fetch, then each renewal).
    pub fn last_renewal(&self) -> SystemTime {
        *self.obtained.lock().unwrap()
    }

    pub fn expiry(&self) -> Option<SystemTime> {
        match &self.rx.borrow().state {
            CredentialState::Ready(c) => c.expiry(),
            CredentialState::SignedOut(_) => None,
        }
    }
}

#[async_trait::async_trait]
impl crate::store::Renewer for WatchedCredentials {
    fn generation(&self) -> u64 {
        self.rx.borrow().generation
    }

    async fn renew_after(&self, stale: u64) {
        let attempts = self.rx.borrow().forced_attempts;
        if self.generation() > stale {
            return;
        }
        let mut rx = self.rx.clone();
        self.refused.fetch_max(stale + 1, Ordering::SeqCst);
        self.renew_now.notify_one();
        // Bounded: a refresher stuck on an unreachable Cognito must not hold S3 calls.
        let _ = tokio::time::timeout(
            FORCED_RENEWAL_WAIT,
            rx.wait_for(|p| p.generation > stale || p.forced_attempts > attempts),
        )
        .await;
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

/// How long a request refused for stale credentials waits for the renewal it asked for.
const FORCED_RENEWAL_WAIT: Duration = Duration::from_secs(20);

/// The refresher's pacing.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// The longest the refresher sleeps before looking at the wall clock again. Its timers
    /// run on the monotonic clock, which stops while the machine is suspended; the wall clock
    /// does not, so a laptop that slept past the renewal time renews within this of waking.
    pub wall_clock_check: Duration,
    /// Renewals asked for by refused requests are at least this far apart: credentials that
    /// S3 keeps refusing (a clock far off, a policy change) must not cause a renewal storm.
    pub forced_gap: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            wall_clock_check: Duration::from_secs(15),
            forced_gap: Duration::from_secs(5),
        }
    }
}

/// The wall clock, injectable so that tests can jump it (a suspend, a clock change).
pub trait WallClock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// When credentials obtained at `obtained` that expire at `expiry` are to be renewed: at
/// 80% of their lifetime ± 10% of it, drawn anew for every renewal (the first included), so
/// that machines that start or wake together do not all renew together; and at least 5
/// minutes before expiry when they last long enough (25 minutes or more).
pub fn renew_at(obtained: SystemTime, expiry: Option<SystemTime>) -> SystemTime {
    renew_at_jittered(obtained, expiry, rand::rng().random_range(-1.0..=1.0))
}

/// [`renew_at`] with its draw given: `jitter` in -1..=1 is where in ±10% of the lifetime.
pub fn renew_at_jittered(
    obtained: SystemTime,
    expiry: Option<SystemTime>,
    jitter: f64,
) -> SystemTime {
    let share = 0.8 + 0.1 * jitter.clamp(-1.0, 1.0);
    let Some(expiry) = expiry else {
        return obtained + Duration::from_secs(3750).mul_f64(share);
    };
    let lifetime = expiry.duration_since(obtained).unwrap_or_default();
    let mut at = lifetime.mul_f64(share);
    if lifetime >= Duration::from_secs(25 * 60) {
        at = at.min(lifetime - Duration::from_secs(300));
    }
    obtained + at
}

/// How long to sleep before looking again, at wall-clock time `now`, for a renewal due at
/// `due`: never past `check`, never a tight loop.
fn sleep_before_check(now: SystemTime, due: SystemTime, check: Duration) -> Duration {
    due.duration_since(now)
        .unwrap_or_default()
        .min(check)
        .max(Duration::from_millis(5).min(check))
}

fn with_jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..1.0))
}

/// Where the refresher gets credentials: the Cognito exchange, or a fake in tests.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    async fn fetch(&self) -> Result<Credentials, AuthError>;
    /// Changes when the user signs in again (the token file's identity).
    fn sign_in_marker(&self) -> Option<(i64, i64, u64, u32)>;
    fn profile_name(&self) -> &str;
}

#[async_trait::async_trait]
impl CredentialSource for Session {
    async fn fetch(&self) -> Result<Credentials, AuthError> {
        Ok(self.fetch_credentials().await?.1)
    }

    fn sign_in_marker(&self) -> Option<(i64, i64, u64, u32)> {
        self.store.fingerprint()
    }

    fn profile_name(&self) -> &str {
        &self.profile.name
    }
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
    let (credentials, task) =
        spawn_refresher(session, first, Arc::new(SystemClock), Pacing::default());
    Ok(Refresher {
        identity_id,
        credentials,
        task,
    })
}

/// Publishes `first` and spawns the loop that renews it, on `clock`'s schedule.
pub fn spawn_refresher(
    source: impl CredentialSource,
    first: Credentials,
    clock: Arc<dyn WallClock>,
    pacing: Pacing,
) -> (WatchedCredentials, tokio::task::JoinHandle<()>) {
    let obtained = Arc::new(Mutex::new(clock.now()));
    let (tx, rx) = watch::channel(Published {
        state: CredentialState::Ready(first.clone()),
        generation: 0,
        forced_attempts: 0,
    });
    let credentials = WatchedCredentials {
        rx,
        obtained: obtained.clone(),
        renew_now: Arc::new(Notify::new()),
        refused: Arc::new(AtomicU64::new(0)),
    };
    let task = tokio::spawn(refresh_loop(
        source,
        tx,
        first.expiry(),
        credentials.clone(),
        clock,
        pacing,
    ));
    (credentials, task)
}

async fn refresh_loop(
    source: impl CredentialSource,
    tx: watch::Sender<Published>,
    mut expiry: Option<SystemTime>,
    watched: WatchedCredentials,
    clock: Arc<dyn WallClock>,
    pacing: Pacing,
) {
    let renewed = &watched.obtained;
    let obtained = *renewed.lock().unwrap();
    let profile = source.profile_name().to_owned();
    let mut backoff = BACKOFF_START;
    let mut due = renew_at(obtained, expiry);
    let mut last_forced: Option<tokio::time::Instant> = None;
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(sleep_before_check(clock.now(), due, pacing.wall_clock_check)) => false,
            _ = watched.renew_now.notified() => true,
        };
        // Only for a refusal of the credentials in use: those refused before the last
        // renewal were replaced already.
        let forced = forced && watched.refused.load(Ordering::SeqCst) > tx.borrow().generation;
        if forced {
            // A request was refused for stale credentials: renew now (once per gap).
            if let Some(gap) = last_forced.map(|t| pacing.forced_gap.saturating_sub(t.elapsed())) {
                tokio::time::sleep(gap).await;
            }
            last_forced = Some(tokio::time::Instant::now());
            tracing::info!(profile, "S3 refused the credentials; renewing them now");
        } else if clock.now() < due {
            continue;
        }
        // Taken before the attempt, so a login that lands while it fails is not missed.
        let seen = source.sign_in_marker();
        match source.fetch().await {
            Ok(creds) => {
                let now = clock.now();
                *renewed.lock().unwrap() = now;
                expiry = creds.expiry();
                tracing::info!(profile, expires_in = ?expiry.and_then(|e| e.duration_since(now).ok()), "credentials renewed");
                tx.send_modify(|p| {
                    p.state = CredentialState::Ready(creds);
                    p.generation += 1;
                });
                backoff = BACKOFF_START;
                due = renew_at(now, expiry);
            }
            Err(
                err @ (AuthError::SignedOut { .. }
                | AuthError::NotSignedIn { .. }
                | AuthError::Insecure(_)),
            ) => {
                tracing::error!(profile, "{err}");
                tx.send_modify(|p| {
                    p.state = CredentialState::SignedOut(err.to_string());
                    p.generation += 1;
                    p.forced_attempts += u64::from(forced);
                });
                while source.sign_in_marker() == seen {
                    tokio::time::sleep(SIGNED_OUT_POLL).await;
                }
                tracing::info!(profile, "token file changed; signing in again");
                backoff = BACKOFF_START;
                due = clock.now();
                continue;
            }
            Err(err) => {
                // Keep what we have (it may still be valid) and try again soon.
                tracing::warn!(profile, retry_in = ?backoff, "credential renewal failed: {err}");
                due = clock.now() + with_jitter(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        if forced {
            tx.send_modify(|p| p.forced_attempts += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Renewer;

    #[test]
    fn renews_at_80_percent_or_five_minutes_before_expiry() {
        let now = SystemTime::now();
        let at = |secs| {
            renew_at_jittered(now, Some(now + Duration::from_secs(secs)), 0.0)
                .duration_since(now)
                .unwrap()
        };
        assert_eq!(at(3600), Duration::from_secs(2880));
        assert_eq!(at(10), Duration::from_secs(8));
        // Thirty minutes: 80% is 24 min, 5 minutes before expiry is 25: the earlier wins.
        assert_eq!(at(1800), Duration::from_secs(1440));
        // Past due: soon, but never a tight loop; far off: look at the clock again soon.
        let check = Pacing::default().wall_clock_check;
        let past = now - Duration::from_secs(100);
        assert_eq!(
            sleep_before_check(now, past, check),
            Duration::from_millis(5)
        );
        let far = now + Duration::from_secs(3000);
        assert_eq!(sleep_before_check(now, far, check), check);
    }

    /// A fleet started at once renews spread over ±10% of the lifetime around 80%, never
    /// later than 5 minutes before expiry.
    #[test]
    fn renewals_are_spread_over_a_tenth_of_the_lifetime_each_side() {
        let now = SystemTime::now();
        let minutes = |d: Duration| d.as_secs_f64() / 60.0;
        let at = |secs: u64, j: f64| {
            minutes(
                renew_at_jittered(now, Some(now + Duration::from_secs(secs)), j)
                    .duration_since(now)
                    .unwrap(),
            )
        };
        assert_eq!((at(3600, -1.0), at(3600, 1.0)), (42.0, 54.0));
        // Thirty minutes: 90% would be 3 minutes before expiry; 5 is the least.
        assert_eq!((at(1800, -1.0), at(1800, 1.0)), (21.0, 25.0));
        assert_eq!(at(10, 1.0) * 60.0, 9.0);
        let fleet: Vec<f64> = (0..1000)
            .map(|_| {
                minutes(
                    renew_at(now, Some(now + Duration::from_secs(3600)))
                        .duration_since(now)
                        .unwrap(),
                )
            })
            .collect();
        let (lo, hi) = fleet
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &m| (lo.min(m), hi.max(m)));
        assert!(lo >= 42.0 && hi <= 54.0, "{lo}..{hi}");
        // Spread, not bunched: uniform draws this narrow would be a broken jitter.
        assert!(lo < 44.0 && hi > 52.0, "{lo}..{hi}");
    }

    /// A wall clock the test moves by hand, counting how often the refresher looks at it.
    struct FakeClock(Mutex<SystemTime>, AtomicU64);

    impl WallClock for FakeClock {
        fn now(&self) -> SystemTime {
            self.1.fetch_add(1, Ordering::SeqCst);
            *self.0.lock().unwrap()
        }
    }

    impl FakeClock {
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }

        fn looks(&self) -> u64 {
            self.1.load(Ordering::SeqCst)
        }
    }

    /// Credentials valid for an hour of the fake clock, numbered by fetch.
    struct FakeSource {
        clock: Arc<FakeClock>,
        fetches: AtomicU64,
    }

    impl FakeSource {
        fn credentials(&self, n: u64) -> Credentials {
            let expiry = self.clock.now() + Duration::from_secs(3600);
            Credentials::new(format!("AKIA{n}"), "secret", None, Some(expiry), "test")
        }

        fn fetches(&self) -> u64 {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl CredentialSource for Arc<FakeSource> {
        async fn fetch(&self) -> Result<Credentials, AuthError> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(self.credentials(n))
        }
        fn sign_in_marker(&self) -> Option<(i64, i64, u64, u32)> {
            None
        }
        fn profile_name(&self) -> &str {
            "test"
        }
    }

    fn key_of(c: &WatchedCredentials) -> String {
        match c.current() {
            CredentialState::Ready(c) => c.access_key_id().to_owned(),
            CredentialState::SignedOut(why) => panic!("signed out: {why}"),
        }
    }

    /// A refresher over fake credentials and a fake wall clock, looking at it every 10 ms.
    fn fake(
        forced_gap: Duration,
    ) -> (
        Arc<FakeClock>,
        Arc<FakeSource>,
        WatchedCredentials,
        tokio::task::JoinHandle<()>,
    ) {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = Arc::new(FakeClock(Mutex::new(start), AtomicU64::new(0)));
        let source = Arc::new(FakeSource {
            clock: clock.clone(),
            fetches: AtomicU64::new(0),
        });
        let pacing = Pacing {
            wall_clock_check: Duration::from_millis(10),
            forced_gap,
        };
        let first = source.credentials(0);
        let (creds, task) = spawn_refresher(source.clone(), first, clock.clone(), pacing);
        (clock, source, creds, task)
    }

    /// Waits until the refresher has acted on the clock as it reads now: three more looks
    /// at it. A pass of its loop looks when it computes its sleep and when it wakes to
    /// compare with the due time; a renewal that comparison starts looks once more when it
    /// is done. Whenever the clock moved, the third look after it comes after a whole
    /// decision taken on the new time, renewal included.
    async fn settle(clock: &FakeClock) {
        let seen = clock.looks();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while clock.looks() < seen + 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the refresher stopped looking at the clock"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A laptop suspended for two hours: the monotonic clock, on which timers run, moves on
    /// by milliseconds here, the wall clock by hours. The credentials are renewed at once
    /// on waking, not when a monotonic timer set for 48 minutes would have fired.
    #[tokio::test]
    async fn a_suspend_past_the_renewal_time_renews_on_waking() {
        let (clock, source, creds, task) = fake(Duration::from_secs(5));
        clock.advance(Duration::from_secs(40 * 60));
        settle(&clock).await;
        assert_eq!(source.fetches(), 0, "not due before 42 minutes");
        clock.advance(Duration::from_secs(2 * 3600));
        settle(&clock).await;
        assert_eq!(source.fetches(), 1, "renewed on waking");
        assert_eq!(key_of(&creds), "AKIA1");
        assert_eq!(creds.last_renewal(), clock.now());
        // The next renewal is due 42 to 54 minutes after this one, by the wall clock.
        clock.advance(Duration::from_secs(41 * 60));
        settle(&clock).await;
        assert_eq!(source.fetches(), 1);
        clock.advance(Duration::from_secs(14 * 60));
        settle(&clock).await;
        assert_eq!(source.fetches(), 2);
        assert_eq!(key_of(&creds), "AKIA2");
        task.abort();
    }

    /// Many requests refused at once cause one renewal; each then sees the new credentials.
    #[tokio::test]
    async fn refused_requests_cause_one_coalesced_renewal() {
        let gap = Duration::from_millis(300);
        let (_clock, source, creds, task) = fake(gap);
        let stale = creds.generation();
        // Taken before the first forced renewal, so the gap after it is a lower bound on
        // what follows: never failed by a slow machine, only by a renewal that came early.
        let before = std::time::Instant::now();
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let creds = creds.clone();
                tokio::spawn(async move { creds.renew_after(stale).await })
            })
            .collect();
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(source.fetches(), 1);
        assert_eq!(key_of(&creds), "AKIA1");
        assert!(creds.generation() > stale);
        // A request signed with the old credentials that fails late needs no renewal.
        creds.renew_after(stale).await;
        assert_eq!(source.fetches(), 1);
        // The new credentials refused too: one more renewal, but not before the gap.
        creds.renew_after(creds.generation()).await;
        assert_eq!(source.fetches(), 2);
        assert!(before.elapsed() >= gap, "{:?}", before.elapsed());
        task.abort();
    }
}
