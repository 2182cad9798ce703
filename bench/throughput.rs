//! cognifs, its peers (s3fs, rclone, mountpoint-s3) and a direct aws-sdk-s3 client on the
//! same devstack server, in the same run, at two S3 latencies (0 ms and 20 ms added per
//! request by devstack's fault knob). Prints one markdown table per latency — each figure,
//! its ratio to the direct client, and cognifs's ratio to the best peer — and writes them to
//! `bench-table.md` in the target directory, from which the README's table is made.
//!
//! Run as root (FUSE, drop_caches): `cargo bench --bench throughput`. Environment:
//! `BENCH_SIZE_MIB` (1024) the large file; `BENCH_LS` (100,1000,10000,100000) the directories
//! listed at 0 ms, `BENCH_LS_20MS` (100,1000,10000) at the second latency (`find` and `du`
//! of the largest); `BENCH_FOREIGN` (1000) the entries cognifs writes before the run for the
//! "written on another machine" rows; `BENCH_SMALL` (500) the 4 KiB files; `BENCH_RANDOM`
//! (500) the random reads; `BENCH_TTFB_FILES` (10) the 5 MiB files; `BENCH_LATENCY_MS` (20)
//! the second latency; `BENCH_RUNS` (1) runs per column, each cell their median and spread;
//! `BENCH_LIST_LIMIT_SECS` (600) the longest a listing command or fio job may take;
//! `BENCH_DIRECT_PARALLEL` (8) the direct client's ranged GETs in flight;
//! `BENCH_COGNIFS_CACHE_MIB` (size + 256) cognifs's disk cache; `BENCH_DIR` (the target
//! directory's `bench-work`) where the data goes, on a real disk (removed after the run but
//! for `logs/`, each mount process's output); `MOUNT_S3` a `mount-s3` binary (default: `mount-s3` on
//! the PATH; its column is skipped without one) and `MOUNT_S3_ARGS`
//! extra arguments for it; `BENCH_COGNIFS_WRAP` a command that runs cognifs's mounts (a
//! profiler, e.g. `heaptrack -o DIR/cognifs`; the RSS rows are then left out);
//! `BENCH_ONLY` (e.g. `cognifs`) the file systems to run;
//! `BENCH_GROUPS` (`io,fio,ls`) the groups of rows; `BENCH_PASSES` (`0,1`) the latencies
//! run (`0`: 0 ms alone, `1`: the second alone).
//! fio rows need `fio` on the PATH.
//! A peer that is missing or fails shows so in its column; the bench goes on.

mod direct;
mod ops;
mod peers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use bytes::Bytes;
use cognifs::auth::identity::{Refresher, Session, start_refresher};
use cognifs::auth::login::{Browser, LoginOptions, login};
use cognifs::auth::tokens::TokenStore;
use cognifs::store::s3_client;
use futures::StreamExt;
use peers::{CognifsSetup, Fs, Mounted, Target};

const ADMIN: (&str, &str) = ("BENCHADMIN", "bench-admin-secret");
const PROFILE: &str = "bench";
/// The direct client's multipart uploads: cognifs's defaults (`--part-size`, parts in flight).
const PART_SIZE: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the bench does, from the environment.
struct Load {
    size_mib: usize,
    /// The directories listed (their entries), per pass.
    ls: [Vec<usize>; 2],
    latencies: [Duration; 2],
    small: usize,
    random: usize,
    parallel: usize,
    cognifs_cache_mib: usize,
    /// File systems to run (`BENCH_ONLY`, comma-separated names); all when unset.
    only: Option<Vec<String>>,
    /// Runs of every column per pass (`BENCH_RUNS`); each cell is their median.
    runs: usize,
    /// Files of the time-to-first-byte and small-file rows.
    ttfb_files: usize,
    /// Entries of the directory written through cognifs before the run (`BENCH_FOREIGN`).
    foreign: usize,
    /// The longest any one listing command may take (`BENCH_LIST_LIMIT_SECS`).
    list_limit: Duration,
    /// `fio`, if installed: the fio rows.
    fio: Option<PathBuf>,
    /// The groups of rows measured (`BENCH_GROUPS`: `io`, `fio`, `ls`; all by default).
    groups: Vec<String>,
    /// The passes run (`BENCH_PASSES`: `0` the first latency, `1` the second; both by
    /// default).
    passes: Vec<usize>,
}

/// Sizes from `name` ("100,1000"), else `default`.
fn env_sizes(name: &str, default: &[usize]) -> Vec<usize> {
    let mut sizes: Vec<usize> = match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .filter(|&n| n > 0)
            .collect(),
        Err(_) => default.to_vec(),
    };
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

impl Load {
    fn runs(&self, fs: Fs) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| n == fs.name()))
    }

    fn from_env() -> Load {
        let size_mib = env_usize("BENCH_SIZE_MIB", 1024).max(1);
        Load {
            size_mib,
            ls: [
                env_sizes("BENCH_LS", &[100, 1000, 10_000, 100_000]),
                env_sizes("BENCH_LS_20MS", &[100, 1000, 10_000]),
            ],
            latencies: [
                Duration::ZERO,
                Duration::from_millis(env_usize("BENCH_LATENCY_MS", 20) as u64),
            ],
            small: env_usize("BENCH_SMALL", 500),
            random: env_usize("BENCH_RANDOM", 500),
            parallel: env_usize("BENCH_DIRECT_PARALLEL", 8).max(1),
            cognifs_cache_mib: env_usize("BENCH_COGNIFS_CACHE_MIB", size_mib + 256),
            only: std::env::var("BENCH_ONLY")
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
            runs: env_usize("BENCH_RUNS", 1).max(1),
            ttfb_files: env_usize("BENCH_TTFB_FILES", 10).max(1),
            foreign: env_usize("BENCH_FOREIGN", 1000),
            list_limit: Duration::from_secs(env_usize("BENCH_LIST_LIMIT_SECS", 600) as u64),
            fio: peers::on_path("fio"),
            groups: std::env::var("BENCH_GROUPS")
                .unwrap_or_else(|_| "io,fio,ls".into())
                .split(',')
                .map(|g| g.trim().to_owned())
                .collect(),
            passes: std::env::var("BENCH_PASSES")
                .unwrap_or_else(|_| "0,1".into())
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .filter(|&p: &usize| p < 2)
                .collect(),
        }
    }

    fn group(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g == name)
    }

    fn size(&self) -> u64 {
        (self.size_mib as u64) << 20
    }

    /// The region the native random reads fall in: the first 512 MiB (or the whole file).
    fn random_region(&self) -> u64 {
        self.size().min(512 << 20)
    }

    /// Every directory size any pass lists.
    fn all_ls(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self.ls.concat();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The fio jobs this load can run (the 4 KiB random shapes need a file of their region).
    fn fio_jobs(&self) -> Vec<FioJob> {
        let mut jobs = vec![
            FioJob::SeqRead { threads: 1 },
            FioJob::SeqRead { threads: 4 },
            FioJob::RandRead256k { threads: 1 },
            FioJob::RandRead256k { threads: 4 },
        ];
        for (ios, region_mib) in [(1000, 256), (10_000, 4096)] {
            if region_mib <= self.size_mib as u32 {
                for threads in [1, 4] {
                    jobs.push(FioJob::Rand4k {
                        ios,
                        region_mib,
                        threads,
                    });
                }
            }
        }
        jobs
    }

    /// The rows of pass `i`, in the table's order.
    fn rows(&self, i: usize) -> Vec<Row> {
        let mut rows = Vec::new();
        if self.group("io") {
            rows.extend([
                Row::Write,
                Row::ColdRead,
                Row::WarmRead,
                Row::RemountRead,
                Row::Ttfb,
                Row::SmallFiles,
                Row::Random,
            ]);
        }
        if self.group("fio") {
            rows.extend(self.fio_jobs().into_iter().map(Row::Fio));
        }
        if self.group("ls") {
            if self.foreign > 0 {
                rows.extend([Row::LsForeign, Row::LsForeignAgain]);
            }
            for &n in &self.ls[i] {
                rows.extend([Row::LsCold(n), Row::LsAgain(n), Row::LsRemount(n)]);
            }
            if let Some(&n) = self.ls[i].last() {
                rows.extend([Row::Find(n), Row::Du(n)]);
            }
        }
        if self.group("io") {
            rows.extend([Row::Small, Row::Rss(Group::Write), Row::Rss(Group::Read)]);
        }
        if self.group("fio") {
            rows.push(Row::Rss(Group::Fio));
        }
        if self.group("ls") {
            rows.extend(self.ls[i].iter().map(|&n| Row::Rss(Group::List(n))));
        }
        rows
    }
}

