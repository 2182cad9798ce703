//! What crosses the network, end to end through the `cognifs` binary against devstack:
//! upload bodies are signed when the profile allows plain http, and every call is bounded
//! in time against a server that stops answering.

mod support;

use std::time::Duration;

use support::cli::*;
use support::*;

/// Appends `lines` to the (only) profile of `env`'s config file.
fn add_to_profile(env: &Env, lines: &str) {
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(lines);
    std::fs::write(&env.config, text).unwrap();
}

#[test]
fn with_allow_insecure_http_upload_bodies_are_signed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = Env::new(Some(&running));
    add_to_profile(&env, "allow_insecure_http = true\n");
    let mnt = tempfile::tempdir().unwrap();
    let mountpoint = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(mountpoint.clone());
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    let out = env.run(&["config", "show"], Duration::from_secs(30));
    assert_ok(&out, "config show");
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("allow_insecure_http") && l.contains("= true")),
        "{}",
        text(&out.stdout)
    );
    let out = env.run(
        &["mount", mountpoint.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_ok(&out, "mount");
    // A small file (one PutObject) and one over the part size (a multipart upload).
    let small = pseudo_random(5000, 3);
    let large = pseudo_random(20 << 20, 4);
    std::fs::write(mountpoint.join("small"), &small).unwrap();
    std::fs::write(mountpoint.join("large"), &large).unwrap();
    let out = env.run(
        &["unmount", mountpoint.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_ok(&out, "unmount");
    let traffic = running.traffic();
    assert_eq!(traffic.unsigned_bodies(), 0, "a body went unsigned");
    // One PutObject and three 8 MiB parts, each body's SHA-256 in its signature.
    assert!(traffic.signed_bodies() >= 4, "{}", traffic.signed_bodies());
    rt.block_on(running.shutdown());
}

mod stalls {
    use std::sync::Arc;
    use std::time::Duration;

    use cognifs::store::{ObjectStore, S3Store, StoreError, s3_client};
    use devstack::NetworkFaults;

    use super::support::*;

    /// A store as the daemon builds it, for alice, with 1 s request and 3 s operation
    /// timeouts.
    async fn store(running: &devstack::Running, dir: &std::path::Path) -> Arc<S3Store> {
        let mut profile = cognifs_profile(running, "default", dir.join("config.toml"));
        profile.request_timeout = Duration::from_secs(1);
        profile.operation_timeout = Duration::from_secs(3);
        let token = id_token(running, "alice", "alice-pass").await;
        let (identity, creds) = aws_credentials(running, &token).await;
        Arc::new(S3Store::new(
            s3_client(&profile, creds),
            profile.bucket.clone(),
            format!("{identity}/"),
        ))
    }

    /// Requests accepted and never answered, and GET bodies that stop half way, end in a
    /// timeout error instead of hanging the call; with the faults gone, the same calls work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_requests_and_bodies_time_out() {
        with_timeout(120, async {
            let running = start().await;
            let dir = tempfile::tempdir().unwrap();
            let s3 = store(&running, dir.path()).await;
            let data = pseudo_random(3 << 20, 9);
            s3.put("f", data.clone().into(), &Default::default())
                .await
                .unwrap();
            let etag = s3.head("f").await.unwrap().unwrap().etag;
            let faults = running.faults();
            faults.set_network(NetworkFaults {
                stall: 1.0,
                ..NetworkFaults::default()
            });
            // The deadlines below only catch a hang; the bound is the 3 s operation timeout.
            let head = tokio::time::timeout(Duration::from_secs(30), s3.head("f")).await;
            assert!(
                matches!(head, Ok(Err(StoreError::Timeout(_)))),
                "a stalled HEAD: {head:?}"
            );
            faults.set_network(NetworkFaults {
                stall_body: 1.0,
                ..NetworkFaults::default()
            });
            let get = tokio::time::timeout(
                Duration::from_secs(30),
                s3.get_range("f", &etag, 0, data.len() as u64),
            )
            .await;
            assert!(
                matches!(get, Ok(Err(StoreError::Timeout(_)))),
                "a GET whose body stalls: {:?}",
                get.map(|r| r.map(|b| b.len()))
            );
            let injected = faults.injected();
            assert!(
                injected.stalls >= 1 && injected.stalled_bodies >= 1,
                "{injected:?}"
            );
            faults.set_network(NetworkFaults::default());
            let back = s3
                .get_range("f", &etag, 0, data.len() as u64)
                .await
                .unwrap();
            assert!(back == data);
            running.shutdown().await;
        })
        .await;
    }

    /// A small object read whole in one GET, whatever its version: missing, empty, small,
    /// and too large (only `max + 1` bytes asked for, and an error).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_objects_are_read_whole_in_one_request_and_large_ones_refused() {
        with_timeout(60, async {
            let running = start().await;
            let dir = tempfile::tempdir().unwrap();
            let s3 = store(&running, dir.path()).await;
            let small = pseudo_random(1000, 3);
            s3.put("small", small.clone().into(), &Default::default())
                .await
                .unwrap();
            s3.put("empty", Vec::new().into(), &Default::default())
                .await
                .unwrap();
            assert_eq!(s3.get_small("missing", 1000).await.unwrap(), None);
            assert_eq!(s3.get_small("empty", 1000).await.unwrap().unwrap().len(), 0);
            assert!(s3.get_small("small", 1000).await.unwrap().unwrap() == small);
            assert!(matches!(
                s3.get_small("small", 999).await,
                Err(StoreError::TooLarge)
            ));
            running.shutdown().await;
        })
        .await;
    }
}
