//! The SQL text of every statement the purge runs, built once from the detected schema.
//!
//! Values are always bound parameters (`$1`...); the only things spliced into the text are
//! table names that `sql::TableName` validated and quoted, and fragments chosen by column
//! type. Ids travel as `bigint[]` whatever the column type: int4 = int8 comparisons still use
//! the primary-key index.
//!
//! An attempt at a batch is one statement, run on its own (autocommit: one round trip, and
//! its transaction is the statement). Its CTEs first lock, `FOR UPDATE SKIP LOCKED`, every
//! row the deletion depends on: the target rows, their users and, for accounts, the user's
//! pending requests. Then its DELETE repeats the "is it still due" condition in its own WHERE
//! clause. All CTEs share the statement's snapshot, so this is only sound because of two
//! things PostgreSQL does under READ COMMITTED:
//!
//! - a row lock taken on a row updated after the snapshot follows it to its newest version,
//!   re-checks the lock's WHERE clause on it and returns that version's values;
//! - a DELETE or UPDATE that finds its target row updated after the snapshot re-checks its
//!   WHERE clause on the newest version (which we hold, so nobody can change it again).
//!
//! So a re-check never reads another table: whatever it needs from other rows (an account's
//! pending requests) it reads from the lock CTE's output, which holds the newest version of
//! each of those rows, locked. A row of another table merely read from the snapshot could be
//! stale (a request cancelled a moment ago), and is only ever used to defer work (a pending
//! request visible in the snapshot but not locked makes its user wait for the sweep) or for
//! the email written to the report and the audit row.
//!
//! Every statement also returns the ids of the batch that it left alone while they are still
//! due (locked by someone else, or waiting on a row someone else holds), for the sweep.
//!
//! A deletion plan (see `plan`) that has work to do turns an attempt into two statements in
//! one transaction ([`Attempt::plan_statement`], then [`Attempt::statement`] for the units
//! it cleared). The first locks exactly as the single statement does, then reads which units
//! are still due *through a second lock of the rows it holds*, whose WHERE clause is
//! re-checked on their newest versions like a DELETE's; computes what each unit's deletion
//! reaches, which keys block it, and deletes or nullifies first what the plan says for the
//! units it clears. The second deletes the units as the single statement would: holding the
//! locks since the first, it finds them as due as the first did. The plan's own changes and
//! the unit's deletion must not touch the same row in one statement (only one of two
//! changes to a row would take effect), which is why they are two: in particular the
//! account's requests, which the unit's re-check reads, are only ever changed by the second.
//! If the second does not delete every unit the first cleared, the caller rolls both back.
//!
//! The planner estimates a CTE of a batch at a row or two (it cannot know that every id of
//! `$1` is due), so a join with a CTE on its inner side may become a nested loop that scans
//! the CTE once per outer row, at a cost that grows with the square of the batch (see
//! BENCHMARKS.md, "CTEs and the planner"). So a CTE's ids are only ever used as
//! `= ANY (ARRAY(SELECT ...))` (computed once, then an index condition or a filter) or
//! inside an `OR`/`NOT IN` (a hashed subplan). The one join left, a role request's DELETE
//! `USING` its requests, has the big profile table on the other side.

mod accounts;
pub mod advertiser;
mod profiles;

pub use accounts::{OwnRequests, attempt_accounts};
pub use profiles::{attempt_profiles, attempt_requested_profiles, unit_info as profile_unit_info};

use crate::due::{self, When};
use crate::plan::{Plan, render};
use crate::schema::{ProfileTable, Schema};

/// Where an attempt's DELETE takes, in its own WHERE clause, the condition that the unit was
/// cleared by the plan, when the plan's work and the deletion are one statement.
pub const ONLY_CLEARED: &str = "/*only cleared*/";

/// The columns an attempt returns per deleted row, before its last, boolean, column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// (profile id, user id, email).
    Role,
    /// (user id, email).
    Account,
}

