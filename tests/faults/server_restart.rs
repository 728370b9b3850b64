//! PostgreSQL restarted mid-run (`pg_ctl restart -m fast`, and `-m immediate`: a crash and
//! recovery), on a private cluster so the other tests' server stays up.

use std::time::Duration;

use crate::support::cluster;
use crate::support::workload::Db;
use crate::support::{Rng, run_trials};
use crate::trial::{LARGE, Trial, expect_broken_off};

#[test]
fn server_restarted_mid_run() {
    let cluster = cluster::start();
    let mut n: u32 = 0;
    run_trials("server_restart", 2, 10, |seed| {
        let mut rng = Rng::new(seed);
        n += 1;
        let name = format!("restart_{n}");
        let mut trial = Trial::random(Db::private(&cluster, &name), seed, LARGE);
        // Alternate clean (fast) restarts and crashes (immediate).
        let mode = if n.is_multiple_of(2) {
            "immediate"
        } else {
            "fast"
        };
        let mut job = trial.spawn(&[]);
        let (target, _) = {
            let mut watcher = trial.client();
            trial.wait_for_random_progress(&mut rng, &mut job, &mut watcher)
        };
        let was_running = job.running();
        cluster.restart(mode);
        let first = job.wait(Duration::from_secs(60));
        if first.hung {
            trial
                .result
                .fail(format!("hung after the restart: {}", first.describe()));
        }
        if was_running && first.code != 1 {
            trial.result.count("finished_anyway", 1);
        }
        trial.result.count(
            if mode == "fast" {
                "restart_fast"
            } else {
                "restart_immediate"
            },
            1,
        );
        expect_broken_off(&first, &mut trial.result);
        trial.result.note = format!(
            "{} due, pg_ctl restart -m {mode} at >= {target} audit rows: exit {}",
            trial.due.total(),
            first.code
        );
        let result = trial.finish();
        cluster.drop_db(&name);
        result
    });
}
