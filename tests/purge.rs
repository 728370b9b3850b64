//! What the job deletes and what it keeps, on every schema variant of the schema notes.

mod common;

use common::astegni::{Astegni, Variant};

/// A user with a due tutor role, an active student role and a not-yet-due parent role, plus
/// a user whose account is due, and one whose account is scheduled later.
struct Scene {
    tutor_user: i64,
    due_tutor: i64,
    active_student: i64,
    later_parent: i64,
    leaving_user: i64,
    staying_user: i64,
}

fn scene(astegni: &Astegni) -> Scene {
    let roles = ["user", "tutor", "student", "parent"];
    let tutor_user = astegni.user("tutor@example.com", Some(&roles), "tutor");
    let due_tutor = astegni.profile("tutor", tutor_user, Some(-1));
    let active_student = astegni.profile("student", tutor_user, None);
    let later_parent = astegni.profile("parent", tutor_user, Some(30));
    astegni.children(tutor_user, Some(due_tutor));
    let leaving_user = astegni.user("leaver@example.com", Some(&["user", "student"]), "student");
    astegni.profile("student", leaving_user, None);
    astegni.children(leaving_user, None);
    astegni.leave(leaving_user, -2);
    let staying_user = astegni.user("later@example.com", Some(&["user"]), "user");
    astegni.leave(staying_user, 10);
    Scene {
        tutor_user,
        due_tutor,
        active_student,
        later_parent,
        leaving_user,
        staying_user,
    }
}

fn assert_scene_purged(astegni: &Astegni, scene: &Scene, stdout: &str) {
    assert!(
        !astegni.exists("tutor_profiles", scene.due_tutor),
        "{stdout}"
    );
    assert!(astegni.exists("student_profiles", scene.active_student));
    assert!(astegni.exists("parent_profiles", scene.later_parent));
    assert_eq!(
        astegni.roles_of(scene.tutor_user),
        Some(vec!["user".into(), "student".into(), "parent".into()])
    );
    assert_eq!(astegni.active_role(scene.tutor_user), "student");
    assert_eq!(
        astegni.count("tutor_reviews"),
        0,
        "review cascades with the profile"
    );
    assert!(!astegni.exists("users", scene.leaving_user));
    assert!(astegni.exists("users", scene.staying_user));
    assert_eq!(
        astegni.db.scalar_i64(&format!(
            "SELECT count(*) FROM user_sessions WHERE user_id = {}",
            scene.leaving_user
        )),
        0,
        "sessions cascade with the user"
    );
    assert_eq!(
        astegni.audit(),
        vec![
            (
                "account".into(),
                scene.leaving_user,
                Some("leaver@example.com".into()),
                None
            ),
            (
                "role".into(),
                scene.tutor_user,
                Some("tutor@example.com".into()),
                Some("tutor".into())
            ),
        ]
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.ends_with("] COMPLETED: 1 roles and 1 accounts deleted"),
        "last line: {last}"
    );
}

fn purges_variant(variant: Variant) {
    let astegni = Astegni::create("variant", variant.clone());
    let scene = scene(&astegni);
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{variant:?}\n{stdout}\n{stderr}");
    assert_scene_purged(&astegni, &scene, &stdout);
}

#[test]
fn json_roles() {
    purges_variant(Variant::default());
}

#[test]
fn jsonb_roles() {
    purges_variant(Variant {
        roles_type: "jsonb",
        ..Variant::default()
    });
}

#[test]
fn text_array_roles() {
    purges_variant(Variant {
        roles_type: "text[]",
        ..Variant::default()
    });
}

#[test]
fn varchar_array_roles_bigint_ids_and_timestamptz() {
    purges_variant(Variant {
        roles_type: "varchar(50)[]",
        id_type: "bigint",
        schedule_type: "timestamptz",
        ..Variant::default()
    });
}

