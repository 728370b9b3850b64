//! The report file cannot be written (a full disk, a directory, no permission, EIO, a closed
//! stdout, no journal): the deletions and their log lines go on.

use crate::support::job;
use crate::support::workload::Db;
use crate::trial::{RUN_FLAGS, Trial};

/// Runs the job with `--report-file path` on a fresh workload; asserts that it deletes
/// everything, exits 0, warns on stderr, and logs one deletion line per deletion.
fn report_file_case(path: &str, warning: &str, seed: u64) {
    let trial = Trial::fixed(Db::shared("fault_report"), seed, 150);
    let run = trial.spawn(&["--report-file", path]).wait(job::HANG_LIMIT);
    assert_eq!(run.code, 0, "{path}: {}", run.describe());
    assert!(
        run.stderr.contains(warning),
        "{path}: no warning {warning:?}: {}",
        run.describe()
    );
    let output = format!("{path}: {}", run.describe());
    trial.assert_all_deleted_and_logged(&run.stderr, &output);
    assert!(
        run.stderr.contains("Run summary: COMPLETED: ")
            && run
                .stderr
                .lines()
                .last()
                .unwrap_or_default()
                .contains("COMPLETED"),
        "{output}"
    );
}

#[test]
fn report_file_on_a_full_disk_does_not_stop_deletions_or_their_log() {
    report_file_case(
        "/dev/full",
        "warning: cannot write the run report to /dev/full: No space left on device",
        21,
    );
    // `--log-target journal` where there is no journal (this sandbox, a container): the log
    // falls back to stderr, so the deletions are still logged somewhere. Under systemd the
    // journal path itself is proven by the packaging system test (tests/system/run.sh).
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        return;
    }
    let trial = Trial::fixed(Db::shared("fault_nojournal"), 27, 150);
    let mut args = vec!["--database-url", trial.url()];
    args.extend(RUN_FLAGS);
    args.extend(["--log-target", "journal", "--report-file", "/dev/full"]);
    let run = job::spawn_args(&args, &[]).wait(job::HANG_LIMIT);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(
        run.stderr.contains("the journal is not reachable")
            && run
                .stderr
                .contains("cannot write the run report to /dev/full"),
        "{}",
        run.describe()
    );
    trial.assert_all_deleted_and_logged(&run.stderr, &run.describe());
}

#[test]
fn report_file_that_cannot_be_opened_does_not_stop_deletions_or_their_log() {
    let dir = std::env::temp_dir().join(format!("astegni-fault-reportdir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    report_file_case(
        dir.to_str().expect("utf-8"),
        "warning: cannot open report file",
        22,
    );
    let _ = std::fs::remove_dir(&dir);
    report_file_case(
        "/nonexistent-astegni-dir/cron_deletions.log",
        "warning: cannot open report file /nonexistent-astegni-dir/cron_deletions.log",
        23,
    );
    // Opens, but every write fails (EIO/EACCES from procfs).
    report_file_case("/proc/version", "warning: cannot", 24);
}

/// A permission error as the unprivileged user the service runs as: a copy of the binary runs
/// as `nobody` with the report file in a directory only root may write.
#[test]
fn report_file_without_permission_does_not_stop_deletions_or_their_log() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("astegni-fault-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let readonly = dir.join("readonly");
    std::fs::create_dir_all(&readonly).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let report = readonly.join("cron_deletions.log");
    let trial = Trial::fixed(Db::shared("fault_perm"), 25, 150);
    let (command, args_prefix): (std::process::Command, Vec<String>) = if uid == "0" {
        // As root every file is writable: drop to nobody, with a copy of the binary it can
        // reach.
        let copy = dir.join("astegni-delete-expired");
        std::fs::copy(job::exe(), &copy).expect("copy the binary");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut command = std::process::Command::new("setpriv");
        command.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
        command.arg(&copy);
        (command, Vec::new())
    } else {
        (std::process::Command::new(job::exe()), Vec::new())
    };
    let mut args: Vec<&str> = args_prefix.iter().map(String::as_str).collect();
    args.extend([
        "--database-url",
        trial.url(),
        "--log-target",
        "stderr",
        "--report-file",
        report.to_str().expect("utf-8"),
    ]);
    args.extend(RUN_FLAGS);
    let run = job::spawn_command(command, &args, &[]).wait(job::HANG_LIMIT);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(
        run.stderr.contains("warning: cannot open report file")
            && run.stderr.contains("Permission denied"),
        "{}",
        run.describe()
    );
    trial.assert_all_deleted_and_logged(&run.stderr, &run.describe());
}

/// stdout closed under the job (`| head`, a dead log collector): the report write fails with
/// EPIPE; the deletions and their log lines go on.
#[test]
fn closed_stdout_does_not_stop_deletions_or_their_log() {
    let trial = Trial::fixed(Db::shared("fault_epipe"), 26, 150);
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let stderr =
        std::env::temp_dir().join(format!("astegni-fault-epipe-{}.err", std::process::id()));
    let mut command = std::process::Command::new(job::exe());
    command
        .args(["--database-url", trial.url(), "--log-target", "stderr"])
        .args(RUN_FLAGS)
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    let status = command.status().expect("run");
    let text = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("warning: cannot write the run report to stdout"),
        "{text}"
    );
    trial.assert_all_deleted_and_logged(&text, &text);
}
