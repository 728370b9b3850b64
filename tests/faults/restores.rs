//! Restores committed by the application while the job runs: a restore always wins.

use std::time::Duration;

use crate::support::invariants;
use crate::support::job;
use crate::support::workload::{self, Db};
use crate::support::{self, Rng, run_trials};
use crate::trial::{LARGE, Trial};

#[test]
fn restores_committed_during_the_run_are_never_lost() {
    let totals = run_trials("restores_during_run", 3, 8, |seed| {
        let mut rng = Rng::new(seed);
        let mut trial = Trial::random(Db::shared("fault_restore"), seed, LARGE);
        let mut app = trial.client();
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
        let mut job = trial.spawn(&[]);
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
            trial
                .result
                .fail(format!("the run with restores: {}", first.describe()));
        }
        let (profiles, users) = invariants::restored(&trial.workload.db);
        if profiles + users != committed as i64 {
            trial.result.fail(format!(
                "{committed} restores committed but {} recorded",
                profiles + users
            ));
        }
        trial.result.count("restores_committed", committed);
        trial.result.count("restores_too_late", too_late);
        trial.result.note = format!(
            "{} due; {committed} restores committed during the run ({profiles} roles, \
             {users} accounts), {too_late} came after the deletion",
            trial.due.total()
        );
        trial.finish()
    });
    let committed = totals
        .iter()
        .find(|(name, _)| *name == "restores_committed")
        .map_or(0, |(_, value)| *value);
    if support::full() {
        assert!(
            committed >= 100,
            "only {committed} restores in the full run"
        );
    }
}
