//! `cognifs login`: the loopback authorization-code flow with PKCE (S256).
//!
//! Listeners on `127.0.0.1:{callback_port}` and `[::1]:{callback_port}` (browsers may resolve
//! `localhost` either way; a `[::1]` taken by another program is an error, since whoever holds
//! it would receive the sign-in; a machine without IPv6 simply has none) wait for the hosted
//! UI's redirect to `/callback`, served by hyper ([`crate::httpd`]): concurrently, each
//! connection bounded in time. The browser is opened with `$BROWSER` or `xdg-open`. Without a
//! browser the user opens the URL anywhere and pastes back the address the browser was sent
//! to; the listeners still run, so whichever arrives first wins.
//!
//! `state` is checked first on every path: a callback without this sign-in's state (a stale
//! tab, a forged request from a web page or a local user) gets a 400 and the real one is
//! still awaited; `error=` ends the sign-in only with the right state. Whatever the callback
//! carries is shown only through [`crate::httpd::printable`] (no control characters).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, Scope};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::AuthError;
use super::tokens::{TokenState, TokenStore, describe_token_error, http_client, oauth_client};
use crate::config::Profile;
use crate::httpd::{self, Limits, Reply, printable};

pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// How the sign-in page reaches the user.
pub enum Browser {
    /// `$BROWSER URL`, else `xdg-open URL` when there is a display; else [`Browser::Paste`].
    System,
    /// Print the URL and read the redirected address from standard input.
    Paste,
    /// Something else opens the URL: the demo's scripted sign-in, tests.
    Custom(Box<dyn FnOnce(String) + Send>),
}

pub struct LoginOptions {
    pub browser: Browser,
    pub timeout: Duration,
}

impl Default for LoginOptions {
    fn default() -> Self {
        Self {
            browser: Browser::System,
            timeout: LOGIN_TIMEOUT,
        }
    }
}

/// What came back to the redirect URI.
struct Callback {
    code: String,
    /// Where the page for the browser goes once the token exchange is done; `None` for a
    /// paste.
    page: Option<oneshot::Sender<(StatusCode, String)>>,
}

/// What the listeners hand to the waiting sign-in: the first callback with this sign-in's
/// state, a code or a refusal.
type Arrival = Result<Callback, AuthError>;

pub async fn login(
    profile: &Profile,
    store: &TokenStore,
    options: LoginOptions,
) -> Result<TokenState, AuthError> {
    let client = oauth_client(profile)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(["openid", "email", "profile"].map(|s| Scope::new(s.into())))
        .set_pkce_challenge(challenge)
        .url();
    let listeners = bind_callback(profile).await?;
    let (arrived_tx, arrived) = oneshot::channel();
    let servers = serve_callback(listeners, state.secret(), arrived_tx);

    // (paste, scripted): a custom browser signs in by itself (the demo, tests), so there is
    // nobody to tell where to go or what to wait for.
    let (paste, scripted) = match options.browser {
        Browser::Custom(open) => {
            open(auth_url.to_string());
            (false, true)
        }
        Browser::Paste => (true, false),
        Browser::System => (!open_system_browser(auth_url.as_str()), false),
    };
    if !scripted {
        eprintln!("Sign in at:\n\n    {auth_url}\n");
    }
    if paste {
        eprintln!(
            "Open that address in a browser on any machine. After signing in, the browser is sent to \
             {} — it may fail to load there. Copy the full address from the address bar and paste it here:",
            profile.redirect_uri()
        );
    } else if !scripted {
        eprintln!("Waiting for the browser (Ctrl-C to cancel)...");
    }

    let waited = tokio::time::timeout(options.timeout, async {
        tokio::select! {
            cb = arrived => cb.unwrap_or_else(|_| Err(AuthError::Login("the callback listeners stopped".into()))),
            cb = read_pasted(state.secret()), if paste => cb,
        }
    })
    .await;
    let callback = match waited {
        Ok(cb) => cb,
        Err(_) => Err(AuthError::Login(format!(
            "no sign-in arrived within {}; run `cognifs login` again",
            human_duration(options.timeout)
        ))),
    };
    let callback = match callback {
        Ok(cb) => cb,
        Err(e) => {
            stop(servers).await;
            return Err(e);
        }
    };

    let result = finish(profile, store, &client, callback.code, verifier).await;
    if let Some(page) = callback.page {
        let answer = match &result {
            Ok(s) => (
                StatusCode::OK,
                format!(
                    "Signed in as {}. You can close this tab.",
                    s.username
                        .as_deref()
                        .or(s.email.as_deref())
                        .unwrap_or("you")
                ),
            ),
            Err(e) => (StatusCode::BAD_REQUEST, format!("Sign-in failed: {e}")),
        };
        let _ = page.send(answer);
        // Let the browser's connection take its page before the listeners go.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(servers).await;
    result
}

/// Stops the callback servers and waits until their listeners are closed: the port is
/// free again when `login` returns.
async fn stop(servers: Vec<tokio::task::JoinHandle<()>>) {
    for s in &servers {
        s.abort();
    }
    for s in servers {
        let _ = s.await;
    }
}

fn human_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", s / 60),
    }
}

