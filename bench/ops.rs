//! The work done on a mounted file system, the same for every one: plain syscalls (and `ls`)
//! from the bench process, each timed from its first call to its last `close` returning.
//! Every error is returned as a short string for the table.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Reads and writes of large files are 1 MiB calls, as `cp` and `dd bs=1M` make them.
pub const IO_SIZE: usize = 1 << 20;
/// Random reads are 4 KiB, page aligned.
pub const RANDOM_SIZE: usize = 4096;

fn fail(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!("{what} {name}: {e}")
}

/// close(2), with its error: a file system may report a failed upload only there.
fn close(file: std::fs::File) -> std::io::Result<()> {
    // SAFETY: the descriptor was just taken out of the File; nothing else closes it.
    if unsafe { libc::close(file.into_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates `path` and writes `data` into it in 1 MiB calls; the time runs until close
/// returns (when every file system here has the data in S3).
pub fn write_file(path: &Path, data: &[u8]) -> Result<Duration, String> {
    let t = Instant::now();
    let mut f = std::fs::File::create(path).map_err(|e| fail("create", path, e))?;
    for chunk in data.chunks(IO_SIZE) {
        f.write_all(chunk).map_err(|e| fail("write", path, e))?;
    }
    close(f).map_err(|e| fail("close", path, e))?;
    Ok(t.elapsed())
}

/// Reads `path` front to back in 1 MiB calls; checks the length.
pub fn read_file(path: &Path, expect: u64) -> Result<Duration, String> {
    let t = Instant::now();
    let mut f = std::fs::File::open(path).map_err(|e| fail("open", path, e))?;
    let mut buf = vec![0u8; IO_SIZE];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| fail("read", path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    close(f).map_err(|e| fail("close", path, e))?;
    let elapsed = t.elapsed();
    if total != expect {
        return Err(fail("read", path, format!("{total} bytes, not {expect}")));
    }
    Ok(elapsed)
}

/// A page-aligned buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(size: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(size, 4096).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Aligned { ptr, layout }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr points at layout.size() bytes this struct owns.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// One open with O_DIRECT, then 4 KiB preads at `offsets`, one at a time, each checked
/// against `data` (what the file holds). The time covers the reads only.
pub fn random_reads(path: &Path, offsets: &[u64], data: &[u8]) -> Result<Duration, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| fail("open O_DIRECT", path, e))?;
    let mut buf = Aligned::new(RANDOM_SIZE);
    let t = Instant::now();
    for &off in offsets {
        let n = f
            .read_at(buf.as_mut(), off)
            .map_err(|e| fail("pread", path, e))?;
        let want = &data[off as usize..off as usize + RANDOM_SIZE];
        if n != RANDOM_SIZE || buf.as_mut() != want {
            return Err(fail("pread", path, format!("wrong data at {off}")));
        }
    }
    let elapsed = t.elapsed();
    close(f).map_err(|e| fail("close", path, e))?;
    Ok(elapsed)
}

/// Runs `cmd` to its end or `limit`, whichever comes first (then it is killed: a peer that
/// takes an hour over a listing must not stop the bench). Returns its output and the time.
fn run_limited(
    mut cmd: Command,
    what: &str,
    dir: &Path,
    limit: Duration,
) -> Result<(Vec<u8>, Duration), String> {
    let t = Instant::now();
    let mut child = cmd
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(what, dir, e))?;
    // Read the output on threads of their own: a full pipe would stop the child.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        match child.try_wait().map_err(|e| fail(what, dir, e))? {
            Some(status) => break status,
            None if t.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(
                    what,
                    dir,
                    format!("did not finish within {} s", limit.as_secs()),
                ));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let elapsed = t.elapsed();
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let err = String::from_utf8_lossy(&err);
        return Err(fail(what, dir, err.lines().next().unwrap_or("failed")));
    }
    Ok((out, elapsed))
}

fn lines(out: &[u8]) -> usize {
    out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count()
}

/// `ls -l DIR` (GNU ls: readdir, then lstat and the ACL/SELinux xattr calls per entry),
/// output counted: `expect` entries.
pub fn ls_long(dir: &Path, expect: usize, limit: Duration) -> Result<Duration, String> {
    let mut cmd = Command::new("ls");
    cmd.arg("-l").arg("--color=never").arg(dir);
    let (out, elapsed) = run_limited(cmd, "ls -l", dir, limit)?;
    // The first line is "total N".
    let entries = lines(&out).saturating_sub(1);
    if entries != expect {
        return Err(fail(
            "ls -l",
            dir,
            format!("{entries} entries, not {expect}"),
        ));
    }
    Ok(elapsed)
}

