//! The one HTTP listener: routes each request to the hosted UI, Cognito Identity, or S3, and
//! applies the S3 fault knobs (latency, a fraction of `503 SlowDown`, an outage; the knobs
//! for conditional writes are applied in [`crate::s3`]), counting each fault it injects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
}

impl FaultCounts {
    /// Faults of every kind.
    pub fn total(&self) -> u64 {
        self.slow_downs + self.unavailable + self.delayed + self.conflicts + self.held_writes
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

    /// The faults injected so far, by kind.
    pub fn injected(&self) -> FaultCounts {
        FaultCounts {
            slow_downs: self.slow_downs.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            held_writes: self.held_writes.load(Ordering::Relaxed),
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
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
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
        self.traffic.record(&req);
        let method = req.method().clone();
        match self.s3.call(req.map(Body::from)).await {
            Ok(resp) => {
                tracing::debug!(%method, path, status = resp.status().as_u16(), "s3");
                Ok(resp)
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
