//! Running cognifs as a service: the systemd unit passes `systemd-analyze verify`,
//! `mount --foreground` speaks sd_notify (READY=1 only once the mount is in the kernel's
//! table, STOPPING=1 on SIGTERM), signed out it exits 3, `service install` writes and enables
//! the unit, and the mount(8) helper (`mount.fuse.cognifs`) mounts an fstab-style source.
//! Against devstack in-process; every child process has a deadline.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

use support::cli::*;

/// The datagrams a Type=notify service would send, each with whether the mount was in
/// /proc/self/mountinfo at the moment it arrived.
fn recv_until(
    socket: &UnixDatagram,
    child: &mut Child,
    mountpoint: &Path,
    want: &str,
    limit: Duration,
) -> Vec<(String, bool)> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let mounted = is_mounted(mountpoint);
                let msg = text(&buf[..n]);
                let done = msg.lines().any(|l| l == want);
                got.push((msg, mounted));
                if done {
                    return got;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("notify socket: {e}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("cognifs exited ({status}) before sending {want}; got {got:?}");
        }
        assert!(
            Instant::now() < deadline,
            "no {want} within {limit:?}; got {got:?}"
        );
    }
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: install the Debian package `systemd` (apt-get install systemd)"
    );
    // verify wants an instance name and an ExecStart binary that exists: a copy of the unit
    // pointing at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("cognifs@default.service");
    std::fs::write(&unit, cognifs::service::unit_text(Path::new(EXE))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_ok(&out, "systemd-analyze verify");
    assert!(
        !stderr.contains("cognifs@"),
        "systemd-analyze complained about the unit: {stderr}"
    );
}

