//! `cognifs config import FILE.env`: turns the `.env` that Cognito web-app tutorials hand out
//! (`VITE_APP_*`, `REACT_APP_*`) into a profile, spliced into the config file so other profiles
//! and comments survive.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use url::Url;

use super::keys::{KEY_SPECS, key_names};
use super::paths::{config_path_with, profile_name_with};
use toml_edit::{DocumentMut, Item, Table};

use super::{ConfigError, ConfigSource, Env, io_error, parse_toml, process_env, resolve};

/// What `import_env` did; warnings are things the user must fix on the AWS side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub profile: String,
    pub config_path: PathBuf,
    pub warnings: Vec<String>,
}

/// Marks the comment line `import_env` writes above a profile, so a re-import replaces it too.
const IMPORT_MARKER: &str = "# imported by `cognifs config import`";

/// Prefixes web-app tutorials put on the same variables (Vite, Create React App, none).
const ENV_PREFIXES: &[&str] = &["VITE_APP_", "REACT_APP_", ""];

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

/// A .env larger than this is not a web app's settings.
const MAX_ENV_BYTES: u64 = 1 << 20;

fn read_bounded(path: &Path) -> io::Result<String> {
    use io::Read;
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_ENV_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_ENV_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_ENV_BYTES} bytes"),
        ));
    }
    Ok(text)
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
    super::check_profile_name(&profile).map_err(|problem| ConfigError::BadProfileName {
        name: profile.clone(),
        chosen_by: "--profile",
        problem,
    })?;
    let env_error = |problem: String| ConfigError::EnvFile {
        path: env_file.to_owned(),
        problem,
    };

    let text = read_bounded(env_file).map_err(io_error("read", env_file))?;
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
    for spec in KEY_SPECS.iter().filter(|s| s.kept_on_reimport) {
        if let Some(v) = old.and_then(|t| t.get(spec.name)) {
            set(spec.name, v.clone());
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

    // Edited in place: every other profile, comment and blank line stays as it was.
    let mut doc = match &existing {
        Some((_, text)) => text
            .parse::<DocumentMut>()
            .map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?,
        None => DocumentMut::new(),
    };
    let new_table = profile_table(&table, env_file, doc.get(&profile), doc.is_empty());
    doc.insert(&profile, Item::Table(new_table));
    let contents = doc.to_string();
    write_atomically(&path, &contents)?;

    Ok(ImportReport {
        profile,
        config_path: path,
        warnings,
    })
}

/// The profile's table, keys in display order, headed by the import marker; in the place
/// of `old` (the profile's table in the file, if any), keeping the comments above it but an
/// earlier marker.
fn profile_table(
    table: &toml::Table,
    env_file: &Path,
    old: Option<&Item>,
    empty_file: bool,
) -> Table {
    let mut new = Table::new();
    for key in key_names() {
        if let Some(value) = table.get(key) {
            let value = value
                .to_string()
                .parse::<toml_edit::Value>()
                .expect("a toml value's text is a toml value");
            new.insert(key, toml_edit::value(value));
        }
    }
    let above = match old.and_then(Item::as_table) {
        Some(t) => {
            new.set_position(t.position());
            t.decor()
                .prefix()
                .and_then(|p| p.as_str())
                .unwrap_or_default()
                .split_inclusive('\n')
                .filter(|line| !line.starts_with(IMPORT_MARKER))
                .collect::<String>()
        }
        None if empty_file => String::new(),
        None => "\n".to_owned(),
    };
    new.decor_mut().set_prefix(format!(
        "{above}{IMPORT_MARKER} from {}\n",
        env_file.display()
    ));
    new
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
    use super::super::DEFAULT_CALLBACK_PORT;
    use super::super::test_support::*;
    use super::*;

    proptest::proptest! {
        /// Any bytes as a .env file, and the required variables with any values: an error
        /// or a profile, never a panic.
        #[test]
        fn any_env_file_imports_or_fails_without_panicking(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    ".{0,30}",
                    "\"[^\"]{0,10}\\\\?\"?.{0,4}",
                    "https?://[a-z.]{0,12}(:[0-9]{1,6})?/?[a-z?=&_]{0,20}(client_id=[a-z0-9]{0,6})?",
                    "[a-z]{2}-[a-z]{4}-[0-9][:_][a-zA-Z0-9-]{0,12}",
                ],
                7,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let env_file = dir.path().join("app.env");
            let names = [
                "S3_BUCKET", "COGNITO_LOGIN_URL", "COGNITO_IDENTITY_POOL_ID",
                "COGNITO_IDENTITY_PROVIDER", "COGNITO_REGION", "BUCKET_REGION", "COGNITO_LOGOUT_URL",
            ];
            let mut text = junk.clone();
            for (name, value) in names.iter().zip(&values) {
                text.extend_from_slice(format!("\nVITE_APP_{name}={value}").as_bytes());
            }
            fs::write(&env_file, &text).unwrap();
            let config = dir.path().join("config.toml");
            let _ = import_env_with(&env_file, &source(&config, None), &no_env);
            let _ = parse_dotenv(&String::from_utf8_lossy(&junk));
        }
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
