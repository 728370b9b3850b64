//! Account deletions: a user due by its own row (`account_status = 'pending_deletion'`) or
//! by a pending request that deletes the whole account.
//!
//! Whether a user is due can depend on a row of `account_deletion_requests`. Under READ
//! COMMITTED a DELETE re-checks only its own target row against the newest version; an
//! `EXISTS` on the requests would read the statement's snapshot, and a user who cancelled a
//! moment ago would be deleted anyway. So one attempt, one statement (see `statements`),
//! first locks the users and *all* their pending requests, skipping any another transaction
//! holds and deferring that user; the locks return each request's newest version. Only then
//! does its DELETE judge the users, by their own row and by the request rows it holds, never
//! by the table. `ON DELETE CASCADE` removes the rest of the user's data; requests that
//! survive the cascade are marked completed in the same statement, next to the audit rows.

use std::time::Instant;

use postgres::Client;
use postgres::types::Type;

use super::attempt::{self, Attempting, Units};
use super::cursor::DueIds;
use super::drain::Work;
use super::locks::{sorted_ids, wait_for_rows, wait_for_user};
use super::record::Recorder;
use super::statements::{self as sql, OwnRequests, Selection};
use crate::plan::{Plan, Treatment};
use crate::schema::Schema;

/// Accounts that are due: all but the held ones, or (for `approve`) the listed ones.
pub struct AccountWork<'a> {
    schema: &'a Schema,
    /// For `approve`: the users to consider.
    approved: Option<Vec<i64>>,
    due: String,
    still_due: String,
    attempt: Attempting<'a>,
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
            attempt: Attempting::new(
                &schema.accounts_plan,
                &sql::attempt_accounts(
                    schema,
                    audit,
                    selection,
                    own_requests(&schema.accounts_plan),
                ),
                false,
            ),
        }
    }
}

/// What the account's own statement does with the user's requests, as the plan says.
fn own_requests(plan: &Plan) -> OwnRequests {
    match plan.requests_edge.map(|e| plan.edges[e].treatment) {
        Some(Treatment::Delete) => OwnRequests::Deleted,
        Some(Treatment::Nullify) => OwnRequests::Nullified,
        _ => OwnRequests::Completed,
    }
}

impl Work for AccountWork<'_> {
    fn name(&self) -> String {
        "users".to_owned()
    }

    fn describe(&self, id: i64) -> String {
        format!("account of user {id}")
    }

    fn first_batch(&self) -> usize {
        self.attempt.first_batch()
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
        recorder: &mut Recorder,
    ) -> Result<Vec<i64>, postgres::Error> {
        let attempted = self.attempt.run(client, wanted, None, recorder)?;
        Ok(attempt::report(recorder, Units::Account, attempted))
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
        wait_for_rows(client, sql::WAIT_FOR_PENDING_REQUESTS, &[&id], deadline)
    }
}
