//! Input from outside the mount's own code — the local state files, other clients'
//! metadata — never reaches outside the prefix or the profile's directories and never
//! panics. The core over the in-memory store: no FUSE, root or server.

use std::path::Path;
use std::sync::Arc;

use cognifs::fs::{Fs, MountOptions, ROOT_INO};
use cognifs::pending::{PendingRecord, records_in};
use cognifs::store::{MemoryStore, ObjectStore, UserMeta};

const LOCATION: &str = "s3://bucket/us-east-1:me/";

struct Setup {
    store: Arc<MemoryStore>,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Setup {
            store: Arc::new(MemoryStore::new("bucket", "us-east-1:me")),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn pending_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state/p/pending")
    }

    fn mount(&self) -> Fs {
        let opts = MountOptions {
            spool_dir: self.dir.path().join("spool"),
            pending_dir: Some(self.pending_dir()),
            ..MountOptions::default()
        };
        Fs::new(self.store.clone() as Arc<dyn ObjectStore>, opts)
    }

    /// Every key the store holds, whatever its prefix.
    fn keys(&self) -> Vec<String> {
        self.store.keys()
    }
}

fn record(rel: &str, data: &str, size: u64) -> PendingRecord {
    PendingRecord {
        location: LOCATION.into(),
        rel: rel.into(),
        base_etag: None,
        size,
        meta: UserMeta::new(),
        since: 1,
        last_error: "S3 error: down".into(),
        data: data.into(),
    }
}

/// Writes `record` into the pending area as `file` (its own `<id>.json` by default).
fn plant(dir: &Path, record: &PendingRecord, file: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    let name = file.map_or_else(|| format!("{}.json", record.id()), str::to_owned);
    std::fs::write(dir.join(name), serde_json::to_vec(record).unwrap()).unwrap();
}

#[tokio::test]
async fn tampered_pending_records_reach_neither_outside_files_nor_the_inode_table() {
    let s = Setup::new();
    let area = s.pending_dir();
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, b"secret").unwrap();
    // Data outside the area, by a relative path and by an absolute one.
    plant(&area, &record("stolen", "../../../victim", 6), None);
    plant(
        &area,
        &record("stolen-abs", victim.to_str().unwrap(), 6),
        None,
    );
    // Data inside the area under a well-formed name, but a symlink to the victim.
    let linked = record("linked", "", 6);
    let linked = record("linked", &format!("{}-1-1.data", linked.id()), 6);
    std::fs::create_dir_all(&area).unwrap();
    std::os::unix::fs::symlink(&victim, area.join(&linked.data)).unwrap();
    plant(&area, &linked, None);
    // Keys that are not paths under the prefix, with data the area could have made.
    for rel in ["../escape", "a/../../b", "a//b", "./c", "d/"] {
        let r = record(rel, "", 1);
        let r = record(rel, &format!("{}-1-1.data", r.id()), 1);
        std::fs::write(area.join(&r.data), b"x").unwrap();
        plant(&area, &r, None);
    }
    // A sound record stored under another record's file name.
    let misfiled = record("misfiled", "", 1);
    let misfiled = record("misfiled", &format!("{}-1-1.data", misfiled.id()), 1);
    std::fs::write(area.join(&misfiled.data), b"m").unwrap();
    plant(&area, &misfiled, Some("0123456789abcdef.json"));

    let fs = s.mount();
    fs.recover().await;
    assert!(
        fs.pending_uploads().is_empty(),
        "adopted: {:?}",
        fs.pending_uploads()
    );
    fs.retry_pending_now().await;
    for name in [
        "stolen",
        "stolen-abs",
        "linked",
        "escape",
        "misfiled",
        "b",
        "c",
    ] {
        assert_eq!(
            fs.lookup(ROOT_INO, name)
                .await
                .map(|a| a.ino)
                .err()
                .map(|e| e.errno),
            Some(libc::ENOENT),
            "{name} is in the mount"
        );
    }
    assert!(s.keys().is_empty(), "uploaded: {:?}", s.keys());
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
    // Only the sound record is listed (its data is what cannot be opened); the rest are
    // skipped and left on disk for a person to look at.
    assert_eq!(records_in(&area), vec![linked]);
    assert!(area.join("0123456789abcdef.json").exists());
    drop(fs);
    // Nothing a record names outside the area was touched when a mount opened it either.
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
}

mod listing_keys {
    use std::time::SystemTime;

    use cognifs::fs::inodes::{build_listing, valid_name};
    use cognifs::store::{ListPage, ObjectInfo, Scope};
    use proptest::prelude::*;

