//! Who may sign an S3 request: the admin, or a live credential devstack issued.

use std::sync::Arc;
use std::time::SystemTime;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

use crate::cognito::Cognito;

/// Who may sign: the admin, or a credential devstack issued that is still live.
pub struct DevAuth {
    pub cognito: Arc<Cognito>,
    pub admin: Option<(String, String)>,
}

#[async_trait::async_trait]
impl S3Auth for DevAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if let Some((key, secret)) = &self.admin
            && key == access_key
        {
            return Ok(SecretKey::from(secret.as_str()));
        }
        match self.cognito.lookup_credentials(access_key) {
            Some(c) if c.expires > SystemTime::now() => Ok(SecretKey::from(c.secret_key)),
            Some(_) => Err(s3_error!(ExpiredToken, "The provided token has expired.")),
            None => Err(unknown_access_key()),
        }
    }
}

/// What AWS answers (403) for an access key it does not know, or no longer knows: never
/// issued, forgotten by [`Cognito::forget_credentials`], or expired long ago.
pub(super) fn unknown_access_key() -> s3s::S3Error {
    s3_error!(
        InvalidAccessKeyId,
        "The AWS Access Key Id you provided does not exist in our records."
    )
}
