//! The mount(8) helper: `/sbin/mount.fuse.cognifs` (a symlink to cognifs) or
//! `cognifs mount-helper`, run for an fstab line of type `fuse.cognifs`. Its `-o` options are
//! derived from [`MountArgs`]' clap definition, so every `cognifs mount` flag is an fstab
//! option under its long name (`cache_size=512MiB`, `allow_other`; `-` or `_` alike).

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser};

use crate::cli::{Cli, MountArgs};

/// The name mount(8) runs for an fstab entry of type `fuse.cognifs`.
pub const MOUNT_HELPER_NAME: &str = "mount.fuse.cognifs";

/// `MountArgs` flags that are not fstab options, and why.
pub const NOT_FSTAB_OPTIONS: &[(&str, &str)] = &[(
    "foreground",
    "mount(8) waits for its helper to return; a foreground mount never would",
)];

/// Whether the program was started under the helper's name.
pub fn invoked_as_helper(argv: &[OsString]) -> bool {
    argv.first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        == Some(MOUNT_HELPER_NAME)
}

/// A long flag of `cognifs mount`, as clap defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFlag {
    /// `cache-size`
    pub long: String,
    /// `--cache-size VALUE` rather than a plain switch.
    pub takes_value: bool,
}

/// Every long flag of [`MountArgs`], from its clap definition.
pub fn mount_flags() -> Vec<MountFlag> {
    MountArgs::augment_args(clap::Command::new("mount"))
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .filter_map(|a| {
            Some(MountFlag {
                long: a.get_long()?.to_owned(),
                takes_value: a.get_action().takes_values(),
            })
        })
        .collect()
}

/// The `cognifs mount` flag an fstab option key names (`cache_size` or `cache-size`).
fn mount_flag(key: &str) -> Option<MountFlag> {
    let long = key.replace('_', "-");
    mount_flags().into_iter().find(|f| f.long == long)
}

/// mount(8) options that concern mount(8) or the kernel's generic flags, not cognifs.
fn ignored_mount_option(opt: &str) -> bool {
    const IGNORED: &[&str] = &[
        "_netdev",
        "user",
        "users",
        "nouser",
        "owner",
        "group",
        "auto",
        "noauto",
        "nofail",
        "defaults",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "sync",
        "async",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "diratime",
        "nodiratime",
        "silent",
        "loud",
        "lazytime",
        "nolazytime",
    ];
    IGNORED.contains(&opt)
        || opt.starts_with("x-")
        || opt.starts_with("comment=")
        || opt.starts_with("fsname=")
        || opt.starts_with("subtype=")
}

/// Translates a mount(8) helper call (`SOURCE DIR [-sfnvrw] [-o OPTS] [-t TYPE]`) into the
/// arguments of `cognifs mount`. A later option overrides an earlier one, as in mount(8).
pub fn helper_argv(args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut positional = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-o" => opts.extend(
                it.next()
                    .context("-o needs options")?
                    .split(',')
                    .map(str::to_owned),
            ),
            o if o.starts_with("-o") => opts.extend(o[2..].split(',').map(str::to_owned)),
            // The type (fuse.cognifs) and namespace are mount(8)'s business.
            "-t" | "-N" => {
                it.next();
            }
            o if o.starts_with("-t") || o.starts_with("-N") => {}
            "-r" => opts.push("ro".into()),
            "-w" => opts.push("rw".into()),
            // sloppy, fake, no-mtab, verbose: nothing to do for a FUSE mount.
            "-s" | "-f" | "-n" | "-v" => {}
            o if o.starts_with('-') => bail!("unknown mount helper flag {o}"),
            _ => positional.push(arg.clone()),
        }
    }
    let [source, dir] = positional.as_slice() else {
        bail!("usage: {MOUNT_HELPER_NAME} cognifs#PROFILE DIR [-o OPTIONS]");
    };
    let profile = source.strip_prefix("cognifs#").unwrap_or(source);
    if profile.is_empty() {
        bail!("no profile in {source:?}: write cognifs#PROFILE, e.g. cognifs#default");
    }
    let mut config = None;
    // (long flag, value): `None` for a switch that is on; a switch turned off is removed.
    let mut chosen: Vec<(String, Option<String>)> = Vec::new();
    let mut set = |long: &str, value: Option<Option<String>>| {
        chosen.retain(|(l, _)| l != long);
        if let Some(value) = value {
            chosen.push((long.to_owned(), value));
        }
    };
    for opt in opts.iter().filter(|o| !o.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k.replace('-', "_"), Some(v)),
            None => (opt.replace('-', "_"), None),
        };
        if let Some((_, why)) = NOT_FSTAB_OPTIONS
            .iter()
            .find(|(k, _)| k.replace('-', "_") == key)
        {
            bail!("mount option {opt:?} is not for fstab: {why}");
        }
        match (key.as_str(), value, mount_flag(&key)) {
            ("ro", None, _) => set("read-only", Some(None)),
            ("rw", None, _) => set("read-only", None),
            ("config", Some(v), _) => config = Some(v.to_owned()),
            (_, Some(v), Some(f)) if f.takes_value => set(&f.long, Some(Some(v.to_owned()))),
            (_, None, Some(f)) if !f.takes_value => set(&f.long, Some(None)),
            (_, Some(_), Some(_)) => bail!("mount option {key} takes no value"),
            (_, None, Some(_)) => bail!("mount option {key} needs a value: {key}=…"),
            _ if ignored_mount_option(opt) => {}
            _ => bail!("unknown mount option {opt:?}"),
        }
    }
    let mut argv = vec!["--profile".to_owned(), profile.to_owned()];
    if let Some(config) = config {
        argv.extend(["--config".to_owned(), config]);
    }
    argv.extend(["mount".to_owned(), dir.clone()]);
    for (long, value) in chosen {
        argv.push(match value {
            Some(v) => format!("--{long}={v}"),
            None => format!("--{long}"),
        });
    }
    Ok(argv)
}

