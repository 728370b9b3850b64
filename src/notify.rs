//! Alerts: the run summary sent to a command (`--notify-command`, e.g. `mail -s ...`) and/or a
//! Slack-compatible webhook, after each run as `--notify-on` asks; and the `notify-failure`
//! command the package's `OnFailure=` hook runs when the service fails.
//!
//! An alert that cannot be sent is logged and changes nothing else: not what was deleted, not
//! the exit code. So that a failed run does not alert twice (once from the job, once from the
//! hook), the job leaves a marker in the unit's `StateDirectory=` when it has sent its own
//! failure alert; the hook finds the marker for that invocation, removes it and stays quiet.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{NotifyOn, Settings};
use crate::{shell, webhook};

/// What an alert says: a subject-worthy first line, then the details.
pub struct Alert {
    pub subject: String,
    pub body: String,
}

impl Alert {
    fn text(&self) -> String {
        format!("{}\n\n{}\n", self.subject, self.body)
    }
}

/// Longest an alert command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a run that ended with `exit_code` after `deleted` deletions should alert.
pub fn wanted(on: NotifyOn, exit_code: u8, deleted: u64) -> bool {
    match on {
        NotifyOn::Always => true,
        NotifyOn::Deletions => deleted > 0 || exit_code != 0,
        NotifyOn::Failure => exit_code != 0,
    }
}

/// Sends `alert` through every configured channel; returns whether one delivered it.
pub fn send(settings: &Settings, alert: &Alert) -> bool {
    let mut delivered = false;
    if let Some(command) = &settings.notify_command {
        match shell::run(command, Some(&alert.text()), COMMAND_TIMEOUT) {
            Ok(()) => delivered = true,
            Err(error) => log::error!("alert command failed: {error:#}"),
        }
    }
    if let Some(url) = &settings.webhook_url {
        match webhook::post(url, &alert.text()) {
            Ok(()) => delivered = true,
            Err(error) => log::error!("alert webhook failed: {error:#}"),
        }
    }
    delivered
}

/// Sends the alert for a finished run if `--notify-on` wants one.
pub fn after_run(settings: &Settings, exit_code: u8, deleted: u64, alert: &Alert) {
    if !wanted(settings.notify_on, exit_code, deleted) {
        return;
    }
    if send(settings, alert) && exit_code != 0 {
        mark_failure_alerted();
    }
}

/// The marker for this invocation of the unit, if we run under systemd with a state dir.
fn marker(invocation_variable: &str) -> Option<PathBuf> {
    let invocation = std::env::var(invocation_variable).ok()?;
    if invocation.is_empty() || !invocation.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let state = std::env::var("STATE_DIRECTORY").ok()?;
    let first = state.split(':').next()?;
    Some(PathBuf::from(first).join(format!("alerted-{invocation}")))
}

fn mark_failure_alerted() {
    if let Some(path) = marker("INVOCATION_ID")
        && let Err(error) = std::fs::write(&path, b"")
    {
        log::warn!("cannot write {}: {error}", path.display());
    }
}

/// `notify-failure`: alerts that the service failed, unless the job already did. Returns the
/// exit code: 0 when alerted or nothing to do, 1 when no channel delivered the alert.
pub fn notify_failure(settings: &Settings) -> u8 {
    if let Some(path) = marker("MONITOR_INVOCATION_ID")
        && path.exists()
    {
        let _ = std::fs::remove_file(&path);
        log::info!("the failed run already sent its own alert");
        return 0;
    }
    if settings.notify_command.is_none() && settings.webhook_url.is_none() {
        log::warn!("no alert channel configured (ASTEGNI_NOTIFY_COMMAND, ASTEGNI_WEBHOOK_URL)");
        return 0;
    }
    let variable = |name: &str| std::env::var(name).unwrap_or_else(|_| "unknown".to_owned());
    let unit = std::env::var("MONITOR_UNIT")
        .unwrap_or_else(|_| "astegni-delete-expired.service".to_owned());
    let alert = Alert {
        subject: format!(
            "Astegni deletion job FAILED on {}: {unit} ended with result {} (exit status {})",
            hostname(),
            variable("MONITOR_SERVICE_RESULT"),
            variable("MONITOR_EXIT_STATUS"),
        ),
        body: format!(
            "The job could not report this failure itself. Its log:\n\
             journalctl _SYSTEMD_INVOCATION_ID={}",
            variable("MONITOR_INVOCATION_ID")
        ),
    };
    if send(settings, &alert) { 0 } else { 1 }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "this host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_on_decides_which_runs_alert() {
        assert!(wanted(NotifyOn::Always, 0, 0));
        assert!(!wanted(NotifyOn::Deletions, 0, 0));
        assert!(wanted(NotifyOn::Deletions, 0, 3));
        assert!(wanted(NotifyOn::Deletions, 1, 0));
        assert!(!wanted(NotifyOn::Failure, 0, 3));
        assert!(wanted(NotifyOn::Failure, 75, 0));
    }
}
