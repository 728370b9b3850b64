//! The dry run: what would be deleted, and what foreign keys would block, read in a READ
//! ONLY transaction so that nothing can change, streamed row by row so that memory does not
//! grow with the backlog. Under a deletion plan each unit is judged as the run judges it (see
//! `plan::render`), on the database as it is now.

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Transaction};

use super::attempt::Units;
use super::planned::{Outcome, Unit, read_outcome};
use super::record::Recorder;
use super::statements as sql;
use crate::plan::{Plan, render};
use crate::report::Deletion;
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
                let unit = Unit::of_deleted_row(self.units.shape(), row);
                let deletion = self
                    .units
                    .unit(unit.id, unit.user_id, unit.email.as_deref());
                recorder.deleted(&deletion, &[]);
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

/// Reports the profiles of `profile`'s table that are due by themselves.
pub fn profiles(
    transaction: &mut Transaction,
    schema: &Schema,
    profile: &ProfileTable,
    recorder: &mut Recorder,
) -> Result<(), postgres::Error> {
    Preview {
        plan: &profile.plan,
        units: Units::Role(&profile.role),
        plain: sql::preview_profiles(schema, profile),
        ids: format!("SELECT id FROM ({}) due", sql::due_profiles(profile)),
        unit_info: sql::profile_unit_info(schema, profile),
    }
    .run(transaction, &[], recorder)
}

/// Reports the profiles of `profile`'s table that role-only requests name.
pub fn requested_profiles(
    transaction: &mut Transaction,
    schema: &Schema,
    profile: &ProfileTable,
    recorder: &mut Recorder,
) -> Result<(), postgres::Error> {
    let role = profile.role.as_str();
    Preview {
        plan: &profile.plan,
        units: Units::Role(role),
        plain: sql::preview_requested_profiles(schema, profile),
        ids: sql::requested_profile_ids(profile),
        unit_info: sql::profile_unit_info(schema, profile),
    }
    .run(transaction, &[&role], recorder)
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

/// Reports the advertiser role deletions a run would make: those an earlier run began whose
/// profile is gone (the run completes them), then the profiles due in the advertiser
/// database, judged by its deletion plan. The emails come from the user database, a chunk
/// of profiles at a time.
pub fn advertiser(
    users: &mut Transaction,
    advertisers: &mut Client,
    schema: &Schema,
    profile: &ProfileTable,
    recorder: &mut Recorder,
) -> Result<(), postgres::Error> {
    let emails = sql::advertiser::emails(schema);
    let mut transaction = advertisers.build_transaction().read_only(true).start()?;
    if schema.intents_exist {
        let announced: Vec<(i64, Option<i64>)> = users
            .query(sql::advertiser::ANNOUNCED_WITH_USERS, &[])?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let ids: Vec<i64> = announced.iter().map(|(id, _)| *id).collect();
        let existing: Vec<i64> = transaction
            .query(&sql::advertiser::existing(profile), &[&ids])?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let gone: Vec<Outcome> = announced
            .into_iter()
            .filter(|(id, _)| !existing.contains(id))
            .map(|(id, user_id)| Outcome {
                id,
                user_id,
                email: None,
                blockers: Vec::new(),
                dependents: Vec::new(),
            })
            .collect();
        report_advertisers(users, &emails, gone, recorder)?;
    }
    let query = if profile.plan.is_plain() {
        format!(
            "SELECT 'unit', p.id::bigint, p.user_id::bigint, NULL::text, NULL::int[], \
             NULL::bigint[], NULL::int[], NULL::bigint[] FROM {} p WHERE {} ORDER BY p.id",
            profile.table.quoted(),
            crate::due::profile(profile, crate::due::When::Now)
        )
    } else {
        render::preview(
            &profile.plan,
            &format!("SELECT id FROM ({}) due", sql::due_profiles(profile)),
            &sql::advertiser::unit_info(profile),
        )
    };
    let mut rows = transaction.query_raw(&query, std::iter::empty::<&(dyn ToSql + Sync)>())?;
    let mut chunk = Vec::new();
    while let Some(row) = rows.next()? {
        chunk.push(read_outcome(&profile.plan, &row));
        if chunk.len() == CHUNK {
            report_advertisers(users, &emails, std::mem::take(&mut chunk), recorder)?;
        }
    }
    drop(rows);
    report_advertisers(users, &emails, chunk, recorder)?;
    transaction.rollback()
}

/// Profiles of the advertiser database reported per query of the user database.
const CHUNK: usize = 1000;

/// Reports advertiser profiles, with their users' emails from the user database.
fn report_advertisers(
    users: &mut Transaction,
    emails: &str,
    outcomes: Vec<Outcome>,
    recorder: &mut Recorder,
) -> Result<(), postgres::Error> {
    let user_ids: Vec<i64> = outcomes.iter().filter_map(|o| o.user_id).collect();
    let known: std::collections::BTreeMap<i64, Option<String>> = users
        .query(emails, &[&user_ids])?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for outcome in outcomes {
        let email = outcome
            .user_id
            .and_then(|id| known.get(&id).cloned().flatten());
        let deletion = Deletion::Role {
            role: crate::schema::ADVERTISER,
            profile_id: outcome.id,
            user_id: outcome.user_id,
            email: email.as_deref(),
            user_missing: outcome.user_id.is_some_and(|id| !known.contains_key(&id)),
        };
        if outcome.blockers.is_empty() {
            recorder.deleted(&deletion, &outcome.dependents);
        } else {
            recorder.blocked(&deletion, &outcome.blockers);
        }
    }
    Ok(())
}
