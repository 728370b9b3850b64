//! Finding and deleting what is due: role profiles first ([1/2]), then whole accounts ([2/2]).
//!
//! The submodules: `statements` builds the SQL from the detected schema, `cursor` reads the
//! ids due, `drain` runs the batches for any kind of work, `locks` takes the row locks of one
//! attempt, `roles` and `accounts` are the two kinds of work, and `preview` is the dry run.

mod accounts;
pub mod advertiser;
mod attempt;
mod cursor;
mod drain;
mod locks;
mod planned;
mod preview;
mod record;
mod roles;
pub mod statements;

use std::time::{Duration, Instant};

use anyhow::Context;
use postgres::Client;

use crate::plan::Plan;
use crate::report::{Database, Report};
use crate::schema::{ProfileTable, Schema};
use crate::summary::{Ending, Summary};
use accounts::AccountWork;
use advertiser::{Advertiser, AdvertiserWork};
use drain::{describe_fatal, drain};
use record::Recorder;
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

/// Runs both phases, writing the report as it goes; returns what the run did, also when it
/// broke off.
pub fn run(
    client: &mut Client,
    schema: &Schema,
    options: &Options,
    advertiser: Option<&mut Advertiser>,
    report: &mut Report,
) -> Summary {
    let started = Instant::now();
    let mut recorder = Recorder::new(report, options.dry_run);
    let ending = run_phases(client, schema, options, advertiser, &mut recorder)
        .unwrap_or_else(|error| Ending::BrokeOff(format!("{error:#}")));
    finish(recorder, ending, started)
}

fn finish(recorder: Recorder, ending: Ending, started: Instant) -> Summary {
    let mut summary = recorder.summary;
    summary.ending = ending;
    summary.duration = started.elapsed();
    summary
}

fn run_phases(
    client: &mut Client,
    schema: &Schema,
    options: &Options,
    advertiser: Option<&mut Advertiser>,
    recorder: &mut Recorder,
) -> anyhow::Result<Ending> {
    recorder
        .report
        .banner("CRON JOB: Delete Expired Roles and Accounts");
    for missing in &schema.missing_profiles {
        recorder.report.warning(&format!(
            "table {} for role {} does not exist; skipped",
            missing.table, missing.role
        ));
    }
    if options.dry_run {
        let mut transaction = crate::db::read_only(client)?;
        let ending = phases(
            &mut transaction,
            schema,
            options,
            recorder,
            &mut DryRun { advertiser },
        );
        transaction.rollback().context("cannot end the dry run")?;
        ending
    } else {
        let mut live = Live {
            unindexed: Unindexed::default(),
            advertiser,
        };
        phases(client, schema, options, recorder, &mut live)
    }
}

/// What differs between a real run and a dry run.
trait Mode<C> {
    fn roles(
        &mut self,
        client: &mut C,
        schema: &Schema,
        options: &Options,
        recorder: &mut Recorder,
    ) -> anyhow::Result<()>;
    fn accounts(
        &mut self,
        client: &mut C,
        schema: &Schema,
        options: &Options,
        recorder: &mut Recorder,
    ) -> anyhow::Result<()>;
    /// After both phases.
    fn finish(&mut self, _recorder: &mut Recorder) {}
}

