//! The dry run: what would be deleted, read in a READ ONLY transaction so that nothing can
//! change, streamed row by row so that memory does not grow with the backlog.

use postgres::Transaction;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use super::accounts::report_account;
use super::record::Recorder;
use super::roles::report_role;
use super::statements as sql;
use crate::schema::{ProfileTable, Schema};

/// Streams the rows of `query` into `each`.
fn stream(
    transaction: &mut Transaction,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    mut each: impl FnMut(&postgres::Row),
) -> Result<(), postgres::Error> {
    let mut rows = transaction.query_raw(query, params.iter().copied())?;
    while let Some(row) = rows.next()? {
        each(&row);
    }
    Ok(())
}

/// Reports the profiles of `profile`'s table that are due by themselves or by a request.
pub fn profiles(
    transaction: &mut Transaction,
    schema: &Schema,
    profile: &ProfileTable,
    recorder: &mut Recorder,
) -> Result<(), postgres::Error> {
    let role = profile.role.as_str();
    stream(
        transaction,
        &sql::preview_profiles(schema, profile),
        &[],
        |row| report_role(recorder, role, row),
    )?;
    if schema
        .requests
        .as_ref()
        .is_some_and(|requests| requests.per_role)
    {
        stream(
            transaction,
            &sql::preview_requested_profiles(schema, profile),
            &[&role],
            |row| report_role(recorder, role, row),
        )?;
    }
    Ok(())
}

/// Reports the accounts that are due and not held.
pub fn accounts(
    transaction: &mut Transaction,
    schema: &Schema,
    hold: Option<&str>,
    recorder: &mut Recorder,
) -> Result<(), postgres::Error> {
    stream(
        transaction,
        &sql::preview_accounts(schema, hold),
        &[],
        |row| report_account(recorder, row),
    )
}
