//! Live status of a running mount: what `cognifs status` shows, `cognifs status --json`
//! prints, and `/metrics` serves, all from one sample ([`figures::Sample`]) and one table
//! of figures ([`figures::FIGURES`]).
//!
//! - The figures come from the core ([`crate::fs::Fs::stats`]), from the S3 request counts
//!   and latencies of [`crate::store::CountingStore`], the FUSE latencies of
//!   [`latency::fuse`], and from the credential refresher; [`Probe`] gathers them.
//! - The JSON's `live` object is built from the table; [`LiveStatus`] is the typed view
//!   of it that the commands read, keeping whatever else it holds in its `extra` maps, so
//!   a figure added to the table reaches every consumer without a change here.
//! - The mount process answers on a Unix socket beside its registry record
//!   (`{state}/{profile}/mounts/{pid}.sock`, mode 0600 in a 0700 directory): connect, read
//!   one JSON [`MountStatus`], done ([`server::StatusSocket`], [`server::query`]).
//! - With `--metrics-addr`, the same snapshot in Prometheus' text format at `GET /metrics`
//!   ([`server::MetricsServer`], [`prometheus::render`]).
//!
//! The JSON is a stable interface (README, "Status and metrics"): fields are only added,
//! and [`STATUS_VERSION`] changes if one ever has to change meaning.

pub mod figures;
pub mod latency;
pub mod prometheus;
pub mod server;
mod window;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::identity::{CredentialState, WatchedCredentials};
use crate::fs::Fs;
use crate::store::{RequestKind, RequestStats};
pub use window::{WINDOW_SECS, Window};

/// The `version` of [`MountStatus`] and [`StatusReport`].
pub const STATUS_VERSION: u32 = 1;

/// `cognifs status --json`: the profile, its sign-in, and every running mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct StatusReport {
    pub version: u32,
    pub profile: String,
    pub signed_in: bool,
    pub user: Option<String>,
    pub email: Option<String>,
    pub identity_id: Option<String>,
    /// `s3://BUCKET/PREFIX/` of the profile's data, once the identity is known.
    pub data: Option<String>,
    /// Unix seconds when the stored ID token expires.
    pub id_token_expires: Option<u64>,
    pub mounts: Vec<MountStatus>,
    /// Uploads of this profile that failed and are kept on disk until they are in S3.
    #[serde(default)]
    pub pending: Vec<crate::pending::PendingRecord>,
    /// Why the profile could not be loaded (no config file, no such profile); `mounts` then
    /// lists every running mount of this user, whatever its profile.
    #[serde(default)]
    pub profile_problem: Option<String>,
    /// `signed in`, `ending soon` (within 3 days), `signed out` (the sign-in ended or was
    /// refused: run `cognifs login`), `not signed in`; `None` without a profile.
    #[serde(default)]
    pub sign_in: Option<String>,
    /// When the sign-in ends, and what says so (`token endpoint`, `sign_in_lifetime`).
    #[serde(default)]
    pub sign_in_ends: Option<u64>,
    #[serde(default)]
    pub sign_in_ends_from: Option<String>,
    /// Where the sign-in's secrets are kept: `keyring` (the OS keyring) or `file`.
    #[serde(default)]
    pub token_storage: Option<String>,
}

/// One running mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct MountStatus {
    pub version: u32,
    pub pid: u32,
    pub mountpoint: PathBuf,
    pub profile: String,
    pub s3_url: String,
    /// Unix seconds when the mount started.
    pub started: u64,
    /// What the mount process reported; `None` when it did not answer on its socket.
    pub live: Option<LiveStatus>,
}

