//! A Unix socket only this user can reach, served until dropped: a mount's status socket
//! (`metrics/server.rs`) and its control socket (`control.rs`).

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

/// A listening socket and the task accepting on it; dropping it stops serving and removes
/// the file.
pub struct PrivateSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl PrivateSocket {
    /// Listens at `path` (its directory made private to the user first, so the socket is
    /// never reachable by others, not even between bind and chmod), mode 0600; each
    /// connection is served by `serve` on a task of its own.
    pub fn bind<F, Fut>(path: &Path, rt: &tokio::runtime::Handle, serve: F) -> std::io::Result<Self>
    where
        F: Fn(UnixStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if let Some(dir) = path.parent() {
            crate::statefile::private_dir(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = {
            let _rt = rt.enter();
            tokio::net::UnixListener::bind(path)?
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let task = rt.spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    // Out of descriptors, say: try again later rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(serve(conn));
            }
        });
        Ok(PrivateSocket {
            path: path.to_path_buf(),
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
