//! The loop every kind of deletion shares: batches, failure isolation, and locked rows.
//!
//! A [`Work`] knows how to find candidate ids (keyset order, so each row is tried at most once
//! per pass and memory does not grow with the backlog) and how to attempt a set of ids in one
//! transaction. [`drain`] runs batches sized by [`BatchSizer`]; when a batch fails with an
//! error that belongs to a row (a foreign key that does not cascade, a trigger, a lock
//! timeout), it rolls back and retries the batch one row per transaction, so only the guilty
//! row is reported and the run goes on.
//!
//! Attempts lock with `SKIP LOCKED`: we never wait for a lock while holding others, so we
//! never deadlock with the application or with a second run of ours. Rows we skipped because
//! another transaction held them are retried at the end of the pass ([`sweep`]): we wait for
//! each one alone, holding nothing, at most `lock_timeout`, then attempt it again. A row still
//! locked after that is reported and left for the next run.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use postgres::Client;

use crate::db::db_message;
use crate::report::Report;

/// One kind of deletion (a role table, role requests, accounts).
pub trait Work {
    /// What this work deletes, for messages: "tutor_profiles".
    fn name(&self) -> String;
    /// What one id stands for, for messages: "tutor profile 7".
    fn describe(&self, id: i64) -> String;
    /// Up to `limit` ids due after `after`, ascending.
    fn candidates(
        &self,
        client: &mut Client,
        after: i64,
        limit: i64,
    ) -> Result<Vec<i64>, postgres::Error>;
    /// Deletes what of `ids` is still due, in one transaction; reports the deletions after
    /// commit and returns the ids still due but locked by another transaction.
    fn attempt(
        &self,
        client: &mut Client,
        ids: &[i64],
        report: &mut Report,
    ) -> Result<Vec<i64>, postgres::Error>;
    /// Of `ids`, those still due.
    fn still_due(&self, client: &mut Client, ids: &[i64]) -> Result<Vec<i64>, postgres::Error>;
    /// Waits until the rows `id` depends on are not locked; errors with `lock_not_available`
    /// after `lock_timeout`. Runs in its own transaction and holds nothing afterwards.
    fn wait_until_free(&self, client: &mut Client, id: i64) -> Result<(), postgres::Error>;
}

/// Sizes batches so that one transaction takes about `target`.
pub struct BatchSizer {
    size: usize,
    target: Duration,
}

const MIN_BATCH: usize = 1;
const MAX_BATCH: usize = 5000;
const FIRST_BATCH: usize = 500;
/// How long one of our transactions should hold its locks.
pub const TARGET_TRANSACTION: Duration = Duration::from_millis(100);

