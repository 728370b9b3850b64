//! Fault injection: the job is killed, its server restarted, its backend terminated, several
//! runs race, the application restores and locks rows, statements hang, the report file
//! cannot be written, the server is unreachable. After every trial one checker
//! (`fault_support::invariants`) proves in SQL that nothing was lost or half done, then a
//! rerun must finish the work and exit 0. See RELIABILITY.md for the figures.
//!
//! Randomized faults run a CI share by default (a few minutes on 2 cores);
//! `ASTEGNI_FAULTS_FULL=1` runs the issue's full counts, `ASTEGNI_FAULT_TRIALS=n` n trials
//! each, and `ASTEGNI_FAULT_SEED=<seed>` reruns the one trial that printed that seed:
//!
//! ```sh
//! cargo test --test faults -- --nocapture                      # CI share
//! ASTEGNI_FAULTS_FULL=1 cargo test --release --test faults -- --nocapture
//! ASTEGNI_FAULT_SEED=0x1234 cargo test --test faults kill_9 -- --nocapture
//! ```

mod common;
#[path = "fault_support/mod.rs"]
mod fault_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fault_support::cluster;
use fault_support::invariants::{self, Phase};
use fault_support::job::{self, Finished};
use fault_support::workload::{self, Db, Shape, Workload};
use fault_support::{Rng, TrialResult, poll_until, run_trials};

/// Users in a "large run": about 3000 due rows, a run of one to a few seconds.
const LARGE: usize = 2500;
/// Users for the trials that need a workload but not a long run.
const MEDIUM: usize = 300;

/// A seeded workload on the shared server, with its snapshot taken.
fn shared_workload(prefix: &str, seed: u64, users: usize) -> Workload {
    let workload = workload::build(Db::shared(prefix), seed, users);
    invariants::snapshot(&workload.db, &workload.shape);
    workload
}

/// The flags every run of the suite uses besides the URL: no safety cap (the workloads have
/// more due accounts than the default cap), and a bounded connect.
const RUN_FLAGS: [&str; 4] = ["--max-accounts", "0", "--connect-timeout", "10"];

/// Checks the invariants after the fault, reruns the job (which must exit 0) and checks again,
/// now also that nothing due is left.
fn check_rerun_check(workload: &Workload, result: &mut TrialResult) {
    result
        .violations
        .extend(invariants::check(&workload.db, Phase::AfterFault));
    let rerun = job::run(&workload.db.url, &RUN_FLAGS);
    if rerun.code != 0 {
        result.fail(format!("the rerun did not exit 0: {}", rerun.describe()));
    }
    result
        .violations
        .extend(invariants::check(&workload.db, Phase::Final));
}

/// The exit of a run that was broken off by the fault: 1 with a clear error as the last line
/// of stderr, or 0 if it finished before the fault hit.
fn expect_broken_off(first: &Finished, result: &mut TrialResult) {
    match first.code {
        0 => result.count("finished_before_fault", 1),
        1 => {
            result.count("broken_off_exit_1", 1);
            let last = first.stderr.lines().last().unwrap_or_default();
            if !last.starts_with("astegni-delete-expired: error: ") {
                result.fail(format!(
                    "exit 1 without a clear error as the last line: {}",
                    first.describe()
                ));
            }
        }
        _ => result.fail(format!(
            "the run hit by the fault exited {} (want 1, or 0): {}",
            first.code,
            first.describe()
        )),
    }
}

// --- kill -9 -----------------------------------------------------------------------------

#[test]
fn kill_9_at_random_moments_of_a_large_run() {
    run_trials("kill_9", 6, 30, |seed| {
        let mut rng = Rng::new(seed);
        let mut result = TrialResult::default();
        let mut notes = Vec::new();
        // A run that ends before the kill lands is still a trial of the invariants, but not a
        // kill: the trial then draws a new moment on a fresh workload (at most 3 times), so
        // every trial kills a running job.
        for attempt in 0..3u64 {
            let workload = shared_workload("fault_kill", seed ^ attempt, LARGE);
            let due = invariants::due(&workload.db);
            let mut watcher = workload.db.client();
            let mut job = job::spawn(&workload.db.url, &RUN_FLAGS);
            let moment = if rng.percent(25) {
                // A random delay: also hits the start (connecting, reading the catalog,
                // creating the audit table) and the sweeps, which have no audit rows to wait
                // for. A large run lasts about a second here (debug build, 2 cores).
                let delay = Duration::from_millis(rng.below(600));
                std::thread::sleep(delay);
                format!("after {} ms", delay.as_millis())
            } else {
                let target = rng.below(due.total() as u64) as i64;
                let seen = job::wait_for_progress(&mut job, &mut watcher, target);
                format!("at >= {target} audit rows (saw {seen})")
            };
            let was_running = job.running();
            job.kill9();
            let first = job.wait(job::HANG_LIMIT);
            let done = job::audit_rows(&mut watcher);
            notes.push(format!(
                "{} due ({} profiles, {} accounts), kill -9 {moment}: {done} deletions \
                 committed{}; shape {:?}",
                due.total(),
                due.profiles,
                due.users,
                if was_running {
                    ""
                } else {
                    " (the run had ended)"
                },
                workload.shape
            ));
            if !was_running && first.code != 0 {
                result.fail(format!("ended on its own with {}", first.describe()));
            }
            check_rerun_check(&workload, &mut result);
            if was_running {
                result.count("killed", 1);
                break;
            }
            result.count("ended_before_the_kill", 1);
        }
        result.note = notes.join(" | ");
        result
    });
}

