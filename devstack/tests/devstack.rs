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

// ---- S3: conditional writes, and counted faults ----

/// The HTTP status and S3 error code of a failed call.
fn failure<E>(err: &aws_sdk_s3::error::SdkError<E>) -> (u16, String)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    (status, error_code(err))
}

fn refused(status: u16, code: &str) -> (u16, String) {
    (status, code.to_owned())
}

/// An etag no object has.
const NO_SUCH_ETAG: &str = "\"00000000000000000000000000000000\"";

async fn etag_of(s3: &aws_sdk_s3::Client, key: &str) -> String {
    s3.head_object()
        .bucket("cognifs")
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"))
        .e_tag()
        .unwrap()
        .to_owned()
}

async fn head_status(s3: &aws_sdk_s3::Client, key: &str) -> u16 {
    match s3.head_object().bucket("cognifs").key(key).send().await {
        Ok(_) => 200,
        Err(e) => e.raw_response().map_or(0, |r| r.status().as_u16()),
    }
}

/// Starts an upload of `key` with one part, `body`; returns its id and its parts.
async fn one_part_upload(
    s3: &aws_sdk_s3::Client,
    key: &str,
    body: &[u8],
) -> (String, CompletedMultipartUpload) {
    let upload = s3
        .create_multipart_upload()
        .bucket("cognifs")
        .key(key)
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap().to_owned();
    let part = s3
        .upload_part()
        .bucket("cognifs")
        .key(key)
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap();
    let parts = CompletedMultipartUpload::builder()
        .parts(
            CompletedPart::builder()
                .part_number(1)
                .e_tag(part.e_tag().unwrap())
                .build(),
        )
        .build();
    (id, parts)
}

fn complete(
    s3: &aws_sdk_s3::Client,
    key: &str,
    upload_id: &str,
    parts: &CompletedMultipartUpload,
) -> aws_sdk_s3::operation::complete_multipart_upload::builders::CompleteMultipartUploadFluentBuilder
{
    s3.complete_multipart_upload()
        .bucket("cognifs")
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(parts.clone())
}

fn put(
    s3: &aws_sdk_s3::Client,
    key: &str,
    body: &[u8],
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    s3.put_object()
        .bucket("cognifs")
        .key(key)
        .body(ByteStream::from(body.to_vec()))
}

fn copy(
    s3: &aws_sdk_s3::Client,
    src: &str,
    dst: &str,
) -> aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder {
    s3.copy_object()
        .bucket("cognifs")
        .key(dst)
        .copy_source(format!("cognifs/{src}"))
}

fn delete(
    s3: &aws_sdk_s3::Client,
    key: &str,
) -> aws_sdk_s3::operation::delete_object::builders::DeleteObjectFluentBuilder {
    s3.delete_object().bucket("cognifs").key(key)
}

fn quoted_md5(body: &[u8]) -> String {
    use md5::Digest;
    format!("\"{}\"", hex::encode(md5::Md5::digest(body)))
}