#[test]
fn foreground_mount_notifies_ready_only_when_mounted_and_stopping_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = Env::new(Some(&running));
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    let mnt = tempfile::tempdir().unwrap();
    let mountpoint = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(mountpoint.clone());

    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut child = ChildGuard(Some(
        env.command(&["mount", "--foreground", mountpoint.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let proc = child.0.as_mut().unwrap();
    let got = recv_until(
        &socket,
        proc,
        &mountpoint,
        "READY=1",
        Duration::from_secs(60),
    );
    let (ready, mounted) = got.last().unwrap();
    assert!(
        *mounted,
        "READY=1 arrived before the mount was listed: {got:?}"
    );
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS with READY: {ready:?}"));
    assert!(
        status.contains("mounted s3://cognifs/") && status.contains("credentials renew"),
        "{status}"
    );
    assert!(!status.contains("eyJ") && !status.contains("ASIA"));

    // SIGTERM is how systemd stops the unit: STOPPING=1, then a clean unmount and exit 0.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(proc.id() as i32, libc::SIGTERM) }, 0);
    recv_until(
        &socket,
        proc,
        &mountpoint,
        "STOPPING=1",
        Duration::from_secs(30),
    );
    let out = wait_with_deadline(
        child.0.take().unwrap(),
        Duration::from_secs(60),
        "mount --foreground after SIGTERM",
    );
    assert_ok(&out, "mount --foreground");
    assert!(!is_mounted(&mountpoint));
    rt.block_on(running.shutdown());
}

#[test]
fn signed_out_service_exits_3_and_says_login_and_mounts_at_the_default_dir() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt.block_on(start());
    let env = Env::new(Some(&running));
    // The HOME every child of `env` gets (made by Env::new).
    let home = env.dir.path().join("home");
    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // No DIR and no mount_point in the profile: the unit's case, which mounts at ~/cloud.
    let mut cmd = env.command(&["mount", "--foreground"]);
    cmd.env("HOME", &home).env("NOTIFY_SOCKET", &socket_path);
    let out = run_with_deadline(cmd, Duration::from_secs(60), "signed-out mount");
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cognifs login"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        home.join("cloud").is_dir(),
        "the default ~/cloud is created"
    );
    assert!(!is_mounted(&home.join("cloud")));
    // Everything it sent is queued by now (it has exited): read all of it.
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => assert!(
                !text(&buf[..n]).lines().any(|l| l == "READY=1"),
                "signed out yet READY: {}",
                text(&buf[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    rt.block_on(running.shutdown());
}

#[test]
fn service_install_writes_the_unit_and_enables_the_profile() {
    let env = Env::new(None);
    std::fs::write(
        &env.config,
        "[work]\nregion = \"eu-west-1\"\nuser_pool_id = \"eu-west-1_AbCdEfGhI\"\n\
         client_id = \"3n4b5urk1ft4fl3mg5e62d9ado\"\n\
         domain = \"https://x.auth.eu-west-1.amazoncognito.com\"\n\
         identity_pool_id = \"eu-west-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c\"\n\
         bucket = \"acme-files\"\nmount_point = \"/srv/cloud\"\n",
    )
    .unwrap();
    let xdg = env.dir.path().join("xdg");
    let bin = env.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = env.dir.path().join("systemctl.log");
    // A stand-in systemctl that records its arguments.
    let fake = bin.join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = env.command(&["--profile", "work", "service", "install"]);
    cmd.env("XDG_CONFIG_HOME", &xdg).env("PATH", &bin);
    let out = run_with_deadline(cmd, Duration::from_secs(30), "service install");
    assert_ok(&out, "service install");
    let unit = std::fs::read_to_string(xdg.join("systemd/user/cognifs@.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={EXE} --profile %i mount --foreground")),
        "{unit}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "--user daemon-reload\n--user enable --now cognifs@work.service\n"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("cognifs@work.service is enabled") && stdout.contains("/srv/cloud"),
        "{stdout}"
    );
    assert!(stdout.contains("not signed in"), "{stdout}");

    // Without systemctl: the unit is still written, and the commands are printed.
    let empty = env.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut cmd = env.command(&["--profile", "work", "service", "install"]);
    cmd.env("XDG_CONFIG_HOME", &xdg).env("PATH", &empty);
    let out = run_with_deadline(cmd, Duration::from_secs(30), "service install");
    assert_ok(&out, "service install without systemctl");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("systemctl --user daemon-reload")
            && stdout.contains("systemctl --user enable --now cognifs@work.service"),
        "{stdout}"
    );
}

#[test]
fn fstab_helper_mounts_a_profile() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = reserved_port();
    let running = rt.block_on(start_with(|o| o.callback_port = port));
    let env = Env::new(Some(&running));
    login_by_paste(&env, "alice", "alice-pass", rt.handle());
    let identity = rt.block_on(identity_of(&running, "alice", "alice-pass"));
    rt.block_on(put(
        &admin_s3(&running),
        "cognifs",
        &format!("{identity}/fstab.txt"),
        b"via fstab".to_vec(),
    ));
    let mnt = tempfile::tempdir().unwrap();
    let mountpoint = mnt.path().canonicalize().unwrap();
    let _guard = PathGuard(mountpoint.clone());

    // What mount(8) runs for `cognifs#default DIR fuse.cognifs _netdev,user,noauto 0 0`.
    let helper = env.dir.path().join("mount.fuse.cognifs");
    std::os::unix::fs::symlink(EXE, &helper).unwrap();
    let cmd = env.command_of(
        &helper,
        &[
            "cognifs#default",
            mountpoint.to_str().unwrap(),
            "-o",
            "rw,_netdev,user,noauto,nofail,x-systemd.automount,cache_size=64MiB",
        ],
    );
    let out = run_with_deadline(cmd, Duration::from_secs(60), "mount.fuse.cognifs");
    assert_ok(&out, "mount.fuse.cognifs");
    assert!(is_mounted(&mountpoint));
    let file = mountpoint.join("fstab.txt");
    assert_eq!(
        within(Duration::from_secs(30), "read fstab.txt", move || {
            std::fs::read(file).unwrap()
        }),
        b"via fstab"
    );

    let out = run_with_deadline(
        env.command(&["unmount", mountpoint.to_str().unwrap()]),
        Duration::from_secs(60),
        "unmount",
    );
    assert_ok(&out, "unmount");
    assert!(!is_mounted(&mountpoint));

    // An option cognifs does not know is refused, not silently dropped.
    let cmd = env.command_of(
        &helper,
        &[
            "cognifs#default",
            mountpoint.to_str().unwrap(),
            "-o",
            "cache_sise=1",
        ],
    );
    let out = run_with_deadline(cmd, Duration::from_secs(30), "mount.fuse.cognifs");
    assert_eq!(out.status.code(), Some(1), "an unknown option");
    assert!(
        text(&out.stderr).contains("cache_sise"),
        "{}",
        text(&out.stderr)
    );
    assert!(!is_mounted(&mountpoint));
    rt.block_on(running.shutdown());
}

#[test]
fn stack_output_is_a_working_profile() {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/cloudformation.yaml"
    ))
    .unwrap();
    // The CognifsProfile output is a folded (`>-`) block: its lines joined by spaces.
    let block: Vec<&str> = template
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("CognifsProfile:"))
        .skip_while(|l| !l.contains("!Sub >-"))
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .map(str::trim)
        .collect();
    assert!(!block.is_empty(), "no CognifsProfile output");
    let line = block
        .join(" ")
        .replace("${AWS::Region}", "eu-west-1")
        .replace("${UserPool}", "eu-west-1_AbCdEfGhI")
        .replace("${AppClient}", "3n4b5urk1ft4fl3mg5e62d9ado")
        .replace("${UserPoolDomain}", "acme-files")
        .replace(
            "${IdentityPool}",
            "eu-west-1:7f3c2a9e-1b4d-4c8e-9a2f-5d6e7f8a9b0c",
        )
        .replace("${Bucket}", "cognifs-bucket-1x2y3z")
        .replace("${CallbackPort}", "53682");
    assert!(!line.contains("${"), "unsubstituted: {line}");
    let env = Env::new(None);
    std::fs::write(&env.config, format!("{line}\n")).unwrap();
    let out = run_with_deadline(
        env.command(&["config", "show"]),
        Duration::from_secs(30),
        "config show",
    );
    assert_ok(&out, "config show");
    let shown = text(&out.stdout);
    assert!(
        shown.contains("https://acme-files.auth.eu-west-1.amazoncognito.com")
            && shown.contains("cognifs-bucket-1x2y3z")
            && shown.contains("http://localhost:53682/callback"),
        "{shown}"
    );
}
