//! The one HTTP listener: routes each request to the hosted UI, Cognito Identity, or S3, and
//! applies the S3 fault knobs (latency, a fraction of `503 SlowDown`, an outage, and the
//! network's faults: requests never answered, bodies stalled, cut by a reset or ended short,
//! latency spikes; the knobs for conditional writes are applied in [`crate::s3`]), counting
//! each fault it injects.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rand::Rng;
use s3s::Body;
use s3s::service::S3Service;

use crate::cognito::Cognito;
use crate::{hosted_ui, identity};

/// A small, fully buffered answer (HTML, JSON, redirects).
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn html(status: StatusCode, html: String) -> Self {
        Self {
            status,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: html.into(),
        }
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: value.to_string().into(),
        }
    }

    pub fn redirect(location: &str) -> Self {
        Self {
            status: StatusCode::FOUND,
            content_type: "text/plain",
            headers: vec![("location", location.to_owned())],
            body: Bytes::new(),
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", self.content_type)
            .header("cache-control", "no-store");
        for (k, v) in self.headers {
            builder = builder.header(k, v);
        }
        builder
            .body(Body::from(self.body))
            .expect("static headers are valid")
    }
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Faults injected into S3 requests (never into the hosted UI or identity calls), changeable
/// while devstack runs: a test can take S3 down mid-run and bring it back. Each knob is read
/// once per request, so a change applies to requests that arrive after it. Every fault
/// injected is counted, by kind ([`Faults::injected`]), so a test can check that the fault it
/// armed fired.
#[derive(Default)]
pub struct Faults {
    latency_ns: AtomicU64,
    /// `f64` bits.
    s3_error_rate: AtomicU64,
    s3_down: AtomicBool,
    /// `s3_error_rate` applies to first attempts only.
    first_attempts_only: AtomicBool,
    /// Conditional CompleteMultipartUploads still to answer `409 ConditionalRequestConflict`.
    complete_conflicts: AtomicU64,
    conditional_write_hold_ns: AtomicU64,
    slow_downs: AtomicU64,
    unavailable: AtomicU64,
    delayed: AtomicU64,
    conflicts: AtomicU64,
    held_writes: AtomicU64,
    network: Mutex<NetworkFaults>,
    stalls: AtomicU64,
    stalled_bodies: AtomicU64,
    resets: AtomicU64,
    truncated: AtomicU64,
    spikes: AtomicU64,
}

/// Faults of the network and of a server in trouble, each the fraction (0..=1) of S3
/// requests it hits ([`Faults::set_network`]); at most one per request, drawn in this order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkFaults {
    /// The request is accepted and never answered: the connection stays open, silent, for
    /// `stall_for`, then closes.
    pub stall: f64,
    /// A GET's answer starts (headers and part of the body) and then nothing more comes for
    /// `stall_for`; then the connection closes.
    pub stall_body: f64,
    /// The connection is reset mid-body: a GET's answer after part of its body, a PUT after
    /// part of its upload was read.
    pub reset_body: f64,
    /// A GET's body ends early as if complete (no `Content-Length`, a chunked body that is
    /// short): only the client's own length check can tell.
    pub truncate_body: f64,
    /// The answer comes after an added `spike_for`.
    pub spike: f64,
    pub spike_for: Duration,
    pub stall_for: Duration,
}

impl Default for NetworkFaults {
    fn default() -> Self {
        NetworkFaults {
            stall: 0.0,
            stall_body: 0.0,
            reset_body: 0.0,
            truncate_body: 0.0,
            spike: 0.0,
            spike_for: Duration::from_secs(1),
            stall_for: Duration::from_secs(3600),
        }
    }
}

/// The network fault drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetFault {
    Stall,
    StallBody,
    ResetBody,
    TruncateBody,
    Spike,
}