impl Shape {
    fn deleted_row(self) -> &'static str {
        match self {
            Shape::Role => "profile_id, user_id, email",
            Shape::Account => "user_id, email",
        }
    }

    /// (unit id, user id, email) of a row of `deleted`.
    fn deleted_unit(self) -> &'static str {
        match self {
            Shape::Role => "profile_id, user_id, email",
            Shape::Account => "user_id, user_id, email",
        }
    }

    fn busy_fill(self) -> &'static str {
        match self {
            Shape::Role => "NULL::bigint, NULL::text",
            Shape::Account => "NULL::text",
        }
    }

    /// The position of the last column, which tells deletions from ids left for the sweep.
    pub fn flag_column(self) -> usize {
        match self {
            Shape::Role => 4,
            Shape::Account => 3,
        }
    }
}

/// One attempt at a batch, in parts, so that it runs as one statement or, with a deletion
/// plan, as two (see the module comment). Parameters: `$1` the batch's ids, and `$2` the
/// role for role work.
pub struct Attempt {
    pub shape: Shape,
    /// The alias of the units' table in the DELETE.
    unit_alias: &'static str,
    /// CTEs that lock the batch's rows and decide which are ready, each followed by ", ".
    locks: String,
    /// The units the statement holds and finds still due: a query of root-table ids, read
    /// on the rows' newest versions.
    units: String,
    /// Queries of the ids the attempt leaves for the sweep (column `id`).
    busy: Vec<String>,
    /// `deleted AS (DELETE ...)` and the CTEs that follow it.
    delete: String,
    /// (id, user id, email) of the units in CTE `units`, for the report.
    unit_info: String,
    /// For role requests: the ready requests none of whose profiles a key blocks, and
    /// their profiles (by default, the units nothing blocks).
    cleared_requests: Option<ClearedRequests>,
}

/// For role requests, which the second statement takes, not their profiles: the requests
/// none of whose profiles is blocked, and the profiles of those requests.
pub struct ClearedRequests {
    requests: String,
    profiles: String,
}

impl Attempt {
    fn busy_rows(&self) -> String {
        self.busy
            .iter()
            .map(|query| {
                format!(
                    " UNION ALL SELECT b.id::bigint, {}, TRUE FROM ({query}) b",
                    self.shape.busy_fill()
                )
            })
            .collect()
    }

    /// The attempt as one statement: returns (deleted row..., FALSE) per deletion and
    /// (id, NULLs, TRUE) per id left for the sweep.
    pub fn statement(&self) -> String {
        format!(
            "WITH {}{} SELECT {}, FALSE FROM deleted{} ORDER BY {}, 1",
            self.locks,
            self.delete.replace(ONLY_CLEARED, ""),
            self.shape.deleted_row(),
            self.busy_rows(),
            self.shape.flag_column()
        )
    }

    /// The first of an attempt's two statements under `plan`: locks, finds the units,
    /// what their deletion reaches and what blocks it, and carries out the plan for the
    /// units it clears. Returns the rows [`render::outcomes`] describes, then ('cleared',
    /// id) per unit cleared, ('busy', id) per id left for the sweep and ('request', id) per
    /// role request cleared (what the second statement takes for role requests).
    pub fn plan_statement(&self, plan: &Plan) -> String {
        let tagged = |tag: &str, query: &str| {
            format!(
                " UNION ALL SELECT '{tag}', x.id::bigint, NULL, NULL, NULL, NULL, NULL, NULL \
                 FROM ({query}) x"
            )
        };
        let (cleared, requests) = match &self.cleared_requests {
            Some(cleared) => (
                cleared.profiles.clone(),
                tagged("request", &cleared.requests),
            ),
            None => (
                "SELECT id FROM units WHERE id NOT IN (SELECT root FROM blockers)".to_owned(),
                String::new(),
            ),
        };
        let busy: String = self
            .busy
            .iter()
            .map(|query| tagged("busy", query))
            .collect();
        format!(
            "WITH {}units AS MATERIALIZED ({}), {}cleared AS MATERIALIZED ({cleared}){} {}{}{busy}\
             {requests}",
            self.locks,
            self.units,
            render::ctes(plan),
            render::carry_out(plan),
            render::outcomes(&self.unit_info),
            tagged("cleared", "SELECT id FROM cleared"),
        )
    }

