//! devstack: a local stand-in for the three AWS services cognifs talks to — a Cognito user
//! pool's hosted UI and OAuth endpoints, a Cognito identity pool, and S3 — on one HTTP
//! listener, faithful enough that code which works here works against AWS, and strict
//! enough that a security mistake in cognifs fails a test.
//!
//! Used in-process by tests and `cognifs demo` through [`start`], and as the
//! `cognifs-devstack` binary.
//!
//! Restarts: with a data dir of its own ([`Options::data_dir`], `--data-dir`) devstack keeps
//! what the real services keep — objects, and in [`state::FILE_NAME`] the user pool's signing
//! key, refresh-token grants and the AWS credentials it issued — so tokens and credentials
//! from before a restart keep working: a restart is an outage, not a sign-out. Without one,
//! everything is gone when [`Running`] is dropped.
//!
//! Faults, for tests: [`Running::forget_credentials`] (the binary: `SIGUSR1`) revokes every
//! issued AWS credential; [`Running::faults`] changes S3 latency, the `503 SlowDown` rate, and
//! takes S3 down (`503 ServiceUnavailable`) while devstack runs, answers conditional
//! CompleteMultipartUploads `409 ConditionalRequestConflict`
//! ([`Faults::conflict_next_complete`]), holds conditional writes to make races reproducible
//! ([`Faults::set_conditional_write_hold`]), and counts every fault it injects
//! ([`Faults::injected`]).
//!
//! Conditional writes are answered as AWS S3 answers them (see [`s3`]), unless
//! [`Options::ignore_conditions`] (`--ignore-conditions`) makes devstack accept the conditions
//! and write anyway, as some S3-compatible servers do.

pub mod cognito;
pub mod hosted_ui;
pub mod identity;
pub mod jwt;
pub mod objects;
pub mod s3;
pub mod server;
pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cognito::Cognito;
use crate::objects::ObjectStore;
use crate::server::Router;
pub use crate::server::{FaultCounts, Faults, NetworkFaults, Traffic};

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// Objects, and the Cognito state of [`state`], kept across restarts. `None`: a fresh
    /// temporary directory, removed when [`Running`] is dropped.
    pub data_dir: Option<PathBuf>,
    /// (name, password); empty means the demo user `demo:demo-pass`.
    pub users: Vec<(String, String)>,
    /// (access key, secret key) that may do anything.
    pub admin: Option<(String, String)>,
    pub callback_port: u16,
    pub token_ttl: Duration,
    pub credentials_ttl: Duration,
    /// How long a sign-in (its refresh token) works, as the app client's "refresh token
    /// expiration" (Cognito's default: 30 days).
    pub refresh_token_ttl: Duration,
    pub region: String,
    pub bucket: String,
    /// Initial values of the S3 fault knobs; [`Running::faults`] changes them later.
    pub latency: Duration,
    pub s3_error_rate: f64,
    /// Largest source a single CopyObject accepts (S3: 5 GiB); tests lower it.
    pub max_copy_size: u64,
    /// Ignore the conditions of writes, copies and deletes (`If-Match`, `If-None-Match: *`,
    /// `x-amz-copy-source-if-match` / `-if-none-match`): accept them and write anyway, as some
    /// S3-compatible servers do. Reads (GET, HEAD) keep their conditions.
    pub ignore_conditions: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: None,
            users: Vec::new(),
            admin: None,
            callback_port: 53682,
            token_ttl: Duration::from_secs(3600),
            credentials_ttl: Duration::from_secs(3600),
            refresh_token_ttl: cognito::REFRESH_TTL,
            region: "us-east-1".into(),
            bucket: "cognifs".into(),
            latency: Duration::ZERO,
            s3_error_rate: 0.0,
            max_copy_size: 5 << 30,
            ignore_conditions: false,
        }
    }
}

pub const DEMO_USER: (&str, &str) = ("demo", "demo-pass");

/// What a cognifs profile needs to use this devstack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub region: String,
    pub user_pool_id: String,
    pub client_id: String,
    pub domain: String,
    pub identity_pool_id: String,
    pub bucket: String,
    pub s3_endpoint: String,
    pub identity_endpoint: String,
    pub callback_port: u16,
}

impl Profile {
    /// A cognifs config file with this profile as `[name]`.
    pub fn to_toml(&self, name: &str) -> String {
        format!(
            "# Written by cognifs-devstack: a profile that points at a local stand-in for Cognito and S3.\n\
             [{name}]\n\
             region = \"{}\"\n\
             user_pool_id = \"{}\"\n\
             client_id = \"{}\"\n\
             domain = \"{}\"\n\
             identity_pool_id = \"{}\"\n\
             bucket = \"{}\"\n\
             s3_endpoint = \"{}\"\n\
             identity_endpoint = \"{}\"\n\
             callback_port = {}\n",
            self.region,
            self.user_pool_id,
            self.client_id,
            self.domain,
            self.identity_pool_id,
            self.bucket,
            self.s3_endpoint,
            self.identity_endpoint,
            self.callback_port,
        )
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub base_url: String,
    pub profile: Profile,
    pub data_dir: PathBuf,
    pub cognito: Arc<Cognito>,
    faults: Arc<Faults>,
    traffic: Arc<Traffic>,
    ignore_conditions: bool,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    _temp_dir: Option<tempfile::TempDir>,
}

impl Running {
    /// Stops accepting, closes open connections, and waits for the listener task.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
    }