async fn finish(
    profile: &Profile,
    store: &TokenStore,
    client: &super::tokens::CognitoClient,
    code: String,
    verifier: PkceCodeVerifier,
) -> Result<TokenState, AuthError> {
    let resp = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http_client())
        .await
        .map_err(|e| match describe_token_error(e, profile) {
            AuthError::SignedOut { .. } => AuthError::Login(
                "the sign-in code was refused (expired or already used); try again".into(),
            ),
            other => other,
        })?;
    let previous = store.load().ok().flatten();
    let mut state = TokenState::from_response(&resp, previous.as_ref())?;
    // A new sign-in: its lifetime starts now (a refresh keeps it).
    state.signed_in_at = Some(super::tokens::unix_now());
    if resp.extra_fields().refresh_token_expires_in.is_none() {
        state.refresh_token_expires = None;
    }
    store.save(&state)?;
    Ok(state)
}

async fn bind_callback(profile: &Profile) -> Result<Vec<TcpListener>, AuthError> {
    let port = profile.callback_port;
    let v4 = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            AuthError::Login(format!(
                "port {port} is in use (another `cognifs login`, or another program). Set `callback_port` in profile [{}] of {} \
                 to a free port, and add http://localhost:PORT/callback to the app client's callback URLs.",
                profile.name,
                profile.config_path.display()
            ))
        } else {
            AuthError::Login(format!("cannot listen on 127.0.0.1:{port}: {e}"))
        }
    })?;
    let mut listeners = vec![v4];
    // Browsers may try ::1 for `localhost` first. Without IPv6 that simply is not there; but
    // when another program holds it, the browser may hand it the sign-in's code.
    match TcpListener::bind(("::1", port)).await {
        Ok(v6) => listeners.push(v6),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(AuthError::Login(format!(
                "port {port} is free on 127.0.0.1 but taken on [::1] by another program (or another user): \
                 a browser resolving localhost to ::1 would hand it your sign-in. Stop that program, or set \
                 `callback_port` in profile [{}] of {} to a free port and add http://localhost:PORT/callback \
                 to the app client's callback URLs.",
                profile.name,
                profile.config_path.display()
            )));
        }
        Err(_) => {}
    }
    Ok(listeners)
}

/// Runs `$BROWSER URL` or `xdg-open URL`; false when neither could be started.
fn open_system_browser(url: &str) -> bool {
    let command = match std::env::var("BROWSER") {
        Ok(b) if !b.trim().is_empty() => b,
        _ if std::env::var_os("DISPLAY").is_some()
            || std::env::var_os("WAYLAND_DISPLAY").is_some() =>
        {
            "xdg-open".to_owned()
        }
        _ => return false,
    };
    let mut parts = command.split_whitespace();
    let Some(program) = parts.next() else {
        return false;
    };
    match tokio::process::Command::new(program)
        .args(parts)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            true
        }
        Err(e) => {
            eprintln!("Could not start the browser ({program}: {e}).");
            false
        }
    }
}

