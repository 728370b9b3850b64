//! Fault injection: the job is killed, its server restarted, its backend terminated, several
//! runs race, the application restores and locks rows, statements hang, the report file
//! cannot be written, the server is unreachable. After every trial one checker
//! (`support::invariants`) proves in SQL that nothing was lost or half done, then a
//! rerun must finish the work and exit 0. See RELIABILITY.md for the figures.
//!
//! One module per kind of fault; `support/` holds what they share with each other and with
//! `tests/fault_inputs.rs` (the PRNG and trial loop, the workload, the invariant checker, the
//! job as a child process).
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

#[path = "../common/mod.rs"]
mod common;
mod support;

mod app_locks;
mod backend;
mod checker;
mod concurrent_runs;
mod kill_9;
mod report_file;
mod restores;
mod server_restart;
mod unreachable;

use support::TrialResult;
use support::invariants::{self, Phase};
use support::job::{self, Finished};
use support::workload::{self, Db, Shape, Workload};

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

fn fixed_shape() -> Shape {
    Shape {
        roles_type: "json",
        id_type: "integer",
        users_schedule: "timestamp",
        audit_table: true,
    }
}
