//! The profile keys: one [`KeySpec`] per key in [`KEY_SPECS`], and the checks they run.
//!
//! Parsing, the required-key check, validation, origins, `config show` and `config import`'s
//! "keep on re-import" all walk the table, so adding a key is one entry here plus its
//! [`Profile`] field (and that field's blank value in `Profile::unresolved`).

use std::net::Ipv6Addr;
use std::path::PathBuf;

use url::{Host, Url};

use super::{DEFAULT_CALLBACK_PORT, DEFAULT_PREFIX_TEMPLATE, Env, Origin, Profile, env_nonempty};

/// A key's value before validation, and where it came from.
pub(super) struct RawValue {
    pub text: String,
    /// Set for integers from TOML, which must not be re-parsed from text.
    pub int: Option<i64>,
    pub origin: Origin,
}

/// The TOML type a key takes in the file (`$COGNIFS_<KEY>` values are always text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    String,
    Integer,
    Boolean,
}

impl Kind {
    /// For "must be …, not …" errors.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Integer => "an integer",
            Kind::Boolean => "true or false",
        }
    }
}

/// What a profile that does not set the key gets.
pub(super) enum Unset {
    /// Nothing: loading fails, listing every missing required key at once.
    Required,
    /// The field stays `None`; `config show` prints the key as "(not set)".
    Absent,
    /// `value` (it may read keys above this one), validated like a set value; `config show`
    /// labels its origin `shown_as`.
    Default {
        value: fn(&Profile) -> String,
        shown_as: &'static str,
    },
}

