//! Finding and deleting what is due: role profiles first ([1/2]), then whole accounts ([2/2]).
//!
//! The submodules: `statements` builds the SQL from the detected schema, `cursor` reads the
//! ids due, `drain` runs the batches for any kind of work, `locks` takes the row locks of one
//! attempt, `roles` and `accounts` are the two kinds of work, and `preview` is the dry run.

mod accounts;
mod cursor;
mod drain;
mod locks;
mod preview;
mod roles;
pub mod statements;

use std::time::Duration;

use anyhow::Context;
use postgres::Client;

use crate::report::Report;
use crate::schema::Schema;
use accounts::AccountWork;
use drain::drain;
use roles::{ProfileWork, RoleRequestWork};

/// What the run may do.
pub struct Options {
    pub dry_run: bool,
    pub audit: bool,
    /// 0 means no limit.
    pub max_accounts: u64,
    /// SQL boolean expression over `users`: due accounts matching it are held.
    pub hold: Option<String>,
    /// How long each phase may wait, in all, for rows other transactions hold.
    pub lock_timeout: Duration,
}

/// How the purge ended, when it did not break off.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both phases ran.
    Completed,
    /// More accounts were due than `--max-accounts`; none was deleted.
    Capped,
}

/// Runs both phases, writing the report as it goes.
pub fn run(
    client: &mut Client,
    schema: &Schema,
    options: &Options,
    report: &mut Report,
) -> anyhow::Result<Outcome> {
    report.banner("CRON JOB: Delete Expired Roles and Accounts");
    for missing in &schema.missing_profiles {
        report.warning(&format!(
            "table {} for role {} does not exist; skipped",
            missing.table, missing.role
        ));
    }
    if options.dry_run {
        let mut transaction = crate::db::read_only(client)?;
        let outcome = phases(&mut transaction, schema, options, report, &mut DryRun);
        transaction.rollback().context("cannot end the dry run")?;
        outcome
    } else {
        phases(client, schema, options, report, &mut Live)
    }
}

/// What differs between a real run and a dry run.
trait Mode<C> {
    fn roles(
        &mut self,
        client: &mut C,
        schema: &Schema,
        options: &Options,
        report: &mut Report,
    ) -> anyhow::Result<()>;
    fn accounts(
        &mut self,
        client: &mut C,
        schema: &Schema,
        options: &Options,
        report: &mut Report,
    ) -> anyhow::Result<()>;
}

fn phases<C: postgres::GenericClient, M: Mode<C>>(
    client: &mut C,
    schema: &Schema,
    options: &Options,
    report: &mut Report,
    mode: &mut M,
) -> anyhow::Result<Outcome> {
    report.line("[1/2] Checking for expired role deletions...");
    let before = report.roles;
    mode.roles(client, schema, options, report)?;
    let roles = report.roles - before;
    summary(report, options, roles, "role");
    report.blank();
    report.line("[2/2] Checking for expired account deletions...");
    let outcome = match over_cap(client, schema, options)? {
        Some(due) => {
            refuse_over_cap(report, due, options.max_accounts);
            Outcome::Capped
        }
        None => {
            let before = report.accounts;
            mode.accounts(client, schema, options, report)?;
            let accounts = report.accounts - before;
            summary(report, options, accounts, "account");
            Outcome::Completed
        }
    };
    report_held(client, schema, options, report)?;
    Ok(outcome)
}

/// How many accounts are due, when that is more than `--max-accounts`. Without a cap
/// (`--max-accounts 0`) nothing is counted: the count scans `users` and the requests.
fn over_cap(
    client: &mut impl postgres::GenericClient,
    schema: &Schema,
    options: &Options,
) -> anyhow::Result<Option<i64>> {
    if options.max_accounts == 0 {
        return Ok(None);
    }
    let due: i64 = client
        .query_typed_one(
            &statements::count_due_accounts(schema, options.hold.as_deref()),
            &[],
        )
        .context("cannot count the accounts due")?
        .get(0);
    Ok((due as u64 > options.max_accounts).then_some(due))
}

