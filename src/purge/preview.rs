//! The dry run: what would be deleted, and what foreign keys would block, read in a READ
//! ONLY transaction so that nothing can change, streamed row by row so that memory does not
//! grow with the backlog. Under a deletion plan each unit is judged as the run judges it (see
//! `plan::render`), on the database as it is now.

use postgres::Transaction;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use super::attempt::Units;
use super::planned::read_outcome;
use super::record::Recorder;
use super::statements as sql;
use crate::plan::{Plan, render};
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

/// What to preview: the units, how to describe them, and the plan they fall under.
struct Preview<'a> {
    plan: &'a Plan,
    units: Units<'a>,
    /// Without a plan to carry out: (id, user id, email) or (user id, email), ordered.
    plain: String,
    /// With one: the ids of the units, and (id, user id, email) of CTE `units`.
    ids: String,
    unit_info: String,
}

impl Preview<'_> {
    fn run(
        &self,
        transaction: &mut Transaction,
        params: &[&(dyn ToSql + Sync)],
        recorder: &mut Recorder,
    ) -> Result<(), postgres::Error> {
        if self.plan.is_plain() {
            return stream(transaction, &self.plain, params, |row| {
                recorder.deleted(&self.units.deleted(row), &[]);
            });
        }
        let query = render::preview(self.plan, &self.ids, &self.unit_info);
        stream(transaction, &query, params, |row| {
            let outcome = read_outcome(self.plan, row);
            let unit = self
                .units
                .unit(outcome.id, outcome.user_id, outcome.email.as_deref());
            if outcome.blockers.is_empty() {
                recorder.deleted(&unit, &outcome.dependents);
            } else {
                recorder.blocked(&unit, &outcome.blockers);
            }
        })
    }
}

/// Reports the profiles of `profile`'s table that are due by themselves or by a request.
pub fn profiles(
    transaction: &mut Transaction,
    schema: &Schema,
    profile: &ProfileTable,
    recorder: &mut Recorder,
) -> Result<(), postgres::Error> {
    let role = profile.role.as_str();
    let unit_info = sql::profile_unit_info(schema, profile);
    Preview {
        plan: &profile.plan,
        units: Units::Role(role),
        plain: sql::preview_profiles(schema, profile),
        ids: format!("SELECT id FROM ({}) due", sql::due_profiles(profile)),
        unit_info: unit_info.clone(),
    }
    .run(transaction, &[], recorder)?;
    if schema
        .requests
        .as_ref()
        .is_some_and(|requests| requests.per_role)
    {
        Preview {
            plan: &profile.plan,
            units: Units::Role(role),
            plain: sql::preview_requested_profiles(schema, profile),
            ids: sql::requested_profile_ids(profile),
            unit_info,
        }
        .run(transaction, &[&role], recorder)?;
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
    Preview {
        plan: &schema.accounts_plan,
        units: Units::Account,
        plain: sql::preview_accounts(schema, hold),
        ids: sql::due_account_ids(schema, hold),
        unit_info: sql::account_unit_info(schema),
    }
    .run(transaction, &[], recorder)
}
