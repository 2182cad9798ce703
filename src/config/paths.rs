//! Where things are: the config file, the profile in it, and cognifs's XDG base directories.

use std::path::{Path, PathBuf};

use super::{DEFAULT_PROFILE, Env, env_nonempty, process_env};

/// The XDG base directories cognifs uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdgBase {
    /// The config file: read, rarely written, fine to share through dotfile repos.
    Config,
    /// Tokens and mount records: change on every run, must not be shared.
    State,
    /// Disposable data, safe to delete at any time.
    Cache,
}

impl XdgBase {
    fn var(self) -> &'static str {
        match self {
            XdgBase::Config => "XDG_CONFIG_HOME",
            XdgBase::State => "XDG_STATE_HOME",
            XdgBase::Cache => "XDG_CACHE_HOME",
        }
    }

    /// Relative to `$HOME`, as the spec says.
    fn fallback(self) -> &'static str {
        match self {
            XdgBase::Config => ".config",
            XdgBase::State => ".local/state",
            XdgBase::Cache => ".cache",
        }
    }
}

/// `$HOME`, or `/` for daemons started without one.
fn home(env: Env) -> PathBuf {
    env_nonempty(env, "HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

pub(super) fn xdg_dir_with(env: Env, base: XdgBase) -> PathBuf {
    // The spec says to ignore relative values.
    env_nonempty(env, base.var())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home(env).join(base.fallback()))
        .join("cognifs")
}

/// cognifs's directory under an XDG base directory, e.g. `$XDG_CACHE_HOME/cognifs`, with
/// `$XDG_CACHE_HOME` defaulting to `$HOME/.cache` (and `$HOME` to `/`).
pub fn xdg_dir(base: XdgBase) -> PathBuf {
    xdg_dir_with(&process_env, base)
}

/// The config file and what chose it (for the "tried" part of
/// [`ConfigError::NotFound`](super::ConfigError::NotFound)).
pub(super) fn config_path_traced(explicit: Option<&Path>, env: Env) -> (PathBuf, &'static str) {
    if let Some(p) = explicit {
        return (p.to_owned(), "--config");
    }
    if let Some(p) = env_nonempty(env, "COGNIFS_CONFIG") {
        return (PathBuf::from(p), "$COGNIFS_CONFIG");
    }
    (
        xdg_dir_with(env, XdgBase::Config).join("config.toml"),
        "default location; neither --config nor $COGNIFS_CONFIG set",
    )
}

pub(super) fn config_path_with(explicit: Option<&Path>, env: Env) -> PathBuf {
    config_path_traced(explicit, env).0
}

/// The config file to read: `explicit` (`--config`), else `$COGNIFS_CONFIG`, else
/// `$XDG_CONFIG_HOME/cognifs/config.toml`.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    config_path_with(explicit, &process_env)
}

/// Profile names become path components (`STATE/PROFILE/…`, the metadata cache's file
/// name) and systemd instance names (`cognifs@PROFILE`, through `%i`): 1 to 64 of
/// `[A-Za-z0-9_.:-]`, not starting with `.` or `-` (so never `.`, `..` or an option).
/// Checked once, where a profile is chosen ([`super::load`], `config import`).
pub fn check_profile_name(name: &str) -> Result<(), String> {
    let charset = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if name.is_empty() || name.len() > 64 || !charset {
        return Err("must be 1 to 64 letters, digits and _ . : -".to_owned());
    }
    if name.starts_with(['.', '-']) {
        return Err("must not start with . or -".to_owned());
    }
    Ok(())
}

/// The profile and what chose it (for [`ConfigError::MissingProfile`](super::ConfigError)).
pub(super) fn profile_name_traced(explicit: Option<&str>, env: Env) -> (String, &'static str) {
    if let Some(p) = explicit {
        return (p.to_owned(), "--profile");
    }
    if let Some(p) = env_nonempty(env, "COGNIFS_PROFILE") {
        return (p, "$COGNIFS_PROFILE");
    }
    (DEFAULT_PROFILE.to_owned(), "default")
}

pub(super) fn profile_name_with(explicit: Option<&str>, env: Env) -> String {
    profile_name_traced(explicit, env).0
}

/// The profile to use: `explicit` (`--profile`), else `$COGNIFS_PROFILE`, else `default`.
pub fn profile_name(explicit: Option<&str>) -> String {
    profile_name_with(explicit, &process_env)
}

fn state_dir_with(env: Env) -> PathBuf {
    env_nonempty(env, "COGNIFS_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| xdg_dir_with(env, XdgBase::State))
}

/// Where tokens and mount records live: `$COGNIFS_STATE_DIR`, else `$XDG_STATE_HOME/cognifs`.
pub fn state_dir() -> PathBuf {
    state_dir_with(&process_env)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::env_of;
    use super::*;

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
        assert_eq!(
            xdg_dir_with(&home, XdgBase::Cache),
            Path::new("/home/ann/.cache/cognifs")
        );
        let xdg = env_of(&[
            ("HOME", "/home/ann"),
            ("XDG_STATE_HOME", "/s"),
            ("XDG_CACHE_HOME", "/c"),
        ]);
        assert_eq!(state_dir_with(&xdg), Path::new("/s/cognifs"));
        assert_eq!(xdg_dir_with(&xdg, XdgBase::Cache), Path::new("/c/cognifs"));
        let explicit = env_of(&[("XDG_STATE_HOME", "/s"), ("COGNIFS_STATE_DIR", "/tok")]);
        assert_eq!(state_dir_with(&explicit), Path::new("/tok"));
    }
}
