//! Conversions between the core's types and fuser's: attributes, kinds, names, times, and
//! the one place a failed request becomes an errno and a log line.

use std::ffi::OsStr;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyXattr, Request, TimeOrNow};

use crate::fs::inodes::{Attr, Kind};
use crate::fs::{Caller, Fs, FsError, MountOptions};

/// Answers a failed request: the errno for the kernel, and one log line for a failure
/// (S3, credentials, the disk) with the operation and the path. Ordinary answers (ENOENT,
/// EEXIST, ENOTEMPTY…) go to the debug log only.
pub(super) fn failed(fs: &Fs, op: &'static str, ino: u64, name: Option<&str>, e: FsError) -> Errno {
    let dir = fs.path_of(ino).unwrap_or_else(|| format!("<inode {ino}>"));
    let path = match name {
        Some(n) => format!(
            "{dir}{}{n}",
            if dir.is_empty() || dir.ends_with('/') {
                ""
            } else {
                "/"
            }
        ),
        None => dir,
    };
    if e.is_unreachable() && op == "read" {
        // Offline: the file was named once, by the core, for its whole outage.
        tracing::debug!(op, path = %path, error = %e, "request failed");
    } else if e.is_unreachable() {
        // Offline: an expected refusal, not a fault.
        tracing::info!(op, path = %path, error = %e, "request needs S3, which does not answer");
    } else if e.is_failure() {
        tracing::warn!(op, path = %path, error = %e, "request failed");
    } else {
        tracing::debug!(op, path = %path, error = %e, "request answered with an error");
    }
    Errno::from_i32(e.errno)
}

pub(super) fn file_attr(a: &Attr, o: &MountOptions) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: o.block_size.min(u64::from(u32::MAX)) as u32,
        flags: 0,
    }
}

pub(super) fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

/// The owner of what a request creates.
pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// Answers an xattr read: the size when asked for it (`size` 0), else the bytes, or
/// `ERANGE` when they do not fit.
pub(super) fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() <= size as usize {
        reply.data(data);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// A name as S3 can store it (UTF-8), or the errno for one it cannot.
pub(super) fn utf8(name: &OsStr) -> Result<String, Errno> {
    if name.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    name.to_str().map(str::to_owned).ok_or(Errno::EINVAL)
}

pub(super) fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}
