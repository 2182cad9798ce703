//! CopyObject past S3's single-copy limit (5 GiB): a multipart upload whose parts are
//! UploadPartCopy ranges of the source.

use super::super::{
    Expect, ObjectStore, PartDone, StoreError, StoreResult, UserMeta, percent_encode,
};
use super::S3Store;
use super::sdk::sdk_meta;

/// Part size of a multipart copy (S3 allows 5 MiB to 5 GiB).
const COPY_PART_SIZE: u64 = 512 << 20;
/// UploadPartCopy requests in flight for one large copy.
const COPY_PARTS_IN_FLIGHT: usize = 4;

impl S3Store {
    /// CopyObject for objects over S3's single-copy limit: a multipart upload whose parts
    /// are UploadPartCopy ranges of the source, aborted if any part fails.
    pub(super) async fn copy_by_parts(
        &self,
        (src_key, src_etag): (&str, Option<&str>),
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &Expect,
    ) -> StoreResult<String> {
        use futures::{StreamExt, TryStreamExt};
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(src_key)
            .set_if_match(src_etag.map(str::to_owned))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        // Every part copies this version, whatever the source becomes meanwhile.
        let src_etag = head.e_tag().unwrap_or_default().to_owned();
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        let metadata = match meta {
            Some(m) => sdk_meta(m),
            None => head.metadata().cloned(),
        };
        let dst_key = self.scope.entry_key(dst)?;
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&dst_key)
            .set_metadata(metadata)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let upload_id = upload.upload_id().unwrap_or_default().to_owned();
        let source = percent_encode(&format!("{}/{}", self.bucket, src_key));
        let ranges: Vec<(i32, u64, u64)> = (0..size.div_ceil(COPY_PART_SIZE).max(1))
            .map(|i| {
                (
                    i as i32 + 1,
                    i * COPY_PART_SIZE,
                    ((i + 1) * COPY_PART_SIZE).min(size),
                )
            })
            .collect();
        let parts: StoreResult<Vec<PartDone>> = futures::stream::iter(ranges)
            .map(|(number, start, end)| {
                let req = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(&dst_key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_if_match(&src_etag)
                    .copy_source_range(format!("bytes={start}-{}", end.max(start + 1) - 1))
                    .customize()
                    .config_override(self.copy_config());
                async move {
                    let out = req.send().await.map_err(StoreError::from_sdk)?;
                    let etag = out
                        .copy_part_result()
                        .and_then(|r| r.e_tag())
                        .unwrap_or_default()
                        .to_owned();
                    Ok(PartDone { number, etag })
                }
            })
            .buffer_unordered(COPY_PARTS_IN_FLIGHT)
            .try_collect()
            .await;
        let result = match parts {
            Ok(parts) => {
                self.complete_multipart_if(dst, &upload_id, parts, expect)
                    .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = self.abort_multipart(dst, &upload_id).await;
        }
        result
    }
}
