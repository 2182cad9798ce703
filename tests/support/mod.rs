//! Shared helpers for end-to-end tests: devstack in-process, a user's S3 credentials
//! obtained the way cognifs does (hosted UI → PKCE code → tokens → Cognito Identity),
//! seeding through an admin client, and mounts that always unmount.

#![allow(dead_code)]

pub mod cli;
pub mod tree;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_s3::config::Region;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use cognifs::auth::identity::{Refresher, Session, WatchedCredentials, start_refresher};
use cognifs::fs::{Mount, MountOptions};
use cognifs::store::{ProfileStore, RequestStats, profile_store};
use devstack::{Options, Running};
use futures::StreamExt;

pub const ADMIN: (&str, &str) = ("ADMINKEY", "admin-secret");

pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn users() -> Vec<(String, String)> {
    vec![
        ("alice".into(), "alice-pass".into()),
        ("bob".into(), "bob-pass".into()),
    ]
}

pub async fn start_with(f: impl FnOnce(&mut Options)) -> Running {
    install_crypto();
    let mut options = Options {
        users: users(),
        admin: Some((ADMIN.0.into(), ADMIN.1.into())),
        ..Options::default()
    };
    f(&mut options);
    devstack::start(options).await.expect("devstack starts")
}

pub async fn start() -> Running {
    start_with(|_| {}).await
}

/// Runs a test body with a deadline, so a hung mount fails the test instead of hanging it.
pub async fn with_timeout<T>(secs: u64, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("test body exceeded {secs} s"))
}

/// Blocking file I/O off the runtime's workers (the FUSE replies come from those), with a
/// deadline.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    blocking_for(Duration::from_secs(60), f).await
}

pub async fn blocking_for<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("blocking file operation exceeded {limit:?}"),
    }
}

fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Authorize → sign-in form → code → tokens (PKCE S256); returns the ID token.
pub async fn id_token(running: &Running, user: &str, password: &str) -> String {
    tokens(running, user, password).await["id_token"]
        .as_str()
        .expect("id_token")
        .to_owned()
}