#[tokio::test]
async fn put_object_honours_if_none_match_and_if_match() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let s3 = without_retries(&s3);
    let key = format!("{id}/f");
    // If-None-Match: * creates a missing key and refuses an existing one.
    let first = put(&s3, &key, b"one")
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    let e1 = first.e_tag().unwrap().to_owned();
    assert_eq!(e1, quoted_md5(b"one"));
    let err = put(&s3, &key, b"two")
        .if_none_match("*")
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    assert_eq!(read_object(&s3, &key).await, b"one");
    // If-Match: the current etag, quoted or not, writes; a stale one is refused.
    let second = put(&s3, &key, b"two").if_match(&e1).send().await.unwrap();
    let e2 = second.e_tag().unwrap().to_owned();
    let third = put(&s3, &key, b"three")
        .if_match(e2.trim_matches('"'))
        .send()
        .await
        .unwrap();
    for stale in [e1.as_str(), e2.as_str(), NO_SUCH_ETAG] {
        let err = put(&s3, &key, b"four")
            .if_match(stale)
            .send()
            .await
            .unwrap_err();
        assert_eq!(failure(&err), refused(412, "PreconditionFailed"), "{stale}");
    }
    assert_eq!(read_object(&s3, &key).await, b"three");
    assert_eq!(etag_of(&s3, &key).await, third.e_tag().unwrap());
    // If-Match on a missing key: 404 NoSuchKey, and nothing is written.
    let missing = format!("{id}/missing");
    let err = put(&s3, &missing, b"x")
        .if_match(&e1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(404, "NoSuchKey"));
    assert_eq!(head_status(&s3, &missing).await, 404);
    // If-None-Match is taken only as `*`.
    let err = put(&s3, &key, b"x")
        .if_none_match(&e1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(501, "NotImplemented"));
    // A body that does not match its Content-MD5 leaves the previous version in place.
    use base64::Engine;
    use md5::Digest;
    let wrong_md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"other"));
    let err = put(&s3, &key, b"five")
        .content_md5(wrong_md5)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(400, "BadDigest"));
    assert_eq!(read_object(&s3, &key).await, b"three");
    running.shutdown().await;
}

#[tokio::test]
async fn complete_multipart_upload_honours_conditions() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let s3 = without_retries(&s3);
    let key = format!("{id}/m");
    write_object(&s3, &key, b"old").await;
    let old = etag_of(&s3, &key).await;
    let (upload, parts) = one_part_upload(&s3, &key, b"new").await;
    let err = complete(&s3, &key, &upload, &parts)
        .if_none_match("*")
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    let err = complete(&s3, &key, &upload, &parts)
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    // A failed condition leaves the object, and the upload to complete again or abort.
    assert_eq!(read_object(&s3, &key).await, b"old");
    let listed = s3
        .list_parts()
        .bucket("cognifs")
        .key(&key)
        .upload_id(&upload)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.parts().len(), 1);
    // If-Match on a missing key: 404 NoSuchKey.
    let other = format!("{id}/other");
    let (upload2, parts2) = one_part_upload(&s3, &other, b"x").await;
    let err = complete(&s3, &other, &upload2, &parts2)
        .if_match(&old)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(404, "NoSuchKey"));
    assert_eq!(head_status(&s3, &other).await, 404);
    // The right etag (unquoted too) completes; so does If-None-Match on a missing key.
    let done = complete(&s3, &key, &upload, &parts)
        .if_match(old.trim_matches('"'))
        .send()
        .await
        .unwrap();
    assert!(
        done.e_tag().unwrap().ends_with("-1\""),
        "{:?}",
        done.e_tag()
    );
    assert_eq!(read_object(&s3, &key).await, b"new");
    complete(&s3, &other, &upload2, &parts2)
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &other).await, b"x");
    running.shutdown().await;
}

#[tokio::test]
async fn conflict_knob_answers_conditional_completes_409() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let s3 = without_retries(&s3);
    let faults = running.faults();
    faults.conflict_next_complete(1);
    // An unconditional complete passes, and leaves the knob armed.
    let plain = format!("{id}/plain");
    let (upload, parts) = one_part_upload(&s3, &plain, b"p").await;
    complete(&s3, &plain, &upload, &parts).send().await.unwrap();
    assert_eq!(faults.conflicts_armed(), 1);
    assert_eq!(faults.injected().conflicts, 0);

    let key = format!("{id}/k");
    let (upload, parts) = one_part_upload(&s3, &key, b"k").await;
    let err = complete(&s3, &key, &upload, &parts)
        .if_none_match("*")
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(409, "ConditionalRequestConflict"));
    assert_eq!(faults.injected().conflicts, 1);
    assert_eq!(faults.conflicts_armed(), 0);
    assert_eq!(head_status(&s3, &key).await, 404);
    // The upload stays: the same complete, tried again, succeeds.
    complete(&s3, &key, &upload, &parts)
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &key).await, b"k");

    // n at once, If-Match as well as If-None-Match.
    faults.conflict_next_complete(2);
    let etag = etag_of(&s3, &key).await;
    let (upload, parts) = one_part_upload(&s3, &key, b"k2").await;
    for _ in 0..2 {
        let err = complete(&s3, &key, &upload, &parts)
            .if_match(&etag)
            .send()
            .await
            .unwrap_err();
        assert_eq!(failure(&err), refused(409, "ConditionalRequestConflict"));
    }
    complete(&s3, &key, &upload, &parts)
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &key).await, b"k2");
    assert_eq!(faults.injected().conflicts, 3);
    running.shutdown().await;
}

