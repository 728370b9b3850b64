//! `--metrics-file`: the last run, in the Prometheus text format, for node_exporter's textfile
//! collector. Written whole or not at all: a temporary file in the same directory, renamed
//! over the old one, so the collector never reads half a file.
//!
//! Each metric is about the last run (gauges), except the time of the last successful run,
//! which a failed run carries over from the file it replaces: "no successful run for 26
//! hours" is the alert that catches a job that runs but cannot delete.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::summary::{Counts, Summary};

const PREFIX: &str = "astegni_delete_expired";
const LAST_SUCCESS: &str = "astegni_delete_expired_last_success_timestamp_seconds";

/// What one run left for the metrics.
pub struct LastRun<'a> {
    /// None when the run ended before it could count anything.
    pub summary: Option<&'a Summary>,
    pub exit_code: u8,
    pub ended: SystemTime,
    pub duration: Duration,
    /// Whether the run had an advertiser database: the counts are then labelled by database.
    pub two_databases: bool,
}

/// Writes `run` to `path`, keeping the last success of the file it replaces if this run
/// did not succeed.
pub fn write(path: &Path, run: &LastRun) -> anyhow::Result<()> {
    let ended = seconds(run.ended);
    let last_success = if run.exit_code == 0 {
        Some(ended.clone())
    } else {
        previous_success(path)
    };
    let text = render(run, &ended, last_success.as_deref());
    replace(path, &text)
        .with_context(|| format!("cannot write the metrics file {}", path.display()))
}

/// The time of the last success in the file at `path`, as written there.
fn previous_success(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(LAST_SUCCESS)?.strip_prefix(' ')?;
        value.parse::<f64>().is_ok().then(|| value.to_owned())
    })
}

fn seconds(time: SystemTime) -> String {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:.3}", since_epoch.as_secs_f64())
}

fn render(run: &LastRun, ended: &str, last_success: Option<&str>) -> String {
    let mut text = String::new();
    let out = &mut text;
    single(
        out,
        "last_run_timestamp_seconds",
        "When the last run ended.",
        ended,
    );
    if let Some(last_success) = last_success {
        let help = "When the last run that exited 0 ended.";
        single(out, "last_success_timestamp_seconds", help, last_success);
    }
    let code = run.exit_code.to_string();
    single(
        out,
        "last_run_exit_code",
        "The last run's exit code (0: success).",
        &code,
    );
    let duration = in_seconds(run.duration);
    single(
        out,
        "last_run_duration_seconds",
        "How long the last run took.",
        &duration,
    );
    counts(out, run);
    let transactions = run.summary.map(|summary| &summary.transactions);
    let longest = transactions.map_or(Duration::ZERO, |times| times.longest());
    let p95 = transactions.map_or(Duration::ZERO, |times| times.percentile(95));
    let help = "The longest transaction of the last run that held row locks.";
    single(
        out,
        "last_run_longest_transaction_seconds",
        help,
        &in_seconds(longest),
    );
    let help = "95% of the last run's locking transactions took at most this long.";
    single(
        out,
        "last_run_p95_transaction_seconds",
        help,
        &in_seconds(p95),
    );
    text
}

fn in_seconds(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64())
}

/// A count of rows by what became of them: its name, its help and where it is in `Counts`.
type Outcome = (&'static str, &'static str, fn(&Counts) -> u64);

/// The counts of the last run, by kind, and by database when there are two.
fn counts(out: &mut String, run: &LastRun) {
    let none = Counts::default();
    let total = run.summary.map_or(&none, |summary| &summary.counts);
    let advertiser = run
        .summary
        .and_then(|summary| summary.advertiser.as_ref())
        .unwrap_or(&none);
    let user = Counts {
        roles: total.roles - advertiser.roles,
        accounts: total.accounts - advertiser.accounts,
        failed: total.failed - advertiser.failed,
        held: total.held - advertiser.held,
        blocked: total.blocked - advertiser.blocked,
    };
    let by_database: Vec<(&str, &Counts)> = if run.two_databases {
        vec![
            ("database=\"user\"", &user),
            ("database=\"advertiser\"", advertiser),
        ]
    } else {
        vec![("", total)]
    };
    gauge(
        out,
        "last_run_deleted",
        "Roles and accounts the last run deleted.",
    );
    for (database, counts) in &by_database {
        for (kind, count) in [("role", counts.roles), ("account", counts.accounts)] {
            let kind = format!("kind=\"{kind}\"");
            let labels = match *database {
                "" => kind,
                database => format!("{database},{kind}"),
            };
            sample(out, "last_run_deleted", &labels, &count.to_string());
        }
    }
    let outcomes: [Outcome; 3] = [
        (
            "last_run_failed",
            "Rows whose deletion failed in the last run.",
            |c| c.failed,
        ),
        (
            "last_run_blocked",
            "Deletions a foreign key blocked in the last run.",
            |c| c.blocked,
        ),
        (
            "last_run_held",
            "Due accounts the last run held for manual review.",
            |c| c.held,
        ),
    ];
    for (name, help, count) in outcomes {
        gauge(out, name, help);
        for (database, counts) in &by_database {
            sample(out, name, database, &count(counts).to_string());
        }
    }
}

