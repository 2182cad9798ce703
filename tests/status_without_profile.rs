//! `cognifs status` always answers: right after `cognifs demo DIR`, with no config file, or
//! with a profile the config file does not have, it lists every running cognifs mount of the
//! user (the demo's included) and says how to make a profile. Through the real binary; every
//! wait has a deadline.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cognifs::metrics::StatusReport;
use support::cli::*;
use support::is_mounted;

#[test]
fn status_without_a_profile_lists_the_demos_mount_and_says_how_to_make_one() {
    let env = Env::new(None);
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().canonicalize().unwrap().join("cloud");
    let _guard = PathGuard(dir.clone());
    let mut demo = ChildGuard(Some(
        env.command(&["demo", dir.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let stdout = demo.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("is mounted at") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the demo mounts within 2 minutes");
    assert!(is_mounted(&dir));
    assert!(!env.config.exists(), "no config file in this test");

    // No config file: exit status 3, the demo's mount listed, how to make a profile said.
    let out = env.run(&["status"], Duration::from_secs(30));
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{shown}{}", text(&out.stderr));
    for part in [
        "profile        default: cannot be used",
        "no config file",
        "Make a profile: `cognifs config import FILE.env`",
        "cognifs demo ~/cloud",
        "mounts of profile demo:",
        &format!("mount          {} (pid ", dir.display()),
        "  transferred  ",
    ] {
        assert!(shown.contains(part), "missing {part:?} in:\n{shown}");
    }

    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3));
    let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!report.signed_in);
    assert!(
        report
            .profile_problem
            .as_deref()
            .is_some_and(|p| p.contains("no config file")),
        "{report:?}"
    );
    assert_eq!(report.mounts.len(), 1, "{report:?}");
    assert_eq!(report.mounts[0].mountpoint, dir);
    assert_eq!(report.mounts[0].profile, "demo");
    assert!(report.mounts[0].live.is_some(), "the demo's mount answers");

    // A config file without the profile asked for: the same listing, and the profiles there.
    std::fs::write(
        &env.config,
        "[work]\nregion = \"eu-west-1\"\nuser_pool_id = \"eu-west-1_AbCdEfGhI\"\n\
         client_id = \"3n4b5urk1ft4fl3mg5e62d9ado\"\n\
         domain = \"https://acme.auth.eu-west-1.amazoncognito.com\"\n\
         identity_pool_id = \"eu-west-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c\"\n\
         bucket = \"acme\"\n",
    )
    .unwrap();
    let out = env.run(&["--profile", "home", "status"], Duration::from_secs(30));
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{shown}");
    for part in [
        "profile        home: cannot be used",
        "profiles there: work",
        "mounts of profile demo:",
        &dir.display().to_string(),
    ] {
        assert!(shown.contains(part), "missing {part:?} in:\n{shown}");
    }

    // A profile that loads, not signed in: its own (no) mounts, and the demo's named.
    let out = env.run(&["--profile", "work", "status"], Duration::from_secs(30));
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{shown}");
    assert!(
        shown.contains(&format!("other mount    {} (profile demo", dir.display())),
        "{shown}"
    );

    // Ctrl-C ends the demo; then nothing is listed.
    let pid = demo.0.as_ref().unwrap().id() as i32;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while demo.0.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the demo stops on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(&env.config).unwrap();
    let out = env.run(&["status"], Duration::from_secs(30));
    assert!(
        text(&out.stdout).contains("mounts         none (of any profile)"),
        "{}",
        text(&out.stdout)
    );
}
