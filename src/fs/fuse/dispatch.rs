//! How a FUSE callback runs: on the FUSE thread until it would wait, then on the runtime;
//! a panic in it caught and logged, its latency recorded (see the module above).

use std::sync::Arc;
use std::time::Duration;

use fuser::{Generation, INodeNo, ReplyEmpty, ReplyEntry};
use futures::FutureExt;
use tokio::runtime::Handle;

use super::super::inodes::Attr;
use super::super::{Fs, FsError};
use super::convert::{failed, file_attr};

pub(super) struct FuseFs {
    pub(super) fs: Arc<Fs>,
    pub(super) rt: Handle,
}

/// Which call a callback answers: what its log line names should it panic.
pub(super) struct Call {
    op: &'static str,
    ino: u64,
    name: Option<String>,
}

pub(super) fn call(op: &'static str, ino: INodeNo, name: Option<&str>) -> Call {
    Call {
        op,
        ino: ino.0,
        name: name.map(str::to_owned),
    }
}

impl Call {
    fn log_panic(&self, fs: &Fs, panic: &(dyn std::any::Any + Send)) {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let mut path = fs
            .path_of(self.ino)
            .unwrap_or_else(|| format!("inode {}", self.ino));
        if let Some(name) = &self.name {
            if !path.is_empty() && !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(name);
        }
        if path.is_empty() {
            path.push('/');
        }
        tracing::error!(op = self.op, path = %path, panic = %why, "a bug: this call failed with EIO; the mount goes on");
    }
}

impl FuseFs {
    pub(super) fn ttl(&self) -> Duration {
        self.fs.ttl()
    }

    /// Polls `task` here once, in the runtime's context, and hands it to the runtime only if
    /// it has to wait. On two cores a hand-off (a wake-up, two context switches) costs more
    /// than most answers: a small file's create, write and release cost three of them. A
    /// wake-up lost by this first poll is harmless: a spawned task is always polled again.
    /// A panic in `task`, here or on the runtime, is caught: see the module's doc. The
    /// call's latency, from here to the task's end (its reply), goes to the status figures.
    pub(super) fn run(
        &self,
        call: Call,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let _context = self.rt.enter();
        let started = std::time::Instant::now();
        let fs = self.fs.clone();
        let injected = fs.take_injected_panic(call.op);
        let op = call.op;
        let task = async move {
            if let Some(after_wait) = injected {
                if after_wait {
                    tokio::task::yield_now().await;
                }
                panic!("injected panic in {op} (a test)");
            }
            task.await
        };
        let mut task = Box::pin(async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
                call.log_panic(&fs, panic.as_ref());
            }
            crate::metrics::latency::fuse().observe(op, started.elapsed());
        });
        if (&mut task).now_or_never().is_none() {
            self.rt.spawn(task);
        }
    }

    /// Runs a callback's body here, on the FUSE thread; a panic in it is caught: see the
    /// module's doc.
    pub(super) fn inline(&self, call: Call, body: impl FnOnce()) {
        let _context = self.rt.enter();
        let injected = self.fs.take_injected_panic(call.op).is_some();
        let op = call.op;
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            if injected {
                panic!("injected panic in {op} (a test)");
            }
            body()
        }));
        if let Err(panic) = done {
            call.log_panic(&self.fs, panic.as_ref());
        }
    }

    /// Runs `f` on the runtime and answers an entry reply from its outcome.
    pub(super) fn entry_reply(
        &self,
        reply: ReplyEntry,
        (op, parent, name): (&'static str, INodeNo, String),
        f: impl std::future::Future<Output = Result<Attr, FsError>> + Send + 'static,
    ) {
        let fs = self.fs.clone();
        let ttl = self.ttl();
        self.run(call(op, parent, Some(&name)), async move {
            match f.await {
                Ok(a) => reply.entry(&ttl, &file_attr(&a, fs.options()), Generation(0)),
                Err(e) => reply.error(failed(&fs, op, parent.0, Some(&name), e)),
            }
        });
    }

    /// Runs `f` on the runtime and answers an empty reply from its outcome.
    pub(super) fn empty_reply(
        &self,
        reply: ReplyEmpty,
        (op, ino, name): (&'static str, INodeNo, Option<String>),
        f: impl std::future::Future<Output = Result<(), FsError>> + Send + 'static,
    ) {
        let fs = self.fs.clone();
        self.run(call(op, ino, name.as_deref()), async move {
            match f.await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(&fs, op, ino.0, name.as_deref(), e)),
            }
        });
    }
}
