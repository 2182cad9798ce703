//! End-to-end, two devices: two real FUSE mounts of one identity (two spools and pending
//! areas, one devstack), another S3 client standing for the web app, and the conditional
//! writes that keep any save from being silently overwritten (issue 19).
//! Needs /dev/fuse and root (as on the CI machines).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognifs::fs::MountOptions;
use devstack::Running;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

/// One device's mount options: its own spool, pending area and name.
fn device(dir: &Path, name: &str, ttl: Duration) -> MountOptions {
    MountOptions {
        spool_dir: dir.join(name).join("spool"),
        pending_dir: Some(dir.join(name).join("pending")),
        device_name: name.to_owned(),
        metadata_ttl: ttl,
        ..MountOptions::default()
    }
}

struct Env {
    running: Running,
    admin: aws_sdk_s3::Client,
    bucket: String,
    id: String,
    dir: tempfile::TempDir,
}

impl Env {
    async fn with(running: Running) -> Env {
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        Env {
            admin: admin_s3(&running),
            bucket: running.profile.bucket.clone(),
            running,
            id,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn new() -> Env {
        Self::with(start().await).await
    }

    fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.id)
    }

    async fn s3(&self, rel: &str) -> Option<Vec<u8>> {
        get_bytes(&self.admin, &self.bucket, &self.key(rel)).await
    }

    async fn put(&self, rel: &str, data: impl Into<Vec<u8>>) {
        put(&self.admin, &self.bucket, &self.key(rel), data).await;
    }

    /// Keys relative to the prefix.
    async fn keys(&self) -> Vec<String> {
        let prefix = format!("{}/", self.id);
        keys_under(&self.admin, &self.bucket, &prefix)
            .await
            .into_iter()
            .map(|k| k.strip_prefix(&prefix).unwrap_or(&k).to_owned())
            .collect()
    }

    async fn mount(&self, name: &str, ttl: Duration) -> MountGuard {
        mount_user(
            &self.running,
            ALICE.0,
            ALICE.1,
            device(self.dir.path(), name, ttl),
        )
        .await
    }
}

