//! The chaos soak: the `cognifs` binary mounts against a devstack that misbehaves the way
//! networks and servers do — 503s, requests accepted and never answered, bodies that stall,
//! connections reset mid-body, bodies cut short, latency spikes — while fsx-style random
//! operations on files (each checked against a model), a parallel `cp -r` and `rsync -r` of a
//! tree and random reads of known objects run against it. Then, faults off:
//!
//! - every successful read returned the right bytes;
//! - every file whose last `close` returned 0 is in S3 byte for byte, and the ones whose
//!   close failed are there too once the mount's background retries ran (nothing lost);
//! - every call this test timed answered within a bound made of the configured timeouts;
//! - the mount's peak RSS stayed within its budget.
//!
//! About 3 minutes (`COGNIFS_CHAOS_SECS` sets the fault phase, 100 s by default). The figures
//! are printed and written to `$CARGO_TARGET_TMPDIR/chaos-report.txt` (CI prints it).
//! Needs /dev/fuse, root and rsync (as on the CI machines).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devstack::NetworkFaults;
use support::cli::*;
use support::*;

/// Configured for the mount under test (seconds): one attempt, one operation.
const REQUEST_TIMEOUT: u64 = 2;
const OPERATION_TIMEOUT: u64 = 6;
/// The most one file-system call may take: a call may need a few S3 operations in a row
/// (open for writing: GETs of the old contents; close: create, parts, complete), each
/// bounded by the operation timeout. A hang, not slowness, is what exceeds it.
const CALL_BOUND: Duration = Duration::from_secs(4 * OPERATION_TIMEOUT);
/// The mount's peak RSS may not exceed this: its memory cache (16 MiB), readahead (48 MiB)
/// and upload parts (12 × 8 MiB) budgets, and 128 MiB for the rest (runtime, tables,
/// buffers in flight).
const RSS_BUDGET_MIB: u64 = 16 + 48 + 12 * 8 + 128;

/// What the workers saw.
#[derive(Default)]
struct Ledger {
    /// Calls made, by operation.
    calls: BTreeMap<&'static str, u64>,
    /// Calls that failed, by operation and errno.
    failed: BTreeMap<(&'static str, i32), u64>,
    /// The slowest call: its duration and what it was.
    slowest: (Duration, String),
    /// Calls over [`CALL_BOUND`].
    over_bound: Vec<String>,
    /// Successful reads that returned other bytes than the file holds.
    wrong_reads: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Ledger>>);

impl Shared {
    /// Runs one call, timed and counted.
    fn call<T>(
        &self,
        op: &'static str,
        what: &str,
        f: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        let start = Instant::now();
        let r = f();
        let took = start.elapsed();
        let mut l = self.0.lock().unwrap();
        *l.calls.entry(op).or_default() += 1;
        if let Err(e) = &r {
            *l.failed
                .entry((op, e.raw_os_error().unwrap_or(-1)))
                .or_default() += 1;
        }
        if took > l.slowest.0 {
            l.slowest = (took, format!("{op} {what}"));
        }
        if took > CALL_BOUND {
            l.over_bound.push(format!("{op} {what}: {took:?}"));
        }
        r
    }

