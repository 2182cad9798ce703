//! Two devices and a web app on one prefix, through the semantic core (no FUSE, no root):
//! random saves, new files, unlinks and remounts by two mounts of one identity, and puts
//! and deletes by another client straight to the store, with views that go stale (a long
//! metadata TTL) so that the mounts race each other and the web app, and failed uploads
//! that are kept and retried later.
//!
//! The invariant (issue 19): **no version is lost** unless an operation that started from
//! it replaced or removed it — every version a `close` accepted (or a failed close kept),
//! and every version the web app put, is in S3 at the end, under its name or as one of its
//! conflict copies — and **no conflict copy appears where nobody raced** (one device alone,
//! faults or not).
//!
//! Each version's content starts with its own tag (`v17;`), so a body names its version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cognifs::fs::{Caller, Fs, MountOptions, ROOT_INO, SetAttr};
use cognifs::store::{Fault, MemoryStore, ObjectStore, RequestKind, UserMeta};
use proptest::prelude::*;

const NAMES: [&str; 3] = ["notes.txt", "report.pdf", "todo"];
/// The temporary file of an editor's save of `NAMES[name]` on device `dev`.
const TMP_NAMES: [[&str; 3]; 2] = [
    [".notes.txt.dev0~", ".report.pdf.dev0~", ".todo.dev0~"],
    [".notes.txt.dev1~", ".report.pdf.dev1~", ".todo.dev1~"],
];
const PREFIX: &str = "us-east-1:twodev/";
const CALLER: Caller = Caller {
    uid: 1000,
    gid: 1000,
};
/// S3's smallest part: big versions are multipart uploads.
const PART: u64 = 5 << 20;

#[derive(Debug, Clone)]
enum Step {
    /// Open for writing, read what is there, truncate, write a new version, close.
    Save {
        dev: usize,
        name: usize,
        big: bool,
    },
    /// Open with `O_TRUNC` (no read: the version the mount knows is the base), write, close.
    Rewrite {
        dev: usize,
        name: usize,
        big: bool,
    },
    /// A new file, if the device sees none by that name.
    Create {
        dev: usize,
        name: usize,
        big: bool,
    },
    /// An editor's save: read the file (again while a read finds its version replaced:
    /// the mount then looks again), write a temporary file, rename it onto the name. With
    /// S3 answering: the device's armed faults are disarmed first.
    RenameSave {
        dev: usize,
        name: usize,
        big: bool,
    },
    /// Read the file, then unlink it.
    Unlink {
        dev: usize,
        name: usize,
    },
    /// The web app puts a version (unconditionally, as it does).
    WebPut {
        name: usize,
    },
    WebDelete {
        name: usize,
    },
    /// The device's next two PUTs fail (a small file's close and release: the data is kept).
    FailNextUpload {
        dev: usize,
    },
    /// A new mount of the device (it adopts what the old one kept).
    Remount {
        dev: usize,
    },
}

fn step(devices: usize, web: bool) -> impl Strategy<Value = Step> {
    let dev = 0..devices;
    let name = 0..NAMES.len();
    let big = prop::bool::weighted(0.08);
    let web_weight = if web { 2 } else { 0 };
    prop_oneof![
        6 => (dev.clone(), name.clone(), big).prop_map(|(dev, name, big)| Step::Save { dev, name, big }),
        4 => (dev.clone(), name.clone(), big).prop_map(|(dev, name, big)| Step::Rewrite { dev, name, big }),
        3 => (dev.clone(), name.clone(), big).prop_map(|(dev, name, big)| Step::Create { dev, name, big }),
        3 => (dev.clone(), name.clone(), big).prop_map(|(dev, name, big)| Step::RenameSave { dev, name, big }),
        2 => (dev.clone(), name.clone()).prop_map(|(dev, name)| Step::Unlink { dev, name }),
        web_weight => name.clone().prop_map(|name| Step::WebPut { name }),
        web_weight => name.prop_map(|name| Step::WebDelete { name }),
        1 => dev.clone().prop_map(|dev| Step::FailNextUpload { dev }),
        1 => dev.prop_map(|dev| Step::Remount { dev }),
    ]
}

