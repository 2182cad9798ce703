//! `cognifs offline pin / list / unpin` against a daemon mount (the `cognifs` binary, devstack
//! in-process), and what `status` and the systemd STATUS line say while S3 is away.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::cli::{Cli, PathGuard, assert_ok, run_with_deadline, text, within};
use support::*;

const ALICE: (&str, &str) = ("alice", "alice-pass");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pinned_files_are_read_with_s3_away_and_status_says_offline() {
    with_timeout(180, async {
        let port = reserved_port();
        let running = start_with(|o| o.callback_port = port).await;
        let cli = Cli::login(&running, ALICE.0, ALICE.1).await;
        let id = identity_of(&running, ALICE.0, ALICE.1).await;
        let admin = admin_s3(&running);
        let bucket = running.profile.bucket.clone();
        // Written by another client: this machine has never read them.
        let map = pseudo_random(3 << 20, 3);
        for (key, body) in [
            ("trip/map.pdf", map.clone()),
            ("trip/notes.txt", b"bring a towel".to_vec()),
        ] {
            admin
                .put_object()
                .bucket(&bucket)
                .key(format!("{id}/{key}"))
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
        let mnt = tempfile::tempdir().unwrap();
        let dir: PathBuf = mnt.path().canonicalize().unwrap();
        let _unmount = PathGuard(dir.clone());
        let logs = tempfile::tempdir().unwrap();
        let _child = cli
            .mount_with(
                &dir,
                &logs.path().join("mount.log"),
                &["--metadata-ttl", "0.3"],
            )
            .await;

        let pin = cli.command(&["offline", "pin", dir.join("trip").to_str().unwrap()]);
        let out =
            blocking(move || run_with_deadline(pin, Duration::from_secs(60), "offline pin")).await;
        assert_ok(&out, "cognifs offline pin");
        let said = text(&out.stdout);
        assert!(
            said.contains("pinned, 2 file(s), 3.0 MiB (3.0 MiB fetched now)"),
            "{said}"
        );
        let list = cli.command(&["offline", "list"]);
        let out =
            blocking(move || run_with_deadline(list, Duration::from_secs(20), "offline list"))
                .await;
        assert_ok(&out, "cognifs offline list");
        let said = text(&out.stdout);
        assert!(said.contains("3.0 MiB pinned"), "{said}");
        assert!(said.contains(&format!("{}/trip/", dir.display())), "{said}");
        // Not in a mount: a clear refusal.
        let outside = cli.command(&["offline", "pin", "/tmp"]);
        let out =
            blocking(move || run_with_deadline(outside, Duration::from_secs(20), "pin /tmp")).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("is not in a running cognifs mount"),
            "{}",
            text(&out.stderr)
        );

        // S3 goes away: the pinned files, never opened through the mount, read from disk.
        running.shutdown().await;
        let d = dir.clone();
        let (got_map, got_notes) = within(Duration::from_secs(60), "reads offline", move || {
            std::thread::sleep(Duration::from_millis(600));
            (
                std::fs::read(d.join("trip/map.pdf")).unwrap(),
                std::fs::read(d.join("trip/notes.txt")).unwrap(),
            )
        });
        assert_eq!(got_map, map);
        assert_eq!(got_notes, b"bring a towel");
        let status = cli.command(&["status"]);
        let out =
            blocking(move || run_with_deadline(status, Duration::from_secs(20), "status")).await;
        let said = text(&out.stdout);
        assert!(
            said.to_lowercase().contains("offline"),
            "status while offline:\n{said}"
        );
        let json = cli.command(&["status", "--json"]);
        let out =
            blocking(move || run_with_deadline(json, Duration::from_secs(20), "status --json"))
                .await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mount = &v["mounts"][0];
        assert_eq!(mount["live"]["connectivity"]["online"], false, "{mount}");
        assert!(
            mount["live"]["disk_cache"]["pinned_bytes"]
                .as_u64()
                .unwrap()
                >= 3 << 20,
            "{mount}"
        );

        let unpin = cli.command(&["offline", "unpin", dir.join("trip").to_str().unwrap()]);
        let out =
            blocking(move || run_with_deadline(unpin, Duration::from_secs(20), "offline unpin"))
                .await;
        assert_ok(&out, "cognifs offline unpin");
        assert!(
            text(&out.stdout).contains("unpinned"),
            "{}",
            text(&out.stdout)
        );
    })
    .await;
}