impl BatchSizer {
    pub fn new(target: Duration) -> BatchSizer {
        BatchSizer {
            size: FIRST_BATCH,
            target,
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
        let per_row = elapsed.as_secs_f64() / rows as f64;
        let ideal = if per_row > 0.0 {
            self.target.as_secs_f64() / per_row
        } else {
            MAX_BATCH as f64
        };
        // Grow at most 2x at a time; shrink at once if a batch ran long.
        let next = ideal.min(self.size as f64 * 2.0);
        self.size = (next as usize).clamp(MIN_BATCH, MAX_BATCH);
    }
}

/// Most locked ids remembered for the sweep; beyond that they wait for the next run.
const MAX_REMEMBERED_BUSY: usize = 100_000;

/// Deletes everything `work` finds due. Errors only for what ends the run (connection lost,
/// permission denied...); row failures are reported and counted.
pub fn drain(
    client: &mut Client,
    work: &dyn Work,
    report: &mut Report,
    sizer: &mut BatchSizer,
) -> anyhow::Result<()> {
    let mut after = i64::MIN;
    let mut busy = Vec::new();
    let mut busy_overflow = 0usize;
    loop {
        let ids = work
            .candidates(client, after, sizer.size() as i64)
            .map_err(|error| fatal(work, "cannot read what is due in", &error))?;
        let Some(&last) = ids.last() else { break };
        after = last;
        let started = Instant::now();
        let locked = attempt_isolating_failures(client, work, &ids, report)?;
        sizer.record(ids.len(), started.elapsed());
        for id in locked {
            if busy.len() < MAX_REMEMBERED_BUSY {
                busy.push(id);
            } else {
                busy_overflow += 1;
            }
        }
    }
    if busy_overflow > 0 {
        report.warning(&format!(
            "{busy_overflow} rows of {} were locked by other transactions and are left for \
             the next run",
            work.name()
        ));
    }
    sweep(client, work, &busy, report)
}

/// Attempts `ids` as one batch; on a row-level error retries them one by one.
fn attempt_isolating_failures(
    client: &mut Client,
    work: &dyn Work,
    ids: &[i64],
    report: &mut Report,
) -> anyhow::Result<Vec<i64>> {
    match work.attempt(client, ids, report) {
        Ok(locked) => Ok(locked),
        Err(error) if is_row_level(&error) && ids.len() > 1 => {
            log::debug!(
                "batch of {} from {} failed ({}); retrying row by row",
                ids.len(),
                work.name(),
                db_message(&error)
            );
            let mut locked = Vec::new();
            for &id in ids {
                locked.extend(attempt_one(client, work, id, report)?);
            }
            Ok(locked)
        }
        Err(error) if is_row_level(&error) => {
            report.failed(&work.describe(ids[0]), &row_error(&error));
            Ok(Vec::new())
        }
        Err(error) => Err(fatal(work, "cannot delete from", &error)),
    }
}

fn attempt_one(
    client: &mut Client,
    work: &dyn Work,
    id: i64,
    report: &mut Report,
) -> anyhow::Result<Vec<i64>> {
    match work.attempt(client, &[id], report) {
        Ok(locked) => Ok(locked),
        Err(error) if is_row_level(&error) => {
            report.failed(&work.describe(id), &row_error(&error));
            Ok(Vec::new())
        }
        Err(error) => Err(fatal(work, "cannot delete from", &error)),
    }
}

/// Retries rows that were locked: wait for each alone (bounded), then attempt it again.
fn sweep(
    client: &mut Client,
    work: &dyn Work,
    busy: &[i64],
    report: &mut Report,
) -> anyhow::Result<()> {
    for chunk in busy.chunks(MAX_BATCH) {
        let due = work
            .still_due(client, chunk)
            .map_err(|error| fatal(work, "cannot read what is due in", &error))?;
        for id in due {
            match work.wait_until_free(client, id) {
                Ok(()) => {}
                Err(error) if is_lock_timeout(&error) => {
                    report.failed(
                        &work.describe(id),
                        "locked by another transaction for longer than the lock timeout; \
                         left for the next run",
                    );
                    continue;
                }
                Err(error) if is_row_level(&error) => {
                    report.failed(&work.describe(id), &row_error(&error));
                    continue;
                }
                Err(error) => return Err(fatal(work, "cannot lock a row of", &error)),
            }
            if !attempt_one(client, work, id, report)?.is_empty() {
                report.failed(
                    &work.describe(id),
                    "locked again by another transaction; left for the next run",
                );
            }
        }
    }
    Ok(())
}

/// Whether `error` concerns the rows of this attempt rather than the run as a whole.
pub fn is_row_level(error: &postgres::Error) -> bool {
    let Some(db_error) = error.as_db_error() else {
        return false;
    };
    let code = db_error.code().code();
    ["22", "23", "27", "2F", "38", "39", "40", "P0", "09"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(code, "55P03" | "57014" | "55006")
}

fn is_lock_timeout(error: &postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db_error| db_error.code().code() == "55P03")
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
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_slowly_and_shrink_at_once() {
        let mut sizer = BatchSizer::new(Duration::from_millis(100));
        sizer.record(500, Duration::from_millis(10));
        assert_eq!(sizer.size(), 1000, "at most doubles");
        sizer.record(1000, Duration::from_millis(400));
        assert_eq!(sizer.size(), 250, "shrinks to fit the target");
        sizer.record(250, Duration::from_secs(100));
        assert_eq!(sizer.size(), 1, "never below one row");
        for _ in 0..20 {
            let size = sizer.size();
            sizer.record(size, Duration::ZERO);
        }
        assert_eq!(sizer.size(), MAX_BATCH, "capped");
    }
}