    fn object(name: String) -> ObjectInfo {
        ObjectInfo {
            name,
            size: 0,
            etag: "\"e\"".into(),
            last_modified: SystemTime::UNIX_EPOCH,
            meta: None,
        }
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,6}",
            "[a./]{0,5}",
            Just("..".to_owned()),
            Just("n".repeat(256)),
            prop::collection::vec(any::<u8>(), 0..12)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    }

    proptest! {
        /// Whatever names a server lists, the listing shows only names the kernel can be
        /// given, each once, and the store's rules refuse a key that leaves the prefix.
        #[test]
        fn any_listed_keys_give_only_valid_names(
            files in prop::collection::vec(name(), 0..12),
            dirs in prop::collection::vec(name(), 0..12),
            rel in ".{0,12}",
        ) {
            let page = ListPage {
                files: files.into_iter().map(object).collect(),
                dirs,
                next: None,
            };
            let listed = build_listing(&[page]);
            let mut names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
            prop_assert!(names.iter().all(|n| valid_name(n)), "{names:?}");
            let count = names.len();
            names.dedup();
            prop_assert_eq!(names.len(), count);
            let scope = Scope::new("us-east-1:me");
            for key in [scope.object_key(&rel), scope.dir_key(&rel), scope.entry_key(&rel)]
                .into_iter()
                .flatten()
            {
                let inside = key.strip_prefix("us-east-1:me/").unwrap_or("");
                prop_assert!(key.starts_with("us-east-1:me/"), "{key}");
                prop_assert!(!inside.split('/').any(|s| s == ".." || s == "."), "{key}");
            }
        }
    }
}

mod renewal_steps {
    use std::time::Duration;

    use cognifs::auth::AuthError;
    use cognifs::auth::identity::Session;
    use cognifs::auth::tokens::{TokenState, TokenStore};
    use cognifs::config::{ConfigSource, Profile};

    /// A server that accepts connections and never answers; its address.
    async fn silent_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        addr
    }

    /// A profile whose hosted UI and Cognito Identity are `silent`, with 1 s timeouts.
    fn profile(dir: &std::path::Path, silent: std::net::SocketAddr) -> Profile {
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!(
                "[default]\nregion = \"us-east-1\"\nuser_pool_id = \"us-east-1_Abc\"\n\
                 client_id = \"abc\"\ndomain = \"http://{silent}\"\n\
                 identity_pool_id = \"us-east-1:00000000-1111-2222-3333-444444444444\"\n\
                 bucket = \"b-1\"\nidentity_endpoint = \"http://{silent}\"\n\
                 request_timeout = 1\noperation_timeout = 1\n"
            ),
        )
        .unwrap();
        cognifs::config::load(&ConfigSource {
            path: Some(path),
            profile: Some("default".into()),
        })
        .unwrap()
    }

    fn far_future() -> u64 {
        cognifs::clock::unix_now() + 3600
    }

    /// Every step of a renewal — the token refresh, GetId, GetCredentialsForIdentity — ends
    /// (with a network error, retried by the refresher) when its server accepts and stalls.
    #[tokio::test]
    async fn every_renewal_step_gives_up_on_a_stalled_server() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let silent = silent_server().await;
        let store = TokenStore::new(&dir.path().join("state"), "default");
        let session = Session::with_store(profile(dir.path(), silent), store.clone());
        let steps = [
            // The ID token is stale: the refresh goes to the token endpoint.
            (None, None, "token endpoint"),
            // Fresh, but no identity id yet: GetId.
            (Some(far_future()), None, "GetId"),
            (
                Some(far_future()),
                Some("us-east-1:x".to_owned()),
                "GetCredentialsForIdentity",
            ),
        ];
        for (expires, identity_id, step) in steps {
            store
                .save(&TokenState {
                    refresh_token: "r".into(),
                    id_token: Some("i".into()),
                    id_token_expires: expires,
                    identity_id,
                    username: None,
                    email: None,
                    signed_in_at: None,
                    refresh_token_expires: None,
                })
                .unwrap();
            // The deadline only catches a hang; the step's own bound is 1 s.
            let got = tokio::time::timeout(Duration::from_secs(20), session.fetch_credentials())
                .await
                .unwrap_or_else(|_| panic!("{step}: the renewal step hung"));
            match got {
                Err(AuthError::Network(why)) => assert!(
                    step != "token endpoint" || why.contains("operation_timeout"),
                    "{step}: {why}"
                ),
                other => panic!("{step}: {other:?}"),
            }
        }
    }
}