/// What the mount process itself reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct LiveStatus {
    /// Unix seconds when this snapshot was taken.
    pub time: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// By request kind, every kind always present.
    pub requests: BTreeMap<String, RequestCounts>,
    pub cache: CacheStatus,
    pub writes: WriteStatus,
    pub last_error: Option<ErrorStatus>,
    pub credentials: CredentialStatus,
    /// The other figures of [`figures::FIGURES`] (latency, disk cache, connectivity,
    /// offline, …), as the JSON has them.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RequestCounts {
    pub total: u64,
    pub errors: u64,
    pub last_minute: u64,
    pub errors_last_minute: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct CacheStatus {
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses); `None` before the first lookup.
    pub hit_ratio: Option<f64>,
    pub bytes: u64,
    pub capacity_bytes: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct WriteStatus {
    pub files_open: u64,
    pub bytes_waiting: u64,
    pub uploads_in_flight: u64,
    pub uploads: Vec<UploadStatus>,
    /// Uploads that failed, kept on disk and retried in the background (and their bytes).
    #[serde(default)]
    pub pending_uploads: u64,
    #[serde(default)]
    pub pending_bytes: u64,
    /// Writes that lost a race with another client (their data kept beside the object as
    /// a conflict copy, or their change not applied), and the latest copy's name.
    #[serde(default)]
    pub conflicts: u64,
    #[serde(default)]
    pub last_conflict: Option<String>,
    /// The latest conflicts (at most 100), oldest first.
    #[serde(default)]
    pub recent_conflicts: Vec<ConflictStatus>,
    /// `atomic` (the server checks every write's condition), `best effort` (it ignores
    /// them: a HEAD before each write), or `unchecked` (the probe could not run; taken as
    /// atomic).
    #[serde(default)]
    pub conflict_detection: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ConflictStatus {
    /// Unix seconds.
    pub time: u64,
    /// The path both wrote, relative to the mount point.
    pub path: String,
    /// Where this mount's version went (relative to the mount point); `None`: its change
    /// was not applied, the other client's newer version stays.
    pub kept_as: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct UploadStatus {
    /// Relative to the mount point.
    pub path: String,
    pub bytes_sent: u64,
    pub bytes_total: u64,
    pub streaming: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ErrorStatus {
    /// Unix seconds.
    pub time: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct CredentialStatus {
    /// Unix seconds when the credentials in use expire; `None`: they do not, or signed out.
    pub expires: Option<u64>,
    /// Unix seconds when they were obtained (at mount, then at each renewal).
    pub last_renewal: Option<u64>,
    /// Why the mount has no usable sign-in (signed out by `cognifs logout`, the sign-in
    /// ended or was revoked), or `None`. Until the next `cognifs login` requests fail and
    /// what cannot be uploaded is kept.
    #[serde(default)]
    pub signed_out: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The mount's identity in a [`MountStatus`] (what its registry record says).
#[derive(Debug, Clone)]
pub struct MountIdent {
    pub pid: u32,
    pub mountpoint: PathBuf,
    pub profile: String,
    pub s3_url: String,
    pub started: u64,
}

/// Gathers a [`MountStatus`] from the parts of a running mount.
pub struct Probe {
    pub ident: MountIdent,
    pub fs: Arc<Fs>,
    pub requests: Arc<RequestStats>,
    pub credentials: Option<WatchedCredentials>,
    /// When the sign-in ends (Unix seconds; 0: unknown), kept by the mount's sign-in watch.
    pub sign_in_ends: Arc<std::sync::atomic::AtomicU64>,
}

impl Probe {
    /// What the figures are computed from, now.
    pub fn sample(&self) -> figures::Sample {
        let credentials = match &self.credentials {
            Some(c) => figures::CredentialSample {
                expires: c.expiry().map(unix),
                last_renewal: Some(unix(c.last_renewal())),
                signed_out: match c.current() {
                    CredentialState::SignedOut(why) => Some(why),
                    CredentialState::Ready(_) => None,
                },
                sign_in_ends: Some(self.sign_in_ends.load(std::sync::atomic::Ordering::Relaxed))
                    .filter(|&t| t > 0),
            },
            None => figures::CredentialSample::default(),
        };
        figures::Sample {
            ident: self.ident.clone(),
            time: crate::clock::unix_now(),
            fs: self.fs.stats(),
            requests: RequestKind::ALL
                .iter()
                .map(|&k| (k.name(), self.requests.get(k)))
                .collect(),
            last_error: self.requests.last_error(),
            s3_latency: RequestKind::ALL
                .iter()
                .map(|&k| (k.name(), self.requests.latency(k)))
                .collect(),
            fuse_latency: latency::fuse().snapshot(),
            credentials,
        }
    }

    pub fn snapshot(&self) -> MountStatus {
        let sample = self.sample();
        MountStatus {
            version: STATUS_VERSION,
            pid: self.ident.pid,
            mountpoint: self.ident.mountpoint.clone(),
            profile: self.ident.profile.clone(),
            s3_url: self.ident.s3_url.clone(),
            started: self.ident.started,
            live: Some(live_status(&sample)),
        }
    }
}

/// The typed view of the table's JSON for `sample`.
pub fn live_status(sample: &figures::Sample) -> LiveStatus {
    serde_json::from_value(figures::live_json(sample))
        .expect("the table's JSON has every field LiveStatus requires")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A sample with something in every figure, for the renderers' tests.
    pub fn sample_input() -> figures::Sample {
        use crate::fs::stats::FsStats;
        use crate::store::{LastError, RequestCount};
        let at = |t: u64| UNIX_EPOCH + Duration::from_secs(t);
        let requests = RequestKind::ALL
            .iter()
            .map(|k| {
                let c = if *k == RequestKind::UploadPart {
                    RequestCount {
                        total: 9,
                        errors: 1,
                        last_minute: 8,
                        errors_last_minute: 1,
                    }
                } else {
                    RequestCount::default()
                };
                (k.name(), c)
            })
            .collect();
        let s3_latency = RequestKind::ALL
            .iter()
            .map(|k| {
                let h = latency::Histogram::default();
                if *k == RequestKind::UploadPart {
                    h.observe(Duration::from_millis(30));
                    h.observe(Duration::from_millis(40));
                    h.observe(Duration::from_secs(2));
                }
                (k.name(), h.snapshot())
            })
            .collect();
        let fuse = latency::Latencies::new(latency::FUSE_OPS);
        fuse.observe("read", Duration::from_micros(300));
        figures::Sample {
            ident: MountIdent {
                pid: 42,
                mountpoint: "/home/me/cloud".into(),
                profile: "default".into(),
                s3_url: "s3://b/us-east-1:x/".into(),
                started: 1_700_000_000,
            },
            time: 1_700_000_100,
            fs: FsStats {
                bytes_read: 1 << 20,
                bytes_written: 64 << 20,
                cache_hits: 3,
                cache_misses: 1,
                cache_bytes: 4 << 20,
                cache_capacity: 256 << 20,
                files_open_for_writing: 1,
                bytes_waiting: 40 << 20,
                uploads: vec![crate::fs::stats::UploadProgress {
                    path: "big \"x\".bin".into(),
                    sent: 24 << 20,
                    total: 64 << 20,
                    streaming: true,
                }],
                conflicts: 1,
                recent_conflicts: vec![crate::fs::stats::Conflict {
                    at: at(1_700_000_040),
                    key: "a.txt".into(),
                    kept_as: Some("a.txt.conflict-laptop-20261126T154001Z".into()),
                }],
                conditions: Some(crate::store::ConditionSupport::FULL),
                ..FsStats::default()
            },
            requests,
            last_error: Some(LastError {
                at: at(1_700_000_050),
                message: "upload_part \"big.bin\": S3 error: SlowDown".into(),
            }),
            s3_latency,
            fuse_latency: fuse.snapshot(),
            credentials: figures::CredentialSample {
                expires: Some(1_700_003_600),
                last_renewal: Some(1_700_000_000),
                signed_out: None,
                sign_in_ends: Some(1_700_086_500),
            },
        }
    }

    /// The status of [`sample_input`].
    pub fn sample() -> MountStatus {
        let input = sample_input();
        MountStatus {
            version: STATUS_VERSION,
            pid: input.ident.pid,
            mountpoint: input.ident.mountpoint.clone(),
            profile: input.ident.profile.clone(),
            s3_url: input.ident.s3_url.clone(),
            started: input.ident.started,
            live: Some(live_status(&input)),
        }
    }

    #[test]
    fn the_json_keeps_its_field_names() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["version"], 1);
        let live = &v["live"];
        for key in [
            "time",
            "bytes_read",
            "bytes_written",
            "requests",
            "cache",
            "writes",
            "last_error",
            "credentials",
            "latency",
            "connectivity",
            "offline",
            "disk_cache",
        ] {
            assert!(live.get(key).is_some(), "{key} missing: {live}");
        }
        assert_eq!(live["requests"]["upload_part"]["errors_last_minute"], 1);
        assert_eq!(live["requests"].as_object().unwrap().len(), 11);
        assert_eq!(live["cache"]["hit_ratio"], 0.75);
        assert_eq!(live["writes"]["uploads"][0]["bytes_total"], 64 << 20);
        assert_eq!(live["credentials"]["expires"], 1_700_003_600u64);
        assert_eq!(live["latency"]["s3"]["upload_part"]["count"], 3);
        assert_eq!(live["latency"]["s3"]["get"]["p50_seconds"], Value::Null);
        assert_eq!(live["latency"]["fuse"]["read"]["count"], 1);
        assert_eq!(live["connectivity"]["online"], true);
        assert_eq!(live["disk_cache"]["used_bytes"], Value::Null);
        let back: MountStatus = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, sample());
        // Lossless through the typed view: nothing the table emits is dropped.
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
    }

    #[test]
    fn the_typed_view_reads_the_tables_json() {
        let live = sample().live.unwrap();
        assert_eq!(live.writes.uploads[0].path, "big \"x\".bin");
        assert_eq!(live.writes.uploads_in_flight, 1);
        assert_eq!(
            live.writes.last_conflict.as_deref(),
            Some("a.txt.conflict-laptop-20261126T154001Z")
        );
        assert_eq!(live.writes.conflict_detection, "atomic");
        assert_eq!(live.last_error.unwrap().time, 1_700_000_050);
        assert_eq!(live.credentials.signed_out, None);
    }
}