// --- pg_terminate_backend and pg_cancel_backend --------------------------------------------

#[test]
fn backend_terminated_mid_run() {
    run_trials("pg_terminate_backend", 3, 10, |seed| {
        let mut rng = Rng::new(seed);
        let workload = shared_workload("fault_term", seed, LARGE);
        let due = invariants::due(&workload.db);
        let mut result = TrialResult::default();
        let mut watcher = workload.db.client();
        let mut job = job::spawn(&workload.db.url, &RUN_FLAGS);
        let target = rng.below(due.total() as u64) as i64;
        job::wait_for_progress(&mut job, &mut watcher, target);
        let terminated = match job::backend_pid(&mut watcher) {
            Some(pid) => watcher
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .map(|row| row.get::<_, bool>(0))
                .unwrap_or(false),
            None => false,
        };
        let first = job.wait(Duration::from_secs(60));
        if first.hung {
            result.fail(format!(
                "hung after its backend was terminated: {}",
                first.describe()
            ));
        }
        if terminated {
            result.count("terminated", 1);
            // Exit 0 only if the run had completed (the backend was terminated as the job
            // was closing its connection); otherwise exit 1 saying the connection was lost
            // ("terminating connection due to administrator command", "error communicating
            // with the server", "the database connection was lost").
            let completed = first.code == 0 && first.completed_counts().is_some();
            let says_lost =
                first.stderr.contains("connection") || first.stderr.contains("communicating");
            if !completed && (first.code != 1 || !says_lost) {
                result.fail(format!(
                    "terminated backend: want exit 1 saying the connection was lost: {}",
                    first.describe()
                ));
            }
        }
        expect_broken_off(&first, &mut result);
        result.note = format!(
            "{} due, backend terminated at >= {target} audit rows: {}",
            due.total(),
            if terminated {
                "terminated"
            } else {
                "the run had already ended"
            }
        );
        check_rerun_check(&workload, &mut result);
        result
    });
}

#[test]
fn statements_cancelled_mid_run() {
    run_trials("pg_cancel_backend", 2, 10, |seed| {
        let mut rng = Rng::new(seed);
        let workload = shared_workload("fault_cancel", seed, LARGE);
        let due = invariants::due(&workload.db);
        let mut result = TrialResult::default();
        let mut watcher = workload.db.client();
        let mut job = job::spawn(&workload.db.url, &RUN_FLAGS);
        let mut cancels = 0;
        for _ in 0..rng.between(1, 5) {
            let target = rng.below(due.total() as u64) as i64;
            job::wait_for_progress(&mut job, &mut watcher, target);
            if let Some(pid) = job::backend_pid(&mut watcher)
                && watcher
                    .query_one("SELECT pg_cancel_backend($1)", &[&pid])
                    .is_ok_and(|row| row.get::<_, bool>(0))
            {
                cancels += 1;
            }
        }
        let first = job.wait(Duration::from_secs(120));
        result.count("cancels", cancels);
        if !matches!(first.code, 0 | 1) || first.hung {
            result.fail(format!("after {cancels} cancels: {}", first.describe()));
        }
        result.note = format!(
            "{} due, {cancels} statements cancelled: exit {}, {} rows reported failed",
            due.total(),
            first.code,
            first.failed_lines().len()
        );
        check_rerun_check(&workload, &mut result);
        result
    });
}

/// The connection lost before the purge starts (here: while creating the audit table, waiting
/// for another run that holds the creation lock) is a run that broke off (exit 1, README "Exit
/// codes"), not a configuration error (exit 2) with advice to create the table by hand.
#[test]
fn connection_lost_before_the_purge_is_exit_1_not_a_configuration_error() {
    let workload = workload::build_with(
        Db::shared("fault_startlost"),
        51,
        50,
        Shape {
            audit_table: false,
            ..fixed_shape()
        },
    );
    let mut other_run = workload.db.client();
    let mut holder = other_run.transaction().expect("begin");
    holder
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('astegni-delete-expired: audit table'))",
            &[],
        )
        .expect("advisory lock");
    let mut flags = RUN_FLAGS.to_vec();
    flags.extend(["--lock-timeout", "0"]);
    let mut job = job::spawn(&workload.db.url, &flags);
    let mut watcher = workload.db.client();
    assert!(
        poll_until(Duration::from_secs(60), || !job.running()
            || job_waits_for_a_lock(&mut watcher)),
        "the job never waited for the audit table lock"
    );
    if let Some(pid) = job::backend_pid(&mut watcher) {
        watcher
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .expect("terminate");
    }
    let run = job.wait(Duration::from_secs(60));
    holder.rollback().expect("release");
    assert_eq!(run.code, 1, "{}", run.describe());
}

