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
//! "invalid user_pool_id … in profile \[x\] of FILE" before the browser opens, not as an opaque
//! Cognito error after the sign-in.
//!
//! Everything that reads the environment has a private twin taking an injected getter
//! (`Env`), so tests never mutate the process environment (they run in parallel).
//!
//! Layout: `keys` holds the table of keys (adding a key starts there), `paths` finds the file
//! and the XDG directories, `import` writes a profile from a web app's `.env`.

mod import;
mod keys;
mod paths;
#[cfg(test)]
mod test_support;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use import::{ImportReport, import_env};
pub use paths::{XdgBase, check_profile_name, config_path, profile_name, state_dir, xdg_dir};

use keys::{KEY_SPECS, Kind, RawValue, Unset, env_var_for, key_names};
use paths::{config_path_traced, profile_name_traced};

/// Loopback port the sign-in redirect comes back to unless a profile says otherwise.
pub const DEFAULT_CALLBACK_PORT: u16 = 53682;
/// Matches the identity-pool policy in docs/AWS-SETUP.md (`${cognito-identity.amazonaws.com:sub}/*`).
pub const DEFAULT_PREFIX_TEMPLATE: &str = "{identity_id}/";
/// Profile used when neither `--profile` nor `$COGNIFS_PROFILE` picks one.
pub const DEFAULT_PROFILE: &str = "default";

/// Injected environment lookup; the public functions pass [`process_env`].
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Empty counts as unset: `FOO= cognifs …` is how people clear a variable.
fn env_nonempty(env: Env, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// The longest wait for a connection to S3 or Cognito.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the command line asked for; `None` means "resolve as usual".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// `--config FILE`
    pub path: Option<PathBuf>,
    /// `--profile NAME`
    pub profile: Option<String>,
}

