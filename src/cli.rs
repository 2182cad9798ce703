//! The command line: clap definitions and their value parsers. [`MountArgs`] is the one source
//! of the `cognifs mount` flags and of the fstab options the mount(8) helper accepts
//! (`commands::mount_helper` derives those from it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use crate::config::ConfigSource;
use crate::fs::MountOptions;

/// Mount your own prefix of an S3 bucket, signed in through AWS Cognito.
#[derive(Parser, Debug)]
#[command(name = "cognifs", version)]
pub struct Cli {
    /// Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default").
    #[arg(long, global = true)]
    pub profile: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Where the profile is read from, as the command line asked.
    pub fn source(&self) -> ConfigSource {
        ConfigSource {
            path: self.config.clone(),
            profile: self.profile.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum PendingCommand {
    /// List them (also shown by `cognifs status`).
    List,
    /// Abandon one for good: its data is deleted, S3 keeps what it has.
    Drop {
        /// The file: a path in the mount, or its key relative to the prefix.
        path: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum OfflineCommand {
    /// Fetch files or whole trees into the disk cache and keep them there (never evicted),
    /// so they can be read while S3 is away.
    Pin {
        /// Files or directories in a running mount.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Let pinned files be evicted again.
    Unpin {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// What each running mount keeps pinned, and how much room it takes.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ConflictsCommand {
    /// Each write a running mount lost to another client, and where its version went.
    List,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Sign in through the hosted sign-in page (authorization code + PKCE).
    Login {
        /// Print the URL and read back the address the browser was sent to.
        #[arg(long)]
        no_browser: bool,
    },
    /// Revoke the sign-in and delete the stored tokens.
    Logout,
    /// Who is signed in, where the data lives, and the running mounts (live figures).
    Status(StatusArgs),
    /// Mount the profile's prefix at DIR (default: the profile's mount_point, else ~/cloud).
    Mount(MountArgs),
    /// Unmount DIR and wait for its cognifs process to exit.
    Unmount { dir: PathBuf },
    /// Start a local Cognito + S3 stand-in, sign a demo user in, and mount at DIR.
    // Hidden in a build without the `demo` feature, where it only says so.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
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
    /// Uploads that failed and are kept on disk until they are in S3.
    #[command(subcommand)]
    Pending(PendingCommand),
    /// Files kept on this disk for when S3 is away (`pin`, `unpin`, `list`).
    #[command(subcommand)]
    Offline(OfflineCommand),
    /// Saves that lost a race with another device or client (kept as conflict copies).
    Conflicts {
        #[command(subcommand)]
        command: Option<ConflictsCommand>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout.
    Man,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Write ~/.config/systemd/user/cognifs@.service and enable cognifs@PROFILE.
    Install,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// The resolved profile and where each value came from.
    Show,
    /// Write a profile from a web app's .env (VITE_APP_*, REACT_APP_* or bare names).
    Import { env_file: PathBuf },
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Print one JSON object (the fields are documented in the README).
    #[arg(long)]
    pub json: bool,
    /// Refresh every second until Ctrl-C (with --json: one object per line).
    #[arg(long)]
    pub watch: bool,
}

/// The flags of `cognifs mount`. Every long flag here is also an fstab option
/// (`-o cache_size=512MiB`, `-o allow_other`), except those in
/// `commands::mount_helper::NOT_FSTAB_OPTIONS`.
#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    pub dir: Option<PathBuf>,
    /// Stay in the foreground (logs also to stderr).
    #[arg(short, long)]
    pub foreground: bool,
    #[arg(long)]
    pub read_only: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Disk cache budget, e.g. 2GiB: file data kept across mounts and for offline use, under
    /// $XDG_CACHE_HOME/cognifs/PROFILE/blocks (default: 5% of that disk, at most 10GiB).
    /// Memory holds only a small hot set.
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Read block size, e.g. 1MiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub block_size: u64,
    /// Largest readahead window of a sequential reader.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_readahead: u64,
    /// Multipart upload part size (at least 5MiB).
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Where files being written are spooled (default: $XDG_CACHE_HOME/cognifs/spool).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Attributes from listings alone, never a HEAD: Last-Modified as mtime, --uid/--gid and
    /// --file-mode/--dir-mode for everything, symlinks and special files shown as files
    /// (like rclone's --use-server-modtime). Fastest `ls -l` for buckets where stored
    /// attributes do not matter.
    #[arg(long)]
    pub list_only: bool,
    /// Most data kept for uploads that failed, counting every file open for writing (which
    /// may have to be kept); past it, writes fail with ENOSPC (default: no limit but
    /// --min-free).
    #[arg(long, value_parser = parse_size)]
    pub pending_max: Option<u64>,
    /// Free space kept on the disk holding failed uploads; writes that could eat into it
    /// fail with ENOSPC (default: 5% of that disk, at most 1GiB).
    #[arg(long, value_parser = parse_size)]
    pub min_free: Option<u64>,
    /// A close or fsync whose data went beside the object as a conflict copy (another
    /// device changed the file meanwhile) fails with ESTALE; the data is in S3 all the same.
    /// By default such a close returns 0.
    #[arg(long)]
    pub conflict_error: bool,
    /// While S3 does not answer, close and fsync fail (EIO; the data is kept and uploaded
    /// all the same) and mkdir, unlink and the like are refused, as before offline mode. By
    /// default they succeed once the change is safe on this disk, and S3 gets it when it
    /// answers again.
    #[arg(long)]
    pub offline_strict: bool,
    /// Hours after which a multipart upload under the prefix counts as abandoned and is
    /// aborted at mount, whoever started it (this machine's own dead ones go at once).
    #[arg(long, default_value_t = 24.0)]
    pub stray_upload_hours: f64,
    /// Seconds that attributes and listings are trusted.
    #[arg(long, default_value_t = 5.0)]
    pub metadata_ttl: f64,
    /// Seconds a stop (SIGTERM, Ctrl-C, an outside lazy unmount) waits for files still open
    /// for writing to be closed; then they are uploaded as they stand. Keep it below the
    /// service's TimeoutStopSec (120).
    #[arg(long, default_value_t = 90.0)]
    pub shutdown_grace: f64,
    #[arg(long)]
    pub uid: Option<u32>,
    #[arg(long)]
    pub gid: Option<u32>,
    /// Mode of files, octal.
    #[arg(long, value_parser = parse_mode)]
    pub file_mode: Option<u16>,
    /// Mode of directories, octal.
    #[arg(long, value_parser = parse_mode)]
    pub dir_mode: Option<u16>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (a non-loopback
    /// address is served too, with a warning).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl MountArgs {
    /// `--shutdown-grace`, checked.
    pub fn shutdown_grace(&self) -> anyhow::Result<Duration> {
        if !(self.shutdown_grace.is_finite() && self.shutdown_grace >= 0.0) {
            bail!("--shutdown-grace must be a number of seconds");
        }
        Ok(Duration::from_secs_f64(self.shutdown_grace))
    }

    /// The checks that need neither network nor mount point, and the options they give.
    pub fn mount_options(&self) -> anyhow::Result<MountOptions> {
        let mut opts = MountOptions {
            read_only: self.read_only,
            allow_other: self.allow_other,
            disk_cache_bytes: self.cache_size,
            block_size: self.block_size,
            max_readahead: self.max_readahead,
            part_size: self.part_size,
            pending_max: self.pending_max,
            list_only: self.list_only,
            min_free: self.min_free,
            conflict_error: self.conflict_error,
            offline_strict: self.offline_strict,
            ..MountOptions::default()
        };
        if !(self.stray_upload_hours.is_finite() && self.stray_upload_hours >= 1.0) {
            bail!("--stray-upload-hours must be at least 1 (a live upload must never be aborted)");
        }
        opts.stray_upload_age = Duration::from_secs_f64(self.stray_upload_hours * 3600.0);
        if self.part_size < 5 << 20 || self.part_size > 5 << 30 {
            bail!("--part-size must be between 5MiB and 5GiB (S3's part limits)");
        }
        if let Some(dir) = &self.cache_dir {
            opts.spool_dir = dir.join("spool");
        }
        if !(self.metadata_ttl.is_finite() && self.metadata_ttl >= 0.0) {
            bail!("--metadata-ttl must be a number of seconds");
        }
        opts.metadata_ttl = Duration::from_secs_f64(self.metadata_ttl);
        if self.block_size > 64 << 20 {
            bail!("--block-size above 64MiB makes every random read fetch too much");
        }
        if self.cache_size.is_some_and(|c| c < self.block_size * 4) {
            bail!("--cache-size must hold at least four blocks");
        }
        opts.uid = self.uid.unwrap_or(opts.uid);
        opts.gid = self.gid.unwrap_or(opts.gid);
        opts.file_mode = self.file_mode.unwrap_or(opts.file_mode);
        opts.dir_mode = self.dir_mode.unwrap_or(opts.dir_mode);
        Ok(opts)
    }
}

/// `512MiB`, `1GiB`, `4096`: a positive number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
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

/// An octal mode like `0644` (permission bits only).
pub fn parse_mode(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 0644"))
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

    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_and_man_page_are_generated() {
        for shell in ["bash", "zsh", "fish"] {
            let mut out = Vec::new();
            crate::commands::completions(shell.parse().unwrap(), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("cognifs"), "{shell}");
            assert!(text.contains("read-only"), "{shell} completes mount flags");
        }
        let mut out = Vec::new();
        crate::commands::man_page(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH cognifs"),
            "{text}"
        );
        assert!(text.contains("mount"));
    }

    #[test]
    fn mount_options_are_checked() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["cognifs", "mount"].iter().chain(args)).unwrap();
            let Command::Mount(m) = cli.command else {
                unreachable!()
            };
            m.mount_options()
        };
        let opts = parse(&[
            "--part-size",
            "16MiB",
            "--cache-dir",
            "/c",
            "--pending-max",
            "2GiB",
        ])
        .unwrap();
        assert_eq!(opts.part_size, 16 << 20);
        assert_eq!(opts.pending_max, Some(2 << 30));
        assert_eq!(opts.min_free, None);
        assert_eq!(opts.spool_dir, PathBuf::from("/c/spool"));
        assert!(parse(&["--part-size", "1MiB"]).is_err());
        assert!(parse(&["--cache-size", "2MiB"]).is_err());
    }
}
