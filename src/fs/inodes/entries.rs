//! What a name is (`Kind`), what S3 says about it (`Found`), what the kernel is shown
//! (`Attr`, `DirEntry`), and the mapping rules from a listing to names.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::super::meta::Meta;
use crate::store::ListPage;

/// What a name is. Everything but a directory is one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    /// The kind an object's stored `st_mode` says (regular when it says nothing usable).
    pub fn of_object(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            _ => Kind::File,
        }
    }

    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDevice => libc::S_IFCHR,
            Kind::BlockDevice => libc::S_IFBLK,
        }
    }
}

/// What S3 says about one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    /// The stored metadata (of the marker, for a directory).
    pub meta: Meta,
    /// `meta` (and so `kind`, for an object) is what S3 holds, from a HEAD or this mount's
    /// own write; false for what a listing says, which carries no user metadata.
    pub meta_known: bool,
}

impl Found {
    /// A directory as a listing shows it: its marker's metadata not read yet.
    pub fn dir() -> Self {
        Found {
            kind: Kind::Dir,
            size: 0,
            etag: String::new(),
            last_modified: SystemTime::UNIX_EPOCH,
            meta: Meta::default(),
            meta_known: false,
        }
    }

    /// A directory whose marker was read (`None`: it has no marker).
    pub fn dir_with(marker: Option<&crate::store::ObjectInfo>) -> Self {
        Found {
            meta: marker
                .and_then(|m| m.meta.as_ref())
                .map(Meta::from_user)
                .unwrap_or_default(),
            meta_known: true,
            last_modified: marker.map_or(SystemTime::UNIX_EPOCH, |m| m.last_modified),
            // The marker's version, which a rewrite of it names (empty: no marker).
            etag: marker.map(|m| m.etag.clone()).unwrap_or_default(),
            ..Found::dir()
        }
    }

    /// What a HEAD (metadata known) or a listing (`meta: None`) says about an object.
    pub fn object(info: &crate::store::ObjectInfo) -> Self {
        let meta = info.meta.as_ref().map(Meta::from_user);
        Found {
            kind: meta
                .as_ref()
                .map_or(Kind::File, |m| Kind::of_object(m.file_type())),
            size: info.size,
            etag: info.etag.clone(),
            last_modified: info.last_modified,
            meta_known: meta.is_some(),
            meta: meta.unwrap_or_default(),
        }
    }

    /// An object this mount is about to write (or just wrote) with `meta`.
    pub fn written(kind: Kind, size: u64, etag: String, meta: Meta) -> Self {
        Found {
            kind,
            size,
            etag,
            last_modified: SystemTime::now(),
            meta,
            meta_known: true,
        }
    }
}

/// The owner and modes shown where the metadata stores none (the mount's options).
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
}

/// Attributes as the kernel is told them: stored values, else the mount's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits, setuid/setgid/sticky included.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub atime: SystemTime,
    pub ctime: SystemTime,
    pub rdev: u32,
    /// Names the entry has: 0 once it was unlinked (while still open).
    pub nlink: u32,
    /// False when the attributes come from a listing and may not be what S3 stores.
    pub meta_known: bool,
}

/// A snapshot of one node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub ino: u64,
    pub parent: u64,
    pub kind: Kind,
    pub found: Found,
    /// Relative to the mount prefix: `""` for the root, `a/b/` for a directory, `a/b` for a file.
    pub rel: String,
    pub etag: String,
    pub attr: Attr,
    /// Within the metadata TTL.
    pub fresh: bool,
}

/// One visible entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    pub attr: Attr,
}

/// A name the kernel can be given: not empty, not `.`/`..`, no `/` or NUL, ≤ 255 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\0')
}

/// Applies the mapping rules to the pages of one directory listing: names that cannot be
/// file names are hidden (never mangled), a directory hides an object of the same name,
/// and the result is sorted by name (bytewise).
pub fn build_listing(pages: &[ListPage]) -> Vec<(String, Found)> {
    let mut out: BTreeMap<String, Found> = BTreeMap::new();
    for page in pages {
        for d in &page.dirs {
            if valid_name(d) {
                out.insert(d.clone(), Found::dir());
            }
        }
    }
    for page in pages {
        for f in &page.files {
            if valid_name(&f.name) && !out.contains_key(&f.name) {
                out.insert(f.name.clone(), Found::object(f));
            }
        }
    }
    out.into_iter().collect()
}
