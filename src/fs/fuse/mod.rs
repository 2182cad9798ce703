//! Links fuser method calls into the filesystem core ([`Fs`]).
//!
//! Every callback that may touch the network moves its arguments and reply object into a
//! task that replies. The task runs first on the FUSE thread itself, until it would wait:
//! what needs no network (answers from the caches, a write into the spool, a release)
//! replies there, with no hand-off. A task that waits goes on to the tokio runtime, and the
//! FUSE thread returns to the kernel's queue. Callbacks that only touch memory (forget,
//! releasedir, statfs, the refusals) answer inline.
//!
//! A panic in a callback — on the FUSE thread or in its task — fails that call alone: it
//! is caught ([`FuseFs::run`], [`FuseFs::inline`]), logged once with the operation and the
//! path, and the reply, dropped unanswered, answers `EIO` (fuser's `Drop`), so the kernel
//! gets exactly one answer and the thread goes on serving.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

mod convert;
mod dispatch;
mod readahead;
mod session;

pub(super) use session::spawn;

use super::SetAttr;
use convert::{caller, failed, file_attr, file_type, reply_xattr, time, utf8};
use dispatch::{FuseFs, call};

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        // Ask for everything; the kernel answers with the largest it grants.
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        // More async reads in flight per mount: many readers, each with kernel readahead.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_READ);
        // readdirplus in "auto" mode: for the first batch, and after it only while the
        // program stats what it reads (`ls -l`). Always readdirplus would spare `du` a
        // LOOKUP per entry past the first batch (`du -s` of 100,000 entries: 18.6 s ->
        // 13.9 s), but the kernel would then hold a reference on every name a `find` over a
        // huge tree passes, and the inode table, which follows the kernel's, would grow with
        // every one of them instead of staying bounded.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // O_TRUNC arrives with open, so truncating opens never download the old contents.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().map(str::to_owned) else {
            // S3 keys are UTF-8; a non-UTF-8 name cannot exist.
            reply.error(Errno::ENOENT);
            return;
        };
        let fs = self.fs.clone();
        let ttl = self.ttl();
        self.run(call("lookup", parent, Some(&name)), async move {
            match fs.lookup(parent.0, &name).await {
                Ok(a) => reply.entry(&ttl, &file_attr(&a, fs.options()), Generation(0)),
                Err(e) => reply.error(failed(&fs, "lookup", parent.0, Some(&name), e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inline(call("forget", ino, None), || self.fs.forget(ino.0, nlookup));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        let ttl = self.ttl();
        self.run(call("getattr", ino, None), async move {
            match fs.getattr(ino.0).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a, fs.options())),
                Err(e) => reply.error(failed(&fs, "getattr", ino.0, None, e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        let trunc = flags.0 & libc::O_TRUNC != 0;
        let fs = self.fs.clone();
        self.run(call("open", ino, None), async move {
            match fs.open(ino.0, write, trunc).await {
                Ok(fh) => {
                    let flags = if fs.keeps_page_cache(fh) {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => reply.error(failed(&fs, "open", ino.0, None, e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.run(call("read", ino, None), async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(failed(&fs, "read", ino.0, None, e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        // flush already reported any upload error to close(); a failed last upload is
        // logged by the core itself (it says the data was dropped).
        self.run(call("release", _ino, None), async move {
            let _ = fs.release(fh.0).await;
            reply.ok();
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.empty_reply(
            reply,
            ("flush", ino, None),
            async move { fs.flush(fh.0).await },
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.empty_reply(
            reply,
            ("fsync", ino, None),
            async move { fs.flush(fh.0).await },
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.inline(call("opendir", ino, None), || {
            match self.fs.opendir(ino.0) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(failed(&self.fs, "opendir", ino.0, None, e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let fs = self.fs.clone();
        self.run(call("readdir", ino, None), async move {
            match fs.readdir_chunk(ino.0, fh.0, offset).await {
                Ok(entries) => {
                    // Offsets handed to the kernel are "index of the next entry".
                    for (i, e) in (offset as usize..).zip(entries.iter()) {
                        if reply.add(
                            INodeNo(e.ino),
                            i as u64 + 1,
                            file_type(e.attr.kind),
                            &e.name,
                        ) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(failed(&fs, "readdir", ino.0, None, e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let fs = self.fs.clone();
        let ttl = self.ttl();
        self.run(call("readdirplus", ino, None), async move {
            match fs.readdir_chunk(ino.0, fh.0, offset).await {
                Ok(entries) => {
                    for (i, e) in (offset as usize..).zip(entries.iter()) {
                        // An entry the kernel forgot since the listing was taken may be
                        // gone from the inode table: it is handed over under the number
                        // the table has for it now.
                        let ino_now = if i >= 2 {
                            fs.listed_ino(ino.0, e)
                        } else {
                            e.ino
                        };
                        let mut entry_attr = e.attr.clone();
                        entry_attr.ino = ino_now;
                        let attr = file_attr(&entry_attr, fs.options());
                        // Listing attributes lack the stored mtime/mode: not cached, so a
                        // stat asks again (lookup, which HEADs) instead of showing them.
                        // With --list-only they are what the mount shows: cached.
                        let ttl = if e.attr.meta_known || fs.options().list_only {
                            ttl
                        } else {
                            Duration::ZERO
                        };
                        if reply.add(
                            INodeNo(ino_now),
                            i as u64 + 1,
                            &e.name,
                            &ttl,
                            &attr,
                            Generation(0),
                        ) {
                            break;
                        }
                        // The kernel takes a reference on every entry it links, but never
                        // on `.` and `..`.
                        if i >= 2 {
                            fs.inodes().add_lookup(ino_now);
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(failed(&fs, "readdirplus", ino.0, None, e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.inline(call("releasedir", _ino, None), || {
            self.fs.releasedir(fh.0);
            reply.ok();
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // S3 has no capacity; report a large, stable, plausible size so tools that check
        // free space (cp, rsync, installers) proceed.
        self.inline(call("statfs", _ino, None), || {
            let bsize = self.fs.options().block_size.min(u64::from(u32::MAX)) as u32;
            let blocks = (1u64 << 50) / u64::from(bsize.max(1));
            reply.statfs(blocks, blocks, blocks, 1 << 40, 1 << 40, bsize, 255, bsize);
        });
    }

    /// No ioctl means anything on these files: the answer a disk file system gives for an
    /// ioctl it does not know. (fuser's default logs a warning per call, and every Python
    /// `open()` asks `isatty`, a TCGETS ioctl, of the file it opens.)
    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        self.inline(call("ioctl", ino, None), || reply.error(Errno::ENOTTY));
    }

    // Not offered, and answered here only so that fuser logs no warning: ENOSYS makes the
    // kernel stop asking and do without — SEEK_DATA/SEEK_HOLE by its generic rule (data up
    // to the end), a copy by reads and writes, EOPNOTSUPP for fallocate (glibc's
    // posix_fallocate then writes the zeros itself), the default poll mask.
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        self.inline(call("lseek", ino, None), || reply.error(Errno::ENOSYS));
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.inline(call("copy_file_range", ino_in, None), || {
            reply.error(Errno::ENOSYS)
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        self.inline(call("fallocate", ino, None), || reply.error(Errno::ENOSYS));
    }

    fn poll(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        self.inline(call("poll", ino, None), || reply.error(Errno::ENOSYS));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // An explicit atime (utimensat, touch -a) is stored; reads never move it (noatime).
        let req = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        let fs = self.fs.clone();
        let ttl = self.ttl();
        self.run(call("setattr", ino, None), async move {
            match fs.setattr(ino.0, fh.map(|f| f.0), req).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a, fs.options())),
                Err(e) => reply.error(failed(&fs, "setattr", ino.0, None, e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (fs, who) = (self.fs.clone(), caller(req));
        let ctx = ("mknod", parent, name.clone());
        self.entry_reply(reply, ctx, async move {
            fs.mknod(parent.0, &name, mode, rdev, who).await
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (fs, who) = (self.fs.clone(), caller(req));
        let ctx = ("mkdir", parent, name.clone());
        self.entry_reply(reply, ctx, async move {
            fs.mkdir(parent.0, &name, mode, who).await
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        let ctx = ("unlink", parent, Some(name.clone()));
        self.empty_reply(reply, ctx, async move { fs.unlink(parent.0, &name).await });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        let ctx = ("rmdir", parent, Some(name.clone()));
        self.empty_reply(reply, ctx, async move { fs.rmdir(parent.0, &name).await });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        use std::os::unix::ffi::OsStrExt;
        let name = match utf8(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let target = target.as_os_str().as_bytes().to_vec();
        let (fs, who) = (self.fs.clone(), caller(req));
        let ctx = ("symlink", parent, name.clone());
        self.entry_reply(reply, ctx, async move {
            fs.symlink(parent.0, &name, &target, who).await
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.run(call("readlink", ino, None), async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(failed(&fs, "readlink", ino.0, None, e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(Errno::ENODATA);
        };
        let fs = self.fs.clone();
        self.run(call("getxattr", ino, Some(&name)), async move {
            match fs.getxattr(ino.0, &name).await {
                Ok(value) => reply_xattr(reply, size, &value),
                Err(e) => reply.error(failed(&fs, "getxattr", ino.0, None, e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let fs = self.fs.clone();
        self.run(call("listxattr", ino, None), async move {
            match fs.listxattr(ino.0).await {
                Ok(names) => {
                    let mut list = Vec::new();
                    for n in names {
                        list.extend_from_slice(n.as_bytes());
                        list.push(0);
                    }
                    reply_xattr(reply, size, &list)
                }
                Err(e) => reply.error(failed(&fs, "listxattr", ino.0, None, e)),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(Errno::EINVAL);
        };
        let (fs, value) = (self.fs.clone(), value.to_vec());
        self.empty_reply(reply, ("setxattr", ino, None), async move {
            fs.setxattr(ino.0, &name, &value, flags).await
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(Errno::ENODATA);
        };
        let fs = self.fs.clone();
        self.empty_reply(reply, ("removexattr", ino, None), async move {
            fs.removexattr(ino.0, &name).await
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::EINVAL);
        }
        let (name, newname) = match (utf8(name), utf8(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let fs = self.fs.clone();
        let ctx = ("rename", parent, Some(name.clone()));
        self.empty_reply(reply, ctx, async move {
            fs.rename(parent.0, &name, newparent.0, &newname, noreplace)
                .await
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(if self.fs.options().read_only {
            Errno::EROFS
        } else {
            Errno::EPERM
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Straight from the kernel's buffer into the spool and the stream, here: no copy
        // first, no hand-off, unless a part of the streaming upload fills.
        let started = std::time::Instant::now();
        self.inline(call("write", ino, None), || {
            match self.fs.write_now(fh.0, offset, data) {
                Ok(None) => {
                    reply.written(data.len() as u32);
                    crate::metrics::latency::fuse().observe("write", started.elapsed());
                }
                Ok(Some(state)) => {
                    let data = bytes::Bytes::copy_from_slice(data);
                    self.run(call("write", ino, None), async move {
                        state.stream_write(offset, &data).await;
                        reply.written(data.len() as u32);
                    });
                }
                Err(e) => reply.error(failed(&self.fs, "write", ino.0, None, e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (fs, who) = (self.fs.clone(), caller(req));
        let ttl = self.ttl();
        self.run(call("create", parent, Some(&name)), async move {
            match fs.create(parent.0, &name, mode, who).await {
                Ok((a, fh)) => reply.created(
                    &ttl,
                    &file_attr(&a, fs.options()),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(failed(&fs, "create", parent.0, Some(&name), e)),
            }
        });
    }
}
