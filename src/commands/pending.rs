//! `cognifs pending`: the uploads that failed and are kept on disk until they are in S3
//! (`list`), and abandoning one on purpose (`drop PATH`), the only way one is ever dropped.

use std::path::{Component, Path, PathBuf};

use anyhow::bail;

use super::status::pending_block;
use crate::config::{self, ConfigSource};
use crate::mounts;
use crate::pending::{PendingArea, PendingRecord, records_in};

fn area_dir(profile: &str) -> PathBuf {
    PendingArea::for_profile(&config::state_dir(), profile)
}

pub fn list(src: &ConfigSource) -> anyhow::Result<()> {
    let profile = config::load(src)?;
    let records = records_in(&area_dir(&profile.name));
    if records.is_empty() {
        println!("no pending uploads (profile {})", profile.name);
    } else {
        print!("{}", pending_block(&records));
    }
    Ok(())
}

/// `path` made absolute against the working directory, `.` and `..` resolved by name (the
/// file may not be reachable through the mount, so nothing is looked up).
fn lexical_absolute(path: &Path) -> PathBuf {
    let joined = std::env::current_dir().unwrap_or_default().join(path);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The record `path` names: a path in a running mount of the profile, a key relative to
/// the prefix, or a path whose last components are a record's key (the mount is gone).
fn find<'a>(
    records: &'a [PendingRecord],
    path: &Path,
    mountpoints: &[PathBuf],
) -> anyhow::Result<&'a PendingRecord> {
    let as_key = path.to_string_lossy().trim_start_matches("./").to_owned();
    if let Some(r) = records.iter().find(|r| r.rel == as_key) {
        return Ok(r);
    }
    let abs = lexical_absolute(path);
    for mp in mountpoints {
        if let Ok(rel) = abs.strip_prefix(mp) {
            let rel = rel.to_string_lossy();
            if let Some(r) = records.iter().find(|r| r.rel == rel) {
                return Ok(r);
            }
        }
    }
    let matches: Vec<&PendingRecord> = records
        .iter()
        .filter(|r| abs.ends_with(Path::new(&r.rel)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no pending upload for {} (`cognifs pending list` shows them)",
            path.display()
        ),
        many => bail!(
            "{} names more than one pending upload ({}); give the key as `cognifs pending list` shows it",
            path.display(),
            many.iter()
                .map(|r| r.rel.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn drop_one(src: &ConfigSource, path: &Path) -> anyhow::Result<()> {
    let profile = config::load(src)?;
    let dir = area_dir(&profile.name);
    let records = records_in(&dir);
    let mountpoints: Vec<PathBuf> = mounts::running(&config::state_dir(), &profile.name)
        .into_iter()
        .map(|r| r.mountpoint)
        .collect();
    let record = find(&records, path, &mountpoints)?;
    PendingArea::open(&dir)?.remove(record);
    println!(
        "dropped the pending upload of {} ({} bytes, {}); a running mount shows what S3 holds \
         within a second",
        record.rel, record.size, record.location
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rel: &str) -> PendingRecord {
        PendingRecord {
            location: "s3://b/p/".into(),
            rel: rel.into(),
            base_etag: None,
            size: 1,
            meta: Default::default(),
            since: 0,
            last_error: String::new(),
            data: format!("{rel}.data"),
        }
    }

    #[test]
    fn a_path_is_found_by_key_by_mount_or_by_its_last_components() {
        let records = [record("docs/a.txt"), record("a.txt"), record("x/y")];
        let mps = [PathBuf::from("/home/u/cloud")];
        let rel = |p: &str| find(&records, Path::new(p), &mps).map(|r| r.rel.clone());
        assert_eq!(rel("docs/a.txt").unwrap(), "docs/a.txt");
        assert_eq!(rel("/home/u/cloud/a.txt").unwrap(), "a.txt");
        assert_eq!(rel("/home/u/cloud/docs/../x/y").unwrap(), "x/y");
        // The mount is gone: the last components say which.
        assert_eq!(rel("/mnt/old/x/y").unwrap(), "x/y");
        let err = rel("/mnt/old/docs/a.txt").unwrap_err().to_string();
        assert!(err.contains("more than one"), "{err}");
        assert!(rel("/nowhere/z").is_err());
    }
}
