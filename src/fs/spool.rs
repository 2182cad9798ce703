//! The spool: an anonymous local file holding the whole current contents of one file open
//! for writing. It is created under `MountOptions::spool_dir` without a name (`O_TMPFILE`;
//! where the filesystem lacks it, named and unlinked at once), so a crash leaves nothing
//! behind and the data dies with the last handle. File I/O that may block never runs on an
//! async worker: FUSE writes run on the FUSE thread ([`Spool::write_now`]), other I/O
//! beyond a small copy into the page cache on tokio's blocking pool.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::store::{StoreError, StoreResult};

static SPOOL_SEQ: AtomicU64 = AtomicU64::new(0);

/// Reads and writes up to this size run on the calling thread: they copy to or from the
/// page cache in microseconds, less than a hand-off to the blocking pool and back costs
/// (a small file's write, its read-back). Larger ones, which may wait for the disk under
/// writeback, go to the blocking pool.
const INLINE_IO: usize = 128 << 10;

/// The name a spool file has for the instant between its creation and its unlinking:
/// `PID-INO-SEQ` (recovery removes those of dead processes).
pub(super) fn spool_name(ino: u64) -> String {
    format!(
        "{}-{}-{}",
        std::process::id(),
        ino,
        SPOOL_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A file in `dir` that never has a name (`O_TMPFILE`): one call, no directory entry to
/// write or remove, nothing left behind by a crash.
fn anonymous_file(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
}

fn named_then_unlinked(dir: &Path, ino: u64) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(spool_name(ino));
    // Private from its creation: for the instant it has a name, nobody else may open it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    // Anonymous from here on: the data dies with the handle, never left behind.
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[derive(Clone)]
pub struct Spool {
    file: Arc<std::fs::File>,
    /// Bytes from the start that are allocated on disk ahead of the writes; `u64::MAX` once
    /// the filesystem refused.
    reserved: Arc<AtomicU64>,
}

/// Files up to this size are written without reserving room ahead.
const RESERVE_FROM: u64 = 8 << 20;
/// How far ahead of a large file's writes room is reserved. Writes into reserved blocks
/// skip ext4's per-page delayed allocation: 512 MiB of 1 MiB writes took 48 ms instead of
/// 80 ms, on the writer's path.
const RESERVE_STEP: u64 = 64 << 20;

/// Runs blocking spool I/O off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(e) => Err(StoreError::Local(format!("spool task failed: {e}"))),
    }
}

