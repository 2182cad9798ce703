//! Serving [`MountStatus`] snapshots: the status socket (`cognifs status`, `cognifs
//! unmount`) and the `/metrics` HTTP endpoint (hyper, through [`crate::httpd`]).
//!
//! `/metrics` answers only requests whose `Host` is loopback (`localhost`, `127.0.0.1`,
//! `[::1]`) or the address it was given: a web page that rebinds its own DNS name to
//! 127.0.0.1 sends its name as `Host` and gets 403, so it cannot read the labels (the mount
//! point holds the user name, the S3 URL the identity id).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{MountStatus, Probe, prometheus};
use crate::httpd::{self, Limits, Reply};
use crate::private_socket::PrivateSocket;

/// How long a client of either server may take.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);

/// What a client may tell a mount over its status socket, after reading its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketCommand {
    /// `cognifs logout` revoked the profile's sign-in: stop using it.
    SignedOut,
}

impl SocketCommand {
    fn word(self) -> &'static str {
        match self {
            SocketCommand::SignedOut => "signed-out",
        }
    }

    fn parse(raw: &[u8]) -> Option<SocketCommand> {
        match raw.trim_ascii() {
            b"signed-out" => Some(SocketCommand::SignedOut),
            _ => None,
        }
    }
}

/// What the mount does with a [`SocketCommand`].
pub type CommandHandler = Arc<dyn Fn(SocketCommand) + Send + Sync>;

/// The status socket of a running mount; dropping it stops serving and removes the file.
///
/// Protocol: on connect the mount writes one JSON [`MountStatus`] and a newline, then shuts
/// its writing side (a reader sees the end at once); a client may then send one command
/// word ([`SocketCommand`], at most 64 bytes, within 5 s) and close.
pub struct StatusSocket(PrivateSocket);

