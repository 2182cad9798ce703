//! The Cognito hosted UI and OAuth endpoints: `/oauth2/authorize` (and `/login`), the sign-in
//! form's POST, `/oauth2/token`, `/oauth2/revoke`, `/logout`, and the pool's JWKS.
//!
//! Strictness is the point: an unregistered `redirect_uri` gets an error page and never a
//! redirect, PKCE S256 is required, codes are single-use — so a mistake in cognifs's login
//! shows up as a failing test here rather than against AWS.

use std::collections::HashMap;
use std::time::SystemTime;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::cognito::{Cognito, PendingCode, TokenError};
use crate::server::{Reply, html_escape};

/// The OAuth parameters an authorize request carries, kept through the sign-in form.
struct AuthorizeParams {
    client_id: String,
    redirect_uri: String,
    state: String,
    code_challenge: String,
    scope: String,
}

impl AuthorizeParams {
    /// Checks the request; an `Err` is an error page, because nothing in it can be trusted
    /// as a place to redirect to.
    fn validate(cognito: &Cognito, q: &HashMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
        let client_id = get("client_id");
        if client_id != cognito.client_id {
            return Err("Invalid client_id: this app client does not exist.".into());
        }
        let redirect_uri = get("redirect_uri");
        if !cognito.callback_urls.contains(&redirect_uri) {
            return Err(format!(
                "redirect_mismatch: {redirect_uri:?} is not a registered callback URL of this app client."
            ));
        }
        if get("response_type") != "code" {
            return Err(
                "unsupported_response_type: this app client allows only response_type=code.".into(),
            );
        }
        if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
            return Err("invalid_request: PKCE is required (code_challenge with code_challenge_method=S256).".into());
        }
        let scope = q.get("scope").cloned().unwrap_or_else(|| "openid".into());
        if scope.split(' ').any(|s| {
            ![
                "openid",
                "email",
                "profile",
                "phone",
                "aws.cognito.signin.user.admin",
            ]
            .contains(&s)
        }) {
            return Err(format!("invalid_scope: {scope:?}"));
        }
        Ok(Self {
            client_id,
            redirect_uri,
            state: get("state"),
            code_challenge: get("code_challenge"),
            scope,
        })
    }

    fn hidden_fields(&self) -> String {
        [
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("state", &self.state),
            ("code_challenge", &self.code_challenge),
            ("scope", &self.scope),
        ]
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{k}" value="{}">"#,
                html_escape(v)
            )
        })
        .chain([
            r#"<input type="hidden" name="response_type" value="code">"#.to_owned(),
            r#"<input type="hidden" name="code_challenge_method" value="S256">"#.to_owned(),
        ])
        .collect()
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> Reply {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:24em;margin:4em auto}}label,input{{display:block;width:100%;margin:.3em 0}}\
         .error{{color:#b00}}</style></head><body><h1>{title}</h1>{body}</body></html>"
    );
    Reply::html(status, html)
}

fn sign_in_form(params: &AuthorizeParams, error: Option<&str>, username: &str) -> Reply {
    let error = error
        .map(|e| format!(r#"<p class="error" id="error">{}</p>"#, html_escape(e)))
        .unwrap_or_default();
    let body = format!(
        r#"{error}<form method="post" action="/login">{}
<label for="username">Username</label><input id="username" name="username" autocomplete="username" value="{}">
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password">
<input type="submit" id="signin" value="Sign in"></form>"#,
        params.hidden_fields(),
        html_escape(username),
    );
    page(StatusCode::OK, "Sign in (devstack)", &body)
}

fn token_error(err: TokenError) -> Reply {
    let (status, body) = match err {
        TokenError::InvalidGrant(why) => (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": why}),
        ),
        TokenError::InvalidClient => (StatusCode::BAD_REQUEST, json!({"error": "invalid_client"})),
        TokenError::InvalidRequest(why) => (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": why}),
        ),
        TokenError::UnsupportedGrantType => (
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}),
        ),
    };
    Reply::json(status, &body)
}

/// Whether this request is the hosted UI's to answer.
pub fn matches(cognito: &Cognito, path: &str) -> bool {
    matches!(
        path,
        "/oauth2/authorize" | "/login" | "/oauth2/token" | "/oauth2/revoke" | "/logout"
    ) || path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(cognito.user_pool_id.as_str()))
        .is_some_and(|p| p.starts_with("/.well-known/"))
}