/// mountpoint-s3's fio jobs (its `scripts/fio/read/`), sized to the bench's file: each runs
/// on a fresh mount, the page cache dropped, and reads each byte at most once (the file is
/// far smaller than their 100 GB, so time-based runs would read it again from a cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FioJob {
    /// `seq_read`, `seq_read_4t`: 256 KiB reads in order; with 4 threads each reads its own
    /// quarter of the file.
    SeqRead { threads: u32 },
    /// `rand_read_direct`, `rand_read_4t_direct`: 256 KiB O_DIRECT reads at random, a
    /// quarter of the file's worth in all.
    RandRead256k { threads: u32 },
    /// 4 KiB O_DIRECT reads at random within the first `region_mib`, `ios` in all.
    Rand4k {
        ios: u32,
        region_mib: u32,
        threads: u32,
    },
}

impl FioJob {
    fn label(self) -> String {
        match self {
            FioJob::SeqRead { threads } => {
                format!("fio sequential read, 256 KiB, {threads} thread(s)")
            }
            FioJob::RandRead256k { threads } => {
                format!("fio random read, 256 KiB O_DIRECT, {threads} thread(s)")
            }
            FioJob::Rand4k {
                ios,
                region_mib,
                threads,
            } => format!(
                "fio {ios} random 4 KiB O_DIRECT reads over {region_mib} MiB, {threads} thread(s)"
            ),
        }
    }

    /// fio's options for a file of `size` bytes.
    fn args(self, size: u64) -> Vec<String> {
        let mut args = vec!["--name=bench".to_owned()];
        match self {
            FioJob::SeqRead { threads } => {
                let share = size / u64::from(threads);
                args.extend([
                    "--rw=read".into(),
                    "--bs=256k".into(),
                    format!("--size={share}"),
                    format!("--offset_increment={share}"),
                    format!("--numjobs={threads}"),
                ]);
            }
            FioJob::RandRead256k { threads } => {
                let ios = size / (256 << 10) / 4 / u64::from(threads);
                args.extend([
                    "--rw=randread".into(),
                    "--bs=256k".into(),
                    "--direct=1".into(),
                    format!("--size={size}"),
                    format!("--number_ios={}", ios.max(1)),
                    "--norandommap".into(),
                    format!("--numjobs={threads}"),
                ]);
            }
            FioJob::Rand4k {
                ios,
                region_mib,
                threads,
            } => args.extend([
                "--rw=randread".into(),
                "--bs=4k".into(),
                "--direct=1".into(),
                format!("--size={}", u64::from(region_mib) << 20),
                format!("--number_ios={}", (ios / threads).max(1)),
                "--norandommap".into(),
                format!("--numjobs={threads}"),
            ]),
        }
        args
    }

    fn unit(self) -> Unit {
        match self {
            FioJob::Rand4k { .. } => Unit::Iops,
            _ => Unit::MiBps,
        }
    }
}

/// A mount of each run, whose peak RSS is its own row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Group {
    /// The large file and the small files written.
    Write,
    /// The large file read cold, then warm.
    Read,
    /// A directory of this many entries listed, cold and again.
    List(usize),
    /// The fio jobs (the largest peak of them).
    Fio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Row {
    Write,
    ColdRead,
    WarmRead,
    RemountRead,
    Ttfb,
    SmallFiles,
    Random,
    Fio(FioJob),
    /// `ls -l` of the directory cognifs wrote before the run (on "another machine").
    LsForeign,
    LsForeignAgain,
    LsCold(usize),
    LsAgain(usize),
    LsRemount(usize),
    Find(usize),
    Du(usize),
    Small,
    Rss(Group),
}

#[derive(Clone, Copy)]
enum Unit {
    MiBps,
    Iops,
    Secs,
    MiB,
}

impl Row {
    fn unit(self) -> Unit {
        match self {
            Row::Write | Row::ColdRead | Row::WarmRead | Row::RemountRead | Row::SmallFiles => {
                Unit::MiBps
            }
            Row::Random => Unit::Iops,
            Row::Fio(job) => job.unit(),
            Row::Ttfb
            | Row::LsForeign
            | Row::LsForeignAgain
            | Row::LsCold(_)
            | Row::LsAgain(_)
            | Row::LsRemount(_)
            | Row::Find(_)
            | Row::Du(_)
            | Row::Small => Unit::Secs,
            Row::Rss(_) => Unit::MiB,
        }
    }