impl StatusSocket {
    /// Listens at `path` (its directory made private to the user first), mode 0600.
    pub fn bind(
        path: &Path,
        probe: Arc<Probe>,
        on_command: CommandHandler,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<StatusSocket> {
        PrivateSocket::bind(path, rt, move |mut conn| {
            let (probe, on_command) = (probe.clone(), on_command.clone());
            async move {
                let mut body = serde_json::to_vec(&probe.snapshot()).unwrap_or_default();
                body.push(b'\n');
                let exchange = async {
                    conn.write_all(&body).await?;
                    conn.shutdown().await?;
                    let mut word = Vec::new();
                    (&mut conn).take(64).read_to_end(&mut word).await?;
                    std::io::Result::Ok(word)
                };
                if let Ok(Ok(word)) = tokio::time::timeout(CLIENT_DEADLINE, exchange).await
                    && let Some(command) = SocketCommand::parse(&word)
                {
                    on_command(command);
                }
            }
        })
        .map(StatusSocket)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Asks the mount listening at `socket` for its status (blocking, at most 2 s).
pub fn query(socket: &Path) -> std::io::Result<MountStatus> {
    use std::io::Read;
    let mut conn = std::os::unix::net::UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    serde_json::from_slice(&raw).map_err(std::io::Error::other)
}

/// Tells the mount listening at `socket` `command` (blocking, at most 2 s); returns the
/// status it reported before.
pub fn tell(socket: &Path, command: SocketCommand) -> std::io::Result<MountStatus> {
    use std::io::{Read, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(command.word().as_bytes())?;
    conn.write_all(b"\n")?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    serde_json::from_slice(&raw).map_err(std::io::Error::other)
}

/// A warning for a metrics address others can reach; `None` for loopback.
pub fn exposure_warning(addr: &SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "--metrics-addr {addr} is not a loopback address: anyone who can reach it can read this mount's metrics (file paths of uploads are not among them, but activity is)"
        )
    })
}

/// `/metrics` over HTTP/1.1; dropping it stops serving.
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr`: done before mounting, so that a port in use fails the mount at once.
    pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        std::net::TcpListener::bind(addr)
    }

    /// Serves `/metrics` on `std_listener` (from [`MetricsServer::listen`]) in the
    /// background.
    pub fn start(
        std_listener: std::net::TcpListener,
        probe: Arc<Probe>,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<MetricsServer> {
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let _rt = rt.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let limits = Limits {
            header_read: CLIENT_DEADLINE,
            connection: CLIENT_DEADLINE * 2,
            connections: 16,
        };
        let task = httpd::serve(listener, limits, move |req| {
            let answer = respond(&req, addr, &probe);
            async move { answer }
        });
        Ok(MetricsServer { addr, task })
    }

    /// The address bound (the port the system chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `host` (a `Host` header's value) names loopback or the address served: the
/// DNS-rebinding check. When serving every address (`0.0.0.0`, `::`), any IP literal is the
/// address served; a DNS name other than `localhost` never is.
fn host_allowed(host: &str, served: SocketAddr) -> bool {
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        Some(rest) => match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == served.ip() || served.ip().is_unspecified(),
        Err(_) => false,
    }
}

/// The answer to one request.
fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    served: SocketAddr,
    probe: &Probe,
) -> Reply {
    const TEXT: &str = "text/plain; charset=utf-8";
    // A request without `Host` comes from no browser (they always send one): nothing to
    // rebind.
    if let Some(host) = req.headers().get(hyper::header::HOST)
        && !host.to_str().is_ok_and(|h| host_allowed(h, served))
    {
        return httpd::reply(
            StatusCode::FORBIDDEN,
            TEXT,
            "Host must be localhost, a loopback address or the address served\n",
        );
    }
    // hyper sends no body for HEAD.
    match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/metrics") => httpd::reply(
            StatusCode::OK,
            prometheus::CONTENT_TYPE,
            prometheus::render(&probe.sample()),
        ),
        ("GET" | "HEAD", _) => httpd::reply(StatusCode::NOT_FOUND, TEXT, "only /metrics here\n"),
        _ => httpd::reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET /metrics\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Fs, MountOptions};
    use crate::metrics::MountIdent;
    use crate::store::{MemoryStore, RequestStats};
    use tokio::io::AsyncReadExt;

    fn probe() -> Arc<Probe> {
        let store = Arc::new(MemoryStore::new("b", "p"));
        Arc::new(Probe {
            ident: MountIdent {
                pid: 7,
                mountpoint: "/m".into(),
                profile: "default".into(),
                s3_url: "s3://b/p/".into(),
                started: 1,
            },
            fs: Arc::new(Fs::new(store, MountOptions::default())),
            requests: Arc::new(RequestStats::default()),
            credentials: None,
            sign_in_ends: Arc::default(),
        })
    }

    #[test]
    fn only_loopback_is_quiet() {
        assert!(exposure_warning(&"127.0.0.1:9100".parse().unwrap()).is_none());
        assert!(exposure_warning(&"[::1]:9100".parse().unwrap()).is_none());
        assert!(exposure_warning(&"0.0.0.0:9100".parse().unwrap()).is_some());
        assert!(exposure_warning(&"192.168.1.5:9100".parse().unwrap()).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_socket_answers_with_json_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mounts").join("7.sock");
        let (told_tx, told) = std::sync::mpsc::channel();
        let told_tx = std::sync::Mutex::new(told_tx);
        let on_command: CommandHandler = Arc::new(move |c| {
            let _ = told_tx.lock().unwrap().send(c);
        });
        let sock = StatusSocket::bind(
            &path,
            probe(),
            on_command,
            &tokio::runtime::Handle::current(),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let p = path.clone();
        let status = tokio::task::spawn_blocking(move || query(&p))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.pid, 7);
        let live = status.live.unwrap();
        assert_eq!(live.requests.len(), 11);
        assert_eq!(live.writes.files_open, 0);
        assert_eq!(live.cache.hit_ratio, None);
        assert!(told.try_recv().is_err(), "a status query is no command");
        // A command after the status: the mount hears it.
        let p = path.clone();
        let before = tokio::task::spawn_blocking(move || tell(&p, SocketCommand::SignedOut))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(before.pid, 7);
        assert_eq!(
            told.recv_timeout(Duration::from_secs(5)).unwrap(),
            SocketCommand::SignedOut
        );
        // An unknown word is ignored.
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut c = std::os::unix::net::UnixStream::connect(&p).unwrap();
            c.write_all(b"rm -rf\n").unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            c.read_to_end(&mut Vec::new()).unwrap();
        })
        .await
        .unwrap();
        assert!(told.recv_timeout(Duration::from_millis(300)).is_err());
        drop(sock);
        assert!(!path.exists(), "the socket is removed when the server goes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_over_http() {
        let server = MetricsServer::start(
            MetricsServer::listen("127.0.0.1:0".parse().unwrap()).unwrap(),
            probe(),
            &tokio::runtime::Handle::current(),
        )
        .unwrap();
        let addr = server.local_addr();
        let get = |req: &'static str| async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        assert!(body.contains("\ncognifs_read_bytes_total 0\n"), "{body}");
        let len: usize = ok
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let missing = get("GET / HTTP/1.1\r\nHost: localhost:9\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = get("POST /metrics HTTP/1.1\r\nHost: [::1]:9\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        // DNS rebinding: a web page's own name, now resolving to 127.0.0.1.
        let rebound = get("GET /metrics HTTP/1.1\r\nHost: evil.example:9464\r\n\r\n").await;
        assert!(rebound.starts_with("HTTP/1.1 403 "), "{rebound}");
        assert!(!rebound.contains("cognifs_mount_info"), "{rebound}");
        let head = get("HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");
    }

    #[test]
    fn only_loopback_names_or_the_served_address_pass_the_host_check() {
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let lan: SocketAddr = "192.168.1.5:9464".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        for host in [
            "localhost",
            "LOCALHOST:9464",
            "127.0.0.1:9464",
            "127.0.0.2",
            "[::1]:9464",
            "[::1]",
        ] {
            assert!(host_allowed(host, local), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9464",
            "localhost.evil.example",
            "192.168.1.5",
            "[::1",
            "[::1]x",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!host_allowed(host, local), "{host}");
        }
        assert!(host_allowed("192.168.1.5:9464", lan));
        assert!(!host_allowed("192.168.1.6:9464", lan));
        assert!(host_allowed("10.0.0.7:9464", any));
        assert!(!host_allowed("printer.lan:9464", any));
    }
}