// --- the server restarted ------------------------------------------------------------------

#[test]
fn server_restarted_mid_run() {
    let cluster = cluster::start();
    let mut n: u32 = 0;
    run_trials("server_restart", 2, 10, |seed| {
        let mut rng = Rng::new(seed);
        n += 1;
        let name = format!("restart_{n}");
        let workload = workload::build(Db::private(&cluster, &name), seed, LARGE);
        invariants::snapshot(&workload.db, &workload.shape);
        let due = invariants::due(&workload.db);
        let mut result = TrialResult::default();
        // Alternate clean (fast) restarts and crashes (immediate).
        let mode = if n.is_multiple_of(2) {
            "immediate"
        } else {
            "fast"
        };
        let target = rng.below(due.total() as u64) as i64;
        let mut job = job::spawn(&workload.db.url, &RUN_FLAGS);
        {
            let mut watcher = workload.db.client();
            job::wait_for_progress(&mut job, &mut watcher, target);
        }
        let was_running = job.running();
        cluster.restart(mode);
        let first = job.wait(Duration::from_secs(60));
        if first.hung {
            result.fail(format!("hung after the restart: {}", first.describe()));
        }
        if was_running && first.code != 1 {
            result.count("finished_anyway", 1);
        }
        result.count(
            if mode == "fast" {
                "restart_fast"
            } else {
                "restart_immediate"
            },
            1,
        );
        expect_broken_off(&first, &mut result);
        result.note = format!(
            "{} due, pg_ctl restart -m {mode} at >= {target} audit rows: exit {}",
            due.total(),
            first.code
        );
        check_rerun_check(&workload, &mut result);
        drop(workload);
        cluster.drop_db(&name);
        result
    });
}

// --- concurrent runs -----------------------------------------------------------------------

#[test]
fn four_runs_at_once_split_the_work() {
    run_trials("four_concurrent_runs", 3, 10, |seed| {
        let workload = shared_workload("fault_four", seed, 1500);
        let due = invariants::due(&workload.db);
        let mut result = TrialResult::default();
        let jobs: Vec<job::Job> = (0..4)
            .map(|_| job::spawn(&workload.db.url, &RUN_FLAGS))
            .collect();
        let runs: Vec<Finished> = jobs
            .into_iter()
            .map(|job| job.wait(job::HANG_LIMIT))
            .collect();
        let mut total = (0u64, 0u64);
        for (index, run) in runs.iter().enumerate() {
            if run.code != 0 || !run.failed_lines().is_empty() {
                result.fail(format!("run {index}: {}", run.describe()));
            }
            match run.completed_counts() {
                Some((roles, accounts)) => {
                    total.0 += roles;
                    total.1 += accounts;
                }
                None => result.fail(format!("run {index} has no COMPLETED line")),
            }
        }
        if total != (due.profiles as u64, due.users as u64) {
            result.fail(format!(
                "the runs reported {} roles and {} accounts deleted; {} and {} were due",
                total.0, total.1, due.profiles, due.users
            ));
        }
        result.note = format!(
            "{} due; deletions per run {:?}",
            due.total(),
            runs.iter()
                .map(|run| run.completed_counts().unwrap_or_default())
                .collect::<Vec<_>>()
        );
        result.count("runs", 4);
        check_rerun_check(&workload, &mut result);
        result
    });
}