    fn label(self, load: &Load) -> String {
        let size = load.size_mib;
        match self {
            Row::Write => format!("write {size} MiB (1 MiB writes until close)"),
            Row::ColdRead => format!("cold sequential read {size} MiB"),
            Row::WarmRead => "warm re-read (same mount)".into(),
            Row::RemountRead => "re-read after a remount (page cache dropped)".into(),
            Row::Ttfb => format!(
                "time to first byte of a cold file (median of {})",
                load.ttfb_files
            ),
            Row::SmallFiles => format!(
                "small-file reads: {} × 5 MiB files, one after another, cold",
                load.ttfb_files
            ),
            Row::Random => format!(
                "{} random 4 KiB O_DIRECT reads over {} MiB",
                load.random,
                load.random_region() >> 20
            ),
            Row::Fio(job) => job.label(),
            Row::LsForeign => format!(
                "`ls -l` of {} entries cognifs wrote on another machine, cold",
                load.foreign
            ),
            Row::LsForeignAgain => "`ls -l` of them again, a new mount".into(),
            Row::LsCold(n) => format!("`ls -l` of {n} entries, cold"),
            Row::LsAgain(n) => format!("`ls -l` of {n} again at once"),
            Row::LsRemount(n) => format!("`ls -l` of {n} again, a new mount"),
            Row::Find(n) => format!("`find \\| wc -l` of {n} entries, cold"),
            Row::Du(n) => format!("`du -s` of {n} entries, cold"),
            Row::Small => format!("{} × 4 KiB files into a new dir", load.small),
            Row::Rss(Group::Write) => "peak RSS: the write mount".into(),
            Row::Rss(Group::Read) => "peak RSS: the read mount (cold + warm)".into(),
            Row::Rss(Group::List(n)) => format!("peak RSS: `ls -l` of {n} entries, twice"),
            Row::Rss(Group::Fio) => "peak RSS: the fio mounts (the largest)".into(),
        }
    }
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::MiBps if v < 10.0 => format!("{v:.1} MiB/s"),
            Unit::MiBps => format!("{v:.0} MiB/s"),
            Unit::Iops => format!("{v:.0} IOPS"),
            Unit::Secs if v < 0.01 => format!("{:.1} ms", v * 1e3),
            Unit::Secs if v < 1.0 => format!("{:.0} ms", v * 1e3),
            Unit::Secs => format!("{v:.2} s"),
            Unit::MiB => format!("{v:.0} MiB"),
        }
    }

    /// A spread "lo–hi" in this unit, the unit said once.
    fn show_spread(self, lo: f64, hi: f64) -> String {
        let (a, b) = (self.show(lo), self.show(hi));
        match (a.rsplit_once(' '), b.rsplit_once(' ')) {
            (Some((a, ua)), Some((b, ub))) if ua == ub => format!("{a}–{b} {ub}"),
            _ => format!("{a}–{b}"),
        }
    }

    /// How much better `a` is than `b`: a speed ratio, >1 when `a` is faster (or smaller).
    fn better(self, a: f64, b: f64) -> f64 {
        match self {
            Unit::MiBps | Unit::Iops => a / b,
            Unit::Secs | Unit::MiB => b / a,
        }
    }

    /// Which of two figures is better.
    fn is_better(self, a: f64, b: f64) -> bool {
        self.better(a, b) > 1.0
    }

    /// The worse and the better of a spread's ends.
    fn worst_best(self, s: &Spread) -> (f64, f64) {
        if self.is_better(s.max, s.min) {
            (s.min, s.max)
        } else {
            (s.max, s.min)
        }
    }
}

/// One run's figure in its row's unit, or why there is none.
type Cell = Result<f64, String>;

/// A row's figures over the runs: the median, and the spread (the runs' lowest and
/// highest) it stands for.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

/// The runs' figures of a row, or (every run failed it) the first failure.
type Agg = Result<Spread, String>;

fn mibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

enum Column {
    /// Not installed, not given.
    Missing(String),
    /// Did not mount at all: why.
    Failed(String),
    Ran(HashMap<Row, Agg>),
}

struct Pass {
    latency: Duration,
    rows: Vec<Row>,
    /// The direct client first, then [`Fs::ALL`] in order.
    columns: Vec<(&'static str, Column)>,
    notes: Vec<String>,
}

/// Everything the passes share.
struct Bench {
    rt: tokio::runtime::Runtime,
    running: devstack::Running,
    _refresher: Refresher,
    /// The admin key: seeding and checking what reached S3.
    admin: aws_sdk_s3::Client,
    /// The signed-in user's credentials, as cognifs has them: the direct client.
    user: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    target: Target,
    load: Load,
    /// The large file's bytes: written by every client, and the seeded object's contents.
    data: Bytes,
    offsets: Vec<u64>,
    small: Bytes,
    drop_caches: Result<(), String>,
}

/// The directory cognifs writes before the run, for the `ls -l` of another machine's files.
const FOREIGN_DIR: &str = "written-by-cognifs";
/// The seeded files of the time-to-first-byte and small-file rows.
const FILES_DIR: &str = "files-5m";
const FILE_5M: usize = 5 << 20;

impl Bench {
    fn big_key(&self) -> String {
        format!("{}big.bin", self.prefix)
    }

    fn ls_dir(files: usize) -> String {
        format!("ls-{files}")
    }

    fn file_names(&self) -> Vec<String> {
        (0..self.load.ttfb_files)
            .map(|i| format!("{FILES_DIR}/f{i:03}.bin"))
            .collect()
    }

    fn on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Stops the refresher, then devstack.
    fn finish(self) {
        let Bench {
            rt,
            running,
            _refresher: refresher,
            ..
        } = self;
        drop(refresher);
        rt.block_on(running.shutdown());
    }

    /// Before every cold measurement: the page cache emptied (when allowed).
    fn cold(&self) {
        if self.drop_caches.is_ok() {
            let _ = ops::drop_caches();
        }
    }
}

fn admin_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ADMIN.0, ADMIN.1, None, None, "bench"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// `<target dir>/`, from this bench binary's path (`<target>/release/deps/throughput-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A page-aligned offset for each random read, the same for every client.
fn random_offsets(size: u64, n: usize) -> Vec<u64> {
    let pages = (size / ops::RANDOM_SIZE as u64).max(1);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % pages) * ops::RANDOM_SIZE as u64
        })
        .collect()
}

/// devstack, a signed-in user, the seeded objects, and the mount targets.
fn setup(load: Load) -> (Bench, tempfile::TempDir) {
    let root = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-work"));
    let logs = root.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&root).unwrap();
    let work = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&root)
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let running = rt
        .block_on(devstack::start(devstack::Options {
            data_dir: Some(work.path().join("s3")),
            admin: Some((ADMIN.0.into(), ADMIN.1.into())),
            callback_port: port,
            ..Default::default()
        }))
        .expect("devstack");

    // Signed in once, in-process; the cognifs child mounts with the same tokens.
    let config = work.path().join("cognifs/config.toml");
    let state = work.path().join("cognifs/state");
    let profile =
        cognifs::demo::profile_for(&running, &config, PROFILE).expect("the devstack profile");
    let tokens = TokenStore::new(&state, PROFILE);
    let (user, password) = devstack::DEMO_USER;
    let browser = Browser::Custom(Box::new(move |url| {
        tokio::spawn(async move {
            let (status, body) = cognifs::demo::scripted_sign_in(&url, user, password)
                .await
                .expect("sign-in");
            assert_eq!(status, 200, "loopback page: {body}");
        });
    }));
    rt.block_on(login(
        &profile,
        &tokens,
        LoginOptions {
            browser,
            timeout: Duration::from_secs(30),
        },
    ))
    .expect("login");
    let refresher = rt
        .block_on(start_refresher(Session::with_store(
            profile.clone(),
            tokens,
        )))
        .expect("credentials");
    let prefix = profile.prefix_for(&refresher.identity_id);
    let user_s3 = s3_client(&profile, refresher.credentials.clone());
    let admin = admin_client(&running.base_url);

    let target = Target::new(
        work.path().to_path_buf(),
        logs,
        running.base_url.clone(),
        profile.region.clone(),
        profile.bucket.clone(),
        prefix.clone(),
        (ADMIN.0.into(), ADMIN.1.into()),
        CognifsSetup {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_cognifs")),
            config,
            state,
            profile: PROFILE.into(),
            cache_mib: load.cognifs_cache_mib,
        },
    );
    let data: Bytes = (0..load.size())
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
        .collect::<Vec<u8>>()
        .into();
    let bench = Bench {
        offsets: random_offsets(load.random_region(), load.random),
        small: Bytes::from(vec![b's'; 4096]),
        drop_caches: ops::drop_caches(),
        bucket: profile.bucket.clone(),
        rt,
        running,
        _refresher: refresher,
        admin,
        user: user_s3,
        prefix,
        target,
        load,
        data,
    };
    seed(&bench);
    (bench, work)
}

