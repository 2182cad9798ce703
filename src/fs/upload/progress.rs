//! Uploads in flight and how far each has got, for `cognifs status`: every upload registers
//! an [`Entry`] (dropped, it leaves the list) and adds the bytes of each request S3 accepted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One upload as status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadProgress {
    /// Path relative to the mount's prefix.
    pub path: String,
    /// Bytes S3 has accepted (parts completed, or the whole PUT).
    pub sent: u64,
    /// Bytes the upload will carry; for a streaming upload, those written so far.
    pub total: u64,
    /// A multipart upload fed while the file is still being written.
    pub streaming: bool,
}

struct Live {
    path: String,
    sent: AtomicU64,
    total: AtomicU64,
    streaming: bool,
}

/// The uploads of one mount.
#[derive(Default)]
pub struct Uploads {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, Arc<Live>>>,
}

impl Uploads {
    /// Registers an upload of `total` bytes to `path`; it is listed until the entry drops.
    pub fn start(self: &Arc<Self>, path: &str, total: u64, streaming: bool) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let live = Arc::new(Live {
            path: path.to_owned(),
            sent: AtomicU64::new(0),
            total: AtomicU64::new(total),
            streaming,
        });
        self.live.lock().unwrap().insert(id, live.clone());
        Entry {
            id,
            live,
            uploads: self.clone(),
        }
    }

    /// Uploads in flight, oldest first.
    pub fn snapshot(&self) -> Vec<UploadProgress> {
        self.live
            .lock()
            .unwrap()
            .values()
            .map(|l| UploadProgress {
                path: l.path.clone(),
                sent: l.sent.load(Ordering::Relaxed),
                total: l.total.load(Ordering::Relaxed),
                streaming: l.streaming,
            })
            .collect()
    }
}

/// An upload in flight; cloned handles ([`Entry::sent_counter`]) let part tasks report.
pub struct Entry {
    id: u64,
    live: Arc<Live>,
    uploads: Arc<Uploads>,
}

impl Entry {
    pub fn set_total(&self, total: u64) {
        self.live.total.store(total, Ordering::Relaxed);
    }

    pub fn add_sent(&self, n: u64) {
        self.live.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter a spawned part task adds its bytes to once S3 accepted them.
    pub fn sent_counter(&self) -> Sent {
        Sent(self.live.clone())
    }
}

/// See [`Entry::sent_counter`].
pub struct Sent(Arc<Live>);

impl Sent {
    pub fn add(&self, n: u64) {
        self.0.sent.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.uploads.live.lock().unwrap().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_report_progress_until_dropped() {
        let uploads = Arc::new(Uploads::default());
        let a = uploads.start("a", 100, false);
        let b = uploads.start("b", 0, true);
        a.add_sent(40);
        b.set_total(30);
        b.sent_counter().add(10);
        assert_eq!(
            uploads.snapshot(),
            vec![
                UploadProgress {
                    path: "a".into(),
                    sent: 40,
                    total: 100,
                    streaming: false
                },
                UploadProgress {
                    path: "b".into(),
                    sent: 10,
                    total: 30,
                    streaming: true
                },
            ]
        );
        drop(a);
        assert_eq!(uploads.snapshot().len(), 1);
        drop(b);
        assert!(uploads.snapshot().is_empty());
    }
}