fn phases<C: postgres::GenericClient, M: Mode<C>>(
    client: &mut C,
    schema: &Schema,
    options: &Options,
    recorder: &mut Recorder,
    mode: &mut M,
) -> anyhow::Result<Ending> {
    recorder
        .report
        .line("[1/2] Checking for expired role deletions...");
    mode.roles(client, schema, options, recorder)?;
    let roles = recorder.summary.counts.roles;
    summary(recorder, options, roles, "role");
    recorder.report.blank();
    recorder
        .report
        .line("[2/2] Checking for expired account deletions...");
    let ending = match over_cap(client, schema, options)? {
        Some(due) => {
            refuse_over_cap(recorder, due, options.max_accounts);
            Ending::Capped
        }
        None => {
            mode.accounts(client, schema, options, recorder)?;
            let accounts = recorder.summary.counts.accounts;
            summary(recorder, options, accounts, "account");
            Ending::Completed
        }
    };
    report_held(client, schema, options, recorder)?;
    mode.finish(recorder);
    Ok(ending)
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
    recorder: &mut Recorder,
) -> anyhow::Result<()> {
    let Some(hold) = &options.hold else {
        return Ok(());
    };
    let rows = client
        .query_typed(&statements::held_accounts(schema, hold), &[])
        .context("cannot list the accounts held by --hold-where")?;
    for row in &rows {
        let email: Option<String> = row.get(1);
        recorder.held(row.get(0), email.as_deref());
    }
    if !rows.is_empty() {
        recorder.report.line(&format!(
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
) -> Summary {
    let started = Instant::now();
    let mut recorder = Recorder::new(report, options.dry_run);
    let ending = approve_listed(client, schema, options, users, &mut recorder)
        .map(|()| Ending::Completed)
        .unwrap_or_else(|error| Ending::BrokeOff(format!("{error:#}")));
    finish(recorder, ending, started)
}

fn approve_listed(
    client: &mut Client,
    schema: &Schema,
    options: &Options,
    users: &[i64],
    recorder: &mut Recorder,
) -> anyhow::Result<()> {
    recorder
        .report
        .banner("MANUAL APPROVAL: Delete Held Accounts");
    let existing: Vec<i64> = client
        .query(statements::EXISTING_USERS, &[&users])
        .context("cannot read users")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for missing in users.iter().filter(|id| !existing.contains(id)) {
        recorder.failed(&format!("account of user {missing}"), "no such user");
    }
    let work = AccountWork::approved(schema, options.audit, &existing);
    drain(client, &work, recorder, options.lock_timeout)?;
    let remaining: Vec<i64> = client
        .query(statements::EXISTING_USERS, &[&existing])
        .context("cannot read users")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for user in remaining {
        recorder.failed(
            &format!("account of user {user}"),
            "not due for deletion (never scheduled, or restored); not deleted",
        );
    }
    let accounts = recorder.summary.counts.accounts;
    summary(recorder, options, accounts, "account");
    Ok(())
}

fn summary(recorder: &mut Recorder, options: &Options, count: u64, noun: &str) {
    let plural = if count == 1 { "" } else { "s" };
    let text = match (count, options.dry_run) {
        (0, _) => format!("[SUMMARY] No expired {noun}s found"),
        (_, true) => format!("[SUMMARY] {count} expired {noun}{plural} would be deleted"),
        (_, false) => format!("[SUMMARY] Deleted {count} expired {noun}{plural}"),
    };
    recorder.report.line(&text);
}

fn refuse_over_cap(recorder: &mut Recorder, due: i64, limit: u64) {
    let text = format!(
        "{due} accounts are due, more than --max-accounts {limit}: no account was deleted. \
         Review them with --dry-run, then rerun with --max-accounts {due} (or 0 for no limit)"
    );
    recorder.report.line(&format!("[ERROR] {text}"));
    log::error!(max_accounts = limit, accounts_due = due; "{text}");
}

/// A real run; it notes how long it spent deleting under plans with unindexed keys.
struct Live<'a> {
    unindexed: Unindexed,
    advertiser: Option<&'a mut Advertiser>,
}

impl Live<'_> {
    fn drain(
        &mut self,
        client: &mut Client,
        work: &dyn drain::Work,
        plans: &[&Plan],
        recorder: &mut Recorder,
        options: &Options,
    ) -> anyhow::Result<()> {
        drain_noting(&mut self.unindexed, client, work, plans, recorder, options)
    }
}

/// Drains `work`, noting the time spent under `plans` if it deleted something.
fn drain_noting(
    unindexed: &mut Unindexed,
    client: &mut Client,
    work: &dyn drain::Work,
    plans: &[&Plan],
    recorder: &mut Recorder,
    options: &Options,
) -> anyhow::Result<()> {
    let (started, before) = (Instant::now(), recorder.summary.deleted());
    drain(client, work, recorder, options.lock_timeout)?;
    if recorder.summary.deleted() > before {
        for plan in plans {
            unindexed.note(plan, started.elapsed());
        }
    }
    Ok(())
}

/// What the report calls the advertiser database's part of a run when it fails.
const ADVERTISER_PART: &str = "the advertiser roles of the advertiser database";

/// The advertiser role, in the advertiser database: the deletions an earlier run began,
/// then the due profiles.
fn advertiser_roles(
    users: &mut Client,
    advertiser: &mut Advertiser,
    unindexed: &mut Unindexed,
    schema: &Schema,
    options: &Options,
    recorder: &mut Recorder,
) -> anyhow::Result<()> {
    let (client, profile) = match advertiser {
        Advertiser::Ready { client, profile } => (client, profile),
        Advertiser::Unreachable(error) => anyhow::bail!("{error}"),
    };
    let work = AdvertiserWork::new(schema, profile, users, options.audit);
    work.replay(client, recorder)?;
    drain_noting(
        unindexed,
        client,
        &work,
        &[&profile.plan],
        recorder,
        options,
    )
}

impl Mode<Client> for Live<'_> {
    fn roles(
        &mut self,
        client: &mut Client,
        schema: &Schema,
        options: &Options,
        recorder: &mut Recorder,
    ) -> anyhow::Result<()> {
        for profile in schema.profiles.iter().filter(|p| p.schedule_type.is_some()) {
            let work = ProfileWork::new(schema, profile, options.audit);
            self.drain(client, &work, &[&profile.plan], recorder, options)?;
        }
        if schema
            .requests
            .as_ref()
            .is_some_and(|requests| requests.per_role)
        {
            let work = RoleRequestWork::new(schema, options.audit);
            work.report_unknown_roles(client, recorder)?;
            let plans: Vec<&Plan> = schema.profiles.iter().map(|p| &p.plan).collect();
            self.drain(client, &work, &plans, recorder, options)?;
        }
        if let Some(advertiser) = self.advertiser.as_deref_mut() {
            recorder.set_database(Database::Advertiser);
            let result = advertiser_roles(
                client,
                advertiser,
                &mut self.unindexed,
                schema,
                options,
                recorder,
            );
            if let Err(error) = result {
                recorder.failed(ADVERTISER_PART, &format!("{error:#}"));
            }
            recorder.set_database(Database::User);
        }
        Ok(())
    }

    fn accounts(
        &mut self,
        client: &mut Client,
        schema: &Schema,
        options: &Options,
        recorder: &mut Recorder,
    ) -> anyhow::Result<()> {
        let work = AccountWork::automatic(schema, options.audit, options.hold.as_deref());
        self.drain(client, &work, &[&schema.accounts_plan], recorder, options)
    }

    fn finish(&mut self, recorder: &mut Recorder) {
        self.unindexed.warn(recorder);
    }
}