/// `find DIR | wc -l`: every name below `dir` (itself included), `expect` of them.
pub fn find_count(dir: &Path, expect: usize, limit: Duration) -> Result<Duration, String> {
    let mut cmd = Command::new("find");
    cmd.arg(dir);
    let (out, elapsed) = run_limited(cmd, "find", dir, limit)?;
    let n = lines(&out);
    if n != expect + 1 {
        return Err(fail("find", dir, format!("{n} names, not {}", expect + 1)));
    }
    Ok(elapsed)
}

/// `du -s DIR` (an lstat of every entry).
pub fn du(dir: &Path, limit: Duration) -> Result<Duration, String> {
    let mut cmd = Command::new("du");
    cmd.arg("-s").arg(dir);
    run_limited(cmd, "du -s", dir, limit).map(|(_, d)| d)
}

/// Time to first byte of each file: open, read one byte, the time taken; the median of
/// them. Each file is read once, cold (the caller drops the page cache and mounts anew).
pub fn first_bytes(paths: &[std::path::PathBuf]) -> Result<Duration, String> {
    let mut times = Vec::with_capacity(paths.len());
    for path in paths {
        let t = Instant::now();
        let mut f = std::fs::File::open(path).map_err(|e| fail("open", path, e))?;
        let mut byte = [0u8; 1];
        let n = f.read(&mut byte).map_err(|e| fail("read", path, e))?;
        times.push(t.elapsed());
        if n != 1 {
            return Err(fail("read", path, "no first byte"));
        }
        close(f).map_err(|e| fail("close", path, e))?;
    }
    times.sort();
    times
        .get(times.len() / 2)
        .copied()
        .ok_or_else(|| "no files".to_owned())
}

/// Reads every file whole, one after another, in 1 MiB calls; returns the bytes and time.
pub fn read_files(paths: &[std::path::PathBuf]) -> Result<(u64, Duration), String> {
    let t = Instant::now();
    let mut total = 0u64;
    let mut buf = vec![0u8; IO_SIZE];
    for path in paths {
        let mut f = std::fs::File::open(path).map_err(|e| fail("open", path, e))?;
        loop {
            let n = f.read(&mut buf).map_err(|e| fail("read", path, e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        close(f).map_err(|e| fail("close", path, e))?;
    }
    Ok((total, t.elapsed()))
}

/// One fio job on `path` (read only), its figures for the group of threads: bytes per
/// second and I/Os per second.
pub struct FioResult {
    pub bytes_per_sec: f64,
    pub iops: f64,
}

/// Runs `fio` with `args` (the job's options) on `path`; `--readonly`, JSON output, one
/// group report.
pub fn fio(fio: &Path, path: &Path, args: &[String], limit: Duration) -> Result<FioResult, String> {
    let mut cmd = Command::new(fio);
    cmd.arg("--output-format=json")
        .arg("--readonly")
        .arg("--group_reporting")
        .arg("--ioengine=psync")
        .arg(format!("--filename={}", path.display()))
        .args(args);
    let (out, _) = run_limited(cmd, "fio", path, limit)?;
    let json: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| fail("fio output", path, e))?;
    let read = &json["jobs"][0]["read"];
    match (read["bw_bytes"].as_f64(), read["iops"].as_f64()) {
        (Some(bw), Some(iops)) if read["io_bytes"].as_u64().unwrap_or(0) > 0 => Ok(FioResult {
            bytes_per_sec: bw,
            iops,
        }),
        _ => Err(fail("fio", path, "no read figures in its output")),
    }
}

/// `n` files named `f00000`… of `content` written into `dir` (an existing, new directory),
/// one after another, each created, written and closed, as `cp` does.
pub fn small_files(dir: &Path, n: usize, content: &[u8]) -> Result<Duration, String> {
    let t = Instant::now();
    for i in 0..n {
        let path = dir.join(small_name(i));
        let mut f = std::fs::File::create(&path).map_err(|e| fail("create", &path, e))?;
        f.write_all(content).map_err(|e| fail("write", &path, e))?;
        close(f).map_err(|e| fail("close", &path, e))?;
    }
    Ok(t.elapsed())
}

pub fn small_name(i: usize) -> String {
    format!("f{i:05}")
}

/// Writes dirty pages out and empties the page cache (and dentries and inodes), so that
/// devstack reads its objects from disk again and no file system's kernel cache helps it.
pub fn drop_caches() -> Result<(), String> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("drop_caches: {e}"))
}
