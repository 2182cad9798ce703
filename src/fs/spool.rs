//! The spool: an anonymous local file holding the whole current contents of one file open
//! for writing. It is created under `MountOptions::spool_dir` and unlinked at once, so a
//! crash leaves nothing behind and the data dies with the last handle. Blocking file I/O
//! runs on tokio's blocking pool, never on an async worker.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::store::{StoreError, StoreResult};

static SPOOL_SEQ: AtomicU64 = AtomicU64::new(0);

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

#[derive(Clone)]
pub struct Spool {
    file: Arc<std::fs::File>,
}

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
        std::fs::create_dir_all(dir)?;
        let path = dir.join(spool_name(ino));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Anonymous from here on: the data dies with the handle, never left behind.
        std::fs::remove_file(&path)?;
        Ok(Spool {
            file: Arc::new(file),
        })
    }

    /// A spool holding a copy of the first `size` bytes of the file at `path` (a kept
    /// upload adopted by a new mount).
    pub async fn copy_of(dir: &Path, ino: u64, path: &Path, size: u64) -> StoreResult<Self> {
        let spool = Spool::create(dir, ino)?;
        let (file, path) = (spool.file.clone(), path.to_path_buf());
        blocking(move || {
            use std::io::Read;
            let source = std::fs::File::open(path)?;
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

    pub async fn write_at(&self, data: Bytes, offset: u64) -> StoreResult<()> {
        let file = self.file.clone();
        blocking(move || file.write_all_at(&data, offset)).await
    }

    /// Exactly `len` bytes at `offset` (the caller knows the size).
    pub async fn read_exact(&self, offset: u64, len: u64) -> StoreResult<Bytes> {
        let file = self.file.clone();
        blocking(move || {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    pub async fn set_len(&self, size: u64) -> StoreResult<()> {
        let file = self.file.clone();
        blocking(move || file.set_len(size)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holes_read_as_zeros_and_nothing_is_left_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path(), 7).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        spool.write_at(Bytes::from_static(b"xy"), 4).await.unwrap();
        assert_eq!(&spool.read_exact(0, 6).await.unwrap()[..], b"\0\0\0\0xy");
        spool.set_len(5).await.unwrap();
        assert!(spool.read_exact(0, 6).await.is_err());
        assert_eq!(&spool.read_exact(3, 2).await.unwrap()[..], b"\0x");
    }
}