/// How many faults of each kind devstack has injected so far ([`Faults::injected`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// S3 requests answered `503 SlowDown` ([`Faults::set_s3_error_rate`]).
    pub slow_downs: u64,
    /// S3 requests answered `503 ServiceUnavailable` while S3 was down ([`Faults::set_s3_down`]).
    pub unavailable: u64,
    /// S3 requests delayed by the added latency ([`Faults::set_latency`]).
    pub delayed: u64,
    /// Conditional CompleteMultipartUploads answered `409 ConditionalRequestConflict` by
    /// [`Faults::conflict_next_complete`] (not those that lost a real race).
    pub conflicts: u64,
    /// Conditional writes held before committing ([`Faults::set_conditional_write_hold`]).
    pub held_writes: u64,
    /// Requests accepted and never answered ([`NetworkFaults::stall`]).
    pub stalls: u64,
    /// GET answers whose body stopped coming ([`NetworkFaults::stall_body`]).
    pub stalled_bodies: u64,
    /// Connections reset mid-body ([`NetworkFaults::reset_body`]).
    pub resets: u64,
    /// GET bodies ended short ([`NetworkFaults::truncate_body`]).
    pub truncated: u64,
    /// Answers delayed by a latency spike ([`NetworkFaults::spike`]).
    pub spikes: u64,
}

impl FaultCounts {
    /// Faults of every kind.
    pub fn total(&self) -> u64 {
        self.slow_downs
            + self.unavailable
            + self.delayed
            + self.conflicts
            + self.held_writes
            + self.stalls
            + self.stalled_bodies
            + self.resets
            + self.truncated
            + self.spikes
    }
}

impl Faults {
    pub fn new(latency: Duration, s3_error_rate: f64) -> Self {
        let faults = Self::default();
        faults.set_latency(latency);
        faults.set_s3_error_rate(s3_error_rate);
        faults
    }