/// Everything the configuration layer knows about one key.
pub(super) struct KeySpec {
    pub name: &'static str,
    pub kind: Kind,
    pub unset: Unset,
    /// `config import` does not derive it from the .env, so a re-import keeps the user's value.
    pub kept_on_reimport: bool,
    /// Validates the value and stores the normalized form in the profile being built. Keys are
    /// set in table order, so a check may compare against the keys above it (e.g. the region).
    pub set: fn(&mut Profile, &RawValue, Env<'_>) -> Result<(), String>,
    /// The effective value for `config show` and [`super::KeyOrigins`]; empty when unset.
    pub show: fn(&Profile) -> String,
}

/// How `config show` labels a plain built-in default (the same as [`Origin::Default`] prints).
const DEFAULT_ORIGIN: &str = "default";

/// Every key a profile may hold, in the order `config show` prints them (and they are set).
pub(super) const KEY_SPECS: &[KeySpec] = &[
    KeySpec {
        name: "region",
        kind: Kind::String,
        unset: Unset::Required,
        kept_on_reimport: false,
        set: |p, v, _| {
            p.region = check_region(&v.text)?;
            Ok(())
        },
        show: |p| p.region.clone(),
    },
    KeySpec {
        name: "user_pool_id",
        kind: Kind::String,
        unset: Unset::Required,
        kept_on_reimport: false,
        set: |p, v, _| {
            p.user_pool_id = check_user_pool_id(&v.text, &p.region)?;
            Ok(())
        },
        show: |p| p.user_pool_id.clone(),
    },
    KeySpec {
        name: "client_id",
        kind: Kind::String,
        unset: Unset::Required,
        kept_on_reimport: false,
        set: |p, v, _| {
            p.client_id = check_client_id(&v.text)?;
            Ok(())
        },
        show: |p| p.client_id.clone(),
    },
    KeySpec {
        name: "domain",
        kind: Kind::String,
        unset: Unset::Required,
        kept_on_reimport: false,
        set: |p, v, _| {
            p.domain = check_base_url(&v.text, true)?;
            Ok(())
        },
        show: |p| p.domain.clone(),
    },
    KeySpec {
        name: "identity_pool_id",
        kind: Kind::String,
        unset: Unset::Required,
        kept_on_reimport: false,
        set: |p, v, _| {
            p.identity_pool_id = check_identity_pool_id(&v.text, &p.region)?;
            Ok(())
        },
        show: |p| p.identity_pool_id.clone(),
    },
    KeySpec {
        name: "bucket",
        kind: Kind::String,
        unset: Unset::Required,
        kept_on_reimport: false,
        set: |p, v, _| {
            p.bucket = check_bucket(&v.text)?;
            Ok(())
        },
        show: |p| p.bucket.clone(),
    },
    KeySpec {
        name: "bucket_region",
        kind: Kind::String,
        unset: Unset::Default {
            value: |p| p.region.clone(),
            shown_as: "default (same as region)",
        },
        kept_on_reimport: false,
        set: |p, v, _| {
            p.bucket_region = check_region(&v.text)?;
            Ok(())
        },
        show: |p| p.bucket_region.clone(),
    },
    KeySpec {
        name: "callback_port",
        kind: Kind::Integer,
        unset: Unset::Default {
            value: |_| DEFAULT_CALLBACK_PORT.to_string(),
            shown_as: DEFAULT_ORIGIN,
        },
        kept_on_reimport: true,
        set: |p, v, _| {
            p.callback_port = check_port(v)?;
            Ok(())
        },
        show: |p| p.callback_port.to_string(),
    },
    KeySpec {
        name: "mount_point",
        kind: Kind::String,
        unset: Unset::Absent,
        kept_on_reimport: true,
        set: |p, v, env| {
            p.mount_point = Some(check_mount_point(&v.text, env)?);
            Ok(())
        },
        show: |p| {
            p.mount_point
                .as_ref()
                .map(|m| m.display().to_string())
                .unwrap_or_default()
        },
    },
    KeySpec {
        name: "device_name",
        kind: Kind::String,
        unset: Unset::Absent,
        kept_on_reimport: true,
        set: |p, v, _| {
            let name = v.text.trim();
            if name.is_empty() || name.len() > 64 {
                return Err(
                    "must be 1 to 64 characters (it names this machine's conflict copies)".into(),
                );
            }
            p.device_name = Some(name.to_owned());
            Ok(())
        },
        show: |p| p.device_name.clone().unwrap_or_default(),
    },
    KeySpec {
        name: "sign_in_lifetime",
        kind: Kind::String,
        unset: Unset::Default {
            value: |_| DEFAULT_SIGN_IN_LIFETIME.to_owned(),
            shown_as: "default (the user pool's default refresh token expiration)",
        },
        kept_on_reimport: true,
        set: |p, v, _| {
            p.sign_in_lifetime = check_lifetime(&v.text)?;
            Ok(())
        },
        show: |p| show_lifetime(p.sign_in_lifetime),
    },
    KeySpec {
        name: "prefix_template",
        kind: Kind::String,
        unset: Unset::Default {
            value: |_| DEFAULT_PREFIX_TEMPLATE.to_owned(),
            shown_as: DEFAULT_ORIGIN,
        },
        kept_on_reimport: true,
        set: |p, v, _| {
            p.prefix_template = check_prefix_template(&v.text)?;
            Ok(())
        },
        show: |p| p.prefix_template.clone(),
    },
    // Above the endpoints, whose checks read it.
    KeySpec {
        name: "allow_insecure_http",
        kind: Kind::Boolean,
        unset: Unset::Default {
            value: |_| "false".to_owned(),
            shown_as: DEFAULT_ORIGIN,
        },
        kept_on_reimport: true,
        set: |p, v, _| {
            p.allow_insecure_http = check_bool(&v.text)?;
            Ok(())
        },
        show: |p| p.allow_insecure_http.to_string(),
    },
    KeySpec {
        name: "s3_endpoint",
        kind: Kind::String,
        unset: Unset::Absent,
        kept_on_reimport: true,
        set: |p, v, _| {
            p.s3_endpoint = Some(check_endpoint(&v.text, p.allow_insecure_http)?);
            Ok(())
        },
        show: |p| p.s3_endpoint.clone().unwrap_or_default(),
    },
    KeySpec {
        name: "identity_endpoint",
        kind: Kind::String,
        unset: Unset::Absent,
        kept_on_reimport: true,
        set: |p, v, _| {
            p.identity_endpoint = Some(check_endpoint(&v.text, p.allow_insecure_http)?);
            Ok(())
        },
        show: |p| p.identity_endpoint.clone().unwrap_or_default(),
    },
    KeySpec {
        name: "request_timeout",
        kind: Kind::Integer,
        unset: Unset::Default {
            value: |_| DEFAULT_REQUEST_TIMEOUT.as_secs().to_string(),
            shown_as: DEFAULT_ORIGIN,
        },
        kept_on_reimport: true,
        set: |p, v, _| {
            p.request_timeout = check_seconds(v)?;
            Ok(())
        },
        show: |p| p.request_timeout.as_secs().to_string(),
    },
    KeySpec {
        name: "operation_timeout",
        kind: Kind::Integer,
        unset: Unset::Default {
            value: |p| {
                DEFAULT_OPERATION_TIMEOUT
                    .max(p.request_timeout)
                    .as_secs()
                    .to_string()
            },
            shown_as: DEFAULT_ORIGIN,
        },
        kept_on_reimport: true,
        set: |p, v, _| {
            let t = check_seconds(v)?;
            if t < p.request_timeout {
                return Err(format!(
                    "must be at least request_timeout ({} s): an operation is one or more requests",
                    p.request_timeout.as_secs()
                ));
            }
            p.operation_timeout = t;
            Ok(())
        },
        show: |p| p.operation_timeout.as_secs().to_string(),
    },
];

/// One attempt of an S3 or Cognito request, from sending it to the last byte of its
/// answer's headers (and, for a GET, the longest wait for the next bytes of its body).
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// One S3 or Cognito operation, retries included.
pub const DEFAULT_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// The longest a timeout may be set to.
const MAX_TIMEOUT_SECS: i64 = 3600;

/// How long a sign-in lasts when the profile does not say: Cognito's default refresh token
/// expiration for an app client.
pub const DEFAULT_SIGN_IN_LIFETIME: &str = "30d";

/// `30d`, `12h`, `90m`, `45s`: from 1 second to 3650 days (Cognito's longest).
fn check_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let bad = || "must be a number and a unit, like 30d, 12h, 90m or 45s".to_owned();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
    if !(1..=3650 * 86_400).contains(&secs) {
        return Err("must be from 1s to 3650d".into());
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// The shortest exact form: `30d`, `36h`, `45s`.
fn show_lifetime(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The spec of `name`, if it is a known key.
pub(super) fn spec(name: &str) -> Option<&'static KeySpec> {
    KEY_SPECS.iter().find(|s| s.name == name)
}

/// Every key name, in table order.
pub(super) fn key_names() -> impl Iterator<Item = &'static str> {
    KEY_SPECS.iter().map(|s| s.name)
}

/// The variable that overrides `key`, e.g. `COGNIFS_BUCKET`.
pub(super) fn env_var_for(key: &str) -> String {
    format!("COGNIFS_{}", key.to_ascii_uppercase())
}

/// `a, b and c`, for the "create it with …" hint.
pub(super) fn required_keys_text() -> String {
    let required: Vec<&str> = KEY_SPECS
        .iter()
        .filter(|s| matches!(s.unset, Unset::Required))
        .map(|s| s.name)
        .collect();
    match required.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => required.join(", "),
    }
}

