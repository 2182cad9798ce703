//! `cognifs login`: the loopback authorization-code flow with PKCE (S256).
//!
//! A listener on `127.0.0.1:{callback_port}` (and `[::1]` when there is one, since browsers
//! may resolve `localhost` either way) waits for the hosted UI's redirect to `/callback`;
//! the browser is opened with `$BROWSER` or `xdg-open`. Without a browser the user opens the
//! URL anywhere and pastes back the address the browser was sent to; the listener still runs,
//! so whichever arrives first wins. The `state` parameter is checked on every path.

use std::time::Duration;

use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, Scope};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::AuthError;
use super::tokens::{TokenState, TokenStore, describe_token_error, http_client, oauth_client};
use crate::config::Profile;

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
    /// The browser connection, answered once the token exchange is done; `None` for a paste.
    stream: Option<TcpStream>,
}

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
            cb = accept_callback(&listeners, state.secret()) => cb,
            cb = read_pasted(state.secret()), if paste => cb,
        }
    })
    .await;
    let callback = match waited {
        Ok(cb) => cb?,
        Err(_) => {
            return Err(AuthError::Login(format!(
                "no sign-in arrived within {}; run `cognifs login` again",
                human_duration(options.timeout)
            )));
        }
    };

    let result = finish(profile, store, &client, callback.code, verifier).await;
    if let Some(mut stream) = callback.stream {
        let (status, body) = match &result {
            Ok(s) => (
                "200 OK",
                format!(
                    "Signed in as {}. You can close this tab.",
                    s.username
                        .as_deref()
                        .or(s.email.as_deref())
                        .unwrap_or("you")
                ),
            ),
            Err(e) => ("400 Bad Request", format!("Sign-in failed: {e}")),
        };
        let _ = respond(&mut stream, status, &body).await;
    }
    result
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
    let state = TokenState::from_response(&resp, previous.as_ref())?;
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
    // Browsers may try ::1 for `localhost` first; without IPv6 that simply is not there.
    if let Ok(v6) = TcpListener::bind(("::1", port)).await {
        listeners.push(v6);
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

/// Pulls `code` out of a redirect's query, checking `state` and surfacing `error=`.
fn parse_redirect(query: &str, expected_state: &str) -> Result<String, AuthError> {
    let pairs: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    if let Some(err) = pairs.get("error") {
        let desc = pairs
            .get("error_description")
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err(AuthError::Login(format!(
            "the sign-in page answered {err}{desc}"
        )));
    }
    if pairs.get("state").map(String::as_str) != Some(expected_state) {
        return Err(AuthError::Login("the answer's state does not match this sign-in (a stale tab, or a forged request); try again".into()));
    }
    pairs
        .get("code")
        .cloned()
        .ok_or_else(|| AuthError::Login("the answer carries no code".into()))
}

async fn accept_callback(
    listeners: &[TcpListener],
    expected_state: &str,
) -> Result<Callback, AuthError> {
    loop {
        let accepted = match listeners {
            [one] => one.accept().await,
            [a, b, ..] => tokio::select! { r = a.accept() => r, r = b.accept() => r },
            [] => return Err(AuthError::Login("no callback listener".into())),
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let Some(target) = read_request_target(&mut stream).await else {
            continue;
        };
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        if path != "/callback" {
            let _ = respond(&mut stream, "404 Not Found", "Not the sign-in callback.").await;
            continue;
        }
        match parse_redirect(query, expected_state) {
            Ok(code) => {
                return Ok(Callback {
                    code,
                    stream: Some(stream),
                });
            }
            Err(e) => {
                let _ = respond(
                    &mut stream,
                    "400 Bad Request",
                    &format!("Sign-in failed: {e}"),
                )
                .await;
                return Err(e);
            }
        }
    }
}

/// The target of a `GET` request line, read within a short time and size bound.
async fn read_request_target(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()??;
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next()?.split(' ');
    (parts.next()? == "GET").then_some(())?;
    parts.next().map(str::to_owned)
}

async fn respond(stream: &mut TcpStream, status: &str, message: &str) -> std::io::Result<()> {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>cognifs</title></head>\
         <body style=\"font-family:sans-serif;max-width:30em;margin:4em auto\"><h1>cognifs</h1><p id=\"result\">{escaped}</p></body></html>"
    );
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
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
            Ok(code) => return Ok(Callback { code, stream: None }),
            Err(e) => eprintln!("{e}\nPaste the full address the browser was sent to:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_parsing_checks_state_and_errors() {
        assert_eq!(parse_redirect("code=abc&state=s1", "s1").unwrap(), "abc");
        assert!(
            parse_redirect("code=abc&state=s2", "s1")
                .unwrap_err()
                .to_string()
                .contains("state does not match")
        );
        assert!(parse_redirect("code=abc", "s1").is_err());
        let err = parse_redirect("error=access_denied&error_description=no&state=s1", "s1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("access_denied") && err.contains("no"), "{err}");
        assert!(
            parse_redirect("state=s1", "s1")
                .unwrap_err()
                .to_string()
                .contains("no code")
        );
    }
}
