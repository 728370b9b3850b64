//! Advertiser role deletions, across two databases: the profile lives in the advertiser
//! database, the role in `users.roles` and the audit row in the user database. There is no
//! transaction across the two, so every step leaves a state the next run completes:
//!
//! 1. **Announce.** For the due profiles of a batch, an intent row (profile, user) is
//!    committed in the user database's `advertiser_deletion_intents`. A profile another run
//!    announced is left to that run.
//! 2. **Hold.** A transaction in the user database locks the batch's intents and their
//!    users (skipping rows others hold), and stays open.
//! 3. **Delete.** In the advertiser database the profiles still due are deleted, with their
//!    own deletion plan, and committed.
//! 4. **Complete.** In the transaction of step 2, for the profiles that step 3 deleted: the
//!    role leaves `users.roles` (and `active_role`), the audit row is written, and the
//!    intents of the batch are deleted; then it commits.
//!
//! A crash, a lost connection or a failed statement anywhere leaves at most intents behind
//! (and, after step 3, deleted profiles whose role is still there). Every run first
//! **replays** the intents it finds, before anything else: a profile still due is deleted
//! (steps 2-4); one that no longer exists was deleted by the run that announced it, which did
//! not complete it, so it is completed now; one that was restored is forgotten. The replay
//! waits (up to `--lock-timeout`) for intents another transaction holds rather than skip
//! them: a killed run's backend may hold them a moment longer, until it notices its client
//! is gone and rolls back; a live run holding them completes them, and they are gone. It
//! waits for the profiles in the advertiser database too: a run killed in step 3 leaves a
//! backend there that carries on with its DELETE and commits it (the client's death is
//! noticed only when the result is sent), so a profile held there may be gone a moment
//! later; a replay that cannot tell (its lock timeout ran out) keeps the intents. So the role
//! leaves `users.roles` only after its profile is gone, an audit row is written only for a
//! profile that is gone, exactly once (with the intent's deletion, in one transaction), and
//! a restore in the advertiser database before step 3 wins: the profile is not deleted and
//! the role stays. The intents are small (a row per deletion in progress) and empty between
//! runs unless a run was interrupted.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use postgres::types::Type;
use postgres::{Client, Row};

use super::attempt::Attempting;
use super::cursor::DueIds;
use super::drain::{Work, describe_fatal, is_row_level, row_error};
use super::locks::{sorted_ids, wait_for_profile, wait_for_user};
use super::planned::PlannedRows;
use super::record::Recorder;
use super::statements::{self as sql, advertiser as steps};
use crate::report::Deletion;
use crate::schema::{ADVERTISER, ProfileTable, Schema};

/// The advertiser database, when `ADVERTISER_DATABASE_URL` names one.
pub enum Advertiser {
    /// Connected, its schema read.
    Ready {
        client: Box<Client>,
        profile: Box<ProfileTable>,
    },
    /// Not reachable: its part of the run fails (and is reported), the rest runs.
    Unreachable(String),
}

/// Whether a batch's intents were just announced by this run, or found from an earlier one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Announced,
    Replayed,
}

/// The advertiser profiles that are due, in the advertiser database (the client `drain`
/// gives it), with the user database at hand.
pub struct AdvertiserWork<'a> {
    profile: &'a ProfileTable,
    users: RefCell<&'a mut Client>,
    due: String,
    due_with_users: String,
    existing: String,
    still_due: String,
    complete: String,
    attempt: Attempting<'a>,
    /// The attempt of a replay, which waits for profiles others hold.
    replay: Attempting<'a>,
}

