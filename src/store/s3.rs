//! [`ObjectStore`] over aws-sdk-s3: the only code in the crate that builds S3 requests
//! (what the SDK answers is made ours in `s3/sdk.rs`; copies past 5 GiB are `s3/copy.rs`).

mod copy;
mod sdk;

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use bytes::{Bytes, BytesMut};

use super::{
    Expect, ListPage, MAX_RECURSIVE_KEYS, ObjectInfo, ObjectStore, PartDone, PieceSink, Scope,
    StoreError, StoreResult, UploadInfo, UserMeta, check_length, percent_encode,
};
use sdk::{body_within, next_chunk, sdk_meta, to_system_time};

/// S3 copies server side and answers when done (up to 5 GiB, or a 512 MiB part): a copy may
/// take this many times the request and operation timeouts.
const COPY_TIMEOUT_FACTOR: u32 = 10;
/// The request timeout when the client has none configured.
const DEFAULT_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
/// The S3 client for a profile, signing with `credentials`. No identity cache: the provider
/// is a cheap read of the watch channel, so renewals take effect on the next request.
pub fn s3_client(
    profile: &crate::config::Profile,
    credentials: impl aws_credential_types::provider::ProvideCredentials + 'static,
) -> aws_sdk_s3::Client {
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(
            profile.bucket_region.clone(),
        ))
        .credentials_provider(credentials)
        .identity_cache(aws_sdk_s3::config::IdentityCache::no_cache())
        .timeout_config(profile.sdk_timeouts())
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard()
                .with_max_attempts(5)
                // 0.2, 0.4, 0.8, 1.6 s between attempts (jittered): a dead network is told in
                // about 3 s, not the SDK's default 15 s (1 s doubling), before the mount goes
                // offline; still backing off exponentially for throttling.
                .with_initial_backoff(std::time::Duration::from_millis(200)),
        );
    if let Some(endpoint) = &profile.s3_endpoint {
        config = config.endpoint_url(endpoint).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

/// S3 access scoped to `bucket/prefix`.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    scope: Scope,
    /// Upload bodies signed rather than `UNSIGNED-PAYLOAD` ([`S3Store::signing_bodies`]).
    sign_bodies: bool,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.scope.prefix())
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// The longest wait for the next bytes of a GET's body: the request timeout (the SDK's
    /// timeouts end when the answer's headers are in).
    fn body_wait(&self) -> std::time::Duration {
        self.client
            .config()
            .timeout_config()
            .and_then(|t| t.operation_attempt_timeout())
            .unwrap_or(DEFAULT_BODY_WAIT)
    }

    /// The client's config for a copy: its timeouts [`COPY_TIMEOUT_FACTOR`] times longer.
    fn copy_config(&self) -> aws_sdk_s3::config::Builder {
        let mut timeouts = aws_smithy_types::timeout::TimeoutConfig::builder();
        if let Some(t) = self.client.config().timeout_config() {
            if let Some(d) = t.operation_attempt_timeout() {
                timeouts = timeouts.operation_attempt_timeout(d * COPY_TIMEOUT_FACTOR);
            }
            if let Some(d) = t.operation_timeout() {
                timeouts = timeouts.operation_timeout(d * COPY_TIMEOUT_FACTOR);
            }
        }
        aws_sdk_s3::config::Builder::default().timeout_config(timeouts.build())
    }

    /// The body of a GET of `len` (> 0) bytes from `start`, if the object has `if_match_etag`.
    async fn ranged_get(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<aws_sdk_s3::primitives::ByteStream> {
        let key = self.scope.object_key(rel)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_match(if_match_etag)
            .range(format!("bytes={}-{}", start, start + len - 1))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.body)
    }

    pub fn new(client: Client, bucket: String, prefix: String) -> Self {
        S3Store {
            client,
            bucket,
            scope: Scope::new(prefix),
            sign_bodies: false,
        }
    }

    /// Signs PutObject and UploadPart bodies (their SHA-256 goes into the signature) instead
    /// of sending them `UNSIGNED-PAYLOAD`: for S3 over plain http, where nothing else keeps
    /// them from being changed on the way (`Profile::signs_upload_bodies`).
    pub fn signing_bodies(mut self, sign: bool) -> Self {
        self.sign_bodies = sign;
        self
    }

    fn object_info(&self, name: String, o: &aws_sdk_s3::types::Object) -> ObjectInfo {
        ObjectInfo {
            name,
            size: o.size().unwrap_or(0).max(0) as u64,
            etag: o.e_tag().unwrap_or_default().to_owned(),
            last_modified: to_system_time(o.last_modified()),
            meta: None,
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn scope(&self) -> &Scope {
        &self.scope
    }

    async fn head(&self, rel: &str) -> StoreResult<Option<ObjectInfo>> {
        let key = self.scope.entry_key(rel)?;
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                return match StoreError::from_sdk(e) {
                    StoreError::NotFound => Ok(None),
                    e => Err(e),
                };
            }
        };
        let meta = out
            .metadata()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(ObjectInfo {
            name: rel.rsplit('/').next().unwrap_or(rel).to_owned(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_owned(),
            last_modified: to_system_time(out.last_modified()),
            meta: Some(meta),
        }))
    }

    async fn probe(&self) -> StoreResult<()> {
        let prefix = self.scope.dir_key("")?;
        // Once, not the SDK's five attempts with backoff: an outage is told in one round trip.
        let once = aws_sdk_s3::config::Builder::default()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .max_keys(1)
            .customize()
            .config_override(once)
            .send()
            .await
            .map(drop)
            .map_err(StoreError::from_sdk)
    }

    async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        let prefix = self.scope.dir_key(dir_rel)?;
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .max_keys(max_keys)
            .set_continuation_token(continuation)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let files = out
            .contents()
            .iter()
            .filter_map(|o| {
                let name = o.key()?.strip_prefix(&prefix)?.to_owned();
                Some(self.object_info(name, o))
            })
            .collect();
        let dirs = out
            .common_prefixes()
            .iter()
            .filter_map(|p| {
                let rest = p.prefix()?.strip_prefix(&prefix)?;
                Some(rest.strip_suffix('/').unwrap_or(rest).to_owned())
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage { files, dirs, next })
    }

    async fn list_recursive(&self, dir_rel: &str) -> StoreResult<Vec<ObjectInfo>> {
        let prefix = self.scope.dir_key(dir_rel)?;
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(next.take())
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            for o in page.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(&prefix)) {
                    if out.len() == MAX_RECURSIVE_KEYS {
                        return Err(StoreError::TooManyKeys);
                    }
                    out.push(self.object_info(name.to_owned(), o));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            next = page.next_continuation_token().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn get_range(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Bytes> {
        if len == 0 {
            self.scope.object_key(rel)?;
            return Ok(Bytes::new());
        }
        let body = self.ranged_get(rel, if_match_etag, start, len).await?;
        // Never more than asked for is held, and never a wait past the request timeout for
        // the next bytes.
        let out = BytesMut::with_capacity(usize::try_from(len).unwrap_or(usize::MAX).min(64 << 20));
        body_within(body, len, out, self.body_wait())
            .await?
            .ok_or_else(|| {
                StoreError::Other(format!(
                    "the answer to a GET of {len} bytes at {start} is longer"
                ))
            })
    }

    async fn get_small(&self, rel: &str, max: u64) -> StoreResult<Option<Bytes>> {
        let key = self.scope.object_key(rel)?;
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            // One byte more than allowed: a body that long is too large.
            .range(format!("bytes=0-{max}"))
            .send()
            .await;
        let body = match sent {
            Ok(out) => out.body,
            // A range of an empty object is not satisfiable.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Ok(Some(Bytes::new()));
            }
            Err(e) => match StoreError::from_sdk(e) {
                StoreError::NotFound => return Ok(None),
                other => return Err(other),
            },
        };
        body_within(body, max, BytesMut::new(), self.body_wait())
            .await?
            .map(Some)
            .ok_or(StoreError::TooLarge)
    }

    async fn get_range_pieces(
        &self,
        rel: &str,
        if_match_etag: &str,
        start: u64,
        len: u64,
        piece: u64,
        on_piece: &PieceSink<'_>,
    ) -> StoreResult<()> {
        if len == 0 {
            self.scope.object_key(rel)?;
            return Ok(());
        }
        let mut body = self.ranged_get(rel, if_match_etag, start, len).await?;
        // Each piece is filled by one copy out of the connection's buffers and handed over
        // as soon as it is whole.
        let piece = piece.max(1);
        let piece_len = |i: usize| piece.min(len - i as u64 * piece) as usize;
        let (mut index, mut received) = (0usize, 0u64);
        let mut filling = BytesMut::with_capacity(piece_len(0));
        let wait = self.body_wait();
        while let Some(mut chunk) = next_chunk(&mut body, wait).await? {
            received += chunk.len() as u64;
            if received > len {
                break;
            }
            while !chunk.is_empty() {
                let take = (piece_len(index) - filling.len()).min(chunk.len());
                filling.extend_from_slice(&chunk.split_to(take));
                if filling.len() == piece_len(index) {
                    on_piece(index, std::mem::take(&mut filling).freeze());
                    index += 1;
                    if (index as u64) * piece < len {
                        filling.reserve(piece_len(index));
                    }
                }
            }
        }
        check_length(received, start, len)
    }

    // PUT and UploadPart bodies are not signed (`UNSIGNED-PAYLOAD`, as mountpoint-s3 sends
    // them): the SDK sends their CRC32, which S3 checks, and over HTTPS TLS keeps them from
    // being changed on the way. A signature would cost a SHA-256 pass over every uploaded
    // byte, about a quarter of a core at 400 MB/s. Over plain http (which a profile must
    // allow, `allow_insecure_http`) they are signed: it protects the bodies of uploads,
    // though never what reads and listings bring back.
    async fn put_if(
        &self,
        rel: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<String> {
        let key = self.scope.entry_key(rel)?;
        let (if_match, if_none_match) = expect.headers();
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_if_match(if_match)
            .set_if_none_match(if_none_match)
            .set_metadata(sdk_meta(meta))
            .body(body.into())
            .customize();
        let out = if self.sign_bodies {
            put
        } else {
            put.disable_payload_signing()
        };
        let out = out.send().await.map_err(StoreError::from_sdk)?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    async fn create_multipart(&self, rel: &str, meta: &UserMeta) -> StoreResult<String> {
        let key = self.scope.object_key(rel)?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .set_metadata(sdk_meta(meta))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Other("CreateMultipartUpload without an upload id".into()))
    }

    async fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<PartDone> {
        let key = self.scope.object_key(rel)?;
        let part = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(upload_id)
            .part_number(number)
            .body(body.into())
            .customize();
        let part = if self.sign_bodies {
            part
        } else {
            part.disable_payload_signing()
        };
        let out = part.send().await.map_err(StoreError::from_sdk)?;
        Ok(PartDone {
            number,
            etag: out.e_tag().unwrap_or_default().to_owned(),
        })
    }

    async fn complete_multipart_if(
        &self,
        rel: &str,
        upload_id: &str,
        mut parts: Vec<PartDone>,
        expect: &Expect,
    ) -> StoreResult<String> {
        let (if_match, if_none_match) = expect.headers();
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let key = self.scope.entry_key(rel)?;
        parts.sort_by_key(|p| p.number);
        let done = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .into_iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(p.etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(upload_id)
            .set_if_match(if_match)
            .set_if_none_match(if_none_match)
            .multipart_upload(done)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    async fn abort_multipart(&self, rel: &str, upload_id: &str) -> StoreResult<()> {
        let key = self.scope.entry_key(rel)?;
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    async fn list_uploads(&self, dir_rel: &str) -> StoreResult<Vec<UploadInfo>> {
        let prefix = self.scope.dir_key(dir_rel)?;
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id())
                    && let Some(rel) = self.scope.relative(k)
                {
                    out.push(UploadInfo {
                        rel: rel.to_owned(),
                        upload_id: id.to_owned(),
                        initiated: u.initiated().and_then(|t| SystemTime::try_from(*t).ok()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn delete_if(&self, rel: &str, expect: &Expect) -> StoreResult<()> {
        let key = self.scope.entry_key(rel)?;
        let if_match = match expect {
            Expect::Version(e) => Some(e.clone()),
            _ => None,
        };
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_if_match(if_match)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match StoreError::from_sdk(e) {
                StoreError::NotFound => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn copy_if(
        &self,
        src: &str,
        src_etag: Option<&str>,
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &Expect,
    ) -> StoreResult<String> {
        use aws_sdk_s3::types::MetadataDirective;
        if src.ends_with('/') != dst.ends_with('/') {
            return Err(StoreError::InvalidPath(dst.to_owned()));
        }
        let src_key = self.scope.entry_key(src)?;
        let dst_key = self.scope.entry_key(dst)?;
        let (if_match, if_none_match) = expect.headers();
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(&dst_key)
            .copy_source(percent_encode(&format!("{}/{}", self.bucket, src_key)))
            .set_copy_source_if_match(src_etag.map(str::to_owned))
            .set_if_match(if_match)
            .set_if_none_match(if_none_match);
        req = match meta {
            None => req.metadata_directive(MetadataDirective::Copy),
            Some(m) => req
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(sdk_meta(m)),
        };
        let out = match req
            .customize()
            .config_override(self.copy_config())
            .send()
            .await
        {
            Ok(out) => out,
            // S3 copies at most 5 GiB in one CopyObject; bigger objects go part by part.
            Err(e)
                if e.code() == Some("InvalidRequest")
                    && DisplayErrorContext(&e)
                        .to_string()
                        .contains("copy source is larger") =>
            {
                return self
                    .copy_by_parts((&src_key, src_etag), dst, meta, expect)
                    .await;
            }
            Err(e) => return Err(StoreError::from_sdk(e)),
        };
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(percent_encode("b/a b#%+?ü"), "b/a%20b%23%25%2B%3F%C3%BC");
    }
}
