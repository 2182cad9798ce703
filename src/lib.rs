//! cognifs: mount your own prefix of an S3 bucket, signed in through AWS Cognito.

pub mod config;
