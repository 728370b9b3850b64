//! Rows and tables locked by the application (a long transaction, a migration, a trigger that
//! hangs): the job waits a bounded time, reports what it could not delete, and deletes the
//! rest.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common;
use crate::support::invariants::Phase;
use crate::support::workload::{Db, Workload};
use crate::support::{Rng, poll_until, run_trials};
use crate::trial::{self, MEDIUM, Trial, job_waits_for_a_lock};

/// Due rows of `workload` depending on the locked profiles and users: (profile rows, users).
fn blocked_by(
    workload: &Workload,
    profiles: &[(String, i64, i64)],
    users: &[i64],
) -> (BTreeSet<(String, i64)>, BTreeSet<i64>) {
    let mut client = workload.db.client();
    let locked_users: Vec<i64> = users.to_vec();
    let mut blocked_profiles: BTreeSet<(String, i64)> = profiles
        .iter()
        .map(|(role, id, _)| (role.clone(), *id))
        .collect();
    for row in client
        .query(
            "SELECT role, id FROM fault_check.due_profile WHERE user_id = ANY($1)",
            &[&locked_users],
        )
        .expect("profiles of locked users")
    {
        blocked_profiles.insert((row.get(0), row.get(1)));
    }
    let mut blocked_users: BTreeSet<i64> = users.iter().copied().collect();
    // An account deletion cascades into the user's profiles: a locked profile holds it up.
    let profile_users: Vec<i64> = profiles.iter().map(|(_, _, user)| *user).collect();
    for row in client
        .query(
            "SELECT id FROM fault_check.due_user WHERE id = ANY($1)",
            &[&profile_users],
        )
        .expect("due users of locked profiles")
    {
        blocked_users.insert(row.get(0));
    }
    (blocked_profiles, blocked_users)
}