/// A validated profile: every field is ready to use as is.
///
/// A new field also needs an entry in `keys::KEY_SPECS` and a blank in `Profile::unresolved`.
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
    /// This machine's name in conflict copies (default: the host name).
    pub device_name: Option<String>,
    /// How long a sign-in lasts when the token endpoint does not say: the user pool app
    /// client's refresh token expiration.
    pub sign_in_lifetime: std::time::Duration,
    /// Contains `{identity_id}` and ends with `/`.
    pub prefix_template: String,
    /// Plain http to another host is allowed for the endpoints (and upload bodies are then
    /// signed). Off by default.
    pub allow_insecure_http: bool,
    /// No trailing slash.
    pub s3_endpoint: Option<String>,
    /// No trailing slash.
    pub identity_endpoint: Option<String>,
    /// One attempt of an S3 or Cognito request (`request_timeout`, seconds).
    pub request_timeout: std::time::Duration,
    /// One S3 or Cognito operation, retries included (`operation_timeout`, seconds).
    pub operation_timeout: std::time::Duration,
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

    /// Whether upload bodies are signed (their SHA-256 in the signature) rather than sent
    /// `UNSIGNED-PAYLOAD`: when the profile allows plain http and S3 is reached over it, as
    /// nothing else would keep them from being changed on the way.
    pub fn signs_upload_bodies(&self) -> bool {
        self.allow_insecure_http
            && self
                .s3_endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
    }

    /// The SDK clients' timeouts (S3 and Cognito Identity): connecting (at most 10 s), one
    /// attempt, and an operation with its retries. A GET's body is bounded separately, by
    /// the request timeout between its bytes (`store/s3.rs`).
    pub fn sdk_timeouts(&self) -> aws_smithy_types::timeout::TimeoutConfig {
        aws_smithy_types::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(self.request_timeout))
            .operation_attempt_timeout(self.request_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }

    /// The S3 prefix this identity may touch, e.g. `eu-west-1:0f2c…/`.
    pub fn prefix_for(&self, identity_id: &str) -> String {
        self.prefix_template.replace("{identity_id}", identity_id)
    }

    /// The starting point of [`resolve`], which sets every key through its [`keys::KeySpec`];
    /// never handed out, as the blanks are not valid values.
    fn unresolved(name: &str, config_path: &Path) -> Self {
        Profile {
            name: name.to_owned(),
            region: String::new(),
            user_pool_id: String::new(),
            client_id: String::new(),
            domain: String::new(),
            identity_pool_id: String::new(),
            bucket: String::new(),
            bucket_region: String::new(),
            callback_port: 0,
            mount_point: None,
            device_name: None,
            sign_in_lifetime: std::time::Duration::ZERO,
            prefix_template: String::new(),
            allow_insecure_http: false,
            s3_endpoint: None,
            identity_endpoint: None,
            request_timeout: keys::DEFAULT_REQUEST_TIMEOUT,
            operation_timeout: keys::DEFAULT_OPERATION_TIMEOUT,
            config_path: config_path.to_owned(),
        }
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

/// The single error type of the configuration layer; messages are meant for end users.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no config file: tried {}; create it with `cognifs config import FILE.env` \
         (from your web app's .env) or write it with a [{profile}] table holding {}",
        list_tried(.tried),
        keys::required_keys_text()
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

    #[error("profile name {name:?} (chosen by {chosen_by}) {problem}")]
    BadProfileName {
        name: String,
        chosen_by: &'static str,
        problem: String,
    },

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
        None => format!("known keys: {}", key_names().collect::<Vec<_>>().join(", ")),
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
    check_profile_name(&profile).map_err(|problem| ConfigError::BadProfileName {
        name: profile.clone(),
        chosen_by: profile_chosen_by,
        problem,
    })?;
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

/// Merges env overrides over `table`, then validates, key by key as [`KEY_SPECS`] says.
/// `path`/`profile` only label errors (and fill [`Profile::config_path`]/[`Profile::name`]).
fn resolve(
    table: &toml::Table,
    path: &Path,
    profile: &str,
    env: Env,
) -> Result<(Profile, KeyOrigins), ConfigError> {
    if let Some(key) = table.keys().find(|k| keys::spec(k).is_none()) {
        return Err(ConfigError::UnknownKey {
            path: path.to_owned(),
            profile: profile.to_owned(),
            key: key.clone(),
            suggestion: keys::suggest_key(key),
        });
    }

    // One slot per spec, in table order.
    let mut raw: Vec<Option<RawValue>> = Vec::with_capacity(KEY_SPECS.len());
    for spec in KEY_SPECS {
        let var = env_var_for(spec.name);
        if let Some(text) = env_nonempty(env, &var) {
            raw.push(Some(RawValue {
                text,
                int: None,
                origin: Origin::Env(var),
            }));
            continue;
        }
        let Some(value) = table.get(spec.name) else {
            raw.push(None);
            continue;
        };
        let origin = Origin::File {
            path: path.to_owned(),
            profile: profile.to_owned(),
        };
        let entry = match (spec.kind, value) {
            (Kind::Integer, toml::Value::Integer(i)) => RawValue {
                text: i.to_string(),
                int: Some(*i),
                origin,
            },
            (Kind::String, toml::Value::String(s)) => RawValue {
                text: s.clone(),
                int: None,
                origin,
            },
            (Kind::Boolean, toml::Value::Boolean(b)) => RawValue {
                text: b.to_string(),
                int: None,
                origin,
            },
            (kind, _) => {
                return Err(ConfigError::WrongType {
                    path: path.to_owned(),
                    profile: profile.to_owned(),
                    key: spec.name,
                    expected: kind.expected(),
                    found: value.type_str(),
                });
            }
        };
        raw.push(Some(entry));
    }

    // All missing keys at once, before any value error: the user fixes them in one go.
    let missing: Vec<&'static str> = KEY_SPECS
        .iter()
        .zip(&raw)
        .filter(|(spec, value)| matches!(spec.unset, Unset::Required) && value.is_none())
        .map(|(spec, _)| spec.name)
        .collect();
    if !missing.is_empty() {
        return Err(ConfigError::MissingKeys {
            path: path.to_owned(),
            profile: profile.to_owned(),
            keys: missing,
        });
    }

    let mut resolved = Profile::unresolved(profile, path);
    for (spec, value) in KEY_SPECS.iter().zip(&raw) {
        let default_value;
        let value = match (value, &spec.unset) {
            (Some(given), _) => given,
            (
                None,
                Unset::Default {
                    value: default_of, ..
                },
            ) => {
                default_value = RawValue {
                    text: default_of(&resolved),
                    int: None,
                    origin: Origin::Default,
                };
                &default_value
            }
            // `Required` cannot get here: `missing` above returned.
            (None, Unset::Required | Unset::Absent) => continue,
        };
        (spec.set)(&mut resolved, value, env).map_err(|problem| ConfigError::Invalid {
            path: path.to_owned(),
            profile: profile.to_owned(),
            key: spec.name,
            value: value.text.clone(),
            from_env: matches!(value.origin, Origin::Env(_)),
            problem,
        })?;
    }

    let origins = KEY_SPECS
        .iter()
        .zip(raw)
        .map(|(spec, value)| {
            let origin = value.map_or(Origin::Default, |v| v.origin);
            (spec.name, (spec.show)(&resolved), origin)
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
    for (spec, (key, value, origin)) in KEY_SPECS.iter().zip(&origins) {
        if value.is_empty() {
            out.push_str(&format!("# {key:<15} (not set)\n"));
            continue;
        }
        let rendered = match spec.kind {
            Kind::Integer | Kind::Boolean => value.clone(),
            Kind::String => toml::Value::String(value.clone()).to_string(),
        };
        let origin = match (&spec.unset, origin) {
            (Unset::Default { shown_as, .. }, Origin::Default) => (*shown_as).to_owned(),
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::paths::profile_name_with;
    use super::test_support::*;
    use super::*;

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
                device_name: None,
                sign_in_lifetime: std::time::Duration::from_secs(30 * 86_400),
                prefix_template: "{identity_id}/".into(),
                allow_insecure_http: false,
                s3_endpoint: None,
                identity_endpoint: None,
                request_timeout: keys::DEFAULT_REQUEST_TIMEOUT,
                operation_timeout: keys::DEFAULT_OPERATION_TIMEOUT,
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
            key_names().collect::<Vec<_>>()
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
    fn plain_http_endpoints_off_this_machine_need_the_profile_s_consent() {
        for endpoint in [
            "http://10.0.0.7:9000",
            "http://s3.example.com",
            "http://[fd00::1]:80",
        ] {
            for key in ["s3_endpoint", "identity_endpoint"] {
                let (_d, path) = config_file(&format!(
                    "[p]\nregion = \"us-east-1\"\nuser_pool_id = \"us-east-1_Xyz123\"\n\
                     client_id = \"abc\"\ndomain = \"https://a.example\"\n\
                     identity_pool_id = \"us-east-1:00000000-1111-2222-3333-444444444444\"\n\
                     bucket = \"b-1\"\n{key} = \"{endpoint}\"\n"
                ));
                let err = load_env(&source(&path, Some("p")), &no_env)
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(key) && err.contains("allow_insecure_http = true"),
                    "{err}"
                );
                let allowed = env_of(&[("COGNIFS_ALLOW_INSECURE_HTTP", "true")]);
                let p = load_env(&source(&path, Some("p")), &allowed).unwrap();
                assert!(p.allow_insecure_http);
                assert!(p.signs_upload_bodies() == (key == "s3_endpoint"));
            }
        }
        // Loopback and https need nothing; a boolean that is not one is an error.
        let home = env_of(&[("HOME", "/home/u")]);
        let (_d, path) = config_file(GOOD);
        let p = load_env(&source(&path, Some("work")), &home).unwrap();
        assert!(!p.allow_insecure_http && !p.signs_upload_bodies());
        let err = load_env(
            &source(&path, Some("work")),
            &env_of(&[
                ("HOME", "/home/u"),
                ("COGNIFS_ALLOW_INSECURE_HTTP", "maybe"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expected true or false"), "{err}");
        let (_d, path) =
            config_file(&GOOD.replace("[work]\n", "[work]\nallow_insecure_http = \"yes\"\n"));
        let err = load_env(&source(&path, Some("work")), &home)
            .unwrap_err()
            .to_string();
        assert!(err.contains("true or false"), "{err}");
        let (_d, path) =
            config_file(&GOOD.replace("[work]\n", "[work]\nallow_insecure_http = true\n"));
        let shown = show_with(&source(&path, Some("work")), &home).unwrap();
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("allow_insecure_http") && l.contains("= true")),
            "{shown}"
        );
    }

    #[test]
    fn profile_names_that_could_leave_their_directory_are_refused() {
        // A profile table may be named anything TOML allows; its name becomes a directory.
        let escape = GOOD.replace("[work]", "[\"../escape\"]");
        let (_dir, path) = config_file(&escape);
        let home = env_of(&[("HOME", "/home/u")]);
        for (name, env) in [
            ("../escape", None),
            ("a/b", None),
            ("..", None),
            (".hidden", None),
            ("-rf", None),
            ("", None),
            ("sp ace", None),
            ("x", Some("../escape")),
        ] {
            let env = match env {
                Some(v) => env_of(&[("HOME", "/home/u"), ("COGNIFS_PROFILE", v)]),
                None => env_of(&[("HOME", "/home/u")]),
            };
            let chosen = (name != "x").then_some(name);
            let err = load_env(&source(&path, chosen), &env).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadProfileName { .. }),
                "{name:?}: {err}"
            );
        }
        let err = load_env(&source(&path, Some("../escape")), &home)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--profile") && err.contains("letters, digits"),
            "{err}"
        );
        for ok in ["default", "work_2", "my-work", "a.b:c"] {
            assert!(check_profile_name(ok).is_ok(), "{ok}");
        }
        assert!(check_profile_name(&"p".repeat(65)).is_err());
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
}