/// With the admin key: the large object every client reads, the listed directories and
/// the small files; then, through a cognifs mount, the directory "another machine" wrote.
fn seed(b: &Bench) {
    // Listed directories only for the listing rows (100,000 objects take a minute to PUT).
    let listing = b.load.group("ls");
    let counts = if listing { b.load.all_ls() } else { Vec::new() };
    eprintln!(
        "seeding a {} MiB object, directories of {counts:?} objects, {} × 5 MiB files...",
        b.load.size_mib, b.load.ttfb_files
    );
    b.on(async {
        direct::multipart_put(&b.admin, &b.bucket, &b.big_key(), &b.data, 16 << 20, 4)
            .await
            .expect("seeding the large object");
        let five = b.data.slice(..FILE_5M.min(b.data.len()));
        let mut puts: Vec<(String, Bytes)> = b
            .file_names()
            .into_iter()
            .map(|name| (format!("{}{name}", b.prefix), five.clone()))
            .collect();
        for files in counts {
            puts.extend((0..files).map(|i| {
                let key = format!("{}{}/file-{i:06}.txt", b.prefix, Bench::ls_dir(files));
                (key, Bytes::from_static(&[b'x'; 100]))
            }));
        }
        futures::stream::iter(puts)
            .map(|(key, body)| {
                b.admin
                    .put_object()
                    .bucket(&b.bucket)
                    .key(key)
                    .body(body.into())
                    .send()
            })
            .buffer_unordered(64)
            .for_each(|r| async move {
                r.expect("seeding");
            })
            .await;
    });
    if listing && b.load.foreign > 0 {
        seed_through_cognifs(b).expect("writing the directory through cognifs");
    }
}

/// `BENCH_FOREIGN` entries written through a cognifs mount whose caches are then forgotten:
/// for every column, a directory another machine's cognifs wrote. Its entries carry what
/// cognifs stores (modes, owners, times): every 10th a symlink, every 7th mode 0600.
fn seed_through_cognifs(b: &Bench) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let program = b.target.program(Fs::Cognifs).map_err(str::to_owned)?;
    let m = b.target.mount(Fs::Cognifs, &program)?;
    let dir = m.path().join(FOREIGN_DIR);
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir: {e}"))?;
    for i in 0..b.load.foreign {
        let path = dir.join(format!("e{i:06}"));
        if i % 10 == 9 {
            std::os::unix::fs::symlink(format!("e{:06}", i - 1), &path)
                .map_err(|e| format!("symlink: {e}"))?;
            continue;
        }
        std::fs::write(&path, b"written by cognifs\n").map_err(|e| format!("write: {e}"))?;
        if i % 7 == 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("chmod: {e}"))?;
        }
    }
    m.unmount()?;
    b.target.forget_cognifs_caches();
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(T, Duration), String> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// The direct client's figures for one pass, and a note on its read variants.
fn run_direct(b: &Bench, tag: &str, pass: usize) -> (HashMap<Row, Cell>, String) {
    let (s3, bucket) = (&b.user, b.bucket.as_str());
    let size = b.load.size();
    let key = format!("{}direct-{tag}/big.bin", b.prefix);
    let mut cells = HashMap::new();

    let write = timed(|| {
        b.on(direct::multipart_put(
            s3,
            bucket,
            &key,
            &b.data,
            PART_SIZE,
            PARTS_IN_FLIGHT,
        ))
    });
    cells.insert(Row::Write, write.map(|(_, d)| mibps(size, d)));
    let _ = b.on(direct::delete(&b.admin, bucket, &key));

    // Reads: the seeded object, one GET, and in order as 8 MiB ranged GETs N at a time.
    let big = b.big_key();
    let whole = || {
        let (n, d) = timed(|| b.on(direct::get_whole(s3, bucket, &big)))?;
        check_len(n, size).map(|_| mibps(size, d))
    };
    let ranged = || {
        let (n, d) = timed(|| {
            b.on(direct::get_ranged(
                s3,
                bucket,
                &big,
                size,
                PART_SIZE as u64,
                b.load.parallel,
            ))
        })?;
        check_len(n, size).map(|_| mibps(size, d))
    };
    b.cold();
    let cold_whole = whole();
    b.cold();
    let cold_ranged = ranged();
    let warm_whole = whole();
    let warm_ranged = ranged();
    let note = format!(
        "direct reads, first run: one GET {} cold, {} warm; 8 MiB ranged GETs × {} {} cold, \
         {} warm (each run counts the faster of the two)",
        show_cell(&cold_whole, Unit::MiBps),
        show_cell(&warm_whole, Unit::MiBps),
        b.load.parallel,
        show_cell(&cold_ranged, Unit::MiBps),
        show_cell(&warm_ranged, Unit::MiBps),
    );
    let cold = faster(cold_whole, cold_ranged);
    // A client with nothing on disk reads as cold after a restart.
    cells.insert(Row::RemountRead, cold.clone());
    cells.insert(Row::ColdRead, cold);
    cells.insert(Row::WarmRead, faster(warm_whole, warm_ranged));

    // The first byte of each file: a GET of it; the files whole, one GET each.
    b.cold();
    let names: Vec<String> = b
        .file_names()
        .iter()
        .map(|n| format!("{}{n}", b.prefix))
        .collect();
    let ttfb = b.on(direct::first_bytes(s3, bucket, &names));
    cells.insert(Row::Ttfb, ttfb.map(|d| d.as_secs_f64()));
    let whole_files = timed(|| b.on(direct::get_all(s3, bucket, &names)));
    cells.insert(Row::SmallFiles, whole_files.map(|(n, d)| mibps(n, d)));

    b.cold();
    let random = timed(|| b.on(direct::random_gets(s3, bucket, &big, &b.offsets, &b.data)));
    cells.insert(
        Row::Random,
        random.map(|(_, d)| b.offsets.len() as f64 / d.as_secs_f64()),
    );

    let list = |dir: &str, files: usize| {
        let list_prefix = format!("{}{dir}/", b.prefix);
        let (n, d) = timed(|| b.on(direct::list(s3, bucket, &list_prefix)))?;
        check_len(n as u64, files as u64).map(|_| d.as_secs_f64())
    };
    if b.load.foreign > 0 {
        cells.insert(Row::LsForeign, list(FOREIGN_DIR, b.load.foreign));
        cells.insert(Row::LsForeignAgain, list(FOREIGN_DIR, b.load.foreign));
    }
    for &n in &b.load.ls[pass] {
        let dir = Bench::ls_dir(n);
        b.cold();
        cells.insert(Row::LsCold(n), list(&dir, n));
        cells.insert(Row::LsAgain(n), list(&dir, n));
        cells.insert(Row::LsRemount(n), list(&dir, n));
    }
    if let Some(&n) = b.load.ls[pass].last() {
        // What a program with the API does for `find` and `du`: the same paged listing.
        let dir = Bench::ls_dir(n);
        cells.insert(Row::Find(n), list(&dir, n));
        cells.insert(Row::Du(n), list(&dir, n));
    }

    let small_prefix = format!("{}direct-{tag}/small/", b.prefix);
    let small = timed(|| {
        b.on(direct::small_puts(
            s3,
            bucket,
            &small_prefix,
            b.load.small,
            &b.small,
        ))
    });
    cells.insert(Row::Small, small.map(|(_, d)| d.as_secs_f64()));
    (cells, note)
}

