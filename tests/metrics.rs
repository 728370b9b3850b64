//! `--metrics-file`: what node_exporter's textfile collector gets after each kind of run.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::astegni::Astegni;

/// A fresh directory for one test's metrics file.
fn metrics_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("astegni-metrics-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("metrics dir");
    dir
}

/// The samples of a metrics file: "name{labels}" -> value. Checks the format on the way:
/// every sample's metric has a `# TYPE` line before it.
fn samples(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).expect("the metrics file was written");
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert_eq!(kind, "gauge", "{line}");
            typed.push(name.to_owned());
        } else if !line.starts_with("# HELP ") {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let name = series.split('{').next().unwrap_or(series);
            assert!(typed.iter().any(|t| t == name), "{name} has no # TYPE line");
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            samples.insert(series.to_owned(), value);
        }
    }
    samples
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    let name = format!("astegni_delete_expired_{series}");
    *samples
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
}

#[test]
fn every_real_run_rewrites_the_metrics_and_a_failure_keeps_the_last_success() {
    let astegni = Astegni::new("metrics");
    let user = astegni.user("tutor@example.com", Some(&["user", "tutor"]), "tutor");
    astegni.profile("tutor", user, Some(-1));
    for n in 0..3 {
        let leaver = astegni.user(&format!("leaver{n}@example.com"), Some(&["user"]), "user");
        astegni.leave(leaver, -1);
    }
    let dir = metrics_dir("runs");
    let path = dir.join("astegni-delete-expired.prom");
    let flag = path.to_str().expect("utf-8 path");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let (code, stdout, stderr) = astegni.run(&["--metrics-file", flag, "--max-accounts", "0"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let first = samples(&path);
    let ended = value(&first, "last_run_timestamp_seconds");
    assert!(ended >= before, "{first:?}");
    assert_eq!(value(&first, "last_success_timestamp_seconds"), ended);
    assert_eq!(value(&first, "last_run_exit_code"), 0.0);
    assert_eq!(value(&first, "last_run_deleted{kind=\"role\"}"), 1.0);
    assert_eq!(value(&first, "last_run_deleted{kind=\"account\"}"), 3.0);
    assert_eq!(value(&first, "last_run_failed"), 0.0);
    assert_eq!(value(&first, "last_run_blocked"), 0.0);
    assert_eq!(value(&first, "last_run_held"), 0.0);
    let longest = value(&first, "last_run_longest_transaction_seconds");
    let p95 = value(&first, "last_run_p95_transaction_seconds");
    assert!(longest > 0.0 && p95 > 0.0 && p95 <= longest, "{first:?}");
    assert!(value(&first, "last_run_duration_seconds") >= longest);
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "node_exporter runs as another user");

    // A dry run leaves the file alone: the metrics watch the timer's runs.
    let written = std::fs::read(&path).expect("read");
    let (code, _, stderr) = astegni.run(&["--metrics-file", flag, "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        written,
        "a dry run wrote metrics"
    );

    // A run that cannot reach its database: the last success stays, the exit code is new.
    let (code, _, stderr) = common::run_job(
        &[
            "--database-url",
            "host=127.0.0.1 port=1 user=nobody dbname=nothing",
            "--connect-timeout",
            "0",
            "--metrics-file",
            flag,
        ],
        &[],
    );
    assert_eq!(code, 75, "{stderr}");
    let failed = samples(&path);
    assert_eq!(value(&failed, "last_run_exit_code"), 75.0);
    assert_eq!(value(&failed, "last_success_timestamp_seconds"), ended);
    assert!(value(&failed, "last_run_timestamp_seconds") >= ended);
    assert_eq!(value(&failed, "last_run_deleted{kind=\"account\"}"), 0.0);

    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        ["astegni-delete-expired.prom"],
        "a temporary file was left"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_metrics_file_that_cannot_be_written_costs_a_warning_not_the_run() {
    let astegni = Astegni::with_one_due_account("metricsbad");
    let dir = metrics_dir("missing");
    let path = dir.join("no-such-directory/astegni.prom");
    let (code, stdout, stderr) = astegni.run(&[
        "--metrics-file",
        path.to_str().expect("utf-8"),
        "--max-accounts",
        "0",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("COMPLETED: 0 roles and 1 accounts deleted"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("cannot write the metrics file {}", path.display())),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_metrics_file_not_named_prom_is_refused_before_anything_is_deleted() {
    let astegni = Astegni::with_one_due_account("metricsname");
    let (code, _, stderr) = astegni.run(&["--metrics-file", "/tmp/astegni.txt"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("must name a file ending in .prom"),
        "{stderr}"
    );
    assert_eq!(astegni.count("users"), 1, "nothing deleted");
}
