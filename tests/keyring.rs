//! The OS keyring, for real: a `gnome-keyring-daemon` (unlocked, secrets only) on a session
//! bus of its own (`dbus-run-session`). `cognifs login` keeps the refresh and ID tokens there
//! — the token file holds neither — `status` says so, a mount signs in from it, and
//! `cognifs logout` removes it. What the keyring holds is read with `secret-tool`, a client
//! of its own. Through the real binary against devstack in-process; every wait has a
//! deadline, and the bus and the keyring daemon are ended by the test.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cognifs::metrics::StatusReport;
use support::cli::*;
use support::*;

/// A session bus with an unlocked GNOME Keyring on it; ended (keyring, then bus) on drop.
struct SessionKeyring {
    child: ChildGuard,
    address: String,
}

impl SessionKeyring {
    fn start(dir: &Path) -> SessionKeyring {
        let address_file = dir.join("bus-address");
        let script = format!(
            "printf %s \"$DBUS_SESSION_BUS_ADDRESS\" > '{}'; \
             printf test-password | gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null 2>&1 & k=$!; \
             read _; kill $k; wait $k",
            address_file.display()
        );
        let child = Command::new("dbus-run-session")
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-run-session (Debian dbus-daemon) runs");
        let child = ChildGuard(Some(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = loop {
            if let Ok(a) = std::fs::read_to_string(&address_file)
                && !a.is_empty()
            {
                break a;
            }
            assert!(Instant::now() < deadline, "the session bus starts");
            std::thread::sleep(Duration::from_millis(50));
        };
        let keyring = SessionKeyring { child, address };
        // The Secret Service owns its name once the keyring daemon is up.
        while !keyring
            .tool(
                "dbus-send",
                &[
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ],
            )
            .stdout
            .ends_with(b"boolean true\n")
        {
            assert!(Instant::now() < deadline, "gnome-keyring-daemon answers");
            std::thread::sleep(Duration::from_millis(100));
        }
        keyring
    }

    /// Runs a client of this bus.
    fn tool(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env_remove("XDG_RUNTIME_DIR");
        run_with_deadline(cmd, Duration::from_secs(20), program)
    }

    /// `cognifs ARGS` on this bus.
    fn cognifs(&self, env: &Env, args: &[&str]) -> Command {
        let mut cmd = env.command(args);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("COGNIFS_TOKEN_STORAGE");
        cmd
    }

    /// What the keyring keeps for `token_file`, read by `secret-tool`.
    fn lookup(&self, token_file: &Path) -> Option<String> {
        let out = self.tool(
            "secret-tool",
            &[
                "lookup",
                "service",
                "cognifs",
                "username",
                token_file.to_str().unwrap(),
            ],
        );
        out.status.success().then(|| text(&out.stdout))
    }
}

impl Drop for SessionKeyring {
    fn drop(&mut self) {
        // EOF on the script's `read`: it ends the keyring daemon, then dbus-run-session
        // ends the bus.
        if let Some(child) = &mut self.child.0 {
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `cognifs login --no-browser` on the keyring's bus, signing in over HTTP and pasting back.
fn login(keyring: &SessionKeyring, env: &Env, rt: &tokio::runtime::Runtime) {
    let mut child = keyring
        .cognifs(env, &["login", "--no-browser"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "login printed no URL"
        );
        if let Some(rest) = line.trim().strip_prefix("http") {
            break format!("http{rest}");
        }
    };
    let location = rt
        .block_on(cognifs::demo::sign_in_redirect(&url, "alice", "alice-pass"))
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{location}").unwrap();
    assert_ok(
        &wait_with_deadline(child, Duration::from_secs(30), "login"),
        "login",
    );
}

#[test]
fn the_sign_in_lives_in_the_keyring_and_logout_removes_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = Env::new(Some(&running));
    let keyring = SessionKeyring::start(env.dir.path());
    let token_file: PathBuf = env.state.join("default").join("tokens.json");

    login(&keyring, &env, &rt);
    let secret = keyring
        .lookup(&token_file)
        .expect("the keyring holds the sign-in");
    let secrets: serde_json::Value = serde_json::from_str(&secret).unwrap();
    let refresh_token = secrets["refresh_token"].as_str().unwrap().to_owned();
    let id_token = secrets["id_token"].as_str().unwrap().to_owned();
    assert!(refresh_token.len() > 20 && id_token.len() > 20);
    let on_disk = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        !on_disk.contains(&refresh_token) && !on_disk.contains(&id_token),
        "no token on disk: {on_disk}"
    );
    let record: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
    assert_eq!(record["in_keyring"], true);
    assert_eq!(record["refresh_token"], "");

    let out = run_with_deadline(
        keyring.cognifs(&env, &["status", "--json"]),
        Duration::from_secs(30),
        "status",
    );
    assert_ok(&out, "status --json");
    let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.token_storage.as_deref(), Some("keyring"));
    assert_eq!(report.user.as_deref(), Some("alice"));
    let out = run_with_deadline(
        keyring.cognifs(&env, &["status"]),
        Duration::from_secs(30),
        "status",
    );
    assert!(
        text(&out.stdout).contains("tokens kept    in the OS keyring"),
        "{}",
        text(&out.stdout)
    );

    // A mount signs in from the keyring.
    let mnt = tempfile::tempdir().unwrap();
    let dir = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(dir.clone());
    assert_ok(
        &run_with_deadline(
            keyring.cognifs(&env, &["mount", dir.to_str().unwrap()]),
            Duration::from_secs(60),
            "mount",
        ),
        "mount",
    );
    std::fs::write(dir.join("from-keyring.txt"), b"signed in from the keyring").unwrap();
    let data = report
        .data
        .as_deref()
        .expect("login looked the identity up");
    let prefix = data
        .strip_prefix("s3://")
        .unwrap()
        .split_once('/')
        .unwrap()
        .1;
    let key = format!("{prefix}from-keyring.txt");
    assert_eq!(
        rt.block_on(get_bytes(
            &admin_s3(&running),
            &running.profile.bucket,
            &key
        )),
        Some(b"signed in from the keyring".to_vec())
    );

    // Logout revokes it, and the keyring no longer holds it.
    let out = run_with_deadline(
        keyring.cognifs(&env, &["logout"]),
        Duration::from_secs(60),
        "logout",
    );
    assert_ok(&out, "logout");
    assert!(
        text(&out.stdout).contains("stopped using the sign-in"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(keyring.lookup(&token_file), None, "logout removed it");
    assert!(!token_file.exists());
    assert!(
        running
            .cognito
            .refresh(&refresh_token, &running.profile.client_id)
            .is_err(),
        "revoked"
    );
    assert_ok(
        &run_with_deadline(
            keyring.cognifs(&env, &["unmount", dir.to_str().unwrap()]),
            Duration::from_secs(60),
            "unmount",
        ),
        "unmount",
    );
}
