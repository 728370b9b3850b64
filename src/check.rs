//! `astegni-delete-expired check`: what the job sees, without changing anything.
//!
//! Replaces the old `test_connection.py`: it proves the connection works, then prints per
//! table the detected column types, how many rows are due now and how many are scheduled
//! later. It runs in a READ ONLY transaction.

use std::io::Write;

use anyhow::Context;
use postgres::GenericClient;

use crate::due::{self, When};
use crate::purge::statements as sql;
use crate::schema::{ProfileTable, Schema};

/// Prints the check to `out`.
pub fn run(
    client: &mut postgres::Client,
    schema: &Schema,
    hold: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut transaction = crate::db::read_only(client)?;
    let lines = collect(&mut transaction, schema, hold)?;
    transaction.rollback().context("cannot end the check")?;
    for line in lines {
        writeln!(out, "{line}").context("cannot write the check")?;
    }
    Ok(())
}

fn collect(
    client: &mut impl GenericClient,
    schema: &Schema,
    hold: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let server = client
        .query_one(
            "SELECT current_setting('server_version'), current_database()::text, \
             current_user::text, current_setting('TimeZone'), now()::text",
            &[],
        )
        .context("cannot read the server settings")?;
    let mut lines = vec![format!(
        "connected: PostgreSQL {}, database {}, user {}, time zone {}, now {}",
        server.get::<_, String>(0),
        server.get::<_, String>(1),
        server.get::<_, String>(2),
        server.get::<_, String>(3),
        server.get::<_, String>(4),
    )];
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
    Ok(lines)
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
