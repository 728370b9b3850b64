//! Row locks taken inside an attempt's transaction, all with `SKIP LOCKED`.
//!
//! Each helper returns what it could lock and what another transaction holds. A row that
//! does not exist (any more) is neither: it has nothing to protect.

use std::collections::BTreeSet;

use postgres::Transaction;

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
    let locked: BTreeSet<i64> = ids(transaction.query(LOCK_USERS, &[&wanted])?);
    let unlocked: Vec<i64> = wanted
        .into_iter()
        .filter(|id| !locked.contains(id))
        .collect();
    let busy = if unlocked.is_empty() {
        BTreeSet::new()
    } else {
        ids(transaction.query(EXISTING_USERS, &[&unlocked])?)
    };
    Ok(UserLocks { busy })
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
    Ok(ids(transaction.query(still_due_sql, &[&unlocked])?)
        .into_iter()
        .collect())
}

/// Waits, holding nothing else, until `sql` (`SELECT ... WHERE id = $1 FOR UPDATE`) can lock
/// row `id`; then lets go again. Bounded by the session's `lock_timeout`.
pub fn wait_for_row(
    client: &mut postgres::Client,
    sql: &str,
    id: i64,
) -> Result<(), postgres::Error> {
    let mut transaction = client.transaction()?;
    transaction.query(sql, &[&id])?;
    transaction.rollback()
}

/// Waits until user `id`'s row is free; see [`wait_for_row`].
pub fn wait_for_user(
    client: &mut postgres::Client,
    id: Option<i64>,
) -> Result<(), postgres::Error> {
    match id {
        Some(id) => wait_for_row(client, WAIT_FOR_USER, id),
        None => Ok(()),
    }
}

/// The first column of `rows` as ids.
pub fn ids(rows: Vec<postgres::Row>) -> BTreeSet<i64> {
    rows.iter().map(|row| row.get::<_, i64>(0)).collect()
}
