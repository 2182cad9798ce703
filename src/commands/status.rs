//! `cognifs status`: who is signed in, where the data lives, and the running mounts with
//! their live figures (asked of each mount process over its status socket, see
//! `metrics`); `--json` prints the same as one [`StatusReport`], `--watch` refreshes.

use std::fmt::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::EXIT_SIGNED_OUT;
use crate::auth::tokens::{TokenStore, read_claims, unix_now};
use crate::auth::{lifetime, profile_flag};
use crate::cli::StatusArgs;
use crate::config::{self, ConfigSource, Profile};
use crate::metrics::{MountStatus, STATUS_VERSION, StatusReport, server};
use crate::mounts;
use crate::pending::PendingArea;

fn fmt_time(unix: u64) -> String {
    let now = unix_now();
    if unix > now {
        format!("in {}m{:02}s", (unix - now) / 60, (unix - now) % 60)
    } else {
        format!(
            "{}m{:02}s ago (expired; renewed on next use)",
            (now - unix) / 60,
            (now - unix) % 60
        )
    }
}

/// `3h04m`, `5m02s`, `7s`.
pub fn fmt_duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `512 B`, `1.5 KiB`, `64.0 MiB`, `2.0 GiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The running mounts of `profile`, each with what its process reports (if it answers).
pub fn mount_statuses(profile: &str) -> Vec<MountStatus> {
    let state = config::state_dir();
    with_live_figures(mounts::running(&state, profile))
}

/// Each mount of `records` with what its process reports (if it answers).
fn with_live_figures(records: Vec<mounts::MountRecord>) -> Vec<MountStatus> {
    let state = config::state_dir();
    records
        .into_iter()
        .map(|r| {
            let answer = server::query(&mounts::socket_path(&state, &r.profile, r.pid));
            MountStatus {
                version: STATUS_VERSION,
                pid: r.pid,
                mountpoint: r.mountpoint,
                profile: r.profile,
                s3_url: r.s3_url,
                started: r.started,
                live: answer.ok().and_then(|a| a.live),
            }
        })
        .collect()
}

fn report(profile: &Profile) -> anyhow::Result<StatusReport> {
    // What the token file says, without asking the keyring for the secrets.
    let (state, storage) = match TokenStore::for_profile(profile).load_public()? {
        Some((state, storage)) => (Some(state), Some(storage)),
        None => (None, None),
    };
    let claims = state
        .as_ref()
        .and_then(|s| s.id_token.as_deref())
        .map(read_claims)
        .unwrap_or_default();
    let user = claims
        .username
        .or_else(|| state.as_ref().and_then(|s| s.username.clone()));
    let email = claims
        .email
        .or_else(|| state.as_ref().and_then(|s| s.email.clone()));
    let identity_id = state.as_ref().and_then(|s| s.identity_id.clone());
    let now = unix_now();
    let ends = state
        .as_ref()
        .and_then(|s| s.sign_in_ends(profile.sign_in_lifetime));
    let mounts = mount_statuses(&profile.name);
    // Ended: by its time, or as the mounts found (the pool's lifetime may be shorter
    // than the profile says).
    let ended = ends.is_some_and(|(t, _)| t <= now)
        || (!mounts.is_empty()
            && mounts.iter().all(|m| {
                m.live
                    .as_ref()
                    .is_some_and(|l| l.credentials.signed_out.is_some())
            }));
    let sign_in = match (&state, ends) {
        (None, _) => "not signed in",
        (Some(_), _) if ended => "signed out",
        (Some(_), Some((t, _))) if lifetime::ending_soon(t, now) => "ending soon",
        (Some(_), _) => "signed in",
    };
    Ok(StatusReport {
        version: STATUS_VERSION,
        profile: profile.name.clone(),
        signed_in: state.is_some() && !ended,
        sign_in: Some(sign_in.to_owned()),
        sign_in_ends: ends.map(|(t, _)| t),
        sign_in_ends_from: ends.map(|(_, from)| from.name().to_owned()),
        user,
        email,
        token_storage: storage.map(|s| s.name().to_owned()),
        data: identity_id
            .as_deref()
            .map(|id| format!("s3://{}/{}", profile.bucket, profile.prefix_for(id))),
        identity_id,
        id_token_expires: state.as_ref().and_then(|s| s.id_token_expires),
        mounts,
        pending: crate::pending::records_in(&PendingArea::for_profile(
            &config::state_dir(),
            &profile.name,
        )),
        profile_problem: None,
    })
}

/// One mount's block of the human form.
pub fn mount_block(m: &MountStatus, now: u64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "mount          {} (pid {}, up {})",
        m.mountpoint.display(),
        m.pid,
        fmt_duration(now.saturating_sub(m.started))
    );
    let _ = writeln!(o, "  data         {}", m.s3_url);
    let Some(l) = &m.live else {
        let _ = writeln!(
            o,
            "  (the mount process did not answer on its status socket)"
        );
        return o;
    };
    let _ = writeln!(
        o,
        "  transferred  {} read, {} written",
        fmt_bytes(l.bytes_read),
        fmt_bytes(l.bytes_written)
    );
    let mut busy: Vec<(&String, u64)> = l
        .requests
        .iter()
        .filter(|(_, c)| c.last_minute > 0)
        .map(|(k, c)| (k, c.last_minute))
        .collect();
    busy.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: u64 = busy.iter().map(|b| b.1).sum();
    let errors: u64 = l.requests.values().map(|c| c.errors_last_minute).sum();
    let kinds = busy
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        o,
        "  S3, last min {total} requests{}, {errors} errors",
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({kinds})")
        }
    );
    let ratio = match l.cache.hit_ratio {
        Some(r) => format!(
            "{:.0}% hits ({} of {} lookups)",
            r * 100.0,
            l.cache.hits,
            l.cache.hits + l.cache.misses
        ),
        None => "no lookups yet".to_owned(),
    };
    let _ = writeln!(
        o,
        "  cache        {ratio}, {} of {}",
        fmt_bytes(l.cache.bytes),
        fmt_bytes(l.cache.capacity_bytes)
    );
    let w = &l.writes;
    let _ = writeln!(
        o,
        "  writing      {} file(s) open, {} waiting to upload, {} upload(s) in flight",
        w.files_open,
        fmt_bytes(w.bytes_waiting),
        w.uploads_in_flight
    );
    for u in &w.uploads {
        let _ = writeln!(o, "    {}", upload_line(u));
    }
    if w.pending_uploads > 0 {
        let _ = writeln!(
            o,
            "  pending      {} upload(s) that failed, {}: kept, retried in the background",
            w.pending_uploads,
            fmt_bytes(w.pending_bytes)
        );
    }
    if !w.conflict_detection.is_empty() {
        let how = match w.conflict_detection.as_str() {
            "atomic" => "atomic (S3 checks every write's version)",
            "best effort" => {
                "best effort (the server ignores conditional writes: a HEAD before each write)"
            }
            _ => "unchecked (S3 could not be asked at mount; taken as atomic)",
        };
        let _ = writeln!(o, "  conflict detection  {how}");
    }
    if let Some(c) = w.recent_conflicts.last() {
        let what = match &c.kept_as {
            Some(copy) => format!("this version kept as {copy}"),
            None => "the other client's newer version stays".to_owned(),
        };
        let _ = writeln!(
            o,
            "  conflicts    {}; the latest {} ago on {}: {what} (cognifs conflicts)",
            w.conflicts,
            fmt_duration(now.saturating_sub(c.time)),
            c.path,
        );
    }
    for (line, group) in [("S3 latency", "s3"), ("FUSE latency", "fuse")] {
        if let Some(shown) = latency_line(l, group) {
            let _ = writeln!(o, "  {line:<13}{shown}");
        }
    }
    if let Ok(json) = serde_json::to_value(l) {
        for line in crate::metrics::figures::item_lines(&json, now) {
            let _ = writeln!(o, "{line}");
        }
    }
    match &l.last_error {
        Some(e) => {
            let _ = writeln!(
                o,
                "  last error   {} ago: {}",
                fmt_duration(now.saturating_sub(e.time)),
                crate::pending::brief(&e.message)
            );
        }
        None => {
            let _ = writeln!(o, "  last error   none");
        }
    }
    if l.credentials.signed_out.is_some() {
        let _ = writeln!(
            o,
            "  sign-in      signed out: run cognifs login{} (files that cannot be uploaded are kept until then)",
            crate::auth::profile_flag(&m.profile)
        );
        return o;
    }
    let expires = match l.credentials.expires {
        Some(e) => format!("credentials expire {}", fmt_time(e)),
        None => "credentials do not expire".to_owned(),
    };
    let renewed = l
        .credentials
        .last_renewal
        .map(|t| format!(", obtained {} ago", fmt_duration(now.saturating_sub(t))))
        .unwrap_or_default();
    let _ = writeln!(o, "  sign-in      {expires}{renewed}");
    if let Some(end) = l
        .credentials
        .extra
        .get("sign_in_ends")
        .and_then(|v| v.as_u64())
        .filter(|&end| crate::auth::lifetime::ending_soon(end, now))
    {
        let _ = writeln!(
            o,
            "               the sign-in {}: run cognifs login{}",
            crate::auth::lifetime::ends_in(end, now),
            crate::auth::profile_flag(&m.profile)
        );
    }
    o
}

/// `p50/p99 get 3.1/12 ms, put 20/81 ms`: the kinds of `live.latency.GROUP` seen at least
/// once, the busiest first; `None` when none was.
fn latency_line(l: &crate::metrics::LiveStatus, group: &str) -> Option<String> {
    let kinds = l.extra.get("latency")?.get(group)?.as_object()?;
    let mut seen: Vec<(&String, u64, f64, f64)> = kinds
        .iter()
        .filter_map(|(k, v)| {
            let count = v.get("count")?.as_u64().filter(|&c| c > 0)?;
            Some((
                k,
                count,
                v.get("p50_seconds")?.as_f64()?,
                v.get("p99_seconds")?.as_f64()?,
            ))
        })
        .collect();
    if seen.is_empty() {
        return None;
    }
    seen.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = seen
        .iter()
        .map(|(k, _, p50, p99)| format!("{k} {}/{}", fmt_seconds(*p50), fmt_seconds(*p99)))
        .collect();
    Some(format!("p50/p99 {}", shown.join(", ")))
}

/// `0.25 ms`, `12 ms`, `1.5 s`.
pub fn fmt_seconds(s: f64) -> String {
    if s < 0.001 {
        format!("{:.2} ms", s * 1e3)
    } else if s < 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.1} s")
    }
}

/// `big.bin  24.0 MiB of 64.0 MiB (37%, streaming)`.
pub fn upload_line(u: &crate::metrics::UploadStatus) -> String {
    let pct = (u.bytes_sent * 100)
        .checked_div(u.bytes_total)
        .unwrap_or(100)
        .min(100);
    format!(
        "{}  {} of {} ({pct}%{})",
        u.path,
        fmt_bytes(u.bytes_sent),
        fmt_bytes(u.bytes_total),
        if u.streaming {
            ", still being written"
        } else {
            ""
        }
    )
}

fn human(r: &StatusReport, profile: &Profile) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "profile        {} ({})",
        r.profile,
        profile.config_path.display()
    );
    let now = unix_now();
    if r.sign_in.as_deref() == Some("signed out") {
        let _ = writeln!(
            o,
            "signed out: run cognifs login{} (the sign-in of {} ended{}; files that cannot be uploaded are kept until then)",
            profile_flag(&r.profile),
            r.user.as_deref().unwrap_or("?"),
            r.sign_in_ends
                .filter(|&t| t <= now)
                .map(|t| format!(" {}", lifetime::utc(t)))
                .unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            o,
            "signed in as   {} <{}>",
            r.user.as_deref().unwrap_or("?"),
            r.email.as_deref().unwrap_or("no email")
        );
        match (r.sign_in_ends, r.sign_in_ends_from.as_deref()) {
            (Some(end), from) => {
                let whence = match from {
                    Some("token endpoint") => "as the token endpoint said".to_owned(),
                    _ => format!(
                        "sign-in time + sign_in_lifetime {}",
                        lifetime::span(profile.sign_in_lifetime.as_secs())
                    ),
                };
                let _ = writeln!(
                    o,
                    "sign-in        {} ({whence}){}",
                    lifetime::ends_in(end, now),
                    if lifetime::ending_soon(end, now) {
                        format!(
                            ": soon; run cognifs login{} to stay signed in",
                            profile_flag(&r.profile)
                        )
                    } else {
                        String::new()
                    }
                );
            }
            (None, _) => {
                let _ = writeln!(
                    o,
                    "sign-in        end unknown (signed in before cognifs kept the time; `cognifs login` again to know it)"
                );
            }
        }
    }
    match (&r.identity_id, &r.data) {
        (Some(id), Some(data)) => {
            let _ = writeln!(o, "identity       {id}");
            let _ = writeln!(o, "data           {data}");
        }
        _ => {
            let _ = writeln!(o, "identity       not looked up yet (first mount does it)");
        }
    }
    if let Some(exp) = r.id_token_expires {
        let _ = writeln!(o, "ID token       expires {}", fmt_time(exp));
    }
    match r.token_storage.as_deref() {
        Some("keyring") => {
            let _ = writeln!(o, "tokens kept    in the OS keyring (Secret Service)");
        }
        Some(_) => {
            let _ = writeln!(
                o,
                "tokens kept    in {} (mode 0600; no OS keyring here)",
                TokenStore::for_profile(profile).path().display()
            );
        }
        None => {}
    }
    if r.mounts.is_empty() {
        let _ = writeln!(o, "mounts         none");
    }
    for m in &r.mounts {
        o.push_str(&mount_block(m, now));
    }
    o.push_str(&pending_block(&r.pending));
    o
}

/// One line per running mount of another profile (the demo's, say), so that `status` of
/// one profile does not hide the others.
fn other_mounts(profile: &str) -> String {
    let mut o = String::new();
    for m in mounts::all_running(&config::state_dir()) {
        if m.profile != profile {
            let _ = writeln!(
                o,
                "other mount    {} (profile {}, pid {})",
                m.mountpoint.display(),
                m.profile,
                m.pid,
            );
        }
    }
    o
}

/// The uploads kept after failures (none: nothing).
pub fn pending_block(pending: &[crate::pending::PendingRecord]) -> String {
    let mut o = String::new();
    if pending.is_empty() {
        return o;
    }
    let total: u64 = pending.iter().map(|p| p.size).sum();
    let _ = writeln!(
        o,
        "pending        {} upload(s), {}, failed and kept on disk; retried by the mount \
         (`cognifs pending drop PATH` abandons one)",
        pending.len(),
        fmt_bytes(total)
    );
    let now = unix_now();
    for p in pending {
        let _ = writeln!(
            o,
            "  {}  {}  failing for {}: {}",
            p.rel,
            fmt_bytes(p.size),
            fmt_duration(now.saturating_sub(p.since)),
            p.last_error
        );
    }
    o
}

pub fn status(src: &ConfigSource, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let profile = match config::load(src) {
        Ok(profile) => profile,
        Err(problem) => return status_without_profile(src, args, &problem),
    };
    loop {
        let r = report(&profile)?;
        let code = if r.signed_in {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_SIGNED_OUT)
        };
        if args.watch && !args.json {
            // Home the cursor and clear the screen: one live view, not a scroll.
            print!("\x1b[H\x1b[2J");
        }
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else if r.signed_in || r.sign_in.as_deref() == Some("signed out") {
            print!("{}", human(&r, &profile));
        } else {
            eprintln!(
                "Not signed in (profile {}). Run: cognifs login{}",
                profile.name,
                profile_flag(&profile.name)
            );
            // A mount can outlive a sign-out (and the demo signs in on its own): still
            // say what the running mounts are doing.
            let now = unix_now();
            for m in &r.mounts {
                print!("{}", mount_block(m, now));
            }
            print!("{}", pending_block(&r.pending));
        }
        if !args.json {
            print!("{}", other_mounts(&profile.name));
        }
        if !args.watch {
            return Ok(code);
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// How to get a profile, for a `status` that found none.
pub const MAKE_A_PROFILE: &str = "Make a profile: `cognifs config import FILE.env` (from your web app's .env), \
     or write it in the config file (README, \"Set up AWS\"); or try it all locally: `cognifs demo ~/cloud`.";

/// `status` when the profile cannot be loaded (no config file, no such profile, a broken
/// file): it still lists every running mount of this user, whatever its profile (the
/// demo's too), and says what is wrong and how to make a profile. Exit status 3: the
/// profile asked for is not signed in.
fn status_without_profile(
    src: &ConfigSource,
    args: &StatusArgs,
    problem: &config::ConfigError,
) -> anyhow::Result<ExitCode> {
    let name = config::profile_name(src.profile.as_deref());
    loop {
        let mounts = with_live_figures(mounts::all_running(&config::state_dir()));
        if args.watch && !args.json {
            print!("\x1b[H\x1b[2J");
        }
        if args.json {
            let report = StatusReport {
                version: STATUS_VERSION,
                profile: name.clone(),
                signed_in: false,
                user: None,
                email: None,
                identity_id: None,
                data: None,
                id_token_expires: None,
                mounts,
                pending: Vec::new(),
                profile_problem: Some(problem.to_string()),
                sign_in: None,
                sign_in_ends: None,
                sign_in_ends_from: None,
                token_storage: None,
            };
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!(
                "{}",
                without_profile_human(&name, &problem.to_string(), &mounts)
            );
        }
        if !args.watch {
            return Ok(ExitCode::from(EXIT_SIGNED_OUT));
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The human form of [`status_without_profile`].
fn without_profile_human(name: &str, problem: &str, mounts: &[MountStatus]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "profile        {name}: cannot be used");
    let _ = writeln!(o, "  {problem}");
    let _ = writeln!(o, "  {MAKE_A_PROFILE}");
    if mounts.is_empty() {
        let _ = writeln!(o, "mounts         none (of any profile)");
    }
    let now = unix_now();
    let mut last_profile = None;
    for m in mounts {
        if last_profile != Some(&m.profile) {
            let _ = writeln!(o, "mounts of profile {}:", m.profile);
            last_profile = Some(&m.profile);
        }
        o.push_str(&mount_block(m, now));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(64 << 20), "64.0 MiB");
        assert_eq!(fmt_bytes(3 << 30), "3.0 GiB");
        assert_eq!(fmt_duration(7), "7s");
        assert_eq!(fmt_duration(302), "5m02s");
        assert_eq!(fmt_duration(3 * 3600 + 240), "3h04m");
    }

    #[test]
    fn a_mount_block_shows_every_figure() {
        let block = mount_block(&sample(), 1_700_000_100);
        for part in [
            "mount          /home/me/cloud (pid 42, up 1m40s)",
            "  data         s3://b/us-east-1:x/",
            "  transferred  1.0 MiB read, 64.0 MiB written",
            "  S3, last min 8 requests (8 upload_part), 1 errors",
            "  cache        75% hits (3 of 4 lookups), 4.0 MiB of 256.0 MiB",
            "  writing      1 file(s) open, 40.0 MiB waiting to upload, 1 upload(s) in flight",
            "    big \"x\".bin  24.0 MiB of 64.0 MiB (37%, still being written)",
            "  last error   50s ago: upload_part \"big.bin\": S3 error: SlowDown",
            "  S3 latency   p50/p99 upload_part 44 ms/2.5 s\n",
            "  FUSE latency p50/p99 read 0.38 ms/0.50 ms\n",
            "  connection   online\n",
            "               the sign-in ends in 1d00h (2023-11-15 22:15 UTC): run cognifs login\n",
            "  sign-in      credentials expire ",
            ", obtained 1m40s ago",
        ] {
            assert!(block.contains(part), "missing {part:?} in:\n{block}");
        }
        let mut out = sample();
        out.live.as_mut().unwrap().credentials.signed_out = Some("not signed in".into());
        assert!(
            mount_block(&out, 1_700_000_100).contains(
                "  sign-in      signed out: run cognifs login (files that cannot be uploaded are kept until then)"
            )
        );
        assert!(
            !block.contains("offline"),
            "nothing queued, nothing said:\n{block}"
        );
        let mut quiet = sample();
        quiet.live = None;
        assert!(mount_block(&quiet, 1_700_000_100).contains("did not answer"));
    }
}
