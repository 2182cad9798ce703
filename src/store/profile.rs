//! [`profile_store`]: the store a mount of a profile uses, built in one place so that the
//! daemon and the mount tests run the same client: [`S3Store`] over [`s3_client`] (5
//! attempts per request, no identity cache, so renewed credentials are used at once; upload
//! bodies signed as the profile says), every request counted ([`CountingStore`], for `cognifs status` and `/metrics`), and a request
//! refused for stale credentials renewed and tried once more ([`RenewingStore`]).

use std::sync::Arc;

use aws_credential_types::provider::ProvideCredentials;

use super::{CountingStore, ObjectStore, Renewer, RenewingStore, RequestStats, S3Store, s3_client};
use crate::config::Profile;

/// A profile's store, and the counts of the requests made through it.
pub struct ProfileStore {
    pub store: Arc<dyn ObjectStore>,
    pub requests: Arc<RequestStats>,
}

/// The store of `profile`'s `prefix`, signed with `credentials`, which also renew themselves
/// when S3 refuses them (the refresher's `WatchedCredentials`).
pub fn profile_store<C>(profile: &Profile, credentials: &C, prefix: String) -> ProfileStore
where
    C: ProvideCredentials + Renewer + Clone + 'static,
{
    let requests = Arc::new(RequestStats::default());
    let counted = Arc::new(CountingStore::new(
        Arc::new(
            S3Store::new(
                s3_client(profile, credentials.clone()),
                profile.bucket.clone(),
                prefix,
            )
            .signing_bodies(profile.signs_upload_bodies()),
        ),
        requests.clone(),
    ));
    // Outside the counting: a refused request and its retry are both counted.
    let store = Arc::new(RenewingStore::new(counted, Arc::new(credentials.clone())));
    ProfileStore { store, requests }
}