    fn wrong_read(&self, what: String) {
        self.0.lock().unwrap().wrong_reads.push(what);
    }
}

/// A small deterministic generator (xorshift), one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `close(2)` whose result is seen (dropping a `File` ignores it).
fn close(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` is ours (taken from the File) and closed exactly once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What one fsx worker leaves: the file's contents as its model says, and whether its last
/// close returned 0.
struct FsxOutcome {
    rel: String,
    model: Vec<u8>,
    last_close_ok: bool,
    ops: u64,
}

/// fsx-style: random writes, truncates, reads (checked against the model), fsyncs, closes
/// and reopens of one file, until `until`.
fn fsx(root: &Path, rel: &str, seed: u64, until: Instant, ledger: &Shared) -> FsxOutcome {
    const MAX_LEN: u64 = 3 << 20;
    let path = root.join(rel);
    let mut rng = Rng(seed | 1);
    let mut model: Vec<u8> = Vec::new();
    let mut file: Option<File> = None;
    let mut last_close_ok = true;
    let mut ops = 0u64;
    let mut created = false;
    while Instant::now() < until {
        ops += 1;
        let Some(f) = &file else {
            let opened = ledger.call("open", rel, || {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(!created)
                    .truncate(!created)
                    .open(&path)
            });
            match opened {
                Ok(f) => {
                    created = true;
                    file = Some(f);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
            continue;
        };
        match rng.below(100) {
            0..=44 => {
                let off = rng.below((model.len() as u64 + (64 << 10)).min(MAX_LEN));
                let len = 1 + rng.below(128 << 10).min(MAX_LEN - off);
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if ledger
                    .call("write", rel, || f.write_all_at(&data, off))
                    .is_ok()
                {
                    let end = (off + len) as usize;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].copy_from_slice(&data);
                }
            }
            45..=54 => {
                let len = rng.below(model.len() as u64 + (256 << 10)).min(MAX_LEN);
                if ledger.call("truncate", rel, || f.set_len(len)).is_ok() {
                    model.resize(len as usize, 0);
                }
            }
            55..=84 => {
                let off = rng.below(model.len() as u64 + 1);
                let len = 1 + rng.below(256 << 10);
                let mut buf = vec![0u8; len as usize];
                let read = ledger.call("read", rel, || {
                    let mut n = 0;
                    while n < buf.len() {
                        match f.read_at(&mut buf[n..], off + n as u64)? {
                            0 => break,
                            k => n += k,
                        }
                    }
                    Ok(n)
                });
                if let Ok(n) = read {
                    let want_end = (off as usize + buf.len()).min(model.len());
                    let want = &model[(off as usize).min(want_end)..want_end];
                    if &buf[..n] != want {
                        let first = buf[..n]
                            .iter()
                            .zip(want)
                            .position(|(a, b)| a != b)
                            .unwrap_or(n.min(want.len()));
                        let zeros = buf[first..n].iter().take_while(|&&b| b == 0).count();
                        ledger.wrong_read(format!(
                            "{rel} ({} bytes, op {ops}, last close ok {last_close_ok}): {n} bytes at {off}, \
                             {} expected; first difference at +{first}, {zeros} zeros from there",
                            model.len(),
                            want.len()
                        ));
                    }
                }
            }
            85..=89 => {
                let _ = ledger.call("fsync", rel, || f.sync_all());
            }
            _ => {
                let f = file.take().expect("open");
                last_close_ok = ledger.call("close", rel, || close(f)).is_ok();
            }
        }
    }
    if let Some(f) = file.take() {
        last_close_ok = ledger.call("close", rel, || close(f)).is_ok();
    }
    FsxOutcome {
        rel: rel.to_owned(),
        model,
        last_close_ok,
        ops,
    }
}

/// Random reads of objects whose contents are known, until `until`.
fn reader(
    root: &Path,
    known: &[(String, Vec<u8>)],
    seed: u64,
    until: Instant,
    ledger: &Shared,
) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut reads = 0;
    while Instant::now() < until {
        let (rel, data) = &known[rng.below(known.len() as u64) as usize];
        let Ok(f) = ledger.call("open", rel, || File::open(root.join(rel))) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        for _ in 0..8 {
            let off = rng.below(data.len() as u64);
            let mut buf = vec![0u8; (1 + rng.below(512 << 10)) as usize];
            reads += 1;
            if let Ok(n) = ledger.call("read", rel, || f.read_at(&mut buf, off)) {
                let end = (off as usize + n).min(data.len());
                if buf[..n] != data[off as usize..end] {
                    ledger.wrong_read(format!("{rel}: {n} bytes at {off}"));
                }
            }
        }
        let _ = ledger.call("close", rel, || close(f));
    }
    reads
}

/// The paths a copying tool's error output names (between quotes, as cp and rsync write
/// them).
fn quoted_paths(stderr: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for quote in ['\'', '"'] {
        let parts: Vec<&str> = stderr.split(quote).collect();
        out.extend(
            parts
                .iter()
                .skip(1)
                .step_by(2)
                .map(|p| PathBuf::from(p.trim_end_matches('/'))),
        );
    }
    out
}

/// The files (relative to the tree) a copying tool into `dest` reported failing: named by
/// its errors, itself, through a directory above it or through rsync's temporary name for
/// it (`.NAME.XXXXXX`). A tool that failed without naming any path may have failed any of
/// them. Only the others are held to being in S3.
fn reported(
    out: &std::process::Output,
    dest: &Path,
    files: &BTreeMap<String, Vec<u8>>,
) -> BTreeSet<String> {
    let stderr = text(&out.stderr);
    let named = quoted_paths(&stderr);
    if !out.status.success() && named.is_empty() {
        return files.keys().cloned().collect();
    }
    files
        .keys()
        .filter(|rel| {
            let full = dest.join(rel);
            let name = rel.rsplit('/').next().unwrap_or(rel);
            named.iter().any(|q| {
                let tmp = q
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!(".{name}.")));
                let same_dir = match (full.parent(), q.parent()) {
                    (Some(f), Some(d)) => f == d || f.ends_with(d),
                    _ => false,
                };
                (q.is_absolute() && full.starts_with(q))
                    || (!q.as_os_str().is_empty() && full.ends_with(q))
                    || (tmp && same_dir)
            })
        })
        .cloned()
        .collect()
}

/// A tree to copy: small files, some over a part (multipart), an empty one, in subdirs.
fn source_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..48u64 {
        let len = match i % 12 {
            0 => 0,
            1 => 12 << 20,
            2 | 3 => 3 << 20,
            _ => (i * 7919) as usize % (200 << 10),
        };
        let rel = format!("d{}/f{i}", i % 4);
        files.insert(rel, pseudo_random(len, 1000 + i));
    }
    for (rel, data) in &files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    files
}

fn peak_rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The mount's pid, from its registry record.
fn mount_pid(env: &Env) -> u32 {
    let dir = env.state.join("default").join("mounts");
    std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
        .expect("a mount record")
}

#[test]
fn copy_errors_name_files_directories_and_rsync_temporaries() {
    use std::os::unix::process::ExitStatusExt;
    let files: BTreeMap<String, Vec<u8>> = ["d0/f1", "d0/f12", "d1/f1", "d1/f2"]
        .iter()
        .map(|r| (r.to_string(), Vec::new()))
        .collect();
    let out = |code: i32, stderr: &str| std::process::Output {
        status: std::process::ExitStatus::from_raw(code << 8),
        stdout: Vec::new(),
        stderr: stderr.as_bytes().to_vec(),
    };
    let dest = Path::new("/m/rs");
    let got = |o| reported(&o, dest, &files).into_iter().collect::<Vec<_>>();
    assert_eq!(
        got(out(
            1,
            "cp: error writing '/m/rs/d0/f1': Input/output error"
        )),
        ["d0/f1"]
    );
    assert_eq!(
        got(out(
            3,
            "rsync: mkdir \"/m/rs/d1\" failed: Input/output error (5)"
        )),
        ["d1/f1", "d1/f2"]
    );
    assert_eq!(
        got(out(
            23,
            "rsync: [receiver] rename \"/m/rs/d0/.f12.Ab12Cd\" -> \"d0/f12\": Input/output error (5)"
        )),
        ["d0/f12"]
    );
    assert_eq!(
        got(out(12, "rsync error: error in rsync protocol data stream")).len(),
        4
    );
    assert!(got(out(0, "")).is_empty());
}

#[test]
fn chaos_soak() {
    require_rsync();
    let soak = Duration::from_secs(
        std::env::var("COGNIFS_CHAOS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = Env::new(Some(&running));
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(&format!(
        "request_timeout = {REQUEST_TIMEOUT}\noperation_timeout = {OPERATION_TIMEOUT}\n"
    ));
    std::fs::write(&env.config, config).unwrap();
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    let identity = rt.block_on(identity_of(&running, "alice", "alice-pass"));
    let admin = admin_s3(&running);
    let bucket = running.profile.bucket.clone();
    // Objects the readers know.
    let known: Vec<(String, Vec<u8>)> = (0..12u64)
        .map(|i| {
            (
                format!("known/k{i}"),
                pseudo_random((1 << 20) + (i as usize) * 77_777, 500 + i),
            )
        })
        .collect();
    rt.block_on(put_many(
        &admin,
        &bucket,
        known
            .iter()
            .map(|(rel, data)| (format!("{identity}/{rel}"), data.clone()))
            .collect(),
        8,
    ));
    let mnt = tempfile::tempdir().unwrap();
    let root = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(root.clone());
    let out = env.run(&["mount", root.to_str().unwrap()], Duration::from_secs(60));
    assert_ok(&out, "mount");
    let pid = mount_pid(&env);
    let src = tempfile::tempdir().unwrap();
    let files = source_tree(src.path());

    // Faults on, the workload for `soak`.
    let faults = running.faults();
    // COGNIFS_CHAOS_FAULTS=0: the same workload without faults (to tell the mount's bugs
    // under faults from the workload's own).
    let with_faults = std::env::var("COGNIFS_CHAOS_FAULTS").map_or(true, |v| v != "0");
    faults.set_s3_error_rate(if with_faults { 0.03 } else { 0.0 });
    faults.set_network(if !with_faults {
        NetworkFaults::default()
    } else {
        NetworkFaults {
            stall: 0.01,
            stall_body: 0.02,
            reset_body: 0.03,
            truncate_body: 0.02,
            spike: 0.03,
            spike_for: Duration::from_millis(700),
            stall_for: Duration::from_secs(3600),
        }
    });
    let ledger = Shared::default();
    let started = Instant::now();
    let until = started + soak;
    let (fsx_done, read_count, cp, rsync) = std::thread::scope(|s| {
        let fsx_workers: Vec<_> = (0..3u64)
            .map(|i| {
                let (root, ledger) = (&root, &ledger);
                s.spawn(move || fsx(root, &format!("fsx{i}"), 77 + i, until, ledger))
            })
            .collect();
        let readers: Vec<_> = (0..2u64)
            .map(|i| {
                let (root, known, ledger) = (&root, &known, &ledger);
                s.spawn(move || reader(root, known, 9 + i, until, ledger))
            })
            .collect();
        let copy = |program: &str, args: Vec<String>| {
            let mut cmd = std::process::Command::new(program);
            cmd.args(args);
            run_with_deadline(cmd, soak + Duration::from_secs(600), program)
        };
        let src_path = src.path().to_str().unwrap().to_owned();
        let cp = s.spawn({
            let (src_path, root) = (src_path.clone(), root.clone());
            move || {
                copy(
                    "cp",
                    vec![
                        "-r".into(),
                        src_path,
                        root.join("cp").to_str().unwrap().into(),
                    ],
                )
            }
        });
        let rsync = s.spawn({
            let root = root.clone();
            move || {
                copy(
                    "rsync",
                    vec![
                        "-r".into(),
                        format!("{src_path}/"),
                        format!("{}/", root.join("rs").display()),
                    ],
                )
            }
        });
        let fsx_done: Vec<FsxOutcome> =
            fsx_workers.into_iter().map(|w| w.join().unwrap()).collect();
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        (fsx_done, reads, cp.join().unwrap(), rsync.join().unwrap())
    });
    let workload = started.elapsed();
    let injected = faults.injected();
    let (peak_mib, rss_mib) = peak_rss_mib(pid);

    // Faults off: what close reported failed is uploaded by the mount's retries.
    faults.set_s3_error_rate(0.0);
    faults.set_network(NetworkFaults::default());
    let pending_dir = env.state.join("default").join("pending");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cognifs::pending::records_in(&pending_dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_pending = cognifs::pending::records_in(&pending_dir).len();

    // What S3 holds.
    let s3_body = |rel: &str| rt.block_on(get_bytes(&admin, &bucket, &format!("{identity}/{rel}")));
    let mut lost = Vec::new();
    let mut verified = 0;
    let mut uploaded_by_retry = 0;
    for f in &fsx_done {
        if s3_body(&f.rel).as_deref() == Some(&f.model[..]) {
            verified += 1;
            uploaded_by_retry += u64::from(!f.last_close_ok);
        } else {
            lost.push(format!(
                "{} (last close {})",
                f.rel,
                if f.last_close_ok { "0" } else { "failed" }
            ));
        }
    }
    let mut copy_reported = BTreeMap::new();
    for (tool, dest, out) in [("cp", "cp/", &cp), ("rsync", "rs/", &rsync)] {
        let failed = reported(out, &root.join(dest), &files);
        copy_reported.insert(tool, (out.status.code(), failed.len()));
        for (rel, data) in &files {
            if failed.contains(rel) {
                continue;
            }
            verified += 1;
            let key = format!("{dest}{rel}");
            if s3_body(&key).as_deref() != Some(&data[..]) {
                lost.push(format!("{key} ({tool} reported no error for it)"));
            }
        }
    }
    let out = env.run(
        &["unmount", root.to_str().unwrap()],
        Duration::from_secs(120),
    );
    let l = ledger.0.lock().unwrap();
    let report = format!(
        "chaos soak: {workload:.0?} of faults; calls {total} ({calls:?}); fsx operations {fsx_ops}; \
         random reads {read_count}\n\
         faults injected: {injected:?}\n\
         calls failed (op, errno): {failed:?}\n\
         slowest call {slowest:?} ({what}); bound {CALL_BOUND:?}; over it: {over}\n\
         cp exit {cp_code:?}, rsync exit {rs_code:?}; files they reported failing: cp {cp_failed}, rsync {rs_failed}\n\
         files verified in S3 byte for byte: {verified} (fsx files whose last close failed, uploaded by the mount's retries: {uploaded_by_retry}); \
         lost: {lost_n} {lost_some:?}; kept uploads left after 60 s: {still_pending}\n\
         wrong reads: {wrong} {wrong_some:#?}\n\
         mount peak RSS {peak_mib} MiB (now {rss_mib} MiB), budget {RSS_BUDGET_MIB} MiB\n",
        total = l.calls.values().sum::<u64>(),
        calls = l.calls,
        fsx_ops = fsx_done.iter().map(|f| f.ops).sum::<u64>(),
        failed = l.failed,
        slowest = l.slowest.0,
        what = l.slowest.1,
        over = l.over_bound.len(),
        cp_code = copy_reported["cp"].0,
        rs_code = copy_reported["rsync"].0,
        cp_failed = copy_reported["cp"].1,
        rs_failed = copy_reported["rsync"].1,
        lost_n = lost.len(),
        lost_some = &lost[..lost.len().min(10)],
        wrong = l.wrong_reads.len(),
        wrong_some = &l.wrong_reads[..l.wrong_reads.len().min(5)],
    );
    eprintln!("{report}");
    let log =
        std::fs::read_to_string(env.state.join("default").join("cognifs.log")).unwrap_or_default();
    let notable: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let _ = std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-mount.log"),
        &log,
    );
    // What the mount logged, by message.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for l in &notable {
        let msg = l.split_once(": ").map_or(*l, |(_, m)| m);
        let msg = msg.split(" key=").next().unwrap_or(msg);
        let msg = msg.split(" op=").next().unwrap_or(msg);
        *kinds.entry(msg.chars().take(100).collect()).or_default() += 1;
    }
    eprintln!("mount log: {} warnings/errors: {kinds:#?}", notable.len());
    let _ = std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-report.txt"),
        &report,
    );
    assert_ok(&out, "unmount");
    assert!(
        l.wrong_reads.is_empty(),
        "reads returned wrong bytes: {:?}",
        l.wrong_reads
    );
    assert!(lost.is_empty(), "not in S3 as written: {lost:?}\n{report}");
    assert!(
        l.over_bound.is_empty(),
        "calls over {CALL_BOUND:?}: {:?}",
        l.over_bound
    );
    assert!(peak_mib <= RSS_BUDGET_MIB, "{report}");
    // The soak means something only if the faults fired and the work got done.
    for (kind, n) in if !with_faults {
        vec![]
    } else {
        vec![
            ("503s", injected.slow_downs),
            ("stalls", injected.stalls),
            ("stalled bodies", injected.stalled_bodies),
            ("resets", injected.resets),
            ("truncated bodies", injected.truncated),
            ("spikes", injected.spikes),
        ]
    } {
        assert!(n > 0, "no {kind} injected: {report}");
    }
    assert!(fsx_done.iter().all(|f| f.ops > 50), "{report}");
    rt.block_on(running.shutdown());
}
