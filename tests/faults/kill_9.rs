//! `kill -9` of the job at a random moment of a large run: committed batches stay whole, the
//! open transaction is rolled back, and the rerun finishes the work.

use std::time::Duration;

use crate::support::job;
use crate::support::workload::Db;
use crate::support::{Rng, TrialResult, run_trials};
use crate::trial::{LARGE, Trial, check_rerun_check};

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
            let trial = Trial::random(Db::shared("fault_kill"), seed ^ attempt, LARGE);
            let (mut job, mut watcher) = trial.start();
            let moment = if rng.percent(25) {
                // A random delay: also hits the start (connecting, reading the catalog,
                // creating the audit table) and the sweeps, which have no audit rows to wait
                // for. A large run lasts about a second here (debug build, 2 cores).
                let delay = Duration::from_millis(rng.below(600));
                std::thread::sleep(delay);
                format!("after {} ms", delay.as_millis())
            } else {
                let (target, seen) =
                    trial.wait_for_random_progress(&mut rng, &mut job, &mut watcher);
                format!("at >= {target} audit rows (saw {seen})")
            };
            let was_running = job.running();
            job.kill9();
            let first = job.wait(job::HANG_LIMIT);
            let done = job::audit_rows(&mut watcher);
            notes.push(format!(
                "{} due ({} profiles, {} accounts), kill -9 {moment}: {done} deletions \
                 committed{}; shape {:?}{}",
                trial.due.total(),
                trial.due.profiles,
                trial.due.users,
                if was_running {
                    ""
                } else {
                    " (the run had ended)"
                },
                trial.workload.shape,
                if trial.workload.plan {
                    ", --foreign-keys delete"
                } else {
                    ""
                }
            ));
            if !was_running && first.code != 0 {
                result.fail(format!("ended on its own with {}", first.describe()));
            }
            check_rerun_check(&trial.workload, &mut result);
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
