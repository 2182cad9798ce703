//! Configuration: which profile of which TOML file, plus environment overrides.
//!
//! Resolution order, first match wins:
//!
//! - **config file**: `--config FILE`, then `$COGNIFS_CONFIG`, then
//!   `$XDG_CONFIG_HOME/cognifs/config.toml` (`$XDG_CONFIG_HOME` defaults to `$HOME/.config`);
//! - **profile** (one TOML table per profile, `[default]`, `[work]`, …): `--profile NAME`, then
//!   `$COGNIFS_PROFILE`, then `default`;
//! - **each key** of the profile: `$COGNIFS_<KEY>` (e.g. `$COGNIFS_BUCKET`), then the profile's
//!   table, then the built-in default (the six required keys have none).
//!
//! An explicit choice never falls through to the next candidate: if `--config` names a missing
//! file we fail instead of quietly reading another one, because mounting the wrong bucket is worse
//! than an error. Empty environment variables count as unset, as in the XDG spec.
//!
//! Every value is checked here, once, so later layers can trust it: a typo in a pool id shows up as
//! "invalid user_pool_id … in profile [x] of FILE" before the browser opens, not as an opaque
//! Cognito error after the sign-in.
//!
//! Everything that reads the environment has a private twin taking an injected getter
//! (`Env`), so tests never mutate the process environment (they run in parallel).
//!
//! `cognifs config import FILE.env` ([`import_env`]) turns the `.env` that Cognito web-app
//! tutorials hand out (`VITE_APP_*`, `REACT_APP_*`) into a profile.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use url::{Host, Url};

/// Loopback port the sign-in redirect comes back to unless a profile says otherwise.
pub const DEFAULT_CALLBACK_PORT: u16 = 53682;
/// Matches the identity-pool policy in DESIGN.md (`${cognito-identity.amazonaws.com:sub}/*`).
pub const DEFAULT_PREFIX_TEMPLATE: &str = "{identity_id}/";
/// Profile used when neither `--profile` nor `$COGNIFS_PROFILE` picks one.
pub const DEFAULT_PROFILE: &str = "default";

/// Every key a profile may hold, in the order `config show` prints them.
const KEYS: &[&str] = &[
    "region",
    "user_pool_id",
    "client_id",
    "domain",
    "identity_pool_id",
    "bucket",
    "bucket_region",
    "callback_port",
    "mount_point",
    "prefix_template",
    "s3_endpoint",
    "identity_endpoint",
];

const REQUIRED: &[&str] = &[
    "region",
    "user_pool_id",
    "client_id",
    "domain",
    "identity_pool_id",
    "bucket",
];

/// Marks the comment line `import_env` writes above a profile, so a re-import replaces it too.
const IMPORT_MARKER: &str = "# imported by `cognifs config import`";

/// Injected environment lookup; the public functions pass [`process_env`].
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Empty counts as unset: `FOO= cognifs …` is how people clear a variable.
fn env_nonempty(env: Env, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// The variable that overrides `key`, e.g. `COGNIFS_BUCKET`.
fn env_var_for(key: &str) -> String {
    format!("COGNIFS_{}", key.to_ascii_uppercase())
}

/// What the command line asked for; `None` means "resolve as usual".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// `--config FILE`
    pub path: Option<PathBuf>,
    /// `--profile NAME`
    pub profile: Option<String>,
}

/// A validated profile: every field is ready to use as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub region: String,
    pub user_pool_id: String,
    pub client_id: String,
    /// Hosted UI base URL, scheme + host (+ port), no trailing slash.
    pub domain: String,
    pub identity_pool_id: String,
    pub bucket: String,
    pub bucket_region: String,
    pub callback_port: u16,
    /// Absolute, `~` already expanded.
    pub mount_point: Option<PathBuf>,
    /// Contains `{identity_id}` and ends with `/`.
    pub prefix_template: String,
    /// No trailing slash.
    pub s3_endpoint: Option<String>,
    /// No trailing slash.
    pub identity_endpoint: Option<String>,
    /// The file the profile was read from.
    pub config_path: PathBuf,
}

impl Profile {
    /// Key of the `Logins` map in Cognito Identity calls.
    pub fn provider_name(&self) -> String {
        format!(
            "cognito-idp.{}.amazonaws.com/{}",
            self.region, self.user_pool_id
        )
    }

    /// Must be listed verbatim among the app client's allowed callback URLs.
    pub fn redirect_uri(&self) -> String {
        format!("http://localhost:{}/callback", self.callback_port)
    }

    /// The S3 prefix this identity may touch, e.g. `eu-west-1:0f2c…/`.
    pub fn prefix_for(&self, identity_id: &str) -> String {
        self.prefix_template.replace("{identity_id}", identity_id)
    }
}

/// Where a value came from, for `config show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File {
        path: PathBuf,
        profile: String,
    },
    /// Name of the variable, e.g. `COGNIFS_BUCKET`.
    Env(String),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, profile } => write!(f, "{} [{profile}]", path.display()),
            Origin::Env(var) => write!(f, "${var}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// What `import_env` did; warnings are things the user must fix on the AWS side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub profile: String,
    pub config_path: PathBuf,
    pub warnings: Vec<String>,
}

/// The single error type of the configuration layer; messages are meant for end users.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no config file: tried {}; create it with `cognifs config import FILE.env` \
         (from your web app's .env) or write it with a [{profile}] table holding \
         region, user_pool_id, client_id, domain, identity_pool_id and bucket",
        list_tried(.tried)
    )]
    NotFound {
        /// Each path tried and what chose it.
        tried: Vec<(PathBuf, &'static str)>,
        profile: String,
    },

    #[error("cannot {action} {}: {error}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },

    #[error("{} is not valid TOML: {message}", .path.display())]
    Parse { path: PathBuf, message: String },

    #[error(
        "top-level key \"{key}\" in {} is not a profile table; put keys under a profile \
         header such as [default]",
        .path.display()
    )]
    NotATable { path: PathBuf, key: String },

    #[error(
        "profile [{profile}] (chosen by {chosen_by}) not found in {}; {}",
        .path.display(),
        list_profiles(.available)
    )]
    MissingProfile {
        path: PathBuf,
        profile: String,
        chosen_by: &'static str,
        available: Vec<String>,
    },

    #[error(
        "unknown key \"{key}\" in profile [{profile}] of {}; {}",
        .path.display(),
        suggestion_text(.suggestion)
    )]
    UnknownKey {
        path: PathBuf,
        profile: String,
        key: String,
        suggestion: Option<&'static str>,
    },

    #[error(
        "key \"{key}\" in profile [{profile}] of {} must be {expected}, not {found}",
        .path.display()
    )]
    WrongType {
        path: PathBuf,
        profile: String,
        key: &'static str,
        expected: &'static str,
        found: &'static str,
    },

    #[error(
        "profile [{profile}] of {} is missing required key(s) {} \
         (set them in the file or through {})",
        .path.display(),
        .keys.join(", "),
        .keys.iter().map(|k| format!("${}", env_var_for(k))).collect::<Vec<_>>().join(", ")
    )]
    MissingKeys {
        path: PathBuf,
        profile: String,
        keys: Vec<&'static str>,
    },

    #[error("invalid {key} {value:?} {}: {problem}", whence(.path, .profile, .key, *.from_env))]
    Invalid {
        path: PathBuf,
        profile: String,
        key: &'static str,
        value: String,
        /// The value came from `$COGNIFS_<KEY>` rather than the file.
        from_env: bool,
        problem: String,
    },

    /// The `.env` given to `import_env` is unusable.
    #[error("{}: {problem}", .path.display())]
    EnvFile { path: PathBuf, problem: String },

    /// The `.env` was readable but yields a profile that fails validation.
    #[error("importing {} would give an invalid profile: {inner}", .env_file.display())]
    Import {
        env_file: PathBuf,
        inner: Box<ConfigError>,
    },
}

