//! Snapshots of a directory tree as `ls -l`, `stat`, `readlink` and `getfattr` show it, for
//! comparing a tree through different mounts.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn check(rc: i32, what: &str) {
    assert_eq!(rc, 0, "{what}: {}", std::io::Error::last_os_error());
}

/// The user xattrs of `p` (not following a symlink).
pub fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cstr(p);
    let mut names = vec![0u8; 4096];
    // SAFETY: valid path and buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| n.starts_with(b"user.")) {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 4096];
        // SAFETY: as above.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(n >= 0, "lgetxattr {}", p.display());
        value.truncate(n as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    out
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    assert_eq!(
        set_xattr_errno(p, name, value),
        0,
        "lsetxattr {} {name}",
        p.display()
    );
}

/// lsetxattr: 0, or its errno.
pub fn set_xattr_errno(p: &Path, name: &str, value: &[u8]) -> i32 {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    // SAFETY: valid path, name and value.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

/// Sets both times (not following a symlink), with nanoseconds.
pub fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let c = cstr(p);
    // SAFETY: valid path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(rc, "utimensat");
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    // SAFETY: valid path.
    check(
        unsafe { libc::lchown(cstr(p).as_ptr(), uid, gid) },
        "lchown",
    );
}

pub fn mknod(p: &Path, mode: u32, dev: libc::dev_t) {
    // SAFETY: valid path.
    check(unsafe { libc::mknod(cstr(p).as_ptr(), mode, dev) }, "mknod");
}

/// Everything `ls -l`, `stat` and `getfattr` would show of one entry (atime aside: reading
/// the source moves it).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub rdev: u64,
    pub target: Option<Vec<u8>>,
    pub digest: Option<u64>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// FNV-1a of some bytes: comparable contents that print short.
pub fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Every entry below `root` (and `root` itself, as ""), not following symlinks.
pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        let entry = Entry {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: if ft.is_dir() { 0 } else { md.size() },
            mtime: (md.mtime(), md.mtime_nsec()),
            rdev: md.rdev(),
            target: ft.is_symlink().then(|| {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            digest: ft.is_file().then(|| digest(&std::fs::read(&p).unwrap())),
            xattrs: if ft.is_file() || ft.is_dir() {
                xattrs(&p)
            } else {
                BTreeMap::new()
            },
        };
        out.insert(rel, entry);
    }
    out
}

pub fn assert_same_tree(want: &BTreeMap<String, Entry>, got: &BTreeMap<String, Entry>, when: &str) {
    let names = |m: &BTreeMap<String, Entry>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{when}: names");
    for (rel, w) in want {
        assert_eq!(&got[rel], w, "{when}: /{rel}");
    }
}
