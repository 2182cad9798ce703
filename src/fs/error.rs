//! Filesystem errors: an errno for the kernel, and the cause behind it for the log.
//!
//! The errno is chosen here, from the typed store error ([`FsError::from`]), and nowhere
//! else. The cause travels with the error up to the FUSE adapter, which logs each failure
//! once, with the operation and the path.

use std::fmt;
use std::sync::Arc;

use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct FsError {
    pub errno: i32,
    /// What made S3 or the spool fail; `None` for answers like ENOENT or ENOTEMPTY that are
    /// the filesystem's rules, not failures.
    pub cause: Option<Arc<StoreError>>,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub const fn new(errno: i32) -> Self {
        FsError { errno, cause: None }
    }

    /// S3 did not answer (see [`StoreError::is_unreachable`]): the mount is offline.
    pub fn is_unreachable(&self) -> bool {
        self.cause
            .as_deref()
            .is_some_and(StoreError::is_unreachable)
    }

    /// Whether this is worth a warning: something failed (S3, credentials, the disk), as
    /// opposed to an ordinary answer such as "no such file".
    pub fn is_failure(&self) -> bool {
        self.cause.as_deref().is_some_and(|c| {
            !matches!(
                c,
                StoreError::NotFound | StoreError::KeyTooLong | StoreError::InvalidPath(_)
            )
        })
    }
}

impl PartialEq for FsError {
    fn eq(&self, other: &Self) -> bool {
        self.errno == other.errno
    }
}

impl Eq for FsError {}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.errno);
        match &self.cause {
            Some(c) => write!(f, "{text}: {c}"),
            None => write!(f, "{text}"),
        }
    }
}

impl std::error::Error for FsError {}

/// The one place store failures become errno values.
pub fn errno_of(e: &StoreError) -> i32 {
    match e {
        StoreError::NotFound => libc::ENOENT,
        StoreError::AccessDenied(_) => libc::EACCES,
        // A read pinned to a version that was replaced (its bytes would mix two versions),
        // or a write whose version is gone and could not be kept beside it.
        StoreError::Changed => libc::ESTALE,
        // Two conditional writes raced, and starting over did not settle it.
        StoreError::Raced => libc::EIO,
        StoreError::KeyTooLong => libc::ENAMETOOLONG,
        StoreError::InvalidPath(_) => libc::EINVAL,
        StoreError::Timeout(_) => libc::ETIMEDOUT,
        StoreError::Unreachable(_) => libc::EIO,
        // Only a directory rename lists recursively: too big to move key by key here.
        StoreError::TooManyKeys => libc::EXDEV,
        StoreError::NoSpace => libc::ENOSPC,
        StoreError::TooLarge => libc::EFBIG,
        StoreError::Local(_) | StoreError::Other(_) => libc::EIO,
    }
}

impl From<Arc<StoreError>> for FsError {
    fn from(e: Arc<StoreError>) -> Self {
        FsError {
            errno: errno_of(&e),
            cause: Some(e),
        }
    }
}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        FsError::from(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_keep_their_cause() {
        let cases = [
            (StoreError::NotFound, libc::ENOENT),
            (StoreError::AccessDenied("x".into()), libc::EACCES),
            (StoreError::Changed, libc::ESTALE),
            (StoreError::Raced, libc::EIO),
            (StoreError::KeyTooLong, libc::ENAMETOOLONG),
            (StoreError::Other("503".into()), libc::EIO),
            (StoreError::NoSpace, libc::ENOSPC),
            (StoreError::Timeout("t".into()), libc::ETIMEDOUT),
            (StoreError::TooLarge, libc::EFBIG),
        ];
        for (e, errno) in cases {
            let text = e.to_string();
            let fs = FsError::from(e);
            assert_eq!(fs.errno, errno);
            assert!(fs.to_string().contains(&text), "{fs}");
        }
        assert!(!FsError::new(libc::ENOENT).is_failure());
        assert!(!FsError::from(StoreError::NotFound).is_failure());
        assert!(!FsError::from(StoreError::KeyTooLong).is_failure());
        assert!(FsError::from(StoreError::Other("503".into())).is_failure());
    }
}