/// A gauge with one sample and no labels.
fn single(out: &mut String, name: &str, help: &str, value: &str) {
    gauge(out, name, help);
    sample(out, name, "", value);
}

fn gauge(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}_{name} gauge");
}

fn sample(out: &mut String, name: &str, labels: &str, value: &str) {
    if labels.is_empty() {
        let _ = writeln!(out, "{PREFIX}_{name} {value}");
    } else {
        let _ = writeln!(out, "{PREFIX}_{name}{{{labels}}} {value}");
    }
}

/// Writes `text` to a temporary file next to `path` and renames it over `path`.
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = temporary_path(path)?;
    let written = write_new(&temporary, text).and_then(|()| {
        fs::rename(&temporary, path).context("cannot rename the temporary file over it")
    });
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// A hidden name in the same directory (the rename must not cross file systems), which the
/// collector ignores: it reads only `*.prom`.
fn temporary_path(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path.file_name().context("the path names no file")?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{}.tmp", std::process::id()));
    Ok(path.with_file_name(temporary))
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = fs::File::create(path).context("cannot create a temporary file beside it")?;
    // node_exporter runs as another user: readable by all, whatever the unit's UMask.
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .context("cannot make the temporary file readable")?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .context("cannot write the temporary file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(summary: Option<&Summary>, exit_code: u8, two_databases: bool) -> LastRun<'_> {
        LastRun {
            summary,
            exit_code,
            ended: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_734_400_250),
            duration: Duration::from_millis(12_345),
            two_databases,
        }
    }

    #[test]
    fn one_database_counts_by_kind() {
        let mut summary = Summary::new(false);
        summary.counts.roles = 3;
        summary.counts.accounts = 2;
        summary.counts.failed = 1;
        summary.transactions.record(Duration::from_millis(40));
        let text = render(&run(Some(&summary), 1, false), "1764734400.250", None);
        for line in [
            "astegni_delete_expired_last_run_timestamp_seconds 1764734400.250",
            "astegni_delete_expired_last_run_exit_code 1",
            "astegni_delete_expired_last_run_duration_seconds 12.345",
            "astegni_delete_expired_last_run_deleted{kind=\"role\"} 3",
            "astegni_delete_expired_last_run_deleted{kind=\"account\"} 2",
            "astegni_delete_expired_last_run_failed 1",
            "astegni_delete_expired_last_run_blocked 0",
            "astegni_delete_expired_last_run_held 0",
            "astegni_delete_expired_last_run_longest_transaction_seconds 0.040",
            "astegni_delete_expired_last_run_p95_transaction_seconds 0.040",
            "# TYPE astegni_delete_expired_last_run_deleted gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains("last_success"),
            "no success to tell of:\n{text}"
        );
    }

    #[test]
    fn two_databases_label_the_counts() {
        let mut summary = Summary::new(false);
        summary.counts.roles = 5;
        summary.counts.failed = 2;
        summary.advertiser = Some(Counts {
            roles: 4,
            failed: 2,
            ..Counts::default()
        });
        let text = render(&run(Some(&summary), 1, true), "1", Some("0.5"));
        for line in [
            "astegni_delete_expired_last_run_deleted{database=\"user\",kind=\"role\"} 1",
            "astegni_delete_expired_last_run_deleted{database=\"advertiser\",kind=\"role\"} 4",
            "astegni_delete_expired_last_run_failed{database=\"user\"} 0",
            "astegni_delete_expired_last_run_failed{database=\"advertiser\"} 2",
            "astegni_delete_expired_last_success_timestamp_seconds 0.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_and_a_success_replaces_it() {
        let dir = std::env::temp_dir().join(format!("astegni-metrics-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.prom");
        let summary = Summary::new(false);
        write(&path, &run(Some(&summary), 0, false)).unwrap();
        let success = "astegni_delete_expired_last_success_timestamp_seconds 1764734400.250";
        assert!(fs::read_to_string(&path).unwrap().contains(success));
        let later = LastRun {
            ended: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_820_800),
            ..run(None, 75, false)
        };
        write(&path, &later).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(success), "{text}");
        assert!(text.contains("astegni_delete_expired_last_run_exit_code 75"));
        assert!(text.contains("astegni_delete_expired_last_run_timestamp_seconds 1764820800.000"));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["job.prom"], "no temporary file left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
