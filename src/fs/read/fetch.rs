//! Fetching blocks: what the disk cache holds of them, then one ranged GET of the rest, a
//! future per block that is ready as soon as its block has arrived; the work is aborted once
//! nobody waits for any of them.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::task::JoinHandle;

use super::{FileReader, ReadResult};
use crate::fs::cache::BlockKey;
use crate::store::StoreError;

/// How long a read that S3 did not answer waits for the disk cache to finish writing what it
/// was given.
const DISK_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) type FetchFuture = Shared<BoxFuture<'static, ReadResult<Bytes>>>;

pub(super) struct Fetch {
    pub(super) fut: FetchFuture,
    /// Held while a prefetched block waits to be read.
    pub(super) _budget: Option<OwnedSemaphorePermit>,
    /// Prefetched around a random read: kept when the reader moves elsewhere, let go once
    /// it has arrived (it is in the cache then).
    pub(super) around_random: bool,
}

/// Aborts the GET task once nobody can receive its result.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FileReader {
    /// The blocks `first..first + count` (fewer at the end of the object): what the disk
    /// cache has of them, then one GET of the rest; a future per block, ready as soon as
    /// that block has arrived. The work is aborted once every future is dropped.
    pub(super) fn start_fetches(&self, first: u64, count: u64, prefetch: bool) -> Vec<FetchFuture> {
        let sh = self.shared.clone();
        let bs = sh.block_size;
        let start = first * bs;
        let len = (count * bs).min(self.size - start);
        let blocks = len.div_ceil(bs);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..blocks)
            .map(|_| oneshot::channel::<ReadResult<Bytes>>())
            .unzip();
        let senders = Arc::new(Mutex::new(
            senders.into_iter().map(Some).collect::<Vec<_>>(),
        ));
        let (rel, etag, size) = (self.rel.clone(), self.etag.clone(), self.size);
        let task = tokio::spawn(async move {
            let _permit = if prefetch {
                sh.fetch_permits.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let key = |i: u64| BlockKey {
                key: rel.clone(),
                etag: etag.clone(),
                block: first + i,
            };
            // What the disk has, read off the async workers.
            let on_disk: Vec<u64> = (0..blocks).filter(|&i| sh.on_disk(&key(i))).collect();
            if let (Some(disk), false) = (sh.disk.clone(), on_disk.is_empty()) {
                let (sh2, senders2, rel2, etag2) =
                    (sh.clone(), senders.clone(), rel.clone(), etag.clone());
                let read = tokio::task::spawn_blocking(move || {
                    for i in on_disk {
                        let k = BlockKey {
                            key: rel2.clone(),
                            etag: etag2.clone(),
                            block: first + i,
                        };
                        let expected = bs.min(size - (first + i) * bs) as usize;
                        if let Some(data) = disk.read(&k).filter(|d| d.len() == expected) {
                            sh2.cache.insert(k, data.clone());
                            answer(&senders2, i, data);
                        }
                    }
                });
                let _ = read.await;
            }
            // The rest from S3: one GET from the first block still missing to the last.
            let missing: Vec<u64> = {
                let s = senders.lock().unwrap();
                (0..blocks).filter(|&i| s[i as usize].is_some()).collect()
            };
            let (Some(&from), Some(&to)) = (missing.first(), missing.last()) else {
                return;
            };
            let get_start = start + from * bs;
            let get_len = ((to + 1) * bs).min(len) - from * bs;
            let started = std::time::Instant::now();
            let first_piece = std::sync::OnceLock::new();
            let deliver = |i: usize, data: Bytes| {
                if i == 0 {
                    let _ = first_piece.set((started.elapsed(), data.len() as u64));
                }
                let at = from + i as u64;
                sh.cache.insert(key(at), data.clone());
                if let Some(disk) = &sh.disk {
                    disk.write_behind(key(at), data.clone());
                }
                answer(&senders, at, data);
            };
            let mut fetched = sh
                .store
                .get_range_pieces(&rel, &etag, get_start, get_len, bs, &deliver)
                .await;
            // S3 away: what the disk cache is still writing (a file just written here, blocks
            // just fetched) may be what is missing.
            if let (Err(e), Some(disk)) = (&fetched, sh.disk.clone())
                && e.is_unreachable()
            {
                let (sh2, senders2) = (sh.clone(), senders.clone());
                let (rel2, etag2) = (rel.clone(), etag.clone());
                let key2 = move |i: u64| BlockKey {
                    key: rel2.clone(),
                    etag: etag2.clone(),
                    block: first + i,
                };
                let waited = tokio::task::spawn_blocking(move || {
                    if !disk.settle(DISK_SETTLE) {
                        return false;
                    }
                    let mut all = true;
                    for i in missing {
                        if senders2.lock().unwrap()[i as usize].is_none() {
                            continue;
                        }
                        let expected = bs.min(size - (first + i) * bs) as usize;
                        match disk.read(&key2(i)).filter(|d| d.len() == expected) {
                            Some(data) => {
                                sh2.cache.insert(key2(i), data.clone());
                                if let Some(tx) = senders2.lock().unwrap()[i as usize].take() {
                                    let _ = tx.send(Ok(data));
                                }
                            }
                            None => all = false,
                        }
                    }
                    all
                })
                .await;
                if waited.unwrap_or(false) {
                    fetched = Ok(());
                }
            }
            if let (Ok(()), Some((first, first_len))) = (&fetched, first_piece.get()) {
                sh.link
                    .record(*first, *first_len, started.elapsed(), get_len);
            }
            if let Err(e) = fetched {
                let e = Arc::new(e);
                for tx in senders.lock().unwrap().iter_mut().filter_map(Option::take) {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        });
        let guard = Arc::new(AbortOnDrop(task));
        receivers
            .into_iter()
            .map(|rx| {
                let guard = guard.clone();
                async move {
                    let _guard = guard;
                    rx.await.unwrap_or_else(|_| {
                        Err(Arc::new(StoreError::Other("the fetch task ended".into())))
                    })
                }
                .boxed()
                .shared()
            })
            .collect()
    }
}

/// Hands block `i` to whoever waits for it, once: the disk or S3 answers each block.
fn answer(senders: &Mutex<Vec<Option<oneshot::Sender<ReadResult<Bytes>>>>>, i: u64, data: Bytes) {
    if let Some(tx) = senders
        .lock()
        .unwrap()
        .get_mut(i as usize)
        .and_then(Option::take)
    {
        let _ = tx.send(Ok(data));
    }
}
