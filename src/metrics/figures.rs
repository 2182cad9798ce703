//! Every figure a mount reports, defined once in [`FIGURES`]: where it sits in the status
//! JSON (`mounts[].live`), its Prometheus name and type, what it means (the README's table
//! and the `# HELP` line are generated from it) and how `cognifs status` shows it.
//!
//! The mount builds its live JSON from this table ([`live_json`]), `/metrics` from the same
//! [`Sample`] ([`super::prometheus::render`]), `cognifs status` draws the lines of the
//! figures that name one ([`Show::Item`]) from the JSON, and the README's section between
//! `<!-- figures:begin -->` and `<!-- figures:end -->` is [`readme_section`] (a test fails
//! when they differ); those three are in `figures/views.rs`. Adding a figure is adding one
//! entry here (docs/DEVELOPMENT.md).

use serde_json::Value;

use super::latency::HistogramSnapshot;
use super::{MountIdent, unix};
use crate::fs::stats::FsStats;
use crate::store::{LastError, RequestCount};

mod views;
pub use views::{item_lines, latency_json, live_json, lookup, readme_section};

/// What one snapshot of a running mount is computed from.
pub struct Sample {
    pub ident: MountIdent,
    /// Unix seconds when it was taken.
    pub time: u64,
    pub fs: FsStats,
    /// Every request kind, in [`crate::store::RequestKind::ALL`]'s order.
    pub requests: Vec<(&'static str, RequestCount)>,
    pub last_error: Option<LastError>,
    pub s3_latency: Vec<(&'static str, HistogramSnapshot)>,
    pub fuse_latency: Vec<(&'static str, HistogramSnapshot)>,
    pub credentials: CredentialSample,
}

/// The sign-in as the mount uses it.
#[derive(Debug, Clone, Default)]
pub struct CredentialSample {
    /// Unix seconds when the AWS credentials in use expire.
    pub expires: Option<u64>,
    /// Unix seconds when they were obtained.
    pub last_renewal: Option<u64>,
    /// Why there is no usable sign-in, if there is none.
    pub signed_out: Option<String>,
    /// When the sign-in ends, if known.
    pub sign_in_ends: Option<u64>,
}

/// A figure's value in one sample.
pub enum Val {
    /// A count, a size or a Unix time; `None` is `null` (and no Prometheus sample).
    Int(Option<u64>),
    Float(Option<f64>),
    Bool(bool),
    Text(Option<String>),
    /// Lists and records: JSON only.
    Json(Value),
    /// One count per kind: the path's `*` is the kind, Prometheus' label its value.
    ByKind(Vec<(&'static str, u64)>),
    /// One latency histogram per kind: `{count, sum_seconds, p50_seconds, p99_seconds}` in
    /// the JSON, a histogram in Prometheus.
    Latency(Vec<(&'static str, HistogramSnapshot)>),
}

/// Prometheus' types, as exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows while the mount runs (its name gets `_total`).
    Counter,
    Gauge,
    Histogram,
}

/// How a figure reaches `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Without `_total`, which counters get when exposed.
    pub name: &'static str,
    pub kind: Kind,
    /// The label of a [`Val::ByKind`] or [`Val::Latency`] figure.
    pub label: Option<&'static str>,
}

/// How `cognifs status` shows a figure.
#[derive(Debug, Clone, Copy)]
pub enum Show {
    /// Not shown, or drawn by a line of its own in `commands/status.rs`.
    Custom,
    /// In the line `line` (the label column), as `template` with `{}` replaced by the value
    /// formatted per `unit`; a `null` value is left out.
    Item {
        line: &'static str,
        template: &'static str,
        unit: Unit,
    },
}

/// How a value reads in `cognifs status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    /// A Unix time, shown as how long ago.
    Ago,
    Text,
    /// A flag: the first word when true, the second when false.
    Flag(&'static str, &'static str),
}

/// One figure.
pub struct Figure {
    /// Where it sits under `mounts[].live` (dotted; `*` is each kind), or `None` for a
    /// figure only `/metrics` has (derived from another).
    pub json: Option<&'static str>,
    pub metric: Option<Metric>,
    /// What it means, one sentence without the final period: the README and `# HELP`.
    pub meaning: &'static str,
    pub show: Show,
    pub value: fn(&Sample) -> Val,
}

const fn counter(name: &'static str) -> Option<Metric> {
    Some(Metric {
        name,
        kind: Kind::Counter,
        label: None,
    })
}

const fn gauge(name: &'static str) -> Option<Metric> {
    Some(Metric {
        name,
        kind: Kind::Gauge,
        label: None,
    })
}

const fn labelled(name: &'static str, kind: Kind, label: &'static str) -> Option<Metric> {
    Some(Metric {
        name,
        kind,
        label: Some(label),
    })
}

const fn item(line: &'static str, template: &'static str, unit: Unit) -> Show {
    Show::Item {
        line,
        template,
        unit,
    }
}

fn int(v: u64) -> Val {
    Val::Int(Some(v))
}

fn by_kind(s: &Sample, pick: fn(&RequestCount) -> u64) -> Val {
    Val::ByKind(s.requests.iter().map(|(k, c)| (*k, pick(c))).collect())
}

/// The table. Order is the JSON's, the README's and `/metrics`' order.
pub static FIGURES: &[Figure] = &[
    Figure {
        json: Some("time"),
        metric: None,
        meaning: "when the figures were taken",
        show: Show::Custom,
        value: |s| int(s.time),
    },
    Figure {
        json: Some("bytes_read"),
        metric: counter("cognifs_read_bytes"),
        meaning: "bytes read from files through the mount since it started",
        show: Show::Custom,
        value: |s| int(s.fs.bytes_read),
    },
    Figure {
        json: Some("bytes_written"),
        metric: counter("cognifs_written_bytes"),
        meaning: "bytes written to files through the mount since it started",
        show: Show::Custom,
        value: |s| int(s.fs.bytes_written),
    },
    Figure {
        json: Some("requests.*.total"),
        metric: labelled("cognifs_s3_requests", Kind::Counter, "kind"),
        meaning: "S3 requests of each kind since the mount started (every kind always present: head, list, get, put, create_multipart, upload_part, complete_multipart, abort_multipart, list_uploads, delete, copy); a listing S3 pages is one",
        show: Show::Custom,
        value: |s| by_kind(s, |c| c.total),
    },
    Figure {
        json: Some("requests.*.errors"),
        metric: labelled("cognifs_s3_errors", Kind::Counter, "kind"),
        meaning: "S3 requests of each kind that failed (a write held back by its condition is not a failure)",
        show: Show::Custom,
        value: |s| by_kind(s, |c| c.errors),
    },
    Figure {
        json: Some("requests.*.last_minute"),
        metric: labelled("cognifs_s3_requests_last_minute", Kind::Gauge, "kind"),
        meaning: "S3 requests of each kind in the last 60 s",
        show: Show::Custom,
        value: |s| by_kind(s, |c| c.last_minute),
    },
    Figure {
        json: Some("requests.*.errors_last_minute"),
        metric: labelled("cognifs_s3_errors_last_minute", Kind::Gauge, "kind"),
        meaning: "S3 requests of each kind that failed in the last 60 s",
        show: Show::Custom,
        value: |s| by_kind(s, |c| c.errors_last_minute),
    },
    Figure {
        json: Some("latency.s3.*"),
        metric: labelled(
            "cognifs_s3_request_duration_seconds",
            Kind::Histogram,
            "kind",
        ),
        meaning: "time S3 requests of each kind took, from the call to its answer (SDK retries included): `count`, `sum_seconds`, `p50_seconds`, `p99_seconds` (`null` before the first)",
        show: Show::Custom,
        value: |s| Val::Latency(s.s3_latency.clone()),
    },
    Figure {
        json: Some("latency.fuse.*"),
        metric: labelled(
            "cognifs_fuse_operation_duration_seconds",
            Kind::Histogram,
            "op",
        ),
        meaning: "time FUSE operations of each kind took, from the kernel's call to the answer (lookup, getattr, setattr, open, read, write, flush, fsync, release, create, readdir, readdirplus, mknod, mkdir, unlink, rmdir, symlink, readlink, rename, getxattr, listxattr, setxattr, removexattr), as for `latency.s3`",
        show: Show::Custom,
        value: |s| Val::Latency(s.fuse_latency.clone()),
    },
    Figure {
        json: Some("cache.hits"),
        metric: counter("cognifs_cache_hits"),
        meaning: "block-cache lookups by readers that found the block (a block already being fetched by readahead counts as neither hit nor miss)",
        show: Show::Custom,
        value: |s| int(s.fs.cache_hits),
    },
    Figure {
        json: Some("cache.misses"),
        metric: counter("cognifs_cache_misses"),
        meaning: "block-cache lookups by readers that did not find the block",
        show: Show::Custom,
        value: |s| int(s.fs.cache_misses),
    },
    Figure {
        json: Some("cache.hit_ratio"),
        metric: None,
        meaning: "`hits / (hits + misses)`, `null` before the first lookup",
        show: Show::Custom,
        value: |s| {
            let lookups = s.fs.cache_hits + s.fs.cache_misses;
            Val::Float((lookups > 0).then(|| s.fs.cache_hits as f64 / lookups as f64))
        },
    },
    Figure {
        json: Some("cache.bytes"),
        metric: gauge("cognifs_cache_bytes"),
        meaning: "bytes held by the block cache in memory",
        show: Show::Custom,
        value: |s| int(s.fs.cache_bytes),
    },
    Figure {
        json: Some("cache.capacity_bytes"),
        metric: gauge("cognifs_cache_capacity_bytes"),
        meaning: "the block cache's budget",
        show: Show::Custom,
        value: |s| int(s.fs.cache_capacity),
    },
    Figure {
        json: Some("disk_cache.used_bytes"),
        metric: gauge("cognifs_disk_cache_bytes"),
        meaning: "bytes of file data kept in the disk cache (`null`: the mount has none)",
        show: item("disk cache", "{} used", Unit::Bytes),
        value: |s| Val::Int(s.fs.disk_cache.as_ref().map(|d| d.used_bytes)),
    },
    Figure {
        json: Some("disk_cache.budget_bytes"),
        metric: gauge("cognifs_disk_cache_budget_bytes"),
        meaning: "the disk cache's budget (`--cache-size`)",
        show: item("disk cache", "of {}", Unit::Bytes),
        value: |s| Val::Int(s.fs.disk_cache.as_ref().map(|d| d.budget_bytes)),
    },
    Figure {
        json: Some("disk_cache.pinned_bytes"),
        metric: gauge("cognifs_disk_cache_pinned_bytes"),
        meaning: "bytes of the disk cache pinned (kept whatever the budget)",
        show: item("disk cache", "{} pinned", Unit::Bytes),
        value: |s| Val::Int(s.fs.disk_cache.as_ref().map(|d| d.pinned_bytes)),
    },
    Figure {
        json: Some("disk_cache.hits"),
        metric: counter("cognifs_disk_cache_hits"),
        meaning: "blocks read from the disk cache instead of S3",
        show: item("disk cache", "{} hits", Unit::Count),
        value: |s| Val::Int(s.fs.disk_cache.as_ref().map(|d| d.hits)),
    },
    Figure {
        json: Some("disk_cache.misses"),
        metric: counter("cognifs_disk_cache_misses"),
        meaning: "blocks looked for in the disk cache and fetched from S3",
        show: item("disk cache", "{} misses", Unit::Count),
        value: |s| Val::Int(s.fs.disk_cache.as_ref().map(|d| d.misses)),
    },
    Figure {
        json: Some("disk_cache.corrupt"),
        metric: counter("cognifs_disk_cache_corrupt_blocks"),
        meaning: "blocks found torn or damaged in the disk cache, removed and fetched again",
        show: Show::Custom,
        value: |s| Val::Int(s.fs.disk_cache.as_ref().map(|d| d.corrupt)),
    },
    Figure {
        json: Some("writes.files_open"),
        metric: gauge("cognifs_files_open_for_writing"),
        meaning: "files open for writing",
        show: Show::Custom,
        value: |s| int(s.fs.files_open_for_writing),
    },
    Figure {
        json: Some("writes.bytes_waiting"),
        metric: gauge("cognifs_upload_waiting_bytes"),
        meaning: "bytes not yet in S3: of each upload in flight, what S3 has not accepted yet; of each other file with unsaved changes, its size (`0` once every `close` has returned)",
        show: Show::Custom,
        value: |s| int(s.fs.bytes_waiting),
    },
    Figure {
        json: Some("writes.uploads_in_flight"),
        metric: gauge("cognifs_uploads_in_flight"),
        meaning: "uploads under way (`uploads[]`'s length)",
        show: Show::Custom,
        value: |s| int(s.fs.uploads.len() as u64),
    },
    Figure {
        json: Some("writes.uploads"),
        metric: None,
        meaning: "each upload under way: `path` (relative to the mount point), `bytes_sent` (accepted by S3), `bytes_total` (for a streaming upload: written so far), `streaming` (the file is still being written and uploaded as it grows)",
        show: Show::Custom,
        value: |s| {
            Val::Json(
                s.fs.uploads
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "path": u.path,
                            "bytes_sent": u.sent,
                            "bytes_total": u.total,
                            "streaming": u.streaming,
                        })
                    })
                    .collect(),
            )
        },
    },
    Figure {
        json: Some("writes.pending_uploads"),
        metric: gauge("cognifs_pending_uploads"),
        meaning: "uploads that failed (or were made offline) and are kept on disk, uploaded in the background once S3 answers",
        show: Show::Custom,
        value: |s| int(s.fs.pending.len() as u64),
    },
    Figure {
        json: Some("writes.pending_bytes"),
        metric: gauge("cognifs_pending_upload_bytes"),
        meaning: "bytes of those kept uploads",
        show: Show::Custom,
        value: |s| int(s.fs.pending.iter().map(|p| p.size).sum()),
    },
    Figure {
        json: Some("writes.uploads_kept"),
        metric: counter("cognifs_uploads_kept"),
        meaning: "uploads kept on disk since the mount started",
        show: Show::Custom,
        value: |s| int(s.fs.uploads_kept),
    },
    Figure {
        json: Some("writes.pending_uploaded"),
        metric: counter("cognifs_pending_uploaded"),
        meaning: "kept uploads that reached S3 since the mount started",
        show: Show::Custom,
        value: |s| int(s.fs.pending_uploaded),
    },
    Figure {
        json: Some("writes.conflicts"),
        metric: counter("cognifs_upload_conflicts"),
        meaning: "writes that lost a race with another client since the mount started (kept beside the object as a conflict copy, or not applied: see *Two devices*)",
        show: Show::Custom,
        value: |s| int(s.fs.conflicts),
    },
    Figure {
        json: Some("writes.last_conflict"),
        metric: None,
        meaning: "the latest conflict copy's path, or `null`",
        show: Show::Custom,
        value: |s| {
            Val::Text(
                s.fs.recent_conflicts
                    .iter()
                    .rev()
                    .find_map(|c| c.kept_as.clone()),
            )
        },
    },
    Figure {
        json: Some("writes.recent_conflicts"),
        metric: None,
        meaning: "the latest 100 conflicts, oldest first: `time`, `path` (both wrote it), `kept_as` (the conflict copy holding this mount's version; `null`: its change was not applied, the other client's newer version stays)",
        show: Show::Custom,
        value: |s| {
            Val::Json(
                s.fs.recent_conflicts
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "time": unix(c.at),
                            "path": c.key,
                            "kept_as": c.kept_as,
                        })
                    })
                    .collect(),
            )
        },
    },
    Figure {
        json: Some("writes.conflict_detection"),
        metric: None,
        meaning: "`atomic` (S3 checks every write's version), `best effort` (the server ignores conditional writes: a HEAD first), `unchecked` (S3 could not be asked at mount; taken as atomic)",
        show: Show::Custom,
        value: |s| Val::Text(Some(conflict_detection(s).to_owned())),
    },
    Figure {
        json: None,
        metric: gauge("cognifs_conflict_detection_atomic"),
        meaning: "1 when `writes.conflict_detection` is `atomic`, else 0",
        show: Show::Custom,
        value: |s| int(u64::from(conflict_detection(s) == "atomic")),
    },
    Figure {
        json: Some("connectivity.online"),
        metric: gauge("cognifs_online"),
        meaning: "whether S3 answers (`false`: offline, reads come from what this machine kept, changes are queued); 1 or 0 in `/metrics`",
        show: item("connection", "{}", Unit::Flag("online", "OFFLINE")),
        value: |s| Val::Bool(s.fs.connectivity.online),
    },
    Figure {
        json: Some("connectivity.offline_since"),
        metric: gauge("cognifs_offline_since_timestamp_seconds"),
        meaning: "when the mount went offline, or `null` while online",
        show: item("connection", "since {}", Unit::Ago),
        value: |s| {
            Val::Int(
                s.fs.connectivity
                    .offline_since
                    .as_ref()
                    .map(|(t, _)| unix(*t)),
            )
        },
    },
    Figure {
        json: Some("connectivity.offline_reason"),
        metric: None,
        meaning: "the failure that took the mount offline, or `null`",
        show: item("connection", "({})", Unit::Text),
        value: |s| {
            Val::Text(
                s.fs.connectivity
                    .offline_since
                    .as_ref()
                    .map(|(_, why)| why.clone()),
            )
        },
    },
    Figure {
        json: Some("connectivity.outages"),
        metric: counter("cognifs_outages"),
        meaning: "times the mount went offline since it started",
        show: item("connection", "{} outage(s)", Unit::Count),
        value: |s| int(s.fs.connectivity.outages),
    },
    Figure {
        json: Some("offline.queued_changes"),
        metric: gauge("cognifs_offline_queued_changes"),
        meaning: "changes to the tree made offline (mkdir, unlink, rmdir, metadata) kept in order on disk, sent when S3 answers; their data is in `writes.pending_bytes`",
        show: item("offline", "{} change(s) queued", Unit::Count),
        value: |s| int(s.fs.offline.queued_changes),
    },
    Figure {
        json: Some("offline.oldest_change"),
        metric: gauge("cognifs_offline_oldest_change_timestamp_seconds"),
        meaning: "when the oldest queued change was made, or `null`",
        show: item("offline", "the oldest {}", Unit::Ago),
        value: |s| Val::Int(s.fs.offline.oldest_change),
    },
    Figure {
        json: Some("offline.replay_error"),
        metric: None,
        meaning: "why sending the queued changes last stopped, or `null`",
        show: item("offline", "stopped: {}", Unit::Text),
        value: |s| Val::Text(s.fs.offline.replay_error.clone()),
    },
    Figure {
        json: Some("offline.changes_replayed"),
        metric: counter("cognifs_offline_changes_replayed"),
        meaning: "queued changes sent to S3 since the mount started",
        show: Show::Custom,
        value: |s| int(s.fs.changes_replayed),
    },
    Figure {
        json: Some("last_error"),
        metric: None,
        meaning: "the last failed S3 request, `{time, message}` (message: `KIND \"PATH\": ERROR`), or `null`",
        show: Show::Custom,
        value: |s| {
            Val::Json(match &s.last_error {
                Some(e) => serde_json::json!({"time": unix(e.at), "message": e.message}),
                None => Value::Null,
            })
        },
    },
    Figure {
        json: None,
        metric: gauge("cognifs_last_error_timestamp_seconds"),
        meaning: "`last_error.time` (absent until an error)",
        show: Show::Custom,
        value: |s| Val::Int(s.last_error.as_ref().map(|e| unix(e.at))),
    },
    Figure {
        json: Some("credentials.expires"),
        metric: gauge("cognifs_credentials_expiry_timestamp_seconds"),
        meaning: "when the AWS credentials in use expire (renewed well before), or `null`",
        show: Show::Custom,
        value: |s| Val::Int(s.credentials.expires),
    },
    Figure {
        json: Some("credentials.last_renewal"),
        metric: gauge("cognifs_credentials_last_renewal_timestamp_seconds"),
        meaning: "when they were obtained (at mount, then at each renewal)",
        show: Show::Custom,
        value: |s| Val::Int(s.credentials.last_renewal),
    },
    Figure {
        json: Some("credentials.signed_out"),
        metric: None,
        meaning: "why the mount has no usable sign-in (`cognifs logout`, the sign-in ended or was revoked), or `null`; until the next `cognifs login` requests fail with `EACCES` and closes that cannot upload are kept",
        show: Show::Custom,
        value: |s| Val::Text(s.credentials.signed_out.clone()),
    },
    Figure {
        json: Some("credentials.sign_in_ends"),
        metric: gauge("cognifs_sign_in_end_timestamp_seconds"),
        meaning: "when the sign-in ends (its refresh token: as the token endpoint said, else the sign-in time plus the profile's `sign_in_lifetime`), or `null` when unknown; from 3 days before, the mount warns",
        show: Show::Custom,
        value: |s| Val::Int(s.credentials.sign_in_ends),
    },
    Figure {
        json: None,
        metric: gauge("cognifs_signed_in"),
        meaning: "1 while the mount has a usable sign-in, 0 when `credentials.signed_out` is set",
        show: Show::Custom,
        value: |s| int(u64::from(s.credentials.signed_out.is_none())),
    },
];