#[test]
fn rows_locked_by_the_app_are_waited_for_at_most_lock_timeout() {
    run_trials("app_row_locks", 2, 6, |seed| {
        let mut rng = Rng::new(seed);
        let mut trial = Trial::random(Db::shared("fault_rowlock"), seed, MEDIUM);
        let mut client = trial.client();
        let profiles: Vec<(String, i64, i64)> = client
            .query(
                "SELECT role, id, user_id FROM fault_check.due_profile ORDER BY role, id",
                &[],
            )
            .expect("due profiles")
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        let users: Vec<i64> = client
            .query("SELECT id FROM fault_check.due_user ORDER BY id", &[])
            .expect("due users")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut locked_profiles = Vec::new();
        let mut locked_users = Vec::new();
        for _ in 0..rng.between(1, 3) {
            if rng.percent(50) {
                locked_profiles.push(rng.pick(&profiles).clone());
            } else {
                locked_users.push(*rng.pick(&users));
            }
        }
        locked_profiles.sort();
        locked_profiles.dedup();
        locked_users.sort();
        locked_users.dedup();
        // The app's long transaction: SELECT ... FOR UPDATE (or an uncommitted UPDATE).
        let mut app = trial.client();
        let mut holder = app.transaction().expect("begin");
        for (role, id, _) in &locked_profiles {
            let sql = if rng.percent(50) {
                format!("SELECT 1 FROM {role}_profiles WHERE id = $1::bigint FOR UPDATE")
            } else {
                format!("UPDATE {role}_profiles SET bio = 'editing' WHERE id = $1::bigint")
            };
            holder.execute(&sql, &[id]).expect("lock profile");
        }
        for id in &locked_users {
            holder
                .execute(
                    "SELECT 1 FROM users WHERE id = $1::bigint FOR UPDATE",
                    &[id],
                )
                .expect("lock user");
        }
        let (blocked_profiles, blocked_users) =
            blocked_by(&trial.workload, &locked_profiles, &locked_users);
        let blocked = blocked_profiles.len() + blocked_users.len();
        let first = trial
            .spawn(&["--lock-timeout", "1"])
            .wait(Duration::from_secs(120));
        // Each blocked row costs at most two waits of lock_timeout (in the batch, then alone).
        let bound = Duration::from_secs(2 * blocked as u64 + 15);
        if first.hung || first.elapsed > bound {
            trial.result.fail(format!(
                "{blocked} blocked rows, lock_timeout 1 s: took {:.1}s (bound {}s): {}",
                first.elapsed.as_secs_f64(),
                bound.as_secs(),
                first.describe()
            ));
        }
        if first.code != 1 {
            trial.result.fail(format!(
                "want exit 1 (rows left locked): {}",
                first.describe()
            ));
        }
        for (role, id, user) in &locked_profiles {
            // Reported as the profile, or as the role-only request that names it.
            let requests: Vec<String> = client
                .query(
                    "SELECT id FROM fault_check.request_before WHERE due AND NOT delete_user \
                     AND user_id = $1 AND role = $2",
                    &[user, role],
                )
                .expect("requests")
                .iter()
                .map(|row| {
                    format!(
                        "[FAILED] role requested by account_deletion_requests {}:",
                        row.get::<_, i64>(0)
                    )
                })
                .collect();
            let needle = format!("[FAILED] role '{role}' (profile {id} in {role}_profiles)");
            if !first.stdout.contains(&needle)
                && !requests
                    .iter()
                    .any(|request| first.stdout.contains(request))
            {
                trial.result.fail(format!(
                    "locked {role} profile {id} not reported: {}",
                    first.describe()
                ));
            }
        }
        for id in &locked_users {
            if !first
                .stdout
                .contains(&format!("[FAILED] account of user {id}"))
            {
                trial.result.fail(format!(
                    "locked user {id} not reported: {}",
                    first.describe()
                ));
            }
        }
        trial.check(Phase::AfterFault);
        // The rest of the run completed: what is still due is only what the locks held up.
        let still_due_profiles: Vec<(String, i64)> = client
            .query(
                "SELECT role, id FROM fault_check.profile_now WHERE due ORDER BY 1, 2",
                &[],
            )
            .expect("still due")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        for profile in &still_due_profiles {
            if !blocked_profiles.contains(profile) {
                trial.result.fail(format!(
                    "{profile:?} not locked, yet still due after the run"
                ));
            }
        }
        for row in client
            .query("SELECT id FROM fault_check.user_now WHERE due", &[])
            .expect("still due users")
        {
            let id: i64 = row.get(0);
            if !blocked_users.contains(&id) {
                trial
                    .result
                    .fail(format!("user {id} not locked, yet still due after the run"));
            }
        }
        holder.rollback().expect("release");
        trial.result.note = format!(
            "locked {} profiles and {} users ({blocked} due rows held up): exit {} in {:.1}s, \
             {} reported",
            locked_profiles.len(),
            locked_users.len(),
            first.code,
            first.elapsed.as_secs_f64(),
            first.failed_lines().len()
        );
        trial.result.count(
            "locked_rows",
            (locked_profiles.len() + locked_users.len()) as u64,
        );
        trial.finish()
    });
}