/// Authorize → sign-in form → code → the token endpoint's answer (PKCE S256).
async fn tokens(running: &Running, user: &str, password: &str) -> serde_json::Value {
    install_crypto();
    let verifier = devstack::cognito::random_token(48);
    let challenge = URL_SAFE_NO_PAD.encode(devstack::cognito::sha256(verifier.as_bytes()));
    let redirect = format!(
        "http://localhost:{}/callback",
        running.profile.callback_port
    );
    let mut url = url::Url::parse(&format!("{}/oauth2/authorize", running.base_url)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &running.profile.client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("state", "st4te")
        .append_pair("scope", "openid")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    // The sign-in page's form, submitted as the demo's scripted browser does.
    let location = cognifs::demo::sign_in_redirect(url.as_str(), user, password)
        .await
        .unwrap_or_else(|e| panic!("sign-in as {user}: {e}"));
    let location = url::Url::parse(&location).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code in redirect");
    let resp = http()
        .post(format!("{}/oauth2/token", running.base_url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", running.profile.client_id.as_str()),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// A user signed in as `cognifs login` leaves them: a profile for the devstack (config file)
/// and a token file, in a directory of their own (config, state, spool), never `$HOME`.
pub struct SignedIn {
    pub profile: cognifs::config::Profile,
    pub tokens: cognifs::auth::tokens::TokenStore,
    pub dir: tempfile::TempDir,
}

/// Signs `user` in through the hosted UI and saves the tokens as `cognifs login` does.
pub async fn sign_in(running: &Running, user: &str, password: &str) -> SignedIn {
    let dir = tempfile::Builder::new()
        .prefix("cognifs-user-")
        .tempdir()
        .unwrap();
    let profile = cognifs_profile(running, "default", dir.path().join("config.toml"));
    let tokens = cognifs::auth::tokens::TokenStore::new(&dir.path().join("state"), "default");
    save_sign_in(running, &tokens, user, password).await;
    SignedIn {
        profile,
        tokens,
        dir,
    }
}

/// Signs `user` in again into `tokens` (a new refresh token), as a second `cognifs login`.
pub async fn save_sign_in(
    running: &Running,
    tokens: &cognifs::auth::tokens::TokenStore,
    user: &str,
    password: &str,
) {
    let answer = self::tokens(running, user, password).await;
    let id_token = answer["id_token"].as_str().expect("id_token").to_owned();
    let claims = cognifs::auth::tokens::read_claims(&id_token);
    tokens
        .save(&cognifs::auth::tokens::TokenState {
            refresh_token: answer["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
            id_token: Some(id_token),
            id_token_expires: claims.exp,
            identity_id: None,
            username: claims.username,
            email: claims.email,
            signed_in_at: Some(cognifs::clock::unix_now()),
            refresh_token_expires: None,
        })
        .expect("the token file is written");
}

/// GetId + GetCredentialsForIdentity; returns (identity id, credentials).
pub async fn aws_credentials(running: &Running, id_token: &str) -> (String, Credentials) {
    install_crypto();
    let config = aws_sdk_cognitoidentity::Config::builder()
        .behavior_version(aws_sdk_cognitoidentity::config::BehaviorVersion::latest())
        .region(aws_sdk_cognitoidentity::config::Region::new(
            running.profile.region.clone(),
        ))
        .endpoint_url(&running.profile.identity_endpoint)
        .build();
    let client = aws_sdk_cognitoidentity::Client::from_conf(config);
    let provider = format!(
        "cognito-idp.{}.amazonaws.com/{}",
        running.profile.region, running.profile.user_pool_id
    );
    let id = client
        .get_id()
        .identity_pool_id(&running.profile.identity_pool_id)
        .logins(&provider, id_token)
        .send()
        .await
        .expect("GetId")
        .identity_id
        .unwrap();
    let out = client
        .get_credentials_for_identity()
        .identity_id(&id)
        .logins(&provider, id_token)
        .send()
        .await
        .expect("GetCredentialsForIdentity");
    let c = out.credentials.unwrap();
    let creds = Credentials::new(
        c.access_key_id.unwrap(),
        c.secret_key.unwrap(),
        c.session_token,
        c.expiration
            .map(|e| std::time::UNIX_EPOCH + Duration::from_secs(e.secs() as u64)),
        "devstack-test",
    );
    (id, creds)
}

pub fn s3_client(running: &Running, creds: Credentials) -> aws_sdk_s3::Client {
    install_crypto();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new(running.profile.region.clone()))
        .endpoint_url(&running.profile.s3_endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub fn admin_s3(running: &Running) -> aws_sdk_s3::Client {
    s3_client(
        running,
        Credentials::new(ADMIN.0, ADMIN.1, None, None, "admin"),
    )
}

/// Signs `user` in; returns (identity id, an S3 client with that identity's credentials).
pub async fn user_s3(
    running: &Running,
    user: &str,
    password: &str,
) -> (String, aws_sdk_s3::Client) {
    let token = id_token(running, user, password).await;
    let (id, creds) = aws_credentials(running, &token).await;
    (id, s3_client(running, creds))
}

pub async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, data: impl Into<Vec<u8>>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(data.into().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {key}: {e:?}"));
}

/// PUTs many objects, `parallel` at a time.
pub async fn put_many(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    objects: Vec<(String, Vec<u8>)>,
    parallel: usize,
) {
    futures::stream::iter(objects)
        .map(|(k, v)| async move { put(s3, bucket, &k, v).await })
        .buffer_unordered(parallel)
        .collect::<Vec<()>>()
        .await;
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A mount in a temporary directory that is unmounted on drop, panics included. A mount
/// that does not come off cleanly fails the test (after a lazy unmount, so nothing is left
/// behind), unless the test is failing already.
pub struct MountGuard {
    mount: Option<Mount>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    pub identity_id: String,
    /// The requests of a store built by [`profile_store`] (`None` for [`mount_any`]).
    requests: Option<Arc<RequestStats>>,
    /// Keeps the credentials fresh; ends after the unmount.
    refresher: Option<Refresher>,
    /// The user's config, token file and (unless the test gave one) spool.
    signed_in: Option<SignedIn>,
    /// The spool of a test that gave none: never `$XDG_CACHE_HOME`'s, shared by every test.
    _own_spool: Option<tempfile::TempDir>,
}

impl MountGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn mount(&self) -> &Mount {
        self.mount.as_ref().expect("mounted")
    }

    /// What the mount's store counted, as `cognifs status` shows it.
    pub fn requests(&self) -> &RequestStats {
        self.requests
            .as_deref()
            .expect("a store built by profile_store")
    }

    /// The signed-in user's profile and token file.
    pub fn signed_in(&self) -> &SignedIn {
        self.signed_in.as_ref().expect("a signed-in mount")
    }

    /// The credentials the mount signs with.
    pub fn credentials(&self) -> &WatchedCredentials {
        &self
            .refresher
            .as_ref()
            .expect("a signed-in mount")
            .credentials
    }

    /// Unmounts now and reports the result.
    pub fn unmount(&mut self) -> anyhow::Result<()> {
        match self.mount.take() {
            Some(m) => m.unmount(),
            None => Ok(()),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            // Unmount on another thread: if a test left a process stuck inside the mount, a
            // join could wait forever.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(m.unmount());
            });
            let failed = match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("unmount failed: {e:#}")),
                Err(_) => Some("unmount did not finish within 10 s".to_owned()),
            };
            if let Some(why) = failed {
                // Detach it all the same, then say so: a test must not pass over a mount
                // that would not come off.
                let lazy = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.path)
                    .status();
                let message = format!(
                    "{}: {why}; fell back to `umount -l`: {lazy:?}",
                    self.path.display()
                );
                if std::thread::panicking() {
                    eprintln!("{message}");
                } else {
                    panic!("{message}");
                }
            }
        }
        if is_mounted(&self.path) {
            // Never leave the temp dir's removal to fail on a live mount.
            std::mem::forget(self.dir.take());
        }
    }
}

/// Whether `path` is a mount point, per /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| mp == want))
}

