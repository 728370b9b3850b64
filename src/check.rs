//! `astegni-delete-expired check`: what the job sees, without changing anything.
//!
//! Replaces the old `test_connection.py`: it proves the connection works, then prints per
//! table the detected column types, how many rows are due now and how many are scheduled
//! later; then the deletion plans: every foreign key on the deletion path that blocks, how
//! many of today's due deletions it blocks and what would unblock it, the keys the plan
//! carries out itself, and the keys without an index, largest table first. It runs in a READ
//! ONLY transaction. `check --graph` prints the plans in Graphviz DOT instead.

use std::io::Write;

use anyhow::Context;
use postgres::GenericClient;
use postgres::types::ToSql;

use crate::backup::Finding;
use crate::due::{self, When};
use crate::plan::catalog::{ForeignKey, OnDelete};
use crate::plan::{Blocks, Edge, Plan, Treatment, render};
use crate::purge::advertiser::Advertiser;
use crate::purge::statements as sql;
use crate::schema::{ProfileTable, Schema};

/// Prints the check to `out`.
pub fn run(
    client: &mut postgres::Client,
    schema: &Schema,
    advertiser: Option<&mut Advertiser>,
    hold: Option<&str>,
    backup: Option<&Finding>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut transaction = crate::db::read_only(client)?;
    let mut lines = collect(&mut transaction, schema, hold)?;
    let intents = intents(&mut transaction, schema)?;
    transaction.rollback().context("cannot end the check")?;
    let unreachable = match advertiser {
        None => None,
        Some(Advertiser::Unreachable(error)) => {
            lines.push(format!("advertiser database: {error}"));
            Some(error.clone())
        }
        Some(Advertiser::Ready { client, profile }) => {
            let mut transaction = crate::db::read_only(client)?;
            lines.extend(advertiser_lines(&mut transaction, profile)?);
            transaction.rollback().context("cannot end the check")?;
            None
        }
    };
    lines.extend(intents);
    if let Some((table, exists)) = &schema.unused_advertiser {
        lines.push(format!(
            "{} (role advertiser) in the user database: {}, not used: the advertiser role is \
             in the advertiser database",
            table.table,
            if *exists { "present" } else { "absent" }
        ));
    }
    if let Some(finding) = backup {
        lines.push(backup_line(finding));
    }
    for line in lines {
        writeln!(out, "{line}").context("cannot write the check")?;
    }
    match unreachable {
        Some(error) => anyhow::bail!("{error}"),
        None => Ok(()),
    }
}

/// The backup interlock's finding, and what it means for a run.
fn backup_line(finding: &Finding) -> String {
    if finding.recent {
        format!("backup: {}: deletions allowed", finding.text)
    } else {
        format!(
            "backup: {}: a run would delete nothing (exit 4)",
            finding.text
        )
    }
}

/// The advertiser database: the server, its profile table, and its deletion plan.
fn advertiser_lines(
    client: &mut impl GenericClient,
    profile: &ProfileTable,
) -> anyhow::Result<Vec<String>> {
    let mut lines = vec![format!("advertiser database: {}", server_line(client)?)];
    lines.extend(profile_lines(client, profile)?.into_iter().map(|line| {
        line.replacen(
            " (role advertiser)",
            " (role advertiser, advertiser database)",
            1,
        )
    }));
    let units = format!("SELECT id FROM ({}) due", sql::due_profiles(profile));
    let title = format!("role advertiser ({}, advertiser database)", profile.table);
    lines.extend(plan_lines(client, &title, &profile.plan, &units, &[])?);
    Ok(lines)
}

/// The advertiser deletions in progress, when there is an advertiser database.
fn intents(client: &mut impl GenericClient, schema: &Schema) -> anyhow::Result<Vec<String>> {
    if schema.unused_advertiser.is_none() {
        return Ok(Vec::new());
    }
    if !schema.intents_exist {
        return Ok(vec![format!(
            "{}: not found; the first real run creates it",
            crate::schema::INTENTS
        )]);
    }
    let in_progress = count(
        client,
        &format!("SELECT count(*) FROM {}", crate::schema::INTENTS),
    )?;
    Ok(vec![format!(
        "{}: {in_progress} advertiser deletions in progress (an interrupted run's; the next \
         run completes them)",
        crate::schema::INTENTS
    )])
}

/// The server, database, user, time zone and time of a connection.
fn server_line(client: &mut impl GenericClient) -> anyhow::Result<String> {
    let server = client
        .query_one(
            "SELECT current_setting('server_version'), current_database()::text, \
             current_user::text, current_setting('TimeZone'), now()::text",
            &[],
        )
        .context("cannot read the server settings")?;
    Ok(format!(
        "connected: PostgreSQL {}, database {}, user {}, time zone {}, now {}",
        server.get::<_, String>(0),
        server.get::<_, String>(1),
        server.get::<_, String>(2),
        server.get::<_, String>(3),
        server.get::<_, String>(4),
    ))
}

