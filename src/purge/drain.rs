//! The loop every kind of deletion shares: batches, failure isolation, and locked rows.
//!
//! A [`Work`] knows how to find the ids due (a server-side cursor, see `cursor`: each row is
//! tried at most once per pass and memory does not grow with the backlog) and how to attempt
//! a set of ids: one statement, which is its own transaction and one round trip (see
//! `statements`). [`drain`] runs batches sized by [`BatchSizer`]; when a batch fails with an
//! error that belongs to a row (a foreign key that does not cascade, a trigger), the failed
//! statement has rolled back, and the batch is retried one row at a time, so only the guilty
//! row is reported and the run goes on.
//!
//! Attempts lock with `SKIP LOCKED`: we never wait for a lock while holding others, so we
//! never deadlock with the application or with a second run of ours. A batch that runs into
//! a lock timeout anyway (the cascade of a user's deletion meets a child row the app holds;
//! a migration locks a whole table, which even `SKIP LOCKED` waits for) is retried one row at
//! a time with a 50 ms lock wait, so the rows that can go, go. Rows held by others are
//! retried at the end of the pass ([`sweep`]): we wait for each alone, holding nothing, then
//! attempt it again, and again if someone took it first. All the waiting of one sweep shares
//! one budget of `lock_timeout`, and a streak of held-up rows stops the one-by-one tries, so
//! a table lock costs a few timeouts, not one per row. Rows still held when the budget is
//! spent are reported and left for the next run.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use postgres::Client;
use postgres::error::SqlState;
use postgres::types::Type;

use super::cursor::DueIds;
use super::record::Recorder;
use crate::db::{db_message, sqlstate_class};

/// One kind of deletion (a role table, role requests, accounts).
pub trait Work {
    /// What this work deletes, for messages: "tutor_profiles".
    fn name(&self) -> String;
    /// What one id stands for, for messages: "tutor profile 7".
    fn describe(&self, id: i64) -> String;
    /// Opens the cursor over every id due now, ascending.
    fn declare_due(&self, client: &mut Client) -> Result<DueIds, postgres::Error>;
    /// Deletes what of `ids` is still due, one transaction per statement; reports the
    /// deletions once committed, records each transaction's duration, and returns the ids
    /// still due but locked by another transaction.
    fn attempt(
        &self,
        client: &mut Client,
        ids: &[i64],
        recorder: &mut Recorder,
    ) -> Result<Vec<i64>, postgres::Error>;
    /// The size of the first batch.
    fn first_batch(&self) -> usize {
        FIRST_BATCH
    }
    /// Of `ids`, those still due.
    fn still_due(&self, client: &mut Client, ids: &[i64]) -> Result<Vec<i64>, postgres::Error>;
    /// Waits until the rows `id` depends on are not locked, until `deadline` at most (None:
    /// no limit); returns whether they are free. Holds nothing afterwards.
    fn wait_until_free(
        &self,
        client: &mut Client,
        id: i64,
        deadline: Option<Instant>,
    ) -> Result<bool, postgres::Error>;
}

/// Sizes batches so that one transaction takes about `target`, from a per-row time that
/// believes bad news at once and good news slowly: on a busy server one batch is no
/// measure of the next, and an optimistic estimate is what produces a long transaction.
pub struct BatchSizer {
    size: usize,
    target: Duration,
    /// Seconds per row: the dearest recent measurement, decaying toward cheaper ones.
    per_row: Option<f64>,
}

const MIN_BATCH: usize = 1;
pub const MAX_BATCH: usize = 5000;
/// Small, and per kind of work: a size learnt on cheap rows (profiles without children)
/// carried over to expensive ones (accounts with their cascades) would keep the next work's
/// first transaction far past the target; the sizer grows quickly from here.
pub const FIRST_BATCH: usize = 100;
/// The first batch of work under a deletion plan with work to do: each unit then costs a
/// lookup in every table on its path (a scan where a key has no index), many times what a
/// plain deletion costs, so the sizer starts lower and grows from what it measures.
pub const FIRST_PLANNED_BATCH: usize = 10;
/// How much bigger one batch may be than the one before. It is not what holds the bound:
/// the per-row estimate is never below the last measurement, so the next batch, at the
/// speed just measured, takes at most the target, and on a machine twice as slow 120 ms.
/// The cap limits how far the rows of one batch predict the next's, mostly on the way up
/// from the first batch; 2x cost every kind of work more undersized batches (10-30% more
/// time at 10k) without shortening the longest transaction (BENCHMARKS.md, "Batch size").
const MAX_GROWTH: f64 = 4.0;
/// How far one cheaper measurement moves the per-row estimate: half way. A dearer one moves
/// it all the way, so a batch that ran long shrinks the next at once.
const EASING: f64 = 0.5;
/// How long one of our transactions should hold its locks: well under the 250 ms the live
/// app may wait on us, even when a busy server stalls a batch to several times the target.
/// A batch's fixed cost (a round trip, planning) is small next to its work, so a shorter
/// target costs little throughput (BENCHMARKS.md, "Batch size").
pub const TARGET_TRANSACTION: Duration = Duration::from_millis(60);

