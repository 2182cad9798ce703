//! Live status of a running mount: what `cognifs status` shows, `cognifs status --json`
//! prints, and `/metrics` serves, all from one snapshot ([`MountStatus`]).
//!
//! - The figures come from the core ([`crate::fs::Fs::stats`]), from the S3 request counts
//!   of [`crate::store::CountingStore`], and from the credential refresher; [`Probe`]
//!   gathers them.
//! - The mount process answers on a Unix socket beside its registry record
//!   (`{state}/{profile}/mounts/{pid}.sock`, mode 0600 in a 0700 directory): connect, read
//!   one JSON [`MountStatus`], done ([`server::StatusSocket`], [`server::query`]).
//! - With `--metrics-addr`, the same snapshot in Prometheus' text format at `GET /metrics`
//!   ([`server::MetricsServer`], [`prometheus::render`]).
//!
//! The JSON is a stable interface (README, "Status and metrics"): fields are only added,
//! and [`STATUS_VERSION`] changes if one ever has to change meaning.

pub mod prometheus;
pub mod server;
mod window;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Probe {
    pub fn snapshot(&self) -> MountStatus {
        let s = self.fs.stats();
        let requests = RequestKind::ALL
            .iter()
            .map(|&k| {
                let c = self.requests.get(k);
                (
                    k.name().to_owned(),
                    RequestCounts {
                        total: c.total,
                        errors: c.errors,
                        last_minute: c.last_minute,
                        errors_last_minute: c.errors_last_minute,
                    },
                )
            })
            .collect();
        let lookups = s.cache_hits + s.cache_misses;
        let live = LiveStatus {
            time: crate::clock::unix_now(),
            bytes_read: s.bytes_read,
            bytes_written: s.bytes_written,
            requests,
            cache: CacheStatus {
                hits: s.cache_hits,
                misses: s.cache_misses,
                hit_ratio: (lookups > 0).then(|| s.cache_hits as f64 / lookups as f64),
                bytes: s.cache_bytes,
                capacity_bytes: s.cache_capacity,
            },
            writes: WriteStatus {
                files_open: s.files_open_for_writing,
                bytes_waiting: s.bytes_waiting,
                uploads_in_flight: s.uploads.len() as u64,
                uploads: s
                    .uploads
                    .into_iter()
                    .map(|u| UploadStatus {
                        path: u.path,
                        bytes_sent: u.sent,
                        bytes_total: u.total,
                        streaming: u.streaming,
                    })
                    .collect(),
                pending_uploads: s.pending.len() as u64,
                pending_bytes: s.pending.iter().map(|p| p.size).sum(),
                conflicts: s.conflicts,
                last_conflict: s
                    .recent_conflicts
                    .iter()
                    .rev()
                    .find_map(|c| c.kept_as.clone()),
                recent_conflicts: s
                    .recent_conflicts
                    .into_iter()
                    .map(|c| ConflictStatus {
                        time: unix(c.at),
                        path: c.key,
                        kept_as: c.kept_as,
                    })
                    .collect(),
                conflict_detection: match s.conditions {
                    Some(c) if c.atomic() => "atomic",
                    Some(_) => "best effort",
                    None => "unchecked",
                }
                .to_owned(),
            },
            last_error: self.requests.last_error().map(|e| ErrorStatus {
                time: unix(e.at),
                message: e.message,
            }),
            credentials: CredentialStatus {
                expires: self.credentials.as_ref().and_then(|c| c.expiry()).map(unix),
                last_renewal: self.credentials.as_ref().map(|c| unix(c.last_renewal())),
                signed_out: self.credentials.as_ref().and_then(|c| match c.current() {
                    CredentialState::SignedOut(why) => Some(why),
                    CredentialState::Ready(_) => None,
                }),
            },
        };
        MountStatus {
            version: STATUS_VERSION,
            pid: self.ident.pid,
            mountpoint: self.ident.mountpoint.clone(),
            profile: self.ident.profile.clone(),
            s3_url: self.ident.s3_url.clone(),
            started: self.ident.started,
            live: Some(live),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A status with something in every field, for the renderers' tests.
    pub fn sample() -> MountStatus {
        let mut requests: BTreeMap<String, RequestCounts> = RequestKind::ALL
            .iter()
            .map(|k| (k.name().to_owned(), RequestCounts::default()))
            .collect();
        requests.insert(
            "upload_part".into(),
            RequestCounts {
                total: 9,
                errors: 1,
                last_minute: 8,
                errors_last_minute: 1,
            },
        );
        MountStatus {
            version: STATUS_VERSION,
            pid: 42,
            mountpoint: "/home/me/cloud".into(),
            profile: "default".into(),
            s3_url: "s3://b/us-east-1:x/".into(),
            started: 1_700_000_000,
            live: Some(LiveStatus {
                time: 1_700_000_100,
                bytes_read: 1 << 20,
                bytes_written: 64 << 20,
                requests,
                cache: CacheStatus {
                    hits: 3,
                    misses: 1,
                    hit_ratio: Some(0.75),
                    bytes: 4 << 20,
                    capacity_bytes: 256 << 20,
                },
                writes: WriteStatus {
                    files_open: 1,
                    bytes_waiting: 40 << 20,
                    uploads_in_flight: 1,
                    uploads: vec![UploadStatus {
                        path: "big \"x\".bin".into(),
                        bytes_sent: 24 << 20,
                        bytes_total: 64 << 20,
                        streaming: true,
                    }],
                    pending_uploads: 1,
                    pending_bytes: 3 << 20,
                    conflicts: 1,
                    last_conflict: Some("a.txt.conflict-laptop-20261126T154001Z".into()),
                    recent_conflicts: vec![ConflictStatus {
                        time: 1_700_000_040,
                        path: "a.txt".into(),
                        kept_as: Some("a.txt.conflict-laptop-20261126T154001Z".into()),
                    }],
                    conflict_detection: "atomic".into(),
                },
                last_error: Some(ErrorStatus {
                    time: 1_700_000_050,
                    message: "upload_part \"big.bin\": S3 error: SlowDown".into(),
                }),
                credentials: CredentialStatus {
                    expires: Some(1_700_003_600),
                    last_renewal: Some(1_700_000_000),
                    signed_out: None,
                },
            }),
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
        ] {
            assert!(live.get(key).is_some(), "{key} missing: {live}");
        }
        assert_eq!(live["requests"]["upload_part"]["errors_last_minute"], 1);
        assert_eq!(live["requests"].as_object().unwrap().len(), 11);
        assert_eq!(live["cache"]["hit_ratio"], 0.75);
        assert_eq!(live["writes"]["uploads"][0]["bytes_total"], 64 << 20);
        assert_eq!(live["credentials"]["expires"], 1_700_003_600u64);
        let back: MountStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }
}
