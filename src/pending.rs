//! `astegni-delete-expired pending`: what the job will delete in the next N days.
//!
//! One read-only query gathers role profiles (due by themselves or by a role request) and
//! accounts (by their own row or by a request; the earlier date wins), with the due date and
//! the days left, sorted by due date. Accounts the hold rule matches are flagged. Output is
//! a table for people or `--json` (an array of objects) for scripts; emails follow
//! `--log-emails`.

use std::io::Write;

use anyhow::Context;
use postgres::Row;

use crate::config::EmailPolicy;
use std::collections::BTreeMap;

use crate::due::{self, When};
use crate::json;
use crate::purge::advertiser::Advertiser;
use crate::purge::statements;
use crate::report::show_email;
use crate::schema::ProfileTable;
use crate::schema::Schema;

/// One upcoming deletion.
struct Upcoming {
    kind: String,
    role: Option<String>,
    user_id: Option<i64>,
    profile_id: Option<i64>,
    email: Option<String>,
    due_local: String,
    due_utc: String,
    days_left: i64,
    held: bool,
}

impl Upcoming {
    fn from_row(row: &Row) -> Upcoming {
        Upcoming {
            kind: row.get(0),
            role: row.get(1),
            user_id: row.get(2),
            profile_id: row.get(3),
            email: row.get(4),
            due_local: row.get(5),
            due_utc: row.get(6),
            days_left: row.get(7),
            held: row.get(8),
        }
    }
}

/// What to list, and how.
pub struct Listing<'a> {
    /// `--hold-where`: held accounts are flagged.
    pub hold: Option<&'a str>,
    /// How many days ahead.
    pub days: u32,
    pub json: bool,
    pub emails: EmailPolicy,
}

/// Writes the deletions due within `listing.days` days to `out`.
pub fn run(
    client: &mut postgres::Client,
    schema: &Schema,
    advertiser: Option<&mut Advertiser>,
    listing: &Listing,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let Listing {
        hold,
        days,
        json: json_output,
        emails,
    } = *listing;
    let mut transaction = crate::db::read_only(client)?;
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let roles: Vec<&str> = schema.profiles.iter().map(|p| p.role.as_str()).collect();
    let rows = transaction
        .query(&query(schema, hold), &[&days, &roles])
        .context("cannot list the upcoming deletions")?;
    let zone: String = transaction
        .query_one("SELECT current_setting('TimeZone')", &[])
        .context("cannot read the time zone")?
        .get(0);
    let mut upcoming: Vec<Upcoming> = rows.iter().map(Upcoming::from_row).collect();
    if let Some(advertiser) = advertiser {
        upcoming.extend(advertisers(&mut transaction, schema, advertiser, days)?);
        upcoming.sort_by(|a, b| {
            (&a.due_utc, &a.kind, a.user_id, a.profile_id).cmp(&(
                &b.due_utc,
                &b.kind,
                b.user_id,
                b.profile_id,
            ))
        });
    }
    transaction.rollback().context("cannot end the listing")?;
    let text = if json_output {
        as_json(&upcoming, emails)
    } else {
        as_table(&upcoming, emails, &zone)
    };
    out.write_all(text.as_bytes())
        .context("cannot write the listing")
}

/// Columns: kind, role, user id, profile id, email, due (local text), due (UTC ISO 8601),
/// days left, held. Parameters: `$1` the days ahead, `$2` the role names, in the order of
/// the schema's profile tables.
fn query(schema: &Schema, hold: Option<&str>) -> String {
    let email = if schema.users.has_email {
        "u.email::text"
    } else {
        "NULL::text"
    };
    let within = When::WithinDays(1);
    let mut parts: Vec<String> = Vec::new();
    for (index, profile) in schema.profiles.iter().enumerate() {
        let table = profile.table.quoted();
        let role = format!("($2::text[])[{}]", index + 1);
        if profile.schedule_type.is_some() {
            parts.push(format!(
                "SELECT 'role'::text, {role}, p.user_id::bigint, p.id::bigint, {email}, {}, \
                 FALSE FROM {table} p LEFT JOIN users u ON u.id = p.user_id WHERE {}",
                due::profile_deadline(profile),
                due::profile(profile, within)
            ));
        }
        if schema.requests.as_ref().is_some_and(|r| r.per_role) {
            parts.push(format!(
                "SELECT 'role'::text, {role}, r.user_id::bigint, p.id::bigint, {email}, \
                 r.scheduled_deletion_at::timestamptz, FALSE \
                 FROM account_deletion_requests r \
                 JOIN {table} p ON p.user_id = r.user_id \
                 AND (r.profile_id IS NULL OR p.id = r.profile_id) \
                 LEFT JOIN users u ON u.id = r.user_id \
                 WHERE r.role = {role} AND {}",
                due::role_request(within)
            ));
        }
    }
    parts.push(accounts(schema, hold, email));
    format!(
        "SELECT kind, role, user_id, profile_id, email, \
         to_char(due, 'YYYY-MM-DD HH24:MI'), \
         to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
         greatest(0, ceil(extract(epoch FROM due - now()) / 86400))::bigint, held \
         FROM ({}) AS upcoming(kind, role, user_id, profile_id, email, due, held) \
         ORDER BY due, kind, user_id, profile_id",
        parts.join(" UNION ALL ")
    )
}

