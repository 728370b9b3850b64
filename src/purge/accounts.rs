//! Account deletions: a user due by its own row (`account_status = 'pending_deletion'`) or
//! by a pending request that deletes the whole account.
//!
//! Whether a user is due can depend on a row of `account_deletion_requests`. Under READ
//! COMMITTED a DELETE that waited for the user's row re-checks only that row; an `EXISTS` on
//! the requests would still read the old snapshot, and a user who cancelled while we waited
//! would be deleted anyway. So an attempt first locks the users and *all* their pending
//! requests, in one statement (skipping any another transaction holds, and deferring that
//! user). Only then, in a statement of its own whose fresh snapshot sees what was committed
//! to those rows before we locked them, does it delete with the full condition, judging
//! requests by the rows it holds. `ON DELETE CASCADE` removes the rest of the user's data;
//! requests that survive the cascade are marked completed in the same statement, next to the
//! audit rows.

use std::collections::BTreeSet;
use std::time::Instant;

use postgres::Client;
use postgres::types::Type;

use super::cursor::DueIds;
use super::drain::Work;
use super::locks::{
    by_ids, by_ids_and, lock_users, sorted_ids, users_held_by_others, wait_for_rows, wait_for_user,
};
use super::statements::{self as sql, Selection};
use crate::report::{Deletion, Report};
use crate::schema::Schema;

/// Accounts that are due: all but the held ones, or (for `approve`) the listed ones.
pub struct AccountWork<'a> {
    schema: &'a Schema,
    /// For `approve`: the users to consider.
    approved: Option<Vec<i64>>,
    due: String,
    still_due: String,
    delete: String,
}

impl<'a> AccountWork<'a> {
    /// The daily run's accounts, leaving those the hold rule matches.
    pub fn automatic(schema: &'a Schema, audit: bool, hold: Option<&str>) -> AccountWork<'a> {
        AccountWork::new(schema, audit, Selection::Automatic { hold }, None)
    }

    /// The accounts of `users` that are due, held or not, audited as not automated.
    pub fn approved(schema: &'a Schema, audit: bool, users: &[i64]) -> AccountWork<'a> {
        AccountWork::new(schema, audit, Selection::Approved, Some(users.to_vec()))
    }

    fn new(
        schema: &'a Schema,
        audit: bool,
        selection: Selection,
        approved: Option<Vec<i64>>,
    ) -> AccountWork<'a> {
        AccountWork {
            schema,
            approved,
            due: sql::due_accounts(schema, selection),
            still_due: sql::still_due_accounts(schema),
            delete: sql::delete_accounts(schema, audit, selection),
        }
    }

    /// Locks the users `wanted` and their pending requests (skipping rows another
    /// transaction holds).
    fn lock(
        &self,
        transaction: &mut postgres::Transaction,
        wanted: &[i64],
    ) -> Result<AccountLocks, postgres::Error> {
        if self.schema.requests.is_none() {
            let user_locks = lock_users(transaction, &wanted.iter().copied().collect())?;
            return Ok(AccountLocks::new(wanted, user_locks.busy, Vec::new()));
        }
        let mut locked_users = BTreeSet::new();
        let mut requests = Vec::new();
        let mut busy = BTreeSet::new();
        for row in by_ids(transaction, sql::LOCK_ACCOUNTS, wanted)? {
            let user: i64 = row.get(0);
            match (row.get::<_, Option<i64>>(1), row.get::<_, bool>(2)) {
                (None, _) => {
                    locked_users.insert(user);
                }
                (Some(request), true) => requests.push(request),
                (Some(_), false) => {
                    busy.insert(user);
                }
            }
        }
        busy.extend(users_held_by_others(transaction, wanted, &locked_users)?);
        Ok(AccountLocks::new(wanted, busy, requests))
    }
}

/// What an attempt at some accounts holds.
struct AccountLocks {
    /// The users to delete if still due: locked, with every pending request locked.
    ready: Vec<i64>,
    /// Users whose row, or one of whose pending requests, another transaction holds.
    busy: Vec<i64>,
    /// The pending requests locked: the only ones the deletion may judge a user by.
    requests: Vec<i64>,
}

impl AccountLocks {
    /// Every user of `wanted` not `busy` is ready (one that does not exist has nothing to
    /// protect: its DELETE finds nothing).
    fn new(wanted: &[i64], busy: BTreeSet<i64>, requests: Vec<i64>) -> AccountLocks {
        AccountLocks {
            ready: wanted
                .iter()
                .copied()
                .filter(|id| !busy.contains(id))
                .collect(),
            busy: busy.into_iter().collect(),
            requests,
        }
    }
}

impl Work for AccountWork<'_> {
    fn name(&self) -> String {
        "users".to_owned()
    }

    fn describe(&self, id: i64) -> String {
        format!("account of user {id}")
    }

    fn declare_due(&self, client: &mut Client) -> Result<DueIds, postgres::Error> {
        match &self.approved {
            Some(users) => DueIds::declare(client, &self.due, &[(users, Type::INT8_ARRAY)]),
            None => DueIds::declare(client, &self.due, &[]),
        }
    }

    fn attempt(
        &self,
        client: &mut Client,
        wanted: &[i64],
        report: &mut Report,
    ) -> Result<Vec<i64>, postgres::Error> {
        let mut transaction = client.transaction()?;
        let locks = self.lock(&mut transaction, wanted)?;
        let deleted = match (locks.ready.is_empty(), self.schema.requests.is_some()) {
            (true, _) => Vec::new(),
            (false, true) => by_ids_and(
                &mut transaction,
                &self.delete,
                &locks.ready,
                &locks.requests,
                Type::INT8_ARRAY,
            )?,
            (false, false) => by_ids(&mut transaction, &self.delete, &locks.ready)?,
        };
        transaction.commit()?;
        for row in &deleted {
            report_account(report, row);
        }
        Ok(locks.busy)
    }

    fn still_due(&self, client: &mut Client, wanted: &[i64]) -> Result<Vec<i64>, postgres::Error> {
        sorted_ids(client, &self.still_due, wanted)
    }

    fn wait_until_free(
        &self,
        client: &mut Client,
        id: i64,
        deadline: Option<Instant>,
    ) -> Result<bool, postgres::Error> {
        if !wait_for_user(client, Some(id), deadline)? {
            return Ok(false);
        }
        if self.schema.requests.is_none() {
            return Ok(true);
        }
        wait_for_rows(
            client,
            "SELECT 1 FROM account_deletion_requests WHERE user_id = $1::bigint \
             AND status = 'pending' FOR UPDATE",
            &[&id],
            deadline,
        )
    }
}

/// Reports a row of (user id, email) as an account deletion.
pub(super) fn report_account(report: &mut Report, row: &postgres::Row) {
    let email: Option<String> = row.get(1);
    report.deleted(&Deletion::Account {
        user_id: row.get(0),
        email: email.as_deref(),
    });
}