/// A symlink object larger than any path is refused without being fetched; one of the
/// largest possible target is read whole.
#[tokio::test]
async fn an_oversized_symlink_object_is_refused_without_a_get() {
    use cognifs::store::RequestKind;
    let s = Setup::new();
    let link_meta = |len: usize| {
        (
            vec![b'a'; len],
            UserMeta::from([("mode".to_owned(), (libc::S_IFLNK | 0o777).to_string())]),
        )
    };
    for (name, len) in [("huge", 64 << 20), ("longest", 4095), ("too-long", 4096)] {
        let (body, meta) = link_meta(len);
        s.store
            .insert_raw(&format!("us-east-1:me/{name}"), &body, meta);
    }
    let fs = s.mount();
    for (name, expect) in [
        ("huge", Err(libc::ENAMETOOLONG)),
        ("too-long", Err(libc::ENAMETOOLONG)),
        ("longest", Ok(4095)),
    ] {
        let attr = fs.lookup(ROOT_INO, name).await.unwrap();
        s.store.reset_counts();
        let got = fs
            .readlink(attr.ino)
            .await
            .map(|t| t.len())
            .map_err(|e| e.errno);
        assert_eq!(got, expect, "{name}");
        let gets = s.store.counts().get(RequestKind::Get);
        assert_eq!(gets, u64::from(expect.is_ok()), "{name}: {gets} GETs");
    }
}

/// A directory rename lists the tree it moves; past `MAX_RECURSIVE_KEYS` keys it is refused
/// with `EXDEV` (so `mv` moves the tree itself) instead of holding the whole tree.
#[tokio::test]
async fn a_directory_too_big_to_rename_server_side_is_exdev() {
    use cognifs::store::MAX_RECURSIVE_KEYS;
    let s = Setup::new();
    for i in 0..=MAX_RECURSIVE_KEYS {
        s.store
            .insert_raw(&format!("us-east-1:me/big/f{i}"), b"", UserMeta::new());
    }
    s.store
        .insert_raw("us-east-1:me/small/f", b"x", UserMeta::new());
    let fs = s.mount();
    let got = fs.rename(ROOT_INO, "big", ROOT_INO, "moved", false).await;
    assert_eq!(got.err().map(|e| e.errno), Some(libc::EXDEV));
    assert!(s.store.get_raw("us-east-1:me/big/f0").is_some());
    assert!(s.store.get_raw("us-east-1:me/moved/f0").is_none());
    fs.rename(ROOT_INO, "small", ROOT_INO, "moved", false)
        .await
        .unwrap();
    assert_eq!(
        s.store.get_raw("us-east-1:me/moved/f").unwrap().0.as_ref(),
        b"x"
    );
}

/// The spool and metadata-cache directories are the user's alone: made 0700, and narrowed
/// to 0700 when an earlier version left them 0755.
#[test]
fn spool_and_metadata_cache_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (spool, meta) = (dir.path().join("spool"), dir.path().join("meta"));
    std::fs::create_dir(&spool).unwrap();
    std::fs::create_dir(&meta).unwrap();
    for d in [&spool, &meta] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _rt = rt.enter();
    let store = Arc::new(MemoryStore::new("bucket", "us-east-1:me"));
    let _fs = Fs::new(
        store as Arc<dyn ObjectStore>,
        MountOptions {
            spool_dir: spool.clone(),
            meta_cache: Some(meta.join("m.jsonl")),
            ..MountOptions::default()
        },
    );
    assert_eq!((mode(&spool), mode(&meta)), (0o700, 0o700));
    let fresh = dir.path().join("new/spool");
    let _fs = Fs::new(
        Arc::new(MemoryStore::new("bucket", "us-east-1:me")) as Arc<dyn ObjectStore>,
        MountOptions {
            spool_dir: fresh.clone(),
            meta_cache: Some(dir.path().join("new/meta/m.jsonl")),
            ..MountOptions::default()
        },
    );
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&dir.path().join("new/meta")), 0o700);
}

/// A mount holds the refresh token and AWS keys: its process cannot be dumped or traced.
/// (This test's own process becomes undumpable; nothing else here needs otherwise.)
#[test]
fn the_daemon_makes_itself_undumpable() {
    cognifs::daemon::forbid_core_dumps().unwrap();
    // SAFETY: PR_GET_DUMPABLE takes no pointer.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    assert_eq!(dumpable, 0);
}
