//! Uploading a spool as it stands: one PutObject below the part size, else a multipart
//! upload with `parts_in_flight` parts at once (memory: part size × parts in flight), aborted
//! if it fails. Also the PutObject of a small file whose bytes are still in memory.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::UploadCtx;
use crate::fs::meta::Meta;
use crate::fs::spool::Spool;
use crate::store::{Expect, StoreResult};

/// The first `size` bytes of `spool` at `rel`, if it holds what `expect` says: one PUT of
/// `held` when those are the bytes (a small file still in memory), else from the spool.
pub async fn upload(
    ctx: &Arc<UploadCtx>,
    spool: &Spool,
    rel: &str,
    size: u64,
    meta: &Meta,
    held: Option<Bytes>,
    expect: &Expect,
) -> StoreResult<String> {
    match held {
        Some(data) if data.len() as u64 == size => put(ctx, rel, data, meta, expect).await,
        _ => upload_spool(ctx, spool, rel, size, meta, expect).await,
    }
}

pub async fn upload_spool(
    ctx: &Arc<UploadCtx>,
    spool: &Spool,
    rel: &str,
    size: u64,
    meta: &Meta,
    expect: &Expect,
) -> StoreResult<String> {
    let (store, part_size) = (&ctx.store, ctx.part_size);
    if size < part_size {
        let _permit = ctx.budget.acquire().await;
        let data = spool.read_exact(0, size).await?;
        return put_permitted(ctx, rel, data, meta, expect).await;
    }
    let user = meta.to_user();
    let progress = ctx.progress.start(rel, size, false);
    let id = store.create_multipart(rel, &user).await?;
    ctx.upload_started(rel, &id);
    let parts = size.div_ceil(part_size);
    let result = async {
        // Owned per part: borrowed captures here trip the higher-ranked `Send` check on the
        // FUSE tasks that await this.
        let done = futures::stream::iter(0..parts)
            .map(|i| {
                let (ctx, spool, rel, id) =
                    (ctx.clone(), spool.clone(), rel.to_owned(), id.clone());
                let sent = progress.sent_counter();
                async move {
                    let _permit = ctx.budget.acquire().await;
                    let off = i * part_size;
                    let len = part_size.min(size - off);
                    let data = spool.read_exact(off, len).await?;
                    let done = ctx.store.upload_part(&rel, &id, i as i32 + 1, data).await?;
                    sent.add(len);
                    StoreResult::Ok(done)
                }
            })
            .buffer_unordered(ctx.parts_in_flight.max(1))
            .try_collect::<Vec<_>>()
            .await?;
        store.complete_multipart_if(rel, &id, done, expect).await
    }
    .await;
    if result.is_err() {
        super::abort(ctx, rel, &id).await;
    } else {
        ctx.upload_ended(&id);
    }
    result
}

/// One PutObject of a whole file below the part size whose bytes are in hand.
pub async fn put(
    ctx: &UploadCtx,
    rel: &str,
    data: Bytes,
    meta: &Meta,
    expect: &Expect,
) -> StoreResult<String> {
    let _permit = ctx.budget.acquire().await;
    put_permitted(ctx, rel, data, meta, expect).await
}

