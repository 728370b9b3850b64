//! Dry run, audit table, safety cap, failures, exit codes, secrets and configuration.

mod common;

use common::astegni::{Astegni, Variant};
use common::{TestDb, TestRole, run_job, tcp_conninfo};

fn due_scene(astegni: &Astegni) -> (i64, i64, i64) {
    let user = astegni.user("a@example.com", Some(&["user", "tutor"]), "tutor");
    let profile = astegni.profile("tutor", user, Some(-3));
    let leaver = astegni.user("b@example.com", Some(&["user"]), "user");
    astegni.leave(leaver, -1);
    (user, profile, leaver)
}

#[test]
fn dry_run_changes_nothing_and_says_so() {
    let astegni = Astegni::new("dryrun");
    let (user, profile, leaver) = due_scene(&astegni);
    let before = astegni.snapshot();
    let (code, stdout, stderr) = astegni.run(&["--dry-run"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(
        astegni.snapshot(),
        before,
        "the dry run changed the database"
    );
    assert!(
        stdout.contains(&format!(
            "[WOULD DELETE] role 'tutor' (profile {profile}) of user {user} <a@example.com>"
        )),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("[WOULD DELETE] account of user {leaver}")));
    assert!(
        stdout.lines().last().unwrap_or_default().ends_with(
            "COMPLETED: 1 roles and 1 accounts would be deleted (dry run: nothing was deleted)"
        ),
        "{stdout}"
    );
}

#[test]
fn report_lines_are_timestamped_in_the_guides_format() {
    let astegni = Astegni::new("format");
    due_scene(&astegni);
    let (code, stdout, _) = astegni.run(&[]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    for line in lines.iter().filter(|line| !line.is_empty()) {
        let stamp = &line[..22];
        assert!(
            chrono_like(stamp),
            "line without a [YYYY-MM-DD HH:MM:SS] prefix: {line}"
        );
    }
    let bodies: Vec<&str> = lines
        .iter()
        .filter(|line| !line.is_empty())
        .map(|line| &line[22..])
        .collect();
    let rule = "=".repeat(80);
    assert_eq!(bodies[0], rule);
    assert_eq!(bodies[1], "CRON JOB: Delete Expired Roles and Accounts");
    assert_eq!(bodies[3], "[1/2] Checking for expired role deletions...");
    assert!(bodies.contains(&"[SUMMARY] Deleted 1 expired role"));
    assert!(bodies.contains(&"[2/2] Checking for expired account deletions..."));
    assert!(bodies.contains(&"[SUMMARY] Deleted 1 expired account"));
    assert_eq!(
        bodies[bodies.len() - 1],
        "COMPLETED: 1 roles and 1 accounts deleted"
    );
}

fn chrono_like(stamp: &str) -> bool {
    let bytes = stamp.as_bytes();
    stamp.len() == 22
        && bytes[0] == b'['
        && bytes[20] == b']'
        && bytes[21] == b' '
        && stamp[1..20]
            .chars()
            .enumerate()
            .all(|(index, c)| match index {
                4 | 7 => c == '-',
                10 => c == ' ',
                13 | 16 => c == ':',
                _ => c.is_ascii_digit(),
            })
}

#[test]
fn audit_table_is_created_with_the_guides_ddl() {
    let astegni = Astegni::new("auditddl");
    let (code, _, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stderr}");
    let columns: Vec<(String, String, Option<String>)> = astegni
        .db
        .client()
        .query(
            "SELECT column_name::text, data_type::text, column_default::text \
             FROM information_schema.columns WHERE table_name = 'deletion_audit_log' \
             ORDER BY ordinal_position",
            &[],
        )
        .expect("columns")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let names: Vec<(&str, &str)> = columns
        .iter()
        .map(|(name, data_type, _)| (name.as_str(), data_type.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("id", "integer"),
            ("deletion_type", "character varying"),
            ("user_id", "integer"),
            ("user_email", "character varying"),
            ("role_name", "character varying"),
            ("deleted_at", "timestamp without time zone"),
            ("automated", "boolean"),
        ]
    );
    assert_eq!(columns[6].2.as_deref(), Some("true"));
}

#[test]
fn existing_audit_table_is_used_and_no_audit_writes_none() {
    let astegni = Astegni::new("auditexisting");
    astegni.db.exec(
        "CREATE TABLE deletion_audit_log (
            id SERIAL PRIMARY KEY, deletion_type VARCHAR(20), user_id INTEGER,
            user_email VARCHAR(255), role_name VARCHAR(50),
            deleted_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, automated BOOLEAN DEFAULT TRUE);
         INSERT INTO deletion_audit_log (deletion_type, user_id) VALUES ('role', 999);",
    );
    due_scene(&astegni);
    let (code, _, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(astegni.count("deletion_audit_log"), 3);
    assert_eq!(
        astegni.db.scalar_i64(
            "SELECT count(*) FROM deletion_audit_log WHERE automated AND deleted_at IS NOT NULL"
        ),
        3
    );

    let quiet = Astegni::new("noaudit");
    due_scene(&quiet);
    let (code, _, stderr) = quiet.run(&["--no-audit"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(quiet.count("users"), 1);
    assert_eq!(
        quiet
            .db
            .scalar_i64("SELECT count(*) FROM pg_tables WHERE tablename = 'deletion_audit_log'"),
        0
    );
}

#[test]
fn safety_cap_refuses_accounts_but_processes_roles() {
    let astegni = Astegni::new("cap");
    let (_, profile, _) = due_scene(&astegni);
    for n in 0..3 {
        let user = astegni.user(&format!("c{n}@example.com"), Some(&["user"]), "user");
        astegni.leave(user, -1);
    }
    let (code, stdout, stderr) = astegni.run(&["--max-accounts", "3"]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        !astegni.exists("tutor_profiles", profile),
        "roles still processed"
    );
    assert_eq!(astegni.count("users"), 5, "no account deleted");
    assert!(
        stderr.contains("4 accounts are due, more than --max-accounts 3")
            && stderr.contains("--max-accounts 4 (or 0 for no limit)"),
        "{stderr}"
    );
    let (code, _, stderr) = astegni.run(&["--max-accounts", "4"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(astegni.count("users"), 1);
}

#[test]
fn non_cascading_foreign_key_blocks_one_user_only() {
    foreign_key_blocks_one_row_only("fk", "");
}

#[test]
fn deferred_non_cascading_foreign_key_blocks_one_user_only() {
    foreign_key_blocks_one_row_only("fkdeferred", " DEFERRABLE INITIALLY DEFERRED");
}

/// A user and a profile that a foreign key without a cascade references, next to a free
/// user and a free profile.
struct Referenced {
    blocked: i64,
    free: i64,
    tutor_user: i64,
    blocked_profile: i64,
    free_profile: i64,
}

fn referenced_scene(astegni: &Astegni) -> Referenced {
    let blocked = astegni.user("blocked@example.com", Some(&["user"]), "user");
    astegni.leave(blocked, -1);
    let free = astegni.user("free@example.com", Some(&["user"]), "user");
    astegni.leave(free, -1);
    let tutor_user = astegni.user("t@example.com", Some(&["user", "tutor"]), "tutor");
    let blocked_profile = astegni.profile("tutor", tutor_user, Some(-1));
    let other_tutor = astegni.user("t2@example.com", Some(&["user", "tutor"]), "tutor");
    let free_profile = astegni.profile("tutor", other_tutor, Some(-1));
    Referenced {
        blocked,
        free,
        tutor_user,
        blocked_profile,
        free_profile,
    }
}

/// Only the referenced user and profile stay, untouched; the others go.
fn assert_only_referenced_stay(astegni: &Astegni, scene: &Referenced, stdout: &str) {
    assert!(astegni.exists("users", scene.blocked));
    assert!(!astegni.exists("users", scene.free));
    assert!(astegni.exists("tutor_profiles", scene.blocked_profile));
    assert!(!astegni.exists("tutor_profiles", scene.free_profile));
    assert_eq!(
        astegni.roles_of(scene.tutor_user),
        Some(vec!["user".into(), "tutor".into()]),
        "a role deletion that did not happen leaves the user's roles alone: {stdout}"
    );
    let audited: Vec<i64> = astegni.audit().iter().map(|row| row.1).collect();
    assert_eq!(audited.len(), 2);
    assert!(!audited.contains(&scene.blocked) && !audited.contains(&scene.tutor_user));
}

fn foreign_key_blocks_one_row_only(name: &str, constraint_timing: &str) {
    let astegni = Astegni::new(name);
    let scene = referenced_scene(&astegni);
    astegni.db.exec(&format!(
        "CREATE TABLE payments (id serial PRIMARY KEY, user_id integer
            CONSTRAINT payments_user_fk REFERENCES users(id){constraint_timing});
         INSERT INTO payments (user_id) VALUES ({});
         CREATE TABLE contracts (id serial PRIMARY KEY, tutor_profile_id integer
            CONSTRAINT contracts_tutor_fk REFERENCES tutor_profiles(id){constraint_timing});
         INSERT INTO contracts (tutor_profile_id) VALUES ({});",
        scene.blocked, scene.blocked_profile
    ));
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_only_referenced_stay(&astegni, &scene, &stdout);
    assert!(
        stdout.contains(&format!(
            "[BLOCKED] account of user {} <blocked@example.com>: payments_user_fk \
             (payments: 1 row); unblocked by --foreign-keys delete",
            scene.blocked
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "[BLOCKED] role 'tutor' (profile {}) of user {} <t@example.com>: \
             contracts_tutor_fk (contracts: 1 row)",
            scene.blocked_profile, scene.tutor_user
        )),
        "{stdout}"
    );
    assert!(stderr.contains("payments_user_fk"), "{stderr}");
    assert!(stderr.contains("contracts_tutor_fk"), "{stderr}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .ends_with("COMPLETED: 1 roles and 1 accounts deleted, 2 blocked"),
        "{stdout}"
    );
}

/// A deferred constraint trigger fails at COMMIT, after the DELETE returned its rows: the
/// batch's deletions must not be reported, nor audited, until the commit succeeded, and
/// only the guilty rows fail.
#[test]
fn a_check_failing_at_commit_fails_one_user_only() {
    let astegni = Astegni::new("commitcheck");
    let scene = referenced_scene(&astegni);
    astegni.db.exec(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF OLD.id = ANY (string_to_array(TG_ARGV[0], ',')::int[]) THEN
                 RAISE EXCEPTION 'kept by policy' USING ERRCODE = '23514',
                     CONSTRAINT = TG_NAME;
             END IF;
             RETURN OLD;
         END $$;",
    );
    astegni.db.exec(&format!(
        "CREATE CONSTRAINT TRIGGER users_kept AFTER DELETE ON users DEFERRABLE INITIALLY \
         DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse('{}');
         CREATE CONSTRAINT TRIGGER tutors_kept AFTER DELETE ON tutor_profiles DEFERRABLE \
         INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse('{}');",
        scene.blocked, scene.blocked_profile
    ));
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_only_referenced_stay(&astegni, &scene, &stdout);
    assert!(stderr.contains("users_kept"), "{stderr}");
    assert!(stderr.contains("tutors_kept"), "{stderr}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .ends_with("COMPLETED: 1 roles and 1 accounts deleted, 2 failed"),
        "{stdout}"
    );
}

#[test]
fn hostile_role_and_missing_tables_are_configuration_errors() {
    let astegni = Astegni::new("hostile");
    due_scene(&astegni);
    let before = astegni.snapshot();
    for (args, expected) in [
        (
            vec!["--role", "x=users; drop table users"],
            "invalid table name \"users; drop table users\"",
        ),
        (
            vec![
                "--role",
                "tutor=tutor_profiles",
                "--role",
                "coach=coach_profiles",
            ],
            "profile table coach_profiles for role coach not found",
        ),
        (vec!["--role", "tutor"], "expected NAME=TABLE"),
        (vec!["--bogus"], "invalid option '--bogus'"),
        (
            vec!["--dry-run", "--dry-run"],
            "--dry-run given more than once",
        ),
    ] {
        let (code, stdout, stderr) = astegni.run(&args);
        assert_eq!(code, 2, "{args:?}\n{stdout}\n{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("astegni-delete-expired: error: "),
            "{stderr}"
        );
    }
    let missing_users = TestDb::create("nousers");
    let (code, _, stderr) = run_job(&["--database-url", &missing_users.url], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("table users not found"), "{stderr}");
    assert_eq!(
        astegni.snapshot(),
        before,
        "a refused run changed the database"
    );
}

#[test]
fn roles_column_of_unexpected_type_is_refused() {
    let astegni = Astegni::create(
        "rolestype",
        Variant {
            roles_type: "text",
            ..Variant::default()
        },
    );
    let (code, _, stderr) = astegni.run(&[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "column users.roles has type text; expected json, jsonb, text[] or varchar[]"
        ),
        "{stderr}"
    );
}

#[test]
fn exit_codes_for_unreachable_and_bad_urls() {
    let (code, _, stderr) = run_job(
        &[
            "--database-url",
            "postgresql://app:Secr3tPw@127.0.0.1:1/astegni",
            "--connect-timeout",
            "1",
        ],
        &[],
    );
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("database unreachable"), "{stderr}");
    assert!(!stderr.contains("Secr3tPw"), "{stderr}");

    for url in [
        "postgresql://app:Secr3tPw@db:port/astegni",
        "host=db password=Secr3tPw sslmode=sometimes",
        "nonsense",
        "",
    ] {
        let (code, stdout, stderr) = run_job(&["--database-url", url], &[]);
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(!stderr.contains("Secr3tPw") && !stdout.contains("Secr3tPw"));
        assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
    }
    let (code, _, stderr) = run_job(&[], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no database given"), "{stderr}");
}

#[test]
fn env_file_mistakes_name_the_file_and_line() {
    let astegni = Astegni::new("envfile_lines");
    let env_file = std::env::temp_dir().join(format!("astegni-lines-{}.env", std::process::id()));
    let path = env_file.to_str().expect("path").to_owned();
    let write = |text: String| std::fs::write(&env_file, text).expect("env file");

    // Keys that look meant for the job but are not its settings: a warning each, and the
    // run goes on.
    write(format!(
        "SECRET_KEY=backend\nDATABASE_URL=\"{}\"\nASTEGNI_DRY_RUNN=true\nDATABSE_URL=x\n",
        astegni.db.url
    ));
    let (code, _, stderr) = run_job(&["check", "--env-file", &path], &[]);
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        format!(
            "warning: env file {path} line 3: ASTEGNI_DRY_RUNN is not a setting of this job (did you mean ASTEGNI_DRY_RUN?); ignored"
        ),
        format!(
            "warning: env file {path} line 4: DATABSE_URL is not a setting of this job (did you mean DATABASE_URL?); ignored"
        ),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} in\n{stderr}");
    }
    assert!(!stderr.contains("SECRET_KEY"), "{stderr}");

    // A bad value: the file and line, what is expected, no --help.
    write(format!(
        "DATABASE_URL=\"{}\"\nASTEGNI_MAX_ACCOUNTS=lots\n",
        astegni.db.url
    ));
    let (code, stdout, stderr) = run_job(&["--env-file", &path], &[]);
    // A bad secret: the file and line, never the value.
    write("DATABASE_URL=postgresql://astegni:Secret-PW@localhost:notaport/db\n".to_owned());
    let (secret_code, _, secret_stderr) = run_job(&["--env-file", &path], &[]);
    std::fs::remove_file(&env_file).expect("remove env file");
    assert_eq!(secret_code, 2, "{secret_stderr}");
    assert!(
        secret_stderr.contains(&format!("error: DATABASE_URL ({path} line 1): ")),
        "{secret_stderr}"
    );
    assert!(!secret_stderr.contains("Secret-PW"), "{secret_stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr,
        format!(
            "astegni-delete-expired: error: ASTEGNI_MAX_ACCOUNTS ({path} line 2) must be a \
             non-negative whole number, not \"lots\"\n"
        )
    );
}

#[test]
fn the_password_never_appears_in_any_output() {
    let password = "Pw-0f-Astegni-42";
    let role = TestRole::create("jobuser", password);
    let astegni = Astegni::new("secret");
    due_scene(&astegni);
    astegni
        .db
        .exec(&format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {0}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {0}; GRANT CREATE ON SCHEMA public TO {0};", role.name));
    let good = tcp_conninfo(&role.name, password, &astegni.db.name).expect("tcp port");
    let wrong = tcp_conninfo(&role.name, "not-the-password", &astegni.db.name).expect("tcp");
    let env_file = std::env::temp_dir().join(format!("astegni-secret-{}.env", std::process::id()));
    std::fs::write(
        &env_file,
        format!("# test\nexport DATABASE_URL=\"{good}\"\n"),
    )
    .expect("env file");

    let runs = [
        run_job(
            &["--env-file", env_file.to_str().expect("path"), "check"],
            &[],
        ),
        run_job(&["--env-file", env_file.to_str().expect("path")], &[]),
        run_job(&["--database-url", &wrong], &[]),
        run_job(
            &["--database-url", &good, "--timezone", "Mars/Olympus"],
            &[],
        ),
        run_job(&["--database-url", &good, "--role", "a=b;c"], &[]),
    ];
    std::fs::remove_file(&env_file).expect("remove env file");
    let codes: Vec<i32> = runs.iter().map(|run| run.0).collect();
    assert_eq!(codes, vec![0, 0, 2, 2, 2], "{runs:#?}");
    assert!(
        runs[2].2.contains("password authentication failed"),
        "{}",
        runs[2].2
    );
    assert!(
        runs[3].2.contains("invalid --timezone \"Mars/Olympus\""),
        "{}",
        runs[3].2
    );
    for (_, stdout, stderr) in &runs {
        assert!(!stdout.contains(password) && !stderr.contains(password));
    }
    assert_eq!(
        astegni.count("users"),
        1,
        "the run through the env file worked"
    );
}

#[test]
fn timezone_decides_when_a_naive_timestamp_is_due() {
    let astegni = Astegni::new("timezone");
    let user = astegni.user("tz@example.com", Some(&["user", "tutor"]), "tutor");
    let profile = astegni.profile("tutor", user, None);
    // Written as server-local naive time by an app in UTC+9: two hours ahead of UTC now,
    // i.e. seven hours ago in Tokyo.
    astegni.db.exec(&format!(
        "UPDATE tutor_profiles SET is_active = FALSE,
         scheduled_deletion_at = (now() AT TIME ZONE 'UTC') + interval '2 hours'
         WHERE id = {profile}"
    ));
    let (code, _, stderr) = astegni.run(&["--timezone", "UTC"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(astegni.exists("tutor_profiles", profile), "not due in UTC");
    let (code, _, stderr) = astegni.run(&["--timezone", "Asia/Tokyo"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!astegni.exists("tutor_profiles", profile), "due in Tokyo");
}

#[test]
fn check_reports_types_and_counts_without_changing_anything() {
    let astegni = Astegni::create(
        "check",
        Variant {
            roles_type: "text[]",
            with_advertiser: false,
            ..Variant::default()
        },
    );
    due_scene(&astegni);
    let later = astegni.user("later@example.com", Some(&["user", "parent"]), "user");
    astegni.profile("parent", later, Some(20));
    let before = astegni.snapshot();
    let (code, stdout, stderr) = astegni.run(&["check"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(astegni.snapshot(), before);
    for expected in [
        "users: id integer, roles text[], scheduled_deletion_at timestamp without time zone",
        "  accounts due now: 1, scheduled later: 0",
        "tutor_profiles (role tutor): id integer",
        "  due now: 1, scheduled later: 0",
        "parent_profiles (role parent)",
        "  due now: 0, scheduled later: 1",
        "advertiser_profiles (role advertiser): not found; skipped",
        "account_deletion_requests: scheduled_deletion_at timestamp without time zone, per-role columns present",
        "deletion_audit_log: not found; the first real run creates it",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}

#[test]
fn help_and_version() {
    let (code, stdout, _) = run_job(&["--help"], &[]);
    assert_eq!(code, 0);
    for expected in ["EXIT CODES", "75", "--max-accounts", "check"] {
        assert!(stdout.contains(expected), "{expected}");
    }
    let (code, stdout, _) = run_job(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("astegni-delete-expired "));
}

#[test]
fn each_command_has_its_own_help() {
    let (_, global, _) = run_job(&["--help"], &[]);
    let (code, help, _) = run_job(&["help"], &[]);
    assert_eq!(
        (code, &help),
        (0, &global),
        "help without a command is --help"
    );
    for (command, usage, option) in [
        ("run", "astegni-delete-expired [run] [OPTIONS]", "--dry-run"),
        ("check", "astegni-delete-expired check [--graph]", "--graph"),
        (
            "pending",
            "astegni-delete-expired pending [--days N]",
            "--days N",
        ),
        (
            "approve",
            "astegni-delete-expired approve USER_ID...",
            "--require-backup",
        ),
        (
            "notify-failure",
            "astegni-delete-expired notify-failure",
            "--webhook-url",
        ),
    ] {
        let (code, own, stderr) = run_job(&[command, "--help"], &[]);
        assert_eq!(code, 0, "{command} --help: {stderr}");
        assert!(
            own.starts_with(&format!("USAGE:\n    {usage}")),
            "{command}:\n{own}"
        );
        assert!(
            own.contains(option) && own.contains("EXAMPLE:"),
            "{command}:\n{own}"
        );
        assert!(
            own.len() < global.len() / 2,
            "{command} --help is the global help"
        );
        let (_, by_help, _) = run_job(&["help", command], &[]);
        assert_eq!(by_help, own, "help {command}");
        let (_, flag_first, _) = run_job(&["--help", command], &[]);
        assert_eq!(flag_first, own, "--help {command}");
    }
    let (code, stdout, stderr) = run_job(&["help", "bogus"], &[]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("unknown command \"bogus\""), "{stderr}");
}