/// Reports the due accounts the hold rule keeps for manual review.
fn report_held(
    client: &mut impl postgres::GenericClient,
    schema: &Schema,
    options: &Options,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Some(hold) = &options.hold else {
        return Ok(());
    };
    let rows = client
        .query_typed(&statements::held_accounts(schema, hold), &[])
        .context("cannot list the accounts held by --hold-where")?;
    for row in &rows {
        let email: Option<String> = row.get(1);
        report.held(row.get(0), email.as_deref());
    }
    if !rows.is_empty() {
        report.line(&format!(
            "[SUMMARY] {} due accounts held for manual review",
            rows.len()
        ));
    }
    Ok(())
}

/// `approve`: deletes the listed accounts that are due, held or not, audited as not
/// automated; a listed user that does not exist or is not due is reported as failed.
pub fn approve(
    client: &mut Client,
    schema: &Schema,
    options: &Options,
    users: &[i64],
    report: &mut Report,
) -> anyhow::Result<()> {
    report.banner("MANUAL APPROVAL: Delete Held Accounts");
    let existing: Vec<i64> = client
        .query(statements::EXISTING_USERS, &[&users])
        .context("cannot read users")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for missing in users.iter().filter(|id| !existing.contains(id)) {
        report.failed(&format!("account of user {missing}"), "no such user");
    }
    let work = AccountWork::approved(schema, options.audit, &existing);
    drain(client, &work, report, options.lock_timeout)?;
    let remaining: Vec<i64> = client
        .query(statements::EXISTING_USERS, &[&existing])
        .context("cannot read users")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for user in remaining {
        report.failed(
            &format!("account of user {user}"),
            "not due for deletion (never scheduled, or restored); not deleted",
        );
    }
    summary(report, options, report.accounts, "account");
    Ok(())
}

fn summary(report: &mut Report, options: &Options, count: u64, noun: &str) {
    let plural = if count == 1 { "" } else { "s" };
    let text = match (count, options.dry_run) {
        (0, _) => format!("[SUMMARY] No expired {noun}s found"),
        (_, true) => format!("[SUMMARY] {count} expired {noun}{plural} would be deleted"),
        (_, false) => format!("[SUMMARY] Deleted {count} expired {noun}{plural}"),
    };
    report.line(&text);
}

fn refuse_over_cap(report: &mut Report, due: i64, limit: u64) {
    let text = format!(
        "{due} accounts are due, more than --max-accounts {limit}: no account was deleted. \
         Review them with --dry-run, then rerun with --max-accounts {due} (or 0 for no limit)"
    );
    report.line(&format!("[ERROR] {text}"));
    log::error!(max_accounts = limit, accounts_due = due; "{text}");
}

struct Live;

impl Mode<Client> for Live {
    fn roles(
        &mut self,
        client: &mut Client,
        schema: &Schema,
        options: &Options,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        for profile in schema.profiles.iter().filter(|p| p.schedule_type.is_some()) {
            let work = ProfileWork::new(schema, profile, options.audit);
            drain(client, &work, report, options.lock_timeout)?;
        }
        if schema
            .requests
            .as_ref()
            .is_some_and(|requests| requests.per_role)
        {
            let work = RoleRequestWork::new(schema, options.audit);
            work.report_unknown_roles(client, report)?;
            drain(client, &work, report, options.lock_timeout)?;
        }
        Ok(())
    }

    fn accounts(
        &mut self,
        client: &mut Client,
        schema: &Schema,
        options: &Options,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let work = AccountWork::automatic(schema, options.audit, options.hold.as_deref());
        drain(client, &work, report, options.lock_timeout)
    }
}

struct DryRun;

impl Mode<postgres::Transaction<'_>> for DryRun {
    fn roles(
        &mut self,
        transaction: &mut postgres::Transaction<'_>,
        schema: &Schema,
        _options: &Options,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        for profile in &schema.profiles {
            preview::profiles(transaction, schema, profile, report)
                .with_context(|| format!("cannot read what is due in {}", profile.table))?;
        }
        Ok(())
    }

    fn accounts(
        &mut self,
        transaction: &mut postgres::Transaction<'_>,
        schema: &Schema,
        options: &Options,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        preview::accounts(transaction, schema, options.hold.as_deref(), report)
            .context("cannot read what is due in users")
    }
}