fn collect(
    client: &mut impl GenericClient,
    schema: &Schema,
    hold: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut lines = vec![server_line(client)?];
    lines.extend(users(client, schema, hold)?);
    for profile in &schema.profiles {
        lines.extend(profile_lines(client, profile)?);
    }
    for missing in &schema.missing_profiles {
        lines.push(format!(
            "{} (role {}): not found; skipped",
            missing.table, missing.role
        ));
    }
    lines.extend(requests(client, schema)?);
    lines.push(audit(client, schema)?);
    lines.extend(plans(client, schema, hold)?);
    lines.extend(unindexed(schema));
    Ok(lines)
}

/// Each plan's keys that block or that it carries out.
fn plans(
    client: &mut impl GenericClient,
    schema: &Schema,
    hold: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let accounts = sql::due_account_ids(schema, hold);
    lines.extend(plan_lines(
        client,
        "accounts (users)",
        &schema.accounts_plan,
        &accounts,
        &[],
    )?);
    for profile in &schema.profiles {
        let mut units = format!("SELECT id FROM ({}) due", sql::due_profiles(profile));
        let role = profile.role.as_str();
        let params: Vec<&(dyn ToSql + Sync)> = if schema
            .requests
            .as_ref()
            .is_some_and(|requests| requests.per_role)
        {
            units.push_str(&format!(" UNION {}", sql::requested_profile_ids(profile)));
            vec![&role]
        } else {
            Vec::new()
        };
        let title = format!("role {} ({})", profile.role, profile.table);
        lines.extend(plan_lines(client, &title, &profile.plan, &units, &params)?);
    }
    Ok(lines)
}

fn plan_lines(
    client: &mut impl GenericClient,
    title: &str,
    plan: &Plan,
    units: &str,
    params: &[&(dyn ToSql + Sync)],
) -> anyhow::Result<Vec<String>> {
    let blocking: Vec<(usize, &Edge)> = plan.blocking_edges().collect();
    let carried: Vec<&Edge> = plan
        .edges
        .iter()
        .filter(|edge| matches!(edge.treatment, Treatment::Delete | Treatment::Nullify))
        .collect();
    let mut lines = vec![format!(
        "deletion plan of {title}: {} foreign keys on the path, {} block, {} carried out by \
         the plan",
        plan.edges.len(),
        blocking.len(),
        carried.len()
    )];
    if plan.is_plain() {
        return Ok(lines);
    }
    let counts: Vec<(i32, i64)> = client
        .query(&render::blocked_counts(plan, units), params)
        .with_context(|| format!("cannot count what blocks the deletion of {title}"))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for (e, edge) in blocking {
        let blocked = counts
            .iter()
            .find(|(edge, _)| usize::try_from(*edge).ok() == Some(e))
            .map_or(0, |(_, n)| *n);
        lines.push(format!(
            "  BLOCKS {}: blocks {blocked} of the deletions due now",
            edge.key.describe()
        ));
        lines.push(format!("    unblocked by {}", edge.unblock()));
        let migration = match edge.treatment {
            Treatment::Block(Blocks::OtherUser) => OnDelete::SetNull,
            _ => OnDelete::Cascade,
        };
        lines.push(format!(
            "    or the migration: {}",
            edge.key.migration(migration)
        ));
    }
    for edge in carried {
        let what = if edge.treatment == Treatment::Delete {
            "deletes first"
        } else {
            "nullifies first"
        };
        lines.push(format!("  {what} {}", edge.key.describe()));
    }
    Ok(lines)
}

/// The keys on any deletion path whose referencing columns have no index, largest table
/// first: PostgreSQL finds the referencing rows of every deleted row by scanning them.
fn unindexed(schema: &Schema) -> Vec<String> {
    let mut keys: Vec<&ForeignKey> = Vec::new();
    let plans = std::iter::once(&schema.accounts_plan)
        .chain(schema.profiles.iter().map(|profile| &profile.plan));
    for plan in plans {
        for edge in &plan.edges {
            let known = keys
                .iter()
                .any(|key| key.name == edge.key.name && key.child == edge.key.child);
            if !edge.key.indexed && !known {
                keys.push(&edge.key);
            }
        }
    }
    if keys.is_empty() {
        return vec!["foreign keys on the deletion path without an index: none".to_owned()];
    }
    keys.sort_by(|a, b| b.child_rows.cmp(&a.child_rows).then(a.name.cmp(&b.name)));
    let mut lines = vec![format!(
        "foreign keys on the deletion path without an index: {} (each deleted row costs a \
         scan of the table)",
        keys.len()
    )];
    for key in keys {
        lines.push(format!(
            "  {} -> {}, {} rows: {}",
            key.describe_columns(),
            key.parent.display(),
            key.child_rows,
            key.index_statement()
        ));
    }
    lines
}