fn list_tried(tried: &[(PathBuf, &'static str)]) -> String {
    tried
        .iter()
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_profiles(available: &[String]) -> String {
    if available.is_empty() {
        "the file has no profile tables".to_owned()
    } else {
        format!("profiles there: {}", available.join(", "))
    }
}

fn suggestion_text(suggestion: &Option<&'static str>) -> String {
    match suggestion {
        Some(s) => format!("did you mean \"{s}\"?"),
        None => format!("known keys: {}", KEYS.join(", ")),
    }
}

fn whence(path: &Path, profile: &str, key: &str, from_env: bool) -> String {
    if from_env {
        format!(
            "from ${} (overriding profile [{profile}] of {})",
            env_var_for(key),
            path.display()
        )
    } else {
        format!("in profile [{profile}] of {}", path.display())
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ConfigError + use<> {
    let path = path.to_owned();
    move |error| ConfigError::Io {
        action,
        path,
        error,
    }
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// `$HOME`, or `/` for daemons started without one.
fn home(env: Env) -> PathBuf {
    env_nonempty(env, "HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// An XDG base directory: the variable if set to an absolute path (the spec says to ignore
/// relative ones), else `$HOME/<fallback>`.
fn xdg_dir(env: Env, var: &str, fallback: &str) -> PathBuf {
    env_nonempty(env, var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home(env).join(fallback))
}

/// The config file and what chose it (for the "tried" part of [`ConfigError::NotFound`]).
fn config_path_traced(explicit: Option<&Path>, env: Env) -> (PathBuf, &'static str) {
    if let Some(p) = explicit {
        return (p.to_owned(), "--config");
    }
    if let Some(p) = env_nonempty(env, "COGNIFS_CONFIG") {
        return (PathBuf::from(p), "$COGNIFS_CONFIG");
    }
    let p = xdg_dir(env, "XDG_CONFIG_HOME", ".config").join("cognifs/config.toml");
    (
        p,
        "default location; neither --config nor $COGNIFS_CONFIG set",
    )
}

fn config_path_with(explicit: Option<&Path>, env: Env) -> PathBuf {
    config_path_traced(explicit, env).0
}

/// The config file to read: `explicit` (`--config`), else `$COGNIFS_CONFIG`, else
/// `$XDG_CONFIG_HOME/cognifs/config.toml`.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    config_path_with(explicit, &process_env)
}

fn profile_name_traced(explicit: Option<&str>, env: Env) -> (String, &'static str) {
    if let Some(p) = explicit {
        return (p.to_owned(), "--profile");
    }
    if let Some(p) = env_nonempty(env, "COGNIFS_PROFILE") {
        return (p, "$COGNIFS_PROFILE");
    }
    (DEFAULT_PROFILE.to_owned(), "default")
}

fn profile_name_with(explicit: Option<&str>, env: Env) -> String {
    profile_name_traced(explicit, env).0
}

/// The profile to use: `explicit` (`--profile`), else `$COGNIFS_PROFILE`, else `default`.
pub fn profile_name(explicit: Option<&str>) -> String {
    profile_name_with(explicit, &process_env)
}

fn state_dir_with(env: Env) -> PathBuf {
    env_nonempty(env, "COGNIFS_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| xdg_dir(env, "XDG_STATE_HOME", ".local/state").join("cognifs"))
}

/// Where tokens live (state, not config: they change on every sign-in and must not be shared
/// through dotfile repos): `$COGNIFS_STATE_DIR`, else `$XDG_STATE_HOME/cognifs`.
pub fn state_dir() -> PathBuf {
    state_dir_with(&process_env)
}

fn cache_dir_with(env: Env) -> PathBuf {
    xdg_dir(env, "XDG_CACHE_HOME", ".cache").join("cognifs")
}

/// Disposable data (safe to delete at any time): `$XDG_CACHE_HOME/cognifs`.
pub fn cache_dir() -> PathBuf {
    cache_dir_with(&process_env)
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads, selects and validates the profile `source` points at.
pub fn load(source: &ConfigSource) -> Result<Profile, ConfigError> {
    load_with_origins(source).map(|(profile, _)| profile)
}

/// Every key of a profile (in display order) with its effective value and where it came from.
/// Unset optional keys have an empty value and [`Origin::Default`].
pub type KeyOrigins = Vec<(&'static str, String, Origin)>;

/// Like [`load`], plus each key's value and origin (for `config show`).
pub fn load_with_origins(source: &ConfigSource) -> Result<(Profile, KeyOrigins), ConfigError> {
    load_with_origins_env(source, &process_env)
}

fn load_with_origins_env(
    source: &ConfigSource,
    env: Env,
) -> Result<(Profile, KeyOrigins), ConfigError> {
    let (path, path_chosen_by) = config_path_traced(source.path.as_deref(), env);
    let (profile, profile_chosen_by) = profile_name_traced(source.profile.as_deref(), env);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound {
                tried: vec![(path, path_chosen_by)],
                profile,
            });
        }
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    let doc = parse_toml(&path, &text)?;
    if let Some((key, _)) = doc.iter().find(|(_, v)| !v.is_table()) {
        return Err(ConfigError::NotATable {
            path,
            key: key.clone(),
        });
    }
    let Some(table) = doc.get(&profile).and_then(toml::Value::as_table) else {
        return Err(ConfigError::MissingProfile {
            path,
            profile,
            chosen_by: profile_chosen_by,
            available: doc.keys().cloned().collect(),
        });
    };
    resolve(table, &path, &profile, env)
}

fn parse_toml(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// A key's value before validation, and where it came from.
struct RawValue {
    text: String,
    /// Set for integers from TOML, which must not be re-parsed from text.
    int: Option<i64>,
    origin: Origin,
}

/// Merges env overrides over `table`, then validates. `path`/`profile` only label errors.
fn resolve(
    table: &toml::Table,
    path: &Path,
    profile: &str,
    env: Env,
) -> Result<(Profile, KeyOrigins), ConfigError> {
    if let Some(key) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(ConfigError::UnknownKey {
            path: path.to_owned(),
            profile: profile.to_owned(),
            key: key.clone(),
            suggestion: suggest_key(key),
        });
    }

    let mut raw: BTreeMap<&'static str, RawValue> = BTreeMap::new();
    for &key in KEYS {
        let var = env_var_for(key);
        if let Some(text) = env_nonempty(env, &var) {
            raw.insert(
                key,
                RawValue {
                    text,
                    int: None,
                    origin: Origin::Env(var),
                },
            );
            continue;
        }
        let Some(value) = table.get(key) else {
            continue;
        };
        let origin = Origin::File {
            path: path.to_owned(),
            profile: profile.to_owned(),
        };
        let wrong_type = |expected| ConfigError::WrongType {
            path: path.to_owned(),
            profile: profile.to_owned(),
            key,
            expected,
            found: value.type_str(),
        };
        let entry = match (key, value) {
            ("callback_port", toml::Value::Integer(i)) => RawValue {
                text: i.to_string(),
                int: Some(*i),
                origin,
            },
            ("callback_port", _) => return Err(wrong_type("an integer")),
            (_, toml::Value::String(s)) => RawValue {
                text: s.clone(),
                int: None,
                origin,
            },
            (_, _) => return Err(wrong_type("a string")),
        };
        raw.insert(key, entry);
    }

    let missing: Vec<&'static str> = REQUIRED
        .iter()
        .copied()
        .filter(|k| !raw.contains_key(k))
        .collect();
    if !missing.is_empty() {
        return Err(ConfigError::MissingKeys {
            path: path.to_owned(),
            profile: profile.to_owned(),
            keys: missing,
        });
    }

    let check = |key: &'static str, f: &dyn Fn(&RawValue) -> Result<String, String>| {
        let Some(v) = raw.get(key) else {
            return Ok(None);
        };
        f(v).map(Some).map_err(|problem| ConfigError::Invalid {
            path: path.to_owned(),
            profile: profile.to_owned(),
            key,
            value: v.text.clone(),
            from_env: matches!(v.origin, Origin::Env(_)),
            problem,
        })
    };
    let required = |key: &'static str, f: &dyn Fn(&RawValue) -> Result<String, String>| {
        // `missing` above guarantees presence.
        check(key, f).map(Option::unwrap_or_default)
    };

    let region = required("region", &|v| check_region(&v.text))?;
    let user_pool_id = required("user_pool_id", &|v| check_user_pool_id(&v.text, &region))?;
    let client_id = required("client_id", &|v| check_client_id(&v.text))?;
    let domain = required("domain", &|v| check_base_url(&v.text, true))?;
    let identity_pool_id = required("identity_pool_id", &|v| {
        check_identity_pool_id(&v.text, &region)
    })?;
    let bucket = required("bucket", &|v| check_bucket(&v.text))?;
    let bucket_region = check("bucket_region", &|v| check_region(&v.text))?;
    let callback_port = check("callback_port", &|v| check_port(v).map(|p| p.to_string()))?;
    let mount_point = check("mount_point", &|v| check_mount_point(&v.text, env))?;
    let prefix_template = check("prefix_template", &|v| check_prefix_template(&v.text))?;
    let s3_endpoint = check("s3_endpoint", &|v| check_base_url(&v.text, false))?;
    let identity_endpoint = check("identity_endpoint", &|v| check_base_url(&v.text, false))?;

    let resolved = Profile {
        name: profile.to_owned(),
        bucket_region: bucket_region.unwrap_or_else(|| region.clone()),
        region,
        user_pool_id,
        client_id,
        domain,
        identity_pool_id,
        bucket,
        callback_port: callback_port
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_CALLBACK_PORT),
        mount_point: mount_point.map(PathBuf::from),
        prefix_template: prefix_template.unwrap_or_else(|| DEFAULT_PREFIX_TEMPLATE.to_owned()),
        s3_endpoint,
        identity_endpoint,
        config_path: path.to_owned(),
    };

    let origins = KEYS
        .iter()
        .map(|&key| {
            let value = match key {
                "region" => resolved.region.clone(),
                "user_pool_id" => resolved.user_pool_id.clone(),
                "client_id" => resolved.client_id.clone(),
                "domain" => resolved.domain.clone(),
                "identity_pool_id" => resolved.identity_pool_id.clone(),
                "bucket" => resolved.bucket.clone(),
                "bucket_region" => resolved.bucket_region.clone(),
                "callback_port" => resolved.callback_port.to_string(),
                "mount_point" => resolved
                    .mount_point
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "prefix_template" => resolved.prefix_template.clone(),
                "s3_endpoint" => resolved.s3_endpoint.clone().unwrap_or_default(),
                "identity_endpoint" => resolved.identity_endpoint.clone().unwrap_or_default(),
                _ => unreachable!("KEYS and this match list the same keys"),
            };
            let origin = raw.get(key).map_or(Origin::Default, |v| v.origin.clone());
            (key, value, origin)
        })
        .collect();
    Ok((resolved, origins))
}

/// Renders the effective profile as TOML-like lines, each with its origin as a comment.
pub fn show(source: &ConfigSource) -> Result<String, ConfigError> {
    show_with(source, &process_env)
}

fn show_with(source: &ConfigSource, env: Env) -> Result<String, ConfigError> {
    let (profile, origins) = load_with_origins_env(source, env)?;
    let mut out = format!(
        "# profile [{}] of {}\n",
        profile.name,
        profile.config_path.display()
    );
    for (key, value, origin) in &origins {
        if value.is_empty() {
            out.push_str(&format!("# {key:<15} (not set)\n"));
            continue;
        }
        let rendered = if *key == "callback_port" {
            value.clone()
        } else {
            toml::Value::String(value.clone()).to_string()
        };
        let origin = match (key, origin) {
            (&"bucket_region", Origin::Default) => "default (same as region)".to_owned(),
            _ => origin.to_string(),
        };
        out.push_str(&format!("{key:<17} = {rendered:<48} # {origin}\n"));
    }
    out.push_str(&format!(
        "# provider name: {}\n# redirect URI (must be an allowed callback URL of the app client): {}\n",
        profile.provider_name(),
        profile.redirect_uri()
    ));
    Ok(out)
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
        Some(Host::Ipv4(ip)) => ip == Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
        None => false,
    }
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
fn check_mount_point(s: &str, env: Env) -> Result<String, String> {
    let expanded = if s == "~" || s.starts_with("~/") {
        let home = env_nonempty(env, "HOME").ok_or("cannot expand ~: $HOME is not set")?;
        PathBuf::from(home).join(s.trim_start_matches('~').trim_start_matches('/'))
    } else {
        PathBuf::from(s)
    };
    if !expanded.is_absolute() {
        return Err("must be an absolute path or start with ~/".to_owned());
    }
    Ok(expanded.display().to_string())
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
fn suggest_key(unknown: &str) -> Option<&'static str> {
    let norm = unknown.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    KEYS.iter()
        .copied()
        .filter_map(|key| {
            let distance = levenshtein(&norm, key);
            let close = distance <= (key.len().max(norm.len()) / 3).max(2);
            let contains = norm.len() >= 3 && (norm.contains(key) || key.contains(norm.as_str()));
            (close || contains).then_some((distance, key))
        })
        .min()
        .map(|(_, key)| key)
}

// ---------------------------------------------------------------------------------------------
// Import of a web app's .env
// ---------------------------------------------------------------------------------------------

/// Prefixes web-app tutorials put on the same variables (Vite, Create React App, none).
const ENV_PREFIXES: &[&str] = &["VITE_APP_", "REACT_APP_", ""];

/// Keys `import_env` does not derive from the .env: a re-import keeps what the user set.
const KEPT_ON_REIMPORT: &[&str] = &[
    "callback_port",
    "mount_point",
    "prefix_template",
    "s3_endpoint",
    "identity_endpoint",
];

/// Parses `KEY=VALUE` lines the way dotenv does: `#` comments, `export ` prefix, single or
/// double quotes, later lines win. Unparseable lines become warnings, not errors, because
/// web-app .env files often carry unrelated junk.
fn parse_dotenv(text: &str) -> (HashMap<String, String>, Vec<String>) {
    let mut vars = HashMap::new();
    let mut warnings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            warnings.push(format!("line {}: ignored, no KEY=VALUE", n + 1));
            continue;
        };
        let rest = rest.trim();
        let value = if let Some(body) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = body.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => value.push('\\'),
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                warnings.push(format!(
                    "line {}: unterminated quote (multi-line values are not supported)",
                    n + 1
                ));
            }
            value
        } else if let Some(body) = rest.strip_prefix('\'') {
            body.split_once('\'').map_or(body, |(v, _)| v).to_owned()
        } else {
            // An unquoted value ends at ` #` (a comment), as in dotenv; `#` inside URLs stays.
            let end = rest
                .char_indices()
                .find(|&(i, c)| c == '#' && rest[..i].ends_with(char::is_whitespace))
                .map_or(rest.len(), |(i, _)| i);
            rest[..end].trim_end().to_owned()
        };
        vars.insert(key.trim().to_owned(), value);
    }
    (vars, warnings)
}

/// A variable as found in the .env, with the exact name used there (for error messages).
struct Found {
    name: String,
    value: String,
}

fn find_var(vars: &HashMap<String, String>, suffix: &str) -> Option<Found> {
    ENV_PREFIXES.iter().find_map(|prefix| {
        let name = format!("{prefix}{suffix}");
        vars.get(&name)
            .filter(|v| !v.is_empty())
            .map(|value| Found {
                name,
                value: value.clone(),
            })
    })
}

/// Values tutorials ship as fill-in-the-blanks: `<YOUR_S3_BUCKET>`, `YOUR_CLIENT_ID`, …
fn is_placeholder(value: &str) -> bool {
    (value.contains('<') && value.contains('>')) || value.to_ascii_uppercase().contains("YOUR_")
}

/// `bare` or `"quoted"` TOML key for a profile header.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_owned()
    } else {
        toml::Value::String(name.to_owned()).to_string()
    }
}

