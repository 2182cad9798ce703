//! The per-identity policy in docs/AWS-SETUP.md, enforced strictly: an issued credential
//! reaches only keys under `{identity-id}/`; the admin reaches everything.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Result, s3_error};

use super::auth::unknown_access_key;
use crate::cognito::Cognito;

/// The per-identity policy. Operations not listed in [`ALLOWED_FOR_IDENTITIES`] are denied to
/// issued credentials; the listed ones are then checked key by key in the per-operation hooks.
pub struct DevAccess {
    pub cognito: Arc<Cognito>,
    pub admin_key: Option<String>,
    pub bucket: String,
}

const ALLOWED_FOR_IDENTITIES: &[&str] = &[
    "GetObject",
    "HeadObject",
    "PutObject",
    "DeleteObject",
    "DeleteObjects",
    "CopyObject",
    "ListObjectsV2",
    "ListObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListMultipartUploads",
    "ListParts",
];

fn access_denied() -> S3Error {
    s3_error!(AccessDenied, "Access Denied")
}

impl DevAccess {
    /// The identity prefix (`{identity-id}/`) a request may reach; `None` for the admin.
    fn scope<T>(&self, req: &S3Request<T>) -> S3Result<Option<String>> {
        let creds = req.credentials.as_ref().ok_or_else(access_denied)?;
        if self.admin_key.as_deref() == Some(creds.access_key.as_str()) {
            return Ok(None);
        }
        // Forgotten since the signature was checked: refused as the signature check would.
        let issued = self
            .cognito
            .lookup_credentials(&creds.access_key)
            .ok_or_else(unknown_access_key)?;
        Ok(Some(format!("{}/", issued.identity_id)))
    }

    fn object<T>(&self, req: &S3Request<T>, bucket: &str, key: &str) -> S3Result<()> {
        match self.scope(req)? {
            None => Ok(()),
            Some(prefix) if bucket == self.bucket && key.starts_with(&prefix) => Ok(()),
            Some(_) => Err(access_denied()),
        }
    }

    fn listing<T>(&self, req: &S3Request<T>, bucket: &str, prefix: Option<&str>) -> S3Result<()> {
        match self.scope(req)? {
            None => Ok(()),
            Some(scope)
                if bucket == self.bucket && prefix.is_some_and(|p| p.starts_with(&scope)) =>
            {
                Ok(())
            }
            Some(_) => Err(access_denied()),
        }
    }

    fn copy_source<T>(&self, req: &S3Request<T>, source: &CopySource) -> S3Result<()> {
        match source {
            CopySource::Bucket { bucket, key, .. } => self.object(req, bucket, key),
            _ => Err(access_denied()),
        }
    }
}

fn session_token(cx: &s3s::access::S3AccessContext<'_>) -> Option<String> {
    if let Some(v) = cx.headers().get("x-amz-security-token") {
        return v.to_str().ok().map(str::to_owned);
    }
    let query = cx.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "X-Amz-Security-Token")
        .map(|(_, v)| v.into_owned())
}

#[async_trait::async_trait]
impl s3s::access::S3Access for DevAccess {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        let creds = cx
            .credentials()
            .ok_or_else(|| s3_error!(AccessDenied, "Signature is required"))?;
        if self.admin_key.as_deref() == Some(creds.access_key.as_str()) {
            return Ok(());
        }
        let issued = self
            .cognito
            .lookup_credentials(&creds.access_key)
            .ok_or_else(unknown_access_key)?;
        // Temporary credentials are only valid together with their session token.
        if session_token(cx).as_deref() != Some(issued.session_token.as_str()) {
            return Err(s3_error!(
                InvalidToken,
                "The provided token is malformed or otherwise invalid."
            ));
        }
        if !ALLOWED_FOR_IDENTITIES.contains(&cx.s3_op().name()) {
            return Err(access_denied());
        }
        Ok(())
    }

    async fn get_object(&self, req: &mut S3Request<GetObjectInput>) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
    async fn head_object(&self, req: &mut S3Request<HeadObjectInput>) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
    async fn put_object(&self, req: &mut S3Request<PutObjectInput>) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
    async fn delete_object(&self, req: &mut S3Request<DeleteObjectInput>) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        // All or nothing: one foreign key denies the whole request.
        for object in &req.input.delete.objects {
            self.object(req, &req.input.bucket, &object.key)?;
        }
        Ok(())
    }
    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)?;
        self.copy_source(req, &req.input.copy_source)
    }
    async fn list_objects_v2(&self, req: &mut S3Request<ListObjectsV2Input>) -> S3Result<()> {
        self.listing(req, &req.input.bucket, req.input.prefix.as_deref())
    }
    async fn list_objects(&self, req: &mut S3Request<ListObjectsInput>) -> S3Result<()> {
        self.listing(req, &req.input.bucket, req.input.prefix.as_deref())
    }
    async fn create_multipart_upload(
        &self,
        req: &mut S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
    async fn upload_part(&self, req: &mut S3Request<UploadPartInput>) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)?;
        self.copy_source(req, &req.input.copy_source)
    }
    async fn complete_multipart_upload(
        &self,
        req: &mut S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
    async fn abort_multipart_upload(
        &self,
        req: &mut S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
    async fn list_multipart_uploads(
        &self,
        req: &mut S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<()> {
        self.listing(req, &req.input.bucket, req.input.prefix.as_deref())
    }
    async fn list_parts(&self, req: &mut S3Request<ListPartsInput>) -> S3Result<()> {
        self.object(req, &req.input.bucket, &req.input.key)
    }
}
