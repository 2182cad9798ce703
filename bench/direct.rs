//! The direct client: aws-sdk-s3 doing what each row asks of the file systems, with the
//! requests a careful program would make. Errors come back as short strings.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::StreamExt;

fn fail(what: &str, e: impl std::error::Error) -> String {
    format!("{what}: {}", DisplayErrorContext(e))
}

/// One object uploaded as `part_size` parts, `in_flight` at a time.
pub async fn multipart_put(
    s3: &Client,
    bucket: &str,
    key: &str,
    data: &Bytes,
    part_size: usize,
    in_flight: usize,
) -> Result<(), String> {
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail("CreateMultipartUpload", e))?;
    let id = up.upload_id().unwrap_or_default();
    let starts: Vec<usize> = (0..data.len()).step_by(part_size).collect();
    let parts: Vec<Result<CompletedPart, String>> =
        futures::stream::iter(starts.into_iter().enumerate())
            .map(|(i, start)| {
                let n = i as i32 + 1;
                let end = (start + part_size).min(data.len());
                let req = s3
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(n)
                    .body(ByteStream::from(data.slice(start..end)))
                    .customize()
                    .disable_payload_signing();
                async move {
                    let out = req.send().await.map_err(|e| fail("UploadPart", e))?;
                    Ok(CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build())
                }
            })
            .buffered(in_flight)
            .collect()
            .await;
    let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| fail("CompleteMultipartUpload", e))?;
    Ok(())
}

/// One streaming GET of the whole object; returns its length.
pub async fn get_whole(s3: &Client, bucket: &str, key: &str) -> Result<u64, String> {
    let mut body = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail("GetObject", e))?
        .body;
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        n += chunk.map_err(|e| fail("GetObject body", e))?.len() as u64;
    }
    Ok(n)
}

async fn get_range(
    s3: &Client,
    bucket: &str,
    key: &str,
    start: u64,
    end: u64,
) -> Result<Bytes, String> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .map_err(|e| fail("GetObject (range)", e))?;
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| fail("GetObject body", e))?;
    Ok(body.into_bytes())
}

/// The object read in order as ranged GETs of `part_size`, `in_flight` at a time (each
/// part held until its turn, as a reader needing the bytes in order would); returns its
/// length.
pub async fn get_ranged(
    s3: &Client,
    bucket: &str,
    key: &str,
    size: u64,
    part_size: u64,
    in_flight: usize,
) -> Result<u64, String> {
    let mut parts = futures::stream::iter((0..size).step_by(part_size as usize))
        .map(|start| get_range(s3, bucket, key, start, (start + part_size).min(size)))
        .buffered(in_flight);
    let mut n = 0u64;
    while let Some(part) = parts.next().await {
        n += part?.len() as u64;
    }
    Ok(n)
}

/// A 1-byte ranged GET of each key, one after another; the median time.
pub async fn first_bytes(
    s3: &Client,
    bucket: &str,
    keys: &[String],
) -> Result<std::time::Duration, String> {
    let mut times = Vec::with_capacity(keys.len());
    for key in keys {
        let t = std::time::Instant::now();
        let got = get_range(s3, bucket, key, 0, 1).await?;
        times.push(t.elapsed());
        if got.len() != 1 {
            return Err(format!("{key}: no first byte"));
        }
    }
    times.sort();
    times
        .get(times.len() / 2)
        .copied()
        .ok_or_else(|| "no keys".to_owned())
}

/// Each key read whole by one GET, one after another; the bytes read.
pub async fn get_all(s3: &Client, bucket: &str, keys: &[String]) -> Result<u64, String> {
    let mut n = 0;
    for key in keys {
        n += get_whole(s3, bucket, key).await?;
    }
    Ok(n)
}

/// 4 KiB ranged GETs at `offsets`, one at a time, each checked against `data`.
pub async fn random_gets(
    s3: &Client,
    bucket: &str,
    key: &str,
    offsets: &[u64],
    data: &[u8],
) -> Result<(), String> {
    for &off in offsets {
        let got = get_range(s3, bucket, key, off, off + crate::ops::RANDOM_SIZE as u64).await?;
        if got[..] != data[off as usize..off as usize + crate::ops::RANDOM_SIZE] {
            return Err(format!("wrong data at {off}"));
        }
    }
    Ok(())
}

/// A paged ListObjectsV2 of `prefix` with delimiter `/`; returns how many keys are below it.
pub async fn list(s3: &Client, bucket: &str, prefix: &str) -> Result<usize, String> {
    let mut count = 0;
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .delimiter("/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| fail("ListObjectsV2", e))?;
        // A file system's `mkdir` leaves a marker object named like the prefix itself.
        count += page
            .contents()
            .iter()
            .filter(|o| o.key() != Some(prefix))
            .count();
    }
    Ok(count)
}

/// `n` PutObjects of `content`, one after another.
pub async fn small_puts(
    s3: &Client,
    bucket: &str,
    prefix: &str,
    n: usize,
    content: &Bytes,
) -> Result<(), String> {
    for i in 0..n {
        s3.put_object()
            .bucket(bucket)
            .key(format!("{prefix}{}", crate::ops::small_name(i)))
            .body(ByteStream::from(content.clone()))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| fail("PutObject", e))?;
    }
    Ok(())
}

/// The object's size, if it is there.
pub async fn size_of(s3: &Client, bucket: &str, key: &str) -> Result<u64, String> {
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail("HeadObject", e))?;
    Ok(head.content_length().unwrap_or_default() as u64)
}

pub async fn delete(s3: &Client, bucket: &str, key: &str) -> Result<(), String> {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail("DeleteObject", e))?;
    Ok(())
}
