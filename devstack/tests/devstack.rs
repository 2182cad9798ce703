//! End-to-end tests of devstack through real clients. One test binary (linking the AWS SDK is
//! slow), one devstack per test (each on its own free port and temp dir).

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use common::*;
use devstack::Running;

// ---- hosted UI and tokens ----

#[tokio::test]
async fn sign_in_issues_cognito_shaped_tokens() {
    let running = start().await;
    let tokens = sign_in(&running, "alice", "alice-pass").await;
    for field in ["id_token", "access_token", "refresh_token"] {
        assert!(
            tokens[field].as_str().is_some_and(|t| !t.is_empty()),
            "{field} missing: {tokens}"
        );
    }
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    let id_token = tokens["id_token"].as_str().unwrap();
    let claims = running.cognito.jwks();
    assert_eq!(claims["keys"][0]["alg"], "RS256");
    // The JWKS is served where Cognito serves it.
    let jwks = jwks(&running).await;
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    let payload = id_token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["iss"],
        format!("{}/{}", running.base_url, running.profile.user_pool_id)
    );
    assert_eq!(claims["aud"], running.profile.client_id);
    assert_eq!(claims["token_use"], "id");
    assert_eq!(claims["cognito:username"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    running.shutdown().await;
}

#[tokio::test]
async fn pkce_mismatch_is_refused() {
    let running = start().await;
    let pkce = pkce();
    let code = get_code(&running, "alice", "alice-pass", &pkce).await;
    let wrong = common::pkce();
    let (status, body) = exchange(&running, &code, &wrong.verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    running.shutdown().await;
}

#[tokio::test]
async fn authorize_without_pkce_is_an_error_page() {
    let running = start().await;
    let redirect = redirect_uri(&running);
    let url =
        authorize_url(&running, &redirect, "", "s").replace("&code_challenge_method=S256", "");
    let resp = http().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    assert!(resp.text().await.unwrap().contains("PKCE"));
    running.shutdown().await;
}

#[tokio::test]
async fn code_is_single_use() {
    let running = start().await;
    let pkce = pkce();
    let code = get_code(&running, "alice", "alice-pass", &pkce).await;
    assert_eq!(exchange(&running, &code, &pkce.verifier).await.0, 200);
    let (status, body) = exchange(&running, &code, &pkce.verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    running.shutdown().await;
}

#[tokio::test]
async fn unregistered_redirect_uri_never_redirects() {
    let running = start().await;
    let pkce = pkce();
    for evil in [
        "http://evil.example/callback",
        "http://localhost:1/callback",
        "http://localhost:53682/callback/../x",
    ] {
        let resp = http()
            .get(authorize_url(&running, evil, &pkce.challenge, "s"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{evil}");
        assert!(resp.headers().get("location").is_none());
        let resp = post_login(&running, "alice", "alice-pass", evil, &pkce.challenge, "s").await;
        assert_eq!(resp.status(), 400, "{evil}");
        assert!(resp.headers().get("location").is_none());
    }
    // Both loopback spellings of the registered port are accepted.
    let other = format!(
        "http://127.0.0.1:{}/callback",
        running.profile.callback_port
    );
    let resp = http()
        .get(authorize_url(&running, &other, &pkce.challenge, "s"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    running.shutdown().await;
}

#[tokio::test]
async fn wrong_password_reshows_the_form() {
    let running = start().await;
    let pkce = pkce();
    let redirect = redirect_uri(&running);
    for (user, password) in [("alice", "bob-pass"), ("nobody", "x"), ("alice", "")] {
        let resp = post_login(&running, user, password, &redirect, &pkce.challenge, "s").await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("location").is_none());
        let html = resp.text().await.unwrap();
        assert!(html.contains("Incorrect username or password"), "{html}");
        assert!(html.contains(r#"name="password""#));
    }
    running.shutdown().await;
}

#[tokio::test]
async fn refresh_grant_works_until_revoked() {
    let running = start().await;
    let tokens = sign_in(&running, "alice", "alice-pass").await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let client_id = running.profile.client_id.clone();
    let (status, fresh) = token_request(
        &running,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(fresh["id_token"].is_string());
    assert!(
        fresh.get("refresh_token").is_none(),
        "Cognito does not rotate on refresh: {fresh}"
    );
    // The refreshed ID token is good for the identity pool.
    let id_before = identity_id(&running, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(
        identity_id(&running, fresh["id_token"].as_str().unwrap()).await,
        id_before
    );

    let resp = http()
        .post(format!("{}/oauth2/revoke", running.base_url))
        .form(&[("token", refresh), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, body) = token_request(
        &running,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    running.shutdown().await;
}

// ---- identity pool ----

#[tokio::test]
async fn identity_is_stable_per_user_and_distinct_across_users() {
    let running = start().await;
    let alice1 = sign_in(&running, "alice", "alice-pass").await;
    let alice2 = sign_in(&running, "alice", "alice-pass").await;
    let bob = sign_in(&running, "bob", "bob-pass").await;
    let a1 = identity_id(&running, alice1["id_token"].as_str().unwrap()).await;
    let a2 = identity_id(&running, alice2["id_token"].as_str().unwrap()).await;
    let b = identity_id(&running, bob["id_token"].as_str().unwrap()).await;
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
    assert!(
        a1.starts_with("us-east-1:") && uuid::Uuid::parse_str(&a1["us-east-1:".len()..]).is_ok(),
        "{a1}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn identity_pool_refuses_bad_tokens() {
    let running = start().await;
    let alice = sign_in(&running, "alice", "alice-pass").await;
    let bob = sign_in(&running, "bob", "bob-pass").await;
    let client = identity_client(&running);
    let code_of = |e: &aws_sdk_cognitoidentity::error::SdkError<_, _>| {
        use aws_sdk_cognitoidentity::error::ProvideErrorMetadata;
        e.as_service_error().and_then(
            |s: &aws_sdk_cognitoidentity::operation::get_id::GetIdError| {
                s.code().map(str::to_owned)
            },
        )
    };
    // Unauthenticated, forged, wrong provider, wrong pool.
    let err = client
        .get_id()
        .identity_pool_id(&running.profile.identity_pool_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&err).as_deref(), Some("NotAuthorizedException"));
    let forged = format!("{}x", alice["id_token"].as_str().unwrap());
    let err = client
        .get_id()
        .identity_pool_id(&running.profile.identity_pool_id)
        .logins(provider(&running), forged)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&err).as_deref(), Some("NotAuthorizedException"));
    let access = alice["access_token"].as_str().unwrap();
    let err = client
        .get_id()
        .identity_pool_id(&running.profile.identity_pool_id)
        .logins(provider(&running), access)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&err).as_deref(),
        Some("NotAuthorizedException"),
        "an access token is not an ID token"
    );
    let err = client
        .get_id()
        .identity_pool_id(&running.profile.identity_pool_id)
        .logins(
            "cognito-idp.us-east-1.amazonaws.com/us-east-1_other",
            alice["id_token"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&err).as_deref(), Some("NotAuthorizedException"));
    let err = client
        .get_id()
        .identity_pool_id("us-east-1:00000000-0000-0000-0000-000000000000")
        .logins(provider(&running), alice["id_token"].as_str().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&err).as_deref(), Some("ResourceNotFoundException"));
    // Bob's token cannot buy Alice's credentials.
    let alice_id = identity_id(&running, alice["id_token"].as_str().unwrap()).await;
    let err = client
        .get_credentials_for_identity()
        .identity_id(&alice_id)
        .logins(provider(&running), bob["id_token"].as_str().unwrap())
        .send()
        .await
        .unwrap_err();
    use aws_sdk_cognitoidentity::error::ProvideErrorMetadata;
    assert_eq!(
        err.as_service_error().and_then(|e| e.code()),
        Some("NotAuthorizedException")
    );
    running.shutdown().await;
}

#[tokio::test]
async fn expired_id_token_is_refused() {
    let running = start_with(|o| o.token_ttl = Duration::from_secs(1)).await;
    let tokens = sign_in(&running, "alice", "alice-pass").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = identity_client(&running)
        .get_id()
        .identity_pool_id(&running.profile.identity_pool_id)
        .logins(provider(&running), tokens["id_token"].as_str().unwrap())
        .send()
        .await
        .unwrap_err();
    use aws_sdk_cognitoidentity::error::ProvideErrorMetadata;
    assert_eq!(
        err.as_service_error().and_then(|e| e.code()),
        Some("NotAuthorizedException")
    );
    running.shutdown().await;
}

// ---- S3: credentials and policy ----

#[tokio::test]
async fn expired_credentials_get_expired_token() {
    let running = start_with(|o| o.credentials_ttl = Duration::from_secs(1)).await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    s3.put_object()
        .bucket("cognifs")
        .key(format!("{id}/f"))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("live credentials work");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = s3
        .get_object()
        .bucket("cognifs")
        .key(format!("{id}/f"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "ExpiredToken");
    running.shutdown().await;
}

#[tokio::test]
async fn credentials_without_their_session_token_are_refused() {
    let running = start().await;
    let tokens = sign_in(&running, "alice", "alice-pass").await;
    let (id, creds) = aws_credentials(&running, tokens["id_token"].as_str().unwrap()).await;
    let bare = aws_credential_types::Credentials::new(
        creds.access_key_id(),
        creds.secret_access_key(),
        None,
        None,
        "t",
    );
    let err = s3_client(&running, bare)
        .head_object()
        .bucket("cognifs")
        .key(format!("{id}/x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    running.shutdown().await;
}

#[tokio::test]
async fn every_cross_identity_operation_is_denied() {
    let running = start().await;
    let (alice_id, alice) = user_s3(&running, "alice", "alice-pass").await;
    let (bob_id, bob) = user_s3(&running, "bob", "bob-pass").await;
    let b = "cognifs";
    let alice_key = format!("{alice_id}/secret.txt");
    alice
        .put_object()
        .bucket(b)
        .key(&alice_key)
        .body(ByteStream::from_static(b"alice's"))
        .send()
        .await
        .unwrap();

    let denied =
        |code: String, what: &str| assert_eq!(code, "AccessDenied", "{what} must be denied");
    denied(
        error_code(
            &bob.get_object()
                .bucket(b)
                .key(&alice_key)
                .send()
                .await
                .unwrap_err(),
        ),
        "get",
    );
    denied(
        error_code(
            &bob.head_object()
                .bucket(b)
                .key(&alice_key)
                .send()
                .await
                .unwrap_err(),
        )
        .replace("<no code>", "AccessDenied"),
        "head",
    );
    denied(
        error_code(
            &bob.put_object()
                .bucket(b)
                .key(&alice_key)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap_err(),
        ),
        "put",
    );
    denied(
        error_code(
            &bob.delete_object()
                .bucket(b)
                .key(&alice_key)
                .send()
                .await
                .unwrap_err(),
        ),
        "delete",
    );
    denied(
        error_code(
            &bob.list_objects_v2()
                .bucket(b)
                .prefix(format!("{alice_id}/"))
                .send()
                .await
                .unwrap_err(),
        ),
        "list other prefix",
    );
    denied(
        error_code(&bob.list_objects_v2().bucket(b).send().await.unwrap_err()),
        "list bucket root",
    );
    denied(
        error_code(
            &bob.list_objects_v2()
                .bucket(b)
                .prefix(&bob_id)
                .send()
                .await
                .unwrap_err(),
        ),
        "list own id without slash",
    );
    denied(
        error_code(
            &bob.list_objects_v2()
                .bucket(b)
                .prefix("")
                .delimiter("/")
                .send()
                .await
                .unwrap_err(),
        ),
        "list root with delimiter",
    );
    denied(
        error_code(
            &bob.copy_object()
                .bucket(b)
                .key(format!("{bob_id}/stolen"))
                .copy_source(format!("{b}/{alice_key}"))
                .send()
                .await
                .unwrap_err(),
        ),
        "copy with a foreign source",
    );
    denied(
        error_code(
            &bob.delete_objects()
                .bucket(b)
                .delete(
                    Delete::builder()
                        .objects(
                            ObjectIdentifier::builder()
                                .key(format!("{bob_id}/mine"))
                                .build()
                                .unwrap(),
                        )
                        .objects(ObjectIdentifier::builder().key(&alice_key).build().unwrap())
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap_err(),
        ),
        "batch delete with a foreign key",
    );
    denied(
        error_code(
            &bob.create_multipart_upload()
                .bucket(b)
                .key(&alice_key)
                .send()
                .await
                .unwrap_err(),
        ),
        "multipart create",
    );
    let upload = alice
        .create_multipart_upload()
        .bucket(b)
        .key(&alice_key)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    denied(
        error_code(
            &bob.upload_part()
                .bucket(b)
                .key(&alice_key)
                .upload_id(upload_id)
                .part_number(1)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap_err(),
        ),
        "upload part",
    );
    denied(
        error_code(
            &bob.upload_part_copy()
                .bucket(b)
                .key(format!("{bob_id}/mine"))
                .upload_id(upload_id)
                .part_number(1)
                .copy_source(format!("{b}/{alice_key}"))
                .send()
                .await
                .unwrap_err(),
        ),
        "upload part copy with a foreign source",
    );
    denied(
        error_code(
            &bob.list_parts()
                .bucket(b)
                .key(&alice_key)
                .upload_id(upload_id)
                .send()
                .await
                .unwrap_err(),
        ),
        "list parts",
    );
    denied(
        error_code(
            &bob.list_multipart_uploads()
                .bucket(b)
                .prefix(format!("{alice_id}/"))
                .send()
                .await
                .unwrap_err(),
        ),
        "list uploads",
    );
    denied(
        error_code(
            &bob.abort_multipart_upload()
                .bucket(b)
                .key(&alice_key)
                .upload_id(upload_id)
                .send()
                .await
                .unwrap_err(),
        ),
        "abort",
    );
    denied(
        error_code(
            &bob.complete_multipart_upload()
                .bucket(b)
                .key(&alice_key)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .parts(
                            CompletedPart::builder()
                                .part_number(1)
                                .e_tag("\"x\"")
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .unwrap_err(),
        ),
        "complete",
    );
    denied(
        error_code(&bob.list_buckets().send().await.unwrap_err()),
        "list buckets",
    );
    denied(
        error_code(&bob.head_bucket().bucket(b).send().await.unwrap_err())
            .replace("<no code>", "AccessDenied"),
        "head bucket",
    );

    // Alice's object is untouched; Bob's own prefix works.
    let body = alice
        .get_object()
        .bucket(b)
        .key(&alice_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(&body[..], b"alice's");
    bob.put_object()
        .bucket(b)
        .key(format!("{bob_id}/mine"))
        .body(ByteStream::from_static(b"bob's"))
        .send()
        .await
        .unwrap();
    let listed = bob
        .list_objects_v2()
        .bucket(b)
        .prefix(format!("{bob_id}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents().len(), 1);
    running.shutdown().await;
}

// ---- S3: storage semantics ----

fn part_of(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn multipart_upload_and_ranged_gets() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let key = format!("{id}/big.bin");
    const PART: usize = 5 * 1024 * 1024;
    let parts: Vec<Vec<u8>> = (0..3).map(|i| part_of(PART, i)).collect();
    let upload = s3
        .create_multipart_upload()
        .bucket("cognifs")
        .key(&key)
        .metadata("mtime", "12.5")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let mut completed = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let out = s3
            .upload_part()
            .bucket("cognifs")
            .key(&key)
            .upload_id(upload_id)
            .part_number(n)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    let listed = s3
        .list_multipart_uploads()
        .bucket("cognifs")
        .prefix(format!("{id}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.uploads().len(), 1);
    let done = s3
        .complete_multipart_upload()
        .bucket("cognifs")
        .key(&key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        done.e_tag().unwrap().trim_matches('"').ends_with("-3"),
        "multipart etag: {:?}",
        done.e_tag()
    );

    let whole: Vec<u8> = parts.concat();
    let head = s3
        .head_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(whole.len() as i64));
    assert_eq!(head.metadata().unwrap()["mtime"], "12.5");
    for (start, end) in [
        (0usize, 0usize),
        (PART - 10, PART + 10),
        (whole.len() - 1, whole.len() - 1),
        (12345, 3 * 1024 * 1024),
    ] {
        let got = s3
            .get_object()
            .bucket("cognifs")
            .key(&key)
            .range(format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.content_range(),
            Some(format!("bytes {start}-{end}/{}", whole.len()).as_str())
        );
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&bytes[..], &whole[start..=end]);
    }
    // If-Match on a stale etag fails rather than mixing versions.
    let err = s3
        .get_object()
        .bucket("cognifs")
        .key(&key)
        .if_match("\"0123\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "PreconditionFailed");
    let full = s3
        .get_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(full[..] == whole[..]);
    assert!(
        s3.list_multipart_uploads()
            .bucket("cognifs")
            .prefix(format!("{id}/"))
            .send()
            .await
            .unwrap()
            .uploads()
            .is_empty()
    );
    running.shutdown().await;
}

#[tokio::test]
async fn multipart_rejects_small_middle_parts_and_abort_cleans_up() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let key = format!("{id}/small");
    let upload = s3
        .create_multipart_upload()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let mut completed = Vec::new();
    for n in 1..=2 {
        let out = s3
            .upload_part()
            .bucket("cognifs")
            .key(&key)
            .upload_id(upload_id)
            .part_number(n)
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .unwrap();
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    let err = s3
        .complete_multipart_upload()
        .bucket("cognifs")
        .key(&key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "EntityTooSmall");
    s3.abort_multipart_upload()
        .bucket("cognifs")
        .key(&key)
        .upload_id(upload_id)
        .send()
        .await
        .unwrap();
    let err = s3
        .list_parts()
        .bucket("cognifs")
        .key(&key)
        .upload_id(upload_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "NoSuchUpload");
    assert!(
        std::fs::read_dir(running.data_dir.join("uploads"))
            .unwrap()
            .next()
            .is_none()
    );
    running.shutdown().await;
}

async fn list_all(
    s3: &aws_sdk_s3::Client,
    prefix: &str,
    delimiter: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    let mut prefixes = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket("cognifs")
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_owned))
            .set_continuation_token(token)
            .max_keys(2)
            .send()
            .await
            .unwrap();
        keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_owned()));
        prefixes.extend(
            out.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_owned()),
        );
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    (keys, prefixes)
}

#[tokio::test]
async fn markers_objects_and_children_coexist() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    for (k, body) in [
        ("d/", ""),
        ("d/f", "f"),
        ("a", "file a"),
        ("a/b", "b"),
        ("top.txt", "t"),
        ("top.txt/child", "c"),
        ("sp ace+%#?.txt", "odd"),
    ] {
        write_object(&s3, &format!("{id}/{k}"), body.as_bytes()).await;
    }
    let p = |s: &str| format!("{id}/{s}");
    let (keys, prefixes) = list_all(&s3, &p(""), Some("/")).await;
    assert_eq!(keys, [p("a"), p("sp ace+%#?.txt"), p("top.txt")]);
    assert_eq!(prefixes, [p("a/"), p("d/"), p("top.txt/")]);
    let (keys, prefixes) = list_all(&s3, &p("d/"), Some("/")).await;
    assert_eq!(keys, [p("d/"), p("d/f")]);
    assert!(prefixes.is_empty());
    let (keys, _) = list_all(&s3, &p(""), None).await;
    assert_eq!(keys.len(), 7);
    for (k, body) in [
        ("a", "file a"),
        ("a/b", "b"),
        ("d/", ""),
        ("top.txt/child", "c"),
        ("sp ace+%#?.txt", "odd"),
    ] {
        let got = s3
            .get_object()
            .bucket("cognifs")
            .key(p(k))
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(&got[..], body.as_bytes(), "{k}");
    }
    // Copy keeps metadata by default and replaces it on request.
    s3.put_object()
        .bucket("cognifs")
        .key(p("m"))
        .metadata("mtime", "5.0")
        .body(ByteStream::from_static(b"m"))
        .send()
        .await
        .unwrap();
    s3.copy_object()
        .bucket("cognifs")
        .key(p("m2"))
        .copy_source(format!("cognifs/{}", p("m")))
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("cognifs")
        .key(p("m2"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().unwrap()["mtime"], "5.0");
    s3.copy_object()
        .bucket("cognifs")
        .key(p("m3"))
        .copy_source(format!("cognifs/{}", p("m")))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("mode", "644")
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("cognifs")
        .key(p("m3"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().unwrap().get("mtime"), None);
    assert_eq!(head.metadata().unwrap()["mode"], "644");
    // Over-long keys are refused as S3 refuses them.
    let long = p(&"x".repeat(1100));
    let err = s3
        .put_object()
        .bucket("cognifs")
        .key(long)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "KeyTooLongError");
    running.shutdown().await;
}

#[tokio::test]
async fn restart_on_the_same_data_dir_keeps_everything() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let running = start_with(|o| o.data_dir = Some(dir.clone())).await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let key = format!("{id}/keep.txt");
    let put = s3
        .put_object()
        .bucket("cognifs")
        .key(&key)
        .metadata("mtime", "1700000000.123456789")
        .content_type("text/plain")
        .body(ByteStream::from_static(b"kept across restarts"))
        .send()
        .await
        .unwrap();
    write_object(&s3, &format!("{id}/gone"), b"x").await;
    s3.delete_object()
        .bucket("cognifs")
        .key(format!("{id}/gone"))
        .send()
        .await
        .unwrap();
    let before = s3
        .head_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap();
    running.shutdown().await;

    let running = start_with(|o| o.data_dir = Some(dir.clone())).await;
    let (id2, s3) = user_s3(&running, "alice", "alice-pass").await;
    assert_eq!(id2, id, "identity ids survive a restart");
    let after = s3
        .get_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(after.e_tag(), put.e_tag());
    assert_eq!(after.metadata().unwrap()["mtime"], "1700000000.123456789");
    assert_eq!(after.content_type(), Some("text/plain"));
    assert_eq!(after.last_modified(), before.last_modified());
    assert_eq!(
        &after.body.collect().await.unwrap().into_bytes()[..],
        b"kept across restarts"
    );
    let err = s3
        .head_object()
        .bucket("cognifs")
        .key(format!("{id}/gone"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    running.shutdown().await;
}

#[tokio::test]
async fn fault_knob_answers_slow_down_and_the_sdk_retries_through_it() {
    let running = start_with(|o| o.s3_error_rate = 0.3).await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    // The SDK's standard retry (3 attempts) rides out most injected 503s; count what gets through.
    let mut ok = 0;
    let mut slowdowns = 0;
    for i in 0..40 {
        match s3
            .put_object()
            .bucket("cognifs")
            .key(format!("{id}/f{i}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
        {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(error_code(&e), "SlowDown");
                slowdowns += 1;
            }
        }
    }
    assert!(
        ok >= 30,
        "most puts succeed after retries: {ok} ok, {slowdowns} failed"
    );
    running.shutdown().await;

    let always = start_with(|o| o.s3_error_rate = 1.0).await;
    let (id, s3) = user_s3(&always, "alice", "alice-pass").await;
    let err = s3
        .put_object()
        .bucket("cognifs")
        .key(format!("{id}/f"))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "SlowDown");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    always.shutdown().await;
}

// ---- ListObjects (v1), as s3fs and rclone use it by default ----

/// Pages through ListObjects v1 as a client following `NextMarker` (or, without one, the last
/// key) does; returns keys, common prefixes and the number of pages.
async fn list_all_v1(
    s3: &aws_sdk_s3::Client,
    prefix: &str,
    delimiter: Option<&str>,
    max_keys: i32,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut marker: Option<String> = None;
    loop {
        let out = s3
            .list_objects()
            .bucket("cognifs")
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_owned))
            .set_marker(marker.clone())
            .max_keys(max_keys)
            .send()
            .await
            .unwrap();
        pages += 1;
        assert_eq!(
            out.marker().unwrap_or_default(),
            marker.as_deref().unwrap_or_default()
        );
        assert!(out.contents().len() + out.common_prefixes().len() <= max_keys as usize);
        keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_owned()));
        prefixes.extend(
            out.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_owned()),
        );
        if !out.is_truncated().unwrap_or(false) {
            assert_eq!(out.next_marker(), None, "no NextMarker on the last page");
            break;
        }
        let next = out
            .next_marker()
            .expect("a truncated page carries NextMarker");
        assert!(
            keys.last().is_some_and(|k| k == next) || prefixes.last().is_some_and(|p| p == next),
            "NextMarker {next} is the page's last entry"
        );
        marker = Some(next.to_owned());
        assert!(pages < 100, "paging does not end");
    }
    (keys, prefixes, pages)
}

#[tokio::test]
async fn list_objects_v1_pages_with_marker_and_delimiter() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let p = |s: &str| format!("{id}/{s}");
    let names = [
        "a",
        "b/1",
        "b/2",
        "b/3",
        "c",
        "d/",
        "d/x",
        "e",
        "f/g/h",
        "sp ace+%.txt",
        "z",
    ];
    for k in names {
        write_object(&s3, &p(k), b"x").await;
    }
    // Delimited, every page size: a common prefix that ends a page is not repeated on the next.
    for max_keys in [1, 2, 3, 1000] {
        let (keys, prefixes, pages) = list_all_v1(&s3, &p(""), Some("/"), max_keys).await;
        assert_eq!(
            keys,
            [p("a"), p("c"), p("e"), p("sp ace+%.txt"), p("z")],
            "max_keys {max_keys}"
        );
        assert_eq!(prefixes, [p("b/"), p("d/"), p("f/")], "max_keys {max_keys}");
        assert_eq!(
            pages,
            8usize.div_ceil(max_keys as usize),
            "max_keys {max_keys}"
        );
    }
    // Not delimited: every key, in order, whatever the page size.
    let mut all: Vec<String> = names.iter().map(|k| p(k)).collect();
    all.sort();
    for max_keys in [1, 4, 1000] {
        let (keys, prefixes, _) = list_all_v1(&s3, &p(""), None, max_keys).await;
        assert_eq!(keys, all, "max_keys {max_keys}");
        assert!(prefixes.is_empty());
    }
    // A subdirectory, and a marker given by hand (inside a common prefix, and a plain key).
    let (keys, _, _) = list_all_v1(&s3, &p("b/"), Some("/"), 2).await;
    assert_eq!(keys, [p("b/1"), p("b/2"), p("b/3")]);
    let out = s3
        .list_objects()
        .bucket("cognifs")
        .prefix(p(""))
        .delimiter("/")
        .marker(p("b/2"))
        .send()
        .await
        .unwrap();
    let first_prefix = out.common_prefixes().first().and_then(|c| c.prefix());
    assert_eq!(
        first_prefix,
        Some(p("d/").as_str()),
        "b/ is not listed again"
    );
    assert_eq!(out.contents()[0].key(), Some(p("c").as_str()));
    let out = s3
        .list_objects()
        .bucket("cognifs")
        .prefix(p(""))
        .marker(p("e"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.contents()[0].key(), Some(p("f/g/h").as_str()));
    // encoding-type=url: keys come back encoded and the SDK decodes them.
    let out = s3
        .list_objects()
        .bucket("cognifs")
        .prefix(p("sp"))
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .unwrap();
    let key = out.contents()[0].key().unwrap();
    assert!(key == p("sp ace+%.txt") || key.contains("%20"), "{key}");
    // The policy is the same as for v2: another identity's prefix and the root are denied.
    let (_, bob) = user_s3(&running, "bob", "bob-pass").await;
    for prefix in [p(""), String::new()] {
        let err = bob
            .list_objects()
            .bucket("cognifs")
            .prefix(prefix)
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_code(&err), "AccessDenied");
    }
    running.shutdown().await;
}

// ---- restarts, revoked credentials, outages ----

async fn refresh_with(running: &Running, refresh_token: &str) -> (u16, serde_json::Value) {
    let client_id = running.profile.client_id.clone();
    token_request(
        running,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn jwks(running: &Running) -> serde_json::Value {
    http()
        .get(format!(
            "{}/{}/.well-known/jwks.json",
            running.base_url, running.profile.user_pool_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn write_object(s3: &aws_sdk_s3::Client, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket("cognifs")
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {key}: {e:?}"));
}

async fn read_object(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket("cognifs")
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn restart_keeps_sign_ins_tokens_and_issued_credentials() {
    use std::os::unix::fs::PermissionsExt;

    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let running = start_with(|o| o.data_dir = Some(dir.clone())).await;
    let addr = running.addr;
    let tokens = sign_in(&running, "alice", "alice-pass").await;
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let bob = sign_in(&running, "bob", "bob-pass").await;
    let bob_refresh = bob["refresh_token"].as_str().unwrap().to_owned();
    let resp = http()
        .post(format!("{}/oauth2/revoke", running.base_url))
        .form(&[
            ("token", bob_refresh.as_str()),
            ("client_id", running.profile.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (id, creds) = aws_credentials(&running, &id_token).await;
    let key = format!("{id}/before-restart");
    write_object(
        &s3_client(&running, creds.clone()),
        &key,
        b"written before the restart",
    )
    .await;
    let jwks_before = jwks(&running).await;
    running.shutdown().await;

    let state = dir.join(devstack::state::FILE_NAME);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state file holds secret keys");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(
        !text.contains(&refresh),
        "refresh tokens are kept as digests only"
    );

    // Same address: the issuer (in every ID token) is the base URL, as the JWKS URL is.
    let running = start_with(|o| {
        o.data_dir = Some(dir.clone());
        o.listen = addr;
    })
    .await;
    assert_eq!(jwks(&running).await, jwks_before, "the signing key is kept");

    let (status, fresh) = refresh_with(&running, &refresh).await;
    assert_eq!(
        status, 200,
        "a refresh token from before the restart: {fresh}"
    );
    assert!(fresh["id_token"].is_string());
    let (status, body) = refresh_with(&running, &bob_refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "a revoked refresh token stays revoked"
    );

    // The ID token from before the restart still verifies in the identity pool.
    let (id_again, new_creds) = aws_credentials(&running, &id_token).await;
    assert_eq!(id_again, id);
    // Credentials from before the restart still sign requests, and the object is there.
    let old_s3 = s3_client(&running, creds);
    assert_eq!(
        read_object(&old_s3, &key).await,
        b"written before the restart"
    );
    assert_eq!(
        read_object(&s3_client(&running, new_creds), &key).await,
        b"written before the restart"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn without_a_data_dir_nothing_is_written_beside_the_objects() {
    let running = start().await;
    let tokens = sign_in(&running, "alice", "alice-pass").await;
    aws_credentials(&running, tokens["id_token"].as_str().unwrap()).await;
    assert!(!running.data_dir.join(devstack::state::FILE_NAME).exists());
    running.shutdown().await;
}

#[tokio::test]
async fn forgotten_credentials_are_unknown_keys_and_stay_forgotten() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let running = start_with(|o| o.data_dir = Some(dir.clone())).await;
    let tokens = sign_in(&running, "alice", "alice-pass").await;
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (id, old) = aws_credentials(&running, &id_token).await;
    let (_, bob_s3) = user_s3(&running, "bob", "bob-pass").await;
    let key = format!("{id}/f");
    let old_s3 = s3_client(&running, old.clone());
    write_object(&old_s3, &key, b"x").await;

    assert_eq!(running.forget_credentials(), 2);
    let err = old_s3
        .get_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "InvalidAccessKeyId");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    let err = bob_s3
        .list_objects_v2()
        .bucket("cognifs")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "InvalidAccessKeyId");

    // Sign-ins are kept: the same ID token gets new credentials, and the refresh token works.
    let (_, new) = aws_credentials(&running, &id_token).await;
    assert_ne!(new.access_key_id(), old.access_key_id());
    assert_eq!(
        read_object(&s3_client(&running, new.clone()), &key).await,
        b"x"
    );
    assert_eq!(refresh_with(&running, &refresh).await.0, 200);
    running.shutdown().await;

    let running = start_with(|o| o.data_dir = Some(dir.clone())).await;
    let err = s3_client(&running, old)
        .get_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_code(&err),
        "InvalidAccessKeyId",
        "forgotten credentials stay forgotten across a restart"
    );
    assert_eq!(read_object(&s3_client(&running, new), &key).await, b"x");
    running.shutdown().await;
}

#[tokio::test]
async fn fault_knobs_change_while_running_and_spare_identity_calls() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let s3 = without_retries(&s3);
    let key = format!("{id}/f");
    write_object(&s3, &key, b"x").await;
    let faults = running.faults();

    faults.set_s3_down(true);
    let err = s3
        .get_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    assert_eq!(error_code(&err), "ServiceUnavailable");
    let err = admin_s3(&running)
        .list_objects_v2()
        .bucket("cognifs")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    // Cognito is another service: signing in and getting credentials still work.
    let (_, other) = user_s3(&running, "alice", "alice-pass").await;
    faults.set_s3_down(false);
    assert_eq!(read_object(&s3, &key).await, b"x");
    assert_eq!(read_object(&other, &key).await, b"x");

    faults.set_s3_error_rate(1.0);
    let err = s3
        .head_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    faults.set_s3_error_rate(0.0);

    faults.set_latency(Duration::from_millis(300));
    let t = std::time::Instant::now();
    assert_eq!(read_object(&s3, &key).await, b"x");
    assert!(t.elapsed() >= Duration::from_millis(300));
    faults.set_latency(Duration::ZERO);
    running.shutdown().await;
}

/// The binary, as scripts drive it: it takes up credentials an earlier run issued on the same
/// data dir, and SIGUSR1 forgets them.
#[tokio::test]
async fn binary_forgets_credentials_on_sigusr1() {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    fn signal(child: &Child, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let running = start_with(|o| o.data_dir = Some(dir.clone())).await;
    let tokens = sign_in(&running, "alice", "alice-pass").await;
    let (id, creds) = aws_credentials(&running, tokens["id_token"].as_str().unwrap()).await;
    let key = format!("{id}/f");
    write_object(&s3_client(&running, creds.clone()), &key, b"x").await;
    let region = running.profile.region.clone();
    running.shutdown().await;

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_cognifs-devstack"))
            .arg("--data-dir")
            .arg(&dir)
            .args(["--user", "alice:alice-pass"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Both pipes are read to the end: a closed pipe would fail the binary's next write.
    fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    }
    let stdout = lines_of(child.0.stdout.take().unwrap());
    let log = lines_of(child.0.stderr.take().unwrap());
    let banner = stdout
        .recv_timeout(Duration::from_secs(20))
        .expect("the banner");
    let url = banner
        .trim()
        .strip_prefix("devstack listening on ")
        .unwrap_or_else(|| panic!("banner: {banner:?}"))
        .to_owned();

    let s3 = without_retries(&s3_client_at(&url, &region, creds));
    assert_eq!(read_object(&s3, &key).await, b"x", "credentials survive");
    signal(&child.0, "USR1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = log.recv_timeout(left).expect("the SIGUSR1 log line");
        if line.contains("forgot 1 issued AWS credentials; sign-ins kept") {
            break;
        }
    }
    let err = s3
        .get_object()
        .bucket("cognifs")
        .key(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "InvalidAccessKeyId");

    signal(&child.0, "TERM");
    assert!(child.0.wait().unwrap().success());
}
