//! devstack's S3: the s3s crate speaks the protocol (routing, SigV4, aws-chunked bodies, XML);
//! this module answers the operations from [`ObjectStore`], decides who may sign (only live
//! credentials devstack issued, or the admin), and enforces the per-identity policy in
//! docs/AWS-SETUP.md strictly — an issued credential reaches only keys under `{identity-id}/`.
//!
//! [`DevS3`] (here) answers the operations, [`DevAuth`] (`auth.rs`) decides who may sign, and
//! [`DevAccess`] (`access.rs`) applies the policy.
//!
//! Conditional writes, as AWS S3 answers them: PutObject and CompleteMultipartUpload take
//! `If-None-Match: *` (`412 PreconditionFailed` when the key holds an object) and
//! `If-Match: <etag>` (412 when the object's etag differs, `404 NoSuchKey` when there is no
//! object); CopyObject takes the same on its destination (read from the raw headers: s3s's
//! input lacks them) and `x-amz-copy-source-if-match` / `-if-none-match` on its source;
//! DeleteObject takes `If-Match`. Etags match quoted or not. Each condition is checked
//! atomically with its write ([`ObjectStore`]). A conditional CompleteMultipartUpload that
//! finds another conditional write of its key in progress, and a conditional write whose
//! key is deleted while it is in progress, are answered `409 ConditionalRequestConflict`.
//! With [`DevS3::ignore_conditions`] every one of these conditions is ignored, as some
//! S3-compatible servers do (reads keep theirs).

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::objects::{
    ListEntry, NewObjectAttrs, ObjectMeta, ObjectStore, Precondition, StoreError, WriteCheck,
    WriteMarker,
};
use crate::server::Faults;

mod access;
mod auth;

pub use access::DevAccess;
pub use auth::DevAuth;

/// S3 caps keys at 1024 bytes of UTF-8.
const MAX_KEY_BYTES: usize = 1024;

pub struct DevS3 {
    pub store: Arc<ObjectStore>,
    pub bucket: String,
    pub region: String,
    pub max_copy_size: u64,
    /// The knobs for conditional writes ([`Faults::conflict_next_complete`],
    /// [`Faults::set_conditional_write_hold`]).
    pub faults: Arc<Faults>,
    /// Accept the conditions of writes, copies and deletes, and write anyway.
    pub ignore_conditions: bool,
}

const PRECONDITION_FAILED: &str = "At least one of the pre-conditions you specified did not hold";
const CONFLICT: &str = "A conflicting conditional operation is currently in progress against this resource. Try again.";

fn store_error(err: StoreError) -> S3Error {
    match err {
        StoreError::NoSuchKey => s3_error!(NoSuchKey),
        StoreError::NoSuchUpload => s3_error!(NoSuchUpload),
        StoreError::InvalidPart(why) => S3Error::with_message(S3ErrorCode::InvalidPart, why),
        StoreError::InvalidPartOrder => s3_error!(InvalidPartOrder),
        StoreError::EntityTooSmall => s3_error!(EntityTooSmall),
        StoreError::InvalidToken => s3_error!(
            InvalidArgument,
            "The continuation token provided is incorrect"
        ),
        StoreError::PreconditionFailed => s3_error!(PreconditionFailed, "{PRECONDITION_FAILED}"),
        StoreError::Conflict => s3_error!(ConditionalRequestConflict, "{CONFLICT}"),
        StoreError::BadDigest => s3_error!(
            BadDigest,
            "The Content-MD5 you specified did not match what we received."
        ),
        StoreError::Body(why) => S3Error::with_message(S3ErrorCode::IncompleteBody, why),
        StoreError::Io(err) => S3Error::internal_error(err),
    }
}

fn attrs(metadata: Option<Metadata>, content_type: Option<ContentType>) -> NewObjectAttrs {
    NewObjectAttrs {
        metadata: metadata.unwrap_or_default().into_iter().collect(),
        content_type,
    }
}

fn user_metadata(meta: &ObjectMeta) -> Option<Metadata> {
    (!meta.metadata.is_empty()).then(|| meta.metadata.clone().into_iter().collect())
}

fn etag(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.clone())
}