impl Spool {
    pub fn create(dir: &Path, ino: u64) -> StoreResult<Self> {
        let file = match anonymous_file(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::statefile::private_dir(dir)?;
                anonymous_file(dir)
            }
            other => other,
        }
        .or_else(|e| match e.raw_os_error() {
            // A filesystem without O_TMPFILE: a named file, unlinked at once.
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL) => named_then_unlinked(dir, ino),
            _ => Err(e),
        })?;
        Ok(Spool {
            file: Arc::new(file),
            reserved: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Allocates room on disk up to past `end` ahead of a large file's writes, without
    /// changing the file's size. A refusal (no support, no room) only stops reserving: the
    /// writes themselves report a full disk.
    fn reserve_for(&self, end: u64) {
        let have = self.reserved.load(Ordering::Relaxed);
        if end <= RESERVE_FROM || end <= have {
            return;
        }
        let to = end.div_ceil(RESERVE_STEP) * RESERVE_STEP;
        // The kernel's offsets are signed.
        if i64::try_from(to).is_err() {
            return;
        }
        let done = rustix::fs::fallocate(
            &*self.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            have,
            to - have,
        );
        if done.is_ok() {
            self.reserved.fetch_max(to, Ordering::Relaxed);
        } else {
            self.reserved.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// A spool holding a copy of the first `size` bytes of `source` (a kept upload's data,
    /// adopted by a new mount).
    pub async fn copy_of(
        dir: &Path,
        ino: u64,
        source: std::fs::File,
        size: u64,
    ) -> StoreResult<Self> {
        let spool = Spool::create(dir, ino)?;
        let file = spool.file.clone();
        blocking(move || {
            use std::io::Read;
            let copied = std::io::copy(&mut source.take(size), &mut &*file)?;
            if copied == size {
                Ok(())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{copied} of {size} bytes"),
                ))
            }
        })
        .await?;
        Ok(spool)
    }

    /// The file itself, for copying it whole (into the pending area).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Writes on the calling thread, which may block: a FUSE thread or the blocking pool's,
    /// never an async worker's (but for a copy up to `INLINE_IO`).
    pub fn write_now(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.reserve_for(offset.saturating_add(data.len() as u64));
        self.file.write_all_at(data, offset)
    }

    pub async fn write_at(&self, data: Bytes, offset: u64) -> StoreResult<()> {
        if data.len() <= INLINE_IO {
            return Ok(self.write_now(&data, offset)?);
        }
        let spool = self.clone();
        blocking(move || spool.write_now(&data, offset)).await
    }

    /// Exactly `len` bytes at `offset` (the caller knows the size).
    pub async fn read_exact(&self, offset: u64, len: u64) -> StoreResult<Bytes> {
        let read = move |file: &std::fs::File| {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset)?;
            Ok(Bytes::from(buf))
        };
        if len <= INLINE_IO as u64 {
            return read(&self.file).map_err(StoreError::from);
        }
        let file = self.file.clone();
        blocking(move || read(&file)).await
    }

    pub async fn set_len(&self, size: u64) -> StoreResult<()> {
        let file = self.file.clone();
        blocking(move || file.set_len(size)).await?;
        // A shorter file gave its reserved blocks past the end back.
        let _ = self
            .reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r != u64::MAX && r > size).then_some(size)
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_file_is_private_from_its_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = named_then_unlinked(dir.path(), 7).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "unlinked"
        );
    }

    #[tokio::test]
    async fn holes_read_as_zeros_and_nothing_is_left_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path(), 7).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A spool directory that does not exist yet is made.
        let deeper = dir.path().join("a/b");
        Spool::create(&deeper, 7).unwrap();
        assert_eq!(std::fs::read_dir(&deeper).unwrap().count(), 0);
        spool.write_at(Bytes::from_static(b"xy"), 4).await.unwrap();
        assert_eq!(&spool.read_exact(0, 6).await.unwrap()[..], b"\0\0\0\0xy");
        spool.set_len(5).await.unwrap();
        assert!(spool.read_exact(0, 6).await.is_err());
        assert_eq!(&spool.read_exact(3, 2).await.unwrap()[..], b"\0x");
    }

    #[tokio::test]
    async fn room_reserved_ahead_of_a_large_file_is_not_part_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path(), 9).unwrap();
        let mib = vec![5u8; 1 << 20];
        for i in 0..10u64 {
            spool.write_now(&mib, i << 20).unwrap();
        }
        assert_eq!(
            spool.file().metadata().unwrap().len(),
            10 << 20,
            "only what was written"
        );
        // Reserved ahead, up to the next 64 MiB step, and allocated on disk. (The temp dir's
        // filesystem, ext4 or tmpfs on the machines this runs on, supports fallocate: a
        // refusal here is a failure, not a pass.)
        use std::os::unix::fs::MetadataExt;
        let allocated = || spool.file().metadata().unwrap().blocks() * 512;
        assert_eq!(spool.reserved.load(Ordering::Relaxed), 64 << 20);
        assert!(allocated() >= 64 << 20, "{} bytes allocated", allocated());
        // A shorter file gives the room past its end back.
        spool.set_len(3 << 20).await.unwrap();
        assert_eq!(spool.reserved.load(Ordering::Relaxed), 3 << 20);
        assert!(allocated() < 4 << 20, "{} bytes allocated", allocated());
        // Past the end again: what lies between reads as zeros.
        spool.write_now(b"end", (12 << 20) - 3).unwrap();
        assert_eq!(spool.file().metadata().unwrap().len(), 12 << 20);
        let back = spool.read_exact((3 << 20) - 1, 2).await.unwrap();
        assert_eq!(&back[..], &[5, 0]);
        assert_eq!(
            &spool.read_exact((12 << 20) - 3, 3).await.unwrap()[..],
            b"end"
        );
    }

    #[tokio::test]
    async fn small_and_large_io_meet_in_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path(), 8).unwrap();
        let large: Vec<u8> = (0..3 * INLINE_IO).map(|i| (i % 251) as u8).collect();
        // Large on the blocking pool, small on the caller's thread, over each other.
        spool.write_at(Bytes::from(large.clone()), 0).await.unwrap();
        spool
            .write_at(Bytes::from_static(b"small"), 10)
            .await
            .unwrap();
        let mut expected = large;
        expected[10..15].copy_from_slice(b"small");
        let whole = spool.read_exact(0, expected.len() as u64).await.unwrap();
        assert_eq!(&whole[..], &expected[..]);
        assert_eq!(&spool.read_exact(8, 9).await.unwrap()[..], &expected[8..17]);
    }
}
