//! The sign-in's lifetime, end to end through the real binary against devstack in-process,
//! with a sign-in that lasts 30 s (devstack's refresh tokens, and the profile's
//! `sign_in_lifetime`): `status` shows until when it lasts; inside the warning window the
//! mount warns in its log, on the systemd STATUS line (a notify socket the test listens on)
//! and as a desktop notification (a `notify-send` stand-in on `PATH`, a session bus
//! address set); when the sign-in ends while mounted, `status` says "signed out: run
//! cognifs login", a close that cannot upload fails and is kept; `cognifs login` again, and
//! the kept upload lands without a remount. Every wait has a deadline.

mod support;

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cognifs::metrics::StatusReport;
use support::cli::*;
use support::*;

const SIGN_IN: Duration = Duration::from_secs(30);

fn status_json(env: &Env) -> (Option<i32>, StatusReport) {
    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), report)
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sign_in_lifetime_warned_ended_while_mounted_kept_and_resumed_by_login() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| {
        o.callback_port = port;
        o.token_ttl = Duration::from_secs(4);
        o.credentials_ttl = Duration::from_secs(4);
        o.refresh_token_ttl = SIGN_IN;
    }));
    let admin = admin_s3(&running);
    let bucket = running.profile.bucket.clone();
    let env = Env::new(Some(&running));
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&env.config)
        .unwrap();
    writeln!(config, "sign_in_lifetime = \"{}s\"", SIGN_IN.as_secs()).unwrap();
    drop(config);

    // A notify-send stand-in that records what it was asked to show.
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let shown = env.dir.path().join("notifications.txt");
    let fake = bin.join("notify-send");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n",
            shown.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // systemd's notify socket, played by the test.
    let notify_path = env.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let signed_in_at = cognifs::clock::unix_now();
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    let (code, report) = status_json(&env);
    assert_eq!(code, Some(0));
    assert_eq!(report.sign_in.as_deref(), Some("ending soon"), "{report:?}");
    assert_eq!(
        report.sign_in_ends_from.as_deref(),
        Some("sign_in_lifetime")
    );
    let ends = report.sign_in_ends.expect("the end is known");
    assert!(
        (signed_in_at + SIGN_IN.as_secs()..=signed_in_at + SIGN_IN.as_secs() + 5).contains(&ends),
        "{ends} vs signed in at {signed_in_at}"
    );
    let human = text(&env.run(&["status"], Duration::from_secs(30)).stdout);
    assert!(human.contains("sign-in        ends in "), "{human}");
    assert!(
        human.contains("sign-in time + sign_in_lifetime 30s"),
        "{human}"
    );
    let data = report.data.clone().expect("login looked up the identity");
    let prefix = data
        .strip_prefix("s3://")
        .unwrap()
        .split_once('/')
        .unwrap()
        .1
        .to_owned();

    // Mount, as systemd and a desktop session would see it.
    let mnt = tempfile::tempdir().unwrap();
    let dir = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(dir.clone());
    let mut mount = env.command(&["mount", dir.to_str().unwrap()]);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    mount
        .env("PATH", path)
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .env("NOTIFY_SOCKET", &notify_path);
    assert_ok(
        &run_with_deadline(mount, Duration::from_secs(60), "mount"),
        "mount",
    );
    let mut said = String::new();
    wait_for(
        Duration::from_secs(20),
        "a STATUS line with the warning",
        || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = notify.recv(&mut buf) {
                said.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            said.contains("the sign-in ends in") && said.contains("run cognifs login")
        },
    );
    assert!(said.contains("READY=1"), "{said}");
    wait_for(Duration::from_secs(20), "a desktop notification", || {
        std::fs::read_to_string(&shown).is_ok_and(|s| s.contains("the sign-in ends in"))
    });
    let log_path = env.state.join("default").join("cognifs.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("the sign-in of profile default ends in"),
        "{log}"
    );
    let human = text(&env.run(&["status"], Duration::from_secs(30)).stdout);
    assert!(
        human.contains("               the sign-in ends in "),
        "the mount's block warns: {human}"
    );

    // Signed in: a file lands. Another stays open across the end of the sign-in.
    std::fs::write(dir.join("before.txt"), b"signed in").unwrap();
    assert_eq!(
        rt.block_on(get_bytes(&admin, &bucket, &format!("{prefix}before.txt"))),
        Some(b"signed in".to_vec())
    );
    let mut open_file = std::fs::File::create(dir.join("after.txt")).unwrap();
    open_file.write_all(b"kept across ").unwrap();

    // The sign-in ends while mounted: status says so plainly.
    wait_for(
        SIGN_IN + Duration::from_secs(60),
        "the mount signed out",
        || {
            let (code, r) = status_json(&env);
            code == Some(3)
                && r.sign_in.as_deref() == Some("signed out")
                && r.mounts.first().is_some_and(|m| {
                    m.live
                        .as_ref()
                        .is_some_and(|l| l.credentials.signed_out.is_some())
                })
        },
    );
    let human = text(&env.run(&["status"], Duration::from_secs(30)).stdout);
    assert!(human.contains("signed out: run cognifs login"), "{human}");
    assert!(
        human.contains("sign-in      signed out: run cognifs login"),
        "{human}"
    );

    // A close now cannot upload: it fails, and the file is kept.
    open_file.write_all(b"the end of the sign-in").unwrap();
    // SAFETY: the descriptor is ours (taken from the File), closed once.
    let closed = unsafe { libc::close(open_file.into_raw_fd()) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    assert_eq!(closed, -1, "no upload without a sign-in");
    assert_eq!(errno, Some(libc::EACCES));
    let (_, r) = status_json(&env);
    assert!(
        r.pending.iter().any(|p| p.rel == "after.txt"),
        "kept: {:?}",
        r.pending
    );

    // Sign in again: the mount picks it up by itself and the kept upload lands.
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    let key = format!("{prefix}after.txt");
    wait_for(Duration::from_secs(25), "the kept upload lands", || {
        rt.block_on(get_bytes(&admin, &bucket, &key)).as_deref()
            == Some(b"kept across the end of the sign-in")
    });
    let out = env.run(
        &["unmount", dir.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "unmount: {}{}\nlog:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
}