/// Signs `user` in and mounts their prefix with `opts`.
pub async fn mount_user(
    running: &Running,
    user: &str,
    password: &str,
    opts: MountOptions,
) -> MountGuard {
    mount_signed_in(sign_in(running, user, password).await, opts).await
}

/// Mounts the prefix of a signed-in user with the store the daemon builds
/// ([`profile_store`]: production retries, counted requests, credentials renewed by a
/// refresher and at once when S3 refuses them).
pub async fn mount_signed_in(user: SignedIn, opts: MountOptions) -> MountGuard {
    let refresher = start_refresher(Session::with_store(
        user.profile.clone(),
        user.tokens.clone(),
    ))
    .await
    .expect("credentials for the signed-in user");
    let prefix = user.profile.prefix_for(&refresher.identity_id);
    let ProfileStore { store, requests } =
        profile_store(&user.profile, &refresher.credentials, prefix);
    store
        .check_access()
        .await
        .expect("user can list their prefix");
    let mut guard = mount_any(store, refresher.identity_id.clone(), opts).await;
    guard.requests = Some(requests);
    guard.refresher = Some(refresher);
    guard.signed_in = Some(user);
    guard
}

/// Mounts any store on a fresh temp dir, behind a guard.
pub async fn mount_any(
    store: Arc<dyn cognifs::store::ObjectStore>,
    identity_id: String,
    mut opts: MountOptions,
) -> MountGuard {
    let dir = tempfile::Builder::new()
        .prefix("cognifs-mnt-")
        .tempdir()
        .unwrap();
    let own_spool = (opts.spool_dir == MountOptions::default().spool_dir).then(|| {
        let spool = tempfile::Builder::new()
            .prefix("cognifs-spool-")
            .tempdir()
            .unwrap();
        opts.spool_dir = spool.path().to_path_buf();
        spool
    });
    let path = dir.path().to_path_buf();
    let handle = tokio::runtime::Handle::current();
    // The FUSE replies and the unmount's last uploads run on this runtime while the test's
    // thread waits in blocking calls and in the guard's drop: one thread cannot do both.
    assert_eq!(
        handle.runtime_flavor(),
        tokio::runtime::RuntimeFlavor::MultiThread,
        "mount tests need #[tokio::test(flavor = \"multi_thread\")]"
    );
    let p = path.clone();
    let mount = blocking(move || cognifs::fs::mount(store, opts, &p, handle))
        .await
        .expect("mount");
    MountGuard {
        mount: Some(mount),
        dir: Some(dir),
        path,
        identity_id,
        requests: None,
        refresher: None,
        signed_in: None,
        _own_spool: own_spool,
    }
}

/// The identity id `user` gets, without mounting.
pub async fn identity_of(running: &Running, user: &str, password: &str) -> String {
    let token = id_token(running, user, password).await;
    aws_credentials(running, &token).await.0
}

// ---- Sign-in helpers (tests/auth.rs and anything else that drives `cognifs::auth`) ----

/// A loopback port for a listener that cognifs binds itself, later, by number (the sign-in
/// callback: `cognifs login` takes no listener from outside). It is held the only way a port
/// can be held for another socket to bind: the kernel chose it (bind to port 0) and a
/// connection on it was closed from its side first, so the port sits in TIME_WAIT for a
/// minute. In that state no `bind(…:0)` anywhere on the machine is given it, while a
/// listener that sets SO_REUSEADDR (std's and tokio's do) can still bind it. Tests that run
/// in parallel, and other programs, therefore never get the same port.
pub fn reserved_port() -> u16 {
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect to the new port");
    let (server, _) = listener.accept().expect("accept");
    // The accepted side (local port `port`) closes first: it is the one left in TIME_WAIT.
    drop(server);
    let mut eof = [0u8; 1];
    let _ = std::io::Read::read(&mut &client, &mut eof);
    drop(client);
    drop(listener);
    port
}

/// A cognifs profile pointing at `running` (its callback port included), written by devstack
/// to `config_path` as `[name]` and loaded as any config is.
pub fn cognifs_profile(
    running: &Running,
    name: &str,
    config_path: PathBuf,
) -> cognifs::config::Profile {
    cognifs::demo::profile_for(running, &config_path, name).expect("the devstack profile loads")
}

