//! The one HTTP listener: routes each request to the hosted UI, Cognito Identity, or S3, and
//! applies the S3 fault knobs (latency, a fraction of `503 SlowDown`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
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

pub struct Faults {
    pub latency: Duration,
    pub s3_error_rate: f64,
}

pub struct Router {
    pub cognito: Arc<Cognito>,
    pub s3: S3Service,
    pub faults: Faults,
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
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        if self.faults.s3_error_rate > 0.0
            && rand::rng().random_bool(self.faults.s3_error_rate.min(1.0))
        {
            tracing::debug!(method = %req.method(), path, "injected 503 SlowDown");
            return Ok(slow_down());
        }
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

fn slow_down() -> Response<Body> {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
               <Message>Please reduce your request rate.</Message><RequestId>devstack-fault</RequestId></Error>";
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("content-type", "application/xml")
        .body(Body::from(xml.to_owned()))
        .expect("static response")
}