/// If-Match / If-None-Match as GET and HEAD apply them.
fn check_read_conditions(
    meta: &ObjectMeta,
    if_match: Option<&IfMatch>,
    if_none_match: Option<&IfNoneMatch>,
) -> S3Result<()> {
    let current = etag(meta);
    if let Some(cond) = if_match {
        let ok = match cond {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => e.value().trim_matches('"') == meta.etag,
        };
        if !ok {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
    }
    if let Some(cond) = if_none_match {
        let hit = match cond {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => e.value().trim_matches('"') == current.value(),
        };
        if hit {
            return Err(s3_error!(NotModified));
        }
    }
    Ok(())
}

/// The preconditions of a write's `If-Match` / `If-None-Match`. S3 takes `If-None-Match` only
/// as `*`.
fn write_preconditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Vec<Precondition>> {
    let mut out = Vec::new();
    match if_match {
        None => {}
        Some(ETagCondition::Any) => out.push(Precondition::Exists),
        Some(ETagCondition::ETag(e)) => out.push(Precondition::Etag(e.value().to_owned())),
    }
    match if_none_match {
        None => {}
        Some(ETagCondition::Any) => out.push(Precondition::Absent),
        Some(ETagCondition::ETag(_)) => {
            return Err(s3_error!(
                NotImplemented,
                "A header you provided implies functionality that is not implemented"
            ));
        }
    }
    Ok(out)
}

/// An etag condition from a raw request header (quoted, unquoted or `*`).
fn header_condition(headers: &hyper::HeaderMap, name: &str) -> S3Result<Option<ETagCondition>> {
    headers
        .get(name)
        .map(|v| {
            ETagCondition::parse_http_header(v.as_bytes())
                .map_err(|_| s3_error!(InvalidArgument, "Invalid {name} header"))
        })
        .transpose()
}

/// S3's `encoding-type=url`: percent-encode all but unreserved characters and `/`.
fn url_encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

fn body_stream(
    body: Option<StreamingBlob>,
) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin {
    match body {
        Some(blob) => blob.map_err(|e| e.to_string()).left_stream(),
        None => futures::stream::empty().right_stream(),
    }
}

/// One page of a listing as S3 returns it: objects and common prefixes, keys through `enc`.
fn listing(
    entries: Vec<ListEntry>,
    enc: &dyn Fn(String) -> String,
) -> (Vec<Object>, Vec<CommonPrefix>) {
    let mut contents = Vec::new();
    let mut common_prefixes = Vec::new();
    for entry in entries {
        match entry {
            ListEntry::Object(key, meta) => contents.push(Object {
                key: Some(enc(key)),
                size: Some(meta.size as i64),
                e_tag: Some(etag(&meta)),
                last_modified: Some(Timestamp::from(meta.last_modified())),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            }),
            ListEntry::CommonPrefix(p) => common_prefixes.push(CommonPrefix {
                prefix: Some(enc(p)),
            }),
        }
    }
    (contents, common_prefixes)
}

impl DevS3 {
    fn check_bucket(&self, bucket: &str) -> S3Result<()> {
        if bucket == self.bucket {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    fn check_key(&self, bucket: &str, key: &str) -> S3Result<()> {
        self.check_bucket(bucket)?;
        if key.is_empty() {
            return Err(s3_error!(InvalidArgument, "empty key"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(s3_error!(KeyTooLongError));
        }
        Ok(())
    }

    /// `preconditions`, unless devstack ignores conditions.
    fn enforced(&self, preconditions: Vec<Precondition>) -> Vec<Precondition> {
        if self.ignore_conditions {
            Vec::new()
        } else {
            preconditions
        }
    }

    /// For a conditional write (non-empty `preconditions`): its in-progress marker on `key`.
    /// `exclusive` (CompleteMultipartUpload): 409 when another conditional write of the key
    /// is in progress.
    fn begin_write(
        &self,
        key: &str,
        preconditions: &[Precondition],
        exclusive: bool,
    ) -> S3Result<Option<WriteMarker<'_>>> {
        if preconditions.is_empty() {
            return Ok(None);
        }
        let marker = self
            .store
            .begin_conditional_write(key, exclusive)
            .map_err(store_error)?;
        Ok(Some(marker))
    }

    /// The hold knob, for a conditional write only.
    async fn hold(&self, marker: &Option<WriteMarker<'_>>) {
        if marker.is_some() {
            self.faults.hold_conditional_write().await;
        }
    }

    fn copy_source(&self, source: &CopySource) -> S3Result<String> {
        match source {
            CopySource::Bucket { bucket, key, .. } => {
                self.check_bucket(bucket)?;
                Ok(key.to_string())
            }
            _ => Err(s3_error!(
                NotImplemented,
                "only bucket copy sources are supported"
            )),
        }
    }
}

#[async_trait::async_trait]
impl S3 for DevS3 {
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.check_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.check_bucket(&req.input.bucket)?;
        let location_constraint = (self.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint,
        }))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let bucket = Bucket {
            name: Some(self.bucket.clone()),
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        };
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(vec![bucket]),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let preconditions = self.enforced(write_preconditions(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?);
        let md5 = match &input.content_md5 {
            None => None,
            Some(md5) => Some(hex::encode(
                base64::engine::general_purpose::STANDARD
                    .decode(md5)
                    .map_err(|_| s3_error!(InvalidDigest))?,
            )),
        };
        // The conditions are checked once the body is in, atomically with the commit.
        let marker = self.begin_write(&input.key, &preconditions, false)?;
        let staged = self
            .store
            .stage(body_stream(input.body))
            .await
            .map_err(store_error)?;
        self.hold(&marker).await;
        let check = WriteCheck {
            preconditions,
            marker: marker.as_ref(),
            md5,
        };
        let meta = self
            .store
            .commit_staged(
                &input.key,
                staged,
                attrs(input.metadata, input.content_type),
                &check,
            )
            .map_err(store_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta)),
            size: Some(meta.size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let (meta, file) = self.store.open_object(&input.key).map_err(store_error)?;
        check_read_conditions(&meta, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let (start, end, content_range) = match input.range {
            None => (0, meta.size, None),
            Some(range) => {
                let r = range
                    .check(meta.size)
                    .map_err(|_| s3_error!(InvalidRange))?;
                let content_range = format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size);
                (r.start, r.end, Some(content_range))
            }
        };
        let mut file = tokio::fs::File::from_std(file);
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(S3Error::internal_error)?;
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file.take(end - start), 256 * 1024);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some((end - start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&meta)),
            last_modified: Some(Timestamp::from(meta.last_modified())),
            metadata: user_metadata(&meta),
            content_type: meta.content_type.clone(),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let meta = self
            .store
            .head(&input.key)
            .ok_or_else(|| s3_error!(NoSuchKey))?;
        check_read_conditions(&meta, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&meta)),
            last_modified: Some(Timestamp::from(meta.last_modified())),
            metadata: user_metadata(&meta),
            content_type: meta.content_type.clone(),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        // If-Match: 412 when the etag differs, 404 NoSuchKey when there is no object.
        let preconditions = self.enforced(write_preconditions(input.if_match.as_ref(), None)?);
        self.store
            .delete_if(&input.key, &preconditions)
            .map_err(store_error)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.check_bucket(&input.bucket)?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            match self.store.delete(&object.key) {
                Ok(_) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(object.key),
                            ..Default::default()
                        });
                    }
                }
                Err(err) => errors.push(Error {
                    key: Some(object.key),
                    code: Some("InternalError".into()),
                    message: Some(err.to_string()),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let src = self.copy_source(&input.copy_source)?;
        if self
            .store
            .head(&src)
            .is_some_and(|m| m.size > self.max_copy_size)
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!(
                    "The specified copy source is larger than the maximum allowable size for a copy source: {}",
                    self.max_copy_size
                ),
            ));
        }
        let mut source = Vec::new();
        if let Some(cond) = &input.copy_source_if_match {
            source.extend(write_preconditions(Some(cond), None)?);
        }
        if let Some(ETagCondition::ETag(e)) = &input.copy_source_if_none_match {
            source.push(Precondition::NotEtag(e.value().to_owned()));
        }
        let source = self.enforced(source);
        // s3s 0.14's CopyObjectInput has no destination conditions: the raw headers do.
        let preconditions = self.enforced(write_preconditions(
            header_condition(&req.headers, "if-match")?.as_ref(),
            header_condition(&req.headers, "if-none-match")?.as_ref(),
        )?);
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE)
            .then(|| attrs(input.metadata, input.content_type));
        let marker = self.begin_write(&input.key, &preconditions, false)?;
        self.hold(&marker).await;
        let check = WriteCheck {
            preconditions,
            marker: marker.as_ref(),
            md5: None,
        };
        let meta = self
            .store
            .copy_if(&src, &input.key, replace, &source, &check)
            .map_err(store_error)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta)),
                last_modified: Some(Timestamp::from(meta.last_modified())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.check_bucket(&input.bucket)?;
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let prefix = input.prefix.clone().unwrap_or_default();
        let page = self
            .store
            .list(
                &prefix,
                input.delimiter.as_deref(),
                input.start_after.as_deref(),
                input.continuation_token.as_deref(),
                max_keys as usize,
            )
            .map_err(store_error)?;
        let url_encode = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url_encode { url_encode_key(&s) } else { s };
        let key_count = page.entries.len() as i32;
        let (contents, common_prefixes) = listing(page.entries, &enc);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(self.bucket.clone()),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            is_truncated: Some(page.next_token.is_some()),
            next_continuation_token: page.next_token,
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(enc),
            encoding_type: input.encoding_type,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            ..Default::default()
        }))
    }

    /// ListObjects (v1), which s3fs and rclone use by default: `marker` instead of a
    /// continuation token (listing resumes after it), and `NextMarker` — the last key or
    /// common prefix of a truncated page — sent whenever the page is truncated (S3 sends it
    /// only with a delimiter; clients without one resume after the last key, which is the same).
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        self.check_bucket(&input.bucket)?;
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let prefix = input.prefix.clone().unwrap_or_default();
        let token = input
            .marker
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|m| crate::objects::marker_token(&prefix, input.delimiter.as_deref(), m));
        let page = self
            .store
            .list(
                &prefix,
                input.delimiter.as_deref(),
                None,
                token.as_deref(),
                max_keys as usize,
            )
            .map_err(store_error)?;
        let url_encode = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url_encode { url_encode_key(&s) } else { s };
        let next_marker = page
            .next_token
            .is_some()
            .then(|| match page.entries.last() {
                Some(ListEntry::Object(key, _)) => Some(key.clone()),
                Some(ListEntry::CommonPrefix(p)) => Some(p.clone()),
                None => None,
            })
            .flatten();
        let (contents, common_prefixes) = listing(page.entries, &enc);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(self.bucket.clone()),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(&enc),
            marker: Some(input.marker.map(&enc).unwrap_or_default()),
            max_keys: Some(max_keys),
            is_truncated: Some(next_marker.is_some()),
            next_marker: next_marker.map(&enc),
            encoding_type: input.encoding_type,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let upload_id = self
            .store
            .create_upload(&input.key, attrs(input.metadata, input.content_type))
            .map_err(S3Error::internal_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let part = self
            .store
            .upload_part(
                &input.upload_id,
                &input.key,
                input.part_number,
                body_stream(input.body),
            )
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let src = self.copy_source(&input.copy_source)?;
        let range = match &input.copy_source_range {
            None => None,
            Some(r) => {
                let (a, b) = r
                    .strip_prefix("bytes=")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidArgument,
                            "x-amz-copy-source-range must be bytes=first-last"
                        )
                    })?;
                Some((a, b + 1))
            }
        };
        let part = self
            .store
            .upload_part_copy(&input.upload_id, &input.key, input.part_number, &src, range)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag)),
                last_modified: Some(Timestamp::from(SystemTime::now())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let parts: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag.map(|e| e.value().to_owned()).unwrap_or_default(),
                )
            })
            .collect();
        let preconditions = self.enforced(write_preconditions(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?);
        if !preconditions.is_empty() && self.faults.take_complete_conflict() {
            return Err(s3_error!(ConditionalRequestConflict, "{CONFLICT}"));
        }
        let marker = self.begin_write(&input.key, &preconditions, true)?;
        self.hold(&marker).await;
        let check = WriteCheck {
            preconditions,
            marker: marker.as_ref(),
            md5: None,
        };
        let meta = self
            .store
            .complete_upload(&input.upload_id, &input.key, &parts, &check)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&meta)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        self.store
            .abort_upload(&input.upload_id, &input.key)
            .map_err(store_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.check_bucket(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads = self
            .store
            .list_uploads(&prefix)
            .into_iter()
            .map(|(key, upload_id, initiated_ns)| MultipartUpload {
                key: Some(key),
                upload_id: Some(upload_id),
                initiated: Some(Timestamp::from(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(initiated_ns),
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            uploads: Some(uploads),
            is_truncated: Some(false),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.check_key(&input.bucket, &input.key)?;
        let parts = self
            .store
            .list_parts(&input.upload_id, &input.key)
            .map_err(store_error)?
            .into_iter()
            .map(|(n, p)| Part {
                part_number: Some(n),
                size: Some(p.size as i64),
                e_tag: Some(ETag::Strong(p.etag)),
                last_modified: Some(Timestamp::from(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(p.last_modified_ns),
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            parts: Some(parts),
            is_truncated: Some(false),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_matches_s3() {
        assert_eq!(url_encode_key("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
    }
}
