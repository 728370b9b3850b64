//! The backup interlock (`--require-backup`): a run deletes nothing, and leaves the database
//! exactly as it was, unless a recent backup exists; by WAL archiving (`archiver`, on a
//! private cluster with `archive_mode = on`), by a backup file's age (`file:`), or by a
//! command's exit status (`command:`).

mod common;

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use common::Cluster;
use common::astegni::{Astegni, Variant, schema_sql, tables_content};

const NO_BACKUP: i32 = 4;

/// A due tutor role and a due account.
fn scene(astegni: &Astegni) {
    let tutor = astegni.user("tutor@example.com", Some(&["user", "tutor"]), "tutor");
    astegni.profile("tutor", tutor, Some(-1));
    let leaver = astegni.user("leaver@example.com", Some(&["user"]), "user");
    astegni.leave(leaver, -1);
}

/// A directory of backups for one test, removed when dropped.
struct Backups(PathBuf);

impl Backups {
    fn new(name: &str) -> Backups {
        let dir =
            std::env::temp_dir().join(format!("astegni-backups-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("daily")).expect("backup dir");
        Backups(dir)
    }

    /// Writes `daily/<name>` modified `hours_ago` hours ago.
    fn file(&self, name: &str, hours_ago: u64) -> PathBuf {
        let path = self.0.join("daily").join(name);
        let file = File::create(&path).expect("backup file");
        let modified = SystemTime::now() - Duration::from_secs(hours_ago * 3600);
        file.set_modified(modified).expect("set mtime");
        path
    }

    fn source(&self) -> String {
        format!("file:{}", self.0.display())
    }
}

impl Drop for Backups {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The job's last stderr line is its one error, naming what is missing and how to override.
fn assert_refused(code: i32, stdout: &str, stderr: &str, found: &str) {
    assert_eq!(code, NO_BACKUP, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("astegni-delete-expired: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    assert!(
        errors[0].contains("no recent backup, so nothing was deleted"),
        "{stderr}"
    );
    assert!(errors[0].contains(found), "{found:?} in:\n{stderr}");
    assert!(errors[0].contains("--require-backup none"), "{stderr}");
    assert!(!stdout.contains("Deleted"), "{stdout}");
}

#[test]
fn an_old_or_missing_backup_file_refuses_and_a_fresh_one_lets_the_run_delete() {
    let astegni = Astegni::new("backup_file");
    scene(&astegni);
    let backups = Backups::new("file");
    let before = astegni.snapshot();
    let source = backups.source();
    let run = |args: &[&str]| {
        let mut all = vec!["--require-backup", &source];
        all.extend_from_slice(args);
        astegni.run(&all)
    };

    let (code, stdout, stderr) = run(&[]);
    assert_refused(code, &stdout, &stderr, "no backup file under");
    backups.file("astegni-old.dump", 30);
    let (code, stdout, stderr) = run(&[]);
    assert_refused(
        code,
        &stdout,
        &stderr,
        "was modified 30 h ago, more than 26 h",
    );
    let (code, stdout, stderr) = run(&["--backup-max-age", "24.5"]);
    assert_refused(code, &stdout, &stderr, "more than 24.5 h");
    let (code, stdout, stderr) = astegni.run(&["--require-backup", "file:/nonexistent/backups"]);
    assert_refused(code, &stdout, &stderr, "cannot read the backup path");
    assert_eq!(
        astegni.snapshot(),
        before,
        "a refused run changed the database"
    );

    // The newest file counts, at any depth; the old one may stay.
    backups.file("astegni-new.dump", 2);
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("backup check passed: the backup file"),
        "{stderr}"
    );
    assert!(
        stderr.contains("astegni-new.dump was modified 2 h ago"),
        "{stderr}"
    );
    assert_eq!(astegni.audit().len(), 2, "{stdout}");
}

#[test]
fn a_backup_command_must_succeed_in_time_and_its_text_is_never_shown() {
    let astegni = Astegni::new("backup_command");
    scene(&astegni);
    let before = astegni.snapshot();

    let failing = "command:PGPASSWORD=hunter2 exit 3";
    let alerts = Backups::new("alerts");
    let alert_file = alerts.0.join("alert.txt");
    let notify = format!("cat > {}", alert_file.display());
    let (code, stdout, stderr) =
        astegni.run(&["--require-backup", failing, "--notify-command", &notify]);
    assert_refused(
        code,
        &stdout,
        &stderr,
        "the backup command failed: it ended with exit status: 3",
    );
    assert!(
        !stderr.contains("hunter2") && !stdout.contains("hunter2"),
        "{stderr}"
    );
    let alert = std::fs::read_to_string(&alert_file).expect("the refusal alerts");
    assert!(alert.contains("FAILED (exit 4)"), "{alert}");
    assert!(
        alert.contains("no recent backup, so nothing was deleted"),
        "{alert}"
    );
    assert!(!alert.contains("hunter2"), "{alert}");

    let started = Instant::now();
    let (code, stdout, stderr) = astegni.run(&[
        "--require-backup",
        "command:sleep 60",
        "--backup-timeout",
        "1",
    ]);
    assert_refused(code, &stdout, &stderr, "killed after 1s");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        astegni.snapshot(),
        before,
        "a refused run changed the database"
    );

    let (code, stdout, stderr) = astegni.db_run_with_env(
        &[],
        &[("ASTEGNI_REQUIRE_BACKUP", "command:test -n \"$HOME\"")],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("backup check passed: the backup command succeeded"),
        "{stderr}"
    );
    assert_eq!(astegni.audit().len(), 2);
}

#[test]
fn dry_run_and_check_report_what_the_backup_check_found() {
    let astegni = Astegni::new("backup_dry");
    scene(&astegni);
    let backups = Backups::new("dry");
    backups.file("astegni.dump", 40);
    let source = backups.source();
    let before = astegni.snapshot();

    let (code, stdout, stderr) = astegni.run(&["--require-backup", &source, "--dry-run"]);
    assert_eq!(
        code, NO_BACKUP,
        "the dry run exits as the run would:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("[WOULD DELETE] role 'tutor'"), "{stdout}");
    assert!(
        stdout.contains("[WARNING] no recent backup: the backup file")
            && stdout.contains("modified 40 h ago, more than 26 h; the run would delete nothing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("but no recent backup: a run would delete nothing"),
        "{stdout}"
    );

    let (code, stdout, stderr) = astegni.run(&["check", "--require-backup", &source]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("backup: the backup file")
            && stdout.contains("a run would delete nothing (exit 4)"),
        "{stdout}"
    );
    assert_eq!(astegni.snapshot(), before);

    backups.file("astegni-today.dump", 1);
    let (code, stdout, _) = astegni.run(&["--require-backup", &source, "--dry-run"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("Backup: the backup file"), "{stdout}");
    let (_, stdout, _) = astegni.run(&["check", "--require-backup", &source]);
    assert!(
        stdout.contains("modified 1 h ago: deletions allowed"),
        "{stdout}"
    );
}

#[test]
fn approve_is_refused_too_and_bad_settings_are_configuration_errors() {
    let astegni = Astegni::new("backup_approve");
    let leaver = astegni.user("held@example.com", Some(&["user"]), "user");
    astegni.leave(leaver, -1);
    let before = astegni.snapshot();
    let id = leaver.to_string();
    let (code, stdout, stderr) =
        astegni.run(&["approve", &id, "--require-backup", "file:/nonexistent"]);
    assert_refused(
        code,
        &stdout,
        &stderr,
        "cannot read the backup path /nonexistent",
    );
    assert_eq!(astegni.snapshot(), before);

    for (args, expected) in [
        (
            vec!["--require-backup", "s3://bucket"],
            "ASTEGNI_REQUIRE_BACKUP",
        ),
        (vec!["--require-backup", "file:backups"], "absolute path"),
        (
            vec!["--require-backup", "archiver", "--backup-max-age", "0"],
            "above 0",
        ),
        (
            vec!["--require-backup", "archiver", "--backup-max-age", "soon"],
            "hours",
        ),
    ] {
        let (code, stdout, stderr) = astegni.run(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(expected) || first.contains("--require-backup"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(astegni.snapshot(), before);
}

/// Waits until `pg_stat_archiver` satisfies `condition` (SQL), for at most a minute.
fn wait_for_archiver(client: &mut postgres::Client, condition: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = format!("SELECT {condition} FROM pg_stat_archiver");
    while !client
        .query_one(&query, &[])
        .expect("pg_stat_archiver")
        .get::<_, bool>(0)
    {
        assert!(
            Instant::now() < deadline,
            "pg_stat_archiver never showed {condition}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes WAL and switches to a new segment, so that the archiver has a file to archive.
fn switch_wal(client: &mut postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS wal_filler (n int); INSERT INTO wal_filler VALUES (1)",
        )
        .expect("write WAL");
    client
        .batch_execute("SELECT pg_switch_wal()")
        .expect("pg_switch_wal");
}

/// An archive command copying into `<socket dir>/archive`.
fn archive_into(cluster: &Cluster) -> String {
    let archive = cluster.socket_dir().join("archive");
    format!("mkdir -p {0} && cp %p {0}/%f", archive.display())
}

/// Sets `archive_command` and reloads the configuration.
fn set_archive_command(admin: &mut postgres::Client, command: &str) {
    admin
        .batch_execute(&format!(
            "ALTER SYSTEM SET archive_command = {}",
            common::quote_literal(command)
        ))
        .expect("archive_command");
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .expect("reload");
}

/// A private cluster archiving its WAL into `<socket dir>/archive`, with an Astegni database
/// holding a due role and a due account; returns the database's conninfo.
fn archiving_cluster(cluster: &Cluster) -> String {
    let mut admin = cluster.admin();
    admin
        .batch_execute("ALTER SYSTEM SET archive_mode = on")
        .expect("archive_mode");
    set_archive_command(&mut admin, &archive_into(cluster));
    cluster.restart("fast");
    let url = cluster.create_db("astegni_archived");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    client
        .batch_execute(&schema_sql(&Variant::default()))
        .expect("schema");
    client
        .batch_execute(
            "INSERT INTO users (email, roles, active_role, is_active, account_status, \
                                scheduled_deletion_at) \
             VALUES ('leaver@example.com', '[\"user\"]', 'user', FALSE, 'pending_deletion', \
                     now() - interval '1 day')",
        )
        .expect("scene");
    url
}

#[test]
fn wal_archiving_must_be_recent_and_not_failing() {
    let astegni = Astegni::new("backup_no_archive");
    scene(&astegni);
    let archiving: String = common::admin_client()
        .query_one("SHOW archive_mode", &[])
        .expect("archive_mode")
        .get(0);
    if archiving == "off" {
        let before = astegni.snapshot();
        let (code, stdout, stderr) = astegni.run(&["--require-backup", "archiver"]);
        let found = "WAL archiving has not archived any file (archive_mode is off)";
        assert_refused(code, &stdout, &stderr, found);
        assert_eq!(astegni.snapshot(), before);
    }

    let cluster = common::start_private();
    let url = archiving_cluster(&cluster);
    let mut admin = cluster.admin();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let before = tables_content(&mut client, true);
    let run = |args: &[&str]| {
        let mut all = vec!["--database-url", &url, "--require-backup", "archiver"];
        all.extend_from_slice(args);
        common::run_job(&all, &[])
    };

    switch_wal(&mut admin);
    wait_for_archiver(&mut admin, "archived_count > 0");
    // An archive older than the limit: the limit is 1.08 s, the last file at least 2 s old.
    wait_for_archiver(&mut admin, "now() - last_archived_time > interval '2 s'");
    let (code, stdout, stderr) = run(&["--backup-max-age", "0.0003"]);
    assert_refused(code, &stdout, &stderr, "s ago, more than 1.1 s");
    assert_eq!(tables_content(&mut client, true), before);

    // A failing archive command after the last success.
    set_archive_command(&mut admin, "exit 1");
    switch_wal(&mut admin);
    wait_for_archiver(&mut admin, "failed_count > 0");
    let (code, stdout, stderr) = run(&[]);
    assert_refused(
        code,
        &stdout,
        &stderr,
        "WAL archiving is failing: archiving",
    );
    assert_eq!(tables_content(&mut client, true), before);

    // Archiving again: the run deletes.
    set_archive_command(&mut admin, &archive_into(&cluster));
    switch_wal(&mut admin);
    wait_for_archiver(&mut admin, "last_archived_time > last_failed_time");
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("backup check passed: WAL archiving: the last WAL file"),
        "{stderr}"
    );
    assert!(stdout.contains("1 accounts deleted"), "{stdout}");
}