#[test]
fn without_advertiser_table_or_requests_table() {
    let variant = Variant {
        with_advertiser: false,
        requests: None,
        ..Variant::default()
    };
    let astegni = Astegni::create("noadv", variant);
    let scene = scene(&astegni);
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_scene_purged(&astegni, &scene, &stdout);
    assert!(
        stdout.contains("[WARNING] table advertiser_profiles for role advertiser does not exist"),
        "{stdout}"
    );
}

#[test]
fn null_roles_and_user_without_email() {
    let astegni = Astegni::new("nullroles");
    let user = astegni.user("", None, "tutor");
    let profile = astegni.profile("tutor", user, Some(-1));
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!astegni.exists("tutor_profiles", profile));
    assert_eq!(astegni.roles_of(user), None, "NULL roles stay NULL");
    assert_eq!(astegni.active_role(user), "user");
    assert_eq!(
        astegni.audit(),
        vec![("role".into(), user, None, Some("tutor".into()))]
    );
}

#[test]
fn accounts_due_by_request_old_and_new_shapes() {
    for requests in [Some(false), Some(true)] {
        let astegni = Astegni::create(
            "requests",
            Variant {
                requests,
                ..Variant::default()
            },
        );
        let by_request = astegni.user("req@example.com", Some(&["user"]), "user");
        astegni.request(by_request, -1, None);
        let not_yet = astegni.user("notyet@example.com", Some(&["user"]), "user");
        astegni.request(not_yet, 5, None);
        let (code, stdout, stderr) = astegni.run(&[]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert!(!astegni.exists("users", by_request), "{requests:?}");
        assert!(astegni.exists("users", not_yet));
        assert_eq!(astegni.count("account_deletion_requests"), 1, "cascaded");
    }
}

/// What "Leave Astegni" writes: a request with no role, `delete_user` left FALSE. It deletes
/// the whole account, in the dry run, `pending` and the run alike.
#[test]
fn a_request_without_a_role_deletes_the_whole_account() {
    let astegni = Astegni::new("leaverequest");
    let user = astegni.user("leaver@example.com", Some(&["user", "tutor"]), "tutor");
    let tutor = astegni.profile("tutor", user, None);
    astegni.db.exec(&format!(
        "INSERT INTO account_deletion_requests (user_id, status, scheduled_deletion_at, \
         role, profile_id, delete_user) VALUES ({user}, 'pending', now() - interval '1 day', \
         NULL, NULL, FALSE)"
    ));
    let (_, pending, _) = astegni.run(&["pending", "--json"]);
    assert!(pending.contains("\"type\":\"account\""), "{pending}");
    let (code, stdout, stderr) = astegni.run(&["--dry-run"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("[WOULD DELETE] account of user {user}")),
        "{stdout}"
    );
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(!astegni.exists("users", user), "{stdout}");
    assert!(!astegni.exists("tutor_profiles", tutor));
    assert_eq!(
        astegni.audit(),
        vec![(
            "account".into(),
            user,
            Some("leaver@example.com".into()),
            None
        )]
    );
}

#[test]
fn surviving_request_is_marked_completed() {
    let astegni = Astegni::create(
        "setnull",
        Variant {
            requests_on_delete: "SET NULL",
            ..Variant::default()
        },
    );
    let user = astegni.user("req@example.com", Some(&["user"]), "user");
    let request = astegni.request(user, -1, None);
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!astegni.exists("users", user));
    assert_eq!(
        astegni.db.scalar_i64(&format!(
            "SELECT count(*) FROM account_deletion_requests WHERE id = {request} \
             AND status = 'completed' AND completed_at IS NOT NULL"
        )),
        1
    );
}