fn conflict_detection(s: &Sample) -> &'static str {
    match s.fs.conditions {
        Some(c) if c.atomic() => "atomic",
        Some(_) => "best effort",
        None => "unchecked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_named_once_and_means_something() {
        let mut paths = std::collections::BTreeSet::new();
        let mut metrics = std::collections::BTreeSet::new();
        for f in FIGURES {
            assert!(f.json.is_some() || f.metric.is_some(), "{}", f.meaning);
            assert!(
                !f.meaning.is_empty() && !f.meaning.ends_with('.'),
                "{}",
                f.meaning
            );
            if let Some(p) = f.json {
                assert!(paths.insert(p), "{p} twice");
            }
            if let Some(m) = f.metric {
                assert!(m.name.starts_with("cognifs_"), "{}", m.name);
                assert!(!m.name.ends_with("_total"), "{}: _total is added", m.name);
                assert!(metrics.insert(m.name), "{} twice", m.name);
            }
        }
    }

    #[test]
    fn the_readme_shows_the_generated_table_of_figures() {
        let readme = include_str!("../../README.md");
        let begin = "<!-- figures:begin -->\n";
        let end = "<!-- figures:end -->";
        let start = readme.find(begin).expect("README has the figures markers") + begin.len();
        let stop = readme[start..].find(end).expect("and the end marker") + start;
        let expected = readme_section();
        if readme[start..stop] != expected && std::env::var_os("COGNIFS_BLESS_README").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
            let fresh = format!("{}{expected}{}", &readme[..start], &readme[stop..]);
            std::fs::write(path, fresh).unwrap();
            return;
        }
        assert!(
            readme[start..stop] == expected,
            "README's table of figures is stale: run `COGNIFS_BLESS_README=1 cargo test --lib \
             the_readme_shows` to regenerate it"
        );
    }
}