/// The sweep waits for a locked row, gets it, lets go, and attempts it. Another transaction
/// queued behind the job's wait (the application, or another run's sweep of the same row, as
/// happened once in 110 trials of four concurrent runs: seed 0xde027b13a4 reported
/// `[FAILED] role requested by account_deletion_requests 962: locked again by another
/// transaction`) takes the row in between and holds it for half a second, far less than
/// `--lock-timeout 30`: the job must wait for it again, not report the row as failed.
#[test]
fn a_row_taken_again_after_the_sweep_waited_for_it_is_waited_for_again() {
    let astegni = common::astegni::Astegni::new("fault_relock");
    let user = astegni.user("r@example.com", Some(&["user", "tutor"]), "tutor");
    let profile = astegni.profile("tutor", user, Some(-1)) as i32;
    let lock = "SELECT 1 FROM tutor_profiles WHERE id = $1 FOR UPDATE";
    // The first holder: the job defers the row to its sweep and waits there.
    let mut first = astegni.db.client();
    let mut first = first.transaction().expect("begin");
    first.execute(lock, &[&profile]).expect("lock");
    let mut flags = RUN_FLAGS.to_vec();
    flags.extend(["--lock-timeout", "30"]);
    let job = job::spawn(&astegni.db.url, &flags);
    let mut watcher = astegni.db.client();
    let waiting = |watcher: &mut postgres::Client| -> i64 {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock'",
                &[],
            )
            .map_or(0, |row| row.get(0))
    };
    assert!(
        poll_until(Duration::from_secs(60), || job_waits_for_a_lock(
            &mut watcher
        )),
        "the job never waited for the row"
    );
    // The second holder queues behind the job's wait, gets the row when the job lets go,
    // and keeps it for half a second (a short transaction).
    let url = astegni.db.url.clone();
    let second = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let mut transaction = client.transaction().expect("begin");
        transaction.execute(lock, &[&profile]).expect("lock");
        std::thread::sleep(Duration::from_millis(500));
        transaction.commit().expect("commit");
    });
    assert!(
        poll_until(Duration::from_secs(60), || waiting(&mut watcher) >= 2),
        "the second transaction never queued"
    );
    first.rollback().expect("release");
    let run = job.wait(Duration::from_secs(90));
    second.join().expect("second holder");
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(!astegni.exists("tutor_profiles", i64::from(profile)));
}

// --- restores committed during the run --------------------------------------------------------

#[test]
fn restores_committed_during_the_run_are_never_lost() {
    let totals = run_trials("restores_during_run", 3, 8, |seed| {
        let mut rng = Rng::new(seed);
        let workload = shared_workload("fault_restore", seed, LARGE);
        let due = invariants::due(&workload.db);
        let mut result = TrialResult::default();
        let mut app = workload.db.client();
        // Candidates: due accounts, and due profiles of users whose account is not due (a
        // profile of a deleted account goes with the account).
        let mut candidates: Vec<(Option<(String, i64)>, i64)> = app
            .query(
                "SELECT role, id, user_id FROM fault_check.due_profile
                 WHERE user_id NOT IN (SELECT id FROM fault_check.due_user)
                 UNION ALL SELECT NULL, NULL, id FROM fault_check.due_user ORDER BY 1, 2, 3",
                &[],
            )
            .expect("candidates")
            .iter()
            .map(|row| {
                let role: Option<String> = row.get(0);
                let id: Option<i64> = row.get(1);
                (role.zip(id), row.get(2))
            })
            .collect();
        for i in (1..candidates.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            candidates.swap(i, j);
        }
        let mut job = job::spawn(&workload.db.url, &RUN_FLAGS);
        let (mut committed, mut too_late) = (0u64, 0u64);
        let mut next = candidates.into_iter();
        while job.running() {
            let Some((profile, user)) = next.next() else {
                break;
            };
            let restored = match &profile {
                Some((role, id)) => workload::restore_profile(&mut app, &mut rng, role, *id, user),
                None => workload::restore_user(&mut app, &mut rng, user),
            };
            if restored {
                committed += 1;
            } else {
                too_late += 1;
            }
            std::thread::sleep(Duration::from_millis(rng.below(8)));
        }
        let first = job.wait(job::HANG_LIMIT);
        if first.code != 0 {
            result.fail(format!("the run with restores: {}", first.describe()));
        }
        let (profiles, users) = invariants::restored(&workload.db);
        if profiles + users != committed as i64 {
            result.fail(format!(
                "{committed} restores committed but {} recorded",
                profiles + users
            ));
        }
        result.count("restores_committed", committed);
        result.count("restores_too_late", too_late);
        result.note = format!(
            "{} due; {committed} restores committed during the run ({profiles} roles, \
             {users} accounts), {too_late} came after the deletion",
            due.total()
        );
        check_rerun_check(&workload, &mut result);
        result
    });
    let committed = totals
        .iter()
        .find(|(name, _)| *name == "restores_committed")
        .map_or(0, |(_, value)| *value);
    if fault_support::full() {
        assert!(
            committed >= 100,
            "only {committed} restores in the full run"
        );
    }
}

