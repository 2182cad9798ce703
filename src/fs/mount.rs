//! A live FUSE mount of an [`Fs`]: mounting, unmounting, detaching.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::{Fs, MountOptions};
use crate::store::ObjectStore;

/// A live mount; dropping it unmounts.
pub struct Mount {
    /// Retries kept uploads; stopped at unmount (the next mount adopts what is left).
    retrier: tokio::task::JoinHandle<()>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    fs: Arc<Fs>,
    runtime: tokio::runtime::Handle,
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// Unmounts and waits for the FUSE session thread to finish.
    ///
    /// (The listing indexes still due are written first, for a few seconds at most.)
    pub fn unmount(mut self) -> anyhow::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> anyhow::Result<()> {
        self.retrier.abort();
        if let Some(session) = self.session.take() {
            session
                .umount_and_join()
                .with_context(|| format!("unmounting {}", self.mountpoint.display()))?;
            // Directory times still written behind go up now, and the listing indexes of
            // the directories changed (within a bound: an unmount never waits long for
            // them). On a thread of its own: the caller may be on the runtime.
            let (fs, rt) = (self.fs.clone(), self.runtime.clone());
            let flushed = std::thread::spawn(move || {
                rt.block_on(async {
                    let flushed = fs.flush_dir_times().await;
                    fs.write_indexes_at_unmount().await;
                    flushed
                })
            })
            .join();
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "could not store directory times at unmount");
            }
            self.fs.close_caches();
        }
        Ok(())
    }

    /// Lazy unmount: the mount leaves the namespace at once (nothing new can be opened),
    /// while files already open keep working; the session ends when the last one is
    /// closed (see [`Mount::join`]). A plain unmount would fail with `EBUSY` instead.
    pub fn detach(&self) -> anyhow::Result<()> {
        let err: std::io::Error =
            match rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH) {
                Ok(()) => return Ok(()),
                Err(e) => e.into(),
            };
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err).with_context(|| format!("detaching {}", self.mountpoint.display()));
        }
        // Not root: the setuid helper may unmount what this user mounted.
        for helper in ["fusermount3", "fusermount"] {
            let status = std::process::Command::new(helper)
                .args(["-u", "-z", "--"])
                .arg(&self.mountpoint)
                .stdin(std::process::Stdio::null())
                .status();
            if status.is_ok_and(|s| s.success()) {
                return Ok(());
            }
        }
        anyhow::bail!("could not detach {}", self.mountpoint.display())
    }

    /// Blocks until the filesystem is unmounted from outside (e.g. `fusermount3 -u`), or
    /// after [`Mount::detach`], until the last open file is closed.
    pub fn join(mut self) -> anyhow::Result<()> {
        if let Some(session) = self.session.take() {
            session.join()?;
            self.fs.close_caches();
        }
        self.retrier.abort();
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!("{e:#}");
        }
    }
}

/// Mounts `store` at `mountpoint`. FUSE callbacks hand their work to `runtime` and reply
/// from there, so no FUSE thread ever waits on the network.
pub fn mount(
    store: Arc<dyn ObjectStore>,
    opts: MountOptions,
    mountpoint: &Path,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<Mount> {
    // Which conditional writes the server honours decides how conflicts are caught.
    let (store, conditions) = if opts.read_only {
        (store, None)
    } else {
        let checked = runtime.block_on(crate::store::checked_store(store));
        (checked.clone() as Arc<dyn ObjectStore>, Some(checked))
    };
    let fs = Arc::new(Fs::new(store, opts));
    if let Some(c) = conditions {
        fs.set_conditions(c);
    }
    // Before the kernel sees the mount: clean up after a previous crash of this prefix,
    // and learn the root's attributes, which the kernel's first path walk asks for (so the
    // first command's round trips are its own). Failing that, the kernel's getattr asks.
    runtime.block_on(async {
        let (_, root) = tokio::join!(fs.recover(), fs.getattr(super::ROOT_INO));
        if let Err(e) = root {
            tracing::debug!(error = %e, "the root's attributes are asked for later");
        }
    });
    // Kept uploads are retried in the background for as long as the mount lives.
    let weak = Arc::downgrade(&fs);
    let retrier = runtime.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(fs) = weak.upgrade() else { break };
            fs.stay_in_touch().await;
            fs.write_due_indexes(false).await;
            fs.retry_pending().await;
            fs.recheck_conditions().await;
        }
    });
    let session = super::fuse::spawn(fs.clone(), mountpoint, runtime.clone())
        .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    Ok(Mount {
        retrier,
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        fs,
        runtime,
    })
}
