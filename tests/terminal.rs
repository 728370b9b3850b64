//! What a person at a terminal sees: the job run on a pseudo-terminal (`script`, from
//! bsdutils, which Debian always installs), where stdout and stderr are the same terminal.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::astegni::Astegni;

/// Runs the job on a pseudo-terminal with `env`; returns its exit code and what the terminal
/// showed. The job reads its settings from the environment: no quoting through the shell.
fn on_terminal(env: &[(&str, &str)]) -> (i32, String) {
    let exe = env!("CARGO_BIN_EXE_astegni-delete-expired");
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command", exe, "/dev/null"])
        .env_remove("DATABASE_URL")
        .env("ASTEGNI_LOG_TARGET", "stderr");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("script (bsdutils)");
    let shown = String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n");
    (output.status.code().unwrap_or(-1), shown)
}

#[test]
fn at_a_terminal_each_deletion_is_shown_once_in_the_reports_order() {
    let astegni = Astegni::new("terminal_once");
    let tutor = astegni.user("tutor@example.com", Some(&["user", "tutor"]), "tutor");
    astegni.profile("tutor", tutor, Some(-1));
    let leaver = astegni.user("leaver@example.com", Some(&["user"]), "user");
    astegni.leave(leaver, -1);
    let (code, shown) = on_terminal(&[("DATABASE_URL", &astegni.db.url)]);
    assert_eq!(code, 0, "{shown}");
    assert_eq!(shown.matches("leaver@example.com").count(), 1, "{shown}");
    assert_eq!(shown.matches("tutor@example.com").count(), 1, "{shown}");
    assert!(
        !shown.contains("astegni-delete-expired: Deleted"),
        "{shown}"
    );
    let header = shown.find("[2/2]").expect("the account phase's header");
    let deleted = shown
        .find("[DELETED] account of user")
        .expect("the account");
    assert!(header < deleted, "{shown}");
    assert!(
        shown.contains("COMPLETED: 1 roles and 1 accounts deleted"),
        "{shown}"
    );

    // A warning still reaches the terminal.
    let (code, shown) = on_terminal(&[
        ("DATABASE_URL", &astegni.db.url),
        (
            "ASTEGNI_ROLES",
            "tutor=tutor_profiles,student=no_such_table",
        ),
    ]);
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("astegni-delete-expired: error:"), "{shown}");
}

#[test]
fn at_a_terminal_an_unreachable_server_is_given_up_after_5_seconds() {
    let started = Instant::now();
    let (code, shown) = on_terminal(&[(
        "DATABASE_URL",
        "postgresql://astegni:secret-pw@127.0.0.1:9/astegni?sslmode=disable",
    )]);
    let elapsed = started.elapsed();
    assert_eq!(code, 75, "{shown}");
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(20),
        "gave up after {elapsed:?}: {shown}"
    );
    assert!(shown.contains("database unreachable after"), "{shown}");
    assert!(shown.contains(" in 5s: "), "{shown}");
    assert!(
        shown.contains("(--connect-timeout SECS waits longer)"),
        "{shown}"
    );
    assert!(!shown.contains("secret-pw"), "{shown}");
}