    /// Forgets every AWS credential issued so far, in memory and in the state file, as a
    /// revocation would: S3 then refuses them with `403 InvalidAccessKeyId`. Sign-ins are
    /// kept, so GetCredentialsForIdentity issues new ones. Returns how many were forgotten.
    pub fn forget_credentials(&self) -> usize {
        self.cognito.forget_credentials()
    }

    /// The S3 fault knobs, live: changes apply to requests that arrive after them.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    /// Whether this devstack ignores the conditions of writes ([`Options::ignore_conditions`]).
    pub fn ignores_conditions(&self) -> bool {
        self.ignore_conditions
    }

    /// What the S3 requests so far carried.
    pub fn traffic(&self) -> Arc<Traffic> {
        self.traffic.clone()
    }

    /// Writes a cognifs config file whose `[default]` profile points here.
    pub fn write_config(&self, path: &Path) -> anyhow::Result<()> {
        self.write_config_as(path, "default")
    }

    /// Writes a cognifs config file whose profile `[name]` points here.
    pub fn write_config_as(&self, path: &Path, name: &str) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, self.profile.to_toml(name))
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Names the hosted UI claims at the root; a bucket by that name could not be reached.
const RESERVED_BUCKET_NAMES: &[&str] = &["oauth2", "login", "logout"];

pub async fn start(options: Options) -> anyhow::Result<Running> {
    anyhow::ensure!(
        !RESERVED_BUCKET_NAMES.contains(&options.bucket.as_str()),
        "bucket name {:?} is reserved by the hosted UI",
        options.bucket
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&options.s3_error_rate),
        "--s3-error-rate must be between 0 and 1"
    );
    let (temp_dir, data_dir) = match &options.data_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("cognifs-devstack-")
                .tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let store = Arc::new(
        ObjectStore::open(&data_dir)
            .with_context(|| format!("opening data dir {}", data_dir.display()))?,
    );

    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {}", options.listen))?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");

    let users = if options.users.is_empty() {
        vec![(DEMO_USER.0.to_owned(), DEMO_USER.1.to_owned())]
    } else {
        options.users.clone()
    };
    let mut cognito = Cognito::new(
        &options.region,
        &users,
        options.callback_port,
        options.token_ttl,
        options.credentials_ttl,
    );
    cognito.base_url = base_url.clone();
    cognito.refresh_ttl = options.refresh_token_ttl;
    // Only a data dir of the caller's own outlives this process; a temporary one needs no file.
    if options.data_dir.is_some() {
        cognito.keep_state_in(data_dir.join(state::FILE_NAME))?;
    }
    let cognito = Arc::new(cognito);

    let faults = Arc::new(Faults::new(options.latency, options.s3_error_rate));
    let dev_s3 = s3::DevS3 {
        store,
        bucket: options.bucket.clone(),
        region: options.region.clone(),
        max_copy_size: options.max_copy_size,
        faults: faults.clone(),
        ignore_conditions: options.ignore_conditions,
    };
    let mut builder = s3s::service::S3ServiceBuilder::new(dev_s3);
    builder.set_auth(s3::DevAuth {
        cognito: cognito.clone(),
        admin: options.admin.clone(),
    });
    builder.set_access(s3::DevAccess {
        cognito: cognito.clone(),
        admin_key: options.admin.as_ref().map(|(k, _)| k.clone()),
        bucket: options.bucket.clone(),
    });
    let traffic = Arc::new(Traffic::default());
    let router = Arc::new(Router {
        cognito: cognito.clone(),
        s3: builder.build(),
        faults: faults.clone(),
        traffic: traffic.clone(),
    });

    let (shutdown, mut stop) = watch::channel(false);
    let server = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req| router.clone().handle(req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    });

    let profile = Profile {
        region: options.region.clone(),
        user_pool_id: cognito.user_pool_id.clone(),
        client_id: cognito.client_id.clone(),
        domain: base_url.clone(),
        identity_pool_id: cognito.identity_pool_id.clone(),
        bucket: options.bucket.clone(),
        s3_endpoint: base_url.clone(),
        identity_endpoint: base_url.clone(),
        callback_port: options.callback_port,
    };
    Ok(Running {
        addr,
        base_url,
        profile,
        data_dir,
        cognito,
        faults,
        traffic,
        ignore_conditions: options.ignore_conditions,
        shutdown,
        server,
        _temp_dir: temp_dir,
    })
}