#[test]
fn role_only_request_deletes_one_profile() {
    let astegni = Astegni::new("roleonly");
    let user = astegni.user(
        "two@example.com",
        Some(&["user", "tutor", "parent"]),
        "parent",
    );
    let tutor = astegni.profile("tutor", user, None);
    let parent = astegni.profile("parent", user, None);
    let request = astegni.request(user, -1, Some("parent"));
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(astegni.exists("users", user));
    assert!(astegni.exists("tutor_profiles", tutor));
    assert!(!astegni.exists("parent_profiles", parent));
    assert_eq!(
        astegni.roles_of(user),
        Some(vec!["user".into(), "tutor".into()])
    );
    assert_eq!(astegni.active_role(user), "tutor");
    assert_eq!(
        astegni.db.scalar_i64(&format!(
            "SELECT count(*) FROM account_deletion_requests WHERE id = {request} \
             AND status = 'completed'"
        )),
        1
    );
    assert_eq!(
        astegni.audit(),
        vec![(
            "role".into(),
            user,
            Some("two@example.com".into()),
            Some("parent".into())
        )]
    );
}

/// Requests of several roles, their ids interleaved, one user with two: one batch, which
/// runs one statement per role, and every request is carried out once.
#[test]
fn role_only_requests_of_several_roles_are_all_carried_out() {
    let astegni = Astegni::new("roleseveral");
    let both = astegni.user(
        "both@example.com",
        Some(&["user", "tutor", "parent"]),
        "tutor",
    );
    let both_tutor = astegni.profile("tutor", both, None);
    let both_parent = astegni.profile("parent", both, None);
    let student = astegni.user("s@example.com", Some(&["user", "student"]), "student");
    let student_profile = astegni.profile("student", student, None);
    let requests = [
        astegni.request(both, -1, Some("tutor")),
        astegni.request(student, -1, Some("student")),
        astegni.request(both, -1, Some("parent")),
    ];
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for (table, id) in [
        ("tutor_profiles", both_tutor),
        ("parent_profiles", both_parent),
        ("student_profiles", student_profile),
    ] {
        assert!(!astegni.exists(table, id), "{table} {id}");
    }
    assert_eq!(astegni.roles_of(both), Some(vec!["user".into()]));
    assert_eq!(astegni.roles_of(student), Some(vec!["user".into()]));
    assert_eq!(
        astegni.db.scalar_i64(&format!(
            "SELECT count(*) FROM account_deletion_requests WHERE status = 'completed' \
             AND id IN ({}, {}, {})",
            requests[0], requests[1], requests[2]
        )),
        3
    );
    let mut audited: Vec<(i64, Option<String>)> = astegni
        .audit()
        .into_iter()
        .map(|(_, user, _, role)| (user, role))
        .collect();
    audited.sort();
    let mut expected = vec![
        (both, Some("parent".to_owned())),
        (both, Some("tutor".to_owned())),
        (student, Some("student".to_owned())),
    ];
    expected.sort();
    assert_eq!(audited, expected);
    assert!(
        stdout.contains("COMPLETED: 3 roles and 0 accounts deleted"),
        "{stdout}"
    );
}

