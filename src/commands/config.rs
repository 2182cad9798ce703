//! `cognifs config show` and `cognifs config import`.

use std::path::Path;

use crate::auth::profile_flag;
use crate::config::{self, ConfigSource};

pub fn show(src: &ConfigSource) -> anyhow::Result<()> {
    print!("{}", config::show(src)?);
    Ok(())
}

pub fn import(env_file: &Path, src: &ConfigSource) -> anyhow::Result<()> {
    let report = config::import_env(env_file, src)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "wrote profile [{}] to {}",
        report.profile,
        report.config_path.display()
    );
    println!("next: cognifs login{}", profile_flag(&report.profile));
    Ok(())
}
