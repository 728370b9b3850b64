//! The job's backend terminated (`pg_terminate_backend`) or its statements cancelled
//! (`pg_cancel_backend`) mid-run, and the connection lost before the purge starts.

use std::time::Duration;

use crate::common::astegni::Variant;
use crate::support::job;
use crate::support::workload::{self, Db};
use crate::support::{Rng, poll_until, run_trials};
use crate::trial::{self, LARGE, Trial, expect_broken_off, fixed_shape, job_waits_for_a_lock};

#[test]
fn backend_terminated_mid_run() {
    run_trials("pg_terminate_backend", 3, 10, |seed| {
        let mut rng = Rng::new(seed);
        let mut trial = Trial::random(Db::shared("fault_term"), seed, LARGE);
        let (mut job, mut watcher) = trial.start();
        let (target, _) = trial.wait_for_random_progress(&mut rng, &mut job, &mut watcher);
        let terminated = match job::backend_pid(&mut watcher) {
            Some(pid) => watcher
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .map(|row| row.get::<_, bool>(0))
                .unwrap_or(false),
            None => false,
        };
        let first = job.wait(Duration::from_secs(60));
        if first.hung {
            trial.result.fail(format!(
                "hung after its backend was terminated: {}",
                first.describe()
            ));
        }
        if terminated {
            trial.result.count("terminated", 1);
            // Exit 0 only if the run had completed (the backend was terminated as the job
            // was closing its connection); otherwise exit 1 saying the connection was lost
            // ("terminating connection due to administrator command", "error communicating
            // with the server", "the database connection was lost").
            let completed = first.code == 0 && first.completed_counts().is_some();
            let says_lost =
                first.stderr.contains("connection") || first.stderr.contains("communicating");
            if !completed && (first.code != 1 || !says_lost) {
                trial.result.fail(format!(
                    "terminated backend: want exit 1 saying the connection was lost: {}",
                    first.describe()
                ));
            }
        }
        expect_broken_off(&first, &mut trial.result);
        trial.result.note = format!(
            "{} due, backend terminated at >= {target} audit rows: {}",
            trial.due.total(),
            if terminated {
                "terminated"
            } else {
                "the run had already ended"
            }
        );
        trial.finish()
    });
}

#[test]
fn statements_cancelled_mid_run() {
    run_trials("pg_cancel_backend", 2, 10, |seed| {
        let mut rng = Rng::new(seed);
        let mut trial = Trial::random(Db::shared("fault_cancel"), seed, LARGE);
        let (mut job, mut watcher) = trial.start();
        let mut cancels = 0;
        for _ in 0..rng.between(1, 5) {
            trial.wait_for_random_progress(&mut rng, &mut job, &mut watcher);
            if let Some(pid) = job::backend_pid(&mut watcher)
                && watcher
                    .query_one("SELECT pg_cancel_backend($1)", &[&pid])
                    .is_ok_and(|row| row.get::<_, bool>(0))
            {
                cancels += 1;
            }
        }
        let first = job.wait(Duration::from_secs(120));
        trial.result.count("cancels", cancels);
        if !matches!(first.code, 0 | 1) || first.hung {
            trial
                .result
                .fail(format!("after {cancels} cancels: {}", first.describe()));
        }
        trial.result.note = format!(
            "{} due, {cancels} statements cancelled: exit {}, {} rows reported failed",
            trial.due.total(),
            first.code,
            first.failed_lines().len()
        );
        trial.finish()
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
        Variant {
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
    let mut job = trial::spawn(&workload.db.url, &["--lock-timeout", "0"]);
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