// ---------------------------------------------------------------------------------------------
// Value checks: each returns the normalized value or a problem phrased for the user.
// ---------------------------------------------------------------------------------------------

/// `xx-name-N`, e.g. `eu-west-1`, `us-gov-west-1`.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn check_region(s: &str) -> Result<String, String> {
    if is_region(s) {
        Ok(s.to_owned())
    } else {
        Err("expected an AWS region like \"eu-west-1\"".to_owned())
    }
}

fn check_user_pool_id(s: &str, region: &str) -> Result<String, String> {
    let shape = "expected REGION_ID like \"eu-west-1_AbCdEfGhI\"";
    let (pool_region, id) = s.split_once('_').ok_or(shape)?;
    if !is_region(pool_region) || id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(shape.to_owned());
    }
    if pool_region != region {
        return Err(format!(
            "its region part \"{pool_region}\" does not match region \"{region}\""
        ));
    }
    Ok(s.to_owned())
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_identity_pool_id(s: &str, region: &str) -> Result<String, String> {
    let shape = "expected REGION:UUID like \"eu-west-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c\"";
    let (pool_region, id) = s.split_once(':').ok_or(shape)?;
    if !is_region(pool_region) || !is_uuid(id) {
        return Err(shape.to_owned());
    }
    if pool_region != region {
        return Err(format!(
            "its region part \"{pool_region}\" does not match region \"{region}\""
        ));
    }
    Ok(s.to_owned())
}

/// Cognito's own constraint on app client ids: `[\w+]+`, at most 128 characters.
fn check_client_id(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'+')
    {
        Ok(s.to_owned())
    } else {
        Err(
            "expected the app client id (letters and digits, e.g. \"3n4b5urk1ft4fl3mg5e62d9ado\")"
                .to_owned(),
        )
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
        None => false,
    }
}

/// Whether `url` (a checked endpoint) is plain http to a host other than this machine.
fn is_remote_http(url: &str) -> bool {
    Url::parse(url).is_ok_and(|u| u.scheme() == "http" && !is_loopback(&u))
}

fn check_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// An S3 or Cognito Identity endpoint: https, or http to this machine (devstack), or http
/// anywhere when the profile says `allow_insecure_http = true`. Over http to another host
/// the ID token, the AWS secret key and every file's bytes cross the network in clear.
fn check_endpoint(s: &str, allow_insecure_http: bool) -> Result<String, String> {
    let url = check_base_url(s, false)?;
    if is_remote_http(&url) && !allow_insecure_http {
        return Err(
            "plain http is allowed only to this machine (localhost, 127.0.0.1, [::1]): to \
             another host it would send the sign-in's ID token, the AWS secret key and your \
             files in clear; use https, or set allow_insecure_http = true in the profile if \
             the network is trusted"
                .to_owned(),
        );
    }
    Ok(url)
}

