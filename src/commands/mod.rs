//! One module per command (or small group): what `cognifs COMMAND` does once parsed.

pub mod account;
pub mod config;
pub mod conflicts;
#[cfg(feature = "demo")]
pub mod demo;
pub mod mount;
pub mod mount_helper;
pub mod offline;
pub mod pending;
pub mod service;
pub mod status;

use std::ffi::OsString;
use std::process::ExitCode;

use crate::auth::AuthError;
use crate::cli::{Cli, Command, ConfigCommand, ConflictsCommand, PendingCommand, ServiceCommand};

/// Exit status when the profile is not signed in: distinct, so a service manager can avoid
/// restarting into the same failure.
pub const EXIT_SIGNED_OUT: u8 = 3;

/// The whole program: `argv` as the process got it (program name first).
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let result = if mount_helper::invoked_as_helper(&argv) {
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        mount_helper::run(&args)
    } else {
        use clap::Parser;
        run(Cli::parse_from(&argv), argv[1..].to_vec())
    };
    exit_code(result)
}

/// Runs a parsed command line. `argv` (without the program name) is what a daemonized mount
/// re-runs with `--foreground`.
pub fn run(cli: Cli, argv: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let src = cli.source();
    match cli.command {
        Command::Config(ConfigCommand::Show) => config::show(&src)?,
        Command::Config(ConfigCommand::Import { env_file }) => config::import(&env_file, &src)?,
        Command::Login { no_browser } => account::login(&src, no_browser)?,
        Command::Logout => account::logout(&src)?,
        Command::Status(args) => return status::status(&src, &args),
        Command::Mount(args) => return mount::mount(&src, args, argv),
        Command::MountHelper { args } => return mount_helper::run(&args),
        Command::Service(ServiceCommand::Install) => service::install(&src)?,
        Command::Completions { shell } => completions(shell, &mut std::io::stdout().lock())?,
        Command::Man => man_page(&mut std::io::stdout().lock())?,
        Command::Unmount { dir } => mount::unmount(&dir)?,
        Command::Pending(PendingCommand::List) => pending::list(&src)?,
        Command::Offline(c) => offline::run(c)?,
        Command::Conflicts { command: None }
        | Command::Conflicts {
            command: Some(ConflictsCommand::List),
        } => conflicts::list(&src)?,
        Command::Pending(PendingCommand::Drop { path }) => pending::drop_one(&src, &path)?,
        #[cfg(feature = "demo")]
        Command::Demo { dir } => demo::demo(&dir)?,
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => anyhow::bail!(
            "this cognifs was built without the demo (cargo feature `demo`); try a cognifs-devstack and a profile pointing at it"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `cognifs completions SHELL`: the completion script, generated from the clap definitions.
pub fn completions(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "cognifs", out);
    Ok(())
}

/// `cognifs man`: the man page (section 1, roff), generated from the clap definitions; the
/// subcommands are listed in it with their one-line help.
pub fn man_page(out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    use clap::CommandFactory;
    clap_mangen::Man::new(Cli::command()).render(out)?;
    Ok(())
}

/// Prints an error and picks the exit status: [`EXIT_SIGNED_OUT`] when the cause is a missing
/// or lapsed sign-in.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cognifs: {err:#}");
            if err.chain().any(|e| {
                matches!(
                    e.downcast_ref::<AuthError>(),
                    Some(AuthError::NotSignedIn { .. } | AuthError::SignedOut { .. })
                )
            }) {
                // Shown by `systemctl status` for the unit, which will not restart into this.
                crate::service::notify_or_log("STATUS=not signed in: run cognifs login");
                ExitCode::from(EXIT_SIGNED_OUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the Debian package ships beside the binary, generated from the command-line
    /// definitions and the unit template: `packaging/` must hold exactly that (a changed
    /// flag fails here until `COGNIFS_BLESS_PACKAGING=1 cargo test --lib packaged` rewrites
    /// the files).
    #[test]
    fn packaged_files_match_the_binary() {
        use clap::CommandFactory;
        // The package's binary is built without the demo, which hides its command.
        let shipped = || Cli::command().mut_subcommand("demo", |c| c.hide(true));
        let mut expected: Vec<(&str, Vec<u8>)> = Vec::new();
        for (file, shell) in [
            ("cognifs.bash", clap_complete::Shell::Bash),
            ("_cognifs", clap_complete::Shell::Zsh),
            ("cognifs.fish", clap_complete::Shell::Fish),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut shipped(), "cognifs", &mut out);
            expected.push((file, out));
        }
        let mut man = Vec::new();
        clap_mangen::Man::new(shipped()).render(&mut man).unwrap();
        expected.push(("cognifs.1", man));
        expected.push((
            "cognifs@.service",
            crate::service::unit_text(std::path::Path::new("/usr/bin/cognifs")).into_bytes(),
        ));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
        let bless = std::env::var_os("COGNIFS_BLESS_PACKAGING").is_some();
        for (file, content) in expected {
            let path = dir.join(file);
            if bless {
                std::fs::write(&path, &content).unwrap();
            }
            assert!(
                std::fs::read(&path).is_ok_and(|on_disk| on_disk == content),
                "packaging/{file} is stale: run `COGNIFS_BLESS_PACKAGING=1 cargo test --lib packaged`"
            );
        }
        assert_eq!(
            std::fs::read_link(dir.join("mount.fuse.cognifs")).unwrap(),
            std::path::Path::new("/usr/bin/cognifs")
        );
    }
}