/// A run that spends this long deleting under a plan with unindexed keys is worth a warning;
/// one that is done sooner is not slowed down enough to matter.
const SLOW: Duration = Duration::from_secs(1);

/// The keys without an index on the paths of the plans under which a run deleted something,
/// and the time it spent doing so.
#[derive(Default)]
struct Unindexed {
    spent: Duration,
    /// (referencing table and columns, its estimated rows).
    keys: Vec<(String, i64)>,
}

impl Unindexed {
    fn note(&mut self, plan: &Plan, spent: Duration) {
        let mut any = false;
        for edge in plan.edges.iter().filter(|edge| !edge.key.indexed) {
            any = true;
            let name = edge.key.describe_columns();
            if !self.keys.iter().any(|(known, _)| *known == name) {
                self.keys.push((name, edge.key.child_rows));
            }
        }
        if any {
            self.spent += spent;
        }
    }

    /// Warns, once, when the run was slow and unindexed keys are a reason.
    fn warn(&self, recorder: &mut Recorder) {
        if self.spent < SLOW {
            return;
        }
        let Some((largest, rows)) = self.keys.iter().max_by_key(|(_, rows)| *rows) else {
            return;
        };
        recorder.report.warning(&format!(
            "{} foreign keys on the deletion path have no index (the largest: {largest}, {rows} \
             rows), and deleting took {} s: every deleted row costs a scan of each of their \
             tables; `astegni-delete-expired check` lists them with the CREATE INDEX that fixes \
             each",
            self.keys.len(),
            self.spent.as_secs()
        ));
    }
}

/// A dry run, in a READ ONLY transaction of the user database (and of the advertiser
/// database, if there is one).
struct DryRun<'a> {
    advertiser: Option<&'a mut Advertiser>,
}

impl Mode<postgres::Transaction<'_>> for DryRun<'_> {
    fn roles(
        &mut self,
        transaction: &mut postgres::Transaction<'_>,
        schema: &Schema,
        _options: &Options,
        recorder: &mut Recorder,
    ) -> anyhow::Result<()> {
        // In the run's order: profiles due by themselves, then role-only requests.
        for profile in schema.profiles.iter().filter(|p| p.schedule_type.is_some()) {
            preview::profiles(transaction, schema, profile, recorder)
                .with_context(|| format!("cannot read what is due in {}", profile.table))?;
        }
        if schema.requests.as_ref().is_some_and(|r| r.per_role) {
            // The run attempts role-only requests role by role, in the roles' order.
            let mut by_role: Vec<&ProfileTable> = schema.profiles.iter().collect();
            by_role.sort_by(|a, b| a.role.cmp(&b.role));
            for profile in by_role {
                preview::requested_profiles(transaction, schema, profile, recorder)
                    .with_context(|| format!("cannot read the requests for {}", profile.table))?;
            }
        }
        if let Some(advertiser) = self.advertiser.as_deref_mut() {
            recorder.set_database(Database::Advertiser);
            let result = match advertiser {
                Advertiser::Ready { client, profile } => {
                    preview::advertiser(transaction, client, schema, profile, recorder)
                        .map_err(|error| anyhow::anyhow!(describe_fatal(&error)))
                }
                Advertiser::Unreachable(error) => Err(anyhow::anyhow!("{error}")),
            };
            if let Err(error) = result {
                recorder.failed(ADVERTISER_PART, &format!("{error:#}"));
            }
            recorder.set_database(Database::User);
        }
        Ok(())
    }

    fn accounts(
        &mut self,
        transaction: &mut postgres::Transaction<'_>,
        schema: &Schema,
        options: &Options,
        recorder: &mut Recorder,
    ) -> anyhow::Result<()> {
        preview::accounts(transaction, schema, options.hold.as_deref(), recorder)
            .context("cannot read what is due in users")
    }
}