/// Waits until `n` conditional writes have been held (each is counted as its hold starts,
/// its marker already set and, for a PUT, its body in).
async fn wait_for_held(faults: &devstack::Faults, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while faults.injected().held_writes < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} held writes: {:?}",
            faults.injected()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn racing_conditional_writes_lose_as_on_s3() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let s3 = without_retries(&s3);
    let faults = running.faults();
    let hold = Duration::from_secs(2);
    faults.set_conditional_write_hold(hold);

    // Two conditional completes of one key: the one that arrives while the other is in
    // progress is answered 409.
    let key = format!("{id}/raced");
    let (upload_a, parts_a) = one_part_upload(&s3, &key, b"a").await;
    let (upload_b, parts_b) = one_part_upload(&s3, &key, b"b").await;
    let first = tokio::spawn({
        let (s3, key) = (s3.clone(), key.clone());
        async move {
            complete(&s3, &key, &upload_a, &parts_a)
                .if_none_match("*")
                .send()
                .await
        }
    });
    wait_for_held(&faults, 1).await;
    let err = complete(&s3, &key, &upload_b, &parts_b)
        .if_none_match("*")
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(409, "ConditionalRequestConflict"));
    first.await.unwrap().expect("the first complete wins");
    assert_eq!(read_object(&s3, &key).await, b"a");
    // The loser, tried again once the winner is done, fails on its condition.
    faults.set_conditional_write_hold(Duration::ZERO);
    let err = complete(&s3, &key, &upload_b, &parts_b)
        .if_none_match("*")
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    faults.set_conditional_write_hold(hold);

    // A conditional complete while a conditional PUT of the key is in progress: 409.
    let etag = etag_of(&s3, &key).await;
    let held_put = tokio::spawn({
        let (s3, key, etag) = (s3.clone(), key.clone(), etag.clone());
        async move { put(&s3, &key, b"put").if_match(etag).send().await }
    });
    wait_for_held(&faults, 2).await;
    let err = complete(&s3, &key, &upload_b, &parts_b)
        .if_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(409, "ConditionalRequestConflict"));
    held_put.await.unwrap().expect("the PUT wins");
    assert_eq!(read_object(&s3, &key).await, b"put");

    // The key deleted while a conditional write is in progress: the write is answered 409.
    let etag = etag_of(&s3, &key).await;
    let held_put = tokio::spawn({
        let (s3, key) = (s3.clone(), key.clone());
        async move { put(&s3, &key, b"late").if_match(etag).send().await }
    });
    wait_for_held(&faults, 3).await;
    delete(&s3, &key).send().await.unwrap();
    let err = held_put.await.unwrap().unwrap_err();
    assert_eq!(failure(&err), refused(409, "ConditionalRequestConflict"));
    assert_eq!(head_status(&s3, &key).await, 404);

    // Two conditional PUTs of a new key at once: the first to finish wins, the other 412.
    let fresh = format!("{id}/fresh");
    let puts: Vec<_> = [b"x", b"y"]
        .into_iter()
        .map(|body| {
            let (s3, fresh) = (s3.clone(), fresh.clone());
            tokio::spawn(async move { put(&s3, &fresh, body).if_none_match("*").send().await })
        })
        .collect();
    let mut won = Vec::new();
    for (body, task) in [b"x", b"y"].into_iter().zip(puts) {
        match task.await.unwrap() {
            Ok(_) => won.push(body.to_vec()),
            Err(err) => assert_eq!(failure(&err), refused(412, "PreconditionFailed")),
        }
    }
    assert_eq!(won.len(), 1, "exactly one conditional PUT wins");
    assert_eq!(read_object(&s3, &fresh).await, won[0]);
    faults.set_conditional_write_hold(Duration::ZERO);
    let counted = faults.injected();
    assert_eq!(counted.held_writes, 5);
    assert_eq!(counted.conflicts, 0, "real races are not injected faults");
    running.shutdown().await;
}

