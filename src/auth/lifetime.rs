//! How long the sign-in lasts, and saying so before it ends.
//!
//! A sign-in lasts as long as its refresh token: what the token endpoint says when it says
//! (`refresh_token_expires_in`; Cognito does not), else the sign-in time plus the profile's
//! `sign_in_lifetime` (default 30 days, the user pool app client's default refresh token
//! expiration; set it to the app client's value). From [`WARN_BEFORE`] before the end, a
//! running mount warns: its log, `cognifs status`, systemd's STATUS line, and a desktop
//! notification where a session bus and `notify-send` are there. When the sign-in ends
//! anyway, the refresher goes signed out (status: "signed out: run cognifs login"), what
//! cannot be uploaded is kept, and the next login is picked up by itself.

use std::path::Path;
use std::time::Duration;

use super::tokens::{TokenState, TokenStore};
use crate::config::Profile;

/// How long before the end of the sign-in a mount starts warning.
pub const WARN_BEFORE: Duration = Duration::from_secs(3 * 86_400);

/// How often a mount repeats the warning (log, desktop) while it stands.
pub const WARN_EVERY: Duration = Duration::from_secs(86_400);

/// When the stored sign-in of `profile` ends, if it is known.
pub fn sign_in_end(profile: &Profile, state: &TokenState) -> Option<u64> {
    state.sign_in_ends(profile.sign_in_lifetime).map(|(t, _)| t)
}

/// The stored sign-in's end, read from `store` (`None`: not signed in, or unknown).
pub fn stored_sign_in_end(profile: &Profile, store: &TokenStore) -> Option<u64> {
    // The file alone says it: no need to ask the keyring every minute.
    store
        .load_public()
        .ok()
        .flatten()
        .and_then(|(s, _)| sign_in_end(profile, &s))
}

/// Whether a sign-in ending at `end` is to be warned about at `now`.
pub fn ending_soon(end: u64, now: u64) -> bool {
    end > now && end - now <= WARN_BEFORE.as_secs()
}

/// `ends in 2d04h (2027-01-05 14:00 UTC)`.
pub fn ends_in(end: u64, now: u64) -> String {
    format!("ends in {} ({})", span(end.saturating_sub(now)), utc(end))
}

/// `30d00h`, `5h02m`, `45s`.
pub fn span(secs: u64) -> String {
    if secs >= 86_400 {
        format!("{}d{:02}h", secs / 86_400, secs / 3600 % 24)
    } else {
        crate::commands::status::fmt_duration(secs)
    }
}

/// The warning a mount gives from [`WARN_BEFORE`] before the end.
pub fn warning(profile: &str, end: u64, now: u64) -> String {
    format!(
        "the sign-in of profile {profile} {}: run `cognifs login{}` to stay signed in (after it ends, files that cannot be uploaded are kept until the next login)",
        ends_in(end, now),
        super::profile_flag(profile)
    )
}

/// `2027-01-05 14:00 UTC`.
pub fn utc(unix: u64) -> String {
    let (year, month, day, hour, minute, _) = crate::clock::utc_parts(unix);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// Shows a desktop notification where a session bus is there and `notify-send` (Debian
/// `libnotify-bin`) is installed; false when it cannot. Never waits for it.
pub fn notify_desktop(summary: &str, body: &str) -> bool {
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
    if !bus {
        return false;
    }
    let spawned = std::process::Command::new("notify-send")
        .args(["--app-name=cognifs", "--urgency=normal", summary, body])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(mut child) => {
            // Reaped in the background: a notification server that hangs holds nothing.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_798_761_599), "2026-12-31 23:59 UTC");
        assert_eq!(utc(1_798_761_600), "2027-01-01 00:00 UTC");
    }

    #[test]
    fn the_warning_starts_three_days_before_the_end() {
        let end = 1_800_000_000;
        assert!(!ending_soon(end, end - 3 * 86_400 - 1));
        assert!(ending_soon(end, end - 3 * 86_400));
        assert!(ending_soon(end, end - 1));
        assert!(
            !ending_soon(end, end),
            "ended: signed out, no longer ending"
        );
        assert_eq!(
            ends_in(end, end - 2 * 86_400 - 4 * 3600),
            "ends in 2d04h (2027-01-15 08:00 UTC)"
        );
        assert!(warning("work", end, end - 60).contains("cognifs login --profile work"));
    }
}
