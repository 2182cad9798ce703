//! `cognifs logout` while a mount runs, with a token file others could read: the sign-in is
//! revoked all the same (with a warning naming the mode), the running mount is told over its
//! status socket and stops using the sign-in (status, the log), a file closed then is kept,
//! and the next `cognifs login` uploads it. Through the real binary against devstack
//! in-process; every wait has a deadline.

mod support;

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cognifs::metrics::StatusReport;
use support::cli::*;
use support::*;

fn status_json(env: &Env) -> (Option<i32>, StatusReport) {
    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), report)
}

/// The S3 key of `rel` in the mount, from `data` (`s3://BUCKET/PREFIX/`).
fn key_of(report: &StatusReport, rel: &str) -> String {
    let data = report.data.as_deref().expect("the identity is known");
    let prefix = data
        .strip_prefix("s3://")
        .unwrap()
        .split_once('/')
        .unwrap()
        .1;
    format!("{prefix}{rel}")
}

#[test]
fn logout_revokes_a_loose_sign_in_and_the_mount_keeps_what_it_cannot_upload() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let admin = admin_s3(&running);
    let bucket = running.profile.bucket.clone();
    let env = Env::new(Some(&running));
    let mnt = tempfile::tempdir().unwrap();
    let dir = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(dir.clone());
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    assert_ok(
        &env.run(&["mount", dir.to_str().unwrap()], Duration::from_secs(60)),
        "mount",
    );
    let (code, report) = status_json(&env);
    assert_eq!(code, Some(0));
    let key = key_of(&report, "after.txt");
    std::fs::write(dir.join("before.txt"), b"signed in").unwrap();
    assert_eq!(
        rt.block_on(get_bytes(&admin, &bucket, &key_of(&report, "before.txt"))),
        Some(b"signed in".to_vec())
    );

    // A file open for writing across the sign-out, as an editor holds one.
    let mut open_file = std::fs::File::create(dir.join("after.txt")).unwrap();
    open_file.write_all(b"kept while ").unwrap();

    // Others could read the token file: logout revokes it anyway, and says so.
    let tokens = env.state.join("default").join("tokens.json");
    let refresh_token = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(&tokens).unwrap(),
    )
    .unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["logout"], Duration::from_secs(60));
    assert_ok(&out, "logout");
    let (said, warned) = (text(&out.stdout), text(&out.stderr));
    assert!(warned.contains("0644"), "{warned}");
    assert!(said.contains("Signed out (profile default)"), "{said}");
    assert!(
        said.contains(&format!(
            "The mount at {} stopped using the sign-in",
            dir.display()
        )),
        "{said}{warned}"
    );
    assert!(!tokens.exists());
    assert!(
        running
            .cognito
            .refresh(&refresh_token, &running.profile.client_id)
            .is_err(),
        "the refresh token was revoked"
    );

    // The mount says so: status, the log.
    let (code, report) = status_json(&env);
    assert_eq!(code, Some(3), "not signed in");
    let live = report.mounts[0].live.as_ref().expect("the mount answers");
    assert!(live.credentials.signed_out.is_some(), "{live:?}");
    let human = text(&env.run(&["status"], Duration::from_secs(30)).stdout);
    assert!(
        human.contains("sign-in      signed out: run cognifs login"),
        "{human}"
    );
    let log = std::fs::read_to_string(env.state.join("default").join("cognifs.log")).unwrap();
    assert!(log.contains("signed out by `cognifs logout`"), "{log}");

    // The file closed now cannot be uploaded: the close fails, the file is kept.
    open_file.write_all(b"signed out").unwrap();
    // SAFETY: the descriptor is ours (taken from the File), closed once.
    let closed = unsafe { libc::close(open_file.into_raw_fd()) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    assert_eq!(closed, -1, "the upload cannot succeed signed out");
    assert_eq!(errno, Some(libc::EACCES));
    let (_, report_out) = status_json(&env);
    assert!(
        report_out.pending.iter().any(|p| p.rel == "after.txt"),
        "kept: {:?}",
        report_out.pending
    );

    // The next login: the mount picks it up by itself and the kept upload lands.
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.block_on(get_bytes(&admin, &bucket, &key)).as_deref() != Some(b"kept while signed out")
    {
        assert!(
            Instant::now() < deadline,
            "the kept upload lands after login"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, report) = status_json(&env);
    assert_eq!(code, Some(0));
    assert!(
        report.mounts[0]
            .live
            .as_ref()
            .unwrap()
            .credentials
            .signed_out
            .is_none()
    );
    assert_ok(
        &env.run(&["unmount", dir.to_str().unwrap()], Duration::from_secs(60)),
        "unmount",
    );
}
