use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use cognifs::auth::identity::{Session, start_refresher};
use cognifs::auth::login::{Browser, LoginOptions, login};
use cognifs::auth::tokens::{TokenStore, http_client, read_claims, revoke, unix_now};
use cognifs::auth::{AuthError, profile_flag};
use cognifs::config::{self, ConfigSource, Profile};
use cognifs::fs::MountOptions;
use cognifs::mounts;
use cognifs::service;
use cognifs::store::{ObjectStore, S3Store, s3_client};

/// Mount your own prefix of an S3 bucket, signed in through AWS Cognito.
#[derive(Parser, Debug)]
#[command(name = "cognifs", version)]
struct Cli {
    /// Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default").
    #[arg(long, global = true)]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sign in through the hosted sign-in page (authorization code + PKCE).
    Login {
        /// Print the URL and read back the address the browser was sent to.
        #[arg(long)]
        no_browser: bool,
    },
    /// Revoke the sign-in and delete the stored tokens.
    Logout,
    /// Who is signed in, where the data lives, and the running mounts.
    Status,
    /// Mount the profile's prefix at DIR (default: the profile's mount_point, else ~/cloud).
    Mount(MountArgs),
    /// Unmount DIR and wait for its cognifs process to exit.
    Unmount { dir: PathBuf },
    /// Start a local Cognito + S3 stand-in, sign a demo user in, and mount at DIR.
    Demo { dir: PathBuf },
    /// Read or import configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the mount as a systemd user service.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// mount(8) helper: `SOURCE DIR [-o OPTIONS]`, SOURCE being `cognifs#PROFILE` or PROFILE
    /// (what /sbin/mount.fuse.cognifs, a symlink to cognifs, runs for an fstab line).
    MountHelper {
        #[arg(allow_hyphen_values = true, trailing_var_arg = true, num_args = 0..)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ServiceCommand {
    /// Write ~/.config/systemd/user/cognifs@.service and enable cognifs@PROFILE.
    Install,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// The resolved profile and where each value came from.
    Show,
    /// Write a profile from a web app's .env (VITE_APP_*, REACT_APP_* or bare names).
    Import { env_file: PathBuf },
}

#[derive(Args, Debug, Clone)]
struct MountArgs {
    dir: Option<PathBuf>,
    /// Stay in the foreground (logs also to stderr).
    #[arg(short, long)]
    foreground: bool,
    #[arg(long)]
    read_only: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
    /// Block cache budget, e.g. 512MiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    cache_size: u64,
    /// Read block size, e.g. 1MiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    block_size: u64,
    /// Largest readahead window of a sequential reader.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    max_readahead: u64,
    /// Multipart upload part size (at least 5MiB).
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    part_size: u64,
    /// Where files being written are spooled (default: $XDG_CACHE_HOME/cognifs/spool).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Seconds that attributes and listings are trusted.
    #[arg(long, default_value_t = 5.0)]
    metadata_ttl: f64,
    #[arg(long)]
    uid: Option<u32>,
    #[arg(long)]
    gid: Option<u32>,
    /// Mode of files, octal.
    #[arg(long, value_parser = parse_mode)]
    file_mode: Option<u16>,
    /// Mode of directories, octal.
    #[arg(long, value_parser = parse_mode)]
    dir_mode: Option<u16>,
}

/// Exit status when the profile is not signed in: distinct, so a service manager can avoid
/// restarting into the same failure.
const EXIT_SIGNED_OUT: u8 = 3;

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

fn parse_mode(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 0644"))
}

fn source(cli: &Cli) -> ConfigSource {
    ConfigSource {
        path: cli.config.clone(),
        profile: cli.profile.clone(),
    }
}

/// The name mount(8) runs for an fstab entry of type `fuse.cognifs`.
const MOUNT_HELPER_NAME: &str = "mount.fuse.cognifs";

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let result = if invoked_as == MOUNT_HELPER_NAME {
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        mount_helper(&args)
    } else {
        run(Cli::parse(), argv[1..].to_vec())
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cognifs: {err:#}");
            if err.chain().any(|e| {
                matches!(
                    e.downcast_ref::<AuthError>(),
                    Some(AuthError::NotSignedIn { .. } | AuthError::SignedOut { .. })
                )
            }) {
                // Shown by `systemctl status` for the unit, which will not restart into this.
                service::notify_or_log("STATUS=not signed in: run cognifs login");
                ExitCode::from(EXIT_SIGNED_OUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging(log_file: Option<&Path>, to_stderr: bool) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    // Never below info for the HTTP stacks: their debug output can carry headers.
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
            .add_directive("s3s=warn".parse().expect("static directive"))
            .add_directive("aws_smithy_runtime=info".parse().expect("static directive"))
            .add_directive("aws_sigv4=info".parse().expect("static directive"))
            .add_directive("hyper=info".parse().expect("static directive"))
            .add_directive("reqwest=info".parse().expect("static directive"))
    };
    let file_layer = match log_file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log {}", path.display()))?;
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

/// `argv` (without the program name) is what a daemonized mount re-runs with `--foreground`.
fn run(cli: Cli, argv: Vec<std::ffi::OsString>) -> anyhow::Result<ExitCode> {
    let src = source(&cli);
    match cli.command {
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config::show(&src)?);
        }
        Command::Config(ConfigCommand::Import { env_file }) => {
            let report = config::import_env(&env_file, &src)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "wrote profile [{}] to {}",
                report.profile,
                report.config_path.display()
            );
            println!("next: cognifs login{}", profile_flag(&report.profile));
        }
        Command::Login { no_browser } => {
            let profile = config::load(&src)?;
            let store = TokenStore::for_profile(&profile);
            let browser = if no_browser {
                Browser::Paste
            } else {
                Browser::System
            };
            let state = runtime()?.block_on(login(
                &profile,
                &store,
                LoginOptions {
                    browser,
                    ..Default::default()
                },
            ))?;
            println!(
                "Signed in as {} (profile {}). Next: cognifs mount{} DIR",
                state
                    .username
                    .as_deref()
                    .or(state.email.as_deref())
                    .unwrap_or("?"),
                profile.name,
                profile_flag(&profile.name)
            );
        }
        Command::Logout => {
            let profile = config::load(&src)?;
            let store = TokenStore::for_profile(&profile);
            let Some(state) = store.load()? else {
                println!("Not signed in (profile {}).", profile.name);
                return Ok(ExitCode::SUCCESS);
            };
            if let Err(e) =
                runtime()?.block_on(revoke(&profile, &state.refresh_token, &http_client()))
            {
                eprintln!(
                    "warning: could not revoke the sign-in at {} ({e}); deleting it locally anyway",
                    profile.domain
                );
            }
            store.delete()?;
            println!("Signed out (profile {}).", profile.name);
        }
        Command::Status => return status(&src),
        Command::Mount(args) => return mount(&src, args, argv),
        Command::MountHelper { args } => return mount_helper(&args),
        Command::Service(ServiceCommand::Install) => service_install(&src)?,
        Command::Unmount { dir } => unmount(&dir)?,
        Command::Demo { dir } => demo(&dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_time(unix: u64) -> String {
    let now = unix_now();
    if unix > now {
        format!("in {}m{:02}s", (unix - now) / 60, (unix - now) % 60)
    } else {
        format!(
            "{}m{:02}s ago (expired; renewed on next use)",
            (now - unix) / 60,
            (now - unix) % 60
        )
    }
}

fn status(src: &ConfigSource) -> anyhow::Result<ExitCode> {
    let profile = config::load(src)?;
    let store = TokenStore::for_profile(&profile);
    let Some(state) = store.load()? else {
        eprintln!(
            "Not signed in (profile {}). Run: cognifs login{}",
            profile.name,
            profile_flag(&profile.name)
        );
        return Ok(ExitCode::from(EXIT_SIGNED_OUT));
    };
    let claims = state
        .id_token
        .as_deref()
        .map(read_claims)
        .unwrap_or_default();
    println!(
        "profile        {} ({})",
        profile.name,
        profile.config_path.display()
    );
    println!(
        "signed in as   {} <{}>",
        claims.username.as_deref().unwrap_or("?"),
        claims.email.as_deref().unwrap_or("no email")
    );
    match &state.identity_id {
        Some(id) => {
            println!("identity       {id}");
            println!(
                "data           s3://{}/{}",
                profile.bucket,
                profile.prefix_for(id)
            );
        }
        None => println!("identity       not looked up yet (first mount does it)"),
    }
    if let Some(exp) = state.id_token_expires {
        println!("ID token       expires {}", fmt_time(exp));
    }
    let running = mounts::running(&config::state_dir(), &profile.name);
    if running.is_empty() {
        println!("mounts         none");
    }
    for m in running {
        let creds = m
            .credentials_expire
            .map(|e| format!(", credentials expire {}", fmt_time(e)));
        println!(
            "mount          {} (pid {}{})",
            m.mountpoint.display(),
            m.pid,
            creds.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn mount_options(args: &MountArgs) -> anyhow::Result<MountOptions> {
    let mut opts = MountOptions {
        read_only: args.read_only,
        allow_other: args.allow_other,
        cache_bytes: args.cache_size,
        block_size: args.block_size,
        max_readahead: args.max_readahead,
        part_size: args.part_size,
        ..MountOptions::default()
    };
    if args.part_size < 5 << 20 || args.part_size > 5 << 30 {
        bail!("--part-size must be between 5MiB and 5GiB (S3's part limits)");
    }
    if let Some(dir) = &args.cache_dir {
        opts.spool_dir = dir.join("spool");
    }
    if !(args.metadata_ttl.is_finite() && args.metadata_ttl >= 0.0) {
        bail!("--metadata-ttl must be a number of seconds");
    }
    opts.metadata_ttl = Duration::from_secs_f64(args.metadata_ttl);
    if args.block_size > 64 << 20 {
        bail!("--block-size above 64MiB makes every random read fetch too much");
    }
    if args.cache_size < args.block_size * 4 {
        bail!("--cache-size must hold at least four blocks");
    }
    opts.uid = args.uid.unwrap_or(opts.uid);
    opts.gid = args.gid.unwrap_or(opts.gid);
    opts.file_mode = args.file_mode.unwrap_or(opts.file_mode);
    opts.dir_mode = args.dir_mode.unwrap_or(opts.dir_mode);
    Ok(opts)
}

/// The checks that need no network: a mount point that is a directory, empty, and FUSE.
fn check_mountpoint(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = dir.canonicalize().with_context(|| {
        format!(
            "mount point {} does not exist (create it with mkdir)",
            dir.display()
        )
    })?;
    if !dir.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    if mounts::is_mounted(&dir) {
        bail!(
            "{} is already mounted (cognifs unmount {} first)",
            dir.display(),
            dir.display()
        );
    }
    if std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "mount point {} is not empty; cognifs mounts only on an empty directory",
            dir.display()
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "/dev/fuse is missing: FUSE is not available. Install it (Debian/Ubuntu: apt-get install fuse3) and load the module (modprobe fuse)"
        );
    }
    Ok(dir)
}

/// `~/cloud`: where a profile without `mount_point` mounts (the systemd unit relies on it).
fn default_mount_point() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join("cloud"))
}

fn mount(
    src: &ConfigSource,
    args: MountArgs,
    argv: Vec<std::ffi::OsString>,
) -> anyhow::Result<ExitCode> {
    let profile = config::load(src)?;
    let dir = match (&args.dir, &profile.mount_point) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            let Some(d) = default_mount_point() else {
                bail!(
                    "no mount point: give DIR, or set mount_point in profile [{}] of {}",
                    profile.name,
                    profile.config_path.display()
                )
            };
            // Only the default is created: a DIR or mount_point that does not exist is more
            // likely a typo than a wish for a new directory.
            std::fs::create_dir_all(&d)
                .with_context(|| format!("creating the default mount point {}", d.display()))?;
            d
        }
    };
    let dir = check_mountpoint(&dir)?;
    let opts = mount_options(&args)?;
    if !args.foreground {
        return daemonize(&dir, &profile, argv);
    }
    let log = config::state_dir().join(&profile.name).join("cognifs.log");
    let daemon_child = std::env::var_os(DAEMON_CHILD_ENV).is_some();
    init_logging(Some(&log), !daemon_child)?;
    let rt = runtime()?;
    let session = Session::new(profile.clone());
    serve(&rt, session, &dir, opts, None)?;
    Ok(ExitCode::SUCCESS)
}

/// Told the `s3://` URL once the mount answers.
type ReadyCallback = Box<dyn FnOnce(&str)>;

/// Signs in, mounts, and serves until a signal or an outside unmount. `ready` is told once
/// the mount answers.
fn serve(
    rt: &tokio::runtime::Runtime,
    session: Session,
    dir: &Path,
    opts: MountOptions,
    ready: Option<ReadyCallback>,
) -> anyhow::Result<()> {
    let profile = session.profile.clone();
    let refresher = rt.block_on(start_refresher(session))?;
    let prefix = profile.prefix_for(&refresher.identity_id);
    let s3_url = format!("s3://{}/{}", profile.bucket, prefix);
    let store = std::sync::Arc::new(S3Store::new(
        s3_client(&profile, refresher.credentials.clone()),
        profile.bucket.clone(),
        prefix,
    ));
    rt.block_on(store.check_access())
        .map_err(|e| anyhow::anyhow!("cannot reach {s3_url}: {e}"))?;
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
    let mount = cognifs::fs::mount(store, opts, dir, rt.handle().clone())?;
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
    tracing::info!(mountpoint = %dir.display(), %s3_url, "mounted");
    // The kernel lists the mount once the FUSE handshake is done; systemd hears READY only then.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mounts::is_mounted(dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sd_status = |expire: Option<u64>| {
        let renew = match expire {
            Some(e) => format!("credentials renew before {} UTC", clock(e)),
            None => "credentials do not expire".to_owned(),
        };
        format!("STATUS=mounted {s3_url} at {}; {renew}", dir.display())
    };
    service::notify_or_log(&format!(
        "READY=1\n{}",
        sd_status(record.credentials_expire)
    ));
    if let Some(ready) = ready {
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
                    if record.credentials_expire != expiry_secs() {
                        record.credentials_expire = expiry_secs();
                        if let Some(reg) = &registration {
                            let _ = reg.update(&record);
                        }
                        service::notify_or_log(&sd_status(record.credentials_expire));
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
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
    let started = std::time::Instant::now();
    loop {
        match done_rx.recv_timeout(Duration::from_secs(2)) {
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
        if started.elapsed() >= SHUTDOWN_GRACE {
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

/// How long a stop waits for files being written to be closed; below the unit's
/// TimeoutStopSec (120 s), so the final uploads still happen before systemd kills us.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(90);

/// `HH:MM:SS` of a Unix time, UTC (for the service STATUS line; no date library needed).
fn clock(unix: u64) -> String {
    let s = unix % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn service_install(src: &ConfigSource) -> anyhow::Result<()> {
    let profile = config::load(src)?;
    if src.path.is_some() || std::env::var_os("COGNIFS_CONFIG").is_some() {
        eprintln!(
            "warning: the unit reads the default config file; {} is not it unless it lives there",
            profile.config_path.display()
        );
    }
    let exe = std::env::current_exe().context("locating the cognifs executable")?;
    let report = service::install(&exe, &profile.name)?;
    println!("wrote {}", report.unit_path.display());
    for (cmd, result) in &report.ran {
        match result {
            Ok(()) => println!("ran {cmd}"),
            Err(e) => eprintln!("failed: {cmd}: {e}"),
        }
    }
    let dir = profile
        .mount_point
        .clone()
        .or_else(default_mount_point)
        .unwrap_or_else(|| PathBuf::from("~/cloud"));
    if report.todo.is_empty() {
        println!(
            "{} is enabled and started: it mounts {} now and at every login.",
            report.instance,
            dir.display()
        );
    } else {
        println!("to enable it, run:");
        for cmd in &report.todo {
            println!("  {cmd}");
        }
    }
    println!("logs: journalctl --user -u {}", report.instance);
    if TokenStore::for_profile(&profile).load()?.is_none() {
        println!(
            "note: profile {} is not signed in; the service exits (status 3, no restart loop) until you run cognifs login{}",
            profile.name,
            profile_flag(&profile.name)
        );
    }
    Ok(())
}

/// mount(8) options that concern mount(8) or the kernel's generic flags, not cognifs.
fn ignored_mount_option(opt: &str) -> bool {
    const IGNORED: &[&str] = &[
        "_netdev",
        "user",
        "users",
        "nouser",
        "owner",
        "group",
        "auto",
        "noauto",
        "nofail",
        "defaults",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "sync",
        "async",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "diratime",
        "nodiratime",
        "silent",
        "loud",
        "lazytime",
        "nolazytime",
    ];
    IGNORED.contains(&opt)
        || opt.starts_with("x-")
        || opt.starts_with("comment=")
        || opt.starts_with("fsname=")
        || opt.starts_with("subtype=")
}

/// Translates a mount(8) helper call (`SOURCE DIR [-sfnvrw] [-o OPTS] [-t TYPE]`) into the
/// arguments of `cognifs mount`.
fn helper_argv(args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut positional = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-o" => opts.extend(
                it.next()
                    .context("-o needs options")?
                    .split(',')
                    .map(str::to_owned),
            ),
            o if o.starts_with("-o") => opts.extend(o[2..].split(',').map(str::to_owned)),
            // The type (fuse.cognifs) and namespace are mount(8)'s business.
            "-t" | "-N" => {
                it.next();
            }
            o if o.starts_with("-t") || o.starts_with("-N") => {}
            "-r" => opts.push("ro".into()),
            "-w" => opts.push("rw".into()),
            // sloppy, fake, no-mtab, verbose: nothing to do for a FUSE mount.
            "-s" | "-f" | "-n" | "-v" => {}
            o if o.starts_with('-') => bail!("unknown mount helper flag {o}"),
            _ => positional.push(arg.clone()),
        }
    }
    let [source, dir] = positional.as_slice() else {
        bail!("usage: {MOUNT_HELPER_NAME} cognifs#PROFILE DIR [-o OPTIONS]");
    };
    let profile = source.strip_prefix("cognifs#").unwrap_or(source);
    if profile.is_empty() {
        bail!("no profile in {source:?}: write cognifs#PROFILE, e.g. cognifs#default");
    }
    let mut global = vec!["--profile".to_owned(), profile.to_owned()];
    let mut mount = vec!["mount".to_owned(), dir.clone()];
    let mut read_only = false;
    for opt in opts.iter().filter(|o| !o.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k.replace('-', "_"), Some(v)),
            None => (opt.replace('-', "_"), None),
        };
        match (key.as_str(), value) {
            ("ro", None) => read_only = true,
            ("rw", None) => read_only = false,
            ("allow_other", None) => mount.push("--allow-other".into()),
            ("config", Some(v)) => global.extend(["--config".to_owned(), v.to_owned()]),
            (
                "cache_size" | "block_size" | "max_readahead" | "metadata_ttl" | "uid" | "gid"
                | "file_mode" | "dir_mode",
                Some(v),
            ) => mount.extend([format!("--{}", key.replace('_', "-")), v.to_owned()]),
            _ if ignored_mount_option(opt) => {}
            _ => bail!("unknown mount option {opt:?}"),
        }
    }
    if read_only {
        mount.push("--read-only".into());
    }
    global.extend(mount);
    Ok(global)
}

/// Mounts as `cognifs mount` would (daemonized, returning once the mount answers), from a
/// mount(8) helper call.
fn mount_helper(args: &[String]) -> anyhow::Result<ExitCode> {
    let argv: Vec<std::ffi::OsString> = helper_argv(args)?.into_iter().map(Into::into).collect();
    let cli = Cli::try_parse_from(std::iter::once("cognifs".into()).chain(argv.iter().cloned()))
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
    run(cli, argv)
}

const DAEMON_CHILD_ENV: &str = "COGNIFS_DAEMON_CHILD";

/// Runs the mount as a detached child and returns once it answers, or with its error.
fn daemonize(
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
    // SAFETY: setsid is async-signal-safe; it detaches the child from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
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

fn unmount(dir: &Path) -> anyhow::Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{} does not exist", dir.display()))?;
    if !mounts::is_mounted(&dir) {
        bail!("{} is not mounted", dir.display());
    }
    let record = mounts::find_by_mountpoint(&config::state_dir(), &dir);
    let fusermount = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&dir)
        .status();
    let ok = match fusermount {
        Ok(s) if s.success() => true,
        _ => std::process::Command::new("umount")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
    };
    if !ok {
        bail!(
            "could not unmount {} (is a file in it still open? `fuser -m {}` lists who uses it)",
            dir.display(),
            dir.display()
        );
    }
    if let Some(r) = record
        && !mounts::wait_for_exit(r.pid, Duration::from_secs(60))
    {
        bail!(
            "unmounted, but cognifs process {} has not exited yet",
            r.pid
        );
    }
    println!("unmounted {}", dir.display());
    Ok(())
}

fn demo(dir: &Path) -> anyhow::Result<()> {
    let dir = check_mountpoint(dir)?;
    init_logging(None, true)?;
    let rt = runtime()?;
    let data_dir = config::state_dir().join("demo");
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let running = rt.block_on(devstack::start(devstack::Options {
        data_dir: Some(data_dir.join("s3")),
        callback_port: free_port,
        ..devstack::Options::default()
    }))?;
    let profile = cognifs::demo::profile_for(&running, data_dir.join("config.toml"));
    running.write_config(&data_dir.join("config.toml"))?;
    let store = TokenStore::new(&data_dir, "tokens");
    let (user, password) = devstack::DEMO_USER;
    let browser = Browser::Custom(Box::new(move |url| {
        tokio::spawn(async move {
            if let Err(e) = cognifs::demo::scripted_sign_in(url, user.into(), password.into()).await
            {
                eprintln!("demo sign-in failed: {e}");
            }
        });
    }));
    rt.block_on(login(
        &profile,
        &store,
        LoginOptions {
            browser,
            timeout: Duration::from_secs(30),
        },
    ))?;
    let session = Session::with_store(profile, store);
    let objects = data_dir.join("s3");
    let shown = dir.clone();
    let ready = Box::new(move |s3_url: &str| {
        println!(
            "\ncognifs demo: {s3_url} is mounted at {}\n",
            shown.display()
        );
        println!(
            "  try:   ls -la {0}    cat {0}/welcome.txt    cp -r ~/Documents {0}/    mkdir {0}/notes",
            shown.display()
        );
        println!(
            "  data:  devstack keeps objects under {}",
            objects.display()
        );
        println!("  stop:  Ctrl-C (unmounts and stops devstack)\n");
    });
    seed_demo(&rt, &session)?;
    let result = serve(&rt, session, &dir, MountOptions::default(), Some(ready));
    rt.block_on(running.shutdown());
    result
}

/// Puts a welcome file in the demo user's prefix, with the user's own credentials.
fn seed_demo(rt: &tokio::runtime::Runtime, session: &Session) -> anyhow::Result<()> {
    rt.block_on(async {
        let (identity_id, creds) = session.fetch_credentials().await?;
        let store = S3Store::new(
            s3_client(&session.profile, creds),
            session.profile.bucket.clone(),
            session.profile.prefix_for(&identity_id),
        );
        let text = "Welcome to cognifs.\nThis file is an S3 object in your own prefix, served by a local devstack.\n";
        store
            .put("welcome.txt", text.into(), &Default::default())
            .await
            .context("seeding the demo bucket")?;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert!(parse_mode("999").is_err());
    }

    fn argv(s: &str) -> anyhow::Result<Vec<String>> {
        helper_argv(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn mount_helper_arguments() {
        assert_eq!(
            argv(
                "cognifs#work /home/me/cloud -o rw,_netdev,user,noauto,nofail,x-systemd.automount"
            )
            .unwrap(),
            ["--profile", "work", "mount", "/home/me/cloud"]
        );
        assert_eq!(
            argv("default /m -n -o ro,allow_other,cache_size=512MiB,config=/etc/c.toml -t fuse.cognifs")
                .unwrap(),
            [
                "--profile", "default", "--config", "/etc/c.toml", "mount", "/m", "--allow-other",
                "--cache-size", "512MiB", "--read-only"
            ]
        );
        assert!(argv("cognifs# /m").is_err());
        assert!(argv("cognifs#default").is_err());
        let err = argv("cognifs#default /m -o cache_sise=1").unwrap_err();
        assert!(err.to_string().contains("cache_sise"), "{err}");
        // Every translation parses as a real command line.
        let args = argv("cognifs#default /m -o ro,metadata_ttl=2,uid=1000,file_mode=0600").unwrap();
        Cli::try_parse_from(std::iter::once("cognifs".to_owned()).chain(args)).unwrap();
    }
}