/// What a redirect to the callback says, once its state is this sign-in's.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    Code(String),
    /// `error=` (and `error_description`), printable.
    Refused(String),
}

/// Why a redirect is not this sign-in's answer.
#[derive(Debug, PartialEq, Eq)]
enum NotOurs {
    /// No state, or another one: a stale tab, or a forged request.
    ForeignState,
    NoCode,
}

impl NotOurs {
    fn message(&self) -> &'static str {
        match self {
            NotOurs::ForeignState => {
                "the answer's state does not match this sign-in (a stale tab, or a forged request)"
            }
            NotOurs::NoCode => "the answer carries no code",
        }
    }
}

/// Reads a redirect's query: the state first, then an error or the code. Values are
/// untrusted: whatever is kept to show is made [`printable`].
fn parse_redirect(query: &str, expected_state: &str) -> Result<Redirect, NotOurs> {
    let mut state = None;
    let (mut code, mut error, mut description) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "state" => &mut state,
            "code" => &mut code,
            "error" => &mut error,
            "error_description" => &mut description,
            _ => continue,
        };
        // A repeated parameter makes the answer ambiguous: not ours.
        if slot.replace(v.into_owned()).is_some() {
            return Err(NotOurs::ForeignState);
        }
    }
    if state.as_deref() != Some(expected_state) {
        return Err(NotOurs::ForeignState);
    }
    if let Some(err) = error {
        let desc = description
            .map(|d| format!(": {}", printable(&d, 300)))
            .unwrap_or_default();
        return Ok(Redirect::Refused(format!(
            "the sign-in page answered {}{desc}",
            printable(&err, 100)
        )));
    }
    code.map(Redirect::Code).ok_or(NotOurs::NoCode)
}

/// The most a callback connection lives: the browser waits on it through the token
/// exchange (whose HTTP client gives up after 30 s).
const CALLBACK_CONNECTION: Duration = Duration::from_secs(60);

/// Serves the callback on every listener; the first callback with this sign-in's state
/// (a code, or an `error=`) goes to `arrived`, once.
fn serve_callback(
    listeners: Vec<TcpListener>,
    expected_state: &str,
    arrived: oneshot::Sender<Arrival>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let expected: Arc<str> = expected_state.into();
    let arrived = Arc::new(Mutex::new(Some(arrived)));
    let limits = Limits {
        header_read: Duration::from_secs(10),
        connection: CALLBACK_CONNECTION,
        connections: 32,
    };
    listeners
        .into_iter()
        .map(|listener| {
            let (expected, arrived) = (expected.clone(), arrived.clone());
            httpd::serve(listener, limits, move |req| {
                let (expected, arrived) = (expected.clone(), arrived.clone());
                async move { answer_callback(req, &expected, &arrived).await }
            })
        })
        .collect()
}

async fn answer_callback(
    req: hyper::Request<hyper::body::Incoming>,
    expected_state: &str,
    arrived: &Mutex<Option<oneshot::Sender<Arrival>>>,
) -> Reply {
    if req.method() != hyper::Method::GET {
        return page(StatusCode::METHOD_NOT_ALLOWED, "Not the sign-in callback.");
    }
    if req.uri().path() != "/callback" {
        return page(StatusCode::NOT_FOUND, "Not the sign-in callback.");
    }
    let redirect = match parse_redirect(req.uri().query().unwrap_or(""), expected_state) {
        Ok(r) => r,
        Err(why) => {
            return page(
                StatusCode::BAD_REQUEST,
                &format!(
                    "This is not the answer cognifs is waiting for: {}. The sign-in goes on; \
                     finish it in the tab cognifs opened.",
                    why.message()
                ),
            );
        }
    };
    let Some(to_login) = arrived.lock().unwrap().take() else {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in is already being completed.",
        );
    };
    match redirect {
        Redirect::Refused(why) => {
            let shown = format!("Sign-in failed: {why}");
            let _ = to_login.send(Err(AuthError::Login(why)));
            page(StatusCode::BAD_REQUEST, &shown)
        }
        Redirect::Code(code) => {
            let (page_tx, page_rx) = oneshot::channel();
            let _ = to_login.send(Ok(Callback {
                code,
                page: Some(page_tx),
            }));
            match tokio::time::timeout(CALLBACK_CONNECTION, page_rx).await {
                Ok(Ok((status, body))) => page(status, &body),
                _ => page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The sign-in did not complete; see the terminal.",
                ),
            }
        }
    }
}