fn check_len(got: u64, want: u64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{got}, not {want}"))
    }
}

fn faster(a: Cell, b: Cell) -> Cell {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(a.max(b)),
        (Ok(v), Err(_)) | (Err(_), Ok(v)) => Ok(v),
        (Err(e), Err(_)) => Err(e),
    }
}

/// One mount of `fs`, `work` done on it, then the unmount; a failed unmount becomes a note.
/// The mount's peak RSS goes to `rss` (the largest of its group).
fn with_mount(
    b: &Bench,
    fs: Fs,
    program: &Path,
    notes: &mut Vec<String>,
    rss: Option<(&mut HashMap<Row, Cell>, Group)>,
    work: impl FnOnce(&Mounted),
) -> Result<(), String> {
    let m = b.target.mount(fs, program)?;
    work(&m);
    if let (Some((cells, group)), Some(kib)) = (rss, m.peak_rss_kib()) {
        let mib = kib as f64 / 1024.0;
        // Each mount's own peak, for finding the one a group's row reports.
        eprintln!(
            "bench: {} mount of the {group:?} group peaked at {mib:.0} MiB",
            fs.name()
        );
        let peak = match cells.get(&Row::Rss(group)) {
            Some(Ok(v)) => v.max(mib),
            _ => mib,
        };
        cells.insert(Row::Rss(group), Ok(peak));
    }
    if let Err(e) = m.unmount() {
        notes.push(format!("{}: unmount: {e}", fs.name()));
    }
    Ok(())
}

/// One file system's figures for one pass, each group on mounts of its own, each cold
/// measurement after the page cache is dropped (and cognifs's disk caches forgotten, but
/// for the rows that measure what a new mount keeps). Err: the first mount failed (the
/// others are not tried).
fn run_fs(
    b: &Bench,
    fs: Fs,
    program: &Path,
    tag: &str,
    pass: usize,
    notes: &mut Vec<String>,
) -> Result<HashMap<Row, Cell>, String> {
    let mut cells = HashMap::new();
    if fs != Fs::CognifsListOnly && b.load.group("io") {
        write_and_read(b, fs, program, tag, notes, &mut cells)?;
        b.target.forget_cognifs_caches();
        first_bytes_and_random(b, fs, program, notes, &mut cells);
    }
    if fs != Fs::CognifsListOnly && b.load.group("fio") {
        fio_jobs(b, fs, program, notes, &mut cells);
    }
    if b.load.group("ls") {
        list(b, fs, program, pass, notes, &mut cells);
    }
    Ok(cells)
}

/// Fills `rows` with the mount's failure.
fn mount_failed(cells: &mut HashMap<Row, Cell>, rows: &[Row], e: &str) {
    for &r in rows {
        cells.insert(r, Err(format!("mount: {e}")));
    }
}

/// Writes, then cold and warm reads, then a read after a remount.
fn write_and_read(
    b: &Bench,
    fs: Fs,
    program: &Path,
    tag: &str,
    notes: &mut Vec<String>,
    cells: &mut HashMap<Row, Cell>,
) -> Result<(), String> {
    let rel = format!("{}-{tag}", fs.name());
    let size = b.load.size();
    let mut got = HashMap::new();

    // 1. Writes, into a directory of this file system's own.
    let mounted = with_mount(b, fs, program, notes, Some((cells, Group::Write)), |m| {
        let dir = m.path().join(&rel);
        let write = std::fs::create_dir(&dir)
            .map_err(|e| format!("mkdir: {e}"))
            .and_then(|_| ops::write_file(&dir.join("big.bin"), &b.data))
            .and_then(|d| {
                let key = format!("{}{rel}/big.bin", b.prefix);
                let got = b.on(direct::size_of(&b.admin, &b.bucket, &key))?;
                check_len(got, size).map_err(|e| format!("in S3 after close: {e}"))?;
                Ok(mibps(size, d))
            });
        got.insert(Row::Write, write);
        let small_dir = dir.join("small");
        let small = std::fs::create_dir_all(&small_dir)
            .map_err(|e| format!("mkdir: {e}"))
            .and_then(|_| ops::small_files(&small_dir, b.load.small, &b.small))
            .and_then(|d| {
                let prefix = format!("{}{rel}/small/", b.prefix);
                let n = b.on(direct::list(&b.admin, &b.bucket, &prefix))?;
                check_len(n as u64, b.load.small as u64)
                    .map_err(|e| format!("in S3 after close: {e}"))?;
                Ok(d.as_secs_f64())
            });
        got.insert(Row::Small, small);
    });
    cells.extend(got.drain());
    let _ = b.on(direct::delete(
        &b.admin,
        &b.bucket,
        &format!("{}{rel}/big.bin", b.prefix),
    ));
    mounted?;

    // 2. The seeded object read twice on a fresh mount.
    b.target.forget_cognifs_caches();
    b.cold();
    let mounted = with_mount(b, fs, program, notes, Some((cells, Group::Read)), |m| {
        let path = m.path().join("big.bin");
        got.insert(
            Row::ColdRead,
            ops::read_file(&path, size).map(|d| mibps(size, d)),
        );
        got.insert(
            Row::WarmRead,
            ops::read_file(&path, size).map(|d| mibps(size, d)),
        );
    });
    cells.extend(got.drain());
    if let Err(e) = mounted {
        mount_failed(cells, &[Row::ColdRead, Row::WarmRead], &e);
    }

    // 2b. Read again on a new mount, the page cache dropped: what a file system keeps
    // across mounts (cognifs: its disk cache, validated by the lookup's etag).
    b.cold();
    let mounted = with_mount(b, fs, program, notes, None, |m| {
        let path = m.path().join("big.bin");
        got.insert(
            Row::RemountRead,
            ops::read_file(&path, size).map(|d| mibps(size, d)),
        );
    });
    cells.extend(got.drain());
    if let Err(e) = mounted {
        mount_failed(cells, &[Row::RemountRead], &e);
    }
    Ok(())
}