    /// The attempt under `plan` as one statement, when the plan's changes and the unit's
    /// deletion never touch the same row (see `Plan::fits_one_statement`): the first
    /// statement's work, then the DELETE of the units it cleared, in its WHERE clause too.
    /// Returns the rows of [`Attempt::plan_statement`] but the 'cleared' ones, and ('deleted',
    /// id, user id, email) per deletion. Should the DELETE leave out a cleared unit (a
    /// trigger that skips the row), the statement fails, and with it the plan's work.
    pub fn one_plan_statement(&self, plan: &Plan) -> String {
        let busy: String = self
            .busy
            .iter()
            .map(|query| {
                format!(
                    " UNION ALL SELECT 'busy', x.id::bigint, NULL, NULL, NULL, NULL, NULL, NULL \
                     FROM ({query}) x"
                )
            })
            .collect();
        let only_cleared = format!(" AND {}.id IN (SELECT id FROM cleared)", self.unit_alias);
        format!(
            "WITH {}units AS MATERIALIZED ({}), {}cleared AS MATERIALIZED (SELECT id FROM units \
             WHERE id NOT IN (SELECT root FROM blockers)){}, {} {} \
             UNION ALL SELECT 'deleted', {}, NULL, NULL, NULL, NULL FROM deleted{busy} \
             UNION ALL SELECT 'guard', ('astegni-delete-expired: ' || c.n || ' units cleared but ' \
             || d.n || ' deleted; the batch is rolled back')::bigint, \
             NULL, NULL, NULL, NULL, NULL, NULL \
             FROM (SELECT count(*) AS n FROM cleared) c, (SELECT count(*) AS n FROM deleted) d \
             WHERE c.n <> d.n",
            self.locks,
            self.units,
            render::ctes(plan),
            render::carry_out(plan),
            self.delete.replace(ONLY_CLEARED, &only_cleared),
            render::outcomes(&self.unit_info),
            self.shape.deleted_unit(),
        )
    }
}

/// Text of `users.email` as a nullable text expression over alias `u`.
fn email(schema: &Schema) -> &'static str {
    if schema.users.has_email {
        "u.email::text"
    } else {
        "NULL::text"
    }
}

/// The columns a role deletion's `deleted` CTE returns from profile alias `p`: (profile_id,
/// user_id, email). The email is looked up by primary key per row, not joined from the
/// user update: a join between two CTEs is planned from their estimates, which for a batch
/// are a row or two: a nested loop that scans one CTE once per row of the other.
fn deleted_profile_columns(schema: &Schema) -> &'static str {
    if schema.users.has_email {
        "p.id::bigint AS profile_id, p.user_id::bigint AS user_id, \
         (SELECT x.email::text FROM users x WHERE x.id = p.user_id) AS email"
    } else {
        "p.id::bigint AS profile_id, p.user_id::bigint AS user_id, NULL::text AS email"
    }
}

/// Every profile id due, ascending: what the role phase goes through for this table.
pub fn due_profiles(profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint FROM {} p WHERE {} ORDER BY p.id",
        profile.table.quoted(),
        due::profile(profile, When::Now)
    )
}

/// Whether the user of the locked row `alias` (with a `user_id`) lets its work go ahead:
/// the CTE `locked_users` holds its row, or it has none.
fn user_ready(alias: &str) -> String {
    format!(
        "({alias}.user_id IS NULL OR {alias}.user_id IN (SELECT id FROM locked_users) \
         OR NOT EXISTS (SELECT 1 FROM users x WHERE x.id = {alias}.user_id))"
    )
}

/// Of the ids in `$1`, those whose profile is still due (to tell "locked" from "restored").
pub fn still_due_profiles(profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint FROM {} p WHERE p.id = ANY($1::bigint[]) AND {}",
        profile.table.quoted(),
        due::profile(profile, When::Now)
    )
}

