//! Uploading a spool as it stands: one PutObject below the part size, else a multipart
//! upload with `parts_in_flight` parts at once (memory: part size × parts in flight), aborted
//! if it fails.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::UploadCtx;
use crate::fs::meta::Meta;
use crate::fs::spool::Spool;
use crate::store::StoreResult;

pub async fn upload_spool(
    ctx: &Arc<UploadCtx>,
    spool: &Spool,
    rel: &str,
    size: u64,
    meta: Meta,
) -> StoreResult<String> {
    let (store, part_size) = (&ctx.store, ctx.part_size);
    let user = meta.to_user();
    if size < part_size {
        let _permit = ctx.budget.acquire().await;
        let data = spool.read_exact(0, size).await?;
        return store.put(rel, data, &user).await;
    }
    let id = store.create_multipart(rel, &user).await?;
    let parts = size.div_ceil(part_size);
    let result = async {
        // Owned per part: borrowed captures here trip the higher-ranked `Send` check on the
        // FUSE tasks that await this.
        let done = futures::stream::iter(0..parts)
            .map(|i| {
                let (ctx, spool, rel, id) =
                    (ctx.clone(), spool.clone(), rel.to_owned(), id.clone());
                async move {
                    let _permit = ctx.budget.acquire().await;
                    let off = i * part_size;
                    let data = spool.read_exact(off, part_size.min(size - off)).await?;
                    ctx.store.upload_part(&rel, &id, i as i32 + 1, data).await
                }
            })
            .buffer_unordered(ctx.parts_in_flight.max(1))
            .try_collect::<Vec<_>>()
            .await?;
        store.complete_multipart(rel, &id, done).await
    }
    .await;
    if result.is_err()
        && let Err(e) = store.abort_multipart(rel, &id).await
    {
        tracing::warn!(key = rel, error = %e, "could not abort a failed multipart upload");
    }
    result
}
