//! The mount against what would wear it down, through a real FUSE mount over devstack: an
//! inode table that follows the kernel's cache instead of growing with every name seen.
//! Needs /dev/fuse and root (as on the CI machines).

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use support::*;

/// Waits (bounded) until `done` holds, checking every 50 ms; false if it never did.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// Held by each test that drops the kernel's caches or needs them kept: one drops them
/// under the other's feet otherwise.
static KERNEL_CACHES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Asks the kernel to drop every dentry and inode it can (each dropped inode of the mount
/// comes back as a FUSE `forget`).
fn drop_kernel_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "2")
        .expect("writing /proc/sys/vm/drop_caches (tests run as root)");
}

/// `ls -lR` over 2,000 names fills the inode table; once the kernel forgets them, the table
/// is back to what the kernel still holds — while an open file keeps its number.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_inode_table_forgets_what_the_kernel_forgets() {
    let _caches = KERNEL_CACHES.lock().await;
    with_timeout(240, async {
        let running = start().await;
        let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
        let objects: Vec<(String, Vec<u8>)> = (0..2000)
            .map(|i| (format!("{id}/d{}/f{i}", i % 20), vec![b'x'; i % 7]))
            .collect();
        put_many(&s3, &running.profile.bucket, objects, 32).await;
        let spool = tempfile::tempdir().unwrap();
        let m = mount_user(&running, "alice", "alice-pass", spool_opts(spool.path())).await;
        let root = m.path().to_owned();
        let (held, held_ino, listed) = blocking(move || {
            let out = std::process::Command::new("ls")
                .arg("-lR")
                .arg(&root)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let listed = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with('-'))
                .count();
            let path = root.join("d3/f3");
            let held = std::fs::File::open(&path).unwrap();
            let ino = held.metadata().unwrap().ino();
            (held, ino, listed)
        })
        .await;
        assert_eq!(listed, 2000);
        let fs = m.mount().fs().clone();
        let full = fs.inodes().entries();
        assert!(full > 2000, "{full} entries after ls -lR");
        drop_kernel_caches();
        let shrunk = eventually(Duration::from_secs(30), || {
            drop_kernel_caches();
            fs.inodes().entries() < 50
        })
        .await;
        assert!(
            shrunk,
            "{} entries left after the kernel forgot",
            fs.inodes().entries()
        );
        // The open file kept its entry and its number.
        let path = m.join("d3/f3");
        let (by_path, by_fd) = blocking(move || {
            (
                std::fs::metadata(&path).unwrap().ino(),
                held.metadata().unwrap().ino(),
            )
        })
        .await;
        assert_eq!((by_path, by_fd), (held_ino, held_ino));
        drop(m);
        running.shutdown().await;
    })
    .await;
}