    /// Added before every S3 request is answered.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_ns.load(Ordering::Relaxed))
    }

    pub fn set_latency(&self, latency: Duration) {
        self.latency_ns.store(nanos(latency), Ordering::Relaxed);
    }

    /// The fraction of S3 requests answered `503 SlowDown`.
    pub fn s3_error_rate(&self) -> f64 {
        f64::from_bits(self.s3_error_rate.load(Ordering::Relaxed))
    }

    /// Clamped to 0..=1; NaN is 0.
    pub fn set_s3_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.s3_error_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Whether [`Faults::set_s3_error_rate`]'s 503s hit only a request's first attempt, as
    /// the AWS SDKs number them (`amz-sdk-request: attempt=1`; a request without the header
    /// counts as a first attempt): a client that retries always gets through, so a test can
    /// show its retries absorbing 503s without a run where they happen not to.
    pub fn s3_error_first_attempts_only(&self) -> bool {
        self.first_attempts_only.load(Ordering::Relaxed)
    }

    pub fn set_s3_error_first_attempts_only(&self, only: bool) {
        self.first_attempts_only.store(only, Ordering::Relaxed);
    }

    /// Whether every S3 request is answered `503 ServiceUnavailable`.
    pub fn s3_down(&self) -> bool {
        self.s3_down.load(Ordering::Relaxed)
    }

    pub fn set_s3_down(&self, down: bool) {
        self.s3_down.store(down, Ordering::Relaxed);
    }

    /// The next `n` conditional CompleteMultipartUploads (with `If-Match` or `If-None-Match`,
    /// to any key) answer `409 ConditionalRequestConflict`, as S3 answers the loser of two
    /// racing conditional writes, before anything else is checked; the upload stays, to be
    /// completed again or aborted. Unconditional completes pass untouched and leave the count
    /// armed. Replaces any count still armed; 0 disarms. (Under `ignore_conditions` no
    /// complete is conditional, so none is refused.)
    pub fn conflict_next_complete(&self, n: u64) {
        self.complete_conflicts.store(n, Ordering::Relaxed);
    }

    /// How many conditional completes [`Faults::conflict_next_complete`] still refuses.
    pub fn conflicts_armed(&self) -> u64 {
        self.complete_conflicts.load(Ordering::Relaxed)
    }

    /// Takes one armed conflict, if any (and counts it).
    pub(crate) fn take_complete_conflict(&self) -> bool {
        let taken = self
            .complete_conflicts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// How long each conditional write (PutObject, CompleteMultipartUpload, CopyObject with a
    /// condition on the destination) waits, marked as in progress on its key, before it
    /// commits: PutObject once its body is in, the others before they assemble or copy.
    /// That makes real races reproducible: a conditional complete of the key in the meantime
    /// is answered `409 ConditionalRequestConflict`, and so is the held write if the key is
    /// deleted meanwhile. Zero (the default): no hold.
    pub fn conditional_write_hold(&self) -> Duration {
        Duration::from_nanos(self.conditional_write_hold_ns.load(Ordering::Relaxed))
    }

    pub fn set_conditional_write_hold(&self, hold: Duration) {
        self.conditional_write_hold_ns
            .store(nanos(hold), Ordering::Relaxed);
    }

    /// Waits out the hold (if any) for a conditional write, counting it when it starts.
    pub(crate) async fn hold_conditional_write(&self) {
        let hold = self.conditional_write_hold();
        if !hold.is_zero() {
            self.held_writes.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(hold).await;
        }
    }

    /// The network faults now armed.
    pub fn network(&self) -> NetworkFaults {
        *self.network.lock().unwrap()
    }

    /// Arms network faults (rates clamped to 0..=1, NaN is 0); the default disarms them.
    pub fn set_network(&self, mut faults: NetworkFaults) {
        for rate in [
            &mut faults.stall,
            &mut faults.stall_body,
            &mut faults.reset_body,
            &mut faults.truncate_body,
            &mut faults.spike,
        ] {
            *rate = if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            };
        }
        *self.network.lock().unwrap() = faults;
    }

    /// Draws the network fault of one request (none: `None`). A body fault is drawn only
    /// for requests that have a body to cut.
    fn draw_network(&self, get: bool, put: bool) -> Option<(NetFault, NetworkFaults)> {
        let n = self.network();
        let mut rng = rand::rng();
        let mut hit = |rate: f64| rate > 0.0 && rng.random_bool(rate);
        let fault = if hit(n.stall) {
            NetFault::Stall
        } else if get && hit(n.stall_body) {
            NetFault::StallBody
        } else if (get || put) && hit(n.reset_body) {
            NetFault::ResetBody
        } else if get && hit(n.truncate_body) {
            NetFault::TruncateBody
        } else if hit(n.spike) {
            NetFault::Spike
        } else {
            return None;
        };
        Some((fault, n))
    }

    fn count(&self, fault: NetFault) {
        let counter = match fault {
            NetFault::Stall => &self.stalls,
            NetFault::StallBody => &self.stalled_bodies,
            NetFault::ResetBody => &self.resets,
            NetFault::TruncateBody => &self.truncated,
            NetFault::Spike => &self.spikes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The faults injected so far, by kind.
    pub fn injected(&self) -> FaultCounts {
        FaultCounts {
            slow_downs: self.slow_downs.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            held_writes: self.held_writes.load(Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
            stalled_bodies: self.stalled_bodies.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            spikes: self.spikes.load(Ordering::Relaxed),
        }
    }
}

/// Why a connection was cut (hyper closes it when the service or a body fails).
fn cut(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, why.to_owned())
}

/// How long a reset body waits after its last bytes, so that they reach the client.
const FLUSH_WAIT: Duration = Duration::from_millis(20);

/// What happens once a faulty body has sent its share.
#[derive(Clone, Copy)]
enum AfterCut {
    /// Nothing more, for this long; then the connection closes.
    Stall(Duration),
    /// The connection is reset.
    Reset,
    /// The body ends, as if it were complete.
    End,
}

/// A response body that sends its first `left` bytes and then does what `then` says.
struct CutBody {
    inner: Body,
    left: u64,
    then: AfterCut,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            let wait = match self.then {
                AfterCut::End => return Poll::Ready(None),
                // A moment for what was sent to leave before the connection goes: hyper
                // drops what it has not written when a body fails.
                AfterCut::Reset => FLUSH_WAIT,
                AfterCut::Stall(d) => d,
            };
            let sleep = self
                .stall
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
            return match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(cut("body cut")))),
                Poll::Pending => Poll::Pending,
            };
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() as u64 > self.left {
                        data.truncate(self.left as usize);
                    }
                    self.left -= data.len() as u64;
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `resp` with its body cut after a random share of it (in its middle half), then `then`.
fn cut_response(resp: Response<Body>, then: AfterCut) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let len = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    // Somewhere in its middle half: the answer has visibly started, and not quite ended.
    let left = if len < 4 {
        len / 2
    } else {
        rand::rng().random_range(len / 4..len - len / 4)
    };
    if matches!(then, AfterCut::End) {
        // Without it the short body looks complete.
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
    }
    let body = CutBody {
        inner: body,
        left,
        then,
        stall: None,
    };
    Response::from_parts(parts, Body::http_body_unsync(body))
}