/// The tag a body starts with (`v17;…` → 17).
fn tag_of(body: &[u8]) -> Option<u64> {
    let end = body.iter().position(|&b| b == b';')?;
    std::str::from_utf8(body.get(1..end)?).ok()?.parse().ok()
}

fn body_of(tag: u64, big: bool) -> Vec<u8> {
    let head = format!("v{tag};");
    let len = if big {
        PART as usize + 4096
    } else {
        20 + (tag as usize % 50)
    };
    head.bytes()
        .chain(std::iter::repeat(b'.'))
        .take(len.max(head.len()))
        .collect()
}

struct Device {
    fs: Arc<Fs>,
    opts: MountOptions,
    /// Faults armed for this device's next upload (each device has its own store view:
    /// a fault must hit its request, not the other device's).
    store: Arc<FaultyView>,
}

/// One device's way to the shared bucket: the same objects, its own injected faults.
#[derive(Debug)]
struct FaultyView {
    shared: Arc<MemoryStore>,
    own: MemoryStore,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    store: Arc<MemoryStore>,
    devices: Vec<Device>,
    next_tag: u64,
    /// Versions that must be in S3 at the end, by tag: the name they were written at.
    must_survive: BTreeMap<u64, &'static str>,
    /// Every version's tag by its etag (what a mount's base names).
    tags: std::collections::HashMap<String, u64>,
    /// The version each device keeps for a name after a failed close (not in S3 yet: no
    /// etag names it); the device's next change of that file replaces it.
    kept: std::collections::HashMap<(usize, &'static str), u64>,
    /// Views expire at once (1 ms): a device's view is then S3's at each operation.
    short_ttl: bool,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(devices: usize, short_ttl: bool, careless: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new("bucket", PREFIX));
        store.set_ignores_conditions(careless);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let devices = (0..devices)
            .map(|d| {
                let opts = MountOptions {
                    metadata_ttl: if short_ttl {
                        Duration::from_millis(1)
                    } else {
                        Duration::from_secs(600)
                    },
                    uid: CALLER.uid,
                    gid: CALLER.gid,
                    part_size: PART,
                    spool_dir: dir.path().join(format!("dev{d}/spool")),
                    pending_dir: Some(dir.path().join(format!("dev{d}/pending"))),
                    device_name: format!("dev{d}"),
                    dir_times_interval: Duration::from_secs(3600),
                    ..MountOptions::default()
                };
                let view = Arc::new(FaultyView {
                    shared: store.clone(),
                    own: MemoryStore::new("bucket", PREFIX),
                });
                let fs = Self::mount(&rt, view.clone(), opts.clone());
                Device {
                    fs,
                    opts,
                    store: view,
                }
            })
            .collect();
        Harness {
            rt,
            store,
            devices,
            next_tag: 1,
            must_survive: BTreeMap::new(),
            tags: Default::default(),
            kept: Default::default(),
            short_ttl,
            _dir: dir,
        }
    }