// --- rows and tables locked by the application -------------------------------------------------

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
        let workload = shared_workload("fault_rowlock", seed, MEDIUM);
        let mut result = TrialResult::default();
        let mut client = workload.db.client();
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
        let mut app = workload.db.client();
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
            blocked_by(&workload, &locked_profiles, &locked_users);
        let blocked = blocked_profiles.len() + blocked_users.len();
        let mut flags = RUN_FLAGS.to_vec();
        flags.extend(["--lock-timeout", "1"]);
        let first = job::spawn(&workload.db.url, &flags).wait(Duration::from_secs(120));
        // Each blocked row costs at most two waits of lock_timeout (in the batch, then alone).
        let bound = Duration::from_secs(2 * blocked as u64 + 15);
        if first.hung || first.elapsed > bound {
            result.fail(format!(
                "{blocked} blocked rows, lock_timeout 1 s: took {:.1}s (bound {}s): {}",
                first.elapsed.as_secs_f64(),
                bound.as_secs(),
                first.describe()
            ));
        }
        if first.code != 1 {
            result.fail(format!(
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
                result.fail(format!(
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
                result.fail(format!(
                    "locked user {id} not reported: {}",
                    first.describe()
                ));
            }
        }
        result
            .violations
            .extend(invariants::check(&workload.db, Phase::AfterFault));
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
                result.fail(format!(
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
                result.fail(format!("user {id} not locked, yet still due after the run"));
            }
        }
        holder.rollback().expect("release");
        result.note = format!(
            "locked {} profiles and {} users ({blocked} due rows held up): exit {} in {:.1}s, \
             {} reported",
            locked_profiles.len(),
            locked_users.len(),
            first.code,
            first.elapsed.as_secs_f64(),
            first.failed_lines().len()
        );
        result.count(
            "locked_rows",
            (locked_profiles.len() + locked_users.len()) as u64,
        );
        check_rerun_check(&workload, &mut result);
        result
    });
}

/// Whether a backend of the job is waiting for a lock.
fn job_waits_for_a_lock(client: &mut postgres::Client) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = \
             'astegni-delete-expired' AND datname = current_database() \
             AND wait_event_type = 'Lock'",
            &[],
        )
        .is_ok_and(|row| row.get::<_, i64>(0) > 0)
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
    let mut flags = RUN_FLAGS.to_vec();
    flags.extend(["--lock-timeout", "30"]);
    let mut job = job::spawn(&astegni.db.url, &flags);
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
fn with_app_lock<T>(workload: &Workload, lock_sql: &str, run: impl FnOnce() -> T) -> T {
    let mut app = workload.db.client();
    let mut holder = app.transaction().expect("begin");
    holder.batch_execute(lock_sql).expect("take the lock");
    let value = run();
    holder.rollback().expect("release");
    value
}

fn fixed_shape() -> Shape {
    Shape {
        roles_type: "json",
        id_type: "integer",
        users_schedule: "timestamp",
        audit_table: true,
    }
}