/// The app holds the profile a due role-only request names (the user is editing it) for less
/// than `--lock-timeout`: the job must wait for it, as it does for the request and the user,
/// and then delete it.
#[test]
fn a_profile_held_briefly_by_the_app_is_waited_for_in_a_role_request() {
    let astegni = common::astegni::Astegni::new("fault_reqwait");
    let user = astegni.user("w@example.com", Some(&["user", "tutor"]), "tutor");
    let profile = astegni.profile("tutor", user, None);
    let request = astegni.request(user, -1, Some("tutor"));
    let mut app = astegni.db.client();
    let mut holder = app.transaction().expect("begin");
    holder
        .execute(
            "UPDATE tutor_profiles SET bio = 'editing' WHERE id = $1",
            &[&(profile as i32)],
        )
        .expect("edit the profile");
    let mut job = trial::spawn(&astegni.db.url, &["--lock-timeout", "30"]);
    let mut watcher = astegni.db.client();
    let waited = poll_until(Duration::from_secs(60), || {
        !job.running() || job_waits_for_a_lock(&mut watcher)
    }) && job.running();
    holder.commit().expect("the app saves the profile");
    let run = job.wait(Duration::from_secs(60));
    assert!(
        waited,
        "the job did not wait for the profile of request {request}: {}",
        run.describe()
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(!astegni.exists("tutor_profiles", profile));
}

/// Holds `lock_sql` in an open transaction on a new connection while `run` runs.
fn with_app_lock<T>(trial: &Trial, lock_sql: &str, run: impl FnOnce() -> T) -> T {
    let mut app = trial.client();
    let mut holder = app.transaction().expect("begin");
    holder.batch_execute(lock_sql).expect("take the lock");
    let value = run();
    holder.rollback().expect("release");
    value
}

#[test]
fn statement_timeout_ends_a_blocked_statement_with_a_clear_error() {
    let trial = Trial::fixed(Db::shared("fault_stmt"), 7, MEDIUM);
    // A migration holds tutor_profiles: even reading it blocks. lock_timeout 0 (wait forever)
    // leaves the statement timeout as the only bound.
    let first = with_app_lock(
        &trial,
        "LOCK TABLE tutor_profiles IN ACCESS EXCLUSIVE MODE",
        || {
            trial
                .spawn(&["--statement-timeout", "1", "--lock-timeout", "0"])
                .wait(Duration::from_secs(60))
        },
    );
    assert!(
        !first.hung && first.elapsed < Duration::from_secs(15),
        "{}",
        first.describe()
    );
    assert_eq!(first.code, 1, "{}", first.describe());
    let last = first.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("astegni-delete-expired: error: ") && last.contains("statement timeout"),
        "{}",
        first.describe()
    );
    trial.finish_clean();
}

#[test]
fn a_slow_statement_is_cancelled_reported_and_the_rest_completes() {
    let mut trial = Trial::fixed(Db::shared("fault_slow"), 11, MEDIUM);
    let db = &trial.workload.db;
    let slow: i64 = db.scalar(
        "SELECT id FROM fault_check.due_profile WHERE role = 'tutor' \
         AND user_id NOT IN (SELECT id FROM fault_check.due_user) ORDER BY id LIMIT 1",
    );
    // A trigger of the app that hangs on one row (a stuck external call, say).
    db.exec(&format!(
        "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(60); RETURN OLD; END $$;
         CREATE TRIGGER slow_delete BEFORE DELETE ON tutor_profiles
         FOR EACH ROW WHEN (OLD.id = {slow}) EXECUTE FUNCTION slow_delete();"
    ));
    let first = trial
        .spawn(&["--statement-timeout", "1"])
        .wait(Duration::from_secs(60));
    assert!(
        !first.hung && first.elapsed < Duration::from_secs(20),
        "{}",
        first.describe()
    );
    assert_eq!(first.code, 1, "{}", first.describe());
    assert_eq!(first.failed_lines().len(), 1, "{}", first.describe());
    assert!(
        first.failed_lines()[0].contains(&format!("profile {slow} in tutor_profiles"))
            && first.failed_lines()[0].contains("statement timeout"),
        "{}",
        first.describe()
    );
    trial.check(Phase::AfterFault);
    let db = &trial.workload.db;
    let left: i64 = db.scalar("SELECT count(*) FROM fault_check.profile_now WHERE due");
    assert_eq!(left, 1, "only the slow row is left");
    db.exec("DROP TRIGGER slow_delete ON tutor_profiles");
    trial.finish_clean();
}

/// A migration holding a whole table (`ALTER TABLE users ...`, `CREATE INDEX` without
/// CONCURRENTLY, `VACUUM FULL`) must cost a bounded wait, not one lock_timeout per due row.
#[test]
fn a_table_locked_by_a_migration_costs_a_bounded_wait() {
    let trial = Trial::fixed(Db::shared("fault_tablelock"), 13, 100);
    let first = with_app_lock(&trial, "LOCK TABLE users IN SHARE MODE", || {
        trial
            .spawn(&["--lock-timeout", "1", "--statement-timeout", "2"])
            .wait(Duration::from_secs(90))
    });
    assert!(
        !first.hung && first.elapsed < Duration::from_secs(20),
        "{} due rows, users locked by a migration, lock_timeout 1 s: {}",
        trial.due.total(),
        first.describe()
    );
    assert_eq!(first.code, 1, "{}", first.describe());
    trial.finish_clean();
}
