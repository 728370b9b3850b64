//! The dry run: what would be deleted, read in a READ ONLY transaction so that nothing can
//! change, streamed row by row so that memory does not grow with the backlog.

use postgres::Transaction;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use super::statements as sql;
use crate::report::{Deletion, Report};
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

fn report_role(report: &mut Report, role: &str, row: &postgres::Row) {
    let email: Option<String> = row.get(2);
    report.deleted(&Deletion::Role {
        role,
        profile_id: row.get(0),
        user_id: row.get(1),
        email: email.as_deref(),
    });
}

/// Reports the profiles of `profile`'s table that are due by themselves or by a request.
pub fn profiles(
    transaction: &mut Transaction,
    schema: &Schema,
    profile: &ProfileTable,
    report: &mut Report,
) -> Result<(), postgres::Error> {
    let role = profile.role.as_str();
    stream(
        transaction,
        &sql::preview_profiles(schema, profile),
        &[],
        |row| report_role(report, role, row),
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
            |row| report_role(report, role, row),
        )?;
    }
    Ok(())
}

/// Reports the accounts that are due and not held.
pub fn accounts(
    transaction: &mut Transaction,
    schema: &Schema,
    hold: Option<&str>,
    report: &mut Report,
) -> Result<(), postgres::Error> {
    stream(
        transaction,
        &sql::preview_accounts(schema, hold),
        &[],
        |row| {
            let email: Option<String> = row.get(1);
            report.deleted(&Deletion::Account {
                user_id: row.get(0),
                email: email.as_deref(),
            });
        },
    )
}
