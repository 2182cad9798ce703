//! Drives devstack the way cognifs and AWS clients do: an HTTP client through the hosted UI,
//! the real aws-sdk-cognitoidentity (unsigned) and aws-sdk-s3 (SigV4 with issued credentials).

#![allow(dead_code)]

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_s3::config::Region;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use devstack::{Options, Running};
use serde_json::Value;

pub const ADMIN: (&str, &str) = ("ADMINKEY", "admin-secret-key");

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

pub fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = devstack::cognito::random_token(48);
    let challenge = URL_SAFE_NO_PAD.encode(devstack::cognito::sha256(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

pub fn redirect_uri(running: &Running) -> String {
    format!(
        "http://localhost:{}/callback",
        running.profile.callback_port
    )
}

pub fn authorize_url(running: &Running, redirect: &str, challenge: &str, state: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/oauth2/authorize", running.base_url)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &running.profile.client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("state", state)
        .append_pair("scope", "openid email profile")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    url.into()
}

/// Posts the sign-in form as a browser would; returns the response (a 302 on success).
pub async fn post_login(
    running: &Running,
    user: &str,
    password: &str,
    redirect: &str,
    challenge: &str,
    state: &str,
) -> reqwest::Response {
    let form = [
        ("username", user),
        ("password", password),
        ("client_id", running.profile.client_id.as_str()),
        ("redirect_uri", redirect),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("response_type", "code"),
        ("scope", "openid email profile"),
    ];
    http()
        .post(format!("{}/login", running.base_url))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Authorize → form → redirect; returns the authorization code.
pub async fn get_code(running: &Running, user: &str, password: &str, pkce: &Pkce) -> String {
    let redirect = redirect_uri(running);
    let page = http()
        .get(authorize_url(running, &redirect, &pkce.challenge, "st4te"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"name="username""#) && html.contains(r#"name="password""#),
        "sign-in form: {html}"
    );
    let resp = post_login(running, user, password, &redirect, &pkce.challenge, "st4te").await;
    assert_eq!(resp.status(), 302, "sign-in should redirect");
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&redirect));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st4te");
    q["code"].clone()
}

pub async fn token_request(running: &Running, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/oauth2/token", running.base_url))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

pub async fn exchange(running: &Running, code: &str, verifier: &str) -> (u16, Value) {
    let redirect = redirect_uri(running);
    token_request(
        running,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &running.profile.client_id),
            ("code", code),
            ("redirect_uri", &redirect),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// A full sign-in; returns the token response.
pub async fn sign_in(running: &Running, user: &str, password: &str) -> Value {
    let pkce = pkce();
    let code = get_code(running, user, password, &pkce).await;
    let (status, tokens) = exchange(running, &code, &pkce.verifier).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

pub fn identity_client(running: &Running) -> aws_sdk_cognitoidentity::Client {
    install_crypto();
    let config = aws_sdk_cognitoidentity::Config::builder()
        .behavior_version(aws_sdk_cognitoidentity::config::BehaviorVersion::latest())
        .region(aws_sdk_cognitoidentity::config::Region::new(
            running.profile.region.clone(),
        ))
        .endpoint_url(&running.profile.identity_endpoint)
        .build();
    aws_sdk_cognitoidentity::Client::from_conf(config)
}

pub fn provider(running: &Running) -> String {
    format!(
        "cognito-idp.{}.amazonaws.com/{}",
        running.profile.region, running.profile.user_pool_id
    )
}

pub async fn identity_id(running: &Running, id_token: &str) -> String {
    identity_client(running)
        .get_id()
        .identity_pool_id(&running.profile.identity_pool_id)
        .logins(provider(running), id_token)
        .send()
        .await
        .expect("GetId")
        .identity_id
        .unwrap()
}

/// GetId + GetCredentialsForIdentity, as cognifs does after sign-in.
pub async fn aws_credentials(running: &Running, id_token: &str) -> (String, Credentials) {
    let id = identity_id(running, id_token).await;
    let out = identity_client(running)
        .get_credentials_for_identity()
        .identity_id(&id)
        .logins(provider(running), id_token)
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
    s3_client_at(&running.profile.s3_endpoint, &running.profile.region, creds)
}

/// An S3 client for any endpoint, e.g. a devstack running as its own process.
pub fn s3_client_at(endpoint: &str, region: &str, creds: Credentials) -> aws_sdk_s3::Client {
    install_crypto();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The same client with one attempt per call, so an injected fault is what the call returns.
pub fn without_retries(s3: &aws_sdk_s3::Client) -> aws_sdk_s3::Client {
    let config = s3
        .config()
        .to_builder()
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub fn admin_s3(running: &Running) -> aws_sdk_s3::Client {
    s3_client(
        running,
        Credentials::new(ADMIN.0, ADMIN.1, None, None, "admin"),
    )
}

/// Signs `user` in and returns (identity id, an S3 client with that identity's credentials).
pub async fn user_s3(
    running: &Running,
    user: &str,
    password: &str,
) -> (String, aws_sdk_s3::Client) {
    let tokens = sign_in(running, user, password).await;
    let (id, creds) = aws_credentials(running, tokens["id_token"].as_str().unwrap()).await;
    (id, s3_client(running, creds))
}

/// The S3 error code of a failed SDK call.
pub fn error_code<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(e) => e.code().unwrap_or("<no code>").to_owned(),
        None => format!("<not a service error: {err:?}>"),
    }
}
