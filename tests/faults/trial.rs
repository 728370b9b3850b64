//! The scaffolding every fault test shares: a [`Trial`] (a workload with its snapshot taken,
//! what was due then, and what the trial found), the job started with the suite's flags, and
//! the check, rerun, check that ends every trial.

use postgres::Client;

use crate::common::astegni::Variant;
use crate::support::Rng;
use crate::support::TrialResult;
use crate::support::invariants::{self, Due, Phase};
use crate::support::job::{self, Finished, Job};
use crate::support::workload::{self, Db, Workload};

/// Users in a "large run": about 3000 due rows, a run of one to a few seconds.
pub const LARGE: usize = 2500;
/// Users for the trials that need a workload but not a long run.
pub const MEDIUM: usize = 300;

/// The flags every run of the suite uses besides the URL: no safety cap (the workloads have
/// more due accounts than the default cap), and a bounded connect.
pub const RUN_FLAGS: [&str; 4] = ["--max-accounts", "0", "--connect-timeout", "10"];

/// Starts the job on `url` with [`RUN_FLAGS`] and then `extra`.
pub fn spawn(url: &str, extra: &[&str]) -> Job {
    let mut flags = RUN_FLAGS.to_vec();
    flags.extend_from_slice(extra);
    job::spawn(url, &flags)
}

/// The schema variant of the deterministic cases: production's (json roles, integer ids,
/// naive timestamps, the audit table already there).
pub fn fixed_shape() -> Variant {
    Variant {
        audit_table: true,
        ..Variant::default()
    }
}

/// One trial: a seeded workload whose snapshot is taken, what was due at the snapshot, and
/// the violations and failures found so far.
pub struct Trial {
    pub workload: Workload,
    pub due: Due,
    pub result: TrialResult,
}

impl Trial {
    /// About `users` users in the schema variant the seed picks.
    pub fn random(db: Db, seed: u64, users: usize) -> Trial {
        Trial::snapshot(workload::build(db, seed, users))
    }

    /// About `users` users in [`fixed_shape`].
    pub fn fixed(db: Db, seed: u64, users: usize) -> Trial {
        Trial::snapshot(workload::build_with(db, seed, users, fixed_shape()))
    }

    fn snapshot(workload: Workload) -> Trial {
        invariants::snapshot(&workload.db, &workload.shape);
        let due = invariants::due(&workload.db);
        Trial {
            workload,
            due,
            result: TrialResult::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.workload.db.url
    }

    /// A new connection to the workload's database.
    pub fn client(&self) -> Client {
        self.workload.db.client()
    }

    /// Starts the job on the workload with [`RUN_FLAGS`], the workload's own flags, and then
    /// `extra`.
    pub fn spawn(&self, extra: &[&str]) -> Job {
        spawn(self.url(), &[self.workload.job_flags(), extra].concat())
    }

    /// Starts the job with [`RUN_FLAGS`], and a connection to watch its progress from.
    pub fn start(&self) -> (Job, Client) {
        (self.spawn(&[]), self.client())
    }

    /// Lets `job` run until it has committed at least a number of deletions drawn by `rng`
    /// from those due, or has ended (seen on `watcher`); returns (that number, the count seen).
    pub fn wait_for_random_progress(
        &self,
        rng: &mut Rng,
        job: &mut Job,
        watcher: &mut Client,
    ) -> (i64, i64) {
        let target = rng.below(self.due.total() as u64) as i64;
        let seen = job::wait_for_progress(job, watcher, target);
        (target, seen)
    }

    /// Records the violations of `phase` found now.
    pub fn check(&mut self, phase: Phase) {
        self.result
            .violations
            .extend(invariants::check(&self.workload.db, phase));
    }

    /// Ends the trial: [`check_rerun_check`].
    pub fn finish(mut self) -> TrialResult {
        check_rerun_check(&self.workload, &mut self.result);
        self.result
    }

    /// Ends a deterministic case: [`Trial::finish`], and nothing may have been found.
    pub fn finish_clean(self) {
        let result = self.finish();
        assert!(
            result.violations.is_empty() && result.failures.is_empty(),
            "{result:#?}"
        );
    }

    /// After a run that must have finished the work (`output` names it in failure messages):
    /// one deletion logged on `stderr` per due row, and the final invariants hold (nothing
    /// wrong, nothing due left) without a rerun.
    pub fn assert_all_deleted_and_logged(&self, stderr: &str, output: &str) {
        let logged = stderr
            .lines()
            .filter(|line| line.starts_with("astegni-delete-expired: Deleted "))
            .count();
        assert_eq!(
            logged as i64,
            self.due.total(),
            "one log line per deletion: {output}"
        );
        let violations = invariants::check(&self.workload.db, Phase::Final);
        assert!(violations.is_empty(), "{output}: {violations:#?}");
    }
}

/// Checks the invariants after the fault, reruns the job (which must exit 0) and checks again,
/// now also that nothing due is left.
pub fn check_rerun_check(workload: &Workload, result: &mut TrialResult) {
    result
        .violations
        .extend(invariants::check(&workload.db, Phase::AfterFault));
    let rerun = job::run(
        &workload.db.url,
        &[&RUN_FLAGS[..], workload.job_flags()].concat(),
    );
    if rerun.code != 0 {
        result.fail(format!("the rerun did not exit 0: {}", rerun.describe()));
    }
    result
        .violations
        .extend(invariants::check(&workload.db, Phase::Final));
}

/// The exit of a run that was broken off by the fault: 1 with a clear error as the last line
/// of stderr, or 0 if it finished before the fault hit.
pub fn expect_broken_off(first: &Finished, result: &mut TrialResult) {
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
pub fn job_waits_for_a_lock(client: &mut Client) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = \
             'astegni-delete-expired' AND datname = current_database() \
             AND wait_event_type = 'Lock'",
            &[],
        )
        .is_ok_and(|row| row.get::<_, i64>(0) > 0)
}
