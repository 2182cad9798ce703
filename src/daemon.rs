//! `serve`: mount, signals, sd_notify, graceful shutdown, the mount registry and the live
//! status socket that `cognifs status` reads, `/metrics`; `daemonize` (the detached child
//! `cognifs mount` starts) and logging.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::auth::identity::{CredentialState, Session, start_refresher};
use crate::auth::lifetime;
use crate::auth::tokens::unix_now;
use crate::config::{self, Profile};
use crate::fs::MountOptions;
use crate::metrics::{MountIdent, Probe, server};
use crate::mounts;
use crate::pending::PendingArea;
use crate::service;
use crate::store::{ProfileStore, UserMeta, profile_store};

/// The async runtime every command that talks to the network runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Whether this process is the detached child of [`daemonize`].
pub fn is_daemon_child() -> bool {
    std::env::var_os(DAEMON_CHILD_ENV).is_some()
}

/// Makes this process undumpable (`PR_SET_DUMPABLE` 0): no core file, and no ptrace or
/// `/proc/PID/mem` for other processes of the user. A mount holds the refresh token and
/// AWS keys in memory for as long as it runs.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// The crates whose logs are ours: shown at the chosen level.
const OUR_CRATES: [&str; 2] = ["cognifs", "devstack"];

fn is_level(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "trace" | "debug" | "info" | "warn" | "error" | "off"
    )
}

/// The log filter, an allow-list: our crates at the level `spec` (`RUST_LOG`) chooses — a
/// level, and `cognifs…=LEVEL` / `devstack…=LEVEL` directives — and every other crate at
/// warn at most, whatever `spec` says of it: an HTTP, TLS or SDK crate's debug output can
/// carry headers (tokens, signatures). Default: info.
pub fn log_directives(spec: Option<&str>) -> String {
    let mut level = "info".to_owned();
    let mut ours = Vec::new();
    for part in spec.unwrap_or_default().split(',').map(str::trim) {
        if is_level(part) {
            level = part.to_ascii_lowercase();
        } else if let Some((target, lvl)) = part.split_once('=')
            && is_level(lvl)
            && OUR_CRATES
                .iter()
                .any(|c| target == *c || target.starts_with(&format!("{c}::")))
        {
            ours.push(format!("{target}={}", lvl.to_ascii_lowercase()));
        }
    }
    let others = if matches!(level.as_str(), "error" | "off") {
        level.clone()
    } else {
        "warn".to_owned()
    };
    let mut directives = vec![others];
    directives.extend(OUR_CRATES.iter().map(|c| format!("{c}={level}")));
    directives.extend(ours);
    // fuser 0.18's `Mount` unmounts again when dropped, even after the mount is gone: its
    // `is_mounted` takes POLLERR on /dev/fuse (libfuse's sign that the connection is already
    // unmounted) for "still mounted". So every clean unmount from outside (`cognifs
    // unmount`, `fusermount3 -u`, our own lazy `Mount::detach`) is followed, once the
    // session thread ends inside `BackgroundSession::join`, by a umount(2) of a path that is
    // no longer a mount point and `WARN fuser::mnt: Unmount failed: Invalid argument`. The
    // drop cannot be avoided through fuser's API (the field is private), and that warning is
    // the only thing the `fuser::mnt` target logs at warn level; errors still show.
    directives.push("fuser::mnt=error".to_owned());
    directives.join(",")
}

/// Logs to `log_file` (appending) and/or stderr, filtered by [`log_directives`].
pub fn init_logging(log_file: Option<&Path>, to_stderr: bool) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("RUST_LOG").ok();
    let filter = || tracing_subscriber::EnvFilter::new(log_directives(spec.as_deref()));
    let file_layer = match log_file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                crate::statefile::private_dir(dir)?;
            }
            // The log names files and keys: the user's alone.
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("opening log {}", path.display()))?;
            // One an earlier version made 0644 is narrowed too.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    let stderr_layer = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            // Colour codes only for a terminal: a pipe, a file or the journal gets plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(filter())
    });
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .ok();
    Ok(())
}

