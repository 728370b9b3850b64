//! Restores committed while the job runs, and several runs at once.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::astegni::Astegni;

/// Waits until a backend of the job is blocked on a lock (polling pg_stat_activity, not
/// sleeping blindly); panics after 60 s.
fn wait_for_job_to_block(astegni: &Astegni) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = astegni.db.client();
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'astegni-delete-expired' AND wait_event_type = 'Lock'",
                &[],
            )
            .expect("pg_stat_activity")
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the job never waited for the lock"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn run_in_background(
    astegni: &Astegni,
    args: &[&str],
) -> thread::JoinHandle<(i32, String, String)> {
    let mut all: Vec<String> = vec!["--database-url".into(), astegni.db.url.clone()];
    all.extend(args.iter().map(|arg| arg.to_string()));
    thread::spawn(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        common::run_job(&args, &[])
    })
}

#[test]
fn role_restored_while_the_job_waits_is_kept() {
    let astegni = Astegni::new("restorerole");
    let user = astegni.user("r@example.com", Some(&["user", "tutor"]), "tutor");
    let restored = astegni.profile("tutor", user, Some(-1));
    let other_user = astegni.user("o@example.com", Some(&["user", "tutor"]), "tutor");
    let other = astegni.profile("tutor", other_user, Some(-1));

    let mut app = astegni.db.client();
    let mut restore = app.transaction().expect("begin");
    restore
        .execute(
            "UPDATE tutor_profiles SET is_active = TRUE, scheduled_deletion_at = NULL \
             WHERE id = $1",
            &[&(restored as i32)],
        )
        .expect("restore profile");
    let job = run_in_background(&astegni, &["--lock-timeout", "60"]);
    wait_for_job_to_block(&astegni);
    restore.commit().expect("commit restore");
    let (code, stdout, stderr) = job.join().expect("job thread");

    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        astegni.exists("tutor_profiles", restored),
        "restored role deleted"
    );
    assert!(!astegni.exists("tutor_profiles", other));
    assert_eq!(
        astegni.roles_of(user),
        Some(vec!["user".into(), "tutor".into()])
    );
    assert_eq!(astegni.audit().len(), 1, "{:?}", astegni.audit());
}

#[test]
fn account_restored_while_the_job_waits_is_kept() {
    let astegni = Astegni::new("restoreacct");
    let user = astegni.user("r@example.com", Some(&["user"]), "user");
    astegni.leave(user, -1);
    astegni.request(user, -1, None);
    let other = astegni.user("o@example.com", Some(&["user"]), "user");
    astegni.request(other, -1, None);

    // The app cancels the request first and the user second, as a login does; the job
    // blocks on the user row, and must then not trust its old view of the request.
    let mut app = astegni.db.client();
    let mut restore = app.transaction().expect("begin");
    restore
        .batch_execute(&format!(
            "UPDATE account_deletion_requests SET status = 'cancelled', cancelled_at = now() \
             WHERE user_id = {user};
             UPDATE users SET account_status = 'active', is_active = TRUE,
             scheduled_deletion_at = NULL WHERE id = {user};"
        ))
        .expect("restore account");
    let job = run_in_background(&astegni, &["--lock-timeout", "60"]);
    wait_for_job_to_block(&astegni);
    restore.commit().expect("commit restore");
    let (code, stdout, stderr) = job.join().expect("job thread");

    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(astegni.exists("users", user), "restored account deleted");
    assert!(!astegni.exists("users", other));
    assert_eq!(astegni.audit().len(), 1, "{:?}", astegni.audit());
}

#[test]
fn a_row_locked_too_long_is_reported_and_the_rest_completes() {
    let astegni = Astegni::new("locked");
    let user = astegni.user("l@example.com", Some(&["user", "tutor"]), "tutor");
    let locked = astegni.profile("tutor", user, Some(-1));
    let other_user = astegni.user("o@example.com", Some(&["user"]), "user");
    astegni.leave(other_user, -1);

    let mut app = astegni.db.client();
    let mut holder = app.transaction().expect("begin");
    holder
        .execute(
            "SELECT 1 FROM tutor_profiles WHERE id = $1 FOR UPDATE",
            &[&(locked as i32)],
        )
        .expect("lock");
    let (code, stdout, stderr) = astegni.run(&["--lock-timeout", "1"]);
    holder.rollback().expect("rollback");

    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("[FAILED] role 'tutor' (profile {locked}")));
    assert!(stdout.contains("locked by another transaction"), "{stdout}");
    assert!(astegni.exists("tutor_profiles", locked));
    assert!(
        !astegni.exists("users", other_user),
        "the rest of the run completed"
    );

    let (code, stdout, stderr) = astegni.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        !astegni.exists("tutor_profiles", locked),
        "the next run deletes it"
    );
}

#[test]
fn four_runs_at_once_delete_everything_exactly_once() {
    let astegni = Astegni::new("concurrent");
    astegni.db.exec(
        "INSERT INTO users (email, roles, active_role, account_status, scheduled_deletion_at)
         SELECT 'u' || g || '@example.com', '[\"user\",\"tutor\",\"student\"]', 'tutor',
                CASE WHEN g % 3 = 0 THEN 'pending_deletion' ELSE 'active' END,
                CASE WHEN g % 3 = 0 THEN now() - interval '1 day' END
         FROM generate_series(1, 3000) g;
         INSERT INTO tutor_profiles (user_id, is_active, scheduled_deletion_at)
         SELECT id, FALSE, now() - interval '1 hour' FROM users;
         INSERT INTO student_profiles (user_id, is_active) SELECT id, TRUE FROM users;
         INSERT INTO account_deletion_requests (user_id, status, scheduled_deletion_at, delete_user)
         SELECT id, 'pending', now() - interval '1 day', TRUE FROM users WHERE id % 3 = 1
           AND id <= 600;",
    );
    let due_roles = 3000;
    let due_accounts = astegni.db.scalar_i64(
        "SELECT count(*) FROM users WHERE account_status = 'pending_deletion' \
         OR id IN (SELECT user_id FROM account_deletion_requests)",
    );
    let jobs: Vec<_> = (0..4)
        .map(|_| run_in_background(&astegni, &["--max-accounts", "0"]))
        .collect();
    let mut deleted = (0, 0);
    for job in jobs {
        let (code, stdout, stderr) = job.join().expect("job thread");
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert!(!stdout.contains("[FAILED]"), "{stdout}");
        let last = stdout.lines().last().expect("report");
        let counts: Vec<u64> = last
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|part| part.parse().ok())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(2)
            .collect();
        deleted.0 += counts[1];
        deleted.1 += counts[0];
    }
    assert_eq!(
        deleted,
        (due_roles, due_accounts as u64),
        "reported deletions"
    );
    assert_eq!(astegni.count("tutor_profiles"), 0);
    assert_eq!(astegni.count("users"), 3000 - due_accounts);
    let audit = astegni.audit();
    let roles = audit.iter().filter(|row| row.0 == "role").count() as u64;
    let accounts = audit.iter().filter(|row| row.0 == "account").count() as i64;
    assert_eq!(
        (roles, accounts),
        (due_roles, due_accounts),
        "one audit row each"
    );
    assert_eq!(
        astegni.db.scalar_i64(
            "SELECT count(*) FROM (SELECT deletion_type, user_id, role_name \
             FROM deletion_audit_log GROUP BY 1, 2, 3 HAVING count(*) > 1) dup"
        ),
        0
    );
}
