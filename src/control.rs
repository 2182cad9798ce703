//! Requests to a running mount that act on it (`cognifs offline pin`): a Unix socket beside
//! the status socket (`{pid}.ctl`, mode 0600 in the user's private registry directory).
//!
//! Protocol: the client sends one JSON [`Request`] on one line (at most 8 KiB, within 5 s);
//! the mount does it and answers one JSON [`Reply`] line, then closes. A pin may take as long
//! as its fetch: the client waits (it shows what it asked for first).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::fs::{Fs, PinReport};
use crate::private_socket::PrivateSocket;

/// The largest request line.
const MAX_REQUEST: u64 = 8 << 10;
/// How long a client may take to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// What a client asks. Paths are relative to the mount's root (`""`: all of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Pin { path: String },
    Unpin { path: String },
    Pins,
}

/// What a pin fetched, as the client shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinDone {
    pub path: String,
    pub files: u64,
    pub bytes: u64,
    pub fetched: u64,
    pub failed: Vec<(String, String)>,
}

impl From<PinReport> for PinDone {
    fn from(r: PinReport) -> Self {
        PinDone {
            path: r.path,
            files: r.files,
            bytes: r.bytes,
            fetched: r.fetched,
            failed: r.failed,
        }
    }
}

/// The mount's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Pinned(PinDone),
    Unpinned {
        was_pinned: bool,
    },
    /// The pinned paths (relative to the mount; a directory's ends in `/`) and the bytes
    /// the pinned blocks take on disk.
    Pins {
        paths: Vec<String>,
        bytes: u64,
    },
    Failed {
        error: String,
    },
}

/// The control socket of a running mount; dropping it stops serving and removes the file.
pub struct ControlSocket(PrivateSocket);

impl ControlSocket {
    /// Listens at `path` (in the user's private registry directory), mode 0600.
    pub fn bind(path: &Path, fs: Arc<Fs>, rt: &tokio::runtime::Handle) -> std::io::Result<Self> {
        PrivateSocket::bind(path, rt, move |conn| serve(conn, fs.clone())).map(ControlSocket)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// One client: its request line, then the reply line.
async fn serve(conn: tokio::net::UnixStream, fs: Arc<Fs>) {
    let (read, mut write) = conn.into_split();
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let got = tokio::time::timeout(REQUEST_DEADLINE, reader.read_until(b'\n', &mut line)).await;
    let reply = match (got, serde_json::from_slice::<Request>(&line)) {
        (Ok(Ok(_)), Ok(request)) => handle(&fs, request).await,
        _ => Reply::Failed {
            error: "not a request".into(),
        },
    };
    let mut body = serde_json::to_vec(&reply).unwrap_or_default();
    body.push(b'\n');
    let _ = write.write_all(&body).await;
}

async fn handle(fs: &Fs, request: Request) -> Reply {
    let failed = |e: crate::fs::FsError| Reply::Failed {
        error: match e.errno {
            libc::ENOSPC => {
                "it would not fit the disk cache with what is pinned already (raise --cache-size)"
                    .into()
            }
            libc::EOPNOTSUPP => "this mount has no disk cache".into(),
            _ => e.to_string(),
        },
    };
    match request {
        Request::Pin { path } => match fs.pin(&path).await {
            Ok(report) => Reply::Pinned(report.into()),
            Err(e) => failed(e),
        },
        Request::Unpin { path } => match fs.unpin(&path).await {
            Ok(was_pinned) => Reply::Unpinned { was_pinned },
            Err(e) => failed(e),
        },
        Request::Pins => Reply::Pins {
            paths: fs.pins(),
            bytes: fs.stats().disk_cache.map_or(0, |d| d.pinned_bytes),
        },
    }
}

/// Sends `request` to the mount listening at `socket` and waits for its answer (a pin
/// takes as long as its fetch; `limit` bounds the wait).
pub fn ask(socket: &Path, request: &Request, limit: Duration) -> std::io::Result<Reply> {
    use std::io::{BufRead, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(limit))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    conn.write_all(&line)?;
    let mut answer = Vec::new();
    std::io::BufReader::new(conn.take_limit()).read_until(b'\n', &mut answer)?;
    serde_json::from_slice(&answer).map_err(std::io::Error::other)
}

/// Bounds what is read of an answer.
trait TakeLimit: std::io::Read + Sized {
    fn take_limit(self) -> std::io::Take<Self> {
        self.take(16 << 20)
    }
}

impl<R: std::io::Read> TakeLimit for R {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_junk_is_refused() {
        for r in [
            Request::Pin { path: "a/b".into() },
            Request::Unpin { path: "".into() },
            Request::Pins,
        ] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"format"}"#).is_err());
        proptest::proptest!(|(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200))| {
            let _ = serde_json::from_slice::<Request>(&bytes);
        });
    }
}
