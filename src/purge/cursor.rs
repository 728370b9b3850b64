//! The ids one kind of work has to go through, from a server-side cursor, a batch at a time.
//!
//! The due ids are found by one query per work, declared as a `WITH HOLD` cursor in a short
//! read-only transaction of its own: at its COMMIT the server runs the query once and keeps
//! the ids (8 bytes each, spilled to disk past `work_mem`). Without parameters the three
//! statements go in one simple query, one round trip. (Declared outside a transaction block
//! the query would run in the implicit commit after the statement, where `statement_timeout`
//! no longer applies.)
//!
//! The client FETCHes [`READ_AHEAD`] ids at a time (40 kB) and hands them out a batch at a
//! time, so most batches cost no round trip for their ids, and memory stays the same
//! whatever the backlog. Each table is scanned once per run, instead of walked through its
//! primary key by a query per batch that tests every row on the way (BENCHMARKS.md,
//! "Finding the due ids").
//!
//! Ids read early are as safe as ids read late: every attempt locks its rows and its DELETE
//! re-checks that they are still due. A row that becomes due during the run waits for the
//! next one. A cursor lives in the session, so the job needs a session of its own (not a
//! transaction-pooling proxy), as it already does for `lock_timeout`.

use std::collections::VecDeque;

use postgres::Client;
use postgres::types::{ToSql, Type};

use super::drain::MAX_BATCH;

/// The cursor's name: one work at a time is drained, so one name does.
const NAME: &str = "astegni_due";

/// Ids one FETCH reads: as many as the largest batch, so a FETCH round trip serves several
/// batches.
const READ_AHEAD: usize = MAX_BATCH;

/// An open cursor over due ids; [`DueIds::close`] it when done.
pub struct DueIds {
    /// Ids fetched and not yet handed out, ascending.
    buffered: VecDeque<i64>,
    /// Whether the server has no more.
    exhausted: bool,
}

impl DueIds {
    /// Declares the cursor over `query` (ids, ascending) with `params`.
    pub fn declare(
        client: &mut Client,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<DueIds, postgres::Error> {
        let declare = format!("DECLARE {NAME} NO SCROLL CURSOR WITH HOLD FOR {query}");
        if params.is_empty() {
            declare_in_one_round_trip(client, &declare)?;
        } else {
            let mut transaction = client.build_transaction().read_only(true).start()?;
            // Typed: one round trip, where an unprepared statement takes two.
            transaction.execute_typed(&declare, params)?;
            transaction.commit()?;
        }
        Ok(DueIds {
            buffered: VecDeque::new(),
            exhausted: false,
        })
    }

    /// The next `limit` ids at most; empty at the end.
    pub fn fetch(
        &mut self,
        client: &mut Client,
        limit: usize,
    ) -> Result<Vec<i64>, postgres::Error> {
        if self.buffered.len() < limit && !self.exhausted {
            let count = READ_AHEAD.max(limit - self.buffered.len());
            // query_typed: one round trip, where an unprepared query takes two.
            let rows = client.query_typed(&format!("FETCH FORWARD {count} FROM {NAME}"), &[])?;
            self.exhausted = rows.len() < count;
            self.buffered
                .extend(rows.iter().map(|row| row.get::<_, i64>(0)));
        }
        let count = limit.min(self.buffered.len());
        Ok(self.buffered.drain(..count).collect())
    }

    pub fn close(self, client: &mut Client) -> Result<(), postgres::Error> {
        client.batch_execute(&format!("CLOSE {NAME}"))
    }
}

/// Runs the transaction of a `declare` without parameters as one simple query: one round
/// trip instead of three. The query text holds no values, only validated, quoted
/// identifiers (see `statements`). If a statement fails, the server skips the rest and the
/// transaction block stays open, aborted: it is rolled back before the error is returned.
fn declare_in_one_round_trip(client: &mut Client, declare: &str) -> Result<(), postgres::Error> {
    client
        .batch_execute(&format!("START TRANSACTION READ ONLY; {declare}; COMMIT"))
        .inspect_err(|_| {
            // The error that matters is the first one; a failed ROLLBACK (the connection
            // is gone) adds nothing to it.
            let _ = client.batch_execute("ROLLBACK");
        })
}
