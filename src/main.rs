//! The `cognifs` executable: everything lives in the library (`cli` for the command line,
//! `commands` for what each command does, `daemon` for serving a mount).

use std::process::ExitCode;

fn main() -> ExitCode {
    keep_large_blocks_mapped();
    // One TLS provider for reqwest and the AWS SDK, installed before either starts.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    cognifs::commands::main(std::env::args_os().collect())
}

/// glibc raises its mmap threshold each time a large allocation is freed; from then on the
/// 1 MiB blocks a mount reads and writes come from heap arenas (one per thread that
/// allocated) that seldom give memory back, and the process's RSS grows far past what it
/// holds. A fixed threshold keeps every such block mapped: memory freed is memory returned.
fn keep_large_blocks_mapped() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it runs first thing in main, before
    // any other thread exists or anything is allocated through it concurrently.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}