/// Mounts as `cognifs mount` would (daemonized, returning once the mount answers), from a
/// mount(8) helper call.
pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let argv: Vec<OsString> = helper_argv(args)?.into_iter().map(Into::into).collect();
    let cli = Cli::try_parse_from(std::iter::once("cognifs".into()).chain(argv.iter().cloned()))
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
    super::run(cli, argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> anyhow::Result<Vec<String>> {
        helper_argv(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    /// The translation parses as a real command line.
    fn parses(args: Vec<String>) -> Cli {
        Cli::try_parse_from(std::iter::once("cognifs".to_owned()).chain(args.clone()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn mount_helper_arguments() {
        assert_eq!(
            argv(
                "cognifs#work /home/me/cloud -o rw,_netdev,user,noauto,nofail,x-systemd.automount"
            )
            .unwrap(),
            ["--profile", "work", "mount", "/home/me/cloud"]
        );
        assert_eq!(
            argv("default /m -n -o ro,allow_other,cache_size=512MiB,config=/etc/c.toml -t fuse.cognifs")
                .unwrap(),
            [
                "--profile", "default", "--config", "/etc/c.toml", "mount", "/m", "--read-only",
                "--allow-other", "--cache-size=512MiB"
            ]
        );
        assert!(argv("cognifs# /m").is_err());
        assert!(argv("cognifs#default").is_err());
        let err = argv("cognifs#default /m -o cache_sise=1").unwrap_err();
        assert!(err.to_string().contains("cache_sise"), "{err}");
        // Every translation parses as a real command line.
        parses(argv("cognifs#default /m -o ro,metadata_ttl=2,uid=1000,file_mode=0600").unwrap());
    }

    #[test]
    fn later_options_win_and_values_are_checked() {
        assert_eq!(
            argv("p /m -o ro,cache_size=1GiB -o rw,cache-size=2GiB").unwrap(),
            ["--profile", "p", "mount", "/m", "--cache-size=2GiB"]
        );
        assert!(argv("p /m -r -o read_only").is_ok());
        parses(argv("p /m -r -o read_only,ro").unwrap());
        let err = argv("p /m -o cache_size").unwrap_err().to_string();
        assert!(err.contains("needs a value"), "{err}");
        let err = argv("p /m -o allow_other=1").unwrap_err().to_string();
        assert!(err.contains("takes no value"), "{err}");
        let err = argv("p /m -o foreground").unwrap_err().to_string();
        assert!(err.contains("not for fstab"), "{err}");
        // A value that looks like a flag stays a value.
        parses(argv("p /m -o metadata_ttl=-1").unwrap());
    }

    /// Every long flag of `cognifs mount` is an fstab option: a new flag needs no second list.
    #[test]
    fn every_mount_flag_is_an_fstab_option() {
        let flags = mount_flags();
        for long in [
            "part-size",
            "cache-dir",
            "cache-size",
            "allow-other",
            "read-only",
        ] {
            assert!(flags.iter().any(|f| f.long == long), "{long}: {flags:?}");
        }
        let sample = |long: &str| match long {
            "cache-dir" => "/var/cache/cognifs",
            "file-mode" | "dir-mode" => "0640",
            "metrics-addr" => "127.0.0.1:9464",
            l if l.ends_with("-size") || l == "max-readahead" => "16MiB",
            _ => "7",
        };
        let mut tried = 0;
        for flag in &flags {
            if NOT_FSTAB_OPTIONS.iter().any(|(k, _)| *k == flag.long) {
                continue;
            }
            let key = flag.long.replace('-', "_");
            let opt = if flag.takes_value {
                format!("{key}={}", sample(&flag.long))
            } else {
                key.clone()
            };
            let args = argv(&format!("cognifs#default /m -o {opt}"))
                .unwrap_or_else(|e| panic!("fstab option {opt}: {e}"));
            assert!(
                args.iter()
                    .any(|a| a.starts_with(&format!("--{}", flag.long))),
                "{opt} -> {args:?}"
            );
            parses(args);
            tried += 1;
        }
        assert_eq!(tried + NOT_FSTAB_OPTIONS.len(), flags.len());
        // The two the hand-kept list once missed.
        for opt in ["part_size=16MiB", "cache_dir=/var/cache/c"] {
            let args = argv(&format!("cognifs#default /m -o {opt}")).unwrap();
            let Cli {
                command: crate::cli::Command::Mount(m),
                ..
            } = parses(args)
            else {
                unreachable!()
            };
            assert!(m.part_size == 16 << 20 || m.cache_dir.is_some(), "{m:?}");
        }
    }
}
