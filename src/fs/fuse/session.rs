//! Mounting: the session's options and threads, and the thread that tells the kernel what
//! the mount learnt changed.

use std::io;
use std::path::Path;
use std::sync::Arc;

use fuser::{BackgroundSession, Config, INodeNo, MountOption, SessionACL};
use tokio::runtime::Handle;

use super::super::Fs;
use super::FuseFs;

/// Sends what `fs` learns changed to the kernel, from a thread of its own: a notification
/// can wait on the kernel's locks, which a FUSE request in flight may hold, so it is never
/// sent from a thread that answers requests. The thread ends with `fs`.
fn forward_invalidations(fs: &Fs, notifier: fuser::Notifier) -> io::Result<()> {
    let queue = fs.connect_kernel();
    std::thread::Builder::new()
        .name("cognifs-inval".into())
        .spawn(move || {
            queue.serve(|what| {
                let sent = match what {
                    // Offset 0, length 0: every cached page, and the attributes.
                    super::super::Invalidate::Inode(ino) => {
                        notifier.inval_inode(INodeNo(*ino), 0, 0)
                    }
                    super::super::Invalidate::Entry(parent, name) => {
                        notifier.inval_entry(INodeNo(*parent), std::ffi::OsStr::new(name))
                    }
                };
                // ENOENT: the kernel holds nothing of it; ENOTCONN: unmounted.
                if let Err(e) = sent {
                    tracing::debug!(?what, error = %e, "kernel invalidation not applied");
                }
            })
        })?;
    Ok(())
}

/// Mounts `fs` and runs the session on a background thread.
pub(in crate::fs) fn spawn(
    fs: Arc<Fs>,
    mountpoint: &Path,
    rt: Handle,
) -> io::Result<BackgroundSession> {
    let opts = fs.options().clone();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("cognifs".into()),
        MountOption::Subtype("cognifs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    if opts.read_only {
        config.mount_options.push(MountOption::RO);
    }
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.fuse_threads.max(1));
    config.clone_fd = opts.fuse_threads > 1;
    let session = fuser::spawn_mount(FuseFs { fs: fs.clone(), rt }, mountpoint, &config)?;
    forward_invalidations(&fs, session.notifier())?;
    if let Err(e) = super::readahead::raise(mountpoint, super::super::read::KERNEL_READAHEAD) {
        tracing::debug!(error = %e, "kernel readahead left at its default");
    }
    Ok(session)
}
