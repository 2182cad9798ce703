//! The `cognifs` executable: everything lives in the library (`cli` for the command line,
//! `commands` for what each command does, `daemon` for serving a mount).

use std::process::ExitCode;

fn main() -> ExitCode {
    // One TLS provider for reqwest and the AWS SDK, installed before either starts.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    cognifs::commands::main(std::env::args_os().collect())
}