impl<'a> AdvertiserWork<'a> {
    pub fn new(
        schema: &Schema,
        profile: &'a ProfileTable,
        users: &'a mut Client,
        audit: bool,
    ) -> AdvertiserWork<'a> {
        AdvertiserWork {
            profile,
            users: RefCell::new(users),
            due: sql::due_profiles(profile),
            due_with_users: steps::due_with_users(profile),
            existing: steps::existing(profile),
            still_due: sql::still_due_profiles(profile),
            complete: steps::complete(schema, audit),
            attempt: Attempting::new(&profile.plan, &steps::attempt(profile, false), false),
            replay: Attempting::new(&profile.plan, &steps::attempt(profile, true), false),
        }
    }

    /// Completes or forgets every intent an earlier run left, a batch at a time.
    pub fn replay(&self, advertisers: &mut Client, recorder: &mut Recorder) -> anyhow::Result<()> {
        let announced: Vec<i64> = self
            .users
            .borrow_mut()
            .query(steps::ANNOUNCED, &[])
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot read {}: {}",
                    crate::schema::INTENTS,
                    describe_fatal(&error)
                )
            })?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for batch in announced.chunks(super::drain::MAX_BATCH) {
            match self.carry_out(advertisers, batch, Origin::Replayed, recorder) {
                Ok(_) => {}
                Err(error) if is_row_level(&error) => {
                    for id in batch {
                        recorder.failed(&self.describe(*id), &row_error(&error));
                    }
                }
                Err(error) => {
                    anyhow::bail!(
                        "cannot complete the advertiser deletions an earlier run began: {}",
                        describe_fatal(&error)
                    )
                }
            }
        }
        Ok(())
    }

    /// Steps 2 to 4 for the profiles `ids`, whose intents exist; returns the ids left for
    /// the sweep.
    fn carry_out(
        &self,
        advertisers: &mut Client,
        ids: &[i64],
        origin: Origin,
        recorder: &mut Recorder,
    ) -> Result<Vec<i64>, postgres::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut users = self.users.borrow_mut();
        let mut transaction = users.transaction()?;
        let lock = steps::lock_intents(origin == Origin::Announced);
        let held: BTreeMap<i64, Option<i64>> = transaction
            .query_typed(&lock, &[(&ids, Type::INT8_ARRAY)])?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let ready: Vec<i64> = held.keys().copied().collect();
        let attempted = match self.attempt_ready(advertisers, &ready, origin, recorder) {
            Ok(attempted) => attempted,
            Err(error) => {
                drop(transaction);
                // A database error in a fresh attempt: the advertiser database rolled the
                // batch back, and the intents may go (the profiles are still due, the cursor
                // or the next run finds them). Anything else (the connection lost), and any
                // error of a replay (a lock timeout while a killed run's DELETE may still
                // commit), leaves the outcome unknown: the intents stay for the next replay.
                if error.as_db_error().is_some() && origin == Origin::Announced {
                    users.query_typed(steps::FORGET, &[(&ids, Type::INT8_ARRAY)])?;
                }
                return Err(error);
            }
        };
        let existing: BTreeSet<i64> = advertisers
            .query_typed(&self.existing, &[(&ready, Type::INT8_ARRAY)])?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let deleted_now: BTreeSet<i64> = attempted.deleted.iter().map(|unit| unit.id).collect();
        // Gone: deleted now, or (replaying) by the run that announced it.
        let gone: Vec<i64> = ready
            .iter()
            .copied()
            .filter(|id| !existing.contains(id))
            .filter(|id| origin == Origin::Replayed || deleted_now.contains(id))
            .collect();
        let gone_users: Vec<Option<i64>> = gone.iter().map(|id| held[id]).collect();
        // Announced now: every intent of the batch goes. Replayed: those of profiles held up
        // by a lock stay, lest a profile gone but not completed be lost.
        let forget = if origin == Origin::Announced {
            ids
        } else {
            &ready
        };
        let role = ADVERTISER;
        let completed = transaction.query_typed(
            &self.complete,
            &[
                (&gone, Type::INT8_ARRAY),
                (&role, Type::TEXT),
                (&gone_users, Type::INT8_ARRAY),
                (&forget, Type::INT8_ARRAY),
            ],
        )?;
        transaction.commit()?;
        drop(users);
        let mut busy = self.report(recorder, attempted, &completed);
        busy.extend(ids.iter().filter(|id| !held.contains_key(id)));
        Ok(busy)
    }

    /// Step 3: deletes those of `ready` still due in the advertiser database.
    fn attempt_ready(
        &self,
        advertisers: &mut Client,
        ready: &[i64],
        origin: Origin,
        recorder: &mut Recorder,
    ) -> Result<PlannedRows, postgres::Error> {
        if ready.is_empty() {
            return Ok(PlannedRows::default());
        }
        let attempt = match origin {
            Origin::Announced => &self.attempt,
            Origin::Replayed => &self.replay,
        };
        attempt.run(advertisers, ready, None, recorder)
    }

    /// Reports the completed deletions and the blocked profiles; returns the ids the
    /// advertiser database left for the sweep.
    fn report(
        &self,
        recorder: &mut Recorder,
        attempted: PlannedRows,
        completed: &[Row],
    ) -> Vec<i64> {
        let PlannedRows {
            dependents,
            blocked,
            busy,
            ..
        } = attempted;
        for row in completed {
            let profile_id: i64 = row.get(0);
            let user_id: Option<i64> = row.get(1);
            let deletion = Deletion::Role {
                role: ADVERTISER,
                profile_id,
                user_id,
                email: row.get(2),
                user_missing: user_id.is_some() && !row.get::<_, bool>(3),
            };
            let shown = dependents.get(&profile_id).map_or(&[][..], Vec::as_slice);
            recorder.deleted(&deletion, shown);
        }
        for unit in &blocked {
            let deletion = Deletion::Role {
                role: ADVERTISER,
                profile_id: unit.id,
                user_id: unit.user_id,
                email: None,
                user_missing: false,
            };
            recorder.blocked(&deletion, &unit.blockers);
        }
        busy
    }
}

