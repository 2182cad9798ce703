//! What aws-sdk-s3 answers, made ours: its errors as [`StoreError`], its times, metadata
//! maps and response bodies (read bounded in size and in waiting).

use std::time::SystemTime;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use bytes::{Bytes, BytesMut};

use super::super::{StoreError, StoreResult, UserMeta};

impl StoreError {
    /// Classifies an SDK failure by its S3 error code and HTTP status.
    pub(super) fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = match &err {
            SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
            SdkError::ResponseError(e) => Some(e.raw().status().as_u16()),
            _ => None,
        };
        let code = err.code().map(str::to_owned);
        let text = DisplayErrorContext(&err).to_string();
        match (&err, code.as_deref(), status) {
            (_, Some("NoSuchKey" | "NotFound"), _) | (_, _, Some(404)) => StoreError::NotFound,
            (_, Some("PreconditionFailed"), _) | (_, _, Some(412)) => StoreError::Changed,
            (_, Some("ConditionalRequestConflict"), _) => StoreError::Raced,
            (_, Some("KeyTooLongError" | "KeyTooLong"), _) => StoreError::KeyTooLong,
            (
                _,
                Some(
                    "AccessDenied"
                    | "ExpiredToken"
                    | "InvalidAccessKeyId"
                    | "InvalidToken"
                    | "SignatureDoesNotMatch"
                    | "TokenRefreshRequired"
                    | "AllAccessDisabled",
                ),
                _,
            )
            // A HEAD's 403 has no body, so no code: "Forbidden" is all S3 says.
            | (_, _, Some(403)) => {
                StoreError::AccessDenied(code.unwrap_or_else(|| "Forbidden".into()))
            }
            (SdkError::TimeoutError(_), _, _) => StoreError::Timeout(text),
            (SdkError::DispatchFailure(d), _, _) if d.is_timeout() => StoreError::Timeout(text),
            // Identity resolution failures (no or expired credentials) surface before any
            // request is sent; they mean "not allowed", not "broken".
            (SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_), _, _)
                if text.to_ascii_lowercase().contains("credential") =>
            {
                StoreError::AccessDenied("credentials unavailable".into())
            }
            // No answer at all: refused, reset, no route, no name (the SDK retried).
            (SdkError::DispatchFailure(d), _, _) if d.is_io() || d.is_other() => {
                StoreError::Unreachable(text)
            }
            _ => StoreError::Other(text),
        }
    }
}

pub(super) fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A GET's whole body into `out`, if it holds at most `limit` bytes (`None` once it is
/// longer: never more is held), waiting at most `wait` for each next bytes.
pub(super) async fn body_within(
    mut body: aws_sdk_s3::primitives::ByteStream,
    limit: u64,
    mut out: BytesMut,
    wait: std::time::Duration,
) -> StoreResult<Option<Bytes>> {
    while let Some(chunk) = next_chunk(&mut body, wait).await? {
        if (out.len() + chunk.len()) as u64 > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out.freeze()))
}

/// The next bytes of a GET's body (`None` at its end), waiting at most `wait` for them.
pub(super) async fn next_chunk(
    body: &mut aws_sdk_s3::primitives::ByteStream,
    wait: std::time::Duration,
) -> StoreResult<Option<Bytes>> {
    match tokio::time::timeout(wait, body.next()).await {
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(e))) => Err(StoreError::Other(format!("reading body: {e}"))),
        Ok(None) => Ok(None),
        Err(_) => Err(StoreError::Timeout(format!(
            "no bytes of a GET's body for {} s",
            wait.as_secs_f64()
        ))),
    }
}

/// The SDK wants a `HashMap`; `None` sends no metadata headers at all.
pub(super) fn sdk_meta(meta: &UserMeta) -> Option<std::collections::HashMap<String, String>> {
    (!meta.is_empty()).then(|| meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_metadata_sends_no_headers() {
        assert_eq!(sdk_meta(&UserMeta::new()), None);
        let m = UserMeta::from([("mode".to_owned(), "33188".to_owned())]);
        assert_eq!(sdk_meta(&m).unwrap()["mode"], "33188");
    }
}