#[test]
fn statement_timeout_ends_a_blocked_statement_with_a_clear_error() {
    let workload = workload::build_with(Db::shared("fault_stmt"), 7, MEDIUM, fixed_shape());
    invariants::snapshot(&workload.db, &workload.shape);
    let mut result = TrialResult::default();
    // A migration holds tutor_profiles: even reading it blocks. lock_timeout 0 (wait forever)
    // leaves the statement timeout as the only bound.
    let first = with_app_lock(
        &workload,
        "LOCK TABLE tutor_profiles IN ACCESS EXCLUSIVE MODE",
        || {
            let mut flags = RUN_FLAGS.to_vec();
            flags.extend(["--statement-timeout", "1", "--lock-timeout", "0"]);
            job::spawn(&workload.db.url, &flags).wait(Duration::from_secs(60))
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
    check_rerun_check(&workload, &mut result);
    assert!(
        result.violations.is_empty() && result.failures.is_empty(),
        "{result:#?}"
    );
}

#[test]
fn a_slow_statement_is_cancelled_reported_and_the_rest_completes() {
    let workload = workload::build_with(Db::shared("fault_slow"), 11, MEDIUM, fixed_shape());
    invariants::snapshot(&workload.db, &workload.shape);
    let slow: i64 = workload.db.scalar(
        "SELECT id FROM fault_check.due_profile WHERE role = 'tutor' \
         AND user_id NOT IN (SELECT id FROM fault_check.due_user) ORDER BY id LIMIT 1",
    );
    // A trigger of the app that hangs on one row (a stuck external call, say).
    workload.db.exec(&format!(
        "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(60); RETURN OLD; END $$;
         CREATE TRIGGER slow_delete BEFORE DELETE ON tutor_profiles
         FOR EACH ROW WHEN (OLD.id = {slow}) EXECUTE FUNCTION slow_delete();"
    ));
    let mut flags = RUN_FLAGS.to_vec();
    flags.extend(["--statement-timeout", "1"]);
    let first = job::spawn(&workload.db.url, &flags).wait(Duration::from_secs(60));
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
    let mut result = TrialResult::default();
    result
        .violations
        .extend(invariants::check(&workload.db, Phase::AfterFault));
    let left: i64 = workload
        .db
        .scalar("SELECT count(*) FROM fault_check.profile_now WHERE due");
    assert_eq!(left, 1, "only the slow row is left");
    workload
        .db
        .exec("DROP TRIGGER slow_delete ON tutor_profiles");
    check_rerun_check(&workload, &mut result);
    assert!(
        result.violations.is_empty() && result.failures.is_empty(),
        "{result:#?}"
    );
}

/// A migration holding a whole table (`ALTER TABLE users ...`, `CREATE INDEX` without
/// CONCURRENTLY, `VACUUM FULL`) must cost a bounded wait, not one lock_timeout per due row.
#[test]
fn a_table_locked_by_a_migration_costs_a_bounded_wait() {
    let workload = workload::build_with(Db::shared("fault_tablelock"), 13, 100, fixed_shape());
    invariants::snapshot(&workload.db, &workload.shape);
    let due = invariants::due(&workload.db);
    let first = with_app_lock(&workload, "LOCK TABLE users IN SHARE MODE", || {
        let mut flags = RUN_FLAGS.to_vec();
        flags.extend(["--lock-timeout", "1", "--statement-timeout", "2"]);
        job::spawn(&workload.db.url, &flags).wait(Duration::from_secs(90))
    });
    assert!(
        !first.hung && first.elapsed < Duration::from_secs(20),
        "{} due rows, users locked by a migration, lock_timeout 1 s: {}",
        due.total(),
        first.describe()
    );
    assert_eq!(first.code, 1, "{}", first.describe());
    let mut result = TrialResult::default();
    check_rerun_check(&workload, &mut result);
    assert!(
        result.violations.is_empty() && result.failures.is_empty(),
        "{result:#?}"
    );
}

// --- the report file ---------------------------------------------------------------------------

/// Runs the job with `--report-file path` (plus `extra`) on a fresh workload; asserts that it
/// deletes everything, exits 0, warns on stderr, and logs one deletion line per deletion.
fn report_file_case(path: &str, warning: &str, seed: u64) {
    let workload = workload::build_with(Db::shared("fault_report"), seed, 150, fixed_shape());
    invariants::snapshot(&workload.db, &workload.shape);
    let due = invariants::due(&workload.db);
    let mut flags = RUN_FLAGS.to_vec();
    flags.extend(["--report-file", path]);
    let run = job::run(&workload.db.url, &flags);
    assert_eq!(run.code, 0, "{path}: {}", run.describe());
    assert!(
        run.stderr.contains(warning),
        "{path}: no warning {warning:?}: {}",
        run.describe()
    );
    let logged = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("astegni-delete-expired: Deleted "))
        .count();
    assert_eq!(
        logged as i64,
        due.total(),
        "{path}: one log line per deletion: {}",
        run.describe()
    );
    assert!(
        run.stderr.contains("Run summary: COMPLETED: ")
            && run
                .stderr
                .lines()
                .last()
                .unwrap_or_default()
                .contains("COMPLETED"),
        "{path}: {}",
        run.describe()
    );
    let violations = invariants::check(&workload.db, Phase::Final);
    assert!(violations.is_empty(), "{path}: {violations:#?}");
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
    let workload = workload::build_with(Db::shared("fault_nojournal"), 27, 150, fixed_shape());
    invariants::snapshot(&workload.db, &workload.shape);
    let due = invariants::due(&workload.db);
    let mut args = vec!["--database-url", workload.db.url.as_str()];
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
    let logged = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("astegni-delete-expired: Deleted "))
        .count();
    assert_eq!(logged as i64, due.total(), "{}", run.describe());
    let violations = invariants::check(&workload.db, Phase::Final);
    assert!(violations.is_empty(), "{violations:#?}");
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
    let workload = workload::build_with(Db::shared("fault_perm"), 25, 150, fixed_shape());
    invariants::snapshot(&workload.db, &workload.shape);
    let due = invariants::due(&workload.db);
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
        &workload.db.url,
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
    let logged = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("astegni-delete-expired: Deleted "))
        .count();
    assert_eq!(logged as i64, due.total(), "{}", run.describe());
    let violations = invariants::check(&workload.db, Phase::Final);
    assert!(violations.is_empty(), "{violations:#?}");
}

/// stdout closed under the job (`| head`, a dead log collector): the report write fails with
/// EPIPE; the deletions and their log lines go on.
#[test]
fn closed_stdout_does_not_stop_deletions_or_their_log() {
    let workload = workload::build_with(Db::shared("fault_epipe"), 26, 150, fixed_shape());
    invariants::snapshot(&workload.db, &workload.shape);
    let due = invariants::due(&workload.db);
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let stderr =
        std::env::temp_dir().join(format!("astegni-fault-epipe-{}.err", std::process::id()));
    let mut command = std::process::Command::new(job::exe());
    command
        .args(["--database-url", &workload.db.url, "--log-target", "stderr"])
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
    let logged = text
        .lines()
        .filter(|line| line.starts_with("astegni-delete-expired: Deleted "))
        .count();
    assert_eq!(logged as i64, due.total(), "{text}");
    let violations = invariants::check(&workload.db, Phase::Final);
    assert!(violations.is_empty(), "{violations:#?}");
}

// --- the database unreachable at start ---------------------------------------------------------