/// A base URL: http(s), a host, nothing after it. Returns it without a trailing slash.
/// `https_unless_loopback` is for the hosted UI: Cognito only serves it over https, so plain
/// http can only be the local devstack (and would otherwise send the code in clear).
fn check_base_url(s: &str, https_unless_loopback: bool) -> Result<String, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if !https_unless_loopback || is_loopback(&url) => {}
        "http" => {
            return Err(
                "must be https (http only for localhost, 127.0.0.1 or [::1]): \
                        Cognito serves its hosted UI over https only"
                    .to_owned(),
            );
        }
        other => return Err(format!("scheme \"{other}\" is not http or https")),
    }
    if url.host().is_none() {
        return Err("has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".to_owned());
    }
    if !matches!(url.path(), "" | "/") {
        return Err(format!(
            "must be only scheme and host (like {}), without the path \"{}\"",
            url.origin().ascii_serialization(),
            url.path()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".to_owned());
    }
    Ok(url.origin().ascii_serialization())
}

fn is_ipv4_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// S3's bucket naming rules (the ones a user can plausibly trip over).
fn check_bucket(s: &str) -> Result<String, String> {
    let problem = if !(3..=63).contains(&s.len()) {
        "must be 3 to 63 characters long"
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        "may contain only lowercase letters, digits, dots and hyphens"
    } else if !s.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !s.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        "must start and end with a letter or digit"
    } else if s.contains("..") {
        "must not contain two adjacent dots"
    } else if is_ipv4_like(s) {
        "must not look like an IP address"
    } else {
        return Ok(s.to_owned());
    };
    Err(format!("not a valid S3 bucket name: {problem}"))
}

/// Whole seconds, 1 to an hour.
fn check_seconds(v: &RawValue) -> Result<std::time::Duration, String> {
    let n = match v.int {
        Some(i) => Some(i),
        None => v.text.trim().parse::<i64>().ok(),
    };
    n.filter(|n| (1..=MAX_TIMEOUT_SECS).contains(n))
        .map(|n| std::time::Duration::from_secs(n as u64))
        .ok_or_else(|| format!("expected whole seconds from 1 to {MAX_TIMEOUT_SECS}"))
}

fn check_port(v: &RawValue) -> Result<u16, String> {
    let n = match v.int {
        Some(i) => Some(i),
        None => v.text.trim().parse::<i64>().ok(),
    };
    n.and_then(|n| u16::try_from(n).ok())
        .filter(|&p| p != 0)
        .ok_or_else(|| "expected a port number from 1 to 65535".to_owned())
}

/// Expands `~` / `~/…`; a relative mount point would depend on where cognifs happens to run.
fn check_mount_point(s: &str, env: Env) -> Result<PathBuf, String> {
    let expanded = if s == "~" || s.starts_with("~/") {
        let home = env_nonempty(env, "HOME").ok_or("cannot expand ~: $HOME is not set")?;
        PathBuf::from(home).join(s.trim_start_matches('~').trim_start_matches('/'))
    } else {
        PathBuf::from(s)
    };
    if !expanded.is_absolute() {
        return Err("must be an absolute path or start with ~/".to_owned());
    }
    Ok(expanded)
}