/// What a person does in a browser, over plain HTTP (the demo's scripted browser): open the
/// sign-in page at `auth_url`, submit its form, follow the redirect to the loopback callback.
/// Returns the callback page's status and body.
pub async fn scripted_sign_in(
    auth_url: &str,
    user: &str,
    password: &str,
) -> Result<(u16, String), String> {
    scripted_sign_in_with(auth_url, user, password, |u| u).await
}

/// [`scripted_sign_in`], with `tamper` rewriting the redirect's address before it is followed
/// (a forged or replayed callback).
pub async fn scripted_sign_in_with(
    auth_url: &str,
    user: &str,
    password: &str,
    tamper: impl FnOnce(url::Url) -> url::Url,
) -> Result<(u16, String), String> {
    install_crypto();
    let location = cognifs::demo::sign_in_redirect(auth_url, user, password)
        .await
        .map_err(|e| e.to_string())?;
    let location = url::Url::parse(&location).map_err(|e| format!("Location {location:?}: {e}"))?;
    cognifs::demo::open(tamper(location).as_str())
        .await
        .map_err(|e| e.to_string())
}

/// What [`scripted_sign_in`] reports: the loopback page's status and body, or what failed.
pub type SignInOutcome = tokio::sync::oneshot::Receiver<Result<(u16, String), String>>;

/// A `Browser::Custom` that runs [`scripted_sign_in`] on the sign-in URL; the receiver gets
/// its outcome (the loopback page cognifs answered with).
pub fn scripted_browser(
    user: &str,
    password: &str,
) -> (cognifs::auth::login::Browser, SignInOutcome) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (user, password) = (user.to_owned(), password.to_owned());
    let browser = cognifs::auth::login::Browser::Custom(Box::new(move |url: String| {
        tokio::spawn(async move {
            let _ = tx.send(scripted_sign_in(&url, &user, &password).await);
        });
    }));
    (browser, rx)
}

// ---- S3-side checks for write tests (tests/mount_write.rs) ----

/// An object's bytes as S3 holds them, `None` when the key does not exist.
pub async fn get_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) => {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_owned);
            assert_eq!(code.as_deref(), Some("NoSuchKey"), "GET {key}: {e:?}");
            None
        }
    }
}

/// Every key under `prefix` (no delimiter), relative to it, sorted; but for the listing
/// indexes cognifs keeps for itself under the prefix's `.cognifs/` (docs/SEMANTICS.md).
pub async fn keys_under(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(next)
            .send()
            .await
            .unwrap();
        for o in page.contents() {
            let rel = o.key().unwrap().strip_prefix(prefix).unwrap();
            if !rel.starts_with(".cognifs/") {
                out.push(rel.to_owned());
            }
        }
        next = page.next_continuation_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    out.sort();
    out
}

/// Multipart uploads still open under `prefix`.
pub async fn open_uploads(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> usize {
    s3.list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

/// `user` metadata of an object (HEAD).
pub async fn user_meta(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> std::collections::HashMap<String, String> {
    s3.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"))
        .metadata()
        .cloned()
        .unwrap_or_default()
}

/// [`admin_s3`] that tries each request 20 times, quickly: the test's own checks, on a
/// devstack injecting 503s into every client's requests.
pub fn admin_s3_retrying(running: &Running) -> aws_sdk_s3::Client {
    install_crypto();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new(running.profile.region.clone()))
        .endpoint_url(&running.profile.s3_endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ADMIN.0, ADMIN.1, None, None, "admin"))
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard()
                .with_max_attempts(20)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(500)),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Polls `check` every 100 ms until it holds; fails the test after `limit` (a deadline
/// against a hang, not a claim about speed).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails (never skips) when rsync is missing: CI installs it (.ci/run).
pub fn require_rsync() {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v rsync"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "install rsync (Debian package `rsync`; .ci/run does)"
    );
}

/// A writable mount with a spool of its own (so parallel tests never share one).
pub fn spool_opts(spool: &Path) -> MountOptions {
    MountOptions {
        spool_dir: spool.to_path_buf(),
        ..MountOptions::default()
    }
}

/// A small tmpfs (a full disk in miniature: a spool or pending area of a few MiB), mounted
/// on a temp dir and unmounted on drop. Needs root (as the mount tests do).
pub struct Tmpfs {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Tmpfs {
    pub fn new(bytes: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("cognifs-tmpfs-")
            .tempdir()
            .unwrap();
        let path = dir.path().to_path_buf();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount -t tmpfs: {out:?}");
        Tmpfs {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = std::process::Command::new("umount")
            .arg(&self.path)
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
            std::mem::forget(self.dir.take());
            let message = format!("umount {}: {out:?}", self.path.display());
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}
