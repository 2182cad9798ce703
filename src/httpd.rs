//! The small HTTP/1.1 servers cognifs runs (the sign-in callback, `/metrics`), on hyper: an
//! accept loop that serves connections concurrently, each bounded in time (headers must
//! arrive within [`Limits::header_read`], the whole exchange within [`Limits::connection`])
//! and in number ([`Limits::connections`]; past it new connections are closed at once), one
//! request per connection. Handlers answer whole bodies.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// What a handler answers.
pub type Reply = Response<Full<Bytes>>;

/// Bounds of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client that has not sent its request head by then is dropped (slowloris).
    pub header_read: Duration,
    /// The longest one connection lives, answer included.
    pub connection: Duration,
    /// Connections served at once.
    pub connections: usize,
}

/// A reply of `status` with `body` as `content_type`, never cached.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Serves `listener` with `handler` until the returned task is aborted; the listener and
/// every connection go with it (await the handle to know they are gone).
pub fn serve<H, F>(listener: TcpListener, limits: Limits, handler: H) -> tokio::task::JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    tokio::spawn(async move {
        // Owned here, so that stopping the server stops its connections too.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors, say: try again later rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Full: this connection is closed unanswered; the ones being served go on.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let handler = handler.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read)
                    .keep_alive(false)
                    .max_buf_size(MAX_HEAD)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(limits.connection, connection).await;
                drop(slot);
            });
        }
    })
}

/// The largest request head read (hyper's smallest allowed buffer).
const MAX_HEAD: usize = 8192;

/// `s` as it may be shown in a terminal or a log: control characters (escape sequences,
/// newlines, C1 controls) and bidirectional overrides dropped, at most `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_drops_controls_and_bounds_length() {
        assert_eq!(
            printable("a\x1b[31mred\x1b[0m\r\nb\u{202E}c\u{9b}", 100),
            "a[31mred[0mbc"
        );
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("déjà vu", 100), "déjà vu");
    }

    #[tokio::test]
    async fn a_silent_connection_does_not_hold_up_the_others_and_is_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            header_read: Duration::from_millis(300),
            connection: Duration::from_secs(5),
            connections: 4,
        };
        let task = serve(listener, limits, |_req| async {
            reply(StatusCode::OK, "text/plain", "hi")
        });
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut talker = tokio::net::TcpStream::connect(addr).await.unwrap();
        talker
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), talker.read_to_string(&mut answer))
            .await
            .expect("answered while another connection is silent")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        // The silent one is closed once its header time is up (an EOF or a reset: either
        // ends the read; a hang fails the timeout).
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest))
            .await
            .expect("the silent connection is closed within the bound");
        task.abort();
    }
}
