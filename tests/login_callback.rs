//! The sign-in callback listener (`cognifs login`'s loopback server) against the requests a
//! web page or another local user can send it: a callback without this sign-in's state —
//! an `error=` or a code — gets a 400 and ends nothing, the real sign-in still completes;
//! an `error=` with the right state ends it, and what it says reaches the terminal without
//! control characters; a silent connection does not hold the real callback up; a `[::1]`
//! taken by another program is an error. Devstack in-process; every wait has a deadline.

mod support;

use std::time::Duration;

use cognifs::auth::AuthError;
use cognifs::auth::login::{Browser, LoginOptions, login};
use cognifs::auth::tokens::{TokenState, TokenStore};
use cognifs::config::Profile;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

struct Fixture {
    running: devstack::Running,
    profile: Profile,
    store: TokenStore,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let port = reserved_port();
    let running = start_with(|o| o.callback_port = port).await;
    let dir = tempfile::tempdir().unwrap();
    let profile = cognifs_profile(&running, "default", dir.path().join("config.toml"));
    let store = TokenStore::new(&dir.path().join("state"), "default");
    Fixture {
        running,
        profile,
        store,
        _dir: dir,
    }
}

/// Starts `login` with a browser that only hands the sign-in URL to the test.
fn start_login(
    f: &Fixture,
    timeout: Duration,
) -> (
    tokio::task::JoinHandle<Result<TokenState, AuthError>>,
    mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let browser = Browser::Custom(Box::new(move |url| {
        let _ = tx.send(url);
    }));
    let (profile, store) = (f.profile.clone(), f.store.clone());
    let task =
        tokio::spawn(
            async move { login(&profile, &store, LoginOptions { browser, timeout }).await },
        );
    (task, rx)
}

/// The `state` of a sign-in URL.
fn state_of(auth_url: &str) -> String {
    url::Url::parse(auth_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("the sign-in URL carries a state")
}

/// GET `target` from the callback listener on `host`: (status, body).
async fn get(host: &str, port: u16, target: &str) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect((host, port)).await.unwrap();
    conn.write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_string(&mut out))
        .await
        .expect("the callback listener answers")
        .unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"));
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_callbacks_get_a_400_and_the_real_sign_in_still_completes() {
    with_timeout(60, async {
        let f = fixture().await;
        let port = f.profile.callback_port;
        let (task, mut urls) = start_login(&f, Duration::from_secs(40));
        let url = urls.recv().await.expect("the browser is opened");
        let state = state_of(&url);

        // What a web page's <img src="http://localhost:PORT/callback?error=…"> sends, over
        // both addresses, and a forged code: each is answered 400, none ends the sign-in.
        for (host, target) in [
            (
                "127.0.0.1",
                "/callback?error=access_denied&error_description=%1b%5b2JYou%20lost".to_owned(),
            ),
            ("::1", "/callback?error=access_denied".to_owned()),
            (
                "127.0.0.1",
                "/callback?code=forged&state=not-yours".to_owned(),
            ),
            ("127.0.0.1", format!("/callback?code=forged&state={state}x")),
            ("127.0.0.1", format!("/callback?state={state}")),
        ] {
            let (status, body) = get(host, port, &target).await;
            assert_eq!(status, 400, "{target}: {body}");
            assert!(body.contains("The sign-in goes on"), "{body}");
            assert!(!task.is_finished(), "{target} ended the sign-in");
        }
        let (status, _) = get("127.0.0.1", port, "/favicon.ico").await;
        assert_eq!(status, 404);

        // A connection that sends nothing, held open: the real callback is served anyway.
        let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (status, page) = scripted_sign_in(&url, "alice", "alice-pass")
            .await
            .expect("the real sign-in");
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("Signed in as alice"), "{page}");
        let signed_in = task.await.unwrap().expect("login completes");
        assert_eq!(signed_in.username.as_deref(), Some("alice"));
        assert_eq!(
            f.store.load().unwrap().unwrap().username.as_deref(),
            Some("alice")
        );
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_with_the_right_state_ends_the_sign_in_printably() {
    with_timeout(60, async {
        let f = fixture().await;
        let port = f.profile.callback_port;
        let (task, mut urls) = start_login(&f, Duration::from_secs(40));
        let state = state_of(&urls.recv().await.unwrap());
        let target = format!(
            "/callback?state={state}&error=access_denied%0d%0a&error_description=\
             %1b%5d0%3bowned%07%1b%5b31mred%e2%80%ae%c2%9b"
        );
        let (status, body) = get("127.0.0.1", port, &target).await;
        assert_eq!(status, 400, "{body}");
        let err = task
            .await
            .unwrap()
            .expect_err("the sign-in page refused")
            .to_string();
        assert!(err.contains("access_denied"), "{err}");
        assert!(err.contains("owned") && err.contains("red"), "{err}");
        assert!(
            !err.chars().any(|c| c.is_control() || c == '\u{202E}'),
            "control characters reach the terminal: {err:?}"
        );
        assert!(f.store.load().unwrap().is_none());
        f.running.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_ipv6_loopback_is_an_error() {
    with_timeout(30, async {
        let f = fixture().await;
        let port = f.profile.callback_port;
        let _other = std::net::TcpListener::bind(("::1", port))
            .expect("this machine has an IPv6 loopback (the test needs one)");
        let (task, mut urls) = start_login(&f, Duration::from_secs(10));
        let err = task.await.unwrap().expect_err("[::1] is taken").to_string();
        assert!(
            err.contains("[::1]") && err.contains(&port.to_string()),
            "{err}"
        );
        assert!(err.contains("callback_port"), "{err}");
        assert!(urls.try_recv().is_err(), "no browser opened");
        // 127.0.0.1 is released again.
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("127.0.0.1 released");
        f.running.shutdown().await;
    })
    .await;
}
