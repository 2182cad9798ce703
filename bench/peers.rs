//! The FUSE file systems the bench mounts on the same devstack prefix: cognifs (its own
//! binary, `cognifs mount --foreground`), s3fs, rclone and mountpoint-s3, each a child
//! process, so that each one's peak RSS is its own. A [`Mounted`] is unmounted and its
//! process stopped on drop, whatever happened.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fs {
    Cognifs,
    /// cognifs with `--list-only`, for the `ls -l` rows (and random reads) alone: the mode
    /// to set against mountpoint-s3, which never HEADs either.
    CognifsListOnly,
    S3fs,
    Rclone,
    MountS3,
}

impl Fs {
    pub const ALL: [Fs; 5] = [
        Fs::Cognifs,
        Fs::CognifsListOnly,
        Fs::S3fs,
        Fs::Rclone,
        Fs::MountS3,
    ];
    pub const PEERS: [Fs; 3] = [Fs::S3fs, Fs::Rclone, Fs::MountS3];

    pub fn name(self) -> &'static str {
        match self {
            Fs::Cognifs => "cognifs",
            Fs::CognifsListOnly => "cognifs --list-only",
            Fs::S3fs => "s3fs",
            Fs::Rclone => "rclone",
            Fs::MountS3 => "mountpoint-s3",
        }
    }
}

/// How the cognifs child finds its profile and the tokens the bench signed in with.
pub struct CognifsSetup {
    pub exe: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    pub profile: String,
    pub cache_mib: usize,
}

/// Where every mount points: one devstack, one prefix.
pub struct Target {
    /// Scratch space on the real disk: mount points, the peers' temp files.
    pub work: PathBuf,
    /// Each mount process's output, kept after the run.
    pub logs: PathBuf,
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// `{identity-id}/`
    pub prefix: String,
    pub cognifs: CognifsSetup,
    /// `$MOUNT_S3` (else `mount-s3` on the `PATH`), and extra arguments from
    /// `$MOUNT_S3_ARGS`.
    pub mount_s3: Option<PathBuf>,
    pub mount_s3_args: Vec<String>,
    /// `$BENCH_COGNIFS_WRAP`: a command that runs cognifs's mounts (a profiler: `heaptrack
    /// -o DIR/cognifs`, `valgrind --tool=massif`); empty: cognifs runs itself.
    pub cognifs_wrap: Vec<String>,
    s3fs_passwd: PathBuf,
    rclone_conf: PathBuf,
    admin: (String, String),
}

static MOUNTS: AtomicUsize = AtomicUsize::new(0);

/// `program` on `$PATH`, if there.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// The first line `program ARGS` prints, for the record.
pub fn version_line(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).expect("writing a secrets file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
}

