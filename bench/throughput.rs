//! cognifs, its peers (s3fs, rclone, mountpoint-s3) and a direct aws-sdk-s3 client on the
//! same devstack server, in the same run, at two S3 latencies (0 ms and 20 ms added per
//! request by devstack's fault knob). Prints one markdown table per latency — each figure,
//! its ratio to the direct client, and cognifs's ratio to the best peer — and writes them to
//! `bench-table.md` in the target directory, from which the README's table is made.
//!
//! Run as root (FUSE, drop_caches): `cargo bench --bench throughput`. Environment:
//! `BENCH_SIZE_MIB` (512) the large file; `BENCH_FILES` (5000) the directory listed at 0 ms,
//! `BENCH_FILES_20MS` (BENCH_FILES, at most 2000) at the second latency; `BENCH_SMALL` (500)
//! the 4 KiB files; `BENCH_RANDOM` (500) the random reads; `BENCH_LATENCY_MS` (20) the second
//! latency; `BENCH_DIRECT_PARALLEL` (8) the direct client's ranged GETs in flight;
//! `BENCH_COGNIFS_CACHE_MIB` (size + 64) cognifs's block cache; `BENCH_DIR` (the target
//! directory's `bench-work`) where the data goes, on a real disk (removed after the run but
//! for `logs/`, each mount process's output); `MOUNT_S3` a `mount-s3`
//! binary (its column is skipped without it) and `MOUNT_S3_ARGS` extra arguments for it;
//! `BENCH_ONLY` (e.g. `cognifs`) the file systems to run, for a quicker look at one.
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
    /// Entries of the directory listed, per pass.
    files: [usize; 2],
    latencies: [Duration; 2],
    small: usize,
    random: usize,
    parallel: usize,
    cognifs_cache_mib: usize,
    /// File systems to run (`BENCH_ONLY`, comma-separated names); all when unset.
    only: Option<Vec<String>>,
    /// Runs of every column per pass (`BENCH_RUNS`); each cell is their median.
    runs: usize,
}

