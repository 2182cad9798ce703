//! The local side of the data, beside `store/` (the remote side): what this machine keeps
//! of the prefix so that it reads warm after a remount and answers while S3 is away.
//!
//! - `blocks.rs`: the data cache on disk (blocks by key, etag and number, checksummed,
//!   LRU within a budget, pins).
//! - `tree.rs`: the listings last seen, per directory, for answering offline.
//! - `journal.rs`: changes to the tree made offline, in order, until S3 has them (file
//!   contents are kept uploads in the pending area, `crate::pending`).

pub mod blocks;
pub mod journal;
pub mod tree;

pub use blocks::{DiskCache, DiskCacheStats};
pub use tree::{KnownTree, SavedListing};