/// Writes a profile from a web app's `.env` into the config file `source` points at, keeping
/// other profiles (and their comments) as they are.
pub fn import_env(env_file: &Path, source: &ConfigSource) -> Result<ImportReport, ConfigError> {
    import_env_with(env_file, source, &process_env)
}

fn import_env_with(
    env_file: &Path,
    source: &ConfigSource,
    env: Env,
) -> Result<ImportReport, ConfigError> {
    let path = config_path_with(source.path.as_deref(), env);
    let profile = profile_name_with(source.profile.as_deref(), env);
    let env_error = |problem: String| ConfigError::EnvFile {
        path: env_file.to_owned(),
        problem,
    };

    let text = fs::read_to_string(env_file).map_err(io_error("read", env_file))?;
    let (vars, mut warnings) = parse_dotenv(&text);

    const REQUIRED_VARS: &[&str] = &[
        "S3_BUCKET",
        "COGNITO_LOGIN_URL",
        "COGNITO_IDENTITY_POOL_ID",
        "COGNITO_IDENTITY_PROVIDER",
    ];
    let missing: Vec<String> = REQUIRED_VARS
        .iter()
        .filter(|s| find_var(&vars, s).is_none())
        .map(|s| format!("VITE_APP_{s}"))
        .collect();
    if !missing.is_empty() {
        return Err(env_error(format!(
            "missing {} (the REACT_APP_ prefix or no prefix work too)",
            missing.join(", ")
        )));
    }
    let optional = ["COGNITO_REGION", "BUCKET_REGION", "COGNITO_LOGOUT_URL"];
    let found: Vec<Found> = REQUIRED_VARS
        .iter()
        .chain(optional.iter())
        .filter_map(|s| find_var(&vars, s))
        .collect();
    if let Some(f) = found.iter().find(|f| is_placeholder(&f.value)) {
        return Err(env_error(format!(
            "{} still holds the placeholder {:?}; put the real value from your AWS setup there",
            f.name, f.value
        )));
    }
    let get = |suffix: &str| find_var(&vars, suffix);
    let (Some(bucket), Some(login), Some(identity_pool), Some(provider)) = (
        get("S3_BUCKET"),
        get("COGNITO_LOGIN_URL"),
        get("COGNITO_IDENTITY_POOL_ID"),
        get("COGNITO_IDENTITY_PROVIDER"),
    ) else {
        unreachable!("presence checked above");
    };

    // The hosted UI login URL carries the domain and the app client id.
    let login_url = Url::parse(&login.value)
        .map_err(|e| env_error(format!("{} is not a URL ({e})", login.name)))?;
    if !matches!(login_url.scheme(), "http" | "https") || login_url.host().is_none() {
        return Err(env_error(format!(
            "{} should be the hosted UI login URL, like https://PREFIX.auth.REGION.amazoncognito.com/login?…",
            login.name
        )));
    }
    let domain = login_url.origin().ascii_serialization();
    let query: HashMap<String, String> = login_url.query_pairs().into_owned().collect();
    let client_id = query.get("client_id").cloned().ok_or_else(|| {
        env_error(format!(
            "{} has no client_id query parameter, so the app client id is unknown",
            login.name
        ))
    })?;

    // `cognito-idp.REGION.amazonaws.com/USER_POOL_ID`, sometimes given as the issuer URL.
    let provider_value = provider.value.trim_start_matches("https://");
    let shape_error = || {
        env_error(format!(
            "{} should look like cognito-idp.REGION.amazonaws.com/USER_POOL_ID, not {:?}",
            provider.name, provider.value
        ))
    };
    let (host, user_pool_id) = provider_value
        .trim_end_matches('/')
        .split_once('/')
        .ok_or_else(shape_error)?;
    let provider_region = host
        .strip_prefix("cognito-idp.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"))
        .ok_or_else(shape_error)?;
    let region = match get("COGNITO_REGION") {
        Some(r) if r.value != provider_region => {
            return Err(env_error(format!(
                "{} is {:?} but {} names region {provider_region:?}",
                r.name, r.value, provider.name
            )));
        }
        Some(r) => r.value,
        None => provider_region.to_owned(),
    };

    // Read the existing file first: never overwrite a file we cannot parse.
    let existing = match fs::read_to_string(&path) {
        Ok(text) => Some((parse_toml(&path, &text)?, text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("read", &path)(e)),
    };

    let mut table = toml::Table::new();
    let mut set = |key: &str, value: toml::Value| {
        table.insert(key.to_owned(), value);
    };
    set("region", region.into());
    set("user_pool_id", user_pool_id.into());
    set("client_id", client_id.clone().into());
    set("domain", domain.into());
    set("identity_pool_id", identity_pool.value.into());
    set("bucket", bucket.value.into());
    if let Some(r) = get("BUCKET_REGION") {
        set("bucket_region", r.value.into());
    }
    let old = existing
        .as_ref()
        .and_then(|(doc, _)| doc.get(&profile))
        .and_then(toml::Value::as_table);
    for &key in KEPT_ON_REIMPORT {
        if let Some(v) = old.and_then(|t| t.get(key)) {
            set(key, v.clone());
        }
    }

    // Validate exactly what will be written: env overrides are for runs, not for the file.
    let no_overrides = |name: &str| {
        if name.starts_with("COGNIFS_") {
            None
        } else {
            env(name)
        }
    };
    let (resolved, _) =
        resolve(&table, &path, &profile, &no_overrides).map_err(|inner| ConfigError::Import {
            env_file: env_file.to_owned(),
            inner: Box::new(inner),
        })?;

    if query.get("response_type").map(String::as_str) == Some("token") {
        warnings.push(format!(
            "the login URL uses response_type=token (implicit grant), but cognifs signs in with \
             the authorization-code flow with PKCE. In the Cognito console, open the user pool's \
             app client {client_id} and, in its hosted UI (login pages) settings, enable the OAuth \
             grant type \"Authorization code grant\", add {} to its allowed callback URLs, and \
             allow the scopes openid, email and profile",
            resolved.redirect_uri()
        ));
    }
    if let Some(redirect) = query.get("redirect_uri")
        && *redirect != resolved.redirect_uri()
    {
        warnings.push(format!(
            "the login URL redirects to {redirect}, but cognifs listens on {}; add that URL to \
             the app client's allowed callback URLs (keep the web app's if it still needs it)",
            resolved.redirect_uri()
        ));
    }
    if let Some(logout) = get("COGNITO_LOGOUT_URL")
        && let Ok(url) = Url::parse(&logout.value)
        && url.origin().ascii_serialization() != resolved.domain
    {
        warnings.push(format!(
            "{} is on a different host than the login URL; cognifs uses {}",
            logout.name, resolved.domain
        ));
    }

    let rendered = render_profile(&profile, &table, env_file);
    let contents = match &existing {
        None => rendered,
        Some((doc, text)) => {
            let spliced = splice_profile(text, &profile, &rendered);
            if verify_splice(&spliced, doc, &profile, &table) {
                spliced
            } else {
                // The file's layout defeated the line-based splice (e.g. the profile's table is
                // split up); fall back to a full rewrite, which keeps the data but not comments.
                warnings.push(format!(
                    "rewrote {} in full; comments in it were not kept",
                    path.display()
                ));
                let mut doc = doc.clone();
                doc.insert(profile.clone(), toml::Value::Table(table.clone()));
                toml::to_string(&doc).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
        }
    };
    write_atomically(&path, &contents)?;

    Ok(ImportReport {
        profile,
        config_path: path,
        warnings,
    })
}

/// The profile's table as TOML text, keys in display order.
fn render_profile(name: &str, table: &toml::Table, env_file: &Path) -> String {
    let mut out = format!(
        "{IMPORT_MARKER} from {}\n[{}]\n",
        env_file.display(),
        toml_key(name)
    );
    for &key in KEYS {
        if let Some(value) = table.get(key) {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

/// The first key of a table header line (`[work]`, `["my profile"]  # c`, `[work.sub]`).
fn header_key(line: &str) -> Option<String> {
    let line = line.trim_start();
    if !line.starts_with('[') {
        return None;
    }
    let doc = line.parse::<toml::Table>().ok()?;
    doc.keys().next().cloned()
}

/// Replaces `name`'s section of `text` by `rendered` (or appends it), leaving every other line
/// alone so comments survive. The result is checked by [`verify_splice`].
fn splice_profile(text: &str, name: &str, rendered: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is_ours = |i: usize| header_key(lines[i]).as_deref() == Some(name);
    let Some(mut start) = (0..lines.len()).find(|&i| is_ours(i)) else {
        let mut out = text.to_owned();
        if !out.is_empty() {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push('\n');
        }
        out.push_str(rendered);
        return out;
    };
    let mut end = (start + 1..lines.len())
        .find(|&i| header_key(lines[i]).is_some_and(|k| k != name))
        .unwrap_or(lines.len());
    // Comments right above the next header belong to it.
    while end > start + 1 && {
        let l = lines[end - 1].trim();
        l.is_empty() || l.starts_with('#')
    } {
        end -= 1;
    }
    // So does our own marker above this header, which the new text repeats.
    if start > 0 && lines[start - 1].starts_with(IMPORT_MARKER) {
        start -= 1;
    }
    let mut out: String = lines[..start].concat();
    out.push_str(rendered);
    if let Some(next) = lines.get(end) {
        if !next.trim().is_empty() {
            out.push('\n');
        }
        out.push_str(&lines[end..].concat());
    }
    out
}

/// True if `spliced` holds `doc` with `name` set to `table` and nothing else changed.
fn verify_splice(spliced: &str, doc: &toml::Table, name: &str, table: &toml::Table) -> bool {
    let Ok(new) = spliced.parse::<toml::Table>() else {
        return false;
    };
    new.get(name).and_then(toml::Value::as_table) == Some(table)
        && doc
            .iter()
            .filter(|(k, _)| *k != name)
            .all(|(k, v)| new.get(k) == Some(v))
        && new.keys().all(|k| k == name || doc.contains_key(k))
}

/// Temp file in the same directory + rename, so a crash never leaves half a config. A symlinked
/// config (dotfile managers) is written through to its target instead of being replaced.
fn write_atomically(path: &Path, contents: &str) -> Result<(), ConfigError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    let file_name = target
        .file_name()
        .map_or_else(|| "config.toml".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        if let Ok(meta) = fs::metadata(&target) {
            fs::set_permissions(&tmp, meta.permissions())?;
        }
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &target)?;
        // Persist the rename itself; best effort, not every filesystem allows it.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|error| {
        let _ = fs::remove_file(&tmp);
        ConfigError::Io {
            action: "write",
            path: path.to_owned(),
            error,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# the work account
[default]
region = "eu-west-1"
user_pool_id = "eu-west-1_AbCdEfGhI"
client_id = "3n4b5urk1ft4fl3mg5e62d9ado"
domain = "https://acme-files.auth.eu-west-1.amazoncognito.com/"
identity_pool_id = "eu-west-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c"
bucket = "acme-user-files"

[work]
region = "us-east-1"
user_pool_id = "us-east-1_Xyz123"
client_id = "abc123"
domain = "http://127.0.0.1:9000"
identity_pool_id = "us-east-1:00000000-1111-2222-3333-444444444444"
bucket = "work.files"
bucket_region = "us-west-2"
callback_port = 8123
mount_point = "~/cloud"
prefix_template = "private/{identity_id}/"
s3_endpoint = "http://127.0.0.1:9001/"
identity_endpoint = "http://localhost:9002"
"#;

    /// An injected environment; unit tests never touch the process's.
    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// A temp dir holding `config.toml` with `text`; returns the dir (keep it alive) and path.
    fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn source(path: &Path, profile: Option<&str>) -> ConfigSource {
        ConfigSource {
            path: Some(path.to_owned()),
            profile: profile.map(str::to_owned),
        }
    }

    fn load_env(src: &ConfigSource, env: Env) -> Result<Profile, ConfigError> {
        load_with_origins_env(src, env).map(|(p, _)| p)
    }

    /// GOOD's [default] with `key = value` replaced (or added); `value` is raw TOML.
    fn with_key(key: &str, value: &str) -> String {
        let mut text = String::from("[default]\n");
        let mut replaced = false;
        for line in GOOD.split("[work]").next().unwrap().lines().skip(3) {
            if line.starts_with(&format!("{key} =")) {
                text.push_str(&format!("{key} = {value}\n"));
                replaced = true;
            } else {
                text.push_str(line);
                text.push('\n');
            }
        }
        if !replaced {
            text.push_str(&format!("{key} = {value}\n"));
        }
        text
    }

    fn fixture() -> &'static Path {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webapp.env"
        ))
    }

    #[test]
    fn loads_good_profile_with_defaults() {
        let (_dir, path) = config_file(GOOD);
        let p = load_env(&source(&path, None), &no_env).unwrap();
        assert_eq!(
            p,
            Profile {
                name: "default".into(),
                region: "eu-west-1".into(),
                user_pool_id: "eu-west-1_AbCdEfGhI".into(),
                client_id: "3n4b5urk1ft4fl3mg5e62d9ado".into(),
                domain: "https://acme-files.auth.eu-west-1.amazoncognito.com".into(),
                identity_pool_id: "eu-west-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c".into(),
                bucket: "acme-user-files".into(),
                bucket_region: "eu-west-1".into(),
                callback_port: DEFAULT_CALLBACK_PORT,
                mount_point: None,
                prefix_template: "{identity_id}/".into(),
                s3_endpoint: None,
                identity_endpoint: None,
                config_path: path.clone(),
            }
        );
        assert_eq!(
            p.provider_name(),
            "cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEfGhI"
        );
        assert_eq!(p.redirect_uri(), "http://localhost:53682/callback");
        assert_eq!(p.prefix_for("eu-west-1:abc"), "eu-west-1:abc/");
    }

    #[test]
    fn loads_every_optional_key() {
        let (_dir, path) = config_file(GOOD);
        let env = env_of(&[("HOME", "/home/ann")]);
        let p = load_env(&source(&path, Some("work")), &env).unwrap();
        assert_eq!(p.name, "work");
        assert_eq!(p.domain, "http://127.0.0.1:9000");
        assert_eq!(p.bucket_region, "us-west-2");
        assert_eq!(p.callback_port, 8123);
        assert_eq!(p.mount_point, Some(PathBuf::from("/home/ann/cloud")));
        assert_eq!(p.prefix_for("us-east-1:42"), "private/us-east-1:42/");
        assert_eq!(p.s3_endpoint.as_deref(), Some("http://127.0.0.1:9001"));
        assert_eq!(
            p.identity_endpoint.as_deref(),
            Some("http://localhost:9002")
        );
        assert_eq!(p.redirect_uri(), "http://localhost:8123/callback");
    }

    #[test]
    fn profile_selection_order() {
        let (_dir, path) = config_file(GOOD);
        let env = env_of(&[("COGNIFS_PROFILE", "work"), ("HOME", "/h")]);
        assert_eq!(
            load_env(&source(&path, None), &no_env).unwrap().name,
            "default"
        );
        assert_eq!(load_env(&source(&path, None), &env).unwrap().name, "work");
        assert_eq!(
            load_env(&source(&path, Some("default")), &env)
                .unwrap()
                .name,
            "default"
        );
        assert_eq!(
            profile_name_with(None, &env_of(&[("COGNIFS_PROFILE", "")])),
            "default"
        );
    }

    #[test]
    fn config_path_order() {
        let explicit = Path::new("/etc/x.toml");
        let env = env_of(&[
            ("COGNIFS_CONFIG", "/env/c.toml"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("HOME", "/home/ann"),
        ]);
        assert_eq!(config_path_with(Some(explicit), &env), explicit);
        assert_eq!(config_path_with(None, &env), Path::new("/env/c.toml"));
        let env = env_of(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/ann")]);
        assert_eq!(
            config_path_with(None, &env),
            Path::new("/xdg/cognifs/config.toml")
        );
        // Relative XDG values are ignored, as the spec says.
        let env = env_of(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/ann")]);
        assert_eq!(
            config_path_with(None, &env),
            Path::new("/home/ann/.config/cognifs/config.toml")
        );
    }

    #[test]
    fn state_and_cache_dirs() {
        let home = env_of(&[("HOME", "/home/ann")]);
        assert_eq!(
            state_dir_with(&home),
            Path::new("/home/ann/.local/state/cognifs")
        );
        assert_eq!(cache_dir_with(&home), Path::new("/home/ann/.cache/cognifs"));
        let xdg = env_of(&[
            ("HOME", "/home/ann"),
            ("XDG_STATE_HOME", "/s"),
            ("XDG_CACHE_HOME", "/c"),
        ]);
        assert_eq!(state_dir_with(&xdg), Path::new("/s/cognifs"));
        assert_eq!(cache_dir_with(&xdg), Path::new("/c/cognifs"));
        let explicit = env_of(&[("XDG_STATE_HOME", "/s"), ("COGNIFS_STATE_DIR", "/tok")]);
        assert_eq!(state_dir_with(&explicit), Path::new("/tok"));
    }

    #[test]
    fn env_overrides_and_origins() {
        let (_dir, path) = config_file(GOOD);
        let env = env_of(&[
            ("COGNIFS_BUCKET", "other-bucket"),
            ("COGNIFS_CALLBACK_PORT", "9999"),
            ("COGNIFS_S3_ENDPOINT", "http://127.0.0.1:7000/"),
        ]);
        let (p, origins) = load_with_origins_env(&source(&path, None), &env).unwrap();
        assert_eq!(p.bucket, "other-bucket");
        assert_eq!(p.callback_port, 9999);
        assert_eq!(p.s3_endpoint.as_deref(), Some("http://127.0.0.1:7000"));
        let origin_of = |key: &str| {
            origins
                .iter()
                .find(|(k, _, _)| *k == key)
                .map(|(_, v, o)| (v.clone(), o.clone()))
                .unwrap()
        };
        assert_eq!(
            origin_of("bucket"),
            ("other-bucket".into(), Origin::Env("COGNIFS_BUCKET".into()))
        );
        assert_eq!(
            origin_of("region"),
            (
                "eu-west-1".into(),
                Origin::File {
                    path: path.clone(),
                    profile: "default".into()
                }
            )
        );
        assert_eq!(
            origin_of("bucket_region"),
            ("eu-west-1".into(), Origin::Default)
        );
        assert_eq!(origin_of("mount_point"), (String::new(), Origin::Default));
        assert_eq!(
            origins.iter().map(|(k, _, _)| *k).collect::<Vec<_>>(),
            KEYS.to_vec()
        );

        let shown = show_with(&source(&path, None), &env).unwrap();
        let line = |key: &str| {
            shown
                .lines()
                .find(|l| l.starts_with(&format!("{key} ")) || l.starts_with(&format!("# {key} ")))
                .unwrap()
                .to_owned()
        };
        assert!(
            line("bucket").contains("\"other-bucket\"")
                && line("bucket").contains("# $COGNIFS_BUCKET")
        );
        assert!(line("region").contains(&format!("# {} [default]", path.display())));
        assert!(line("bucket_region").contains("# default (same as region)"));
        assert!(line("mount_point").contains("(not set)"));
        assert!(shown.contains("http://localhost:9999/callback"));
    }

    #[test]
    fn invalid_env_override_names_the_variable() {
        let (_dir, path) = config_file(GOOD);
        let env = env_of(&[("COGNIFS_BUCKET", "Bad_Bucket")]);
        let err = load_env(&source(&path, None), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("$COGNIFS_BUCKET"), "{err}");
        assert!(
            err.contains("[default]") && err.contains(&path.display().to_string()),
            "{err}"
        );
        assert!(err.contains("invalid bucket \"Bad_Bucket\""), "{err}");
    }

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

    #[test]
    fn missing_profile_lists_existing_ones() {
        let (_dir, path) = config_file(GOOD);
        let err = load_env(&source(&path, Some("home")), &no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "profile [home] (chosen by --profile) not found in {}; profiles there: default, work",
                path.display()
            )
        );
        let env = env_of(&[("COGNIFS_PROFILE", "home")]);
        let err = load_env(&source(&path, None), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("$COGNIFS_PROFILE"), "{err}");
    }

    #[test]
    fn missing_file_says_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[("XDG_CONFIG_HOME", dir.path().to_str().unwrap())]);
        let err = load_env(&ConfigSource::default(), &env).unwrap_err();
        assert!(matches!(err, ConfigError::NotFound { .. }));
        let msg = err.to_string();
        let expected = dir.path().join("cognifs/config.toml");
        assert!(msg.contains(&expected.display().to_string()), "{msg}");
        assert!(msg.contains("cognifs config import FILE.env"), "{msg}");
        assert!(msg.contains("[default]"), "{msg}");

        let missing = dir.path().join("nope.toml");
        let msg = load_env(&source(&missing, None), &env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("{} (--config)", missing.display())),
            "{msg}"
        );
    }

    #[test]
    fn missing_required_keys_are_all_listed() {
        let (_dir, path) = config_file("[default]\nregion = \"eu-west-1\"\nbucket = \"abc\"\n");
        let err = load_env(&source(&path, None), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "missing required key(s) user_pool_id, client_id, domain, identity_pool_id"
            ),
            "{err}"
        );
        assert!(
            err.contains("$COGNIFS_USER_POOL_ID") && err.contains("[default]"),
            "{err}"
        );
        // …and env vars can fill them in.
        let env = env_of(&[
            ("COGNIFS_USER_POOL_ID", "eu-west-1_Abc"),
            ("COGNIFS_CLIENT_ID", "abc"),
            ("COGNIFS_DOMAIN", "http://localhost:1"),
            (
                "COGNIFS_IDENTITY_POOL_ID",
                "eu-west-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c",
            ),
        ]);
        assert_eq!(
            load_env(&source(&path, None), &env).unwrap().client_id,
            "abc"
        );
    }

    #[test]
    fn bad_toml_and_stray_top_level_keys() {
        let (_dir, path) = config_file("[default]\nregion = \n");
        let err = load_env(&source(&path, None), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{} is not valid TOML", path.display())),
            "{err}"
        );
        let (_dir, path) = config_file("region = \"eu-west-1\"\n");
        let err = load_env(&source(&path, None), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("top-level key \"region\"") && err.contains("[default]"),
            "{err}"
        );
    }

    #[test]
    fn dotenv_parsing() {
        let (vars, warnings) = parse_dotenv(
            "# comment\n\
             export A=1\n\
             B = \"two words\" # c\n\
             C='single # kept'\n\
             D=url#frag # comment\n\
             E=\"esc \\\"q\\\"\"\n\
             junk line\n\
             A=3\n",
        );
        assert_eq!(vars["A"], "3");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "single # kept");
        assert_eq!(vars["D"], "url#frag");
        assert_eq!(vars["E"], "esc \"q\"");
        assert_eq!(warnings, vec!["line 7: ignored, no KEY=VALUE".to_owned()]);
    }

    #[test]
    fn import_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/config.toml");
        let report = import_env_with(fixture(), &source(&path, None), &no_env).unwrap();
        assert_eq!(report.profile, "default");
        assert_eq!(report.config_path, path);

        let p = load_env(&source(&path, None), &no_env).unwrap();
        assert_eq!(
            p.domain,
            "https://acme-files.auth.eu-west-1.amazoncognito.com"
        );
        assert_eq!(p.client_id, "3n4b5urk1ft4fl3mg5e62d9ado");
        assert_eq!(p.user_pool_id, "eu-west-1_AbCdEfGhI");
        assert_eq!(
            p.identity_pool_id,
            "eu-west-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c"
        );
        assert_eq!(p.bucket, "acme-user-files");
        assert_eq!(p.region, "eu-west-1");
        assert_eq!(p.bucket_region, "eu-west-1");
        assert_eq!(p.callback_port, DEFAULT_CALLBACK_PORT);

        let token = report
            .warnings
            .iter()
            .find(|w| w.contains("response_type=token"))
            .expect("implicit-grant warning");
        for needle in [
            "Authorization code grant",
            "http://localhost:53682/callback",
            "openid, email and profile",
            "3n4b5urk1ft4fl3mg5e62d9ado",
        ] {
            assert!(token.contains(needle), "{token:?} lacks {needle:?}");
        }
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("redirects to http://localhost:3000")),
            "{:?}",
            report.warnings
        );
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn import_into_existing_file_keeps_other_profiles() {
        let (_dir, path) = config_file(GOOD);
        // Hand-set keys the .env does not carry survive a re-import.
        let text = fs::read_to_string(&path).unwrap().replace(
            "bucket = \"acme-user-files\"\n",
            "bucket = \"old\"\nmount_point = \"/mnt/c\"\n",
        );
        fs::write(&path, &text).unwrap();
        let before = load_env(&source(&path, Some("work")), &env_of(&[("HOME", "/h")])).unwrap();

        let report = import_env_with(fixture(), &source(&path, None), &no_env).unwrap();
        assert!(
            !report.warnings.iter().any(|w| w.contains("rewrote")),
            "{:?}",
            report.warnings
        );

        let after = fs::read_to_string(&path).unwrap();
        assert!(
            after.contains("# the work account"),
            "comments kept:\n{after}"
        );
        assert_eq!(after.matches("[default]").count(), 1, "{after}");
        let work = load_env(&source(&path, Some("work")), &env_of(&[("HOME", "/h")])).unwrap();
        assert_eq!(work, before);
        let default = load_env(&source(&path, None), &no_env).unwrap();
        assert_eq!(default.bucket, "acme-user-files");
        assert_eq!(default.mount_point, Some(PathBuf::from("/mnt/c")));

        // Importing again is stable: no second marker, same text.
        import_env_with(fixture(), &source(&path, None), &no_env).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), after);

        // A new profile is appended.
        let report = import_env_with(fixture(), &source(&path, Some("acme")), &no_env).unwrap();
        assert_eq!(report.profile, "acme");
        assert_eq!(
            load_env(&source(&path, Some("acme")), &no_env)
                .unwrap()
                .name,
            "acme"
        );
        assert_eq!(
            load_env(&source(&path, Some("work")), &env_of(&[("HOME", "/h")])).unwrap(),
            work
        );
    }

    #[test]
    fn import_refuses_to_clobber_unparseable_config() {
        let (_dir, path) = config_file("[default\n");
        let err = import_env_with(fixture(), &source(&path, None), &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "[default\n");
    }

    fn write_env(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("app.env");
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn import_placeholder_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let text = fs::read_to_string(fixture())
            .unwrap()
            .replace("acme-user-files", "<YOUR_S3_BUCKET>");
        let env_file = write_env(&dir, &text);
        let config = dir.path().join("config.toml");
        let err = import_env_with(&env_file, &source(&config, None), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VITE_APP_S3_BUCKET") && err.contains("placeholder"),
            "{err}"
        );
        assert!(!config.exists());

        let text = fs::read_to_string(fixture()).unwrap().replace(
            "3n4b5urk1ft4fl3mg5e62d9ado&redirect",
            "YOUR_CLIENT_ID&redirect",
        );
        let env_file = write_env(&dir, &text);
        let err = import_env_with(&env_file, &source(&config, None), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("VITE_APP_COGNITO_LOGIN_URL"), "{err}");
    }

    #[test]
    fn import_missing_variables_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let env_file = write_env(&dir, "VITE_APP_S3_BUCKET=acme-user-files\n");
        let err = import_env_with(
            &env_file,
            &source(&dir.path().join("c.toml"), None),
            &no_env,
        )
        .unwrap_err()
        .to_string();
        for name in [
            "VITE_APP_COGNITO_LOGIN_URL",
            "VITE_APP_COGNITO_IDENTITY_POOL_ID",
            "VITE_APP_COGNITO_IDENTITY_PROVIDER",
        ] {
            assert!(err.contains(name), "{err}");
        }
        assert!(!err.contains("S3_BUCKET"), "{err}");
    }

    #[test]
    fn import_react_and_unprefixed_names() {
        let fixture_text = fs::read_to_string(fixture()).unwrap();
        for (prefix, code_flow) in [("REACT_APP_", true), ("", false)] {
            let dir = tempfile::tempdir().unwrap();
            let mut text = fixture_text.replace("VITE_APP_", prefix);
            if code_flow {
                text = text
                    .replace("response_type=token", "response_type=code")
                    .replace(
                        "redirect_uri=http://localhost:3000",
                        "redirect_uri=http://localhost:53682/callback",
                    );
            }
            let env_file = write_env(
                &dir,
                &text
                    .lines()
                    .map(|l| format!("export {l}\n"))
                    .collect::<String>(),
            );
            let config = dir.path().join("config.toml");
            let report = import_env_with(&env_file, &source(&config, Some("x")), &no_env).unwrap();
            assert_eq!(
                report.warnings.is_empty(),
                code_flow,
                "{prefix}: {:?}",
                report.warnings
            );
            let p = load_env(&source(&config, Some("x")), &no_env).unwrap();
            assert_eq!(p.user_pool_id, "eu-west-1_AbCdEfGhI", "{prefix}");
            assert_eq!(p.client_id, "3n4b5urk1ft4fl3mg5e62d9ado", "{prefix}");
            assert_eq!(p.bucket, "acme-user-files", "{prefix}");
        }
    }

    #[test]
    fn import_invalid_values_fail_validation_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let text = fs::read_to_string(fixture())
            .unwrap()
            .replace("acme-user-files", "Acme_Files");
        let env_file = write_env(&dir, &text);
        let config = dir.path().join("config.toml");
        let err = import_env_with(&env_file, &source(&config, None), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("importing {}", env_file.display())),
            "{err}"
        );
        assert!(err.contains("invalid bucket \"Acme_Files\""), "{err}");
        assert!(!config.exists());
    }

    #[test]
    fn import_region_mismatch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = fs::read_to_string(fixture()).unwrap().replace(
            "VITE_APP_COGNITO_REGION=eu-west-1",
            "VITE_APP_COGNITO_REGION=us-east-1",
        );
        let env_file = write_env(&dir, &text);
        let err = import_env_with(
            &env_file,
            &source(&dir.path().join("c.toml"), None),
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("VITE_APP_COGNITO_REGION")
                && err.contains("VITE_APP_COGNITO_IDENTITY_PROVIDER"),
            "{err}"
        );
    }
}
