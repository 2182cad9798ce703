//! End-to-end: a whole directory tree — symlinks, owners, modes with setuid/setgid/sticky,
//! fifos, sockets, devices, directory attributes, nanosecond times, extended attributes —
//! through real FUSE mounts against devstack: `rsync -aX` into the mount, a remount, and a
//! comparison of every attribute; several local users sharing an `allow_other` mount.
//! Needs /dev/fuse and root (as on the CI machines), and rsync.

mod support;

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cognifs::fs::MountOptions;
use support::tree::*;
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

/// A tree holding every kind of entry and attribute a local disk keeps.
fn build_tree(root: &Path) {
    let at = |rel: &str| root.join(rel);
    for d in ["private", "shared", "tmp", "deep/er/est", "empty"] {
        std::fs::create_dir_all(at(d)).unwrap();
    }
    std::fs::write(at("top.txt"), "top\n").unwrap();
    std::fs::write(at("private/secret"), "s3cr3t").unwrap();
    std::fs::write(at("shared/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(at("deep/er/est/data.bin"), pseudo_random(200_000, 7)).unwrap();
    std::fs::write(at("tmp/empty-file"), "").unwrap();
    let modes = [
        ("top.txt", 0o644),
        ("private/secret", 0o600),
        ("shared/run.sh", 0o4755),
        ("private", 0o700),
        ("shared", 0o2775),
        ("tmp", 0o1777),
        ("empty", 0o750),
    ];
    let links: [(&str, &str); 6] = [
        ("link-rel", "top.txt"),
        ("link-abs", "/etc/hostname"),
        ("dangling", "no/such/target"),
        ("shared/up", ".."),
        ("loop-a", "loop-b"),
        ("loop-b", "loop-a"),
    ];
    for (l, t) in links {
        std::os::unix::fs::symlink(t, at(l)).unwrap();
    }
    mknod(&at("shared/pipe"), libc::S_IFIFO | 0o640, 0);
    mknod(&at("dev-null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    mknod(&at("dev-loop"), libc::S_IFBLK | 0o660, libc::makedev(7, 0));
    drop(std::os::unix::net::UnixListener::bind(at("sock")).unwrap());
    set_xattr(&at("top.txt"), "user.comment", b"hello");
    set_xattr(&at("top.txt"), "user.bin", &[0, 1, 2, 255]);
    set_xattr(&at("shared"), "user.project", b"cognifs");
    lchown(&at("top.txt"), 1234, 5678);
    lchown(&at("shared"), 0, 4000);
    lchown(&at("shared/run.sh"), 1234, 4000);
    lchown(&at("link-rel"), 2222, 3333);
    lchown(&at("sock"), 1234, 1234);
    for (rel, mode) in modes {
        std::fs::set_permissions(at(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // Times last, deepest first, as `cp -a` leaves them: directories after their contents.
    let mut all: Vec<String> = snapshot(root).into_keys().collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.matches('/').count() + usize::from(!r.is_empty())));
    for (i, rel) in all.iter().enumerate() {
        let secs = 1_600_000_000 + i as i64 * 1000;
        set_times(&at(rel), (secs + 5, 0), (secs, 123_456_789 + i as i64));
    }
}

/// `rsync -aX --numeric-ids` (and `-n --itemize-changes`: what it would change).
async fn rsync(src: &Path, dst: &Path, dry_run: bool) -> Vec<String> {
    let (s, d) = (format!("{}/", src.display()), format!("{}/", dst.display()));
    let out = blocking_for(Duration::from_secs(120), move || {
        let mut cmd = Command::new("rsync");
        cmd.args(["-aX", "--numeric-ids", "--itemize-changes"]);
        if dry_run {
            cmd.arg("-n");
        }
        cmd.args([&s, &d]).output().unwrap()
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rsync failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_tree_round_trips_through_rsync_and_a_remount() {
    require_rsync();
    with_timeout(300, async {
        let running = start().await;
        let spool = tempfile::tempdir().unwrap();
        let opts = || spool_opts(spool.path());
        let src = tempfile::tempdir().unwrap();
        let root = src.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        let r = root.clone();
        blocking(move || build_tree(&r)).await;
        let r = root.clone();
        let want = blocking(move || snapshot(&r)).await;

        let mut m = mount_user(&running, ALICE.0, ALICE.1, opts()).await;
        let dst = m.join("tree");
        let sent = rsync(&root, &dst, false).await;
        assert!(
            sent.len() > want.len(),
            "rsync created every entry: {sent:?}"
        );
        let d = dst.clone();
        assert_same_tree(&want, &blocking(move || snapshot(&d)).await, "after rsync");
        assert_eq!(
            rsync(&root, &dst, true).await,
            Vec::<String>::new(),
            "second rsync"
        );

        m.unmount().unwrap();
        drop(m);
        let m = mount_user(&running, ALICE.0, ALICE.1, opts()).await;
        let dst = m.join("tree");
        let d = dst.clone();
        assert_same_tree(
            &want,
            &blocking(move || snapshot(&d)).await,
            "after a remount",
        );
        assert_eq!(
            rsync(&root, &dst, true).await,
            Vec::<String>::new(),
            "rsync after a remount"
        );

        // Loops and O_NOFOLLOW behave as on a local disk.
        let d = dst.clone();
        blocking(move || {
            let err = std::fs::read(d.join("loop-a")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
            let c = cstr(&d.join("link-rel"));
            // SAFETY: valid path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW) };
            assert_eq!(fd, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ELOOP)
            );
            assert_eq!(std::fs::read(d.join("link-rel")).unwrap(), b"top\n");
            // Hard links cannot be stored: one object cannot live under two keys.
            let err = std::fs::hard_link(d.join("top.txt"), d.join("hard")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM));
            // An explicit atime is kept; reading does not move it.
            set_times(&d.join("top.txt"), (1_700_000_000, 42), (1_600_000_000, 0));
            std::fs::read(d.join("top.txt")).unwrap();
            let md = std::fs::symlink_metadata(d.join("top.txt")).unwrap();
            assert_eq!((md.atime(), md.atime_nsec()), (1_700_000_000, 42));
            // Only user.* attributes: others are not supported.
            let (c, n) = (cstr(&d.join("top.txt")), CString::new("trusted.x").unwrap());
            // SAFETY: valid path and name.
            let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
            assert_eq!(rc, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EOPNOTSUPP)
            );
            // S3 keeps 2 KiB of metadata per object: a bigger value is refused, not dropped.
            let (c, n) = (cstr(&d.join("top.txt")), CString::new("user.big").unwrap());
            let big = vec![b'x'; 4000];
            // SAFETY: valid path, name and value.
            let rc = unsafe {
                libc::lsetxattr(c.as_ptr(), n.as_ptr(), big.as_ptr().cast(), big.len(), 0)
            };
            assert_eq!(rc, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::E2BIG)
            );
            assert_eq!(xattrs(&d.join("top.txt")).len(), 2);
            // A unix socket can be bound inside the mount.
            let l = std::os::unix::net::UnixListener::bind(d.join("live.sock")).unwrap();
            assert!(
                std::fs::symlink_metadata(d.join("live.sock"))
                    .unwrap()
                    .file_type()
                    .is_socket_like()
            );
            drop(l);
        })
        .await;
        drop(m);
        running.shutdown().await;
    })
    .await;
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_socket()
    }
}

/// Runs `script` with `sh -c` in `dir` as `uid:gid` with `groups`; returns whether it
/// succeeded and its stderr.
async fn as_user(dir: &Path, uid: u32, gid: u32, groups: &str, script: &str) -> (bool, String) {
    let (dir, script) = (dir.to_path_buf(), script.to_owned());
    let groups = groups.to_owned();
    let out = blocking_for(Duration::from_secs(30), move || {
        let mut cmd = Command::new("setpriv");
        cmd.args([format!("--reuid={uid}"), format!("--regid={gid}")]);
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            cmd.arg(format!("--groups={groups}"));
        }
        cmd.args(["sh", "-c", &script])
            .current_dir(&dir)
            .output()
            .unwrap()
    })
    .await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One system call as another user.
enum AsUser {
    Unlink(CString),
    /// open(O_WRONLY | O_APPEND).
    Append(CString),
    /// chown(path, uid, -1).
    Chown(CString, u32),
}

/// Makes `call` as `uid:gid` with supplementary groups `groups`, in a forked child that
/// changes its ids and makes that one call (nothing but async-signal-safe calls after the
/// fork); returns 0 or the call's errno, exactly.
async fn errno_as(uid: u32, gid: u32, groups: &[u32], call: AsUser) -> i32 {
    let groups = groups.to_vec();
    blocking_for(Duration::from_secs(30), move || {
        // SAFETY: the child makes only raw system calls (no allocation, no locks) on data
        // prepared before the fork, then _exits; the parent waits for it.
        unsafe {
            match libc::fork() {
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                0 => {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setresgid(gid, gid, gid) != 0
                        || libc::setresuid(uid, uid, uid) != 0
                    {
                        libc::_exit(255);
                    }
                    let rc = match &call {
                        AsUser::Unlink(p) => libc::unlink(p.as_ptr()),
                        AsUser::Append(p) => {
                            libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_APPEND)
                        }
                        AsUser::Chown(p, owner) => libc::chown(p.as_ptr(), *owner, u32::MAX),
                    };
                    libc::_exit(if rc >= 0 {
                        0
                    } else {
                        *libc::__errno_location()
                    });
                }
                child => {
                    let mut status = 0;
                    assert_eq!(libc::waitpid(child, &mut status, 0), child);
                    assert!(libc::WIFEXITED(status), "child status {status:#x}");
                    let code = libc::WEXITSTATUS(status);
                    assert_ne!(code, 255, "could not become {uid}:{gid}");
                    code
                }
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_users_share_an_allow_other_mount_as_a_disk() {
    with_timeout(180, async {
        let running = start().await;
        let spool = tempfile::tempdir().unwrap();
        let opts = MountOptions {
            allow_other: true,
            ..spool_opts(spool.path())
        };
        let m = mount_user(&running, ALICE.0, ALICE.1, opts).await;
        let root = m.path().to_path_buf();
        let r = root.clone();
        blocking(move || {
            std::fs::create_dir(r.join("tmp")).unwrap();
            std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777))
                .unwrap();
            std::fs::create_dir(r.join("team")).unwrap();
            lchown(&r.join("team"), 0, 4000);
            std::fs::set_permissions(r.join("team"), std::fs::Permissions::from_mode(0o2775))
                .unwrap();
        })
        .await;

        // Their own files, in a sticky directory.
        let (ok, err) = as_user(
            &root,
            1001,
            1001,
            "",
            "echo mine > tmp/a && chmod 644 tmp/a",
        )
        .await;
        assert!(ok, "{err}");
        let stat = |rel: &str| {
            let p = root.join(rel);
            blocking_for(Duration::from_secs(30), move || {
                std::fs::metadata(p).unwrap()
            })
        };
        let md = stat("tmp/a").await;
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1001, 1001, 0o644)
        );
        let a = cstr(&root.join("tmp/a"));
        assert_eq!(
            errno_as(1002, 1002, &[], AsUser::Unlink(a.clone())).await,
            libc::EPERM,
            "another user removed a file from a sticky directory"
        );
        assert_eq!(
            errno_as(1002, 1002, &[], AsUser::Append(a.clone())).await,
            libc::EACCES,
            "another user wrote to a 0644 file"
        );
        assert_eq!(
            errno_as(1001, 1001, &[], AsUser::Chown(a, 1002)).await,
            libc::EPERM,
            "a user gave a file away"
        );
        assert_eq!(stat("tmp/a").await.uid(), 1001, "refused, so unchanged");
        let (ok, err) = as_user(&root, 1001, 1001, "4000", "chgrp 4000 tmp/a").await;
        assert!(
            ok,
            "an owner may change the group to one of their own: {err}"
        );
        assert_eq!(stat("tmp/a").await.gid(), 4000);
        let (ok, err) = as_user(&root, 1001, 1001, "", "rm tmp/a").await;
        assert!(ok, "{err}");

        // A setgid directory passes its group on, and its setgid bit to new directories.
        let (ok, err) = as_user(&root, 1001, 1001, "4000", "touch team/f && mkdir team/sub").await;
        assert!(ok, "{err}");
        let f = stat("team/f").await;
        assert_eq!((f.uid(), f.gid()), (1001, 4000));
        let sub = stat("team/sub").await;
        assert_eq!(sub.gid(), 4000);
        assert_ne!(sub.mode() & libc::S_ISGID, 0);

        // Writing to a setuid file as someone else clears the bit.
        let (ok, err) = as_user(&root, 1001, 1001, "", "echo x > tmp/s && chmod 4777 tmp/s").await;
        assert!(ok, "{err}");
        let (ok, err) = as_user(&root, 1002, 1002, "", "echo y >> tmp/s").await;
        assert!(ok, "{err}");
        assert_eq!(stat("tmp/s").await.mode() & libc::S_ISUID, 0);
        drop(m);
        running.shutdown().await;
    })
    .await;
}
