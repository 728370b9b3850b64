//! PostgreSQL restarted mid-run (`pg_ctl restart -m fast`, and `-m immediate`: a crash and
//! recovery), on a private cluster so the other tests' server stays up.

use std::time::Duration;

use crate::support::cluster;
use crate::support::invariants;
use crate::support::job;
use crate::support::workload::{self, Db};
use crate::support::{Rng, TrialResult, run_trials};
use crate::{LARGE, RUN_FLAGS, check_rerun_check, expect_broken_off};

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