/// Time to first byte, the small files and the native random reads, each on a cold mount.
fn first_bytes_and_random(
    b: &Bench,
    fs: Fs,
    program: &Path,
    notes: &mut Vec<String>,
    cells: &mut HashMap<Row, Cell>,
) {
    let mut got = HashMap::new();
    b.cold();
    let mounted = with_mount(b, fs, program, notes, None, |m| {
        let paths: Vec<PathBuf> = b.file_names().iter().map(|n| m.path().join(n)).collect();
        got.insert(Row::Ttfb, ops::first_bytes(&paths).map(|d| d.as_secs_f64()));
    });
    if let Err(e) = mounted {
        mount_failed(cells, &[Row::Ttfb], &e);
    }
    b.target.forget_cognifs_caches();
    b.cold();
    let mounted = with_mount(b, fs, program, notes, None, |m| {
        let paths: Vec<PathBuf> = b.file_names().iter().map(|n| m.path().join(n)).collect();
        got.insert(
            Row::SmallFiles,
            ops::read_files(&paths).map(|(n, d)| mibps(n, d)),
        );
    });
    if let Err(e) = mounted {
        mount_failed(cells, &[Row::SmallFiles], &e);
    }
    b.target.forget_cognifs_caches();
    b.cold();
    let mounted = with_mount(b, fs, program, notes, None, |m| {
        let random = ops::random_reads(&m.path().join("big.bin"), &b.offsets, &b.data);
        got.insert(
            Row::Random,
            random.map(|d| b.offsets.len() as f64 / d.as_secs_f64()),
        );
    });
    if let Err(e) = mounted {
        mount_failed(cells, &[Row::Random], &e);
    }
    cells.extend(got.drain());
}

/// Each fio job on a cold mount of its own.
fn fio_jobs(
    b: &Bench,
    fs: Fs,
    program: &Path,
    notes: &mut Vec<String>,
    cells: &mut HashMap<Row, Cell>,
) {
    let mut got = HashMap::new();
    let Some(fio) = &b.load.fio else {
        return;
    };
    for job in b.load.fio_jobs() {
        b.target.forget_cognifs_caches();
        b.cold();
        let mounted = with_mount(b, fs, program, notes, Some((cells, Group::Fio)), |m| {
            let path = m.path().join("big.bin");
            let result = ops::fio(fio, &path, &job.args(b.load.size()), b.load.list_limit);
            got.insert(
                Row::Fio(job),
                result.map(|r| match job.unit() {
                    Unit::Iops => r.iops,
                    _ => r.bytes_per_sec / (1 << 20) as f64,
                }),
            );
        });
        cells.extend(got.drain());
        if let Err(e) = mounted {
            mount_failed(cells, &[Row::Fio(job)], &e);
        }
    }
}

/// The listing rows: the directory cognifs wrote, then each seeded directory — `ls -l`
/// cold and again, then on a new mount — and `find` and `du` of the largest, each cold.
fn list(
    b: &Bench,
    fs: Fs,
    program: &Path,
    pass: usize,
    notes: &mut Vec<String>,
    cells: &mut HashMap<Row, Cell>,
) {
    let limit = b.load.list_limit;
    let mut got = HashMap::new();
    if b.load.foreign > 0 {
        let n = b.load.foreign;
        for row in [Row::LsForeign, Row::LsForeignAgain] {
            if row == Row::LsForeign {
                b.target.forget_cognifs_caches();
            }
            b.cold();
            let mounted = with_mount(b, fs, program, notes, None, |m| {
                let dir = m.path().join(FOREIGN_DIR);
                got.insert(row, ops::ls_long(&dir, n, limit).map(|d| d.as_secs_f64()));
            });
            cells.extend(got.drain());
            if let Err(e) = mounted {
                mount_failed(cells, &[row], &e);
            }
        }
    }
    let sizes = &b.load.ls[pass];
    for &n in sizes {
        b.cold();
        let rss = Some((&mut *cells, Group::List(n)));
        let mounted = with_mount(b, fs, program, notes, rss, |m| {
            let dir = m.path().join(Bench::ls_dir(n));
            got.insert(
                Row::LsCold(n),
                ops::ls_long(&dir, n, limit).map(|d| d.as_secs_f64()),
            );
            got.insert(
                Row::LsAgain(n),
                ops::ls_long(&dir, n, limit).map(|d| d.as_secs_f64()),
            );
        });
        cells.extend(got.drain());
        if let Err(e) = mounted {
            mount_failed(cells, &[Row::LsCold(n), Row::LsAgain(n)], &e);
        }
        b.cold();
        let mounted = with_mount(b, fs, program, notes, None, |m| {
            let dir = m.path().join(Bench::ls_dir(n));
            got.insert(
                Row::LsRemount(n),
                ops::ls_long(&dir, n, limit).map(|d| d.as_secs_f64()),
            );
        });
        cells.extend(got.drain());
        if let Err(e) = mounted {
            mount_failed(cells, &[Row::LsRemount(n)], &e);
        }
    }
    let Some(&n) = sizes.last() else {
        return;
    };
    for row in [Row::Find(n), Row::Du(n)] {
        b.target.forget_cognifs_caches();
        b.cold();
        let mounted = with_mount(b, fs, program, notes, None, |m| {
            let dir = m.path().join(Bench::ls_dir(n));
            let d = match row {
                Row::Find(_) => ops::find_count(&dir, n, limit),
                _ => ops::du(&dir, limit),
            };
            got.insert(row, d.map(|d| d.as_secs_f64()));
        });
        cells.extend(got.drain());
        if let Err(e) = mounted {
            mount_failed(cells, &[row], &e);
        }
    }
}