impl BatchSizer {
    pub fn new(target: Duration, first: usize) -> BatchSizer {
        BatchSizer {
            size: first,
            target,
            per_row: None,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Adjusts the size after a batch of `rows` took `elapsed`.
    pub fn record(&mut self, rows: usize, elapsed: Duration) {
        if rows == 0 {
            return;
        }
        let measured = elapsed.as_secs_f64() / rows as f64;
        let per_row = match self.per_row {
            Some(estimate) if measured < estimate => estimate + EASING * (measured - estimate),
            _ => measured,
        };
        self.per_row = Some(per_row);
        let ideal = if per_row > 0.0 {
            self.target.as_secs_f64() / per_row
        } else {
            MAX_BATCH as f64
        };
        let next = ideal.min(rows as f64 * MAX_GROWTH);
        self.size = (next as usize).clamp(MIN_BATCH, MAX_BATCH);
    }
}

/// Most locked ids remembered for the sweep; beyond that they wait for the next run.
const MAX_REMEMBERED_BUSY: usize = 100_000;

/// While retrying rows one at a time, the lock wait of each attempt: short, so that a row
/// held by someone else (or a child row its cascade needs) costs little and goes to the sweep.
const QUICK_LOCK_TIMEOUT: Duration = Duration::from_millis(50);
/// After this many rows in a row were held up, one at a time, the lock is taken to be on a
/// whole table (a migration): the rest of the batch is not tried one by one.
const BUSY_STREAK_LIMIT: usize = 5;

/// Deletes everything `work` finds due. Errors only for what ends the run (connection lost,
/// permission denied...); row failures are reported and counted.
pub fn drain(
    client: &mut Client,
    work: &dyn Work,
    recorder: &mut Recorder,
    lock_timeout: Duration,
) -> anyhow::Result<()> {
    let mut sizer = BatchSizer::new(TARGET_TRANSACTION, work.first_batch());
    let mut busy = Vec::new();
    let mut busy_overflow = 0usize;
    let cannot_read = |error| fatal(work, "cannot read what is due in", &error);
    let mut due = work.declare_due(client).map_err(cannot_read)?;
    loop {
        let ids = due.fetch(client, sizer.size()).map_err(cannot_read)?;
        if ids.is_empty() {
            break;
        }
        let started = Instant::now();
        let attempted = attempt_isolating_failures(client, work, &ids, recorder, lock_timeout)?;
        recorder.report.flush();
        if attempted.clean {
            sizer.record(ids.len(), started.elapsed());
        }
        for id in attempted.busy {
            if busy.len() < MAX_REMEMBERED_BUSY {
                busy.push(id);
            } else {
                busy_overflow += 1;
            }
        }
    }
    due.close(client).map_err(cannot_read)?;
    if busy_overflow > 0 {
        recorder.report.warning(&format!(
            "{busy_overflow} rows of {} were locked by other transactions and are left for \
             the next run",
            work.name()
        ));
    }
    if busy.is_empty() {
        return Ok(());
    }
    let deadline = (!lock_timeout.is_zero()).then(|| Instant::now() + lock_timeout);
    set_lock_timeout(client, QUICK_LOCK_TIMEOUT, work)?;
    let swept = sweep(client, work, &busy, recorder, deadline);
    recorder.report.flush();
    set_lock_timeout(client, lock_timeout, work)?;
    swept
}

/// What became of a batch: the ids left for the sweep, and whether it ran without errors
/// (only such batches tell the sizer how long rows take).
struct Attempted {
    busy: Vec<i64>,
    clean: bool,
}

/// Attempts `ids` as one batch. On a row-level error (a foreign key, a trigger, a statement
/// timeout) or a lock timeout, retries them one by one with a short lock wait, so that only
/// the guilty row fails and rows held by others go to the sweep.
fn attempt_isolating_failures(
    client: &mut Client,
    work: &dyn Work,
    ids: &[i64],
    recorder: &mut Recorder,
    lock_timeout: Duration,
) -> anyhow::Result<Attempted> {
    let busy = match work.attempt(client, ids, recorder) {
        Ok(busy) => return Ok(Attempted { busy, clean: true }),
        Err(error) if ids.len() > 1 && (is_lock_timeout(&error) || is_row_level(&error)) => {
            log::debug!(
                "batch of {} from {} failed ({}); retrying row by row",
                ids.len(),
                work.name(),
                db_message(&error)
            );
            set_lock_timeout(client, QUICK_LOCK_TIMEOUT, work)?;
            let busy = one_by_one(client, work, ids, recorder);
            set_lock_timeout(client, lock_timeout, work)?;
            busy?
        }
        Err(error) if is_lock_timeout(&error) => ids.to_vec(),
        Err(error) if is_row_level(&error) => {
            recorder.failed(&work.describe(ids[0]), &row_error(&error));
            Vec::new()
        }
        Err(error) => return Err(fatal(work, "cannot delete from", &error)),
    };
    Ok(Attempted { busy, clean: false })
}

/// Attempts each of `ids` alone; returns those held by others. After
/// [`BUSY_STREAK_LIMIT`] held-up rows in a row, leaves the rest to the sweep untried.
fn one_by_one(
    client: &mut Client,
    work: &dyn Work,
    ids: &[i64],
    recorder: &mut Recorder,
) -> anyhow::Result<Vec<i64>> {
    let mut busy = Vec::new();
    let mut streak = 0;
    for (index, &id) in ids.iter().enumerate() {
        if streak >= BUSY_STREAK_LIMIT {
            busy.extend_from_slice(&ids[index..]);
            break;
        }
        match attempt_one(client, work, id, recorder)? {
            One::Done => streak = 0,
            One::Busy => {
                streak += 1;
                busy.push(id);
            }
        }
    }
    Ok(busy)
}

fn set_lock_timeout(client: &mut Client, timeout: Duration, work: &dyn Work) -> anyhow::Result<()> {
    client
        .query_typed(
            "SELECT set_config('lock_timeout', $1, false)",
            &[(&format!("{}ms", timeout.as_millis()), Type::TEXT)],
        )
        .map(|_| ())
        .map_err(|error| fatal(work, "cannot set the lock timeout for", &error))
}

/// What became of one row.
enum One {
    /// Deleted, no longer due, or failed and reported.
    Done,
    /// Still due, and another transaction holds it (or something its deletion needs).
    Busy,
}

fn attempt_one(
    client: &mut Client,
    work: &dyn Work,
    id: i64,
    recorder: &mut Recorder,
) -> anyhow::Result<One> {
    match work.attempt(client, &[id], recorder) {
        Ok(busy) if busy.is_empty() => Ok(One::Done),
        Ok(_) => Ok(One::Busy),
        Err(error) if is_lock_timeout(&error) => Ok(One::Busy),
        Err(error) if is_row_level(&error) => {
            recorder.failed(&work.describe(id), &row_error(&error));
            Ok(One::Done)
        }
        Err(error) => Err(fatal(work, "cannot delete from", &error)),
    }
}

/// Retries rows that were held by others: waits for each alone, holding nothing, and
/// attempts it again, as long as the sweep's budget (`deadline`) lasts; then attempts each
/// remaining row once more without waiting. Rows still held are reported; after
/// [`BUSY_STREAK_LIMIT`] of them in a row with the budget spent, the rest are reported
/// without trying (a table lock).
fn sweep(
    client: &mut Client,
    work: &dyn Work,
    busy: &[i64],
    recorder: &mut Recorder,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let mut streak = 0;
    for chunk in busy.chunks(MAX_BATCH) {
        let due = work
            .still_due(client, chunk)
            .map_err(|error| fatal(work, "cannot read what is due in", &error))?;
        for id in due {
            let budget_spent = deadline.is_some_and(|deadline| Instant::now() >= deadline);
            let done = if budget_spent && streak >= BUSY_STREAK_LIMIT {
                false
            } else {
                retry_until_free(client, work, id, recorder, deadline)?
            };
            if done {
                streak = 0;
            } else {
                streak += 1;
                recorder.failed(
                    &work.describe(id),
                    "locked by another transaction for longer than the lock timeout; \
                     left for the next run",
                );
            }
        }
    }
    Ok(())
}

/// Waits for row `id` and attempts it, as often as someone else takes it first, until the
/// deadline; returns whether it is done (deleted, no longer due, or failed and reported).
fn retry_until_free(
    client: &mut Client,
    work: &dyn Work,
    id: i64,
    recorder: &mut Recorder,
    deadline: Option<Instant>,
) -> anyhow::Result<bool> {
    loop {
        let free = match work.wait_until_free(client, id, deadline) {
            Ok(free) => free,
            Err(error) if is_row_level(&error) => {
                recorder.failed(&work.describe(id), &row_error(&error));
                return Ok(true);
            }
            Err(error) => return Err(fatal(work, "cannot lock a row of", &error)),
        };
        // Attempt even when the wait gave up: the budget may have been spent on other rows.
        match attempt_one(client, work, id, recorder)? {
            One::Done => return Ok(true),
            One::Busy if !free => return Ok(false),
            One::Busy if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                return Ok(false);
            }
            One::Busy => {}
        }
    }
}

/// Whether `error` concerns the rows of this attempt rather than the run as a whole.
pub fn is_row_level(error: &postgres::Error) -> bool {
    let Some(db_error) = error.as_db_error() else {
        return false;
    };
    let code = db_error.code();
    // Data exceptions, integrity constraint violations, triggered data change violations,
    // SQL routine and external routine exceptions, transaction rollbacks (deadlock,
    // serialization), PL/pgSQL raises and triggered action exceptions: about the rows.
    ROW_LEVEL_CLASSES.contains(&sqlstate_class(code))
        || [
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::OBJECT_IN_USE,
        ]
        .contains(code)
}

const ROW_LEVEL_CLASSES: [&str; 9] = ["22", "23", "27", "2F", "38", "39", "40", "P0", "09"];

/// A lock timeout: another transaction held a lock we needed (a row, or a whole table).
fn is_lock_timeout(error: &postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db_error| *db_error.code() == SqlState::LOCK_NOT_AVAILABLE)
}