/// Log lines of this test binary, for the panic test.
#[derive(Clone, Default)]
struct Logged(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logged {
    type Writer = Logged;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logged {
    /// This test binary's log (one subscriber per process: the tests that read it share it).
    fn shared() -> &'static Logged {
        static LOGGED: std::sync::OnceLock<Logged> = std::sync::OnceLock::new();
        LOGGED.get_or_init(|| {
            let logged = Logged::default();
            let _ = tracing_subscriber::fmt()
                .with_writer(logged.clone())
                .with_ansi(false)
                .try_init();
            logged
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A panic in a FUSE callback — on the FUSE thread or in its task on the runtime — fails
/// that one call with EIO and one log line naming the operation and the path; the next
/// calls, the same operation included, are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_callback_is_eio_for_that_call_and_the_mount_goes_on() {
    let _caches = KERNEL_CACHES.lock().await;
    let logged = Logged::shared();
    with_timeout(120, async {
        let running = start().await;
        let (id, s3) = user_s3(&running, "alice", "alice-pass").await;
        put(
            &s3,
            &running.profile.bucket,
            &format!("{id}/d/f"),
            b"data".to_vec(),
        )
        .await;
        let spool = tempfile::tempdir().unwrap();
        let m = mount_user(&running, "alice", "alice-pass", spool_opts(spool.path())).await;
        let fs = m.mount().fs().clone();
        let root = m.path().to_owned();
        // (operation, after waiting on the runtime, what makes the kernel call it)
        type Probe = fn(&std::path::Path) -> std::io::Result<()>;
        let probes: [(&'static str, bool, Probe); 5] = [
            ("getattr", false, |r| {
                std::fs::metadata(r.join("d/f")).map(drop)
            }),
            ("lookup", true, |r| {
                std::fs::metadata(r.join("d/f")).map(drop)
            }),
            ("readdirplus", false, |r| {
                std::fs::read_dir(r.join("d"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map(drop)
            }),
            ("create", true, |r| std::fs::write(r.join("d/new"), b"x")),
            ("statfs", false, |r| {
                let c = std::ffi::CString::new(r.to_str().unwrap()).unwrap();
                // SAFETY: `c` is NUL-terminated; `st` is written by the call.
                let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
                match unsafe { libc::statvfs(c.as_ptr(), &mut st) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            }),
        ];
        for (op, after_wait, probe) in probes {
            // The kernel must ask (no cached attributes or pages to answer from).
            let r = root.clone();
            blocking(move || {
                let _ = std::process::Command::new("sh")
                    .arg("-c")
                    .arg("echo 2 > /proc/sys/vm/drop_caches")
                    .status();
                drop(r);
            })
            .await;
            fs.inject_panic(op, after_wait);
            let r = root.clone();
            let failed = blocking(move || probe(&r)).await;
            assert_eq!(
                failed.as_ref().err().and_then(|e| e.raw_os_error()),
                Some(libc::EIO),
                "{op}: {failed:?}"
            );
            let r = root.clone();
            let again = blocking(move || probe(&r)).await;
            assert!(again.is_ok(), "{op} after the panic: {again:?}");
        }
        let text = logged.text();
        // (getattr's and lookup's paths are whichever the kernel asked about first)
        for (op, path) in [
            ("getattr", ""),
            ("lookup", ""),
            ("readdirplus", "d/"),
            ("create", "d/new"),
            ("statfs", ""),
        ] {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains("a bug: this call failed with EIO")
                        && l.contains(&format!("op=\"{op}\""))
                })
                .collect();
            assert_eq!(lines.len(), 1, "{op}: {lines:?}");
            assert!(lines[0].contains(&format!("path={path}")), "{}", lines[0]);
            assert!(
                lines[0].contains(&format!("injected panic in {op}")),
                "{}",
                lines[0]
            );
        }
        assert_eq!(std::fs::read(m.join("d/new")).unwrap(), b"x");
        drop(m);
        running.shutdown().await;
    })
    .await;
}

/// What the files do not support is answered as a disk file system answers it, and leaves no
/// log line (fuser's defaults log a warning per call): an ioctl (every Python `open()` asks
/// `isatty`, a TCGETS) is ENOTTY each time; `SEEK_DATA`/`SEEK_HOLE` (coreutils' `cp`) follow
/// the kernel's generic rule; `copy_file_range` copies or is refused so that `cp` falls back;
/// `fallocate` is EOPNOTSUPP; `poll` says ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_the_files_do_not_support_are_answered_quietly() {
    use std::os::fd::AsRawFd;
    let logged = Logged::shared();
    with_timeout(120, async {
        let running = start().await;
        let spool = tempfile::tempdir().unwrap();
        let m = mount_user(&running, "alice", "alice-pass", spool_opts(spool.path())).await;
        let (file, copy) = (m.join("probe"), m.join("probe-copy"));
        let errno = || std::io::Error::last_os_error().raw_os_error();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        blocking(move || {
            std::fs::write(&file, &data).unwrap();
            let f = std::fs::File::open(&file).unwrap();
            let fd = f.as_raw_fd();
            for _ in 0..3 {
                // SAFETY: `fd` is open; `term` is written by the call.
                let mut term: libc::termios = unsafe { std::mem::zeroed() };
                let rc = unsafe { libc::ioctl(fd, libc::TCGETS, &mut term) };
                assert_eq!((rc, errno()), (-1, Some(libc::ENOTTY)), "TCGETS");
            }
            // SAFETY: plain calls on an open descriptor.
            let (data_at, hole_at) = unsafe {
                (
                    libc::lseek(fd, 0, libc::SEEK_DATA),
                    libc::lseek(fd, 0, libc::SEEK_HOLE),
                )
            };
            assert_eq!((data_at, hole_at), (0, 8192), "SEEK_DATA, SEEK_HOLE");
            // SAFETY: as above (back to the start, which SEEK_HOLE moved).
            assert_eq!(unsafe { libc::lseek(fd, 0, libc::SEEK_SET) }, 0);
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, 1000) };
            assert_eq!(
                (ready, pfd.revents & libc::POLLIN),
                (1, libc::POLLIN),
                "poll"
            );
            let out = std::fs::File::create(&copy).unwrap();
            // SAFETY: both descriptors are open; null offsets use the files' positions.
            let copied = unsafe {
                libc::copy_file_range(
                    fd,
                    std::ptr::null_mut(),
                    out.as_raw_fd(),
                    std::ptr::null_mut(),
                    8192,
                    0,
                )
            };
            match copied {
                8192 => {
                    drop(out);
                    assert_eq!(std::fs::read(&copy).unwrap(), expected, "the copy");
                }
                -1 => assert!(
                    [libc::EOPNOTSUPP, libc::EXDEV, libc::ENOSYS].contains(&errno().unwrap()),
                    "copy_file_range: {:?}",
                    errno()
                ),
                n => panic!("copy_file_range copied {n} of 8192 bytes"),
            }
            let w = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            // SAFETY: a plain call on a descriptor open for writing.
            let rc = unsafe { libc::fallocate(w.as_raw_fd(), 0, 0, 4096) };
            assert_eq!((rc, errno()), (-1, Some(libc::EOPNOTSUPP)), "fallocate");
        })
        .await;
        let text = logged.text();
        assert!(
            !text.contains("Not Implemented"),
            "a call was logged as not implemented: {text}"
        );
        drop(m);
        running.shutdown().await;
    })
    .await;
}