/// Exit 75 after retrying for about `--connect-timeout` seconds, and not much longer.
fn assert_unreachable(url: &str, secret: &str) {
    let started = Instant::now();
    let run = job::spawn(url, &["--connect-timeout", "3"]).wait(Duration::from_secs(60));
    let elapsed = started.elapsed();
    assert_eq!(run.code, 75, "{url}: {}", run.describe());
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed <= Duration::from_secs(5),
        "{url}: exit 75 after {:.1}s with --connect-timeout 3",
        elapsed.as_secs_f64()
    );
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("astegni-delete-expired: error: database unreachable after "),
        "{url}: {}",
        run.describe()
    );
    let attempts: u32 = last
        .split("database unreachable after ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(attempts >= 2, "{url}: retried? {last}");
    for line in run.stderr.lines().filter(|line| *line != last) {
        assert!(
            line.starts_with("astegni-delete-expired: warning: cannot connect")
                && line.contains("retrying"),
            "{url}: unexpected line {line}"
        );
    }
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "{url}: the password leaked: {}",
        run.describe()
    );
}

#[test]
fn unreachable_database_exits_75_within_the_connect_timeout() {
    let secret = "Unreach-Secr3t";
    // Nothing listens on the port.
    assert_unreachable(
        &format!("postgresql://astegni:{secret}@127.0.0.1:1/astegni"),
        secret,
    );
    // A host name that does not resolve.
    assert_unreachable(
        &format!("host=astegni-db.invalid user=astegni password={secret} dbname=astegni"),
        secret,
    );
    // A socket directory without a server.
    let dir = std::env::temp_dir().join(format!("astegni-fault-nosock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    assert_unreachable(
        &format!(
            "host={} port=5432 user=astegni password={secret} dbname=astegni",
            dir.display()
        ),
        secret,
    );
    let _ = std::fs::remove_dir(&dir);
}

/// A server (or a proxy in front of it) that accepts the TCP connection but never answers the
/// startup: `--connect-timeout` must still bound the wait.
#[test]
fn a_server_that_accepts_but_never_answers_exits_75_within_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accepts and holds every connection without a byte of answer (detached: the listener
    // lives until the test process ends).
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming() {
            held.push(connection);
        }
    });
    let secret = "Silent-Secr3t";
    for sslmode in ["disable", "prefer"] {
        let url =
            format!("postgresql://astegni:{secret}@127.0.0.1:{port}/astegni?sslmode={sslmode}");
        let run = job::spawn(&url, &["--connect-timeout", "3"]).wait(Duration::from_secs(30));
        assert!(
            !run.hung && run.elapsed <= Duration::from_secs(6),
            "sslmode={sslmode}: a silent server held the job for {:.1}s with --connect-timeout \
             3: {}",
            run.elapsed.as_secs_f64(),
            run.describe()
        );
        assert_eq!(run.code, 75, "sslmode={sslmode}: {}", run.describe());
        assert!(!run.stderr.contains(secret), "{}", run.describe());
    }
}

#[test]
fn a_server_that_comes_up_during_the_connect_retries_is_used() {
    let cluster = cluster::start();
    let workload = workload::build_with(
        Db::private(&cluster, "late_start"),
        31,
        MEDIUM,
        fixed_shape(),
    );
    invariants::snapshot(&workload.db, &workload.shape);
    let due = invariants::due(&workload.db);
    cluster.stop("fast");
    let job = job::spawn(
        &workload.db.url,
        &["--max-accounts", "0", "--connect-timeout", "60"],
    );
    assert!(
        poll_until(Duration::from_secs(30), || job
            .stderr_so_far()
            .contains("retrying (attempt 2)")),
        "the job did not retry: {}",
        job.stderr_so_far()
    );
    cluster.start_again();
    let run = job.wait(Duration::from_secs(90));
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(
        run.completed_counts(),
        Some((due.profiles as u64, due.users as u64)),
        "{}",
        run.describe()
    );
    let violations = invariants::check(&workload.db, Phase::Final);
    assert!(violations.is_empty(), "{violations:#?}");

    // And a server that stays down: exit 75 within the timeout.
    cluster.stop("immediate");
    let started = Instant::now();
    let run =
        job::spawn(&workload.db.url, &["--connect-timeout", "2"]).wait(Duration::from_secs(30));
    assert_eq!(run.code, 75, "{}", run.describe());
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "{}",
        run.describe()
    );
}

// --- the checker itself ----------------------------------------------------------------------

