//! What the kernel is told to forget, and how far the telling has got.
//!
//! Notifications go to the kernel from a thread of the FUSE layer (one sent from a thread
//! answering requests could wait on a kernel lock that request holds). They are therefore
//! late: an `open` that found a new version must not let the reader fill the page cache
//! before the notification for the old one arrives, or it drops the new pages again and
//! they are read twice. `KernelSink` counts what was queued and what was sent, so such an
//! open can wait, boundedly, until the kernel has caught up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the kernel is told to forget when the mount learns of a change it did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidate {
    /// The cached pages and attributes of a file (it has a new version).
    Inode(u64),
    /// A name in a directory (it now names something else).
    Entry(u64, String),
}

/// The longest an open waits for earlier notifications: they are normally applied in
/// microseconds, and waiting longer than this costs more than reading pages twice.
const CATCH_UP_BOUND: Duration = Duration::from_millis(500);

/// The sending end: cloned by whatever learns of changes.
#[derive(Clone)]
pub struct KernelSink {
    tx: std::sync::mpsc::Sender<Invalidate>,
    queued: Arc<AtomicU64>,
    sent: tokio::sync::watch::Sender<u64>,
}

/// The FUSE layer's end: yields each notification, then is told it was sent.
pub struct KernelQueue {
    rx: std::sync::mpsc::Receiver<Invalidate>,
    sent: tokio::sync::watch::Sender<u64>,
}

pub fn kernel_channel() -> (KernelSink, KernelQueue) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (sent, _) = tokio::sync::watch::channel(0);
    let sink = KernelSink {
        tx,
        queued: Arc::default(),
        sent: sent.clone(),
    };
    (sink, KernelQueue { rx, sent })
}

impl KernelSink {
    /// Queues `what` (never waits).
    pub fn send(&self, what: Invalidate) {
        // Counted before it is queued: a waiter never sees `sent` pass `queued`.
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(what).is_err() {
            // Unmounted: nothing will send it; count it done so no one waits for it.
            self.sent.send_modify(|n| *n += 1);
        }
    }

    /// Waits until everything queued so far has been sent to the kernel, at most
    /// `CATCH_UP_BOUND`.
    pub async fn caught_up(&self) {
        let target = self.queued.load(Ordering::SeqCst);
        let mut sent = self.sent.subscribe();
        let _ = tokio::time::timeout(CATCH_UP_BOUND, sent.wait_for(|&n| n >= target)).await;
    }
}

impl KernelQueue {
    /// Runs `send` on every notification in order until every sink is gone.
    pub fn serve(self, mut send: impl FnMut(&Invalidate)) {
        for what in self.rx {
            send(&what);
            self.sent.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_waits_for_what_was_queued_before_it_and_no_longer() {
        let (sink, queue) = kernel_channel();
        sink.send(Invalidate::Inode(7));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let server = std::thread::spawn(move || {
            queue.serve(|what| {
                go_rx.recv().unwrap();
                seen2.lock().unwrap().push(what.clone());
            })
        });
        // Not sent yet: the wait is cut by its bound.
        let started = std::time::Instant::now();
        sink.caught_up().await;
        assert!(started.elapsed() >= CATCH_UP_BOUND);
        assert!(seen.lock().unwrap().is_empty());
        // Sent: the wait returns once the kernel was told.
        go_tx.send(()).unwrap();
        let started = std::time::Instant::now();
        sink.caught_up().await;
        assert!(started.elapsed() < CATCH_UP_BOUND);
        assert_eq!(*seen.lock().unwrap(), vec![Invalidate::Inode(7)]);
        drop(sink);
        server.join().unwrap();
    }
}
