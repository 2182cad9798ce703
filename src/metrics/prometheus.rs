//! The Prometheus text exposition format (version 0.0.4) of a [`MountStatus`], by hand: a
//! `# HELP` and `# TYPE` line per metric family, then its samples.

use std::fmt::Write;

use super::MountStatus;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Every metric of `status` (nothing but `cognifs_mount_info` when it has no live part).
pub fn render(status: &MountStatus) -> String {
    let mut o = Out(String::new());
    o.family(
        "cognifs_mount_info",
        "gauge",
        "The mount: mount point, profile and S3 URL as labels.",
    );
    let mountpoint = status.mountpoint.to_string_lossy();
    o.sample(
        "cognifs_mount_info",
        &[
            ("mountpoint", &mountpoint),
            ("profile", &status.profile),
            ("s3_url", &status.s3_url),
        ],
        1,
    );
    o.one(
        "cognifs_start_time_seconds",
        "gauge",
        "Unix time the mount started.",
        status.started,
    );
    let Some(l) = &status.live else {
        return o.0;
    };
    o.one(
        "cognifs_read_bytes_total",
        "counter",
        "Bytes read through the mount.",
        l.bytes_read,
    );
    o.one(
        "cognifs_written_bytes_total",
        "counter",
        "Bytes written through the mount.",
        l.bytes_written,
    );
    type Pick = fn(&super::RequestCounts) -> u64;
    let families: [(&str, &str, &str, Pick); 4] = [
        (
            "cognifs_s3_requests_total",
            "counter",
            "S3 requests, by kind.",
            |c| c.total,
        ),
        (
            "cognifs_s3_errors_total",
            "counter",
            "S3 requests that failed, by kind.",
            |c| c.errors,
        ),
        (
            "cognifs_s3_requests_last_minute",
            "gauge",
            "S3 requests in the last 60 seconds, by kind.",
            |c| c.last_minute,
        ),
        (
            "cognifs_s3_errors_last_minute",
            "gauge",
            "S3 requests that failed in the last 60 seconds, by kind.",
            |c| c.errors_last_minute,
        ),
    ];
    for (name, kind, help, pick) in families {
        o.family(name, kind, help);
        for (k, c) in &l.requests {
            o.sample(name, &[("kind", k)], pick(c));
        }
    }
    o.one(
        "cognifs_cache_hits_total",
        "counter",
        "Block-cache lookups that found the block.",
        l.cache.hits,
    );
    o.one(
        "cognifs_cache_misses_total",
        "counter",
        "Block-cache lookups that did not.",
        l.cache.misses,
    );
    o.one(
        "cognifs_cache_bytes",
        "gauge",
        "Bytes held by the block cache.",
        l.cache.bytes,
    );
    o.one(
        "cognifs_cache_capacity_bytes",
        "gauge",
        "The block cache's budget.",
        l.cache.capacity_bytes,
    );
    o.one(
        "cognifs_files_open_for_writing",
        "gauge",
        "Files open for writing.",
        l.writes.files_open,
    );
    o.one(
        "cognifs_upload_waiting_bytes",
        "gauge",
        "Bytes written through the mount and not yet in S3.",
        l.writes.bytes_waiting,
    );
    o.one(
        "cognifs_uploads_in_flight",
        "gauge",
        "Uploads under way.",
        l.writes.uploads_in_flight,
    );
    o.one(
        "cognifs_pending_uploads",
        "gauge",
        "Uploads that failed, kept on disk and retried in the background.",
        l.writes.pending_uploads,
    );
    o.one(
        "cognifs_pending_upload_bytes",
        "gauge",
        "Bytes of the uploads kept on disk.",
        l.writes.pending_bytes,
    );
    o.one(
        "cognifs_upload_conflicts_total",
        "counter",
        "Writes that lost a race with another client: kept beside the object as a conflict copy, or not applied.",
        l.writes.conflicts,
    );
    o.one(
        "cognifs_conflict_detection_atomic",
        "gauge",
        "1 when the S3 server checks every write's condition itself; 0 when the mount checks by a HEAD first (best effort) or could not tell.",
        u64::from(l.writes.conflict_detection == "atomic"),
    );
    if let Some(e) = &l.last_error {
        o.one(
            "cognifs_last_error_timestamp_seconds",
            "gauge",
            "Unix time of the last failed S3 request.",
            e.time,
        );
    }
    if let Some(t) = l.credentials.expires {
        o.one(
            "cognifs_credentials_expiry_timestamp_seconds",
            "gauge",
            "Unix time the AWS credentials in use expire.",
            t,
        );
    }
    if let Some(t) = l.credentials.last_renewal {
        o.one(
            "cognifs_credentials_last_renewal_timestamp_seconds",
            "gauge",
            "Unix time the AWS credentials in use were obtained.",
            t,
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;

    #[test]
    fn renders_the_text_format() {
        let text = render(&sample());
        assert!(text.ends_with('\n'));
        for line in [
            "# TYPE cognifs_written_bytes_total counter",
            "cognifs_written_bytes_total 67108864",
            "cognifs_read_bytes_total 1048576",
            "# TYPE cognifs_s3_requests_total counter",
            "cognifs_s3_requests_total{kind=\"upload_part\"} 9",
            "cognifs_s3_errors_total{kind=\"upload_part\"} 1",
            "cognifs_s3_requests_last_minute{kind=\"upload_part\"} 8",
            "cognifs_s3_requests_total{kind=\"head\"} 0",
            "cognifs_cache_hits_total 3",
            "cognifs_cache_misses_total 1",
            "cognifs_cache_bytes 4194304",
            "cognifs_cache_capacity_bytes 268435456",
            "cognifs_files_open_for_writing 1",
            "cognifs_upload_waiting_bytes 41943040",
            "cognifs_uploads_in_flight 1",
            "cognifs_last_error_timestamp_seconds 1700000050",
            "cognifs_credentials_expiry_timestamp_seconds 1700003600",
            "cognifs_credentials_last_renewal_timestamp_seconds 1700000000",
            "cognifs_mount_info{mountpoint=\"/home/me/cloud\",profile=\"default\",s3_url=\"s3://b/us-east-1:x/\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // Every sample belongs to a family declared once, before it.
        let mut declared = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{name} has no TYPE line");
                let value = l.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{l}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut s = sample();
        s.mountpoint = "/m/\"q\"".into();
        assert!(render(&s).contains("mountpoint=\"/m/\\\"q\\\"\""));
    }

    #[test]
    fn without_a_live_part_only_the_mount_is_described() {
        let mut s = sample();
        s.live = None;
        let text = render(&s);
        assert!(text.contains("cognifs_mount_info{"));
        assert!(!text.contains("cognifs_read_bytes_total"));
    }
}
