//! Extended attributes: the `user.*` namespace, stored in the object's (a directory's:
//! its marker's) metadata in s3fs's layout (`meta.rs`), so s3fs sees them too.
//!
//! Other namespaces (`security.*`, `system.*`, `trusted.*`) answer `EOPNOTSUPP` without a
//! request: the kernel asks for `security.capability` before every write. S3 keeps at most
//! 2 KiB of metadata per object: a value that cannot fit alone is `E2BIG`, one that does not
//! fit beside the rest is `ENOSPC`; nothing is ever silently dropped.

use super::Fs;
use super::error::{FsError, FsResult};
use super::meta::{MAX_USER_META_BYTES, Meta, storable_xattr_name};

/// setxattr(2) flags.
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

fn check_namespace(name: &str) -> FsResult<()> {
    if name.starts_with("user.") && name.len() > "user.".len() {
        Ok(())
    } else {
        Err(FsError::new(libc::EOPNOTSUPP))
    }
}

impl Fs {
    /// The metadata of `ino` as the mount shows it (a file open for writing: what its next
    /// upload carries).
    async fn current_meta(&self, ino: u64) -> FsResult<Meta> {
        if let Some(ws) = self.write_state(ino) {
            return Ok(ws.meta());
        }
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        if node.fresh && node.found.meta_known {
            return Ok(node.found.meta);
        }
        self.getattr(ino).await?;
        let node = self.inodes.get(ino).ok_or(FsError::new(libc::ENOENT))?;
        Ok(node.found.meta)
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        check_namespace(name)?;
        let meta = self.current_meta(ino).await?;
        meta.xattrs
            .get(name)
            .cloned()
            .ok_or(FsError::new(libc::ENODATA))
    }

    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        let meta = self.current_meta(ino).await?;
        Ok(meta.xattrs.into_keys().collect())
    }

    /// `flags`: `XATTR_CREATE` (fail with `EEXIST` if set) or `XATTR_REPLACE` (fail with
    /// `ENODATA` if not).
    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> FsResult<()> {
        check_namespace(name)?;
        self.writable()?;
        if !storable_xattr_name(name) {
            return Err(FsError::new(libc::EINVAL));
        }
        let alone = Meta {
            xattrs: [(name.to_owned(), value.to_vec())].into(),
            ..Meta::default()
        };
        if alone.stored_size() > MAX_USER_META_BYTES {
            return Err(FsError::new(libc::E2BIG));
        }
        self.change_meta(ino, |meta, _| {
            let exists = meta.xattrs.contains_key(name);
            if flags & XATTR_CREATE != 0 && exists {
                return Err(FsError::new(libc::EEXIST));
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(FsError::new(libc::ENODATA));
            }
            meta.xattrs.insert(name.to_owned(), value.to_vec());
            meta.ctime = Some(std::time::SystemTime::now());
            Ok(())
        })
        .await
        .map(drop)
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        check_namespace(name)?;
        self.writable()?;
        self.change_meta(ino, |meta, _| {
            meta.xattrs
                .remove(name)
                .ok_or(FsError::new(libc::ENODATA))?;
            meta.ctime = Some(std::time::SystemTime::now());
            Ok(())
        })
        .await
        .map(drop)
    }
}