/// Reads part of a request's body (as far as a random share of its declared length), so
/// that the reset comes mid-upload.
async fn read_part_of(body: Incoming, len: u64) {
    let stop = if len == 0 {
        0
    } else {
        rand::rng().random_range(0..len)
    };
    let mut body = body;
    let mut read = 0u64;
    while read < stop {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => break,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the S3 requests carried, for tests of the clients: how many object bodies (PUTs:
/// PutObject, UploadPart) came signed and how many declared `UNSIGNED-PAYLOAD`
/// (`x-amz-content-sha256`); how many server-side copies were asked for, whole (CopyObject)
/// or by part (UploadPartCopy), answered or refused by the rules of S3 (requests an injected
/// fault answered are not counted).
#[derive(Default)]
pub struct Traffic {
    signed_bodies: AtomicU64,
    unsigned_bodies: AtomicU64,
    object_copies: AtomicU64,
    part_copies: AtomicU64,
}

impl Traffic {
    fn record<B>(&self, req: &Request<B>) {
        if req.method() != hyper::Method::PUT {
            return;
        }
        if req.headers().contains_key("x-amz-copy-source") {
            // An UploadPartCopy names its upload; a CopyObject does not.
            let part = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p.starts_with("uploadId=")));
            let counter = if part {
                &self.part_copies
            } else {
                &self.object_copies
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let Some(declared) = req.headers().get("x-amz-content-sha256") else {
            return;
        };
        let counter = match declared.as_bytes() {
            b"UNSIGNED-PAYLOAD" | b"STREAMING-UNSIGNED-PAYLOAD-TRAILER" => &self.unsigned_bodies,
            // The hash of no body at all: a CopyObject, an UploadPartCopy.
            b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" => return,
            _ => &self.signed_bodies,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// PUTs whose body was signed (its SHA-256, or signed chunks).
    pub fn signed_bodies(&self) -> u64 {
        self.signed_bodies.load(Ordering::Relaxed)
    }

    /// PUTs whose body was sent unsigned.
    pub fn unsigned_bodies(&self) -> u64 {
        self.unsigned_bodies.load(Ordering::Relaxed)
    }

    /// CopyObject requests (refused ones too).
    pub fn object_copies(&self) -> u64 {
        self.object_copies.load(Ordering::Relaxed)
    }

    /// UploadPartCopy requests (refused ones too).
    pub fn part_copies(&self) -> u64 {
        self.part_copies.load(Ordering::Relaxed)
    }
}

pub struct Router {
    pub cognito: Arc<Cognito>,
    pub s3: S3Service,
    pub faults: Arc<Faults>,
    pub traffic: Arc<Traffic>,
}

/// Form bodies of the hosted UI are small; anything bigger is not ours.
const MAX_FORM_BYTES: usize = 1 << 20;

fn parse_pairs(raw: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

impl Router {
    /// An `Err` closes the connection without an answer (a reset, or a stall given up).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, std::io::Error> {
        let target = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let path = req.uri().path().to_owned();
        if let Some(target) = target.filter(|t| t.starts_with(identity::TARGET_PREFIX)) {
            let body = match read_small_body(req.into_body()).await {
                Ok(b) => b,
                Err(reply) => return Ok(reply.into_response()),
            };
            return Ok(identity::handle(&self.cognito, &target, &body).into_response());
        }
        if hosted_ui::matches(&self.cognito, &path) {
            let method = req.method().clone();
            let query = parse_pairs(req.uri().query().unwrap_or_default().as_bytes());
            let body = match read_small_body(req.into_body()).await {
                Ok(b) => b,
                Err(reply) => return Ok(reply.into_response()),
            };
            let reply =
                hosted_ui::handle(&self.cognito, &method, &path, &query, &parse_pairs(&body));
            tracing::debug!(%method, path, status = reply.status.as_u16(), "hosted UI");
            return Ok(reply.into_response());
        }
        let latency = self.faults.latency();
        if !latency.is_zero() {
            self.faults.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(latency).await;
        }
        if self.faults.s3_down() {
            self.faults.unavailable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(method = %req.method(), path, "S3 is down: 503 ServiceUnavailable");
            return Ok(s3_fault(
                "ServiceUnavailable",
                "Service is unable to handle request.",
            ));
        }
        let rate = self.faults.s3_error_rate();
        if rate > 0.0
            && (!self.faults.s3_error_first_attempts_only() || is_first_attempt(&req))
            && rand::rng().random_bool(rate)
        {
            self.faults.slow_downs.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(method = %req.method(), path, "injected 503 SlowDown");
            return Ok(s3_fault("SlowDown", "Please reduce your request rate."));
        }
        let is_get = req.method() == hyper::Method::GET;
        let is_put = req.method() == hyper::Method::PUT;
        let network = self.faults.draw_network(is_get, is_put);
        if let Some((fault, n)) = network {
            tracing::debug!(method = %req.method(), path, ?fault, "injected network fault");
            match fault {
                NetFault::Stall => {
                    self.faults.count(fault);
                    tokio::time::sleep(n.stall_for).await;
                    return Err(cut("stalled request given up"));
                }
                NetFault::ResetBody if is_put => {
                    let len = req
                        .headers()
                        .get(hyper::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    self.faults.count(fault);
                    read_part_of(req.into_body(), len).await;
                    return Err(cut("reset mid-upload"));
                }
                NetFault::Spike => {
                    self.faults.count(fault);
                    tokio::time::sleep(n.spike_for).await;
                }
                _ => {}
            }
        }
        self.traffic.record(&req);
        let method = req.method().clone();
        match self.s3.call(req.map(Body::from)).await {
            Ok(resp) => {
                tracing::debug!(%method, path, status = resp.status().as_u16(), "s3");
                // Body faults hit answers that have a body to cut: a GET's object.
                let then = match network {
                    _ if !resp.status().is_success() => None,
                    Some((NetFault::StallBody, n)) => Some(AfterCut::Stall(n.stall_for)),
                    Some((NetFault::ResetBody, _)) => Some(AfterCut::Reset),
                    Some((NetFault::TruncateBody, _)) => Some(AfterCut::End),
                    _ => None,
                };
                Ok(match (then, network) {
                    (Some(then), Some((fault, _))) => {
                        self.faults.count(fault);
                        cut_response(resp, then)
                    }
                    _ => resp,
                })
            }
            Err(err) => {
                tracing::warn!(%method, path, ?err, "s3 request failed");
                Ok(Reply {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    content_type: "text/plain",
                    headers: Vec::new(),
                    body: "internal error".into(),
                }
                .into_response())
            }
        }
    }
}

/// Whether a request is its client's first attempt: the AWS SDKs send `amz-sdk-request:
/// attempt=N; max=M` with every try.
fn is_first_attempt<B>(req: &Request<B>) -> bool {
    req.headers()
        .get("amz-sdk-request")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("attempt="))
                .map(|n| n.trim() == "1")
        })
        .unwrap_or(true)
}

async fn read_small_body(body: Incoming) -> Result<Bytes, Reply> {
    let limited = http_body_util::Limited::new(body, MAX_FORM_BYTES);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(Reply {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            content_type: "text/plain",
            headers: Vec::new(),
            body: "request body too large".into(),
        }),
    }
}

/// A `503` with S3's XML error body, as S3 answers when it sheds or cannot serve load.
fn s3_fault(code: &str, message: &str) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>devstack-fault</RequestId></Error>"
    );
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("content-type", "application/xml")
        .body(Body::from(xml))
        .expect("static response")
}
