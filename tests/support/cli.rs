//! Driving the `cognifs` binary: an isolated config and state dir, deadlines on every child,
//! guards that unmount and kill on drop, and `login --no-browser` by paste.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const EXE: &str = env!("CARGO_BIN_EXE_cognifs");

pub struct Env {
    pub config: PathBuf,
    pub state: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new(running: Option<&devstack::Running>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let config = dir.path().join("config.toml");
        if let Some(running) = running {
            running.write_config(&config).unwrap();
        }
        Env {
            config,
            state: dir.path().join("state"),
            dir,
        }
    }

    pub fn command_of(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("COGNIFS_CONFIG", &self.config)
            .env("COGNIFS_STATE_DIR", &self.state)
            // Spool and metadata cache of its own: devstack's identity ids repeat across
            // tests and runs, and a shared `~/.cache/cognifs/meta` would carry one test's
            // metadata into another's mount. State, config and home too: nothing of the
            // user running the tests is read or written.
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("XDG_STATE_HOME", self.dir.path().join("xdg-state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("HOME", self.dir.path().join("home"))
            .env_remove("COGNIFS_PROFILE")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("BROWSER")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        cmd
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(Path::new(EXE), args)
    }

    /// The log of the profile's mounts (`cognifs.log` in the state dir).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("default").join("cognifs.log")).unwrap_or_default()
    }

    /// Where the mount serves `/metrics`, as its log says once it does (the mount was given
    /// port 0: the kernel picks a free one, which nobody else can take meanwhile).
    pub fn metrics_addr(&self, limit: Duration) -> std::net::SocketAddr {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.log().lines().rev().find_map(|l| {
                let (_, rest) = l.split_once("serving /metrics addr=")?;
                rest.split_whitespace().next()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no \"serving /metrics\" in the log within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `cognifs ARGS` to completion within `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        run_with_deadline(self.command(args), limit, &format!("cognifs {args:?}"))
    }
}

pub fn run_with_deadline(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_deadline(child, limit, what)
}

pub fn wait_with_deadline(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `f` (calls into a mount) on a thread of its own and waits at most `limit` for it:
/// a hung mount fails the test instead of hanging it. (The stuck thread is released when
/// the test's guards unmount the mount and stop its process.)
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer within {limit:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
    }
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Unmounts a path on drop, whatever happened in the test.
pub struct PathGuard(pub PathBuf);
impl Drop for PathGuard {
    fn drop(&mut self) {
        if super::is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Kills a child on drop so a failing test leaves no process behind.
pub struct ChildGuard(pub Option<Child>);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `cognifs login --no-browser`: read the URL it prints, sign in over HTTP, paste the
/// address the browser would have been sent to (as tests/cli.rs does).
pub fn login_by_paste(
    env: &Env,
    user: &str,
    password: &str,
    rt: &tokio::runtime::Handle,
) -> Output {
    let mut child = env
        .command(&["login", "--no-browser"])
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
            "login exited before printing the URL"
        );
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    let location = rt
        .block_on(cognifs::demo::sign_in_redirect(&url, user, password))
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{location}").unwrap();
    let out = wait_with_deadline(child, Duration::from_secs(30), "login");
    assert_ok(&out, "login");
    out
}

/// The real `cognifs` binary, signed in (as `cognifs login` leaves it) against one devstack,
/// with config, state and cache in a temp dir of its own.
pub struct Cli {
    pub env: Env,
}

impl Cli {
    /// `cognifs ARGS` with this test's config, state and cache.
    pub fn command(&self, args: &[&str]) -> Command {
        self.env.command(args)
    }

    pub fn spool(&self) -> PathBuf {
        self.env.dir.path().join("cache/cognifs/spool")
    }

    /// `cognifs login --no-browser`, answered over HTTP ([`login_by_paste`]).
    pub async fn login(running: &devstack::Running, user: &str, password: &str) -> Cli {
        let env = Env::new(Some(running));
        let handle = tokio::runtime::Handle::current();
        let (user, password) = (user.to_owned(), password.to_owned());
        let env = super::blocking(move || {
            login_by_paste(&env, &user, &password, &handle);
            env
        })
        .await;
        Cli { env }
    }

    /// `cognifs mount --foreground DIR EXTRA…`, logging to `log`; returns once DIR is
    /// mounted.
    pub async fn mount_with(&self, dir: &Path, log: &Path, extra: &[&str]) -> ChildGuard {
        let log = std::fs::File::create(log).unwrap();
        let mut args = vec!["mount", "--foreground", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut guard = ChildGuard(Some(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !super::is_mounted(dir) {
            let exited = guard.0.as_mut().unwrap().try_wait().unwrap();
            assert!(exited.is_none(), "cognifs mount exited: {exited:?}");
            assert!(
                Instant::now() < deadline,
                "{} was not mounted within 60 s",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        guard
    }

    /// [`Cli::mount_with`] with no extra flags.
    pub async fn mount(&self, dir: &Path, log: &Path) -> ChildGuard {
        self.mount_with(dir, log, &[]).await
    }
}

impl ChildGuard {
    pub fn signal(&self, sig: i32) {
        let pid = self.0.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Waits for the child (killing it past `limit`, then failing).
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("a child");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {} did not finish within {limit:?}", child.id());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
