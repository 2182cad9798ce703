//! What is made of [`FIGURES`]: the `live` object of `status --json`, the lines `cognifs
//! status` draws from it, and the README's table (`/metrics` is `prometheus.rs`).

use serde_json::{Map, Value};

use super::super::latency::HistogramSnapshot;
use super::{FIGURES, Kind, Sample, Show, Unit, Val};

/// `{count, sum_seconds, p50_seconds, p99_seconds}` of one histogram.
pub fn latency_json(h: &HistogramSnapshot) -> Value {
    serde_json::json!({
        "count": h.count(),
        "sum_seconds": h.sum_seconds,
        "p50_seconds": h.quantile(0.5),
        "p99_seconds": h.quantile(0.99),
    })
}

/// Puts `value` at the dotted `path` of `obj`, making the objects on the way.
fn insert(obj: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut at = obj;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            at.insert(part.to_owned(), value);
            return;
        }
        let next = at
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        at = next.as_object_mut().expect("made an object just above");
    }
}

/// The `live` object of `status --json`, from [`FIGURES`].
pub fn live_json(s: &Sample) -> Value {
    let mut live = Map::new();
    for f in FIGURES {
        let Some(path) = f.json else { continue };
        match (f.value)(s) {
            Val::Int(v) => insert(&mut live, path, v.into()),
            Val::Float(v) => insert(&mut live, path, v.into()),
            Val::Bool(v) => insert(&mut live, path, v.into()),
            Val::Text(v) => insert(&mut live, path, v.into()),
            Val::Json(v) => insert(&mut live, path, v),
            Val::ByKind(kinds) => {
                for (kind, v) in kinds {
                    insert(&mut live, &path.replace('*', kind), v.into());
                }
            }
            Val::Latency(kinds) => {
                for (kind, h) in kinds {
                    insert(&mut live, &path.replace('*', kind), latency_json(&h));
                }
            }
        }
    }
    Value::Object(live)
}

/// The value at the dotted `path` of `v`, if there is one.
pub fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |at, part| at.get(part))
}

/// The lines `cognifs status` draws from [`Show::Item`] figures, from a mount's `live`
/// JSON: one line per `line` label, in table order, its items joined by `, `. Figures
/// absent or `null`, and counts of 0, are left out, and so is a line left empty.
pub fn item_lines(live: &Value, now: u64) -> Vec<String> {
    let mut lines: Vec<(&'static str, Vec<String>)> = Vec::new();
    for f in FIGURES {
        let (
            Some(path),
            Show::Item {
                line,
                template,
                unit,
            },
        ) = (f.json, f.show)
        else {
            continue;
        };
        let Some(v) = lookup(live, path).filter(|v| !v.is_null()) else {
            continue;
        };
        let shown = match unit {
            // A count of none says nothing: left out (`0 change(s) queued`).
            Unit::Count => v.as_u64().filter(|&n| n > 0).map(|n| n.to_string()),
            Unit::Bytes => v.as_u64().map(crate::commands::status::fmt_bytes),
            Unit::Ago => v.as_u64().map(|t| {
                format!(
                    "{} ago",
                    crate::commands::status::fmt_duration(now.saturating_sub(t))
                )
            }),
            Unit::Text => v.as_str().map(|t| crate::httpd::printable(t, 200)),
            Unit::Flag(yes, no) => v.as_bool().map(|b| (if b { yes } else { no }).to_owned()),
        };
        let Some(shown) = shown else { continue };
        let text = template.replace("{}", &shown);
        match lines.iter_mut().find(|(l, _)| *l == line) {
            Some((_, items)) => items.push(text),
            None => lines.push((line, vec![text])),
        }
    }
    lines
        .into_iter()
        .map(|(line, items)| format!("  {line:<13}{}", items.join(", ")))
        .collect()
}

/// The README's table of figures (between `<!-- figures:begin -->` and
/// `<!-- figures:end -->`).
pub fn readme_section() -> String {
    let mut o = String::from(
        "| field of `mounts[].live` | Prometheus (`--metrics-addr`) | meaning |\n|---|---|---|\n",
    );
    for (metric, meaning) in super::super::prometheus::IDENTITY_ROWS {
        o.push_str(&format!("| — | {metric} | {meaning} |\n"));
    }
    for f in FIGURES {
        let field = f
            .json
            .map(|p| format!("`{}`", p.replace('*', "KIND")))
            .unwrap_or_else(|| "—".to_owned());
        let metric = match f.metric {
            None => "—".to_owned(),
            Some(m) => {
                let name = match m.kind {
                    Kind::Counter => format!("{}_total", m.name),
                    _ => m.name.to_owned(),
                };
                let labels = m.label.map(|l| format!("{{{l}}}")).unwrap_or_default();
                let kind = match m.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                };
                format!("`{name}{labels}` {kind}")
            }
        };
        o.push_str(&format!("| {field} | {metric} | {} |\n", f.meaning));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_and_lookup_finds_them() {
        let mut m = Map::new();
        insert(&mut m, "a.b.c", 1.into());
        insert(&mut m, "a.b.d", Value::Null);
        insert(&mut m, "e", "x".into());
        let v = Value::Object(m);
        assert_eq!(lookup(&v, "a.b.c"), Some(&Value::from(1)));
        assert_eq!(lookup(&v, "a.b.d"), Some(&Value::Null));
        assert_eq!(lookup(&v, "a.x"), None);
        assert_eq!(lookup(&v, "e"), Some(&Value::from("x")));
    }
}