/// `check --graph`: the deletion plans in Graphviz DOT, the advertiser database's too.
pub fn graph(
    schema: &Schema,
    advertiser: Option<&Advertiser>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let advertiser_plan = match advertiser {
        Some(Advertiser::Ready { profile, .. }) => Some(&profile.plan),
        Some(Advertiser::Unreachable(error)) => anyhow::bail!("{error}"),
        None => None,
    };
    let plans = std::iter::once(&schema.accounts_plan)
        .chain(schema.profiles.iter().map(|profile| &profile.plan))
        .chain(advertiser_plan);
    let dot = crate::plan::dot::render(plans);
    out.write_all(dot.as_bytes())
        .context("cannot write the graph")
}

fn count(client: &mut impl GenericClient, query: &str) -> anyhow::Result<i64> {
    Ok(client
        .query_one(query, &[])
        .with_context(|| format!("cannot count: {query}"))?
        .get(0))
}

fn users(
    client: &mut impl GenericClient,
    schema: &Schema,
    hold: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let users = &schema.users;
    let roles = users
        .roles
        .as_ref()
        .map_or("absent".to_owned(), |(_, type_name)| type_name.clone());
    let schedule = users.schedule_type.as_deref().unwrap_or("absent");
    let due = count(client, &sql::count_due_accounts(schema, None))?;
    let held = match hold {
        Some(_) => due - count(client, &sql::count_due_accounts(schema, hold))?,
        None => 0,
    };
    let later = count(
        client,
        &format!(
            "SELECT count(*) FROM users u WHERE {}",
            due::user(schema, "u", When::Later)
        ),
    )?;
    Ok(vec![
        format!(
            "users: id {}, roles {roles}, scheduled_deletion_at {schedule}, email {}, \
             active_role {}",
            users.id_type,
            present(users.has_email),
            present(users.has_active_role)
        ),
        match hold {
            Some(hold) => format!(
                "  accounts due now: {due} ({held} held by --hold-where, a valid rule: {hold}), \
                 scheduled later: {later}"
            ),
            None => format!("  accounts due now: {due}, scheduled later: {later}"),
        },
    ])
}

fn profile_lines(
    client: &mut impl GenericClient,
    profile: &ProfileTable,
) -> anyhow::Result<Vec<String>> {
    let table = profile.table.quoted();
    let Some(schedule) = &profile.schedule_type else {
        return Ok(vec![format!(
            "{} (role {}): id {}, no scheduled_deletion_at column: only role requests apply",
            profile.table, profile.role, profile.id_type
        )]);
    };
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}) FROM {table} p",
                due::profile(profile, When::Now),
                due::profile(profile, When::Later)
            ),
            &[],
        )
        .with_context(|| format!("cannot count the rows of {}", profile.table))?;
    Ok(vec![
        format!(
            "{} (role {}): id {}, scheduled_deletion_at {schedule}",
            profile.table, profile.role, profile.id_type
        ),
        format!(
            "  due now: {}, scheduled later: {}",
            row.get::<_, i64>(0),
            row.get::<_, i64>(1)
        ),
    ])
}

fn requests(client: &mut impl GenericClient, schema: &Schema) -> anyhow::Result<Vec<String>> {
    let Some(requests) = &schema.requests else {
        return Ok(vec![
            "account_deletion_requests: not found; accounts are due by users.account_status only"
                .to_owned(),
        ]);
    };
    let requests_where = |condition: String| {
        format!("SELECT count(*) FROM account_deletion_requests r WHERE {condition}")
    };
    let (role_due, role_later) = if requests.per_role {
        (
            count(client, &requests_where(due::role_request(When::Now)))?,
            count(client, &requests_where(due::role_request(When::Later)))?,
        )
    } else {
        (0, 0)
    };
    let account_due = count(
        client,
        &requests_where(due::account_request(schema, When::Now)),
    )?;
    let later = role_later
        + count(
            client,
            &requests_where(due::account_request(schema, When::Later)),
        )?;
    Ok(vec![
        format!(
            "account_deletion_requests: scheduled_deletion_at {}, per-role columns {}",
            requests.schedule_type,
            present(requests.per_role)
        ),
        format!(
            "  pending and due now: {account_due} whole accounts, {role_due} single roles; \
             scheduled later: {later}"
        ),
    ])
}

fn audit(client: &mut impl GenericClient, schema: &Schema) -> anyhow::Result<String> {
    if !schema.audit_exists {
        return Ok(
            "deletion_audit_log: not found; the first real run creates it (unless --no-audit)"
                .to_owned(),
        );
    }
    let rows = count(client, "SELECT count(*) FROM deletion_audit_log")?;
    Ok(format!("deletion_audit_log: present, {rows} rows"))
}

fn present(flag: bool) -> &'static str {
    if flag { "present" } else { "absent" }
}
