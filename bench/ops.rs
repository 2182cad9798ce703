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

/// `ls -l DIR` (GNU ls: readdir, then lstat and the ACL/SELinux xattr calls per entry),
/// output counted: `expect` entries.
pub fn ls_long(dir: &Path, expect: usize) -> Result<Duration, String> {
    let t = Instant::now();
    let out = Command::new("ls")
        .arg("-l")
        .arg("--color=never")
        .arg(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail("ls -l", dir, e))?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail("ls -l", dir, err.lines().next().unwrap_or("failed")));
    }
    // The first line is "total N".
    let entries = out.stdout.split(|&b| b == b'\n').count().saturating_sub(2);
    if entries != expect {
        return Err(fail(
            "ls -l",
            dir,
            format!("{entries} entries, not {expect}"),
        ));
    }
    Ok(elapsed)
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