/// The small HTML page the browser shows.
fn page(status: StatusCode, message: &str) -> Reply {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>cognifs</title></head>\
         <body style=\"font-family:sans-serif;max-width:30em;margin:4em auto\"><h1>cognifs</h1><p id=\"result\">{escaped}</p></body></html>"
    );
    httpd::reply(status, "text/html; charset=utf-8", body)
}

async fn read_pasted(expected_state: &str) -> Result<Callback, AuthError> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| AuthError::Login(format!("reading standard input: {e}")))?;
        let Some(line) = line else {
            // No terminal to paste into: leave it to the listener.
            return std::future::pending().await;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let query = match url::Url::parse(line) {
            Ok(u) => u.query().unwrap_or_default().to_owned(),
            Err(_) => line.trim_start_matches('?').to_owned(),
        };
        match parse_redirect(&query, expected_state) {
            Ok(Redirect::Code(code)) => return Ok(Callback { code, page: None }),
            Ok(Redirect::Refused(why)) => return Err(AuthError::Login(why)),
            Err(why) => eprintln!(
                "{}; try again.\nPaste the full address the browser was sent to:",
                why.message()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_parsing_checks_state_first() {
        let parse = parse_redirect;
        assert_eq!(
            parse("code=abc&state=s1", "s1"),
            Ok(Redirect::Code("abc".into()))
        );
        assert_eq!(parse("code=abc&state=s2", "s1"), Err(NotOurs::ForeignState));
        assert_eq!(parse("code=abc", "s1"), Err(NotOurs::ForeignState));
        assert_eq!(parse("state=s1", "s1"), Err(NotOurs::NoCode));
        // An error without this sign-in's state is someone else's: it ends nothing.
        assert_eq!(
            parse("error=access_denied&error_description=no", "s1"),
            Err(NotOurs::ForeignState)
        );
        assert_eq!(
            parse("error=access_denied&state=other", "s1"),
            Err(NotOurs::ForeignState)
        );
        assert_eq!(
            parse("code=a&code=b&state=s1", "s1"),
            Err(NotOurs::ForeignState)
        );
        assert_eq!(
            parse("state=s1&state=s1&code=a", "s1"),
            Err(NotOurs::ForeignState)
        );
        let Ok(Redirect::Refused(why)) = parse(
            "error=access_denied&error_description=no%1b%5b2J%0d%0aFAKE%e2%80%ae&state=s1",
            "s1",
        ) else {
            panic!("an error with the right state is a refusal");
        };
        assert_eq!(why, "the sign-in page answered access_denied: no[2JFAKE");
    }

    proptest::proptest! {
        /// Any query: no panic, and nothing printable-unsafe in what is kept to show.
        #[test]
        fn any_query_parses_without_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let raw = String::from_utf8_lossy(&raw);
            let _ = parse_redirect(&raw, "s");
            // With the right state, whatever error it carries is shown without controls.
            let query = format!("state=s&error={raw}");
            if let Ok(Redirect::Refused(why)) = parse_redirect(&query, "s") {
                proptest::prop_assert!(!why.chars().any(char::is_control));
            }
        }
    }
}
