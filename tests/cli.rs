//! The `cognifs` binary as a user runs it: login (pasting the redirect, as with
//! `--no-browser`), status, mount as a daemon, ls, unmount, logout, and mounting while
//! signed out. Against devstack in-process; every child process has a deadline.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

struct Env {
    config: PathBuf,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cognifs"));
        cmd.args(args)
            .env("COGNIFS_CONFIG", &self.config)
            .env("COGNIFS_STATE_DIR", &self.state)
            .env_remove("COGNIFS_PROFILE")
            .env_remove("BROWSER")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        cmd
    }

    /// Runs to completion within `limit`, killing the process if it overruns.
    fn run(&self, args: &[&str], limit: Duration) -> Output {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_with_deadline(child, limit, args)
    }
}

fn wait_with_deadline(mut child: Child, limit: Duration, what: &[&str]) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cognifs {what:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Unmounts a path on drop, whatever happened in the test.
struct PathGuard(PathBuf);
impl Drop for PathGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn setup(running: &devstack::Running) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    running.write_config(&config).unwrap();
    Env {
        config,
        state: dir.path().join("state"),
        _dir: dir,
    }
}

/// `cognifs login --no-browser`: read the URL it prints, sign in over HTTP, paste the
/// address the browser would have been sent to.
fn login_by_paste(env: &Env, user: &str, password: &str, rt: &tokio::runtime::Handle) -> Output {
    let mut child = env
        .command(&["login", "--no-browser"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        assert!(Instant::now() < deadline, "login printed no URL");
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "login exited before printing the URL"
        );
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    let location = rt
        .block_on(cognifs::demo::sign_in_redirect(
            &url,
            user.into(),
            password.into(),
        ))
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{location}").unwrap();
    let mut out = wait_with_deadline(child, Duration::from_secs(30), &["login"]);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    out.stderr = rest.into_bytes();
    out
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn login_status_mount_unmount_logout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = free_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = setup(&running);
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
    let env = setup(&running);
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
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        config: dir.path().join("c.toml"),
        state: dir.path().join("s"),
        _dir: dir,
    };
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