/// The checker finds each kind of violation it claims to check (and none in a good state), so
/// "0 violations" in the trials means something.
#[test]
fn the_invariant_checker_catches_each_kind_of_violation() {
    let workload = workload::build_with(Db::shared("fault_checker"), 41, MEDIUM, fixed_shape());
    invariants::snapshot(&workload.db, &workload.shape);
    let mut client = workload.db.client();
    let one = |client: &mut postgres::Client, sql: &str| -> (String, i64, i64) {
        let row = client.query_one(sql, &[]).expect(sql);
        (row.get(0), row.get(1), row.get(2))
    };
    let (role, profile, profile_user) = one(
        &mut client,
        "SELECT role, id, user_id FROM fault_check.due_profile
         WHERE user_id NOT IN (SELECT id FROM fault_check.due_user) ORDER BY role, id LIMIT 1",
    );
    let (_, due_user, _) = one(
        &mut client,
        "SELECT '', id, 0::bigint FROM fault_check.due_user ORDER BY id LIMIT 1",
    );
    let (_, kept_user, _) = one(
        &mut client,
        "SELECT '', id, 0::bigint FROM fault_check.kept_user ORDER BY id LIMIT 1",
    );
    let (request_role, request, request_user) = one(
        &mut client,
        "SELECT role, id, user_id FROM fault_check.request_before
         WHERE due AND delete_user = FALSE
           AND user_id NOT IN (SELECT id FROM fault_check.due_user) ORDER BY id LIMIT 1",
    );
    let (kept_role, _, kept_profile_user) = one(
        &mut client,
        "SELECT k.role, k.id, k.user_id FROM fault_check.kept_profile k
         JOIN fault_check.roles_before b ON b.user_id = k.user_id AND b.role = k.role
         ORDER BY k.role, k.id LIMIT 1",
    );
    let remove_role = |user: i64, role: &str| {
        format!(
            "UPDATE users SET roles = (SELECT coalesce(json_agg(e), '[]'::json)
             FROM json_array_elements_text(roles) e WHERE e <> '{role}'),
             active_role = CASE WHEN active_role = '{role}' THEN 'user' ELSE active_role END
             WHERE id = {user};"
        )
    };
    let delete_profile_properly = format!(
        "DELETE FROM {role}_profiles WHERE id = {profile}; {}
         INSERT INTO deletion_audit_log (deletion_type, user_id, role_name)
         VALUES ('role', {profile_user}, '{role}');",
        remove_role(profile_user, &role)
    );
    let cases: Vec<(String, Phase, Option<&str>)> = vec![
        (String::new(), Phase::AfterFault, None),
        (delete_profile_properly.clone(), Phase::AfterFault, None),
        (String::new(), Phase::Final, Some("nothing due is left")),
        (
            format!("DELETE FROM {role}_profiles WHERE id = {profile}"),
            Phase::AfterFault,
            Some("exactly one role audit row"),
        ),
        (
            format!("DELETE FROM {role}_profiles WHERE id = {profile}"),
            Phase::AfterFault,
            Some("no user keeps"),
        ),
        (
            format!(
                "{delete_profile_properly} INSERT INTO deletion_audit_log \
                 (deletion_type, user_id, role_name) VALUES ('role', {profile_user}, '{role}');"
            ),
            Phase::AfterFault,
            Some("exactly one role audit row"),
        ),
        (
            format!(
                "{delete_profile_properly} UPDATE fault_check.due_profile SET restored = TRUE \
                 WHERE role = '{role}' AND id = {profile};"
            ),
            Phase::AfterFault,
            Some("or was restored, is deleted"),
        ),
        (
            format!("DELETE FROM users WHERE id = {kept_user}"),
            Phase::AfterFault,
            Some("nothing that was not due"),
        ),
        (
            format!("DELETE FROM users WHERE id = {due_user}"),
            Phase::AfterFault,
            Some("exactly one account audit row"),
        ),
        (
            format!(
                "UPDATE users SET account_status = 'active', scheduled_deletion_at = NULL \
                 WHERE id = {due_user}; UPDATE account_deletion_requests SET status = 'cancelled' \
                 WHERE user_id = {due_user};"
            ),
            Phase::AfterFault,
            Some("still there is still due (or was restored)"),
        ),
        (
            format!(
                "INSERT INTO deletion_audit_log (deletion_type, user_id) \
                 VALUES ('account', {kept_user})"
            ),
            Phase::AfterFault,
            Some("no audit row without its deletion"),
        ),
        (
            format!(
                "UPDATE account_deletion_requests SET status = 'completed' WHERE id = {request}"
            ),
            Phase::AfterFault,
            Some("no request marked completed"),
        ),
        (
            remove_role(kept_profile_user, &kept_role),
            Phase::AfterFault,
            Some("nothing half done"),
        ),
    ];
    let _ = (request_role, request_user);
    for (tamper, phase, expected) in cases {
        let mut transaction = client.transaction().expect("begin");
        transaction.batch_execute(&tamper).expect(&tamper);
        let violations = invariants::check_in(&mut transaction, phase);
        transaction.rollback().expect("rollback");
        match expected {
            None => assert!(
                violations.is_empty(),
                "{tamper:?} ({phase:?}) should be clean: {violations:#?}"
            ),
            Some(name) => assert!(
                violations.iter().any(|violation| violation.contains(name)),
                "{tamper:?} ({phase:?}): no violation of {name:?} in {violations:#?}"
            ),
        }
    }
}