impl Load {
    fn runs(&self, fs: Fs) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| n == fs.name()))
    }

    fn from_env() -> Load {
        let size_mib = env_usize("BENCH_SIZE_MIB", 512).max(1);
        let files = env_usize("BENCH_FILES", 5000);
        Load {
            size_mib,
            files: [files, env_usize("BENCH_FILES_20MS", files.min(2000))],
            latencies: [
                Duration::ZERO,
                Duration::from_millis(env_usize("BENCH_LATENCY_MS", 20) as u64),
            ],
            small: env_usize("BENCH_SMALL", 500),
            random: env_usize("BENCH_RANDOM", 500),
            parallel: env_usize("BENCH_DIRECT_PARALLEL", 8).max(1),
            cognifs_cache_mib: env_usize("BENCH_COGNIFS_CACHE_MIB", size_mib + 64),
            only: std::env::var("BENCH_ONLY")
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
            runs: env_usize("BENCH_RUNS", 1).max(1),
        }
    }

    fn size(&self) -> u64 {
        (self.size_mib as u64) << 20
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Row {
    Write,
    ColdRead,
    WarmRead,
    Random,
    LsCold,
    LsWarm,
    LsRemount,
    Small,
    RemountRead,
    Rss,
}

#[derive(Clone, Copy)]
enum Unit {
    MiBps,
    Iops,
    Secs,
    MiB,
}

impl Row {
    const ALL: [Row; 10] = [
        Row::Write,
        Row::ColdRead,
        Row::WarmRead,
        Row::RemountRead,
        Row::Random,
        Row::LsCold,
        Row::LsWarm,
        Row::LsRemount,
        Row::Small,
        Row::Rss,
    ];

    fn unit(self) -> Unit {
        match self {
            Row::Write | Row::ColdRead | Row::WarmRead | Row::RemountRead => Unit::MiBps,
            Row::Random => Unit::Iops,
            Row::LsCold | Row::LsWarm | Row::LsRemount | Row::Small => Unit::Secs,
            Row::Rss => Unit::MiB,
        }
    }

    fn label(self, load: &Load, files: usize) -> String {
        let size = load.size_mib;
        match self {
            Row::Write => format!("write {size} MiB (1 MiB writes until close)"),
            Row::ColdRead => format!("cold sequential read {size} MiB"),
            Row::WarmRead => "warm re-read (same mount)".into(),
            Row::RemountRead => "re-read after a remount (page cache dropped)".into(),
            Row::Random => format!("{} random 4 KiB O_DIRECT reads", load.random),
            Row::LsCold => format!("`ls -l` of {files} entries, cold"),
            Row::LsWarm => "`ls -l` again at once".into(),
            Row::LsRemount => "`ls -l` again, a new mount, nothing changed".into(),
            Row::Small => format!("{} × 4 KiB files into a new dir", load.small),
            Row::Rss => "peak RSS of the mount (write; cold + warm read)".into(),
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
}

/// A figure in its row's unit, or why there is none.
type Cell = Result<f64, String>;

fn mibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

enum Column {
    /// Not installed, not given.
    Missing(&'static str),
    /// Did not mount at all: why.
    Failed(String),
    Ran(HashMap<Row, Cell>),
}

struct Pass {
    latency: Duration,
    files: usize,
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

impl Bench {
    fn big_key(&self) -> String {
        format!("{}big.bin", self.prefix)
    }

    fn ls_dir(files: usize) -> String {
        format!("ls-{files}")
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
        offsets: random_offsets(load.size(), load.random),
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

/// With the admin key: the large object every client reads, and the listed directories.
fn seed(b: &Bench) {
    let mut counts = b.load.files.to_vec();
    counts.dedup();
    eprintln!(
        "seeding a {} MiB object and directories of {counts:?} objects...",
        b.load.size_mib
    );
    b.on(async {
        direct::multipart_put(&b.admin, &b.bucket, &b.big_key(), &b.data, 16 << 20, 4)
            .await
            .expect("seeding the large object");
        for files in counts {
            futures::stream::iter(0..files)
                .map(|i| {
                    let key = format!("{}{}/file-{i:05}.txt", b.prefix, Bench::ls_dir(files));
                    b.admin
                        .put_object()
                        .bucket(&b.bucket)
                        .key(key)
                        .body(vec![b'x'; 100].into())
                        .send()
                })
                .buffer_unordered(32)
                .for_each(|r| async move {
                    r.expect("seeding the directory");
                })
                .await;
        }
    });
}

fn timed<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(T, Duration), String> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// The direct client's figures for one pass, and a note on its read variants.
fn run_direct(b: &Bench, tag: &str, files: usize) -> (HashMap<Row, Cell>, String) {
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

    b.cold();
    let random = timed(|| b.on(direct::random_gets(s3, bucket, &big, &b.offsets, &b.data)));
    cells.insert(
        Row::Random,
        random.map(|(_, d)| b.offsets.len() as f64 / d.as_secs_f64()),
    );

    let list_prefix = format!("{}{}/", b.prefix, Bench::ls_dir(files));
    let list = || {
        let (n, d) = timed(|| b.on(direct::list(s3, bucket, &list_prefix)))?;
        check_len(n as u64, files as u64).map(|_| d.as_secs_f64())
    };
    b.cold();
    cells.insert(Row::LsCold, list());
    cells.insert(Row::LsWarm, list());
    cells.insert(Row::LsRemount, list());

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
fn with_mount(
    b: &Bench,
    fs: Fs,
    program: &Path,
    notes: &mut Vec<String>,
    work: impl FnOnce(&Mounted),
) -> Result<(), String> {
    let m = b.target.mount(fs, program)?;
    work(&m);
    if let Err(e) = m.unmount() {
        notes.push(format!("{}: unmount: {e}", fs.name()));
    }
    Ok(())
}

/// One file system's figures for one pass: three mounts — writes; cold and warm reads
/// (and the peak RSS); `ls -l` and random reads — each after the page cache is dropped.
/// Err: the first mount failed (the others are not tried).
fn run_fs(
    b: &Bench,
    fs: Fs,
    program: &Path,
    tag: &str,
    files: usize,
    notes: &mut Vec<String>,
) -> Result<HashMap<Row, Cell>, String> {
    let mut cells = HashMap::new();
    if fs != Fs::CognifsListOnly {
        write_and_read(b, fs, program, tag, notes, &mut cells)?;
    }
    list_and_seek(b, fs, program, files, notes, &mut cells);
    Ok(cells)
}

/// Mount groups 1 and 2: writes, then cold and warm reads.
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
    let mut write_rss = None;

    // 1. Writes, into a directory of this file system's own.
    let mounted = with_mount(b, fs, program, notes, |m| {
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
        cells.insert(Row::Write, write);
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
        cells.insert(Row::Small, small);
        write_rss = m.peak_rss_kib();
    });
    let _ = b.on(direct::delete(
        &b.admin,
        &b.bucket,
        &format!("{}{rel}/big.bin", b.prefix),
    ));
    mounted?;

    // 2. The seeded object read twice on a fresh mount; the mount's peak RSS after.
    b.cold();
    let mounted = with_mount(b, fs, program, notes, |m| {
        let path = m.path().join("big.bin");
        cells.insert(
            Row::ColdRead,
            ops::read_file(&path, size).map(|d| mibps(size, d)),
        );
        cells.insert(
            Row::WarmRead,
            ops::read_file(&path, size).map(|d| mibps(size, d)),
        );
        let peak = m.peak_rss_kib().max(write_rss);
        cells.insert(
            Row::Rss,
            peak.map(|k| k as f64 / 1024.0)
                .ok_or_else(|| "no VmHWM".to_owned()),
        );
    });
    if let Err(e) = mounted {
        for r in [Row::ColdRead, Row::WarmRead, Row::Rss] {
            cells.insert(r, Err(format!("mount: {e}")));
        }
    }

    // 2b. Read again on a new mount, the page cache dropped: what a file system keeps
    // across mounts (cognifs: its disk cache, validated by the lookup's etag).
    b.cold();
    let mounted = with_mount(b, fs, program, notes, |m| {
        let path = m.path().join("big.bin");
        cells.insert(
            Row::RemountRead,
            ops::read_file(&path, size).map(|d| mibps(size, d)),
        );
    });
    if let Err(e) = mounted {
        cells.insert(Row::RemountRead, Err(format!("mount: {e}")));
    }
    Ok(())
}

/// Mount groups 3 and 4: `ls -l` and random reads, then `ls -l` on a new mount.
fn list_and_seek(
    b: &Bench,
    fs: Fs,
    program: &Path,
    files: usize,
    notes: &mut Vec<String>,
    cells: &mut HashMap<Row, Cell>,
) {
    // 3. `ls -l` of a directory this mount has not seen, twice; then random reads.
    b.cold();
    let mounted = with_mount(b, fs, program, notes, |m| {
        let dir = m.path().join(Bench::ls_dir(files));
        cells.insert(
            Row::LsCold,
            ops::ls_long(&dir, files).map(|d| d.as_secs_f64()),
        );
        cells.insert(
            Row::LsWarm,
            ops::ls_long(&dir, files).map(|d| d.as_secs_f64()),
        );
        let random = ops::random_reads(&m.path().join("big.bin"), &b.offsets, &b.data);
        cells.insert(
            Row::Random,
            random.map(|d| b.offsets.len() as f64 / d.as_secs_f64()),
        );
    });
    if let Err(e) = mounted {
        for r in [Row::LsCold, Row::LsWarm, Row::Random] {
            cells.insert(r, Err(format!("mount: {e}")));
        }
    }

    // 4. The same `ls -l` on a new mount: what a file system remembers across mounts.
    b.cold();
    let mounted = with_mount(b, fs, program, notes, |m| {
        let dir = m.path().join(Bench::ls_dir(files));
        cells.insert(
            Row::LsRemount,
            ops::ls_long(&dir, files).map(|d| d.as_secs_f64()),
        );
    });
    if let Err(e) = mounted {
        cells.insert(Row::LsRemount, Err(format!("mount: {e}")));
    }
}

fn run_pass(b: &Bench, i: usize) -> Pass {
    let latency = b.load.latencies[i];
    let files = b.load.files[i];
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
        let (cells, note) = run_direct(b, &run_tag(run), files);
        progress(&tag, "direct", &cells);
        if run == 0 {
            notes.push(note);
        }
        runs.push(cells);
    }
    let mut columns = vec![("direct", Column::Ran(median_cells(runs)))];
    for fs in Fs::ALL {
        let column = match b.target.program(fs) {
            _ if !b.load.runs(fs) => Column::Missing("skipped (BENCH_ONLY)"),
            Err(why) => Column::Missing(why),
            Ok(program) => {
                eprintln!("[{tag}] {}...", fs.name());
                let mut runs = Vec::new();
                let mut failed = None;
                for run in 0..b.load.runs {
                    b.target.forget_cognifs_caches();
                    match run_fs(b, fs, &program, &run_tag(run), files, &mut notes) {
                        Ok(cells) => {
                            progress(&tag, fs.name(), &cells);
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
                    None => Column::Ran(median_cells(runs)),
                }
            }
        };
        columns.push((fs.name(), column));
    }
    Pass {
        latency,
        files,
        columns,
        notes,
    }
}

/// Each row's median over the runs (of its figures: a run that failed a row counts only if
/// every run did, and then its error shows).
fn median_cells(runs: Vec<HashMap<Row, Cell>>) -> HashMap<Row, Cell> {
    let mut out = HashMap::new();
    for row in Row::ALL {
        let mut figures: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get(&row)?.as_ref().ok().copied())
            .collect();
        figures.sort_by(f64::total_cmp);
        let cell = match figures.len() {
            0 => match runs.iter().find_map(|r| r.get(&row)) {
                Some(err) => err.clone(),
                None => continue,
            },
            n if n % 2 == 1 => Ok(figures[n / 2]),
            n => Ok((figures[n / 2 - 1] + figures[n / 2]) / 2.0),
        };
        out.insert(row, cell);
    }
    out
}

fn progress(tag: &str, name: &str, cells: &HashMap<Row, Cell>) {
    let line: Vec<String> = Row::ALL
        .iter()
        .filter_map(|r| cells.get(r).map(|c| show_cell(c, r.unit())))
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

impl Pass {
    fn cell(&self, name: &str, row: Row) -> Option<&Cell> {
        match &self.columns.iter().find(|(n, _)| *n == name)?.1 {
            Column::Ran(cells) => cells.get(&row),
            Column::Missing(_) | Column::Failed(_) => None,
        }
    }

    /// cognifs over the best peer that has a figure: "1.23× (s3fs)".
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
            .reduce(|a, b| if unit.is_better(b.1, a.1) { b } else { a });
        match best {
            Some((name, v)) => format!("{:.2}× ({name})", unit.better(*cognifs, v)),
            None => "—".into(),
        }
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
        for row in Row::ALL {
            let unit = row.unit();
            let direct = match self.cell("direct", row) {
                Some(Ok(v)) => Some(*v),
                _ => None,
            };
            out.push_str(&format!("| {} |", row.label(load, self.files)));
            for (name, column) in &self.columns {
                let text = match column {
                    Column::Missing(why) => (*why).to_owned(),
                    Column::Failed(e) if row == Row::ALL[0] => {
                        show_cell(&Err(format!("mount: {e}")), unit)
                    }
                    Column::Failed(_) => "″".into(),
                    Column::Ran(cells) => match cells.get(&row) {
                        None => "—".into(),
                        Some(Ok(v)) if *name != "direct" && direct.is_some() => {
                            let ratio = unit.better(*v, direct.unwrap());
                            format!("{} ({ratio:.2}×)", unit.show(*v))
                        }
                        Some(cell) => show_cell(cell, unit),
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
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }

    /// The `ls -l` rows of `cognifs --list-only` over mountpoint-s3's (>1: cognifs faster):
    /// the comparison of two file systems that both show listings alone.
    fn list_only_vs_mount_s3(&self) -> Option<String> {
        let ratios: Vec<String> = [
            (Row::LsCold, "cold"),
            (Row::LsWarm, "again"),
            (Row::LsRemount, "new mount"),
        ]
        .into_iter()
        .filter_map(|(row, what)| {
            let ours = self.cell(Fs::CognifsListOnly.name(), row)?.as_ref().ok()?;
            let theirs = self.cell(Fs::MountS3.name(), row)?.as_ref().ok()?;
            Some(format!("{what} {:.2}×", row.unit().better(*ours, *theirs)))
        })
        .collect();
        (!ratios.is_empty()).then(|| {
            format!(
                "`ls -l`, cognifs --list-only over mountpoint-s3 (>1: cognifs faster): {}",
                ratios.join(", ")
            )
        })
    }

    /// Whether cognifs or the direct client failed somewhere (peers may).
    fn own_failures(&self) -> usize {
        ["direct", Fs::Cognifs.name()]
            .iter()
            .flat_map(|name| Row::ALL.map(|r| self.cell(name, r)))
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
    format!(
        "{cpus} CPUs (nproc), {:.1} GiB RAM, Linux {}",
        ram_kib as f64 / (1 << 20) as f64,
        kernel.trim()
    )
}

/// What was measured and how, above the tables.
fn preamble(b: &Bench) -> String {
    let load = &b.load;
    let [l0, l1] = load.latencies.map(|l| l.as_millis());
    let [f0, f1] = load.files;
    let fewer = if f1 < f0 {
        " (fewer at the second latency, BENCH_FILES_20MS, to keep the run short)"
    } else {
        ""
    };
    let mut out =
        String::from("## cognifs and its peers on devstack (`cargo bench --bench throughput`)\n\n");
    out.push_str(&format!(
        "- load: one {} MiB file; `ls -l` of a directory of {f0} objects at {l0} ms, \
         {f1} at {l1} ms{fewer}; {} × 4 KiB files; {} random 4 KiB reads\n",
        load.size_mib, load.small, load.random
    ));
    out.push_str(&format!(
        "- latency: added by devstack to every S3 request (`Faults::set_latency`); both \
         passes in one run, on loopback\n- runs: {}\n- machine: {}\n",
        match load.runs {
            1 => "one of each column per pass (BENCH_RUNS)".to_owned(),
            n => format!("{n} of each column per pass, one after another; each cell is their median"),
        },
        machine()
    ));
    out.push_str(&format!(
        "- cold: {}, and a fresh mount (each file system runs as a child process; four \
         mounts per run: writes, reads, `ls -l` + random reads, `ls -l` again)\n",
        match &b.drop_caches {
            Ok(()) => "page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`)".to_owned(),
            Err(e) => format!("page cache NOT dropped ({e})"),
        }
    ));
    for fs in Fs::ALL {
        out.push_str(&format!("- {}: {}\n", fs.name(), b.target.describe(fs)));
    }
    out.push_str(&format!(
        "- direct: aws-sdk-s3 with the user's credentials, upload bodies unsigned with their \
         CRC32 (as cognifs and mountpoint-s3 send them). write: multipart upload, \
         {} MiB parts × {PARTS_IN_FLIGHT} in flight (cognifs's defaults); reads: the faster \
         of one GET and in-order 8 MiB ranged GETs × {} in flight (warm: the same again); \
         random: 4 KiB ranged GETs one by one; ls: paged ListObjectsV2; small files: \
         PutObjects one by one\n",
        PART_SIZE >> 20,
        load.parallel
    ));
    out.push_str(
        "- figures: writes until the last close returned (each object then checked in S3); \
         reads through 1 MiB read calls; random reads with O_DIRECT, one at a time, at the \
         same offsets for every client (O_DIRECT bypasses only the kernel's page cache: a \
         file system's own cache — cognifs's 1 MiB blocks, s3fs's prefetch of \
         multipart_size × parallel_count into its temp file — serves reads near earlier \
         ones, so a small file flatters them); RSS = VmHWM of the mount process after the \
         reads\n\
         - ratios: `(n×)` is the speed relative to the direct client (>1 = faster); \
         \"cognifs vs best peer\" is cognifs's speed over the best peer's (RSS: the smallest \
         peer RSS over cognifs's), so >1 means cognifs does better\n\n",
    );
    out
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (bench, work) = setup(Load::from_env());
    let preamble = preamble(&bench);
    eprintln!("{preamble}");
    let passes: Vec<Pass> = (0..2).map(|i| run_pass(&bench, i)).collect();

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