fn run_pass(b: &Bench, i: usize) -> Pass {
    let latency = b.load.latencies[i];
    let rows = b.load.rows(i);
    let tag = format!("{}ms", latency.as_millis());
    b.running.faults().set_latency(latency);
    let mut notes = Vec::new();
    // Each run writes under names of its own.
    let run_tag = |run: usize| {
        if run == 0 {
            tag.clone()
        } else {
            format!("{tag}-run{run}")
        }
    };
    eprintln!("[{tag}] direct aws-sdk-s3...");
    let mut runs = Vec::new();
    for run in 0..b.load.runs {
        let (cells, note) = run_direct(b, &run_tag(run), i);
        progress(&tag, "direct", &rows, &cells);
        if run == 0 {
            notes.push(note);
        }
        runs.push(cells);
    }
    let mut columns = vec![("direct", Column::Ran(spread_cells(&rows, runs)))];
    for fs in Fs::ALL {
        let column = match b.target.program(fs) {
            _ if !b.load.runs(fs) => Column::Missing("skipped (BENCH_ONLY)".into()),
            Err(why) => Column::Missing(why.into()),
            Ok(program) => {
                eprintln!("[{tag}] {}...", fs.name());
                let mut runs = Vec::new();
                let mut failed = None;
                for run in 0..b.load.runs {
                    b.target.forget_cognifs_caches();
                    match run_fs(b, fs, &program, &run_tag(run), i, &mut notes) {
                        Ok(cells) => {
                            progress(&tag, fs.name(), &rows, &cells);
                            runs.push(cells);
                        }
                        Err(e) => {
                            eprintln!("[{tag}] {}: mount failed: {e}", fs.name());
                            notes.push(format!(
                                "{} did not mount: {e} (its output: {})",
                                fs.name(),
                                b.target.logs.display()
                            ));
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Column::Failed(e),
                    None => Column::Ran(spread_cells(&rows, runs)),
                }
            }
        };
        columns.push((fs.name(), column));
    }
    if b.load.fio.is_none() {
        notes.push("fio rows: fio is not installed (`apt-get install fio`)".into());
    }
    Pass {
        latency,
        rows,
        columns,
        notes,
    }
}

/// Each row's median and spread over the runs (of its figures: a run that failed a row
/// counts only if every run did, and then its error shows).
fn spread_cells(rows: &[Row], runs: Vec<HashMap<Row, Cell>>) -> HashMap<Row, Agg> {
    let mut out = HashMap::new();
    for &row in rows {
        let mut figures: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get(&row)?.as_ref().ok().copied())
            .collect();
        figures.sort_by(f64::total_cmp);
        let n = figures.len();
        let cell = match n {
            0 => match runs.iter().find_map(|r| r.get(&row)) {
                Some(Err(e)) => Err(e.clone()),
                _ => continue,
            },
            _ => Ok(Spread {
                median: if n % 2 == 1 {
                    figures[n / 2]
                } else {
                    (figures[n / 2 - 1] + figures[n / 2]) / 2.0
                },
                min: figures[0],
                max: figures[n - 1],
                runs: n,
            }),
        };
        out.insert(row, cell);
    }
    out
}

fn progress(tag: &str, name: &str, rows: &[Row], cells: &HashMap<Row, Cell>) {
    // Failures whole here (the table cuts them short).
    let line: Vec<String> = rows
        .iter()
        .filter_map(|r| match cells.get(r)? {
            Ok(v) => Some(r.unit().show(*v)),
            Err(e) => Some(format!("failed: {e}")),
        })
        .collect();
    eprintln!("[{tag}] {name}: {}", line.join(" | "));
}

/// A figure, or its failure cut short for a table cell.
fn show_cell(cell: &Cell, unit: Unit) -> String {
    match cell {
        Ok(v) => unit.show(*v),
        Err(e) => {
            let e: String = e.replace(['|', '\n'], " ").chars().take(90).collect();
            format!("failed: {e}")
        }
    }
}

/// A median with its spread when there was more than one run: "410 MiB/s (380–430)".
fn show_agg(agg: &Agg, unit: Unit) -> String {
    match agg {
        Ok(s) if s.runs > 1 => format!(
            "{} [{}]",
            unit.show(s.median),
            unit.show_spread(s.min, s.max)
        ),
        Ok(s) => unit.show(s.median),
        Err(e) => show_cell(&Err(e.clone()), unit),
    }
}

impl Pass {
    fn cell(&self, name: &str, row: Row) -> Option<&Agg> {
        match &self.columns.iter().find(|(n, _)| *n == name)?.1 {
            Column::Ran(cells) => cells.get(&row),
            Column::Missing(_) | Column::Failed(_) => None,
        }
    }

    /// cognifs over the best peer that has a figure: "1.23× (s3fs)", and whether the lead
    /// (or the gap) holds beyond the runs' spread: "clear" when cognifs's worst run beats
    /// the peer's best (or its best loses to the peer's worst), "within spread" otherwise.
    fn vs_best_peer(&self, row: Row) -> String {
        let unit = row.unit();
        let Some(Ok(cognifs)) = self.cell(Fs::Cognifs.name(), row) else {
            return "—".into();
        };
        let best = Fs::PEERS
            .iter()
            .filter_map(|fs| match self.cell(fs.name(), row) {
                Some(Ok(v)) => Some((fs.name(), *v)),
                _ => None,
            })
            .reduce(|a, b| {
                if unit.is_better(b.1.median, a.1.median) {
                    b
                } else {
                    a
                }
            });
        let Some((name, peer)) = best else {
            return "—".into();
        };
        let ratio = unit.better(cognifs.median, peer.median);
        let (our_worst, our_best) = unit.worst_best(cognifs);
        let (their_worst, their_best) = unit.worst_best(&peer);
        let clear = if ratio >= 1.0 {
            unit.is_better(our_worst, their_best)
        } else {
            unit.is_better(their_worst, our_best)
        };
        let spread = if cognifs.runs < 2 || peer.runs < 2 {
            ""
        } else if clear {
            ", clear"
        } else {
            ", within spread"
        };
        format!("{ratio:.2}× ({name}{spread})")
    }

    fn markdown(&self, load: &Load) -> String {
        let mut out = format!(
            "### {} ms added to every S3 request\n\n| operation |",
            self.latency.as_millis()
        );
        for (name, _) in &self.columns {
            out.push_str(&format!(" {name} |"));
        }
        out.push_str(" cognifs vs best peer |\n|---|");
        out.push_str(&"---|".repeat(self.columns.len() + 1));
        out.push('\n');
        for &row in &self.rows {
            let unit = row.unit();
            let direct = match self.cell("direct", row) {
                Some(Ok(v)) => Some(v.median),
                _ => None,
            };
            out.push_str(&format!("| {} |", row.label(load)));
            for (name, column) in &self.columns {
                let text = match column {
                    Column::Missing(why) => why.clone(),
                    Column::Failed(e) if row == self.rows[0] => {
                        show_cell(&Err(format!("mount: {e}")), unit)
                    }
                    Column::Failed(_) => "″".into(),
                    Column::Ran(cells) => match cells.get(&row) {
                        None => "—".into(),
                        Some(Ok(v)) if *name != "direct" && direct.is_some() => {
                            let ratio = unit.better(v.median, direct.unwrap());
                            format!("{} ({ratio:.2}×)", show_agg(&Ok(*v), unit))
                        }
                        Some(agg) => show_agg(agg, unit),
                    },
                };
                out.push_str(&format!(" {text} |"));
            }
            out.push_str(&format!(" {} |\n", self.vs_best_peer(row)));
        }
        out.push('\n');
        if let Some(line) = self.list_only_vs_mount_s3() {
            out.push_str(&format!("- {line}\n"));
        }
        if let Some(line) = self.memory_per_entry() {
            out.push_str(&format!("- {line}\n"));
        }
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }

    /// The `ls -l` rows of `cognifs --list-only` over mountpoint-s3's (>1: cognifs faster):
    /// the comparison of two file systems that both show listings alone.
    fn list_only_vs_mount_s3(&self) -> Option<String> {
        let ratios: Vec<String> = self
            .rows
            .iter()
            .filter(|r| matches!(r, Row::LsCold(_) | Row::LsAgain(_) | Row::LsRemount(_)))
            .filter_map(|&row| {
                let ours = self.cell(Fs::CognifsListOnly.name(), row)?.as_ref().ok()?;
                let theirs = self.cell(Fs::MountS3.name(), row)?.as_ref().ok()?;
                let what = match row {
                    Row::LsCold(n) => format!("{n} cold"),
                    Row::LsAgain(n) => format!("{n} again"),
                    Row::LsRemount(n) => format!("{n} new mount"),
                    _ => unreachable!("filtered"),
                };
                Some(format!(
                    "{what} {:.2}×",
                    row.unit().better(ours.median, theirs.median)
                ))
            })
            .collect();
        (!ratios.is_empty()).then(|| {
            format!(
                "`ls -l`, cognifs --list-only over mountpoint-s3 (>1: cognifs faster): {}",
                ratios.join(", ")
            )
        })
    }

    /// Each column's memory per listed entry: the peak RSS of the largest directory's
    /// `ls -l` mount over the smallest's, per entry more.
    fn memory_per_entry(&self) -> Option<String> {
        let sizes: Vec<usize> = self
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::Rss(Group::List(n)) => Some(*n),
                _ => None,
            })
            .collect();
        let (&small, &large) = (sizes.first()?, sizes.last()?);
        if large <= small {
            return None;
        }
        let per: Vec<String> = self
            .columns
            .iter()
            .filter_map(|(name, _)| {
                let lo = self
                    .cell(name, Row::Rss(Group::List(small)))?
                    .as_ref()
                    .ok()?;
                let hi = self
                    .cell(name, Row::Rss(Group::List(large)))?
                    .as_ref()
                    .ok()?;
                let bytes = (hi.median - lo.median) * (1 << 20) as f64 / (large - small) as f64;
                Some(format!("{name} {bytes:.0} B"))
            })
            .collect();
        (!per.is_empty()).then(|| {
            format!(
                "memory per listed entry (peak RSS of the {large}-entry `ls -l` mount over the \
                 {small}-entry one): {}",
                per.join(", ")
            )
        })
    }

    /// Whether cognifs or the direct client failed somewhere (peers may).
    fn own_failures(&self) -> usize {
        ["direct", Fs::Cognifs.name()]
            .iter()
            .flat_map(|name| self.rows.iter().map(|&r| self.cell(name, r)))
            .filter(|c| matches!(c, Some(Err(_))))
            .count()
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ram_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpus} CPUs (nproc), {:.1} GiB RAM, Linux {}; load average at the start {}",
        ram_kib as f64 / (1 << 20) as f64,
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// What was measured and how, above the tables.
fn preamble(b: &Bench) -> String {
    let load = &b.load;
    let [l0, l1] = load.latencies.map(|l| l.as_millis());
    let mut out =
        String::from("## cognifs and its peers on devstack (`cargo bench --bench throughput`)\n\n");
    out.push_str(&format!(
        "- load: one {} MiB file; `ls -l` of directories of {:?} objects at {l0} ms, {:?} at \
         {l1} ms (BENCH_LS, BENCH_LS_20MS), `find` and `du` of the largest; {} entries \
         cognifs wrote (BENCH_FOREIGN); {} × 4 KiB files; {} random 4 KiB reads; {} × 5 MiB \
         files\n",
        load.size_mib,
        load.ls[0],
        load.ls[1],
        load.foreign,
        load.small,
        load.random,
        load.ttfb_files
    ));
    out.push_str(&format!(
        "- latency: added by devstack to every S3 request (`Faults::set_latency`); both \
         passes in one run, on loopback\n- runs: {}\n- machine: {}\n",
        match load.runs {
            1 => "one of each column per pass (BENCH_RUNS)".to_owned(),
            n => format!(
                "{n} of each column per pass, one after another; each cell is their median, \
                 [lowest–highest] of the runs beside it"
            ),
        },
        machine()
    ));
    out.push_str(&format!(
        "- cold: {}, a fresh mount, and cognifs's disk caches (blocks, listings, metadata) \
         emptied, but for the rows that measure what a new mount keeps (\"a remount\", \"a new \
         mount\"). Each file system runs as a child process\n",
        match &b.drop_caches {
            Ok(()) => "page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`)".to_owned(),
            Err(e) => format!("page cache NOT dropped ({e})"),
        }
    ));
    for fs in Fs::ALL {
        out.push_str(&format!("- {}: {}\n", fs.name(), b.target.describe(fs)));
    }
    out.push_str(&format!(
        "- fio: {} — mountpoint-s3's jobs (`scripts/fio/read/`) on the large file, each on a \
         cold mount, sized to read each byte at most once: sequential 256 KiB reads (4 \
         threads: a quarter of the file each), random 256 KiB O_DIRECT reads (a quarter of \
         the file's worth), and 4 KiB O_DIRECT random reads over a region (the issue's \
         shapes; a region larger than the file is left out)\n",
        match &load.fio {
            Some(p) => peers::version_line(p, &["--version"]),
            None => "not installed".into(),
        }
    ));
    out.push_str(&format!(
        "- direct: aws-sdk-s3 with the user's credentials, upload bodies unsigned with their \
         CRC32 (as cognifs and mountpoint-s3 send them). write: multipart upload, \
         {} MiB parts × {PARTS_IN_FLIGHT} in flight (cognifs's defaults); reads: the faster \
         of one GET and in-order 8 MiB ranged GETs × {} in flight (warm: the same again); \
         first byte: a 1-byte ranged GET; random: 4 KiB ranged GETs one by one; ls, find, \
         du: paged ListObjectsV2; small files: PutObjects one by one\n",
        PART_SIZE >> 20,
        load.parallel
    ));
    out.push_str(
        "- figures: writes until the last close returned (each object then checked in S3); \
         reads through 1 MiB read calls; first byte: open + a 1-byte read of each file; \
         random reads with O_DIRECT, one at a time, at the same offsets for every client \
         (O_DIRECT bypasses only the kernel's page cache: a file system's own cache serves \
         reads near earlier ones); listings: the command's whole run, cut at \
         BENCH_LIST_LIMIT_SECS; RSS = VmHWM of the mount process at the end of its group\n\
         - ratios: `(n×)` is the speed relative to the direct client (>1 = faster); \
         \"cognifs vs best peer\" is cognifs's median over the best peer's (RSS: the smallest \
         peer RSS over cognifs's), so >1 means cognifs does better; \"clear\": cognifs's worst \
         run is better than the peer's best (or, behind, its best worse than the peer's \
         worst); \"within spread\": the runs overlap\n\n",
    );
    out
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (bench, work) = setup(Load::from_env());
    let preamble = preamble(&bench);
    eprintln!("{preamble}");
    let passes: Vec<Pass> = bench
        .load
        .passes
        .iter()
        .map(|&i| run_pass(&bench, i))
        .collect();

    let mut report = preamble;
    for pass in &passes {
        report.push_str(&pass.markdown(&bench.load));
        report.push('\n');
    }
    println!("\n{report}");
    let out = target_dir().join("bench-table.md");
    match std::fs::write(&out, &report) {
        Ok(()) => eprintln!("tables written to {}", out.display()),
        Err(e) => eprintln!("could not write {}: {e}", out.display()),
    }
    let failures: usize = passes.iter().map(Pass::own_failures).sum();
    bench.finish();
    drop(work);
    if failures > 0 {
        eprintln!("{failures} figure(s) of cognifs or the direct client failed");
        std::process::exit(1);
    }
}
