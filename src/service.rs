//! Running under systemd: the `sd_notify` protocol (a few datagrams over a Unix socket, so no
//! libsystemd and no extra crate) and installing the `cognifs@.service` user unit.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

/// The unit as shipped in `systemd/cognifs@.service`; its `ExecStart` names the cargo-install
/// location, which [`unit_text`] swaps for the real executable.
pub const UNIT_TEMPLATE: &str = include_str!("../systemd/cognifs@.service");
/// The file name of the template unit.
pub const UNIT_NAME: &str = "cognifs@.service";
const TEMPLATE_EXE: &str = "%h/.cargo/bin/cognifs";

/// Sends `state` (e.g. `READY=1`, `STATUS=…`, `STOPPING=1`, newline-separated) to the service
/// manager. `Ok(false)` when `$NOTIFY_SOCKET` is unset: not started by systemd with
/// `Type=notify`, nothing to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target
        .into_string()
        .map_err(|_| io::Error::other("$NOTIFY_SOCKET is not UTF-8"))?;
    notify_to(&target, state)?;
    Ok(true)
}

/// Sends `state` to the notify socket `target` (a path or `@abstract`).
fn notify_to(target: &str, state: &str) -> io::Result<()> {
    let addr = socket_addr(target)?;
    let socket = UnixDatagram::unbound()?;
    // Never wait on the service manager: a receiver that stopped reading would otherwise
    // hold the mount's main loop (and its unmount) on a full queue. A STATUS line lost
    // then is replaced by the next.
    socket.set_nonblocking(true)?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// `@name` is a Linux abstract socket; anything else must be an absolute path.
fn socket_addr(target: &str) -> io::Result<SocketAddr> {
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if target.starts_with('/') {
        SocketAddr::from_pathname(target)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("$NOTIFY_SOCKET {target:?} is neither a path nor @abstract"),
        ))
    }
}

/// Like [`notify`], but a failure is only logged: a broken notify socket must not take the
/// mount down (systemd would time the start out instead, which says what went wrong).
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// The unit text with `ExecStart` pointing at `exe` (systemd wants an absolute path, and the
/// binary may not live in ~/.cargo/bin).
pub fn unit_text(exe: &Path) -> String {
    UNIT_TEMPLATE.replace(TEMPLATE_EXE, &exe.display().to_string())
}

/// Profile names become unit instance names and reach `ExecStart` through `%i` (the instance
/// as written, unlike `%I`, which would turn `-` into `/`), so only characters valid in unit
/// names without escaping are accepted.
pub fn check_instance_name(profile: &str) -> Result<(), String> {
    crate::config::check_profile_name(profile).map_err(|why| {
        format!("profile name {profile:?} cannot be a systemd instance name: it {why}")
    })
}

/// `$XDG_CONFIG_HOME/systemd/user`, the per-user unit directory that needs no root.
pub fn user_unit_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from);
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".config"))
        .join("systemd/user")
}

/// What `cognifs service install` did, for printing.
#[derive(Debug, Default)]
pub struct InstallReport {
    pub unit_path: PathBuf,
    pub instance: String,
    /// `systemctl` commands that ran, each with "ok" or why it failed.
    pub ran: Vec<(String, Result<(), String>)>,
    /// Commands the user still has to run (when systemctl is missing or failed).
    pub todo: Vec<String>,
}

/// Writes the unit for `exe`, reloads the user manager and enables + starts
/// `cognifs@PROFILE`. A missing or failing `systemctl` is not an error: the report lists what
/// to run by hand.
pub fn install(exe: &Path, profile: &str) -> anyhow::Result<InstallReport> {
    check_instance_name(profile).map_err(anyhow::Error::msg)?;
    let dir = user_unit_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let unit_path = dir.join(UNIT_NAME);
    std::fs::write(&unit_path, unit_text(exe))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", unit_path.display()))?;
    let instance = format!("cognifs@{profile}.service");
    let commands: [Vec<&str>; 2] = [
        vec!["--user", "daemon-reload"],
        vec!["--user", "enable", "--now", &instance],
    ];
    let mut report = InstallReport {
        unit_path,
        instance: instance.clone(),
        ..Default::default()
    };
    let mut failed = false;
    for args in commands {
        let shown = format!("systemctl {}", args.join(" "));
        if failed {
            report.todo.push(shown);
            continue;
        }
        let result = match std::process::Command::new("systemctl").args(&args).output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run systemctl: {e}")),
        };
        if result.is_err() {
            failed = true;
            report.todo.push(shown.clone());
        }
        report.ran.push((shown, result));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let addr = socket_addr(path.to_str().unwrap()).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &addr)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("cognifs-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let addr = socket_addr(&format!("@{name}")).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"STOPPING=1", &addr)
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(socket_addr("relative").is_err());
    }

    #[test]
    fn a_receiver_that_stopped_reading_never_holds_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _deaf = UnixDatagram::bind(&path).unwrap();
        let target = path.to_str().unwrap().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Far more than any socket queue holds.
            let full = (0..100_000).find_map(|_| notify_to(&target, "STATUS=x").err());
            let _ = tx.send(full.map(|e| e.kind()));
        });
        let full = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("sending never blocks on a full queue");
        assert_eq!(full, Some(io::ErrorKind::WouldBlock));
    }

    #[test]
    fn unit_points_at_the_executable() {
        let text = unit_text(Path::new("/opt/bin/cognifs"));
        assert!(text.contains("ExecStart=/opt/bin/cognifs --profile %i mount --foreground"));
        assert!(!text.contains(TEMPLATE_EXE));
        assert!(text.contains("Type=notify") && text.contains("RestartPreventExitStatus=3"));
    }

    #[test]
    fn instance_names() {
        assert!(check_instance_name("default").is_ok());
        assert!(check_instance_name("work_2").is_ok());
        assert!(check_instance_name("my-work").is_ok());
        assert!(check_instance_name("a/b").is_err());
        assert!(check_instance_name("a b").is_err());
        assert!(check_instance_name("").is_err());
    }
}
