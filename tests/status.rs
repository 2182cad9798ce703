//! Live status end to end: the `cognifs` binary mounts as a daemon with `--metrics-addr`;
//! a 64 MiB file is written into the mount while the status socket is polled (bytes
//! waiting go up, then back to 0 once `close` returned); `cognifs status` (human, `--json`,
//! `--watch`) and `GET /metrics` show the same figures; the socket is private and goes away
//! with the mount. Against devstack in-process; every wait has a deadline.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cognifs::metrics::{LiveStatus, MountStatus, StatusReport, server};
use support::cli::*;
use support::*;

const MIB: usize = 1 << 20;
const SIZE: usize = 64 * MIB;
/// Where the writer pauses, the file still open.
const PAUSE_AT: usize = 20 * MIB;

fn live(socket: &Path) -> LiveStatus {
    let status: MountStatus = server::query(socket).expect("the status socket answers");
    status.live.expect("a live part")
}

fn metrics(addr: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The value of the sample `series` (name and labels exactly) in a metrics body.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn status_socket_json_human_and_metrics_during_a_large_copy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = Env::new(Some(&running));
    let mnt = tempfile::tempdir().unwrap();
    let mountpoint = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(mountpoint.clone());
    login_by_paste(&env, "alice", "alice-pass", rt.handle());

    let out = env.run(
        &[
            "mount",
            mountpoint.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        Duration::from_secs(60),
    );
    assert_ok(&out, "mount");
    let metrics_addr = env.metrics_addr(Duration::from_secs(30)).to_string();
    assert!(
        !text(&out.stderr).contains("warning"),
        "loopback needs no warning: {}",
        text(&out.stderr)
    );

    // The status socket: found through `status --json`, private to the user.
    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    assert_ok(&out, "status --json");
    let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.version, 1);
    assert!(report.signed_in);
    assert_eq!(report.mounts.len(), 1, "{report:?}");
    let pid = report.mounts[0].pid;
    assert_eq!(report.mounts[0].mountpoint, mountpoint);
    let idle = report.mounts[0].live.clone().expect("the mount answered");
    assert_eq!(idle.writes.files_open, 0);
    assert!(idle.credentials.expires.is_some() && idle.credentials.last_renewal.is_some());
    assert!(
        idle.requests["list"].total >= 1,
        "the access check at start is counted: {idle:?}"
    );
    let socket: PathBuf = env
        .state
        .join("default")
        .join("mounts")
        .join(format!("{pid}.sock"));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // Copy 64 MiB with cat from a pipe this test feeds: 20 MiB, a pause with the file open,
    // then the rest. (A child process, so that the `cognifs status` runs below cannot
    // inherit the open file: closing an inherited copy would flush it.)
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let mut dd = ChildGuard(Some(
        std::process::Command::new("sh")
            .args(["-c", "exec cat > \"$1\"", "sh"])
            .arg(mountpoint.join("big.bin"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut feed = dd.0.as_mut().unwrap().stdin.take().unwrap();
    let (to_test, from_writer) = mpsc::channel::<&str>();
    let (to_writer, from_test) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for i in 0..SIZE / MIB {
            if i * MIB == PAUSE_AT {
                to_test.send("paused").unwrap();
                from_test.recv_timeout(Duration::from_secs(120)).unwrap();
            }
            feed.write_all(&chunk).unwrap();
        }
        drop(feed);
        to_test.send("fed").unwrap();
    });
    let wait = Duration::from_secs(120);
    assert_eq!(from_writer.recv_timeout(wait).unwrap(), "paused");
    let deadline = Instant::now() + wait;
    while live(&socket).bytes_written < PAUSE_AT as u64 {
        assert!(Instant::now() < deadline, "cat did not write 20 MiB");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Mid-copy: one file open, bytes waiting, its streaming upload in flight.
    let mid = live(&socket);
    assert_eq!(mid.writes.files_open, 1, "{mid:?}");
    assert_eq!(mid.bytes_written, PAUSE_AT as u64);
    assert!(mid.writes.bytes_waiting > 0, "{mid:?}");
    assert!(mid.writes.bytes_waiting <= PAUSE_AT as u64, "{mid:?}");
    // The shell's open-dup2-close flushes the empty file at once; streaming goes on after
    // it, so parts may be on their way: whatever is in flight reports sane progress.
    for up in &mid.writes.uploads {
        assert!(up.bytes_sent <= up.bytes_total, "{up:?}");
    }
    assert_eq!(
        mid.writes.uploads_in_flight,
        mid.writes.uploads.len() as u64
    );

    // The human form, for a person.
    let out = env.run(&["status"], Duration::from_secs(30));
    assert_ok(&out, "status");
    let human = text(&out.stdout);
    println!("--- cognifs status during the copy ---\n{human}---");
    for part in [
        format!("mount          {} (pid {pid}, up ", mountpoint.display()),
        "  writing      1 file(s) open, ".to_owned(),
        " waiting to upload".to_owned(),
        "credentials expire in".to_owned(),
        "  transferred  0 B read, 20.0 MiB written".to_owned(),
    ] {
        assert!(human.contains(&part), "missing {part:?} in:\n{human}");
    }

    // Metrics agree with the socket.
    let body = metrics(&metrics_addr);
    assert_eq!(
        sample(&body, "cognifs_written_bytes_total"),
        PAUSE_AT as f64
    );
    assert_eq!(sample(&body, "cognifs_files_open_for_writing"), 1.0);
    assert!(sample(&body, "cognifs_upload_waiting_bytes") > 0.0);
    assert_eq!(
        sample(&body, "cognifs_s3_requests_total{kind=\"put\"}"),
        mid.requests["put"].total as f64
    );
    assert!(body.contains("# TYPE cognifs_s3_requests_total counter"));

    // Go on, polling all along: the figure moves, then ends at 0 once close returned.
    to_writer.send(()).unwrap();
    let deadline = Instant::now() + wait;
    let mut max_waiting = mid.writes.bytes_waiting;
    // cat exits once its close returned, that is once the object is in S3.
    loop {
        if let Some(status) = dd.0.as_mut().unwrap().try_wait().unwrap() {
            assert!(status.success(), "cat: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the copy did not finish");
        max_waiting = max_waiting.max(live(&socket).writes.bytes_waiting);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(from_writer.recv_timeout(wait).unwrap(), "fed");
    writer.join().unwrap();
    assert!(max_waiting > 0);
    let done = live(&socket);
    assert_eq!(done.writes.bytes_waiting, 0, "{done:?}");
    assert_eq!(done.writes.files_open, 0, "{done:?}");
    assert!(done.writes.uploads.is_empty(), "{done:?}");
    assert_eq!(done.bytes_written, SIZE as u64);
    let parts = &done.requests["upload_part"];
    // 64 MiB streamed in 8 MiB parts, each sent once.
    assert_eq!((parts.total, parts.last_minute), (8, 8), "{parts:?}");
    assert_eq!(done.requests["complete_multipart"].total, 1);
    assert_eq!(parts.errors, 0);
    assert!(done.last_error.is_none(), "{:?}", done.last_error);

    // Read it back: bytes read count. Once through the page cache, once with O_DIRECT (past
    // the page cache: every byte reaches the mount), then once more through the page cache,
    // which kept what the kernel had room for (same etag): at most that pass again. (Which
    // cache of the mount's serves them, memory or disk, is tests/disk_cache.rs's business.)
    let big = mountpoint.join("big.bin");
    let read_before = live(&socket).bytes_read;
    let (first, direct, again) = within(wait, "read big.bin three times", move || {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let first = std::fs::read(&big).unwrap().len();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&big)
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        let direct = loop {
            match f.read(&mut buf).unwrap() {
                0 => break n,
                k => n += k,
            }
        };
        (first, direct, std::fs::read(&big).unwrap().len())
    });
    assert_eq!((first, direct, again), (SIZE, SIZE, SIZE));
    let read = live(&socket);
    let counted = read.bytes_read - read_before;
    assert!(
        (2 * SIZE as u64..=3 * SIZE as u64).contains(&counted),
        "{counted} bytes read through the mount for two passes and a cached one"
    );
    assert!(read.cache.bytes > 0 && read.cache.bytes <= read.cache.capacity_bytes);
    let body = metrics(&metrics_addr);
    assert_eq!(sample(&body, "cognifs_written_bytes_total"), SIZE as f64);
    assert_eq!(sample(&body, "cognifs_upload_waiting_bytes"), 0.0);
    assert_eq!(
        sample(&body, "cognifs_cache_hits_total"),
        read.cache.hits as f64
    );

    // --watch --json: one object per line, again and again until stopped. Two are read as
    // they come (each a whole report of this mount), then it is stopped.
    let mut child = ChildGuard(Some(
        env.command(&["status", "--watch", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let (line_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if line_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    for n in 1..=2 {
        let line = lines
            .recv_timeout(wait)
            .unwrap_or_else(|e| panic!("--watch report {n}: {e}"));
        let report: StatusReport = serde_json::from_str(&line).unwrap();
        assert_eq!(report.mounts.len(), 1, "{report:?}");
        assert_eq!(report.mounts[0].pid, pid);
    }
    drop(child);

    // Signed out while mounted: status says so, and still what the mount is doing.
    let out = env.run(&["logout"], Duration::from_secs(30));
    assert_ok(&out, "logout");
    let out = env.run(&["status"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "signed out");
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&mountpoint.display().to_string()) && shown.contains("writing"),
        "{shown}"
    );

    let out = env.run(
        &["unmount", mountpoint.to_str().unwrap()],
        Duration::from_secs(90),
    );
    assert_ok(&out, "unmount");
    assert!(!is_mounted(&mountpoint));
    assert!(!socket.exists(), "the socket goes with the mount");
    assert!(
        std::net::TcpStream::connect(&metrics_addr)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "/metrics stops with the mount"
    );
    rt.block_on(running.shutdown());
}

#[test]
fn a_non_loopback_metrics_address_is_served_with_a_warning() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = Env::new(Some(&running));
    let mnt = tempfile::tempdir().unwrap();
    let mountpoint = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(mountpoint.clone());
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    let out = env.run(
        &[
            "mount",
            mountpoint.to_str().unwrap(),
            "--metrics-addr",
            "0.0.0.0:0",
        ],
        Duration::from_secs(60),
    );
    assert_ok(&out, "mount");
    assert!(
        text(&out.stderr).contains("not a loopback address"),
        "{}",
        text(&out.stderr)
    );
    let served = env.metrics_addr(Duration::from_secs(30));
    assert!(served.ip().is_unspecified(), "{served}");
    let body = metrics(&format!("127.0.0.1:{}", served.port()));
    assert!(body.contains("cognifs_mount_info{"), "{body}");
    let out = env.run(
        &["unmount", mountpoint.to_str().unwrap()],
        Duration::from_secs(90),
    );
    assert_ok(&out, "unmount");
    rt.block_on(running.shutdown());
}