#[test]
fn second_run_deletes_nothing() {
    let astegni = Astegni::new("twice");
    let scene = scene(&astegni);
    let (code, stdout, _) = astegni.run(&[]);
    assert_eq!(code, 0);
    assert_scene_purged(&astegni, &scene, &stdout);
    let before = astegni.snapshot();
    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(astegni.snapshot(), before);
    assert!(
        stdout.contains("[SUMMARY] No expired roles found"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[SUMMARY] No expired accounts found"),
        "{stdout}"
    );
    assert!(stdout.ends_with("COMPLETED: 0 roles and 0 accounts deleted\n"));
}

/// Without a journal every log line goes to stderr, the per-deletion lines a batch at a time:
/// each must arrive exactly once and in order, before an error logged later in the run and
/// before the summary.
#[test]
fn stderr_gets_every_deletion_once_and_in_order_across_batches() {
    let astegni = Astegni::new("stderr_order");
    astegni.db.exec(
        "INSERT INTO users (email, roles, active_role, account_status)
         SELECT 'u' || g || '@example.com', '[\"user\",\"tutor\"]', 'tutor', 'active'
         FROM generate_series(1, 700) g;
         INSERT INTO tutor_profiles (user_id, is_active, scheduled_deletion_at)
         SELECT id, FALSE, now() - interval '1 hour' FROM users ORDER BY id;
         INSERT INTO account_deletion_requests
             (user_id, status, scheduled_deletion_at, delete_user, role)
         SELECT min(id), 'pending', now() - interval '1 day', FALSE, 'coach' FROM users;",
    );
    let due: Vec<i64> = astegni
        .db
        .client()
        .query("SELECT id::bigint FROM tutor_profiles ORDER BY id", &[])
        .expect("read the due tutor profiles")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(due.len(), 700);
    let (code, _, stderr) = astegni.run(&[]);
    assert_eq!(code, 1, "the unknown role is a failed row\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let logged: Vec<i64> = lines
        .iter()
        .filter_map(|line| line.split("Deleted role 'tutor' (profile ").nth(1))
        .filter_map(|rest| rest.split(')').next()?.parse().ok())
        .collect();
    assert_eq!(logged, due, "every deletion once, in order\n{stderr}");
    let position = |needle: &str| {
        lines
            .iter()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}\n{stderr}"))
    };
    let last_deletion = position(&format!("(profile {})", due[699]));
    let error = position("error: failed to delete request");
    assert!(last_deletion < error, "{stderr}");
    assert!(
        lines.last().is_some_and(|line| line.contains("COMPLETED")),
        "{stderr}"
    );
}

/// "Manage Role" writes the profile's deadline in naive UTC, "Leave Astegni" the account's in
/// server-local time: on a server in Addis Ababa (UTC+3) each is read in its own zone.
#[test]
fn profile_deadlines_are_read_in_the_role_timezone() {
    let astegni = Astegni::new("rolezone");
    let user = astegni.user(
        "zone@example.com",
        Some(&["user", "tutor", "parent"]),
        "user",
    );
    let utc_in_an_hour = astegni.profile("tutor", user, None);
    let utc_an_hour_ago = astegni.profile("parent", user, None);
    astegni.db.exec(&format!(
        "UPDATE tutor_profiles SET is_active = FALSE, \
         scheduled_deletion_at = (now() AT TIME ZONE 'UTC') + interval '1 hour' \
         WHERE id = {utc_in_an_hour}; \
         UPDATE parent_profiles SET is_active = FALSE, \
         scheduled_deletion_at = (now() AT TIME ZONE 'UTC') - interval '1 hour' \
         WHERE id = {utc_an_hour_ago}"
    ));
    let leaver = astegni.user("leaver@example.com", Some(&["user"]), "user");
    astegni.db.exec(&format!(
        "UPDATE users SET account_status = 'pending_deletion', \
         scheduled_deletion_at = (now() AT TIME ZONE 'Africa/Addis_Ababa') - interval '1 hour' \
         WHERE id = {leaver}"
    ));
    let zones = ["--timezone", "Africa/Addis_Ababa", "--role-timezone", "UTC"];
    let (_, pending, _) = astegni.run(&[&["pending", "--json"][..], &zones].concat());
    assert!(pending.contains("\"role\":\"tutor\""), "{pending}");
    assert!(
        pending.contains("\"days_remaining\":1"),
        "not due yet: {pending}"
    );
    let (code, stdout, stderr) = astegni.run(&zones);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        astegni.exists("tutor_profiles", utc_in_an_hour),
        "deleted an hour early: {stdout}"
    );
    assert!(
        !astegni.exists("parent_profiles", utc_an_hour_ago),
        "{stdout}"
    );
    assert!(!astegni.exists("users", leaver), "{stdout}");
    let (code, stdout, _) = astegni.run(&["--timezone", "Africa/Addis_Ababa"]);
    assert_eq!(code, 0);
    assert!(
        !astegni.exists("tutor_profiles", utc_in_an_hour),
        "without --role-timezone, the naive UTC deadline reads as local time: {stdout}"
    );
    let (code, _, stderr) = astegni.run(&["--role-timezone", "Mars/Olympus_Mons"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid --role-timezone"), "{stderr}");
}
