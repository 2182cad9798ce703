//! The sign-in layer (`cognifs::auth`) against devstack in-process: the loopback login with a
//! scripted browser and with a real one (headless Chromium through chromedriver), the token
//! file, the identity exchange, and the background refresher.
//!
//! Each test gets its own devstack, its own callback port and its own state directory, so the
//! tests run in parallel and never touch `$HOME` or the process environment.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use cognifs::auth::AuthError;
use cognifs::auth::identity::{CredentialState, Session, start_refresher};
use cognifs::auth::login::{Browser, LoginOptions, login};
use cognifs::auth::tokens::{TokenState, TokenStore, http_client, refresh, revoke};
use cognifs::config::Profile;
use cognifs::fs::MountOptions;
use cognifs::store::Renewer;
use cognifs::store::s3_client;
use devstack::Running;
use serde_json::{Value, json};
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");
const HOUR: Duration = Duration::from_secs(3600);

/// One devstack, a profile for it on a free callback port, and a private state directory.
struct Fixture {
    running: Running,
    profile: Profile,
    store: TokenStore,
    state_dir: tempfile::TempDir,
}

async fn fixture(token_ttl: Duration, credentials_ttl: Duration) -> Fixture {
    install_crypto();
    let port = reserved_port();
    let running = start_with(|o| {
        o.callback_port = port;
        o.token_ttl = token_ttl;
        o.credentials_ttl = credentials_ttl;
    })
    .await;
    let state_dir = tempfile::Builder::new()
        .prefix("cognifs-auth-test-")
        .tempdir()
        .unwrap();
    let profile = cognifs_profile(&running, "default", state_dir.path().join("config.toml"));
    assert_eq!(profile.callback_port, port);
    let store = TokenStore::new(&state_dir.path().join("state"), "default");
    Fixture {
        running,
        profile,
        store,
        state_dir,
    }
}

impl Fixture {
    fn session(&self) -> Session {
        Session::with_store(self.profile.clone(), self.store.clone())
    }

    /// Signs `user` in through the scripted browser into `store`; checks the loopback page.
    async fn login_into(&self, store: &TokenStore, user: &str, password: &str) -> TokenState {
        let (browser, page) = scripted_browser(user, password);
        let (result, page) = run_login(&self.profile, store, browser, page, LOGIN_WAIT).await;
        let state = result.unwrap_or_else(|e| panic!("login as {user}: {e} (browser: {page:?})"));
        let (status, body) = page.expect("the browser finished");
        assert_eq!(status, 200, "loopback page: {body}");
        assert!(
            body.contains(&format!("Signed in as {user}")),
            "loopback page: {body}"
        );
        state
    }

    async fn login(&self, user: &str, password: &str) -> TokenState {
        self.login_into(&self.store, user, password).await
    }

    fn file_mode(&self, path: &Path) -> u32 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }
}

const LOGIN_WAIT: Duration = Duration::from_secs(30);

/// Runs `login` in a task next to the browser's work; a browser that fails ends the wait at
/// once (with its error) instead of letting the login time out. Returns login's result and
/// what the browser reported, if it did.
async fn run_login<T: Send + 'static>(
    profile: &Profile,
    store: &TokenStore,
    browser: Browser,
    mut outcome: tokio::sync::oneshot::Receiver<Result<T, String>>,
    timeout: Duration,
) -> (Result<TokenState, AuthError>, Option<T>) {
    let (profile, store) = (profile.clone(), store.clone());
    let mut task =
        tokio::spawn(
            async move { login(&profile, &store, LoginOptions { browser, timeout }).await },
        );
    let mut seen = None;
    let mut browser_done = false;
    loop {
        tokio::select! {
            r = &mut task => {
                // The browser reads cognifs's answer after login has returned.
                if !browser_done
                    && let Ok(Ok(Ok(v))) = tokio::time::timeout(Duration::from_secs(10), outcome).await
                {
                    seen = Some(v);
                }
                return (r.expect("login task"), seen);
            }
            o = &mut outcome, if !browser_done => {
                browser_done = true;
                match o {
                    Ok(Ok(v)) => seen = Some(v),
                    Ok(Err(e)) => {
                        task.abort();
                        panic!("the browser failed: {e}");
                    }
                    Err(_) => {} // the browser never reported; let login decide
                }
            }
        }
    }
}

