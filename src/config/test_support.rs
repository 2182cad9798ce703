//! Fixtures shared by the config module's unit tests.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{ConfigError, ConfigSource, Env, Profile, load_with_origins_env};

pub(super) const GOOD: &str = r#"
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
pub(super) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

/// A temp dir holding `config.toml` with `text`; returns the dir (keep it alive) and path.
pub(super) fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    fs::write(&path, text).unwrap();
    (dir, path)
}

pub(super) fn source(path: &Path, profile: Option<&str>) -> ConfigSource {
    ConfigSource {
        path: Some(path.to_owned()),
        profile: profile.map(str::to_owned),
    }
}

pub(super) fn load_env(src: &ConfigSource, env: Env) -> Result<Profile, ConfigError> {
    load_with_origins_env(src, env).map(|(p, _)| p)
}

/// GOOD's [default] with `key = value` replaced (or added); `value` is raw TOML.
pub(super) fn with_key(key: &str, value: &str) -> String {
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

pub(super) fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/webapp.env"
    ))
}
