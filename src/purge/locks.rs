//! Row locks taken inside an attempt's transaction, all with `SKIP LOCKED`.
//!
//! Each helper returns what it could lock and what another transaction holds. A row that
//! does not exist (any more) is neither: it has nothing to protect.
//!
//! The statements of every batch run through [`by_ids`] (`query_typed`): parse, bind and
//! execute in one round trip, where `query` takes two, and planned for the ids at hand.
//! They are deliberately not prepared once and reused: after five executions PostgreSQL
//! switches a prepared statement to a generic plan, which cannot see how many ids
//! `= ANY($1)` holds, estimates one row and joins a deletion's CTEs by nested loops
//! (quadratic in the batch: 71 ms instead of 36 ms for 350 profiles in the benchmark). And
//! `plan_cache_mode = force_custom_plan` is no cure: it applies to the foreign-key cascade
//! triggers' cached queries too, which then are planned once per deleted row (2.5 times
//! slower account deletions, measured).

use std::collections::BTreeSet;
use std::time::Instant;

use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, Row, Transaction};

use super::statements::{EXISTING_USERS, LOCK_USERS, WAIT_FOR_USER};

/// The users of an attempt, split by whether we hold their row.
pub struct UserLocks {
    /// Users whose row another transaction holds: their work waits for the sweep.
    pub busy: BTreeSet<i64>,
}

impl UserLocks {
    /// Whether work for `user` (None: a row without a user) can proceed.
    pub fn ready(&self, user: Option<i64>) -> bool {
        user.is_none_or(|user| !self.busy.contains(&user))
    }
}

/// Locks the `users` rows of `user_ids`.
pub fn lock_users(
    transaction: &mut Transaction,
    user_ids: &BTreeSet<i64>,
) -> Result<UserLocks, postgres::Error> {
    let wanted: Vec<i64> = user_ids.iter().copied().collect();
    let locked: BTreeSet<i64> = ids(by_ids(transaction, LOCK_USERS, &wanted)?);
    Ok(UserLocks {
        busy: users_held_by_others(transaction, &wanted, &locked)?,
    })
}

/// Of the users `wanted`, those not in `locked` that exist: another transaction holds them.
/// One more statement, but only when a lock was refused.
pub fn users_held_by_others(
    transaction: &mut Transaction,
    wanted: &[i64],
    locked: &BTreeSet<i64>,
) -> Result<BTreeSet<i64>, postgres::Error> {
    Ok(busy_among(transaction, wanted, locked, EXISTING_USERS)?
        .into_iter()
        .collect())
}

/// Of `wanted`, the ids that were not locked but are still due according to `still_due_sql`
/// (a statement taking the ids as `$1` and returning the still-due ones).
pub fn busy_among(
    transaction: &mut Transaction,
    wanted: &[i64],
    locked: &BTreeSet<i64>,
    still_due_sql: &str,
) -> Result<Vec<i64>, postgres::Error> {
    let unlocked: Vec<i64> = wanted
        .iter()
        .copied()
        .filter(|id| !locked.contains(id))
        .collect();
    if unlocked.is_empty() {
        return Ok(Vec::new());
    }
    sorted_ids(transaction, still_due_sql, &unlocked)
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
pub fn by_ids(
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
pub fn by_ids_and(
    client: &mut impl GenericClient,
    sql: &str,
    ids: &[i64],
    second: &(dyn ToSql + Sync),
    second_type: Type,
) -> Result<Vec<Row>, postgres::Error> {
    client.query_typed(sql, &[(&ids, Type::INT8_ARRAY), (second, second_type)])
}

/// The first column of `rows` as ids.
pub fn ids(rows: Vec<postgres::Row>) -> BTreeSet<i64> {
    rows.iter().map(|row| row.get::<_, i64>(0)).collect()
}
