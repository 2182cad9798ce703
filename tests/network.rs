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