/// Accounts due within `$1` days, by their own row or by a request: the earlier wins.
fn accounts(schema: &Schema, hold: Option<&str>, email: &str) -> String {
    let by_status = match schema.users.schedule_type {
        Some(_) => format!(
            "CASE WHEN {} THEN u.scheduled_deletion_at::timestamptz END",
            due::user(schema, "u", When::Any)
        ),
        None => "NULL::timestamptz".to_owned(),
    };
    let by_request = match &schema.requests {
        Some(_) => format!(
            "(SELECT min(r.scheduled_deletion_at::timestamptz) FROM account_deletion_requests r \
             WHERE r.user_id = u.id AND {})",
            due::account_request(schema, When::Any)
        ),
        None => "NULL::timestamptz".to_owned(),
    };
    let held = hold.map_or("FALSE".to_owned(), |hold| {
        format!("coalesce(({hold}), FALSE)")
    });
    format!(
        "SELECT 'account'::text, NULL::text, a.id, NULL::bigint, a.email, a.due, a.held \
         FROM (SELECT u.id::bigint AS id, {email} AS email, \
         least({by_status}, {by_request}) AS due, {held} AS held FROM users u) a \
         WHERE a.due <= now() + make_interval(days => $1)"
    )
}

/// The advertiser profiles due within `days` days, from the advertiser database, with their
/// users' emails from the user database (`users`).
fn advertisers(
    users: &mut postgres::Transaction,
    schema: &Schema,
    advertiser: &mut Advertiser,
    days: i32,
) -> anyhow::Result<Vec<Upcoming>> {
    let (client, profile) = match advertiser {
        Advertiser::Ready { client, profile } => (client, profile),
        Advertiser::Unreachable(error) => anyhow::bail!("{error}"),
    };
    let mut transaction = crate::db::read_only(client)?;
    let rows = transaction
        .query(&advertiser_query(profile), &[&days])
        .context("cannot list the upcoming deletions of the advertiser database")?;
    transaction
        .rollback()
        .context("cannot end the listing in the advertiser database")?;
    let mut upcoming: Vec<Upcoming> = rows.iter().map(Upcoming::from_row).collect();
    let user_ids: Vec<i64> = upcoming.iter().filter_map(|item| item.user_id).collect();
    let emails: BTreeMap<i64, Option<String>> = users
        .query(&statements::advertiser::emails(schema), &[&user_ids])
        .context("cannot read the emails of the advertisers")?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for item in &mut upcoming {
        item.email = item
            .user_id
            .and_then(|id| emails.get(&id).cloned().flatten());
    }
    Ok(upcoming)
}

/// The advertiser database's profiles due within `$1` days, in the columns of [`query`].
fn advertiser_query(profile: &ProfileTable) -> String {
    format!(
        "SELECT 'role'::text, 'advertiser'::text, p.user_id::bigint, p.id::bigint, NULL::text, \
         to_char(due, 'YYYY-MM-DD HH24:MI'), \
         to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
         greatest(0, ceil(extract(epoch FROM due - now()) / 86400))::bigint, FALSE \
         FROM (SELECT p.*, {} AS due FROM {} p WHERE {}) p",
        due::profile_deadline(profile),
        profile.table.quoted(),
        due::profile(profile, When::WithinDays(1))
    )
}

fn as_table(upcoming: &[Upcoming], emails: EmailPolicy, zone: &str) -> String {
    if upcoming.is_empty() {
        return "Nothing is scheduled for deletion in that period.\n".to_owned();
    }
    let mut text = format!(
        "{:<16}  {:>9}  {:<7}  {:<10}  {:>8}  {:>8}  {}\n",
        format!("DUE ({zone})").chars().take(16).collect::<String>(),
        "DAYS LEFT",
        "TYPE",
        "ROLE",
        "USER",
        "PROFILE",
        "EMAIL"
    );
    for item in upcoming {
        let days = if item.days_left == 0 {
            "due now".to_owned()
        } else {
            item.days_left.to_string()
        };
        let kind = if item.held { "account*" } else { &item.kind };
        text.push_str(&format!(
            "{:<16}  {:>9}  {:<7}  {:<10}  {:>8}  {:>8}  {}\n",
            item.due_local,
            days,
            kind,
            item.role.as_deref().unwrap_or("-"),
            item.user_id.map_or("-".to_owned(), |id| id.to_string()),
            item.profile_id.map_or("-".to_owned(), |id| id.to_string()),
            show_email(emails, item.email.as_deref()).unwrap_or("-".into()),
        ));
    }
    if upcoming.iter().any(|item| item.held) {
        text.push_str("* held by --hold-where: deleted only by `astegni-delete-expired approve`\n");
    }
    text
}

fn as_json(upcoming: &[Upcoming], emails: EmailPolicy) -> String {
    let number = |value: Option<i64>| value.map_or("null".to_owned(), |v| v.to_string());
    let items: Vec<String> = upcoming
        .iter()
        .map(|item| {
            format!(
                "{{\"type\":{},\"role\":{},\"user_id\":{},\"profile_id\":{},\"email\":{},\
                 \"due_at\":{},\"days_remaining\":{},\"held\":{}}}",
                json::string(&item.kind),
                json::optional(item.role.as_deref()),
                number(item.user_id),
                number(item.profile_id),
                json::optional(show_email(emails, item.email.as_deref()).as_deref()),
                json::string(&item.due_utc),
                item.days_left,
                item.held
            )
        })
        .collect();
    format!("[{}]\n", items.join(",\n "))
}