/// Waits (up to lock_timeout) until the profile `$1` is free; run in a throwaway transaction.
pub fn wait_for_profile(profile: &ProfileTable) -> String {
    format!(
        "SELECT 1 FROM {} p WHERE p.id = $1::bigint FOR UPDATE",
        profile.table.quoted()
    )
}

pub const EXISTING_USERS: &str = "SELECT id::bigint FROM users WHERE id = ANY($1::bigint[])";
pub const WAIT_FOR_USER: &str = "SELECT 1 FROM users WHERE id = $1::bigint FOR UPDATE";

/// Every role-only request due for a role in `$1`, ascending.
pub fn due_role_requests() -> String {
    format!(
        "SELECT r.id::bigint FROM account_deletion_requests r \
         WHERE {} AND r.role = ANY($1::text[]) ORDER BY r.id",
        due::role_request(When::Now)
    )
}

/// Role-only requests due for a role without a profile table `$1`: (request id, user id, role).
pub fn unknown_role_requests() -> String {
    format!(
        "SELECT r.id::bigint, r.user_id::bigint, r.role::text FROM account_deletion_requests r \
         WHERE {} AND r.role <> ALL($1::text[]) ORDER BY r.id",
        due::role_request(When::Now)
    )
}

/// Of the request ids in `$1`, those still due as role-only requests.
pub fn still_due_role_requests() -> String {
    format!(
        "SELECT r.id::bigint FROM account_deletion_requests r \
         WHERE r.id = ANY($1::bigint[]) AND {}",
        due::role_request(When::Now)
    )
}

/// The user of profile `$1`, if it has one.
pub fn user_of_profile(profile: &ProfileTable) -> String {
    format!(
        "SELECT user_id::bigint FROM {} WHERE id = $1::bigint",
        profile.table.quoted()
    )
}

/// What role request `$1` is about: (user id, role, profile id).
pub const ROLE_REQUEST_TARGET: &str = "SELECT user_id::bigint, role::text, profile_id::bigint \
     FROM account_deletion_requests WHERE id = $1::bigint";

/// Waits for every pending request of user `$1`.
pub const WAIT_FOR_PENDING_REQUESTS: &str = "SELECT 1 FROM account_deletion_requests \
     WHERE user_id = $1::bigint AND status = 'pending' FOR UPDATE";

pub const WAIT_FOR_REQUEST: &str =
    "SELECT 1 FROM account_deletion_requests WHERE id = $1::bigint FOR UPDATE";

/// Waits for the profile a role request `(user $1, profile $2 or any)` names.
pub fn wait_for_requested_profile(profile: &ProfileTable) -> String {
    format!(
        "SELECT 1 FROM {} p WHERE p.user_id = $1::bigint \
         AND ($2::bigint IS NULL OR p.id = $2::bigint) FOR UPDATE",
        profile.table.quoted()
    )
}

fn completed_at(schema: &Schema) -> &'static str {
    match &schema.requests {
        Some(requests) if requests.has_completed_at => ", completed_at = now()",
        _ => "",
    }
}

/// Which due accounts a statement is about.
#[derive(Clone, Copy)]
pub enum Selection<'a> {
    /// The daily run: every due account except those the hold rule (SQL over `u`) matches.
    Automatic { hold: Option<&'a str> },
    /// `approve`: only the listed users (`$1` in [`due_accounts`]), held or not.
    Approved,
}

/// ` AND ...` leaving out the accounts the hold rule (SQL over alias `u`) matches.
fn not_held(hold: Option<&str>) -> String {
    match hold {
        Some(hold) => format!(" AND NOT coalesce(({hold}), FALSE)"),
        None => String::new(),
    }
}

/// Every user whose account is due, ascending: what the account phase goes through.
pub fn due_accounts(schema: &Schema, selection: Selection) -> String {
    match selection {
        Selection::Automatic { hold } => format!(
            "SELECT u.id::bigint FROM users u WHERE {}{} ORDER BY u.id",
            due::account_set(schema, When::Now),
            not_held(hold)
        ),
        Selection::Approved => format!(
            "SELECT u.id::bigint FROM users u WHERE u.id = ANY($1::bigint[]) AND {} \
             ORDER BY u.id",
            due::account(schema, When::Now)
        ),
    }
}

