//! The local side of the data, beside `store/` (the remote side): what this machine keeps
//! of the prefix so that it reads warm after a remount and answers while S3 is away.
//!
//! - `blocks.rs`: the data cache on disk (blocks by key, etag and number, checksummed,
//!   LRU within a budget, pins).
//! - `tree.rs`: the listings last seen, per directory, for answering offline.

pub mod blocks;

pub use blocks::{DiskCache, DiskCacheStats};
