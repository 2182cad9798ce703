//! cognifs: mount your own prefix of an S3 bucket, signed in through AWS Cognito.

pub mod auth;
pub mod clock;
pub mod config;
pub mod demo;
pub mod fs;
pub mod mounts;
pub mod service;
pub mod store;
