//! A multipart upload fed while a file is written front to back (see the module above).
//! Memory per stream is bounded by part size × (parts in flight + 1).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::UploadCtx;
use super::progress::Entry;
use crate::fs::meta::Meta;
use crate::store::{Expect, PartDone, StoreError, StoreResult};

pub struct Stream {
    rel: String,
    meta: Meta,
    upload_id: Option<String>,
    /// Accepted bytes not yet sent as a part.
    buf: BytesMut,
    /// Bytes accepted so far; the next sequential write starts here.
    end: u64,
    next_part: i32,
    parts: Vec<JoinHandle<StoreResult<PartDone>>>,
    /// Parts of this stream in flight.
    in_flight: Arc<Semaphore>,
    /// Listed among the uploads in flight once the upload has started.
    progress: Option<Entry>,
}

impl Stream {
    pub fn new(rel: String, meta: Meta, ctx: &UploadCtx) -> Self {
        Stream {
            rel,
            meta,
            upload_id: None,
            buf: BytesMut::new(),
            end: 0,
            next_part: 1,
            parts: Vec::new(),
            in_flight: Arc::new(Semaphore::new(ctx.parts_in_flight.max(1))),
            progress: None,
        }
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Bytes accepted so far.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Whether its multipart upload has begun (a part's worth of bytes arrived).
    pub fn started(&self) -> bool {
        self.upload_id.is_some()
    }

    /// Whether finishing this stream yields exactly `size` bytes at `rel`. A stream that
    /// never started its upload (less than a part written) does not: one PUT is cheaper.
    pub fn covers(&self, rel: &str, size: u64) -> bool {
        self.upload_id.is_some() && self.end == size && self.rel == rel
    }

    /// A copy of the file when this stream has every byte of it (`size` bytes at `rel`) and
    /// has sent none: a small file, put whole from memory without reading the spool back.
    pub fn held(&self, rel: &str, size: u64) -> Option<bytes::Bytes> {
        (!self.started() && self.end == size && self.rel == rel)
            .then(|| bytes::Bytes::copy_from_slice(&self.buf))
    }

    /// [`Stream::accept`] when it needs no waiting: `None` (nothing taken) when `data` would
    /// fill a part, which has to be sent.
    pub fn accept_now(&mut self, ctx: &UploadCtx, offset: u64, data: &[u8]) -> Option<bool> {
        if offset != self.end {
            return Some(false);
        }
        if self.buf.len() + data.len() >= ctx.part_size as usize {
            return None;
        }
        self.take(ctx, data);
        Some(true)
    }

    /// Takes the bytes of a write at `offset`; `false` (nothing taken) when the write is
    /// not at the end, and the stream must be abandoned. Full parts are sent as they fill.
    pub async fn accept(&mut self, ctx: &UploadCtx, offset: u64, data: &[u8]) -> StoreResult<bool> {
        if offset != self.end {
            return Ok(false);
        }
        self.take(ctx, data);
        let part = ctx.part_size as usize;
        while self.buf.len() >= part {
            self.send_part(ctx, part).await?;
        }
        Ok(true)
    }

    /// Appends `data` (which continues the stream) to the bytes not yet sent.
    fn take(&mut self, ctx: &UploadCtx, data: &[u8]) {
        if !self.buf.is_empty() && self.buf.capacity() - self.buf.len() < data.len() {
            // A second write into this part: room for the whole part at once, as growing by
            // doubling would copy most of it again. (A small file's one write reserves
            // nothing more.)
            let rest = (ctx.part_size as usize).saturating_sub(self.buf.len());
            self.buf.reserve(rest.max(data.len()));
        }
        self.buf.extend_from_slice(data);
        self.end += data.len() as u64;
        if let Some(p) = &self.progress {
            p.set_total(self.end);
        }
    }

    /// Sends the first `len` buffered bytes as the next part, starting the upload if needed.
    /// Waits for a permit when this stream or the mount has too many parts in flight.
    async fn send_part(&mut self, ctx: &UploadCtx, len: usize) -> StoreResult<()> {
        let id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                // The file's mtime unless one is set: now, as its first part leaves.
                if self.meta.mtime.is_none() {
                    self.meta.mtime = Some(std::time::SystemTime::now());
                }
                let id = ctx
                    .store
                    .create_multipart(&self.rel, &self.meta.to_user())
                    .await?;
                ctx.upload_started(&self.rel, &id);
                self.upload_id = Some(id.clone());
                self.progress = Some(ctx.progress.start(&self.rel, self.end, true));
                id
            }
        };
        let local = self.in_flight.clone().acquire_owned().await;
        let global = ctx.budget.clone().acquire_owned().await;
        let part = self.buf.split_to(len).freeze();
        let number = self.next_part;
        self.next_part += 1;
        let (store, rel) = (ctx.store.clone(), self.rel.clone());
        let sent = self.progress.as_ref().map(Entry::sent_counter);
        self.parts.push(tokio::spawn(async move {
            let len = part.len() as u64;
            let r = store.upload_part(&rel, &id, number, part).await;
            drop((local, global));
            if let (Ok(_), Some(sent)) = (&r, sent) {
                sent.add(len);
            }
            r
        }));
        Ok(())
    }

    /// Sends the rest and completes the upload if the key holds what `expect` says; aborts
    /// it on any failure.
    pub async fn finish(mut self, ctx: &Arc<UploadCtx>, expect: &Expect) -> StoreResult<String> {
        let rest = self.buf.len();
        let mut result = if rest > 0 {
            self.send_part(ctx, rest).await
        } else {
            Ok(())
        };
        let mut done = Vec::with_capacity(self.parts.len());
        for task in std::mem::take(&mut self.parts) {
            match task.await {
                Ok(Ok(p)) => done.push(p),
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(e) => result = result.and(Err(StoreError::Other(format!("part task: {e}")))),
            }
        }
        let id = self.upload_id.clone().unwrap_or_default();
        let result = match result {
            Ok(()) => {
                ctx.store
                    .complete_multipart_if(&self.rel, &id, done, expect)
                    .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.abandon(ctx);
        } else {
            ctx.upload_ended(&id);
        }
        result
    }

    /// Stops streaming: cancels parts in flight and aborts the upload in the background.
    pub fn abandon(self, ctx: &Arc<UploadCtx>) {
        for t in &self.parts {
            t.abort();
        }
        if let Some(id) = self.upload_id {
            let (ctx, rel) = (ctx.clone(), self.rel);
            tokio::spawn(async move { super::abort(&ctx, &rel, &id).await });
        }
    }
}
