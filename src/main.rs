//! The `cognifs` executable: everything lives in the library (`cli` for the command line,
//! `commands` for what each command does, `daemon` for serving a mount).

use std::process::ExitCode;

/// Small blocks from mimalloc, large ones from glibc's malloc (see `allocator.rs`).
#[global_allocator]
static ALLOCATOR: cognifs::allocator::Allocator = cognifs::allocator::Allocator;

fn main() -> ExitCode {
    cognifs::allocator::Allocator::bound_large_blocks();
    // One TLS provider for reqwest and the AWS SDK, installed before either starts.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    cognifs::commands::main(std::env::args_os().collect())
}