pub fn handle(
    cognito: &Cognito,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    form: &HashMap<String, String>,
) -> Reply {
    match (method, path) {
        (&Method::GET, "/oauth2/authorize" | "/login") => {
            match AuthorizeParams::validate(cognito, query) {
                Ok(params) => sign_in_form(&params, None, ""),
                Err(why) => page(
                    StatusCode::BAD_REQUEST,
                    "Sign-in error",
                    &format!("<p class=\"error\">{}</p>", html_escape(&why)),
                ),
            }
        }
        (&Method::POST, "/login") => {
            let params = match AuthorizeParams::validate(cognito, form) {
                Ok(p) => p,
                Err(why) => {
                    return page(
                        StatusCode::BAD_REQUEST,
                        "Sign-in error",
                        &format!("<p class=\"error\">{}</p>", html_escape(&why)),
                    );
                }
            };
            let username = form.get("username").map(String::as_str).unwrap_or_default();
            let password = form.get("password").map(String::as_str).unwrap_or_default();
            if !cognito.check_password(username, password) {
                tracing::debug!(username, "sign-in refused");
                return sign_in_form(&params, Some("Incorrect username or password."), username);
            }
            let code = cognito.issue_code(PendingCode {
                username: username.to_owned(),
                client_id: params.client_id,
                redirect_uri: params.redirect_uri.clone(),
                code_challenge: params.code_challenge,
                scope: params.scope,
                issued: SystemTime::now(),
            });
            let mut location =
                url::Url::parse(&params.redirect_uri).expect("registered callback URLs parse");
            location.query_pairs_mut().append_pair("code", &code);
            if !params.state.is_empty() {
                location
                    .query_pairs_mut()
                    .append_pair("state", &params.state);
            }
            tracing::debug!(username, "signed in; redirecting to the callback");
            Reply::redirect(location.as_str())
        }
        (&Method::POST, "/oauth2/token") => {
            let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
            let result = match get("grant_type") {
                "authorization_code" => cognito.exchange_code(
                    get("code"),
                    get("client_id"),
                    get("redirect_uri"),
                    get("code_verifier"),
                ),
                "refresh_token" => cognito.refresh(get("refresh_token"), get("client_id")),
                _ => Err(TokenError::UnsupportedGrantType),
            };
            match result {
                Ok(tokens) => Reply::json(StatusCode::OK, &tokens),
                Err(err) => {
                    tracing::debug!(?err, "token request refused");
                    token_error(err)
                }
            }
        }
        (&Method::POST, "/oauth2/revoke") => {
            match cognito.revoke(
                form.get("token").map(String::as_str).unwrap_or_default(),
                form.get("client_id")
                    .map(String::as_str)
                    .unwrap_or_default(),
            ) {
                Ok(()) => Reply::json(StatusCode::OK, &json!({})),
                Err(err) => token_error(err),
            }
        }
        (&Method::GET, "/logout") => match query.get("logout_uri") {
            Some(uri)
                if cognito
                    .callback_urls
                    .iter()
                    .any(|c| uri.starts_with(c.trim_end_matches("callback"))) =>
            {
                Reply::redirect(uri)
            }
            Some(_) => page(
                StatusCode::BAD_REQUEST,
                "Sign-out error",
                "<p class=\"error\">logout_uri is not registered.</p>",
            ),
            None => page(StatusCode::OK, "Signed out", "<p>You are signed out.</p>"),
        },
        (&Method::GET, _) if path.ends_with("/.well-known/jwks.json") => {
            Reply::json(StatusCode::OK, &cognito.jwks())
        }
        (&Method::GET, _) if path.ends_with("/.well-known/openid-configuration") => {
            let base = &cognito.base_url;
            Reply::json(
                StatusCode::OK,
                &json!({
                    "issuer": cognito.issuer(),
                    "authorization_endpoint": format!("{base}/oauth2/authorize"),
                    "token_endpoint": format!("{base}/oauth2/token"),
                    "revocation_endpoint": format!("{base}/oauth2/revoke"),
                    "jwks_uri": format!("{}/.well-known/jwks.json", cognito.issuer()),
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }),
            )
        }
        _ => page(StatusCode::NOT_FOUND, "Not found", "<p>No such page.</p>"),
    }
}