/// How many accounts the daily run would delete now (held ones excluded).
pub fn count_due_accounts(schema: &Schema, hold: Option<&str>) -> String {
    format!(
        "SELECT count(*) FROM users u WHERE {}{}",
        due::account_set(schema, When::Now),
        not_held(hold)
    )
}

/// Due accounts the hold rule matches: (user id, email).
pub fn held_accounts(schema: &Schema, hold: &str) -> String {
    format!(
        "SELECT u.id::bigint, {} FROM users u WHERE {} AND coalesce(({hold}), FALSE) \
         ORDER BY u.id",
        email(schema),
        due::account_set(schema, When::Now)
    )
}

/// Of the ids in `$1`, those whose account is still due.
pub fn still_due_accounts(schema: &Schema) -> String {
    format!(
        "SELECT u.id::bigint FROM users u WHERE u.id = ANY($1::bigint[]) AND {}",
        due::account(schema, When::Now)
    )
}

/// The columns of `account_deletion_requests` that [`due::account_request`] reads.
fn request_due_columns(schema: &Schema) -> &'static str {
    match &schema.requests {
        Some(requests) if requests.per_role => {
            "r.id, r.user_id, r.status, r.scheduled_deletion_at, r.role, r.delete_user"
        }
        _ => "r.id, r.user_id, r.status, r.scheduled_deletion_at",
    }
}

/// Everything due, for a dry run: (profile id, user id, email) per role table.
pub fn preview_profiles(schema: &Schema, profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint, p.user_id::bigint, {} FROM {} p \
         LEFT JOIN users u ON u.id = p.user_id WHERE {} ORDER BY p.id",
        email(schema),
        profile.table.quoted(),
        due::profile(profile, When::Now)
    )
}

/// The ids of the profiles named by role-only requests for role `$1` and not already due by
/// themselves.
pub fn requested_profile_ids(profile: &ProfileTable) -> String {
    format!(
        "SELECT DISTINCT p.id::bigint AS id FROM account_deletion_requests r \
         JOIN {} p ON p.user_id = r.user_id AND (r.profile_id IS NULL OR p.id = r.profile_id) \
         WHERE {} AND r.role = $1::text AND NOT coalesce(({}), FALSE)",
        profile.table.quoted(),
        due::role_request(When::Now),
        due::profile(profile, When::Now)
    )
}

/// Everything due, for a dry run: profiles named by role-only requests for role `$1` and
/// not already due by themselves, as (profile id, user id, email).
pub fn preview_requested_profiles(schema: &Schema, profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint, p.user_id::bigint, {} FROM {} p \
         LEFT JOIN users u ON u.id = p.user_id WHERE p.id IN ({}) ORDER BY 1",
        email(schema),
        profile.table.quoted(),
        requested_profile_ids(profile)
    )
}

/// The ids of the accounts due, held ones excluded.
pub fn due_account_ids(schema: &Schema, hold: Option<&str>) -> String {
    format!(
        "SELECT u.id::bigint AS id FROM users u WHERE {}{}",
        due::account_set(schema, When::Now),
        not_held(hold)
    )
}

/// Everything due, for a dry run: accounts as (user id, email), held ones excluded.
pub fn preview_accounts(schema: &Schema, hold: Option<&str>) -> String {
    format!(
        "SELECT u.id::bigint, {} FROM users u WHERE {}{} ORDER BY u.id",
        email(schema),
        due::account_set(schema, When::Now),
        not_held(hold)
    )
}

/// (id, user id, email) of the accounts in CTE `units`, for the report.
pub fn account_unit_info(schema: &Schema) -> String {
    format!(
        "SELECT u.id::bigint AS id, u.id::bigint AS user_id, {} AS email FROM users u \
         WHERE u.id = ANY (ARRAY(SELECT id FROM units))",
        email(schema)
    )
}