#[tokio::test]
async fn copy_object_honours_source_and_destination_conditions() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let s3 = without_retries(&s3);
    let p = |s: &str| format!("{id}/{s}");
    let (src, dst) = (p("src"), p("dst"));
    write_object(&s3, &src, b"source").await;
    write_object(&s3, &dst, b"dest").await;
    let (es, ed) = (etag_of(&s3, &src).await, etag_of(&s3, &dst).await);

    // The source's conditions: a stale etag is refused; the current one, quoted or not, copies.
    let err = copy(&s3, &src, &dst)
        .copy_source_if_match(&ed)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    let err = copy(&s3, &src, &dst)
        .copy_source_if_none_match(&es)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    assert_eq!(read_object(&s3, &dst).await, b"dest");
    copy(&s3, &src, &p("c1"))
        .copy_source_if_match(es.trim_matches('"'))
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &p("c1")).await, b"source");

    // The destination's conditions.
    let err = copy(&s3, &src, &dst)
        .if_none_match("*")
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    let err = copy(&s3, &src, &dst)
        .if_match(&es)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    assert_eq!(read_object(&s3, &dst).await, b"dest");
    let err = copy(&s3, &src, &p("missing"))
        .if_match(&es)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(404, "NoSuchKey"));
    assert_eq!(head_status(&s3, &p("missing")).await, 404);
    copy(&s3, &src, &p("c2"))
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    let out = copy(&s3, &src, &dst)
        .if_match(ed.trim_matches('"'))
        .copy_source_if_match(&es)
        .send()
        .await
        .unwrap();
    assert_eq!(out.copy_object_result().unwrap().e_tag(), Some(es.as_str()));
    assert_eq!(read_object(&s3, &dst).await, b"source");

    // A metadata-only copy of an object onto itself keeps its etag (the MD5 of its body), as
    // S3 keeps a single-part object's.
    put(&s3, &src, b"source")
        .metadata("mtime", "1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(es, quoted_md5(b"source"));
    let out = copy(&s3, &src, &src)
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("mode", "644")
        .copy_source_if_match(&es)
        .if_match(&es)
        .send()
        .await
        .unwrap();
    assert_eq!(out.copy_object_result().unwrap().e_tag(), Some(es.as_str()));
    let head = s3
        .head_object()
        .bucket("cognifs")
        .key(&src)
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), Some(es.as_str()));
    assert_eq!(head.metadata().unwrap().get("mtime"), None);
    assert_eq!(head.metadata().unwrap()["mode"], "644");
    assert_eq!(read_object(&s3, &src).await, b"source");
    // ... and onto itself with If-None-Match: * it is refused: the key exists.
    let err = copy(&s3, &src, &src)
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .if_none_match("*")
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    running.shutdown().await;
}

#[tokio::test]
async fn delete_object_honours_if_match() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let s3 = without_retries(&s3);
    let key = format!("{id}/d");
    write_object(&s3, &key, b"x").await;
    let etag = etag_of(&s3, &key).await;
    let err = delete(&s3, &key)
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    assert_eq!(read_object(&s3, &key).await, b"x", "still there");
    let missing = format!("{id}/missing");
    let err = delete(&s3, &missing)
        .if_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(404, "NoSuchKey"));
    delete(&s3, &key)
        .if_match(etag.trim_matches('"'))
        .send()
        .await
        .unwrap();
    assert_eq!(head_status(&s3, &key).await, 404);
    // Without a condition, deleting a missing key succeeds, as before.
    delete(&s3, &key).send().await.unwrap();
    delete(&s3, &missing).send().await.unwrap();
    running.shutdown().await;
}

