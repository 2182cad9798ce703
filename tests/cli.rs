//! The `cognifs` binary as a user runs it: login (pasting the redirect, as with
//! `--no-browser`), status, mount as a daemon, ls, unmount, logout, and mounting while
//! signed out. Against devstack in-process; every child process has a deadline.

mod support;

use std::path::Path;
use std::time::Duration;

use support::cli::*;
use support::*;

#[test]
fn login_status_mount_unmount_logout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = free_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = Env::new(Some(&running));
    let mnt = tempfile::tempdir().unwrap();
    let mountpoint = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(mountpoint.clone());

    // Signed out: status says so, and mount fails cleanly leaving nothing mounted.
    let out = env.run(&["status"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cognifs login"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(
        &["mount", mountpoint.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cognifs login"),
        "{}",
        text(&out.stderr)
    );
    assert!(!is_mounted(&mountpoint));

    let out = login_by_paste(&env, "alice", "alice-pass", rt.handle());
    assert_ok(&out, "login");
    assert!(
        text(&out.stdout).contains("Signed in as alice"),
        "{}",
        text(&out.stdout)
    );
    let token_file = env.state.join("default").join("tokens.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Seed a file in alice's prefix, then mount as a daemon.
    let identity = rt.block_on(identity_of(&running, "alice", "alice-pass"));
    rt.block_on(put(
        &admin_s3(&running),
        "cognifs",
        &format!("{identity}/hello.txt"),
        b"hello from s3".to_vec(),
    ));
    let out = env.run(
        &["mount", mountpoint.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_ok(&out, "mount");
    assert!(is_mounted(&mountpoint));
    assert_eq!(
        std::fs::read(mountpoint.join("hello.txt")).unwrap(),
        b"hello from s3"
    );

    let out = env.run(&["status"], Duration::from_secs(30));
    assert_ok(&out, "status");
    let status = text(&out.stdout);
    assert!(
        status.contains("alice")
            && status.contains(&identity)
            && status.contains(mountpoint.to_str().unwrap())
            && status.contains("credentials expire in"),
        "{status}"
    );
    assert!(
        !status.contains("eyJ"),
        "status must not print tokens: {status}"
    );

    // A second mount on the same directory is refused with a reason.
    let out = env.run(
        &["mount", mountpoint.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already mounted"),
        "{}",
        text(&out.stderr)
    );

    let out = env.run(
        &["unmount", mountpoint.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_ok(&out, "unmount");
    assert!(!is_mounted(&mountpoint));
    assert!(std::fs::read_dir(&mountpoint).unwrap().next().is_none());

    let out = env.run(&["logout"], Duration::from_secs(30));
    assert_ok(&out, "logout");
    assert!(
        !text(&out.stderr).contains("could not revoke"),
        "{}",
        text(&out.stderr)
    );
    assert!(!token_file.exists());
    assert_eq!(
        env.run(&["status"], Duration::from_secs(30)).status.code(),
        Some(3)
    );

    // The log holds no secrets.
    let log =
        std::fs::read_to_string(env.state.join("default").join("cognifs.log")).unwrap_or_default();
    assert!(
        log.contains("mounted"),
        "the daemon logged to its file: {log}"
    );
    assert!(
        !log.contains("eyJ") && !log.contains("ASIA"),
        "tokens or keys in the log: {log}"
    );
    rt.block_on(running.shutdown());
}

#[test]
fn mount_refuses_bad_mount_points_with_reasons() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt.block_on(start());
    let env = Env::new(Some(&running));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), b"x").unwrap();
    let out = env.run(
        &["mount", dir.path().to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not empty"),
        "{}",
        text(&out.stderr)
    );
    let missing = dir.path().join("missing");
    let out = env.run(
        &["mount", missing.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(
        &[
            "mount",
            dir.path().to_str().unwrap(),
            "--cache-size",
            "12XB",
        ],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("size unit"),
        "{}",
        text(&out.stderr)
    );
    assert!(!is_mounted(Path::new(dir.path())));
    rt.block_on(running.shutdown());
}

#[test]
fn config_import_and_show() {
    let env = Env::new(None);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webapp.env");
    let out = env.run(&["config", "import", fixture], Duration::from_secs(30));
    assert_ok(&out, "config import");
    assert!(
        text(&out.stderr).contains("53682/callback"),
        "warns about the callback URL: {}",
        text(&out.stderr)
    );
    let out = env.run(&["config", "show"], Duration::from_secs(30));
    assert_ok(&out, "config show");
    let shown = text(&out.stdout);
    assert!(
        shown.contains("https://acme-files.auth.eu-west-1.amazoncognito.com")
            && shown.contains("eu-west-1_AbCdEfGhI"),
        "{shown}"
    );
}
