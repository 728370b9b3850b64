//! Operator features: alerts (the command; the webhook is `webhook.rs`'s), manual review (hold
//! and approve), the pending listing, and email privacy in the logs.

mod common;

use common::astegni::Astegni;

/// A due role, a due account and a due account with a positive balance (the "high-value"
/// one); returns (tutor profile, leaver, rich leaver).
fn scene(astegni: &Astegni) -> (i64, i64, i64) {
    astegni
        .db
        .exec("ALTER TABLE users ADD COLUMN account_balance numeric(12,2) DEFAULT 0");
    let user = astegni.user("tutor@example.com", Some(&["user", "tutor"]), "tutor");
    let profile = astegni.profile("tutor", user, Some(-1));
    let leaver = astegni.user("leaver@example.com", Some(&["user"]), "user");
    astegni.leave(leaver, -1);
    let rich = astegni.user("rich@example.com", Some(&["user", "advertiser"]), "user");
    astegni.leave(rich, -1);
    astegni.db.exec(&format!(
        "UPDATE users SET account_balance = 250 WHERE id = {rich}"
    ));
    (profile, leaver, rich)
}

/// Runs the job with a notify command that saves the alert; returns the alert.
fn alert_of_a_run(astegni: &Astegni, name: &str) -> String {
    let out = std::env::temp_dir().join(format!("astegni-{name}-{}.txt", std::process::id()));
    let command = format!("cat > {}", out.display());
    let (code, stdout, stderr) =
        astegni.run(&["--notify-command", &command, "--max-accounts", "0"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let alert = std::fs::read_to_string(&out).expect("the command ran");
    std::fs::remove_file(&out).expect("cleanup");
    alert
}

#[test]
fn notify_command_gets_the_summary_on_stdin() {
    let astegni = Astegni::new("notifycmd");
    scene(&astegni);
    let alert = alert_of_a_run(&astegni, "alert");
    let mut lines = alert.lines();
    assert_eq!(
        lines.next(),
        Some("Astegni deletion job: COMPLETED: 1 roles and 2 accounts deleted")
    );
    assert!(alert.contains("[DELETED] account of user"), "{alert}");
    assert!(
        alert.contains("CRON JOB: Delete Expired Roles and Accounts"),
        "{alert}"
    );
}

#[test]
fn a_failing_notify_command_changes_nothing_but_a_log_line() {
    let astegni = Astegni::new("notifyfail");
    scene(&astegni);
    let (code, _, stderr) = astegni.run(&["--notify-command", "exit 7"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("alert command failed: it ended with exit status: 7"),
        "{stderr}"
    );
    assert_eq!(astegni.count("users"), 1, "deletions happened");
}

#[test]
fn notify_on_controls_which_runs_alert() {
    let astegni = Astegni::new("notifyon");
    let marker = std::env::temp_dir().join(format!("astegni-on-{}", std::process::id()));
    let command = format!("touch {}", marker.display());
    // Nothing due: `deletions` stays quiet, `always` alerts.
    let (code, _, _) = astegni.run(&["--notify-command", &command]);
    assert_eq!(code, 0);
    assert!(!marker.exists(), "alerted although nothing was deleted");
    let (code, _, _) = astegni.run(&["--notify-command", &command, "--notify-on", "always"]);
    assert_eq!(code, 0);
    assert!(marker.exists(), "--notify-on always did not alert");
    std::fs::remove_file(&marker).expect("cleanup");
    // Deletions but success: `failure` stays quiet.
    scene(&astegni);
    let (code, _, _) = astegni.run(&[
        "--notify-command",
        &command,
        "--notify-on",
        "failure",
        "--max-accounts",
        "0",
    ]);
    assert_eq!(code, 0);
    assert!(!marker.exists(), "--notify-on failure alerted on success");
}

#[test]
fn held_accounts_wait_for_approval() {
    let astegni = Astegni::new("hold");
    let (profile, leaver, rich) = scene(&astegni);
    let hold = "account_balance > 0 OR roles::text LIKE '%advertiser%'";
    let (code, stdout, stderr) = astegni.run(&["--hold-where", hold]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!astegni.exists("tutor_profiles", profile));
    assert!(!astegni.exists("users", leaver));
    assert!(astegni.exists("users", rich), "held account deleted");
    assert!(
        stdout.contains(&format!(
            "[HELD] account of user {rich} <rich@example.com>: matches --hold-where"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("[SUMMARY] 1 due accounts held for manual review"));
    assert!(
        stdout.ends_with("COMPLETED: 1 roles and 1 accounts deleted, 1 held\n"),
        "{stdout}"
    );

    // `check` shows the rule is valid and what it holds.
    let (code, stdout, _) = astegni.run(&["check", "--hold-where", hold]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("accounts due now: 1 (1 held by --hold-where"),
        "{stdout}"
    );

    // Approving a user that is not due deletes nothing and says so.
    let staying = astegni.user("stay@example.com", Some(&["user"]), "user");
    let (code, stdout, _) = astegni.run(&["approve", &rich.to_string(), &staying.to_string()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(&format!("[FAILED] account of user {staying}: not due")));
    assert!(astegni.exists("users", staying));
    assert!(!astegni.exists("users", rich), "approved account kept");
    let automated: Vec<(i64, bool)> = astegni
        .db
        .client()
        .query(
            "SELECT user_id::bigint, automated FROM deletion_audit_log \
             WHERE deletion_type = 'account' ORDER BY user_id",
            &[],
        )
        .expect("audit")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(automated, vec![(leaver, true), (rich, false)]);
}

#[test]
fn approving_only_unknown_users_deletes_nothing_and_says_so() {
    let astegni = Astegni::new("approveunknown");
    let (profile, leaver, rich) = scene(&astegni);
    let (code, stdout, stderr) = astegni.run(&["approve", "987654", "987655"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    for user in ["987654", "987655"] {
        assert!(
            stdout.contains(&format!("[FAILED] account of user {user}: no such user")),
            "{stdout}"
        );
    }
    assert!(
        stdout.ends_with("COMPLETED: 0 roles and 0 accounts deleted, 2 failed\n"),
        "{stdout}"
    );
    assert!(astegni.exists("tutor_profiles", profile));
    assert!(astegni.exists("users", leaver) && astegni.exists("users", rich));
}

#[test]
fn an_invalid_hold_rule_is_a_configuration_error() {
    let astegni = Astegni::new("badhold");
    scene(&astegni);
    let before = astegni.snapshot();
    for (rule, expected) in [
        (
            "no_such_column > 0",
            "invalid --hold-where: column \"no_such_column\" does not exist",
        ),
        ("account_balance + 1", "invalid --hold-where"),
        ("true); DELETE FROM users; --", "without ';' or comments"),
    ] {
        let (code, _, stderr) = astegni.run(&["check", "--hold-where", rule]);
        assert_eq!(code, 2, "{rule}: {stderr}");
        assert!(stderr.contains(expected), "{rule}: {stderr}");
        let (code, _, _) = astegni.run(&["--hold-where", rule]);
        assert_eq!(code, 2);
    }
    assert_eq!(astegni.snapshot(), before);
}

#[test]
fn pending_lists_what_is_coming_sorted() {
    let astegni = Astegni::new("pending");
    let (profile, leaver, rich) = scene(&astegni);
    let soon = astegni.user("soon@example.com", Some(&["user", "parent"]), "parent");
    let soon_profile = astegni.profile("parent", soon, Some(3));
    let later = astegni.user("later@example.com", Some(&["user"]), "user");
    astegni.leave(later, 20);

    let (code, stdout, stderr) = astegni.run(&[
        "pending",
        "--json",
        "--hold-where",
        "account_balance > 0",
        "--log-emails",
        "masked",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let items: Vec<&str> = stdout.trim().trim_matches(['[', ']']).split("},").collect();
    assert_eq!(items.len(), 4, "{stdout}");
    assert!(
        items[3].contains(&format!("\"profile_id\":{soon_profile}")),
        "{stdout}"
    );
    assert!(items[3].contains("\"days_remaining\":3"), "{stdout}");
    assert!(stdout.contains("\"type\":\"role\",\"role\":\"tutor\",\"user_id\":"));
    assert!(stdout.contains(&format!("\"profile_id\":{profile}")));
    assert!(stdout.contains(&format!(
        "\"user_id\":{rich},\"profile_id\":null,\"email\":\"r***@example.com\""
    )));
    assert!(stdout.contains("\"held\":true"));
    assert!(stdout.contains(&format!("\"user_id\":{leaver}")));
    assert!(
        !stdout.contains(&format!("\"user_id\":{later},")),
        "scheduled beyond 7 days: {stdout}"
    );
    assert!(!stdout.contains("rich@example.com"), "masked");

    let (code, stdout, _) = astegni.run(&["pending", "--days", "30"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    // The session's time zone, the server's: UTC on the harness's cluster, the
    // machine's (Etc/UTC, say) on another server. The column is 16 wide.
    let zone: String = astegni
        .db
        .client()
        .query_one("SELECT current_setting('TimeZone')", &[])
        .expect("TimeZone")
        .get(0);
    let due_header: String = format!("DUE ({zone})").chars().take(16).collect();
    assert!(
        lines[0].starts_with(&due_header) && lines[0].contains("DAYS LEFT"),
        "{due_header}: {stdout}"
    );
    assert!(lines[1].contains("due now"), "{stdout}");
    assert!(
        lines[5].contains("later@example.com") && lines[5].contains(" 20 "),
        "{stdout}"
    );
}

#[test]
fn emails_can_be_masked_or_left_out_of_report_and_logs() {
    let astegni = Astegni::new("privacy");
    scene(&astegni);
    let (code, stdout, stderr) = astegni.run(&["--log-emails", "masked", "--max-accounts", "0"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("<l***@example.com>") && stdout.contains("<t***@example.com>"));
    assert!(!stdout.contains("leaver@") && !stderr.contains("leaver@"));
    let emails: Vec<Option<String>> = astegni
        .db
        .client()
        .query(
            "SELECT user_email::text FROM deletion_audit_log ORDER BY id",
            &[],
        )
        .expect("audit")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        emails.contains(&Some("leaver@example.com".into())),
        "the audit keeps it"
    );

    let quiet = Astegni::new("privacynone");
    scene(&quiet);
    let (code, stdout, stderr) = quiet.run(&["--log-emails", "none", "--max-accounts", "0"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains('@') && !stderr.contains('@'),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn notify_failure_alerts_unless_the_run_already_did() {
    let state = std::env::temp_dir().join(format!("astegni-state-{}", std::process::id()));
    std::fs::create_dir_all(&state).expect("state dir");
    let out = state.join("alert.txt");
    let command = format!("cat > {}", out.display());
    let env = [
        ("MONITOR_INVOCATION_ID", "0123456789abcdef0123456789abcdef"),
        ("MONITOR_SERVICE_RESULT", "exit-code"),
        ("MONITOR_EXIT_STATUS", "75"),
        ("STATE_DIRECTORY", state.to_str().expect("path")),
        ("ASTEGNI_NOTIFY_COMMAND", &command),
    ];
    let (code, _, stderr) = common::run_job(&["notify-failure"], &env);
    assert_eq!(code, 0, "{stderr}");
    let alert = std::fs::read_to_string(&out).expect("alerted");
    assert!(
        alert.starts_with("Astegni deletion job FAILED on ")
            && alert.contains("exit-code (exit status 75)"),
        "{alert}"
    );
    std::fs::remove_file(&out).expect("cleanup");

    // A run that sent its own failure alert leaves a marker; the hook then stays quiet.
    let marker = state.join("alerted-0123456789abcdef0123456789abcdef");
    std::fs::write(&marker, b"").expect("marker");
    let (code, _, _) = common::run_job(&["notify-failure"], &env);
    assert_eq!(code, 0);
    assert!(!out.exists(), "alerted twice");
    assert!(!marker.exists(), "marker left behind");
    std::fs::remove_dir_all(&state).expect("cleanup");
}

#[test]
fn a_large_run_alerts_with_its_counts_in_the_subject() {
    let astegni = Astegni::new("notifylarge");
    astegni.db.exec(
        "INSERT INTO users (email, roles, active_role, account_status, scheduled_deletion_at) \
         SELECT 'u' || n || '@example.com', '[\"user\"]', 'user', 'pending_deletion', \
         now() - interval '1 day' FROM generate_series(1, 250) AS n",
    );
    let alert = alert_of_a_run(&astegni, "alert-large");
    assert_eq!(
        alert.lines().next(),
        Some("Astegni deletion job: COMPLETED: 0 roles and 250 accounts deleted"),
        "{alert}"
    );
    assert!(
        alert.contains("more lines in the report and the journal"),
        "{alert}"
    );
    assert!(
        alert
            .trim_end()
            .ends_with("COMPLETED: 0 roles and 250 accounts deleted"),
        "the transcript ends with the last line: {alert}"
    );
}