#[tokio::test]
async fn ignore_conditions_writes_and_deletes_anyway() {
    let running = start_with(|o| o.ignore_conditions = true).await;
    assert!(running.ignores_conditions());
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let s3 = without_retries(&s3);
    let faults = running.faults();
    faults.conflict_next_complete(5);
    let p = |s: &str| format!("{id}/{s}");
    let key = p("k");
    write_object(&s3, &key, b"one").await;

    put(&s3, &key, b"two")
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &key).await, b"two");
    put(&s3, &key, b"three")
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &key).await, b"three");
    put(&s3, &p("new"), b"created")
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &p("new")).await, b"created");

    let (upload, parts) = one_part_upload(&s3, &key, b"completed").await;
    complete(&s3, &key, &upload, &parts)
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &key).await, b"completed");
    let (upload, parts) = one_part_upload(&s3, &key, b"again").await;
    complete(&s3, &key, &upload, &parts)
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &key).await, b"again");
    assert_eq!(
        faults.injected().conflicts,
        0,
        "no complete was conditional"
    );
    assert_eq!(faults.conflicts_armed(), 5);

    let src = p("new");
    copy(&s3, &src, &key)
        .copy_source_if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &key).await, b"created");
    write_object(&s3, &key, b"dest").await;
    copy(&s3, &src, &key)
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &key).await, b"created");
    copy(&s3, &src, &p("c"))
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&s3, &p("c")).await, b"created");

    delete(&s3, &key)
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap();
    assert_eq!(head_status(&s3, &key).await, 404);
    delete(&s3, &key)
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap();

    // Reads keep their conditions.
    let err = s3
        .get_object()
        .bucket("cognifs")
        .key(&src)
        .if_match(NO_SUCH_ETAG)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(&err), refused(412, "PreconditionFailed"));
    running.shutdown().await;
}

#[tokio::test]
async fn injected_faults_are_counted_by_kind() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let once = without_retries(&s3);
    let key = format!("{id}/f");
    write_object(&once, &key, b"x").await;
    let faults = running.faults();
    assert_eq!(faults.injected(), devstack::FaultCounts::default());
    let get = |s3: &aws_sdk_s3::Client| s3.get_object().bucket("cognifs").key(&key).send();

    faults.set_s3_error_rate(1.0);
    for _ in 0..3 {
        let err = get(&once).await.unwrap_err();
        assert_eq!(failure(&err), refused(503, "SlowDown"));
    }
    assert_eq!(faults.injected().slow_downs, 3);
    // With the SDK's standard retries, one call fails three times.
    let err = get(&s3).await.unwrap_err();
    assert_eq!(failure(&err), refused(503, "SlowDown"));
    assert_eq!(faults.injected().slow_downs, 6);
    faults.set_s3_error_rate(0.0);

    faults.set_s3_down(true);
    for _ in 0..2 {
        let err = get(&once).await.unwrap_err();
        assert_eq!(failure(&err), refused(503, "ServiceUnavailable"));
    }
    faults.set_s3_down(false);

    faults.set_latency(Duration::from_millis(20));
    for _ in 0..2 {
        assert_eq!(read_object(&once, &key).await, b"x");
    }
    faults.set_latency(Duration::ZERO);
    assert_eq!(read_object(&once, &key).await, b"x");

    let counts = faults.injected();
    assert_eq!(
        counts,
        devstack::FaultCounts {
            slow_downs: 6,
            unavailable: 2,
            delayed: 2,
            conflicts: 0,
            held_writes: 0,
            ..Default::default()
        }
    );
    assert_eq!(counts.total(), 10);
    running.shutdown().await;
}