/// A lock or statement timeout while waiting for others.
pub fn is_timeout(error: &postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db_error| {
        [SqlState::LOCK_NOT_AVAILABLE, SqlState::QUERY_CANCELED].contains(db_error.code())
    })
}

/// The server's message for a row failure, naming the constraint when there is one.
pub fn row_error(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db_error) => {
            let mut text = db_error.message().to_owned();
            if let Some(constraint) = db_error.constraint() {
                text.push_str(&format!(" [constraint {constraint}]"));
            }
            if let Some(detail) = db_error.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => error.to_string(),
    }
}

fn fatal(work: &dyn Work, doing: &str, error: &postgres::Error) -> anyhow::Error {
    anyhow!("{doing} {}: {}", work.name(), describe_fatal(error))
}

/// A one-line description of an error that ends the run.
pub fn describe_fatal(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db_error) => format!(
            "{} (SQLSTATE {})",
            db_error.message(),
            db_error.code().code()
        ),
        None if error.is_closed() => "the database connection was lost".to_owned(),
        None => crate::db::error_text(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_at_most_fourfold_and_shrink_at_once() {
        let mut sizer = BatchSizer::new(Duration::from_millis(100), FIRST_BATCH);
        assert_eq!(sizer.size(), FIRST_BATCH);
        sizer.record(100, Duration::from_millis(1));
        assert_eq!(sizer.size(), 400, "grows at most 4x");
        sizer.record(400, Duration::from_millis(20));
        assert_eq!(
            sizer.size(),
            1600,
            "at most 4x even when the target allows more"
        );
        sizer.record(1600, Duration::from_millis(6400));
        assert_eq!(
            sizer.size(),
            25,
            "a batch that ran long shrinks the next at once"
        );
        sizer.record(250, Duration::from_secs(100));
        assert_eq!(sizer.size(), 1, "never below one row");
        for _ in 0..40 {
            let size = sizer.size();
            sizer.record(size, Duration::ZERO);
        }
        assert_eq!(sizer.size(), MAX_BATCH, "capped");
    }

    #[test]
    fn one_cheap_batch_does_not_undo_an_expensive_one() {
        let mut sizer = BatchSizer::new(Duration::from_millis(60), FIRST_BATCH);
        sizer.record(100, Duration::from_millis(60));
        assert_eq!(sizer.size(), 100, "0.6 ms per row: 100 rows fit");
        sizer.record(100, Duration::from_millis(6));
        assert_eq!(
            sizer.size(),
            181,
            "ten times cheaper, believed half way: 0.33 ms a row"
        );
        sizer.record(181, Duration::from_millis(240));
        assert_eq!(sizer.size(), 45, "1.3 ms a row, believed at once");
    }

    #[test]
    fn a_batch_at_the_target_cannot_pass_the_bound_on_a_machine_twice_as_slow() {
        let target = Duration::from_millis(60);
        let mut sizer = BatchSizer::new(target, FIRST_BATCH);
        // Any history of batches that each took at most the target...
        for (rows, ms) in [
            (100, 60),
            (100, 3),
            (200, 9),
            (400, 60),
            (800, 1),
            (1600, 30),
        ] {
            sizer.record(rows, Duration::from_millis(ms));
            // ...predicts the next at the per-row time of the last at worst twice over.
            let worst = ms as f64 / rows as f64 * sizer.size() as f64 * 2.0;
            assert!(
                worst <= 250.0,
                "{} rows after {rows} in {ms} ms",
                sizer.size()
            );
        }
    }
}