/// Told the `s3://` URL once the mount answers.
pub type ReadyCallback = Box<dyn FnOnce(&str)>;

/// What a caller of [`serve`] may add to a plain mount (the demo uses the first two).
#[derive(Default)]
pub struct Extras {
    /// Objects put (path relative to the prefix, body) before mounting.
    pub seed: Vec<(String, Bytes)>,
    /// Told the `s3://` URL once the mount answers.
    pub ready: Option<ReadyCallback>,
    /// How long a stop waits for files being written to be closed (`--shutdown-grace`);
    /// `None`: [`SHUTDOWN_GRACE`].
    pub shutdown_grace: Option<Duration>,
}

/// Signs in, mounts, and serves until a signal or an outside unmount; then unmounts
/// gracefully (files being written are closed and uploaded first, within a grace period).
pub fn serve(
    rt: &tokio::runtime::Runtime,
    session: Session,
    dir: &Path,
    opts: MountOptions,
    extras: Extras,
) -> anyhow::Result<()> {
    serve_with_metrics(rt, session, dir, opts, extras, None)
}

/// [`serve`], also serving `/metrics` at `metrics_addr` (Prometheus text format).
pub fn serve_with_metrics(
    rt: &tokio::runtime::Runtime,
    session: Session,
    dir: &Path,
    opts: MountOptions,
    extras: Extras,
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    // Before any secret is read into memory.
    forbid_core_dumps().context("making the daemon undumpable")?;
    let profile = session.profile.clone();
    let mut opts = opts;
    if let Some(device) = &profile.device_name {
        opts.device_name = device.clone();
    }
    // Failed uploads are kept per profile, and resumed by the profile's next mount.
    opts.pending_dir
        .get_or_insert_with(|| PendingArea::for_profile(&config::state_dir(), &profile.name));
    let metrics_listener = metrics_addr
        .map(|addr| {
            if let Some(warning) = server::exposure_warning(&addr) {
                tracing::warn!("{warning}");
            }
            server::MetricsServer::listen(addr)
                .with_context(|| format!("listening for /metrics at {addr}"))
        })
        .transpose()?;
    let token_store = session.store.clone();
    let refresher = rt.block_on(start_refresher(session))?;
    let prefix = profile.prefix_for(&refresher.identity_id);
    let s3_url = format!("s3://{}/{}", profile.bucket, prefix);
    // File data kept on disk for the profile's next mounts and for offline use.
    // ... and the listings last seen, for answering while S3 is away.
    let cache_base = opts
        .spool_dir
        .parent()
        .map_or_else(|| opts.spool_dir.clone(), Path::to_path_buf)
        .join(&profile.name);
    opts.disk_cache
        .get_or_insert_with(|| cache_base.join("blocks"));
    opts.known_tree
        .get_or_insert_with(|| cache_base.join("tree"));
    // Metadata learnt by HEAD, kept beside the spool for the profile's next mounts.
    opts.meta_cache.get_or_insert_with(|| {
        let dir = opts
            .spool_dir
            .parent()
            .map_or_else(|| opts.spool_dir.clone(), |p| p.join("meta"));
        dir.join(format!(
            "{}-{}.jsonl",
            profile.name,
            crate::pending::PendingRecord::id_of(&s3_url, "")
        ))
    });
    // The one constructor the mount tests use too: production retries, every request
    // counted (for `cognifs status` and /metrics), stale credentials renewed at once.
    let ProfileStore { store, requests } = profile_store(&profile, &refresher.credentials, prefix);
    rt.block_on(store.check_access())
        .map_err(|e| anyhow::anyhow!("cannot reach {s3_url}: {e}"))?;
    for (rel, body) in extras.seed {
        rt.block_on(store.put(&rel, body, &UserMeta::new()))
            .map_err(|e| anyhow::anyhow!("putting {rel} in {s3_url}: {e}"))?;
    }
    // Handlers before mounting: a SIGTERM (systemctl stop) or Ctrl-C arriving any time after
    // READY must unmount, not kill the process and leave a dead mount behind. (Before this
    // point nothing is mounted, and the default action ends a hung start-up at once.)
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _rt = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let mount = crate::fs::mount(store, opts, dir, rt.handle().clone())?;
    let expiry_secs = || {
        let expiry = refresher.credentials.expiry()?;
        Some(expiry.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
    };
    let mut record = mounts::MountRecord {
        pid: std::process::id(),
        mountpoint: dir.to_path_buf(),
        profile: profile.name.clone(),
        s3_url: s3_url.clone(),
        started: unix_now(),
        credentials_expire: expiry_secs(),
    };
    let registration = mounts::register(&config::state_dir(), record.clone())
        .inspect_err(|e| tracing::warn!("cannot record the mount for `cognifs status`: {e}"))
        .ok();
    let probe = Arc::new(Probe {
        ident: MountIdent {
            pid: record.pid,
            mountpoint: record.mountpoint.clone(),
            profile: record.profile.clone(),
            s3_url: record.s3_url.clone(),
            started: record.started,
        },
        fs: mount.fs().clone(),
        requests,
        credentials: Some(refresher.credentials.clone()),
        sign_in_ends: Arc::default(),
    });
    let sign_in_watch = rt.spawn(watch_sign_in(
        profile.clone(),
        token_store,
        probe.sign_in_ends.clone(),
    ));
    // Served until this function returns: through the shutdown wait, so that `cognifs
    // unmount` can show the last uploads' progress.
    let socket_path = mounts::socket_path(&config::state_dir(), &profile.name, record.pid);
    let on_command: server::CommandHandler = {
        let credentials = refresher.credentials.clone();
        let rt = rt.handle().clone();
        Arc::new(move |command| match command {
            server::SocketCommand::SignedOut => {
                tracing::warn!(
                    "signed out by `cognifs logout`: this mount stops using the sign-in; files it cannot upload are kept and uploaded after the next `cognifs login`"
                );
                // The refresher looks at the (now deleted) sign-in at once and goes signed
                // out; it picks up the next login by itself.
                let credentials = credentials.clone();
                rt.spawn(async move {
                    use crate::store::Renewer;
                    credentials.renew_after(credentials.generation()).await;
                });
            }
        })
    };
    let _status_socket = server::StatusSocket::bind(
        &socket_path,
        probe.clone(),
        on_command,
        rt.handle(),
    )
    .inspect_err(
        |e| tracing::warn!(socket = %socket_path.display(), "cannot serve live status: {e}"),
    )
    .ok();
    // Pins (`cognifs offline pin`) and other requests that act on the mount.
    let control_path = mounts::control_path(&config::state_dir(), &profile.name, record.pid);
    let _control =
        crate::control::ControlSocket::bind(&control_path, mount.fs().clone(), rt.handle())
            .inspect_err(
                |e| tracing::warn!(socket = %control_path.display(), "cannot take requests: {e}"),
            )
            .ok();
    let _metrics = match metrics_listener {
        Some(listener) => {
            let server = server::MetricsServer::start(listener, probe.clone(), rt.handle())
                .context("serving /metrics")?;
            tracing::info!(addr = %server.local_addr(), "serving /metrics");
            Some(server)
        }
        None => None,
    };
    tracing::info!(mountpoint = %dir.display(), %s3_url, "mounted");
    // The kernel lists the mount once the FUSE handshake is done; systemd hears READY only then.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mounts::is_mounted(dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sign_in_ends = probe.sign_in_ends.clone();
    let ending = || {
        let end = sign_in_ends.load(std::sync::atomic::Ordering::Relaxed);
        lifetime::ending_soon(end, unix_now()).then_some(end)
    };
    let fs_for_status = mount.fs().clone();
    let sd_status = |expire: Option<u64>, ending: Option<u64>| {
        let renew = match (refresher.credentials.current(), expire) {
            (CredentialState::SignedOut(_), _) => format!(
                "signed out: run cognifs login{} (files that cannot be uploaded are kept)",
                crate::auth::profile_flag(&profile.name)
            ),
            (_, Some(e)) => format!("credentials renew before {} UTC", clock(e)),
            (_, None) => "credentials do not expire".to_owned(),
        };
        let warn = ending
            .map(|end| {
                format!(
                    "; the sign-in {}: run cognifs login{}",
                    lifetime::ends_in(end, unix_now()),
                    crate::auth::profile_flag(&profile.name)
                )
            })
            .unwrap_or_default();
        // Offline: since when, and what waits for S3.
        let fs_now = fs_for_status.stats();
        let offline = match &fs_now.connectivity.offline_since {
            Some((since, _)) if !fs_now.connectivity.online => format!(
                "; OFFLINE since {} UTC: {} upload(s) and {} change(s) kept for S3",
                clock(
                    since
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ),
                fs_now.pending.len(),
                fs_now.offline.queued_changes
            ),
            _ => String::new(),
        };
        format!(
            "STATUS=mounted {s3_url} at {}; {renew}{warn}{offline}",
            dir.display()
        )
    };
    let mut warned = ending();
    let mut was_online = true;
    service::notify_or_log(&format!(
        "READY=1\n{}",
        sd_status(record.credentials_expire, warned)
    ));
    if let Some(ready) = extras.ready {
        ready(&s3_url);
    }
    rt.block_on(async {
        let mut interval = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = interval.tick() => {
                    if !mounts::is_mounted(dir) {
                        tracing::info!("unmounted from outside");
                        break;
                    }
                    let now_ending = ending();
                    let online = !mount.fs().is_offline();
                    if record.credentials_expire != expiry_secs()
                        || now_ending.is_some() != warned.is_some()
                        || online != was_online
                    {
                        was_online = online;
                        record.credentials_expire = expiry_secs();
                        warned = now_ending;
                        if let Some(reg) = &registration {
                            let _ = reg.update(&record);
                        }
                        service::notify_or_log(&sd_status(record.credentials_expire, warned));
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    sign_in_watch.abort();
    tracing::info!(mountpoint = %dir.display(), "unmounting");
    service::notify_or_log("STOPPING=1\nSTATUS=unmounting");
    // Detach at once (lazy unmount: nothing new can open), then wait for the FUSE session to
    // end, which the kernel does once every open file is closed: a `cp` under way finishes
    // and its close uploads the whole file. Uploading a file while its writer is still
    // going would put a truncated object in S3; so that happens only after the grace period.
    let fs = mount.fs().clone();
    if mounts::is_mounted(dir)
        && let Err(e) = mount.detach()
    {
        tracing::warn!("{e:#}");
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(mount.join());
    });
    let grace = extras.shutdown_grace.unwrap_or(SHUTDOWN_GRACE);
    let started = std::time::Instant::now();
    loop {
        // Every 2 s (the log says what it waits for), or at the end of a shorter grace.
        let wait = Duration::from_secs(2).min(grace.saturating_sub(started.elapsed()));
        match done_rx.recv_timeout(wait.max(Duration::from_millis(10))) {
            Ok(r) => {
                if let Err(e) = r {
                    tracing::warn!("{e:#}");
                }
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let pending = fs.pending_writes();
        if started.elapsed() >= grace {
            tracing::warn!(
                files = pending.len(),
                "files still open after the grace period"
            );
            break;
        }
        for (key, size) in &pending {
            tracing::info!(%key, size, "waiting for a file being written to be closed");
        }
        service::notify_or_log(&format!(
            "STATUS=unmounting: waiting for {} file(s) being written",
            pending.len()
        ));
    }
    // Anything still dirty (a writer that outlived the grace period) goes up as it stands.
    rt.block_on(fs.flush_all())
        .map_err(|e| anyhow::anyhow!("uploading open files at shutdown: {e}"))?;
    Ok(())
}

/// How often a mount looks at when its sign-in ends (a new login moves it).
const SIGN_IN_CHECK: Duration = Duration::from_secs(60);

/// Keeps `ends` at the stored sign-in's end, and from [`lifetime::WARN_BEFORE`] before it
/// warns once a day: the log, and a desktop notification where there is a session bus.
async fn watch_sign_in(
    profile: Profile,
    store: crate::auth::tokens::TokenStore,
    ends: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut last_warning: Option<(u64, std::time::Instant)> = None;
    loop {
        let (p, s) = (profile.clone(), store.clone());
        let end = tokio::task::spawn_blocking(move || lifetime::stored_sign_in_end(&p, &s))
            .await
            .ok()
            .flatten();
        ends.store(end.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        let now = unix_now();
        if let Some(end) = end.filter(|&end| lifetime::ending_soon(end, now)) {
            let due = match last_warning {
                Some((warned_end, at)) => warned_end != end || at.elapsed() >= lifetime::WARN_EVERY,
                None => true,
            };
            if due {
                let text = lifetime::warning(&profile.name, end, now);
                tracing::warn!("{text}");
                let summary = format!("cognifs: the sign-in {}", lifetime::ends_in(end, now));
                lifetime::notify_desktop(
                    &summary,
                    &format!(
                        "Run `cognifs login{}` to stay signed in.",
                        crate::auth::profile_flag(&profile.name)
                    ),
                );
                last_warning = Some((end, std::time::Instant::now()));
            }
        }
        tokio::time::sleep(SIGN_IN_CHECK).await;
    }
}

/// How long a stop waits for files being written to be closed, by default; below the unit's
/// TimeoutStopSec (120 s), so the final uploads still happen before systemd kills us.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(90);

/// `HH:MM:SS` of a Unix time, UTC (for the service STATUS line; no date library needed).
fn clock(unix: u64) -> String {
    let (_, _, _, hour, minute, second) = crate::clock::utc_parts(unix);
    format!("{hour:02}:{minute:02}:{second:02}")
}

/// Set in the environment of the detached child [`daemonize`] starts.
pub const DAEMON_CHILD_ENV: &str = "COGNIFS_DAEMON_CHILD";

/// Runs the mount as a detached child and returns once it answers, or with its error.
pub fn daemonize(
    dir: &Path,
    profile: &Profile,
    mut args: Vec<std::ffi::OsString>,
) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    // current_exe resolves symlinks, so a mount.fuse.cognifs helper re-runs plain `cognifs`.
    let exe = std::env::current_exe().context("locating the cognifs executable")?;
    args.push("--foreground".into());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env(DAEMON_CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setsid (one system call, no allocation) is one.
    // It detaches the child from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            let _ = rustix::process::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the mount process")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                use std::io::Read;
                let _ = stderr.read_to_string(&mut err);
            }
            eprint!("{err}");
            return Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(1, 255) as u8
            ));
        }
        if mounts::is_mounted(dir) {
            println!(
                "mounted {} (profile {}, pid {}); logs in {}",
                dir.display(),
                profile.name,
                child.id(),
                config::state_dir()
                    .join(&profile.name)
                    .join("cognifs.log")
                    .display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the mount did not answer within 60 s; see the log under {}",
                config::state_dir().join(&profile.name).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_of_other_crates_never_go_below_warn_whatever_rust_log_says() {
        assert_eq!(
            log_directives(None),
            "warn,cognifs=info,devstack=info,fuser::mnt=error"
        );
        assert_eq!(
            log_directives(Some(
                "trace,hyper=trace,aws_sigv4=debug,cognifs::fs=debug,h2"
            )),
            "warn,cognifs=trace,devstack=trace,cognifs::fs=debug,fuser::mnt=error"
        );
        assert_eq!(
            log_directives(Some("error")),
            "error,cognifs=error,devstack=error,fuser::mnt=error"
        );
        // What reaches a subscriber under RUST_LOG=trace.
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::prelude::*;
        #[derive(Clone, Default)]
        struct Seen(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let m = event.metadata();
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("{}:{}", m.target(), m.level()));
            }
        }
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone().with_filter(
            tracing_subscriber::EnvFilter::new(log_directives(Some("trace"))),
        ));
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "hyper::proto::h1", "authorization: secret");
            tracing::trace!(target: "aws_sigv4::http_request", "canonical request");
            tracing::warn!(target: "hyper::proto::h1", "a warning");
            tracing::trace!(target: "cognifs::fs", "ours");
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            ["hyper::proto::h1:WARN", "cognifs::fs:TRACE"]
        );
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock(86_400 + 3_600 + 62), "01:01:02");
    }
}