/// The binary's `--ignore-conditions`.
#[tokio::test]
async fn binary_ignores_conditions_on_request() {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_cognifs-devstack"))
            .arg("--ignore-conditions")
            .arg("--admin")
            .arg(format!("{}:{}", ADMIN.0, ADMIN.1))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let banner = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the banner");
    let url = banner
        .trim()
        .strip_prefix("devstack listening on ")
        .unwrap_or_else(|| panic!("banner: {banner:?}"))
        .to_owned();
    let mut said = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        if line.contains("conditions     ignored") {
            said = true;
            break;
        }
    }
    assert!(said, "the banner says conditions are ignored");
    let admin = without_retries(&s3_client_at(
        &url,
        "us-east-1",
        aws_credential_types::Credentials::new(ADMIN.0, ADMIN.1, None, None, "admin"),
    ));
    write_object(&admin, "k", b"one").await;
    put(&admin, "k", b"two")
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(read_object(&admin, "k").await, b"two");
}

#[tokio::test]
async fn network_faults_cut_stall_and_delay_answers_and_are_counted() {
    let running = start().await;
    let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
    let once = without_retries(&s3);
    let key = format!("{id}/f");
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    write_object(&once, &key, &data).await;
    let faults = running.faults();
    let arm = |f: fn(&mut devstack::NetworkFaults)| {
        let mut n = devstack::NetworkFaults {
            stall_for: Duration::from_millis(200),
            spike_for: Duration::from_millis(10),
            ..Default::default()
        };
        f(&mut n);
        faults.set_network(n);
    };
    // The body of a GET, or what went wrong reading it.
    let body = |s3: aws_sdk_s3::Client, key: String| async move {
        let out = s3
            .get_object()
            .bucket("cognifs")
            .key(&key)
            .send()
            .await
            .map_err(|e| format!("send: {e}"))?;
        out.body
            .collect()
            .await
            .map(|b| b.into_bytes().to_vec())
            .map_err(|e| format!("body: {e}"))
    };

    arm(|n| n.reset_body = 1.0);
    let got = body(once.clone(), key.clone()).await;
    assert!(
        got.as_ref().is_err_and(|e| e.starts_with("body")),
        "{:?}",
        got.map(|b| b.len())
    );
    arm(|n| n.truncate_body = 1.0);
    let got = body(once.clone(), key.clone())
        .await
        .expect("a short body ends cleanly");
    assert!(
        got.len() < data.len() && data.starts_with(&got),
        "{}",
        got.len()
    );
    arm(|n| n.stall_body = 1.0);
    let got = body(once.clone(), key.clone()).await;
    assert!(
        got.as_ref().is_err_and(|e| e.starts_with("body")),
        "{:?}",
        got.map(|b| b.len())
    );
    arm(|n| n.stall = 1.0);
    let got = body(once.clone(), key.clone()).await;
    assert!(
        got.as_ref().is_err_and(|e| e.starts_with("send")),
        "{:?}",
        got.map(|b| b.len())
    );
    arm(|n| n.spike = 1.0);
    assert_eq!(read_object(&once, &key).await, data);
    // An upload cut mid-body leaves the object as it was.
    arm(|n| n.reset_body = 1.0);
    let put = once
        .put_object()
        .bucket("cognifs")
        .key(&key)
        .body(ByteStream::from(vec![7u8; 1 << 20]))
        .send()
        .await;
    assert!(put.is_err());
    faults.set_network(devstack::NetworkFaults::default());
    assert_eq!(read_object(&once, &key).await, data);

    let counts = faults.injected();
    assert_eq!(
        (
            counts.resets,
            counts.truncated,
            counts.stalled_bodies,
            counts.stalls,
            counts.spikes
        ),
        (2, 1, 1, 1, 1),
        "{counts:?}"
    );
    running.shutdown().await;
}