fn conflict_copies(keys: &[String], name: &str) -> Vec<String> {
    let prefix = format!("{name}.conflict-");
    keys.iter()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_save_racing_the_web_apps_upload_is_kept_beside_it() {
    with_timeout(120, async {
        let env = Env::new().await;
        env.put("report.pdf", "first draft").await;
        let laptop = env.mount("laptop", Duration::from_secs(60)).await;
        let path = laptop.join("report.pdf");
        // The laptop has the file open while the web app uploads a new version.
        let file = blocking(move || {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)?;
            f.write_all(b"laptop's edit")?;
            std::io::Result::Ok(f)
        })
        .await
        .unwrap();
        env.put("report.pdf", "the web app's upload").await;
        // The close succeeds: the laptop's version is safe, beside the upload.
        blocking(move || {
            file.sync_all()?;
            drop(file);
            std::io::Result::Ok(())
        })
        .await
        .unwrap();
        assert_eq!(env.s3("report.pdf").await.unwrap(), b"the web app's upload");
        let keys = env.keys().await;
        let copies = conflict_copies(&keys, "report.pdf");
        assert_eq!(copies.len(), 1, "{keys:?}");
        assert!(
            copies[0].starts_with("report.pdf.conflict-laptop-"),
            "{}",
            copies[0]
        );
        assert_eq!(env.s3(&copies[0]).await.unwrap(), b"laptop's edit");
        // The mount shows both: the name the upload, the copy the laptop's edit.
        let (name, copy) = (laptop.join("report.pdf"), laptop.join(&copies[0]));
        let (a, b) = blocking(move || (std::fs::read(name), std::fs::read(copy))).await;
        assert_eq!(a.unwrap(), b"the web app's upload");
        assert_eq!(b.unwrap(), b"laptop's edit");
        let stats = laptop.mount().fs().stats();
        assert_eq!(stats.conflicts, 1);
        assert_eq!(
            stats.recent_conflicts[0].kept_as.as_deref(),
            Some(copies[0].as_str())
        );
        assert_eq!(stats.conditions.map(|c| c.atomic()), Some(true));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_never_gets_bytes_of_two_versions() {
    with_timeout(120, async {
        let env = Env::new().await;
        env.put("v.txt", "VERSION TWO, LONGER\n").await;
        let ttl = Duration::from_millis(500);
        let laptop = env.mount("laptop", ttl).await;
        let path = laptop.join("v.txt");
        let file = blocking(move || {
            let mut f = std::fs::File::open(path)?;
            let mut s = String::new();
            f.read_to_string(&mut s)?;
            std::io::Result::Ok((f, s))
        })
        .await
        .unwrap();
        assert_eq!(file.1, "VERSION TWO, LONGER\n");
        env.put("v.txt", "v3\n").await;
        // The mount learns of the new version once its view is older than the TTL: fstat
        // shows the old size until then, the new one after.
        let f = Arc::new(file.0);
        eventually(
            Duration::from_secs(30),
            "fstat shows the new version",
            || {
                let f = f.clone();
                async move {
                    let size = blocking(move || f.metadata().unwrap().len()).await;
                    assert!(size == 3 || size == 20, "fstat shows size {size}");
                    size == 3
                }
            },
        )
        .await;
        let reread = blocking(move || {
            let mut buf = vec![0u8; 4096];
            f.read_at(&mut buf, 0).map(|n| buf[..n].to_vec())
        })
        .await;
        match reread {
            // The old handle's version is gone: the read says so, it never mixes.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
            Ok(bytes) => assert!(
                bytes == b"v3\n" || bytes == b"VERSION TWO, LONGER\n",
                "a read mixed two versions: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
        // A new open reads the new version whole.
        let path = laptop.join("v.txt");
        assert_eq!(
            blocking(move || std::fs::read(path)).await.unwrap(),
            b"v3\n"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_aborts_only_its_own_dead_uploads_never_a_live_one() {
    with_timeout(120, async {
        let env = Env::new().await;
        let (s3, bucket) = (&env.admin, &env.bucket);
        // Another device's upload in progress (64 MiB in 8 parts, one sent so far), and one
        // this machine started from a process that is gone (its journal says so).
        let start = |rel: String| async move {
            s3.create_multipart_upload()
                .bucket(bucket)
                .key(rel)
                .send()
                .await
                .unwrap()
                .upload_id()
                .unwrap()
                .to_owned()
        };
        let live = start(env.key("desktop-upload.bin")).await;
        let part = s3
            .upload_part()
            .bucket(bucket)
            .key(env.key("desktop-upload.bin"))
            .upload_id(&live)
            .part_number(1)
            .body(pseudo_random(8 << 20, 1).into())
            .send()
            .await
            .unwrap();
        let dead = start(env.key("crashed.bin")).await;
        let opts = device(env.dir.path(), "laptop", Duration::from_secs(5));
        let journal =
            cognifs::upload_journal::UploadJournal::beside(opts.pending_dir.as_ref().unwrap())
                .unwrap();
        let location = format!("s3://{}/{}/", env.bucket, env.id);
        journal.started(&location, "crashed.bin", &dead);
        // Rewrite the note as a process that no longer exists would have left it.
        let dir = opts
            .pending_dir
            .as_ref()
            .unwrap()
            .parent()
            .unwrap()
            .join("uploads");
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            let gone = text.replace(
                &format!("\"pid\":{}", std::process::id()),
                &format!("\"pid\":{}", i32::MAX),
            );
            assert_ne!(text, gone);
            std::fs::write(&p, gone).unwrap();
        }
        let laptop = mount_user(&env.running, ALICE.0, ALICE.1, opts).await;
        let open = open_upload_ids(&env).await;
        assert!(
            open.contains(&live),
            "the desktop's live upload was aborted: {open:?}"
        );
        assert!(
            !open.contains(&dead),
            "this machine's dead upload is still open: {open:?}"
        );
        // The desktop finishes its upload as if nothing happened.
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        s3.complete_multipart_upload()
            .bucket(bucket)
            .key(env.key("desktop-upload.bin"))
            .upload_id(&live)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .parts(
                        CompletedPart::builder()
                            .part_number(1)
                            .e_tag(part.e_tag().unwrap())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("the live upload completes");
        drop(laptop);
    })
    .await;
}

async fn open_upload_ids(env: &Env) -> Vec<String> {
    env.admin
        .list_multipart_uploads()
        .bucket(&env.bucket)
        .prefix(format!("{}/", env.id))
        .send()
        .await
        .unwrap()
        .uploads()
        .iter()
        .filter_map(|u| u.upload_id().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_server_that_ignores_conditions_conflicts_are_still_caught_best_effort() {
    with_timeout(120, async {
        let env = Env::with(start_with(|o| o.ignore_conditions = true).await).await;
        env.put("notes.txt", "v1").await;
        let laptop = env.mount("laptop", Duration::from_secs(60)).await;
        let support = laptop.mount().fs().condition_support().unwrap();
        assert!(!support.atomic(), "{support:?}");
        let path = laptop.join("notes.txt");
        let file = blocking(move || {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)?;
            f.write_all(b"mine")?;
            std::io::Result::Ok(f)
        })
        .await
        .unwrap();
        env.put("notes.txt", "theirs").await;
        blocking(move || file.sync_all()).await.unwrap();
        assert_eq!(env.s3("notes.txt").await.unwrap(), b"theirs");
        let keys = env.keys().await;
        let copies = conflict_copies(&keys, "notes.txt");
        assert_eq!(copies.len(), 1, "{keys:?}");
        assert_eq!(env.s3(&copies[0]).await.unwrap(), b"mine");
    })
    .await;
}

/// What one device did in the race: the versions it wrote that were accepted, and the
/// versions its operations started from (which they may replace).
#[derive(Default)]
struct Ledger {
    accepted: BTreeSet<String>,
    replaced: BTreeSet<String>,
    /// Each operation and what it saw, for the failure message.
    log: Vec<String>,
}

/// The tag a body starts with (`laptop-17;…`).
fn tag_of(body: &[u8]) -> Option<String> {
    let end = body.iter().position(|&b| b == b';')?;
    String::from_utf8(body[..end].to_vec()).ok()
}

fn race_device(root: PathBuf, me: &'static str, seed: u64, ledger: Arc<Mutex<Ledger>>) {
    const NAMES: [&str; 3] = ["notes.txt", "todo.md", "plan.txt"];
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..50 {
        let name = NAMES[(next() % 3) as usize];
        let path = root.join(name);
        let tag = format!("{me}-{round}");
        let body = format!("{tag};{}", "x".repeat((next() % 200) as usize));
        // What the device sees at `path` now. A read that finds its version replaced
        // (ESTALE) has made the mount look again; the other device may replace it again
        // meanwhile, so read until a read goes through: that version is fresh in the mount,
        // and the next operation starts from it.
        let seen = |path: &Path| {
            for _ in 0..20 {
                match std::fs::read(path) {
                    Err(e) if e.raw_os_error() == Some(libc::ESTALE) => continue,
                    read => return read.ok().and_then(|b| tag_of(&b)),
                }
            }
            panic!("{me}: {} stayed stale for 20 reads", path.display())
        };
        let accepted = |r: std::io::Result<()>| match r {
            Ok(()) => true,
            // Lost a race on the name itself (it went away or came back): nothing written.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EEXIST | libc::ESTALE)
                ) =>
            {
                false
            }
            Err(e) => panic!("{me} round {round} on {name}: {e}"),
        };
        let op = next() % 5;
        let l = |base: Option<String>, wrote: bool| {
            let mut l = ledger.lock().unwrap();
            l.log.push(format!(
                "{tag} op {op} on {name}: saw {base:?}, wrote {wrote}"
            ));
            if let Some(b) = base {
                l.replaced.insert(b);
            }
            if wrote {
                l.accepted.insert(tag.clone());
            }
        };
        match op {
            // Edit in place: read, then write the new contents over the start.
            0 => {
                let r = (|| {
                    let mut f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)?;
                    let mut old = Vec::new();
                    f.read_to_end(&mut old)?;
                    f.set_len(0)?;
                    f.write_all_at(body.as_bytes(), 0)?;
                    f.sync_all()?;
                    Ok(old)
                })();
                match r {
                    Ok(old) => l(tag_of(&old), true),
                    Err(e) => {
                        let wrote = accepted(Err(e));
                        l(None, wrote);
                    }
                }
            }
            // O_TRUNC rewrite of what the device last read there.
            1 => {
                let base = seen(&path);
                let ok = accepted((|| {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(&path)?;
                    f.write_all(body.as_bytes())?;
                    f.sync_all()
                })());
                l(base, ok);
            }
            // A new file (only if the device sees none).
            2 => {
                let ok = accepted((|| {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)?;
                    f.write_all(body.as_bytes())?;
                    f.sync_all()
                })());
                l(None, ok);
            }
            // An editor's save: a temporary file renamed onto the name.
            3 => {
                let base = seen(&path);
                let tmp = root.join(format!(".{name}.{me}.tmp"));
                let ok = accepted((|| {
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(body.as_bytes())?;
                    f.sync_all()?;
                    drop(f);
                    std::fs::rename(&tmp, &path)
                })());
                l(base, ok);
            }
            // Unlink what the device last read there.
            _ => {
                let base = seen(&path);
                let ok = accepted(std::fs::remove_file(&path));
                l(base.filter(|_| ok), false);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_devices_racing_on_the_same_names_lose_no_save() {
    with_timeout(300, async {
        let env = Env::new().await;
        // Views that go stale and stay so (the devices race), and change only by each
        // mount's own operations: what a device read is what its next operation starts
        // from, so the ledger below is exact.
        let ttl = Duration::from_secs(600);
        let laptop = env.mount("laptop", ttl).await;
        let desktop = env.mount("desktop", ttl).await;
        let ledgers: Vec<Arc<Mutex<Ledger>>> = (0..2).map(|_| Default::default()).collect();
        let threads: Vec<_> = [(&laptop, "laptop", 7u64), (&desktop, "desktop", 11u64)]
            .into_iter()
            .zip(&ledgers)
            .map(|((m, me, seed), ledger)| {
                let (root, ledger) = (m.path().to_path_buf(), ledger.clone());
                std::thread::spawn(move || race_device(root, me, seed, ledger))
            })
            .collect();
        blocking_for(Duration::from_secs(240), move || {
            for t in threads {
                t.join().expect("a device's thread failed");
            }
        })
        .await;
        // Every accepted version is in S3, under its name, a conflict copy, or (renamed
        // from a temporary file) the name it was renamed to — unless an operation that had
        // read it replaced it.
        let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in env.keys().await {
            if let Some(body) = env.s3(&key).await
                && let Some(tag) = tag_of(&body)
            {
                found.entry(tag).or_default().push(key);
            }
        }
        let (mut accepted, mut replaced, mut log) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
        for l in &ledgers {
            let l = l.lock().unwrap();
            accepted.extend(l.accepted.iter().cloned());
            replaced.extend(l.replaced.iter().cloned());
            log.extend(l.log.iter().cloned());
        }
        assert!(accepted.len() > 20, "too few saves went through: {accepted:?}");
        let lost: Vec<&String> = accepted
            .iter()
            .filter(|t| !replaced.contains(*t) && !found.contains_key(*t))
            .collect();
        assert!(
            lost.is_empty(),
            "saves lost: {lost:?}; S3 holds {found:?}; the operations: {log:#?}"
        );
        // Mounted again (fresh views), both devices list the same names.
        drop((laptop, desktop));
        let laptop = env.mount("laptop", ttl).await;
        let desktop = env.mount("desktop", ttl).await;
        let list = |p: PathBuf| {
            let mut names: Vec<String> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let (a, b) = (laptop.path().to_path_buf(), desktop.path().to_path_buf());
        let (la, lb) = blocking(move || (list(a), list(b))).await;
        assert_eq!(la, lb);
        let copies = la.iter().filter(|n| n.contains(".conflict-")).count();
        eprintln!(
            "{} saves accepted, {} replaced by a later save that read them, {copies} conflict copies",
            accepted.len(),
            replaced.len()
        );
    })
    .await;
}