/// Waits until `cond` holds, polling every 100 ms; panics with `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Revokes a refresh token at the hosted UI directly (RFC 7009), as signing out elsewhere
/// would; the next refresh grant with it answers `invalid_grant`.
async fn revoke_at_hosted_ui(f: &Fixture, refresh_token: &str) {
    let resp = http_client()
        .post(format!("{}/oauth2/revoke", f.profile.domain))
        .form(&[
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
            ("client_id", f.profile.client_id.as_str()),
        ])
        .send()
        .await
        .expect("revocation request");
    assert_eq!(resp.status(), 200, "revocation: {:?}", resp.text().await);
}

async fn try_put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &str,
) -> Result<(), String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("PUT {key}: {}", cognifs::auth::tokens::error_chain(&e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_tokens_0600_and_status_fields() {
    with_timeout(90, async {
        let f = fixture(HOUR, HOUR).await;
        let state = f.login(ALICE.0, ALICE.1).await;
        assert_eq!(state.username.as_deref(), Some("alice"));
        assert!(
            state
                .id_token
                .as_deref()
                .is_some_and(|t| t.split('.').count() == 3)
        );
        assert!(!state.refresh_token.is_empty());
        assert!(
            state
                .id_token_expires
                .is_some_and(|e| e > cognifs::auth::tokens::unix_now() + 3000),
            "{state:?}"
        );

        // On disk: 0600 in a 0700 directory, and what login returned.
        assert_eq!(f.file_mode(&f.store.path()), 0o600);
        assert_eq!(f.file_mode(f.store.dir()), 0o700);
        assert!(f.store.path().starts_with(f.state_dir.path()));
        assert_eq!(f.store.load().unwrap().as_ref(), Some(&state));
        let names: Vec<_> = std::fs::read_dir(f.store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tokens.json"], "no temp files left");

        // The identity exchange fills in the identity id, and the file stays private.
        let session = f.session();
        let (identity_id, creds) = session.fetch_credentials().await.expect("credentials");
        assert!(identity_id.starts_with("us-east-1:"), "{identity_id}");
        assert!(creds.expiry().is_some());
        let stored = f.store.load().unwrap().unwrap();
        assert_eq!(stored.identity_id.as_deref(), Some(identity_id.as_str()));
        assert_eq!(stored.username.as_deref(), Some("alice"));
        assert_eq!(f.file_mode(&f.store.path()), 0o600);
        // A second exchange reuses the stored identity id.
        let (again, _) = session.fetch_credentials().await.unwrap();
        assert_eq!(again, identity_id);

        // The credentials reach the identity's own prefix and nothing else.
        let bucket = &f.profile.bucket;
        let s3 = s3_client(&f.profile, creds);
        let key = format!("{}notes/hello.txt", f.profile.prefix_for(&identity_id));
        assert!(key.starts_with(&format!("{identity_id}/")));
        try_put(&s3, bucket, &key, "hello from alice")
            .await
            .unwrap();
        let got = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], b"hello from alice");

        let bob = identity_of(&f.running, "bob", "bob-pass").await;
        assert_ne!(bob, identity_id);
        put(
            &admin_s3(&f.running),
            bucket,
            &format!("{bob}/secret.txt"),
            "bob's",
        )
        .await;
        for key in [format!("{bob}/secret.txt"), "outside.txt".to_owned()] {
            let err = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect_err("read outside the prefix");
            assert_eq!(err.code(), Some("AccessDenied"), "GET {key}: {err:?}");
            let err = s3
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(b"x".to_vec().into())
                .send()
                .await
                .expect_err("write outside the prefix");
            assert_eq!(err.code(), Some("AccessDenied"), "PUT {key}: {err:?}");
        }
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rejects_a_forged_state() {
    with_timeout(60, async {
        let f = fixture(HOUR, HOUR).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A real sign-in whose redirect comes back with someone else's state.
        let browser = Browser::Custom(Box::new(move |url: String| {
            tokio::spawn(async move {
                let forged = scripted_sign_in_with(&url, ALICE.0, ALICE.1, |mut u| {
                    let pairs: Vec<(String, String)> = u
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if k == "state" {
                                format!("forged-{v}")
                            } else {
                                v.into()
                            };
                            (k.into_owned(), v)
                        })
                        .collect();
                    assert!(pairs.iter().any(|(k, _)| k == "state"), "{u}");
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                    u
                })
                .await;
                let _ = tx.send(forged);
            });
        }));
        // The forged answer gets a 400 and ends nothing: the real one is still awaited,
        // until the sign-in times out.
        let (result, page) =
            run_login(&f.profile, &f.store, browser, rx, Duration::from_secs(3)).await;
        let err = result
            .expect_err("a forged state must be refused")
            .to_string();
        assert!(err.contains("no sign-in arrived"), "{err}");
        let (status, body) = page.expect("the browser got an answer");
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("state"), "{body}");
        assert!(f.store.load().unwrap().is_none(), "nothing stored");
        assert!(!f.store.path().exists());
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_times_out_with_a_clear_message() {
    with_timeout(30, async {
        let f = fixture(HOUR, HOUR).await;
        let opened = Arc::new(AtomicBool::new(false));
        let o = opened.clone();
        let browser = Browser::Custom(Box::new(move |_url: String| {
            o.store(true, Ordering::SeqCst);
        }));
        let err = login(
            &f.profile,
            &f.store,
            LoginOptions {
                browser,
                timeout: Duration::from_secs(1),
            },
        )
        .await
        .expect_err("nobody signs in")
        .to_string();
        assert!(
            opened.load(Ordering::SeqCst),
            "the browser was asked to open"
        );
        assert!(err.contains("no sign-in arrived"), "{err}");
        assert!(err.contains("cognifs login"), "{err}");
        assert!(f.store.load().unwrap().is_none());
        // The callback port is released again.
        std::net::TcpListener::bind(("127.0.0.1", f.profile.callback_port))
            .expect("the callback listener is closed after a timeout");
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_names_port_and_key() {
    with_timeout(30, async {
        let f = fixture(HOUR, HOUR).await;
        let port = f.profile.callback_port;
        let _occupier = std::net::TcpListener::bind(("127.0.0.1", port)).expect("occupy the port");
        let opened = Arc::new(AtomicBool::new(false));
        let o = opened.clone();
        let browser = Browser::Custom(Box::new(move |_url: String| {
            o.store(true, Ordering::SeqCst);
        }));
        let err = login(
            &f.profile,
            &f.store,
            LoginOptions {
                browser,
                timeout: Duration::from_secs(5),
            },
        )
        .await
        .expect_err("the port is taken")
        .to_string();
        assert!(err.contains(&port.to_string()), "{err}");
        assert!(err.contains("callback_port"), "{err}");
        assert!(err.contains("[default]"), "{err}");
        assert!(
            err.contains(&f.profile.config_path.display().to_string()),
            "{err}"
        );
        assert!(
            !opened.load(Ordering::SeqCst),
            "no browser opened for a sign-in that cannot come back"
        );
        assert!(f.store.load().unwrap().is_none());
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresher_renews_credentials_before_expiry() {
    with_timeout(60, async {
        // Credentials last 3 s and ID tokens 4 s: without renewal of both, S3 calls stop
        // working a few seconds in.
        let f = fixture(Duration::from_secs(4), Duration::from_secs(3)).await;
        let first = f.login(ALICE.0, ALICE.1).await;
        let refresher = start_refresher(f.session())
            .await
            .expect("refresher starts");
        let creds = refresher.credentials.clone();
        let e0 = creds.expiry().expect("ready, with an expiry");
        let obtained = creds.last_renewal();
        assert!(obtained <= std::time::SystemTime::now());

        wait_until(Duration::from_secs(6), "credentials renewed", || {
            creds.expiry().is_some_and(|e| e > e0)
        })
        .await;
        assert!(
            creds.last_renewal() > obtained,
            "the renewal time moves with each renewal"
        );
        let renewed = f.store.load().unwrap().unwrap();
        assert_ne!(
            renewed.id_token, first.id_token,
            "the ID token was refreshed"
        );
        assert!(renewed.id_token_expires > first.id_token_expires);
        assert_eq!(renewed.refresh_token, first.refresh_token);
        assert_eq!(
            renewed.identity_id.as_deref(),
            Some(refresher.identity_id.as_str())
        );
        assert_eq!(f.file_mode(&f.store.path()), 0o600);

        // S3 calls go on through three renewals of the credentials and two more refreshes
        // of the ID token (twice its life): every one succeeds.
        let s3 = s3_client(&f.profile, refresher.credentials.clone());
        let prefix = f.profile.prefix_for(&refresher.identity_id);
        let id_expiry = || f.store.load().unwrap().unwrap().id_token_expires;
        let (mut expiries, mut id_expiries) = (vec![creds.expiry()], vec![id_expiry()]);
        let mut i = 0;
        while expiries.len() < 4 || id_expiries.len() < 3 {
            if let CredentialState::SignedOut(why) = creds.current() {
                panic!("signed out after {i} calls: {why}");
            }
            try_put(&s3, &f.profile.bucket, &format!("{prefix}tick-{i}"), "tick")
                .await
                .unwrap_or_else(|e| panic!("call {i}, renewals {expiries:?}: {e}"));
            let (now, id_now) = (creds.expiry(), id_expiry());
            if expiries.last() != Some(&now) {
                expiries.push(now);
            }
            if id_expiries.last() != Some(&id_now) {
                id_expiries.push(id_now);
            }
            i += 1;
            // Pacing only: the loop ends on the renewals it sees, whatever the time.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(refresher);
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_sign_in_goes_signed_out_then_recovers_on_new_login() {
    with_timeout(90, async {
        let f = fixture(Duration::from_secs(3), Duration::from_secs(2)).await;
        let state = f.login(ALICE.0, ALICE.1).await;
        let refresher = start_refresher(f.session())
            .await
            .expect("refresher starts");
        let creds = refresher.credentials.clone();
        let s3 = s3_client(&f.profile, refresher.credentials.clone());
        let key = format!("{}file.txt", f.profile.prefix_for(&refresher.identity_id));
        try_put(&s3, &f.profile.bucket, &key, "before")
            .await
            .unwrap();

        revoke_at_hosted_ui(&f, &state.refresh_token).await;
        wait_until(
            Duration::from_secs(10),
            "signed out after revocation",
            || matches!(creds.current(), CredentialState::SignedOut(_)),
        )
        .await;
        let CredentialState::SignedOut(msg) = creds.current() else {
            unreachable!()
        };
        assert!(msg.contains("cognifs login"), "{msg}");
        assert!(!msg.contains("--profile"), "default profile: {msg}");
        assert!(!msg.contains(&state.refresh_token), "no token in messages");
        assert!(creds.expiry().is_none());
        let err = try_put(&s3, &f.profile.bucket, &key, "while signed out")
            .await
            .expect_err("S3 refuses while signed out");
        assert!(err.contains("cognifs login"), "{err}");
        // It does not flap back by itself: until the token file changes (the new sign-in
        // below), a watcher sees nothing but signed out.
        let watcher = {
            let (creds, tokens) = (creds.clone(), f.store.clone());
            let before = tokens.fingerprint();
            tokio::spawn(async move {
                while tokens.fingerprint() == before {
                    if let CredentialState::Ready(_) = creds.current() {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                true
            })
        };

        // A new sign-in rewrites the token file; the running refresher picks it up.
        let again = f.login(ALICE.0, ALICE.1).await;
        assert_ne!(again.refresh_token, state.refresh_token);
        assert!(watcher.await.unwrap(), "ready again before any new sign-in");
        wait_until(
            Duration::from_secs(10),
            "ready again after a new login",
            || matches!(creds.current(), CredentialState::Ready(_)),
        )
        .await;
        try_put(&s3, &f.profile.bucket, &key, "after")
            .await
            .unwrap();
        // And it keeps renewing with the new refresh token.
        let e = creds.expiry().unwrap();
        wait_until(Duration::from_secs(6), "renewed after recovery", || {
            creds.expiry().is_some_and(|x| x > e)
        })
        .await;
        try_put(&s3, &f.profile.bucket, &key, "later")
            .await
            .unwrap();
        drop(refresher);
        f.running.shutdown().await;
    })
    .await;
}

/// devstack forgets every AWS credential it issued (as a revocation, or a restart of a
/// server that keeps none, would): the mount's next request is refused, renews the
/// credentials at once and goes through — no waiting for the renewal schedule (an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_credentials_are_renewed_at_once_and_the_mount_answers() {
    with_timeout(90, async {
        let f = fixture(HOUR, HOUR).await;
        // The store the daemon builds (profile_store: RenewingStore around the counted S3
        // client), over a sign-in of its own.
        let mnt = mount_signed_in(
            sign_in(&f.running, ALICE.0, ALICE.1).await,
            MountOptions::default(),
        )
        .await;
        let creds = mnt.credentials().clone();
        let profile = mnt.signed_in().profile.clone();
        let prefix = profile.prefix_for(&mnt.identity_id);
        let mnt = blocking(move || {
            std::fs::write(mnt.join("before.txt"), b"before").expect("a first write works");
            mnt
        })
        .await;
        let CredentialState::Ready(stale) = creds.current() else {
            panic!("signed out")
        };
        let (renewed_before, generation) = (creds.last_renewal(), creds.generation());
        assert_eq!(f.running.forget_credentials(), 1);
        // The credentials in use are refused now (so what follows means something).
        let err = s3_client(&profile, stale)
            .list_objects_v2()
            .bucket(&profile.bucket)
            .prefix(&prefix)
            .send()
            .await
            .expect_err("forgotten credentials are refused");
        assert_eq!(err.code(), Some("InvalidAccessKeyId"));
        // No renewal is due for 48 minutes: only the refusal can bring one within this
        // test's deadline.
        let mnt = blocking(move || {
            std::fs::write(mnt.join("after.txt"), b"after").expect("close returns 0");
            let listed: Vec<String> = std::fs::read_dir(mnt.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(listed.contains(&"after.txt".to_owned()), "{listed:?}");
            mnt
        })
        .await;
        assert!(
            creds.last_renewal() > renewed_before,
            "renewed once refused"
        );
        assert_eq!(
            creds.generation(),
            generation + 1,
            "one renewal for every refused request"
        );
        let admin = admin_s3(&f.running);
        assert_eq!(
            get_bytes(&admin, &profile.bucket, &format!("{prefix}after.txt")).await,
            Some(b"after".to_vec())
        );
        drop(mnt);
        f.running.shutdown().await;
    })
    .await;
}

/// Signed out while mounted (the refresh token revoked, the AWS credentials forgotten): the
/// mount answers EACCES, and nothing else, until a new sign-in rewrites the token file;
/// then it answers again, without a remount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_while_mounted_answers_eacces_until_a_new_login() {
    with_timeout(90, async {
        // ID tokens inside the 5-minute refresh margin: every renewal needs the refresh
        // token, so its revocation signs the mount out.
        let f = fixture(Duration::from_secs(60), HOUR).await;
        let admin = admin_s3(&f.running);
        // Every call asks S3 (no answer outlives a millisecond).
        let opts = MountOptions {
            metadata_ttl: Duration::from_millis(1),
            ..MountOptions::default()
        };
        let mnt = mount_signed_in(sign_in(&f.running, ALICE.0, ALICE.1).await, opts).await;
        let bucket = mnt.signed_in().profile.bucket.clone();
        let prefix = mnt.signed_in().profile.prefix_for(&mnt.identity_id);
        put(&admin, &bucket, &format!("{prefix}a.txt"), "A").await;
        let creds = mnt.credentials().clone();
        let read = |rel: &str| {
            let p = mnt.join(rel);
            blocking(move || std::fs::read(p))
        };
        assert_eq!(read("a.txt").await.unwrap(), b"A");

        let (profile, tokens) = (&mnt.signed_in().profile, &mnt.signed_in().tokens);
        let refresh_token = tokens.load().unwrap().unwrap().refresh_token;
        revoke(profile, &refresh_token, &http_client())
            .await
            .expect("signed out at the hosted UI");
        assert_eq!(f.running.forget_credentials(), 1, "the mount's");
        let err = read("a.txt").await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        let CredentialState::SignedOut(why) = creds.current() else {
            panic!("not signed out")
        };
        assert!(why.contains("cognifs login"), "{why}");

        // `cognifs login` rewrites the token file; the mount picks it up by itself.
        save_sign_in(&f.running, tokens, ALICE.0, ALICE.1).await;
        eventually(
            Duration::from_secs(30),
            "the mount answers again",
            || async {
                match read("a.txt").await {
                    Ok(body) => {
                        assert_eq!(body, b"A");
                        true
                    }
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
                        false
                    }
                }
            },
        )
        .await;
        let p = mnt.join("b.txt");
        blocking(move || std::fs::write(p, "B")).await.unwrap();
        assert_eq!(
            get_bytes(&admin, &bucket, &format!("{prefix}b.txt")).await,
            Some(b"B".to_vec())
        );
        drop(mnt);
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_token_in_file_is_used() {
    with_timeout(90, async {
        let f = fixture(Duration::from_secs(3), Duration::from_secs(2)).await;
        let a = f.login(ALICE.0, ALICE.1).await;
        let refresher = start_refresher(f.session())
            .await
            .expect("refresher starts");
        let creds = refresher.credentials.clone();

        // Another process gets a new refresh token and rewrites the shared file (as it
        // would after a rotation); the old token stops working.
        let other_dir = tempfile::tempdir().unwrap();
        let other = TokenStore::new(other_dir.path(), "default");
        let b = f.login_into(&other, ALICE.0, ALICE.1).await;
        assert_ne!(a.refresh_token, b.refresh_token);
        let writer = TokenStore::new(&f.state_dir.path().join("state"), "default");
        assert_eq!(writer.path(), f.store.path());
        writer
            .save(&TokenState {
                id_token: None,
                id_token_expires: None,
                identity_id: None,
                ..b.clone()
            })
            .unwrap();
        revoke_at_hosted_ui(&f, &a.refresh_token).await;

        // The grant reads the file, not a copy kept in memory.
        let got = refresh(&f.profile, &f.store, &http_client())
            .await
            .expect("refresh with the rotated token");
        assert_eq!(got.refresh_token, b.refresh_token);
        assert!(got.id_token.is_some());

        // The refresher renews twice more without ever signing out.
        let s3 = s3_client(&f.profile, refresher.credentials.clone());
        let key = format!(
            "{}rotated.txt",
            f.profile.prefix_for(&refresher.identity_id)
        );
        let mut renewals = 0;
        let mut last = creds.expiry();
        while renewals < 2 {
            if let CredentialState::SignedOut(why) = creds.current() {
                panic!("signed out although the file holds a good token: {why}");
            }
            if creds.expiry() != last {
                renewals += 1;
                last = creds.expiry();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        try_put(&s3, &f.profile.bucket, &key, "x").await.unwrap();
        let stored = f.store.load().unwrap().unwrap();
        assert_eq!(stored.refresh_token, b.refresh_token);
        assert_eq!(
            stored.identity_id.as_deref(),
            Some(refresher.identity_id.as_str())
        );
        drop(refresher);
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_the_refresh_grant() {
    with_timeout(60, async {
        let f = fixture(HOUR, HOUR).await;
        let state = f.login(ALICE.0, ALICE.1).await;
        refresh(&f.profile, &f.store, &http_client())
            .await
            .expect("refresh works before revocation");
        revoke(&f.profile, &state.refresh_token, &http_client())
            .await
            .expect("cognifs revokes its refresh token");
        let err = refresh(&f.profile, &f.store, &http_client())
            .await
            .expect_err("a revoked refresh token is refused");
        assert!(matches!(err, AuthError::SignedOut { .. }), "{err:?}");
        assert!(err.to_string().contains("cognifs login"), "{err}");
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loose_token_file_signs_out_until_chmod_600() {
    with_timeout(60, async {
        let f = fixture(Duration::from_secs(3), Duration::from_secs(2)).await;
        f.login(ALICE.0, ALICE.1).await;
        let refresher = start_refresher(f.session())
            .await
            .expect("refresher starts");
        let creds = refresher.credentials.clone();
        let path = f.store.path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        wait_until(
            Duration::from_secs(10),
            "signed out over a loose file",
            || matches!(creds.current(), CredentialState::SignedOut(_)),
        )
        .await;
        let CredentialState::SignedOut(msg) = creds.current() else {
            unreachable!()
        };
        assert!(msg.contains("chmod 600"), "{msg}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        wait_until(
            Duration::from_secs(10),
            "ready again after chmod 600",
            || matches!(creds.current(), CredentialState::Ready(_)),
        )
        .await;
        drop(refresher);
        f.running.shutdown().await;
    })
    .await;
}

// ---- A real browser: headless Chromium driven through chromedriver (WebDriver) ----

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL_HINT: &str =
    "install chromium and chromium-driver (apt-get install -y chromium chromium-driver)";
/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one browser session; both end on drop, panics included.
struct ChromeDriver {
    child: std::process::Child,
    port: u16,
    session: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A handle on the WebDriver session that can move into the `Browser::Custom` closure.
#[derive(Clone)]
struct WebDriver {
    http: reqwest::Client,
    session_url: String,
}

impl ChromeDriver {
    async fn start() -> Self {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(Path::new(bin).exists(), "{bin} is missing: {INSTALL_HINT}");
        }
        let dir = tempfile::Builder::new()
            .prefix("cognifs-chromium-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("chromedriver.log");
        let out = std::fs::File::create(&log).unwrap();
        let port = reserved_port();
        let child = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}; {INSTALL_HINT}"));
        let mut driver = Self {
            child,
            port,
            session: None,
            log,
            _dir: dir,
        };
        driver.wait_ready().await;
        driver.new_session().await;
        driver
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited ({status}):\n{}", self.log_tail());
            }
            if let Ok(resp) = http.get(format!("{}/status", self.base())).send().await
                && let Ok(v) = resp.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within 30 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn new_session(&mut self) {
        let profile_dir = self._dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile_dir.display()),
                ],
            },
        }}});
        let resp = webdriver_call(
            &reqwest::Client::new(),
            reqwest::Method::POST,
            &format!("{}/session", self.base()),
            Some(caps),
        )
        .await
        .unwrap_or_else(|e| panic!("creating a Chromium session: {e}\n{}", self.log_tail()));
        let id = resp["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {resp}"))
            .to_owned();
        self.session = Some(id);
    }

    fn webdriver(&self) -> WebDriver {
        WebDriver {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            session_url: format!(
                "{}/session/{}",
                self.base(),
                self.session.as_deref().expect("a session")
            ),
        }
    }

    /// Ends the session over a plain socket (no runtime needed in `drop`).
    fn delete_session(&mut self) {
        use std::io::{Read, Write};
        let Some(id) = self.session.take() else {
            return;
        };
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
        let _ = write!(
            s,
            "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        let _ = s.read_to_end(&mut Vec::new());
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        self.delete_session();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver command; `Err` carries WebDriver's error and message.
async fn webdriver_call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = http.request(method.clone(), url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| format!("{method} {url}: {status}, unreadable answer: {e}"))?;
    if !status.is_success() || v["value"]["error"].is_string() {
        return Err(format!(
            "{method} {url}: {status}: {} {}",
            v["value"]["error"], v["value"]["message"]
        ));
    }
    Ok(v["value"].clone())
}

impl WebDriver {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        webdriver_call(
            &self.http,
            method,
            &format!("{}{path}", self.session_url),
            body,
        )
        .await
    }

    async fn navigate(&self, url: &str) -> Result<(), String> {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(|_| ())
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        v[ELEMENT]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no element reference for {css}: {v}"))
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .map(|_| ())
    }

    async fn click(&self, css: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await
        .map(|_| ())
    }

    async fn source(&self) -> Result<String, String> {
        let v = self.call(reqwest::Method::GET, "/source", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// What a person does on the hosted UI's sign-in page.
    async fn sign_in(&self, url: &str, user: &str, password: &str) -> Result<(), String> {
        self.navigate(url).await?;
        let page = self.source().await?;
        if !page.contains("name=\"username\"") {
            return Err(format!("not a sign-in page: {page}"));
        }
        self.type_into("input[name=username]", user).await?;
        self.type_into("input[name=password]", password).await?;
        self.click("#signin").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_chromium() {
    with_timeout(150, async {
        let f = fixture(HOUR, HOUR).await;
        let driver = ChromeDriver::start().await;
        let wd = driver.webdriver();

        let (tx, rx) = tokio::sync::oneshot::channel();
        let w = wd.clone();
        let browser = Browser::Custom(Box::new(move |url: String| {
            tokio::spawn(async move {
                let _ = tx.send(w.sign_in(&url, ALICE.0, ALICE.1).await);
            });
        }));
        let (result, _) =
            run_login(&f.profile, &f.store, browser, rx, Duration::from_secs(60)).await;
        let state = result.unwrap_or_else(|e| {
            panic!(
                "login through Chromium: {e}\nchromedriver log:\n{}",
                driver.log_tail()
            )
        });
        assert_eq!(state.username.as_deref(), Some("alice"));
        assert_eq!(f.store.load().unwrap().as_ref(), Some(&state));
        assert_eq!(f.file_mode(&f.store.path()), 0o600);

        // The browser ends on cognifs's own page, which names the user.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page = wd.source().await.unwrap_or_default();
            if page.contains("Signed in as alice") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the browser's last page does not say \"Signed in as alice\": {page}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // And the sign-in is good for credentials.
        let (identity_id, _) = f.session().fetch_credentials().await.expect("credentials");
        assert_eq!(
            f.store.load().unwrap().unwrap().identity_id.as_deref(),
            Some(identity_id.as_str())
        );
        drop(driver);
        f.running.shutdown().await;
    })
    .await;
}
