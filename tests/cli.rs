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
    let port = reserved_port();
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

    // Login looked the identity up: status shows it and where the data lives, before any mount.
    let identity = rt.block_on(identity_of(&running, "alice", "alice-pass"));
    let data = format!("s3://cognifs/{identity}/");
    assert!(text(&out.stdout).contains(&data), "{}", text(&out.stdout));
    let out = env.run(&["status"], Duration::from_secs(30));
    assert_ok(&out, "status after login");
    let status = text(&out.stdout);
    assert!(
        status.contains(&format!("identity       {identity}")) && status.contains(&data),
        "{status}"
    );

    // Seed a file in alice's prefix, then mount as a daemon.
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
    let hello = mountpoint.join("hello.txt");
    assert_eq!(
        within(Duration::from_secs(30), "read hello.txt", move || {
            std::fs::read(hello).unwrap()
        }),
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
    assert_eq!(out.status.code(), Some(1), "a mount point already mounted");
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
    let point = mountpoint.clone();
    assert!(within(
        Duration::from_secs(30),
        "list the mount point",
        move || { std::fs::read_dir(point).unwrap().next().is_none() }
    ));

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
    assert_eq!(
        out.status.code(),
        Some(1),
        "a mount point that is not empty"
    );
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
    assert_eq!(out.status.code(), Some(1), "a missing mount point");
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
    assert_eq!(out.status.code(), Some(2), "a usage error");
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

/// `cognifs demo DIR`: makes a missing DIR, says what it does, signs in by itself (no "Sign in
/// at" or "Waiting for the browser"), logs without colour codes to a pipe, and unmounts on
/// Ctrl-C without fuser's "Unmount failed" warning.
#[test]
fn demo_makes_its_directory_and_speaks_plainly() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let env = Env::new(None);
    let base = tempfile::tempdir().unwrap();
    let dir = base
        .path()
        .canonicalize()
        .unwrap()
        .join("new")
        .join("cloud");
    let _guard = PathGuard(dir.clone());
    let mut child = ChildGuard(Some(
        env.command(&["demo", dir.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let proc = child.0.as_mut().unwrap();
    let mut stdout = BufReader::new(proc.stdout.take().unwrap());
    let mut stderr_pipe = proc.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            seen.push_str(&line);
            if line.contains("is mounted at") {
                let _ = tx.send(seen.clone());
            }
            line.clear();
        }
        let _ = tx.send(seen);
    });
    let said = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the demo mounts within 2 minutes");
    assert!(said.contains("is mounted at"), "stdout: {said}");
    for step in ["created", "starting devstack", "signing the demo user"] {
        assert!(said.contains(step), "says {step:?}: {said}");
    }
    assert!(is_mounted(&dir));
    let welcome = dir.join("welcome.txt");
    assert!(
        within(Duration::from_secs(30), "read welcome.txt", move || {
            std::fs::read_to_string(welcome).unwrap()
        })
        .contains("Welcome")
    );
    let pid = child.0.as_ref().unwrap().id() as i32;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = {
        let proc = child.0.as_mut().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = proc.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the demo stops on Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{status:?}; stderr: {stderr}");
    assert!(!is_mounted(&dir));
    for noise in [
        "Sign in at",
        "Waiting for the browser",
        "Unmount failed",
        "\x1b[",
    ] {
        assert!(!stderr.contains(noise), "stderr has {noise:?}: {stderr}");
    }
}

#[test]
fn completions_and_man_page_come_from_the_binary() {
    let env = Env::new(None);
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell], Duration::from_secs(30));
        assert_ok(&out, shell);
        let script = text(&out.stdout);
        assert!(
            script.contains("cognifs") && script.contains("no-browser"),
            "{shell}: {script}"
        );
    }
    let out = env.run(&["man"], Duration::from_secs(30));
    assert_ok(&out, "man");
    let page = text(&out.stdout);
    assert!(page.contains(".TH cognifs 1"), "{page}");
    assert!(
        page.contains("completions") && page.contains("mount"),
        "{page}"
    );
}

/// The `cognifs …` commands in the README's fenced `sh` blocks (and `cargo run -- …`, which
/// runs cognifs), each split into its arguments. Comments, `[optional]` brackets and the
/// other commands of a pipeline or `&&` chain are dropped.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = include_str!("../README.md");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && trimmed == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match trimmed.find(" #") {
            Some(i) => &trimmed[..i],
            None if trimmed.starts_with('#') => "",
            None => trimmed,
        };
        for part in code.split(&['|', ';', '&'][..]) {
            let words: Vec<String> = part
                .split_whitespace()
                .map(|w| w.trim_matches(&['[', ']'][..]).to_owned())
                .filter(|w| !w.is_empty())
                .collect();
            // The command word: the first after any `VAR=value` assignments.
            let words: Vec<String> = words
                .into_iter()
                .skip_while(|w| w.split_once('=').is_some_and(|(k, _)| !k.starts_with('-')))
                .collect();
            let args = if words.first().is_some_and(|w| w == "cognifs") {
                &words[1..]
            } else if words.starts_with(&["cargo".to_owned(), "run".to_owned()])
                && !words.iter().any(|w| w == "-p")
                && let Some(at) = words.iter().position(|w| w == "--")
            {
                &words[at + 1..]
            } else {
                continue;
            };
            let mut cmd = vec!["cognifs".to_owned()];
            // Up to a redirection (`> FILE`, `2>&1`).
            cmd.extend(
                args.iter()
                    .take_while(|w| {
                        !w.trim_start_matches(char::is_numeric)
                            .starts_with(['>', '<'])
                    })
                    .cloned(),
            );
            commands.push(cmd);
        }
    }
    commands
}

#[test]
fn every_cognifs_command_in_the_readme_parses() {
    use clap::Parser;
    let commands = readme_commands();
    let shown: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
    for expected in [
        "cognifs demo ~/cloud",
        "cognifs login --no-browser",
        "cognifs mount ~/cloud",
        "cognifs service install",
        "cognifs config import path/to/.env --profile NAME",
        "cognifs completions bash",
        "cognifs man",
    ] {
        assert!(
            shown.iter().any(|c| c == expected),
            "{expected:?} found among {shown:#?}"
        );
    }
    for cmd in &commands {
        if let Err(e) = cognifs::cli::Cli::try_parse_from(cmd) {
            panic!("README command `{}` does not parse:\n{e}", cmd.join(" "));
        }
    }
}