impl Target {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        work: PathBuf,
        logs: PathBuf,
        endpoint: String,
        region: String,
        bucket: String,
        prefix: String,
        admin: (String, String),
        cognifs: CognifsSetup,
    ) -> Target {
        let secrets = work.join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
        let s3fs_passwd = secrets.join("s3fs-passwd");
        write_secret(&s3fs_passwd, &format!("{}:{}\n", admin.0, admin.1));
        let rclone_conf = secrets.join("rclone.conf");
        write_secret(
            &rclone_conf,
            &format!(
                "[bench]\ntype = s3\nprovider = Other\naccess_key_id = {}\n\
                 secret_access_key = {}\nendpoint = {endpoint}\nregion = {region}\n\
                 no_check_bucket = true\n",
                admin.0, admin.1
            ),
        );
        // `$MOUNT_S3`, else `mount-s3` on the PATH (installed by the person running the bench:
        // the project builds no peer).
        let mount_s3 = std::env::var_os("MOUNT_S3")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH")?)
                    .map(|dir| dir.join("mount-s3"))
                    .find(|p| p.is_file())
            });
        let mount_s3_args = env_words("MOUNT_S3_ARGS");
        let cognifs_wrap = env_words("BENCH_COGNIFS_WRAP");
        Target {
            work,
            logs,
            endpoint,
            region,
            bucket,
            prefix,
            cognifs,
            mount_s3,
            mount_s3_args,
            cognifs_wrap,
            s3fs_passwd,
            rclone_conf,
            admin,
        }
    }

    /// Empties the caches cognifs keeps across mounts (its metadata of objects seen), so
    /// that a run starts as cold as the first.
    pub fn forget_cognifs_caches(&self) {
        for dir in [Self::COGNIFS_CACHE, Self::COGNIFS_LIST_ONLY_CACHE] {
            let _ = std::fs::remove_dir_all(self.work.join(dir));
        }
    }

    const COGNIFS_CACHE: &str = "cognifs-cache";
    const COGNIFS_LIST_ONLY_CACHE: &str = "cognifs-list-only-cache";

    /// The program that mounts `fs`, or why there is none ("not installed", "not given").
    pub fn program(&self, fs: Fs) -> Result<PathBuf, &'static str> {
        match fs {
            Fs::Cognifs | Fs::CognifsListOnly => Ok(self.cognifs.exe.clone()),
            Fs::S3fs => on_path("s3fs").ok_or("not installed"),
            Fs::Rclone => on_path("rclone").ok_or("not installed"),
            Fs::MountS3 => match &self.mount_s3 {
                None => Err("not given"),
                Some(p) if p.is_file() => Ok(p.clone()),
                Some(_) => Err("not installed"),
            },
        }
    }

    /// One line: version and the options the bench mounts with.
    pub fn describe(&self, fs: Fs) -> String {
        let program = match self.program(fs) {
            Ok(p) => p,
            Err(why) => {
                return match fs {
                    Fs::MountS3 if why == "not given" => {
                        "not found (install mount-s3 on the PATH, or set MOUNT_S3=/path/to/mount-s3)"
                            .into()
                    }
                    _ => why.into(),
                };
            }
        };
        match fs {
            Fs::Cognifs => {
                format!(
                    "`cognifs mount --foreground --cache-size {}MiB --cache-dir WORK` (this tree's \
                 release binary, a child process; otherwise defaults: 1 MiB blocks, 64 MiB \
                 readahead, 8 MiB parts × 4 in flight, 5 s metadata TTL)",
                    self.cognifs.cache_mib
                ) + &if self.cognifs_wrap.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; run by `{}` (BENCH_COGNIFS_WRAP: its RSS rows are left out, the \
                     process measured would be the wrapper)",
                        self.cognifs_wrap.join(" ")
                    )
                }
            }
            Fs::CognifsListOnly => "the same with `--list-only` (attributes from listings \
                 alone, no HEADs), its own cache dir; only the `ls -l` and random-read mounts"
                .into(),
            Fs::S3fs => format!(
                "{} — `-o url=…,endpoint={},use_path_request_style,passwd_file=…,tmpdir=WORK` \
                 (tests/support/s3fs.rs's set without use_xattr and stat_cache_expire=1; \
                 otherwise defaults: no use_cache, 10 MB parts × 5, ListObjects v1)",
                version_line(&program, &["--version"]),
                self.region
            ),
            Fs::Rclone => format!(
                "{} — `rclone mount bench:BUCKET/PREFIX --vfs-cache-mode off` (S3 remote: \
                 provider Other, path style, admin key; otherwise defaults: 5 MiB chunks × 4)",
                version_line(&program, &["version"])
            ),
            Fs::MountS3 => format!(
                "{} — `--prefix --endpoint-url --force-path-style --allow-delete \
                 --allow-overwrite{}{}` (admin key in AWS_ACCESS_KEY_ID)",
                version_line(&program, &["--version"]),
                if self.mount_s3_args.is_empty() {
                    ""
                } else {
                    " "
                },
                self.mount_s3_args.join(" ")
            ),
        }
    }

    /// Whether `fs`'s mounts run under `BENCH_COGNIFS_WRAP`.
    fn wrapped(&self, fs: Fs) -> bool {
        matches!(fs, Fs::Cognifs | Fs::CognifsListOnly) && !self.cognifs_wrap.is_empty()
    }

    fn command(&self, fs: Fs, program: &Path, dir: &Path) -> Command {
        let mut cmd = if self.wrapped(fs) {
            let mut cmd = Command::new(&self.cognifs_wrap[0]);
            cmd.args(&self.cognifs_wrap[1..]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        // The machine may name a CA bundle for HTTPS; devstack is plain HTTP, and rclone
        // refuses to start with one set ("LoadCustomCABundleError").
        cmd.env_remove("AWS_CA_BUNDLE");
        match fs {
            Fs::Cognifs | Fs::CognifsListOnly => {
                let c = &self.cognifs;
                let list_only = fs == Fs::CognifsListOnly;
                cmd.arg("mount")
                    .arg("--foreground")
                    .arg(dir)
                    .arg("--cache-size")
                    .arg(format!("{}MiB", c.cache_mib))
                    .arg("--cache-dir")
                    .arg(self.work.join(if list_only {
                        Self::COGNIFS_LIST_ONLY_CACHE
                    } else {
                        Self::COGNIFS_CACHE
                    }))
                    .args(list_only.then_some("--list-only"))
                    .env("COGNIFS_CONFIG", &c.config)
                    .env("COGNIFS_STATE_DIR", &c.state)
                    .env("COGNIFS_PROFILE", &c.profile)
                    .env_remove("NOTIFY_SOCKET");
            }
            Fs::S3fs => {
                let tmp = self.work.join("s3fs-tmp");
                std::fs::create_dir_all(&tmp).unwrap();
                cmd.arg(format!(
                    "{}:/{}",
                    self.bucket,
                    self.prefix.trim_end_matches('/')
                ))
                .arg(dir)
                .arg("-f")
                .arg("-o")
                .arg(format!(
                    "passwd_file={},url={},endpoint={},use_path_request_style,tmpdir={}",
                    self.s3fs_passwd.display(),
                    self.endpoint,
                    self.region,
                    tmp.display()
                ));
            }
            Fs::Rclone => {
                cmd.arg("--config")
                    .arg(&self.rclone_conf)
                    .arg("mount")
                    .arg(format!("bench:{}/{}", self.bucket, self.prefix))
                    .arg(dir)
                    .args(["--vfs-cache-mode", "off"])
                    .arg("--cache-dir")
                    .arg(self.work.join("rclone-cache"));
            }
            Fs::MountS3 => {
                cmd.arg(&self.bucket)
                    .arg(dir)
                    .args(["--prefix", &self.prefix])
                    .args(["--endpoint-url", &self.endpoint])
                    .args(["--region", &self.region])
                    .args([
                        "--force-path-style",
                        "--foreground",
                        "--allow-delete",
                        "--allow-overwrite",
                    ])
                    .args(&self.mount_s3_args)
                    .env("AWS_ACCESS_KEY_ID", &self.admin.0)
                    .env("AWS_SECRET_ACCESS_KEY", &self.admin.1)
                    .env("AWS_EC2_METADATA_DISABLED", "true")
                    .env_remove("AWS_SESSION_TOKEN")
                    .env_remove("AWS_PROFILE");
            }
        }
        cmd
    }

    /// Mounts the prefix with `fs` on a fresh directory under the work dir; returns once the
    /// kernel shows the mount. The error is short: what the process said last (its whole
    /// output is in the logs directory).
    pub fn mount(&self, fs: Fs, program: &Path) -> Result<Mounted, String> {
        let n = MOUNTS.fetch_add(1, Ordering::Relaxed);
        let dir = self.work.join(format!("mnt-{}-{n}", fs.name()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        std::fs::create_dir_all(&self.logs).unwrap();
        let log = self.logs.join(format!("{}-{n}.log", fs.name()));
        let out = std::fs::File::create(&log).unwrap();
        let child = self
            .command(fs, program, &dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let mut mounted = Mounted {
            path: dir,
            child: Some(child),
            log,
            wrapped: self.wrapped(fs),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cognifs::mounts::is_mounted(&mounted.path) {
            let child = mounted.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                mounted.child = None;
                return Err(format!("exited ({status}): {}", mounted.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("not mounted within 30 s: {}", mounted.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(mounted)
    }
}

/// A mount and the process serving it.
pub struct Mounted {
    path: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// Run by a wrapper: the child is the wrapper, whose RSS is not the mount's.
    wrapped: bool,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Peak resident set of the mount process so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        if self.wrapped {
            return None;
        }
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// The last lines the process logged, on one line, short.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(2)..].join(" / ");
        let tail: String = tail.chars().take(300).collect();
        if tail.is_empty() {
            "no output".into()
        } else {
            tail
        }
    }

    /// `fusermount3 -u` (retried while busy), then waits for the process to exit: every
    /// file system here finishes its uploads before it does.
    pub fn unmount(mut self) -> Result<(), String> {
        let mut result = Err(String::new());
        for _ in 0..50 {
            result = fusermount_u(&self.path);
            if result.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        result?;
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("did not exit within 120 s of the unmount".into());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.path);
        Ok(())
    }
}

fn fusermount_u(path: &Path) -> Result<(), String> {
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("fusermount3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fusermount3 -u: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if cognifs::mounts::is_mounted(&self.path) && fusermount_u(&self.path).is_err() {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The words of environment variable `name` (none when unset).
fn env_words(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