fn check_prefix_template(s: &str) -> Result<String, String> {
    if !s.contains("{identity_id}") {
        return Err("must contain {identity_id}".to_owned());
    }
    if !s.ends_with('/') {
        return Err("must end with /".to_owned());
    }
    if s.starts_with('/') {
        return Err("must not start with / (S3 keys would begin with an empty segment)".to_owned());
    }
    if s.replace("{identity_id}", "").contains(['{', '}']) {
        return Err("{identity_id} is the only placeholder".to_owned());
    }
    Ok(s.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Did-you-mean
// ---------------------------------------------------------------------------------------------

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key `unknown` most likely meant: close in edit distance, or one containing the
/// other (so `bucket_name` finds `bucket` although five edits apart).
pub(super) fn suggest_key(unknown: &str) -> Option<&'static str> {
    let norm = unknown.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    key_names()
        .filter_map(|key| {
            let distance = levenshtein(&norm, key);
            let close = distance <= (key.len().max(norm.len()) / 3).max(2);
            let contains = norm.len() >= 3 && (norm.contains(key) || key.contains(norm.as_str()));
            (close || contains).then_some((distance, key))
        })
        .min()
        .map(|(_, key)| key)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn validation_errors_name_file_profile_key_and_problem() {
        let cases: &[(&str, &str, &str)] = &[
            ("region", r#""europe""#, "AWS region"),
            ("user_pool_id", r#""AbCdEfGhI""#, "REGION_ID"),
            (
                "user_pool_id",
                r#""us-east-1_AbC""#,
                "does not match region",
            ),
            ("user_pool_id", r#""eu-west-1_Ab-C""#, "REGION_ID"),
            (
                "identity_pool_id",
                r#""eu-west-1:not-a-uuid""#,
                "REGION:UUID",
            ),
            (
                "identity_pool_id",
                r#""us-east-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c""#,
                "does not match region",
            ),
            ("client_id", r#""has space""#, "app client id"),
            (
                "domain",
                r#""acme.auth.eu-west-1.amazoncognito.com""#,
                "not a URL",
            ),
            ("domain", r#""http://acme.example.com""#, "must be https"),
            (
                "domain",
                r#""https://acme.example.com/login""#,
                "without the path",
            ),
            ("domain", r#""ftp://acme.example.com""#, "not http or https"),
            (
                "s3_endpoint",
                r#""http://minio:9000/bucket""#,
                "without the path",
            ),
            (
                "identity_endpoint",
                r#""localhost:9000""#,
                "not http or https",
            ),
            ("bucket", r#""ab""#, "3 to 63"),
            ("bucket", r#""Acme""#, "lowercase"),
            ("bucket", r#""-acme""#, "start and end"),
            ("bucket", r#""a..b""#, "adjacent dots"),
            ("bucket", r#""192.168.1.1""#, "IP address"),
            ("bucket_region", r#""west""#, "AWS region"),
            ("callback_port", "0", "1 to 65535"),
            ("callback_port", "70000", "1 to 65535"),
            ("mount_point", r#""cloud""#, "absolute"),
            ("prefix_template", r#""files/""#, "{identity_id}"),
            ("prefix_template", r#""{identity_id}""#, "end with /"),
            (
                "prefix_template",
                r#""/{identity_id}/""#,
                "must not start with /",
            ),
            (
                "prefix_template",
                r#""{user}/{identity_id}/""#,
                "only placeholder",
            ),
        ];
        for (key, value, problem) in cases {
            let (_dir, path) = config_file(&with_key(key, value));
            let err = load_env(&source(&path, None), &env_of(&[("HOME", "/h")]))
                .expect_err(&format!("{key} = {value} should fail"))
                .to_string();
            for needle in [
                &format!("invalid {key} "),
                "[default]",
                &path.display().to_string(),
                problem,
            ] {
                assert!(
                    err.contains(needle),
                    "{key} = {value}: {err:?} lacks {needle:?}"
                );
            }
        }
    }

    #[test]
    fn http_domain_allowed_only_on_loopback() {
        for domain in [
            "http://localhost:8080",
            "http://127.0.0.1:8080/",
            "http://[::1]:8080",
        ] {
            let (_dir, path) = config_file(&with_key("domain", &format!("{domain:?}")));
            let p = load_env(&source(&path, None), &no_env).unwrap();
            assert_eq!(p.domain, domain.trim_end_matches('/'));
        }
    }

    #[test]
    fn wrong_type_names_key_and_expected_type() {
        let (_dir, path) = config_file(&with_key("callback_port", r#""8080""#));
        let err = load_env(&source(&path, None), &no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "key \"callback_port\" in profile [default] of {} must be an integer, not string",
                path.display()
            )
        );
        let (_dir, path) = config_file(&with_key("bucket", "42"));
        let err = load_env(&source(&path, None), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"bucket\"") && err.contains("must be a string, not integer"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_suggests_the_closest() {
        let (_dir, path) = config_file(&with_key("bucket_name", r#""x""#));
        let err = load_env(&source(&path, None), &no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "unknown key \"bucket_name\" in profile [default] of {}; did you mean \"bucket\"?",
                path.display()
            )
        );
        assert_eq!(suggest_key("user-pool-id"), Some("user_pool_id"));
        assert_eq!(suggest_key("mountpoint"), Some("mount_point"));
        assert_eq!(suggest_key("regoin"), Some("region"));
        assert_eq!(suggest_key("colour"), None);
        let (_dir, path) = config_file(&with_key("colour", r#""x""#));
        let err = load_env(&source(&path, None), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("known keys: region, user_pool_id"), "{err}");
    }
}