/// [`put`], the caller holding a budget permit for `data`.
async fn put_permitted(
    ctx: &UploadCtx,
    rel: &str,
    data: Bytes,
    meta: &Meta,
    expect: &Expect,
) -> StoreResult<String> {
    let size = data.len() as u64;
    let progress = ctx.progress.start(rel, size, false);
    let etag = ctx.store.put_if(rel, data, &meta.to_user(), expect).await?;
    progress.add_sent(size);
    Ok(etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, RequestKind};
    use std::time::Duration;
    use tokio::sync::Semaphore;

    fn ctx(store: Arc<MemoryStore>, budget: usize) -> Arc<UploadCtx> {
        Arc::new(UploadCtx {
            store,
            part_size: 5 << 20,
            parts_in_flight: 4,
            budget: Arc::new(Semaphore::new(budget)),
            progress: Default::default(),
            unaborted: Default::default(),
            abort_tried: Default::default(),
            journal: None,
        })
    }

    async fn spool_of(len: usize) -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path(), 1).unwrap();
        spool
            .write_at(Bytes::from(vec![9u8; len]), 0)
            .await
            .unwrap();
        (dir, spool)
    }

    #[tokio::test]
    async fn an_upload_waits_for_the_mount_wide_budget() {
        let store = Arc::new(MemoryStore::new("b", "p"));
        let ctx = ctx(store.clone(), 1);
        let (_dir, spool) = spool_of(12 << 20).await;
        // Another upload holds the only permit: this one must wait, not fail.
        let held = ctx.budget.clone().acquire_owned().await.unwrap();
        let task = {
            let (ctx, spool) = (ctx.clone(), spool.clone());
            tokio::spawn(async move {
                upload_spool(
                    &ctx,
                    &spool,
                    "f",
                    12 << 20,
                    &Meta::default(),
                    &Expect::Absent,
                )
                .await
            })
        };
        // It starts the upload, then needs a permit for its first part: from there on it
        // can only wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.counts().get(RequestKind::CreateMultipart) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the upload never started"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        assert_eq!(
            store.counts().get(RequestKind::UploadPart),
            0,
            "no part sent without a permit"
        );
        drop(held);
        task.await.unwrap().unwrap();
        assert_eq!(store.counts().get(RequestKind::UploadPart), 3);
        assert_eq!(store.get_raw("p/f").unwrap().0.len(), 12 << 20);
    }

    #[tokio::test]
    async fn a_small_file_in_memory_is_put_as_it_is_and_other_bytes_are_not_trusted() {
        let store = Arc::new(MemoryStore::new("b", "p"));
        let ctx = ctx(store.clone(), 1);
        let (_dir, spool) = spool_of(5).await;
        let modified = std::time::SystemTime::now();
        let held = Some(Bytes::from_static(b"hello"));
        let super::super::Uploaded { meta, .. } = super::super::upload(
            &ctx,
            &spool,
            "f",
            5,
            (&Meta::default(), modified),
            None,
            held,
            &Expect::Absent,
        )
        .await
        .unwrap();
        assert_eq!(&store.get_raw("p/f").unwrap().0[..], b"hello");
        assert_eq!(
            meta.mtime,
            Some(modified),
            "the time of the last write is stored"
        );
        // Bytes of another length are not the file: the spool is read instead.
        let short = Some(Bytes::from_static(b"hi"));
        super::super::upload(
            &ctx,
            &spool,
            "g",
            5,
            (&Meta::default(), modified),
            None,
            short,
            &Expect::Absent,
        )
        .await
        .unwrap();
        assert_eq!(&store.get_raw("p/g").unwrap().0[..], &[9u8; 5]);
        assert_eq!(store.counts().get(RequestKind::Put), 2);
        assert_eq!(
            ctx.budget.available_permits(),
            1,
            "the permit is given back"
        );
    }

    #[tokio::test]
    async fn a_stream_takes_writes_without_waiting_until_a_part_fills() {
        let store = Arc::new(MemoryStore::new("b", "p"));
        let ctx = ctx(store.clone(), 8);
        let mut s = super::super::Stream::new("f".into(), Meta::default(), &ctx);
        let mib = vec![7u8; 1 << 20];
        for i in 0..4 {
            assert_eq!(s.accept_now(&ctx, i << 20, &mib), Some(true));
        }
        assert_eq!(
            s.accept_now(&ctx, 4 << 20, &mib),
            None,
            "the fifth MiB fills a part"
        );
        assert_eq!(s.accept_now(&ctx, 9, &mib), Some(false), "not at the end");
        assert!(!s.started(), "nothing sent without waiting");
        assert!(s.accept(&ctx, 4 << 20, &mib).await.unwrap());
        assert!(s.started());
        s.finish(&ctx, &Expect::Absent).await.unwrap();
        assert_eq!(store.get_raw("p/f").unwrap().0, vec![7u8; 5 << 20]);
    }

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload() {
        let store = Arc::new(MemoryStore::new("b", "p"));
        store.fail_nth(
            Some(RequestKind::UploadPart),
            1,
            crate::store::Fault::SlowDown,
        );
        let (_dir, spool) = spool_of(11 << 20).await;
        let r = upload_spool(
            &ctx(store.clone(), 8),
            &spool,
            "f",
            11 << 20,
            &Meta::default(),
            &Expect::Absent,
        )
        .await;
        assert!(r.is_err());
        assert_eq!(store.open_uploads(), 0);
        assert!(store.get_raw("p/f").is_none());
        let small = upload_spool(
            &ctx(store.clone(), 8),
            &spool,
            "g",
            10,
            &Meta::default(),
            &Expect::Absent,
        )
        .await;
        small.unwrap();
        assert_eq!(
            store.counts().get(RequestKind::Put),
            1,
            "below a part: one PUT"
        );
    }
}