impl Work for AdvertiserWork<'_> {
    fn name(&self) -> String {
        format!("{} (advertiser database)", self.profile.table)
    }

    fn describe(&self, id: i64) -> String {
        format!(
            "role 'advertiser' (profile {id} in {} of the advertiser database)",
            self.profile.table
        )
    }

    fn first_batch(&self) -> usize {
        self.attempt.first_batch()
    }

    fn declare_due(&self, client: &mut Client) -> Result<DueIds, postgres::Error> {
        DueIds::declare(client, &self.due, &[])
    }

    /// Step 1, then steps 2 to 4.
    fn attempt(
        &self,
        client: &mut Client,
        ids: &[i64],
        recorder: &mut Recorder,
    ) -> Result<Vec<i64>, postgres::Error> {
        let due = client.query_typed(&self.due_with_users, &[(&ids, Type::INT8_ARRAY)])?;
        let profiles: Vec<i64> = due.iter().map(|row| row.get(0)).collect();
        let users: Vec<Option<i64>> = due.iter().map(|row| row.get(1)).collect();
        let started = Instant::now();
        let announced: Vec<i64> = self
            .users
            .borrow_mut()
            .query_typed(
                steps::ANNOUNCE,
                &[(&profiles, Type::INT8_ARRAY), (&users, Type::INT8_ARRAY)],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect();
        recorder.transaction_took(started.elapsed());
        self.carry_out(client, &announced, Origin::Announced, recorder)
    }

    fn still_due(&self, client: &mut Client, ids: &[i64]) -> Result<Vec<i64>, postgres::Error> {
        sorted_ids(client, &self.still_due, ids)
    }

    fn wait_until_free(
        &self,
        client: &mut Client,
        id: i64,
        deadline: Option<Instant>,
    ) -> Result<bool, postgres::Error> {
        match wait_for_profile(client, self.profile, id, deadline)? {
            Some(user) => wait_for_user(&mut self.users.borrow_mut(), user, deadline),
            None => Ok(false),
        }
    }
}
