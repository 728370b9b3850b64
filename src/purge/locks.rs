//! Running an attempt's statement, and waiting for rows other transactions hold.
//!
//! The statements of every batch run through [`by_ids`] (`query_typed`): parse, bind and
//! execute in one round trip, where `query` takes two, and planned for the ids at hand.
//! Outside a transaction block, that round trip is also the statement's whole transaction:
//! the server commits at the end of it, and an error at commit (a deferred constraint)
//! still arrives before the call returns, as the statement's error.
//!
//! They are deliberately not prepared once and reused: after five executions PostgreSQL
//! switches a prepared statement to a generic plan, which cannot see how many ids
//! `= ANY($1)` holds, estimates one row and joins a deletion's CTEs by nested loops, whose
//! cost grows with the square of the batch. And `plan_cache_mode = force_custom_plan` is no
//! cure: it applies to the foreign-key cascade triggers' cached queries too, which then are
//! planned again for every deleted row. (BENCHMARKS.md, "What was tried", "Plans".)

use std::collections::BTreeSet;
use std::time::Instant;

use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, Row};

use super::record::Recorder;
use super::statements::{self as sql, WAIT_FOR_USER};
use crate::schema::ProfileTable;

/// The rows an attempt statement returned, split by their last column: the deletions, and
/// the ids still due that it left for the sweep (`TRUE`).
pub struct AttemptRows {
    pub deleted: Vec<Row>,
    pub busy: Vec<i64>,
}

impl AttemptRows {
    /// Runs the attempt statement `sql` with the ids as `$1` and, for role work, the role as
    /// `$2`: one round trip, one transaction. Records how long it took, which is how long it
    /// held its locks (and a round trip more).
    pub fn run(
        client: &mut Client,
        sql: &str,
        ids: &[i64],
        role: Option<&str>,
        recorder: &mut Recorder,
    ) -> Result<AttemptRows, postgres::Error> {
        let started = Instant::now();
        let rows = match role {
            Some(role) => by_ids_and(client, sql, ids, &role, Type::TEXT),
            None => by_ids(client, sql, ids),
        };
        recorder.transaction_took(started.elapsed());
        Ok(AttemptRows::split(rows?))
    }

    pub fn split(rows: Vec<Row>) -> AttemptRows {
        let (busy, deleted): (Vec<Row>, Vec<Row>) = rows
            .into_iter()
            .partition(|row| row.get::<_, bool>(row.len() - 1));
        AttemptRows {
            deleted,
            busy: busy.iter().map(|row| row.get::<_, i64>(0)).collect(),
        }
    }
}

/// Waits, holding nothing else, until `sql` (`SELECT ... FOR UPDATE`) can lock its rows,
/// then lets go again. Waits until `deadline` at most (None: as long as it takes); returns
/// whether the rows are free.
pub fn wait_for_rows(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    deadline: Option<Instant>,
) -> Result<bool, postgres::Error> {
    let limit = match deadline {
        Some(deadline) => {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(false);
            }
            format!("{}ms", remaining.as_millis().max(1))
        }
        None => "0".to_owned(),
    };
    // Dropping the transaction rolls it back, which is all we want from it.
    let mut transaction = client.transaction()?;
    transaction.query("SELECT set_config('lock_timeout', $1, true)", &[&limit])?;
    match transaction.query(sql, params) {
        Ok(_) => Ok(true),
        Err(error) if super::drain::is_timeout(&error) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Waits until profile `id` of `profile`'s table is free; see [`wait_for_rows`]. Returns
/// `None` if it is still held, else its user (`Some(None)`: it has none), whose row the
/// caller then waits for.
pub fn wait_for_profile(
    client: &mut Client,
    profile: &ProfileTable,
    id: i64,
    deadline: Option<Instant>,
) -> Result<Option<Option<i64>>, postgres::Error> {
    if !wait_for_rows(client, &sql::wait_for_profile(profile), &[&id], deadline)? {
        return Ok(None);
    }
    let user = client
        .query_opt(&sql::user_of_profile(profile), &[&id])?
        .and_then(|row| row.get(0));
    Ok(Some(user))
}

/// Waits until user `id`'s row is free; see [`wait_for_rows`].
pub fn wait_for_user(
    client: &mut Client,
    id: Option<i64>,
    deadline: Option<Instant>,
) -> Result<bool, postgres::Error> {
    match id {
        Some(id) => wait_for_rows(client, WAIT_FOR_USER, &[&id], deadline),
        None => Ok(true),
    }
}

/// Runs `sql` with the ids as `$1` (`bigint[]`): in one round trip, planned for these ids.
fn by_ids(
    client: &mut impl GenericClient,
    sql: &str,
    ids: &[i64],
) -> Result<Vec<Row>, postgres::Error> {
    client.query_typed(sql, &[(&ids, Type::INT8_ARRAY)])
}

/// The ids [`by_ids`] returns in its first column, ascending and each once.
pub fn sorted_ids(
    client: &mut impl GenericClient,
    sql: &str,
    wanted: &[i64],
) -> Result<Vec<i64>, postgres::Error> {
    Ok(ids(by_ids(client, sql, wanted)?).into_iter().collect())
}

/// [`by_ids`] with a second parameter `$2` of type `second_type`.
fn by_ids_and(
    client: &mut impl GenericClient,
    sql: &str,
    ids: &[i64],
    second: &(dyn ToSql + Sync),
    second_type: Type,
) -> Result<Vec<Row>, postgres::Error> {
    client.query_typed(sql, &[(&ids, Type::INT8_ARRAY), (second, second_type)])
}

/// The first column of `rows` as ids.
fn ids(rows: Vec<postgres::Row>) -> BTreeSet<i64> {
    rows.iter().map(|row| row.get::<_, i64>(0)).collect()
}