    /// A mount as `fs::mount` makes one: the conditions probed (and emulated where the
    /// server ignores them), then recovery (kept uploads adopted).
    fn mount(rt: &tokio::runtime::Runtime, view: Arc<FaultyView>, opts: MountOptions) -> Arc<Fs> {
        rt.block_on(async {
            let checked = cognifs::store::checked_store(view as Arc<dyn ObjectStore>).await;
            let fs = Arc::new(Fs::new(checked.clone(), opts));
            fs.set_conditions(checked);
            fs.recover().await;
            fs
        })
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// The conflict copies device `dev` made of `name`, as keys under the prefix.
    fn conflict_copies(&self, name: &str, dev: usize) -> Vec<String> {
        let prefix = format!("{PREFIX}{name}.conflict-dev{dev}-");
        self.store
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .collect()
    }

    fn s3_tag(&self, name: &str) -> Option<u64> {
        self.store
            .get_raw(&format!("{PREFIX}{name}"))
            .and_then(|(b, _)| tag_of(&b))
    }

    /// Reads the whole file through `fh`.
    async fn read_all(fs: &Fs, fh: u64) -> Result<Vec<u8>, i32> {
        let mut out = Vec::new();
        loop {
            let chunk = fs
                .read(fh, out.len() as u64, 1 << 20)
                .await
                .map_err(|e| e.errno)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }

    /// What a reader sees at `name`: `Some(None)` if nothing, `Some(tag)` once a read
    /// goes through (a read that finds its version replaced has made the mount look again:
    /// read again), `None` if none did.
    async fn read_through(fs: &Fs, name: &str) -> Result<Option<Option<u64>>, i32> {
        for _ in 0..5 {
            let attr = match fs.lookup(ROOT_INO, name).await {
                Ok(attr) => attr,
                Err(e) if e.errno == libc::ENOENT => return Ok(Some(None)),
                Err(e) => return Err(e.errno),
            };
            let read = match fs.open(attr.ino, false, false).await {
                Ok(fh) => {
                    let read = Self::read_all(fs, fh).await;
                    let _ = fs.release(fh).await;
                    read
                }
                Err(e) => Err(e.errno),
            };
            match read {
                Ok(body) => return Ok(Some(tag_of(&body))),
                Err(libc::ENOENT) => return Ok(Some(None)),
                Err(libc::ESTALE | libc::EIO) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Writes `body` through `fh` and closes it; the close's outcome.
    async fn write_and_close(fs: &Fs, fh: u64, body: Vec<u8>) -> Result<(), i32> {
        let mut off = 0;
        for chunk in body.chunks(1 << 20) {
            fs.write(fh, off, chunk.to_vec())
                .await
                .map_err(|e| e.errno)?;
            off += chunk.len() as u64;
        }
        let flushed = fs.flush(fh).await;
        let released = fs.release(fh).await;
        flushed.and(released).map_err(|e| e.errno)
    }

    /// Notes the etag of every version in S3 now.
    fn note_versions(&mut self) {
        for key in self.store.keys() {
            if let (Some(etag), Some((body, _))) =
                (self.store.etag_raw(&key), self.store.get_raw(&key))
                && let Some(tag) = tag_of(&body)
            {
                self.tags.insert(etag, tag);
            }
        }
    }

    fn apply(&mut self, step: &Step) -> Result<(), String> {
        let r = self.apply_step(step);
        self.note_versions();
        r
    }

    fn apply_step(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Rewrite { dev, name, big } => {
                let tag = self.tag();
                let fs = self.devices[dev].fs.clone();
                let n = NAMES[name];
                let outcome = self.rt.block_on(async {
                    let attr = fs.lookup(ROOT_INO, n).await.map_err(|e| e.errno)?;
                    let fh = fs.open(attr.ino, true, true).await.map_err(|e| e.errno)?;
                    // The base: the version the mount knew at open.
                    let base = fs.inodes().get(attr.ino).map(|node| node.etag);
                    Ok((
                        base,
                        Self::write_and_close(&fs, fh, body_of(tag, big)).await,
                    ))
                });
                match outcome {
                    Ok((base, closed)) => {
                        if let Some(seen) = base.and_then(|e| self.tags.get(&e).copied()) {
                            self.must_survive.remove(&seen);
                        }
                        if let Some(kept) = self.kept.remove(&(dev, n)) {
                            self.must_survive.remove(&kept);
                        }
                        match closed {
                            Ok(()) | Err(libc::EIO) => {
                                if closed.is_err() {
                                    self.kept.insert((dev, n), tag);
                                }
                                self.must_survive.insert(tag, n);
                            }
                            Err(e) => return Err(format!("rewrite of {n}: close failed with {e}")),
                        }
                    }
                    Err(libc::ENOENT | libc::ESTALE | libc::EIO) => {}
                    Err(e) => return Err(format!("rewrite of {n}: errno {e}")),
                }
            }
            Step::Save { dev, name, big } => {
                let tag = self.tag();
                let fs = self.devices[dev].fs.clone();
                let n = NAMES[name];
                let outcome = self.rt.block_on(async {
                    let attr = fs.lookup(ROOT_INO, n).await.map_err(|e| e.errno)?;
                    let fh = fs.open(attr.ino, true, false).await.map_err(|e| e.errno)?;
                    // What this save starts from: the version the mount loaded.
                    let seen = Self::read_all(&fs, fh).await;
                    let truncated = fs
                        .setattr(
                            attr.ino,
                            Some(fh),
                            SetAttr {
                                size: Some(0),
                                ..SetAttr::default()
                            },
                        )
                        .await;
                    if let (Ok(seen), Ok(_)) = (&seen, truncated) {
                        let closed = Self::write_and_close(&fs, fh, body_of(tag, big)).await;
                        Ok((tag_of(seen), closed))
                    } else {
                        let _ = fs.release(fh).await;
                        Err(seen.err().unwrap_or(libc::EIO))
                    }
                });
                match outcome {
                    // Accepted, or kept after a failed close: this version must survive;
                    // the one it started from may go.
                    Ok((seen, closed)) => {
                        if let Some(seen) = seen {
                            self.must_survive.remove(&seen);
                        }
                        if let Some(kept) = self.kept.remove(&(dev, n)) {
                            self.must_survive.remove(&kept);
                        }
                        if closed.is_ok() || closed == Err(libc::EIO) {
                            if closed.is_err() {
                                self.kept.insert((dev, n), tag);
                            }
                            self.must_survive.insert(tag, n);
                        } else {
                            return Err(format!("save of {n}: close failed with {closed:?}"));
                        }
                    }
                    // Not there (deleted by someone), or the read lost its version.
                    Err(libc::ENOENT | libc::ESTALE | libc::EIO) => {}
                    Err(e) => return Err(format!("save of {n}: errno {e}")),
                }
            }
            Step::Create { dev, name, big } => {
                let tag = self.tag();
                let fs = self.devices[dev].fs.clone();
                let n = NAMES[name];
                let closed = self.rt.block_on(async {
                    match fs.lookup(ROOT_INO, n).await {
                        Err(e) if e.errno == libc::ENOENT => {}
                        _ => return None,
                    }
                    let (_, fh) = match fs.create(ROOT_INO, n, 0o644, CALLER).await {
                        Ok(c) => c,
                        Err(e) => return Some(Err(e.errno)),
                    };
                    Some(Self::write_and_close(&fs, fh, body_of(tag, big)).await)
                });
                match closed {
                    None => {}
                    Some(r @ (Ok(()) | Err(libc::EIO))) => {
                        if r.is_err() {
                            self.kept.insert((dev, n), tag);
                        }
                        self.must_survive.insert(tag, n);
                    }
                    Some(Err(e)) => return Err(format!("create of {n}: errno {e}")),
                }
            }
            Step::RenameSave { dev, name, big } => {
                let tag = self.tag();
                let (n, tmp) = (NAMES[name], TMP_NAMES[dev][name]);
                self.devices[dev].store.own.clear_faults();
                let fs = self.devices[dev].fs.clone();
                // What a rename replaces is the version the mount knows there when it runs:
                // what the device read, while its view is fresh (a long TTL); once the view
                // expired, whatever the mount then finds, which is S3's version now.
                let at_rename = self.s3_tag(n).filter(|_| self.short_ttl);
                let outcome = self.rt.block_on(async {
                    let Some(seen) = Self::read_through(&fs, n).await? else {
                        return Ok(None);
                    };
                    let (_, fh) = fs
                        .create(ROOT_INO, tmp, 0o644, CALLER)
                        .await
                        .map_err(|e| e.errno)?;
                    Self::write_and_close(&fs, fh, body_of(tag, big)).await?;
                    fs.rename(ROOT_INO, tmp, ROOT_INO, n, false)
                        .await
                        .map_err(|e| e.errno)?;
                    Ok::<_, i32>(Some(seen))
                });
                match outcome {
                    // The save replaced what the device read (nothing, if it read none),
                    // and a version it kept of that name; its own version must survive
                    // (at the name, or beside another device's as a conflict copy).
                    Ok(Some(seen)) => {
                        for replaced in seen.into_iter().chain(at_rename) {
                            self.must_survive.remove(&replaced);
                        }
                        if let Some(kept) = self.kept.remove(&(dev, n)) {
                            self.must_survive.remove(&kept);
                        }
                        self.must_survive.insert(tag, n);
                    }
                    // No read went through: the editor does not save.
                    Ok(None) => {}
                    Err(e) => return Err(format!("editor's save of {n}: errno {e}")),
                }
            }
            Step::Unlink { dev, name } => {
                let fs = self.devices[dev].fs.clone();
                let n = NAMES[name];
                let outcome = self.rt.block_on(async {
                    let attr = fs.lookup(ROOT_INO, n).await.map_err(|e| e.errno)?;
                    let fh = fs.open(attr.ino, false, false).await.map_err(|e| e.errno)?;
                    let seen = Self::read_all(&fs, fh).await;
                    let _ = fs.release(fh).await;
                    let seen = seen?;
                    fs.unlink(ROOT_INO, n).await.map_err(|e| e.errno)?;
                    Ok(tag_of(&seen))
                });
                match outcome {
                    Ok(Some(seen)) => {
                        self.must_survive.remove(&seen);
                    }
                    Ok(None) | Err(libc::ENOENT | libc::ESTALE | libc::EIO) => {}
                    Err(e) => return Err(format!("unlink of {n}: errno {e}")),
                }
            }
            Step::WebPut { name } => {
                let tag = self.tag();
                let n = NAMES[name];
                if let Some(old) = self.s3_tag(n) {
                    self.must_survive.remove(&old);
                }
                self.store.insert_raw(
                    &format!("{PREFIX}{n}"),
                    &body_of(tag, false),
                    UserMeta::new(),
                );
                self.must_survive.insert(tag, n);
            }
            Step::WebDelete { name } => {
                let n = NAMES[name];
                if let Some(old) = self.s3_tag(n) {
                    self.must_survive.remove(&old);
                }
                let store = self.store.clone();
                self.rt.block_on(store.delete(n)).unwrap();
            }
            Step::FailNextUpload { dev } => {
                let own = &self.devices[dev].store.own;
                own.clear_faults();
                // The close's flush and its release both try (and fail): the data is kept.
                own.fail_nth(Some(RequestKind::Put), 0, Fault::SlowDown);
                own.fail_nth(Some(RequestKind::Put), 0, Fault::SlowDown);
            }
            Step::Remount { dev } => {
                let d = &mut self.devices[dev];
                let (view, opts) = (d.store.clone(), d.opts.clone());
                // An unmount ends the mount's process before the next mount starts: what
                // it kept is let go (a mount still running keeps its kept uploads).
                let ended = std::mem::replace(
                    &mut d.fs,
                    Arc::new(Fs::new(view.clone(), MountOptions::default())),
                );
                assert!(
                    Arc::try_unwrap(ended).is_ok(),
                    "the old mount is still in use"
                );
                d.fs = Self::mount(&self.rt, view, opts);
            }
        }
        Ok(())
    }

    /// Every kept upload retried until none is left (faults disarmed: S3 is back).
    fn drain(&mut self) -> Result<(), String> {
        for d in &self.devices {
            d.store.own.clear_faults();
        }
        for _ in 0..10 {
            let left: usize = self
                .devices
                .iter()
                .map(|d| {
                    self.rt.block_on(d.fs.retry_pending_now());
                    d.fs.pending_uploads().len()
                })
                .sum();
            if left == 0 {
                return Ok(());
            }
        }
        Err("kept uploads still pending with S3 answering".into())
    }

    fn check(&self, raced: bool) -> Result<(), String> {
        let mut found: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for key in self.store.keys() {
            let (body, _) = self.store.get_raw(&key).unwrap();
            if let Some(t) = tag_of(&body) {
                found
                    .entry(t)
                    .or_default()
                    .insert(key.trim_start_matches(PREFIX).to_owned());
            }
        }
        for (tag, name) in &self.must_survive {
            let ok = found.get(tag).is_some_and(|keys| {
                keys.iter()
                    .any(|k| k == name || k.starts_with(&format!("{name}.conflict-")))
            });
            if !ok {
                return Err(format!(
                    "version v{tag} of {name} is lost; S3 holds {:?}",
                    found
                ));
            }
        }
        let copies: Vec<String> = self
            .store
            .keys()
            .into_iter()
            .filter(|k| k.contains(".conflict-"))
            .collect();
        if !raced && !copies.is_empty() {
            return Err(format!("conflict copies where nobody raced: {copies:?}"));
        }
        // An abandoned stream (a conflict at its complete) is aborted in the background:
        // wait for it, bounded (a loaded machine lost this race).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.store.open_uploads() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if self.store.open_uploads() != 0 {
            return Err(format!(
                "{} multipart uploads left open",
                self.store.open_uploads()
            ));
        }
        Ok(())
    }
}

/// `FaultyView` answers with its own fault first, then the shared store's answer.
macro_rules! faulted {
    ($self:ident, $kind:expr, $call:expr) => {{
        $self.own.inject($kind).await?;
        $call.await
    }};
}

#[async_trait::async_trait]
impl ObjectStore for FaultyView {
    fn bucket(&self) -> &str {
        self.shared.bucket()
    }
    fn scope(&self) -> &cognifs::store::Scope {
        self.shared.scope()
    }
    async fn head(
        &self,
        rel: &str,
    ) -> cognifs::store::StoreResult<Option<cognifs::store::ObjectInfo>> {
        faulted!(self, RequestKind::Head, self.shared.head(rel))
    }
    async fn list_page(
        &self,
        dir_rel: &str,
        continuation: Option<String>,
        max_keys: i32,
    ) -> cognifs::store::StoreResult<cognifs::store::ListPage> {
        faulted!(
            self,
            RequestKind::List,
            self.shared.list_page(dir_rel, continuation, max_keys)
        )
    }
    async fn list_recursive(
        &self,
        dir_rel: &str,
    ) -> cognifs::store::StoreResult<Vec<cognifs::store::ObjectInfo>> {
        faulted!(self, RequestKind::List, self.shared.list_recursive(dir_rel))
    }
    async fn get_range(
        &self,
        rel: &str,
        etag: &str,
        start: u64,
        len: u64,
    ) -> cognifs::store::StoreResult<bytes::Bytes> {
        faulted!(
            self,
            RequestKind::Get,
            self.shared.get_range(rel, etag, start, len)
        )
    }
    async fn put_if(
        &self,
        rel: &str,
        body: bytes::Bytes,
        meta: &UserMeta,
        expect: &cognifs::store::Expect,
    ) -> cognifs::store::StoreResult<String> {
        faulted!(
            self,
            RequestKind::Put,
            self.shared.put_if(rel, body, meta, expect)
        )
    }
    async fn create_multipart(
        &self,
        rel: &str,
        meta: &UserMeta,
    ) -> cognifs::store::StoreResult<String> {
        faulted!(
            self,
            RequestKind::CreateMultipart,
            self.shared.create_multipart(rel, meta)
        )
    }
    async fn upload_part(
        &self,
        rel: &str,
        id: &str,
        n: i32,
        body: bytes::Bytes,
    ) -> cognifs::store::StoreResult<cognifs::store::PartDone> {
        faulted!(
            self,
            RequestKind::UploadPart,
            self.shared.upload_part(rel, id, n, body)
        )
    }
    async fn complete_multipart_if(
        &self,
        rel: &str,
        id: &str,
        parts: Vec<cognifs::store::PartDone>,
        expect: &cognifs::store::Expect,
    ) -> cognifs::store::StoreResult<String> {
        faulted!(
            self,
            RequestKind::CompleteMultipart,
            self.shared.complete_multipart_if(rel, id, parts, expect)
        )
    }
    async fn abort_multipart(&self, rel: &str, id: &str) -> cognifs::store::StoreResult<()> {
        faulted!(
            self,
            RequestKind::AbortMultipart,
            self.shared.abort_multipart(rel, id)
        )
    }
    async fn list_uploads(
        &self,
        dir_rel: &str,
    ) -> cognifs::store::StoreResult<Vec<cognifs::store::UploadInfo>> {
        faulted!(
            self,
            RequestKind::ListUploads,
            self.shared.list_uploads(dir_rel)
        )
    }
    async fn delete_if(
        &self,
        rel: &str,
        expect: &cognifs::store::Expect,
    ) -> cognifs::store::StoreResult<()> {
        faulted!(
            self,
            RequestKind::Delete,
            self.shared.delete_if(rel, expect)
        )
    }
    async fn copy_if(
        &self,
        src: &str,
        src_etag: Option<&str>,
        dst: &str,
        meta: Option<&UserMeta>,
        expect: &cognifs::store::Expect,
    ) -> cognifs::store::StoreResult<String> {
        faulted!(
            self,
            RequestKind::Copy,
            self.shared.copy_if(src, src_etag, dst, meta, expect)
        )
    }
}

fn run(
    steps: &[Step],
    devices: usize,
    short_ttl: bool,
    careless: bool,
    raced: bool,
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(devices, short_ttl, careless);
    for (i, s) in steps.iter().enumerate() {
        h.apply(s)
            .map_err(|e| TestCaseError::fail(format!("step {i} {s:?}: {e}")))?;
    }
    h.drain().map_err(TestCaseError::fail)?;
    h.check(raced).map_err(TestCaseError::fail)
}

/// CI's count of cases, unless `PROPTEST_CASES` asks for another (a count written in the
/// config would silently override the variable).
fn cases(ci: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    /// Two devices and the web app race on three names: nothing anyone saved is lost.
    #[test]
    fn no_saved_version_is_lost_between_two_devices_and_the_web_app(
        steps in prop::collection::vec(step(2, true), 1..30),
        short_ttl in any::<bool>(),
    ) {
        run(&steps, 2, short_ttl, false, true)?;
    }

    /// The same on a server that ignores conditional writes: the HEAD-checked fallback
    /// loses nothing either while writers take turns.
    #[test]
    fn nothing_is_lost_where_the_server_ignores_conditions(
        steps in prop::collection::vec(step(2, true), 1..20),
    ) {
        run(&steps, 2, false, true, true)?;
    }

    /// One device alone (failures, remounts and all) never makes a conflict copy.
    #[test]
    fn one_device_alone_makes_no_conflict_copy(
        steps in prop::collection::vec(step(1, false), 1..30),
        short_ttl in any::<bool>(),
    ) {
        run(&steps, 1, short_ttl, false, false)?;
    }
}

#[test]
fn a_save_on_a_version_another_device_replaced_goes_beside_it() {
    let mut h = Harness::new(2, false, false);
    h.store.insert_raw(
        &format!("{PREFIX}notes.txt"),
        &body_of(1, false),
        UserMeta::new(),
    );
    h.must_survive.insert(1, "notes.txt");
    // The laptop opens the file and reads it; the desktop saves meanwhile.
    let laptop = h.devices[0].fs.clone();
    let (fh, ino) = h.rt.block_on(async {
        let attr = laptop.lookup(ROOT_INO, "notes.txt").await.unwrap();
        let fh = laptop.open(attr.ino, true, false).await.unwrap();
        assert_eq!(
            tag_of(&Harness::read_all(&laptop, fh).await.unwrap()),
            Some(1)
        );
        (fh, attr.ino)
    });
    h.apply(&Step::Save {
        dev: 1,
        name: 0,
        big: false,
    })
    .unwrap();
    // The laptop's close succeeds: its version is kept beside the desktop's.
    let laptop_tag = h.tag();
    let closed = h.rt.block_on(Harness::write_and_close(
        &laptop,
        fh,
        body_of(laptop_tag, false),
    ));
    assert_eq!(closed, Ok(()));
    h.must_survive.insert(laptop_tag, "notes.txt");
    h.check(true).unwrap();
    let copies = h.conflict_copies("notes.txt", 0);
    assert_eq!(copies.len(), 1, "{:?}", h.store.keys());
    // The desktop's version keeps the name; the laptop's is its conflict copy.
    let desktop_tag = h.s3_tag("notes.txt").unwrap();
    assert_ne!(desktop_tag, laptop_tag);
    let copy = copies[0].trim_start_matches(PREFIX);
    assert_eq!(h.s3_tag(copy), Some(laptop_tag));
    let stats = h.devices[0].fs.stats();
    assert_eq!(stats.conflicts, 1);
    assert_eq!(stats.recent_conflicts[0].kept_as.as_deref(), Some(copy));
    // The file went beside the name the kernel knows it by: an open of it before the kernel
    // looks it up by its new name came through the old name's stale entry, and is refused
    // as stale (the kernel then looks the name up and finds the desktop's version); once
    // looked up by its new name, it opens.
    let reopened = h.rt.block_on(async {
        let stale = laptop
            .open(ino, true, true)
            .await
            .map(drop)
            .map_err(|e| e.errno);
        let attr = laptop.lookup(ROOT_INO, copy).await.unwrap();
        assert_eq!(attr.ino, ino);
        let fh = laptop.open(ino, false, false).await.unwrap();
        (
            stale,
            Harness::read_all(&laptop, fh).await.map(|b| tag_of(&b)),
        )
    });
    assert_eq!(reopened, (Err(libc::ESTALE), Ok(Some(laptop_tag))));
    // The laptop now shows both: the name is the desktop's version again.
    let shown = h.rt.block_on(async {
        let attr = laptop.lookup(ROOT_INO, "notes.txt").await.unwrap();
        let fh = laptop.open(attr.ino, false, false).await.unwrap();
        Harness::read_all(&laptop, fh).await.unwrap()
    });
    assert_eq!(tag_of(&shown), Some(desktop_tag));
}

#[test]
fn a_kept_upload_retried_after_another_device_saved_goes_beside_it() {
    let mut h = Harness::new(2, false, false);
    h.apply(&Step::Create {
        dev: 0,
        name: 1,
        big: false,
    })
    .unwrap();
    h.apply(&Step::FailNextUpload { dev: 0 }).unwrap();
    // The laptop's save fails (kept); the desktop saves; the laptop's retry must not
    // overwrite the desktop's save.
    h.apply(&Step::Rewrite {
        dev: 0,
        name: 1,
        big: false,
    })
    .unwrap();
    assert_eq!(h.devices[0].fs.pending_uploads().len(), 1);
    assert_eq!(h.devices[0].store.own.fired_total(), 2, "both faults fired");
    h.apply(&Step::Save {
        dev: 1,
        name: 1,
        big: false,
    })
    .unwrap();
    h.drain().unwrap();
    h.check(true).unwrap();
    let keys = h.store.keys();
    assert_eq!(
        keys.iter()
            .filter(|k| k.contains("report.pdf.conflict-dev0-"))
            .count(),
        1,
        "{keys:?}"
    );
}

/// A device told a file is gone starts from "gone": an editor's save renamed onto the name
/// afterwards must not replace what another device put there meanwhile, a version this
/// device never showed. (The mount found the object gone when an open asked S3 again, not
/// through a lookup; the name then had to be remembered as absent all the same.)
#[test]
fn a_save_renamed_onto_a_name_found_gone_keeps_what_another_device_put_there() {
    let h = Harness::new(2, false, false);
    let key = format!("{PREFIX}notes.txt");
    h.store
        .insert_raw(&key, &body_of(1, false), UserMeta::new());
    let laptop = h.devices[0].fs.clone();
    let ino =
        h.rt.block_on(async { laptop.lookup(ROOT_INO, "notes.txt").await.unwrap().ino });
    // Another device saves: the laptop's read of the version it knew fails, and the mount
    // will ask S3 again at the next open.
    h.store
        .insert_raw(&key, &body_of(2, false), UserMeta::new());
    let stale = h.rt.block_on(async {
        let fh = laptop.open(ino, false, false).await.unwrap();
        Harness::read_all(&laptop, fh).await
    });
    assert!(
        stale.is_err(),
        "the read of a replaced version failed: {stale:?}"
    );
    // The file is deleted: the laptop's next open says so.
    let store = h.store.clone();
    h.rt.block_on(store.delete("notes.txt")).unwrap();
    let gone =
        h.rt.block_on(laptop.open(ino, false, false))
            .map(drop)
            .map_err(|e| e.errno);
    assert_eq!(gone, Err(libc::ENOENT));
    // Another device creates the name again; the laptop, which saw no file, saves one.
    h.store
        .insert_raw(&key, &body_of(3, false), UserMeta::new());
    let saved = h.rt.block_on(async {
        let (_, fh) = laptop
            .create(ROOT_INO, ".notes.txt.swp", 0o644, CALLER)
            .await
            .map_err(|e| e.errno)?;
        Harness::write_and_close(&laptop, fh, body_of(4, false)).await?;
        laptop
            .rename(ROOT_INO, ".notes.txt.swp", ROOT_INO, "notes.txt", false)
            .await
            .map_err(|e| e.errno)
    });
    assert_eq!(saved, Ok(()));
    assert_eq!(
        h.s3_tag("notes.txt"),
        Some(3),
        "the other device's file was replaced"
    );
    let copies = h.conflict_copies("notes.txt", 0);
    assert_eq!(copies.len(), 1, "{:?}", h.store.keys());
    assert_eq!(h.s3_tag(copies[0].trim_start_matches(PREFIX)), Some(4));
}
