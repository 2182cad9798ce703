//! `/metrics`: the figures of [`super::figures::FIGURES`] for one [`Sample`], in the
//! Prometheus text format (version 0.0.4), encoded by `prometheus-client` through a
//! collector that reads the sample (the figures are kept by the mount's parts, not by
//! metric objects).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::figures::{FIGURES, Kind, Sample, Val};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Metrics of the mount itself rather than of a figure: its identity and start.
pub const IDENTITY_ROWS: &[(&str, &str)] = &[
    (
        "`cognifs_mount_info{mountpoint,profile,s3_url}` gauge",
        "always 1; the mount's `mountpoint`, `profile` and `s3_url` as labels",
    ),
    (
        "`cognifs_start_time_seconds` gauge",
        "`started`: when the mount started",
    ),
];

/// Every metric of `sample`.
pub fn render(sample: &Sample) -> String {
    // The collector owns what it encodes: a snapshot is small, and taken once per scrape.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(owned(sample)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String does not fail");
    out
}

/// What the collector encodes (the 0.0.4 format shows an info as a gauge of 1 named
/// `…_info`): each figure's value, evaluated once per scrape.
struct Encoded {
    mountpoint: String,
    profile: String,
    s3_url: String,
    started: u64,
    values: Vec<(usize, Val)>,
}

fn owned(s: &Sample) -> Encoded {
    Encoded {
        mountpoint: s.ident.mountpoint.to_string_lossy().into_owned(),
        profile: s.ident.profile.clone(),
        s3_url: s.ident.s3_url.clone(),
        started: s.ident.started,
        values: FIGURES
            .iter()
            .enumerate()
            .filter(|(_, f)| f.metric.is_some())
            .map(|(i, f)| (i, (f.value)(s)))
            .collect(),
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded").finish_non_exhaustive()
    }
}

/// One sample of a labelled family: `(label name, label value)`.
type Label = [(&'static str, String); 1];

impl Collector for Encoded {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = self;
        let info = Info::new(vec![
            ("mountpoint", e.mountpoint.clone()),
            ("profile", e.profile.clone()),
            ("s3_url", e.s3_url.clone()),
        ]);
        info.encode(encoder.encode_descriptor(
            "cognifs_mount",
            "The mount: mount point, profile and S3 URL as labels",
            None,
            MetricType::Info,
        )?)?;
        ConstGauge::new(e.started as i64).encode(encoder.encode_descriptor(
            "cognifs_start_time_seconds",
            "Unix time the mount started",
            None,
            MetricType::Gauge,
        )?)?;
        for (i, value) in &e.values {
            let figure = &FIGURES[*i];
            let Some(metric) = figure.metric else {
                continue;
            };
            let metric_type = match metric.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let number = match value {
                Val::Int(Some(v)) => Some(Number::Int(*v)),
                Val::Float(Some(v)) => Some(Number::Float(*v)),
                Val::Bool(b) => Some(Number::Int(u64::from(*b))),
                Val::Int(None) | Val::Float(None) | Val::Text(_) | Val::Json(_) => None,
                Val::ByKind(_) | Val::Latency(_) => None,
            };
            match (value, number) {
                (_, Some(v)) => {
                    let mut m = encoder.encode_descriptor(
                        metric.name,
                        figure.meaning,
                        None,
                        metric_type,
                    )?;
                    encode_number(&mut m, metric.kind, v)?;
                }
                (Val::ByKind(kinds), None) => {
                    let label = metric.label.unwrap_or("kind");
                    let mut m = encoder.encode_descriptor(
                        metric.name,
                        figure.meaning,
                        None,
                        metric_type,
                    )?;
                    for (kind, v) in kinds {
                        let labels: Label = [(label, (*kind).to_owned())];
                        encode_number(
                            &mut m.encode_family(&labels)?,
                            metric.kind,
                            Number::Int(*v),
                        )?;
                    }
                }
                (Val::Latency(kinds), None) => {
                    let label = metric.label.unwrap_or("kind");
                    let mut m = encoder.encode_descriptor(
                        metric.name,
                        figure.meaning,
                        None,
                        metric_type,
                    )?;
                    for (kind, h) in kinds {
                        let labels: Label = [(label, (*kind).to_owned())];
                        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                            h.sum_seconds,
                            h.count(),
                            &h.per_bucket(),
                            None,
                        )?;
                    }
                }
                // `null` now: no sample (Prometheus then shows the series as absent).
                _ => {}
            }
        }
        Ok(())
    }
}

/// A sample's value: counts stay integers in the text.
#[derive(Clone, Copy)]
enum Number {
    Int(u64),
    Float(f64),
}

fn encode_number(
    m: &mut prometheus_client::encoding::MetricEncoder,
    kind: Kind,
    v: Number,
) -> Result<(), std::fmt::Error> {
    match (kind, v) {
        (Kind::Counter, Number::Int(v)) => m.encode_counter::<NoLabelSet, _, f64>(&v, None),
        (Kind::Counter, Number::Float(v)) => m.encode_counter::<NoLabelSet, _, f64>(&v, None),
        (_, Number::Int(v)) => m.encode_gauge(&v),
        (_, Number::Float(v)) => m.encode_gauge(&v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample_input;

    #[test]
    fn renders_the_text_format() {
        let text = render(&sample_input());
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
            "cognifs_start_time_seconds 1700000000",
            "cognifs_online 1",
            "cognifs_signed_in 1",
            "# TYPE cognifs_s3_request_duration_seconds histogram",
            "cognifs_s3_request_duration_seconds_bucket{kind=\"upload_part\",le=\"0.025\"} 0",
            "cognifs_s3_request_duration_seconds_bucket{kind=\"upload_part\",le=\"0.05\"} 2",
            "cognifs_s3_request_duration_seconds_bucket{kind=\"upload_part\",le=\"+Inf\"} 3",
            "cognifs_s3_request_duration_seconds_count{kind=\"upload_part\"} 3",
            "# TYPE cognifs_fuse_operation_duration_seconds histogram",
            "cognifs_fuse_operation_duration_seconds_count{op=\"read\"} 1",
            "cognifs_mount_info{mountpoint=\"/home/me/cloud\",profile=\"default\",s3_url=\"s3://b/us-east-1:x/\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // Absent while null: no disk cache, online, no offline change.
        assert!(!text.contains("cognifs_disk_cache_bytes "), "{text}");
        assert!(!text.contains("cognifs_offline_since_timestamp_seconds "));
        // Every sample belongs to a family declared once, before it.
        let mut declared = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
            } else if !l.starts_with('#') && !l.is_empty() {
                let name = l.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{name} has no TYPE line");
                let value = l.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{l}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = sample_input();
        s.ident.mountpoint = "/m/\"q\"\\x\ny".into();
        let text = render(&s);
        assert!(
            text.contains("mountpoint=\"/m/\\\"q\\\"\\\\x\\ny\""),
            "{text}"
        );
    }
}
