//! cognifs: mount your own prefix of an S3 bucket, signed in through AWS Cognito.

// System calls go through rustix; the few `unsafe` blocks left say why they are sound.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod allocator;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fs;
pub mod httpd;
pub mod local;
pub mod metrics;
pub mod mounts;
pub mod pending;
pub mod private_socket;
pub mod service;
pub mod statefile;
pub mod store;
pub mod upload_journal;
