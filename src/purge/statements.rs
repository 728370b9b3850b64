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
//! The planner estimates a CTE of a batch at a row or two (it cannot know that every id of
//! `$1` is due), so a join with a CTE on its inner side may become a nested loop that scans
//! the CTE once per outer row, at a cost that grows with the square of the batch (see
//! BENCHMARKS.md, "CTEs and the planner"). So a CTE's ids are only ever used as
//! `= ANY (ARRAY(SELECT ...))` (computed once, then an index condition or a filter) or
//! inside an `OR`/`NOT IN` (a hashed subplan). The one join left, a role request's DELETE
//! `USING` its requests, has the big profile table on the other side.

use crate::due::{self, When};
use crate::schema::{ProfileTable, RolesType, Schema};

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

/// One attempt at the profiles `$1` of role `$2`: locks those still due, then their users;
/// deletes the profiles whose user it holds (or that have none), removes the role from
/// those users and audits. Returns (profile id, user id, email, FALSE) per deletion and
/// (profile id, NULL, NULL, TRUE) per profile still due that it left for the sweep.
pub fn attempt_profiles(schema: &Schema, profile: &ProfileTable, audit: bool) -> String {
    let table = profile.table.quoted();
    let due = &due::profile(profile, When::Now);
    format!(
        "WITH locked_profiles AS MATERIALIZED (SELECT p.id, p.user_id FROM {table} p \
         WHERE p.id = ANY($1::bigint[]) AND {due} FOR UPDATE SKIP LOCKED), \
         locked_users AS MATERIALIZED (SELECT u.id FROM users u \
         WHERE u.id = ANY (ARRAY(SELECT user_id FROM locked_profiles)) \
         ORDER BY u.id FOR UPDATE SKIP LOCKED), \
         ready AS MATERIALIZED (SELECT p.id FROM locked_profiles p WHERE {}), \
         deleted AS (DELETE FROM {table} p WHERE p.id = ANY (ARRAY(SELECT id FROM ready)) \
         AND {due} \
         RETURNING {}){} \
         {DELETED_ROLES} \
         UNION ALL SELECT p.id::bigint, NULL, NULL, TRUE FROM locked_profiles p \
         WHERE p.id NOT IN (SELECT id FROM ready) \
         UNION ALL SELECT p.id::bigint, NULL, NULL, TRUE \
         FROM unnest($1::bigint[]) AS w(id) JOIN {table} p ON p.id = w.id \
         WHERE w.id NOT IN (SELECT id FROM locked_profiles) AND {due} \
         ORDER BY 4, 1",
        user_ready("p"),
        deleted_profile_columns(schema),
        role_tail(schema, audit)
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

/// The `SET` list that removes role `$2` from a user's roles and fixes `active_role`, or
/// `None` when `users` has neither column.
fn role_removal(schema: &Schema) -> Option<String> {
    let mut assignments = Vec::new();
    if let Some((roles_type, _)) = &schema.users.roles {
        assignments.push(format!("roles = {}", remove_role(*roles_type)));
    }
    if schema.users.has_active_role {
        let fallback = match &schema.users.roles {
            Some((roles_type, _)) => format!("coalesce({}, 'user')", first_other_role(*roles_type)),
            None => "'user'".to_owned(),
        };
        assignments.push(format!(
            "active_role = CASE WHEN u.active_role = $2::text THEN {fallback} \
             ELSE u.active_role END"
        ));
    }
    (!assignments.is_empty()).then(|| assignments.join(", "))
}

/// `u.roles` without the string `$2`, keeping order, for each column type. A json value that
/// is not an array (or NULL) is left alone.
fn remove_role(roles_type: RolesType) -> String {
    match roles_type {
        RolesType::Json | RolesType::Jsonb => {
            let json = json_name(roles_type);
            format!(
                "CASE WHEN {json}_typeof(u.roles) = 'array' THEN \
                 (SELECT coalesce({json}_agg(e.value ORDER BY e.n), '[]'::{json}) \
                 FROM {json}_array_elements(u.roles) WITH ORDINALITY AS e(value, n) \
                 WHERE NOT ({json}_typeof(e.value) = 'string' AND e.value #>> '{{}}' = $2::text)) \
                 ELSE u.roles END"
            )
        }
        RolesType::TextArray => "array_remove(u.roles, $2::text)".to_owned(),
        RolesType::VarcharArray => "array_remove(u.roles, $2::text::varchar)".to_owned(),
    }
}

/// The first role in `u.roles` other than `$2` and the basic `user` role, or NULL (the
/// caller falls back to `user`): the app switches a user to another remaining role.
fn first_other_role(roles_type: RolesType) -> String {
    match roles_type {
        RolesType::Json | RolesType::Jsonb => {
            let json = json_name(roles_type);
            format!(
                "CASE WHEN {json}_typeof(u.roles) = 'array' THEN \
                 (SELECT e.value #>> '{{}}' FROM {json}_array_elements(u.roles) \
                 WITH ORDINALITY AS e(value, n) WHERE {json}_typeof(e.value) = 'string' \
                 AND e.value #>> '{{}}' NOT IN ($2::text, 'user') ORDER BY e.n LIMIT 1) END"
            )
        }
        RolesType::TextArray | RolesType::VarcharArray => {
            "(SELECT e::text FROM unnest(u.roles) WITH ORDINALITY AS x(e, n) \
             WHERE e::text NOT IN ($2::text, 'user') ORDER BY x.n LIMIT 1)"
                .to_owned()
        }
    }
}

fn json_name(roles_type: RolesType) -> &'static str {
    if roles_type == RolesType::Jsonb {
        "jsonb"
    } else {
        "json"
    }
}

/// CTEs `updated` (removes the role from the users of `deleted`, when `users` has a column
/// for it) and `audited`, following a CTE `deleted(profile_id, user_id, email)`;
/// [`DELETED_ROLES`] selects the result.
fn role_tail(schema: &Schema, audit: bool) -> String {
    let mut tail = match role_removal(schema) {
        Some(set) => format!(
            ", updated AS (UPDATE users u SET {set} \
             WHERE u.id = ANY (ARRAY(SELECT user_id FROM deleted)))"
        ),
        None => String::new(),
    };
    if audit {
        tail.push_str(
            ", audited AS (INSERT INTO deletion_audit_log \
             (deletion_type, user_id, user_email, role_name) \
             SELECT 'role', user_id, email, $2::text FROM deleted)",
        );
    }
    tail
}

/// (profile id, user id, email, FALSE) per profile in `deleted`, after [`role_tail`].
const DELETED_ROLES: &str = "SELECT profile_id, user_id, email, FALSE FROM deleted";

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

/// One attempt at the role-only requests `$1` for role `$2`, whose profiles are in this
/// table: locks the requests still due, their users and every profile of those users in
/// the table. For each request whose user and profiles it holds, it deletes the profile the
/// request names (or all of them), removes the role, audits and marks the request
/// completed. Returns (profile id, user id, email, FALSE) per deletion and (request id,
/// NULL, NULL, TRUE) per request still due that it left for the sweep.
pub fn attempt_requested_profiles(schema: &Schema, profile: &ProfileTable, audit: bool) -> String {
    let table = profile.table.quoted();
    let completed_at = completed_at(schema);
    let due = due::role_request(When::Now);
    format!(
        "WITH locked_requests AS MATERIALIZED (SELECT r.id, r.user_id, r.profile_id \
         FROM account_deletion_requests r WHERE r.id = ANY($1::bigint[]) \
         AND r.role = $2::text AND {due} FOR UPDATE SKIP LOCKED), \
         locked_users AS MATERIALIZED (SELECT u.id FROM users u \
         WHERE u.id = ANY (ARRAY(SELECT user_id FROM locked_requests)) \
         ORDER BY u.id FOR UPDATE SKIP LOCKED), \
         locked_profiles AS MATERIALIZED (SELECT p.id FROM {table} p \
         WHERE p.user_id = ANY (ARRAY(SELECT id FROM locked_users)) FOR UPDATE SKIP LOCKED), \
         ready AS MATERIALIZED (SELECT r.id, r.user_id, r.profile_id FROM locked_requests r \
         WHERE {} AND NOT EXISTS (SELECT 1 FROM {table} p WHERE p.user_id = r.user_id \
         AND p.id NOT IN (SELECT id FROM locked_profiles))), \
         completed AS (UPDATE account_deletion_requests r SET status = 'completed'{completed_at} \
         WHERE r.id = ANY (ARRAY(SELECT id FROM ready))), \
         deleted AS (DELETE FROM {table} p USING ready req \
         WHERE p.user_id = req.user_id AND (req.profile_id IS NULL OR p.id = req.profile_id) \
         AND p.id = ANY (ARRAY(SELECT id FROM locked_profiles)) \
         RETURNING {}){} \
         {DELETED_ROLES} \
         UNION ALL SELECT r.id::bigint, NULL, NULL, TRUE FROM locked_requests r \
         WHERE r.id NOT IN (SELECT id FROM ready) \
         UNION ALL SELECT r.id::bigint, NULL, NULL, TRUE FROM account_deletion_requests r \
         WHERE r.id = ANY($1::bigint[]) AND r.id NOT IN (SELECT id FROM locked_requests) \
         AND r.role = $2::text AND {due} \
         ORDER BY 4, 1",
        user_ready("r"),
        deleted_profile_columns(schema),
        role_tail(schema, audit)
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

/// One attempt at the accounts `$1`: locks the users, then every pending request of the
/// users locked; deletes the users it holds whose account is still due, judging requests
/// only by the locked rows, and leaves alone a user one of whose pending requests another
/// transaction holds. Marks the requests completed and audits. Returns (user id, email,
/// FALSE) per deletion and (user id, NULL, TRUE) per user it left for the sweep.
pub fn attempt_accounts(schema: &Schema, audit: bool, selection: Selection) -> String {
    let (request_ctes, request_check, complete) = match schema.requests {
        Some(_) => (
            format!(
                "locked_requests AS MATERIALIZED (SELECT {} FROM account_deletion_requests r \
                 WHERE r.user_id = ANY (ARRAY(SELECT id FROM locked_users)) \
                 AND r.status = 'pending' FOR UPDATE SKIP LOCKED), \
                 blocked AS MATERIALIZED (SELECT DISTINCT r.user_id \
                 FROM account_deletion_requests r \
                 WHERE r.user_id = ANY (ARRAY(SELECT id FROM locked_users)) \
                 AND r.status = 'pending' AND r.id NOT IN (SELECT id FROM locked_requests)), ",
                request_due_columns(schema)
            ),
            format!(
                " OR u.id IN (SELECT r.user_id FROM locked_requests r WHERE {})",
                due::account_request(schema, When::Now)
            ),
            format!(
                ", completed AS (UPDATE account_deletion_requests r \
                 SET status = 'completed'{} \
                 WHERE r.id = ANY (ARRAY(SELECT id FROM locked_requests)) \
                 AND r.user_id = ANY (ARRAY(SELECT user_id FROM deleted)))",
                completed_at(schema)
            ),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let (not_blocked, blocked) = match schema.requests {
        Some(_) => (
            " AND u.id NOT IN (SELECT user_id FROM blocked)",
            " UNION ALL SELECT user_id::bigint, NULL, TRUE FROM blocked",
        ),
        None => ("", ""),
    };
    let audited = match (audit, selection) {
        (false, _) => "",
        (true, Selection::Automatic { .. }) => {
            ", audited AS (INSERT INTO deletion_audit_log \
             (deletion_type, user_id, user_email, role_name) \
             SELECT 'account', user_id, email, NULL FROM deleted)"
        }
        (true, Selection::Approved) => {
            ", audited AS (INSERT INTO deletion_audit_log \
             (deletion_type, user_id, user_email, role_name, automated) \
             SELECT 'account', user_id, email, NULL, FALSE FROM deleted)"
        }
    };
    // The hold rule is re-checked like everything else; `approve` ids are already in $1.
    let hold = match selection {
        Selection::Automatic { hold } => not_held(hold),
        Selection::Approved => String::new(),
    };
    format!(
        "WITH locked_users AS MATERIALIZED (SELECT u.id FROM users u \
         WHERE u.id = ANY($1::bigint[]) ORDER BY u.id FOR UPDATE SKIP LOCKED), \
         {request_ctes}\
         deleted AS (DELETE FROM users u \
         WHERE u.id = ANY (ARRAY(SELECT id FROM locked_users)){not_blocked} \
         AND (({}){request_check}){hold} \
         RETURNING u.id::bigint AS user_id, {} AS email){complete}{audited} \
         SELECT user_id, email, FALSE FROM deleted{blocked} \
         UNION ALL SELECT x.id::bigint, NULL, TRUE FROM unnest($1::bigint[]) AS w(id) \
         JOIN users x ON x.id = w.id WHERE w.id NOT IN (SELECT id FROM locked_users) \
         ORDER BY 3, 1",
        due::user(schema, "u", When::Now),
        email(schema)
    )
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

/// Everything due, for a dry run: profiles named by role-only requests for role `$1` and
/// not already due by themselves, as (profile id, user id, email).
pub fn preview_requested_profiles(schema: &Schema, profile: &ProfileTable) -> String {
    format!(
        "SELECT DISTINCT p.id::bigint, p.user_id::bigint, {} FROM account_deletion_requests r \
         JOIN {} p ON p.user_id = r.user_id AND (r.profile_id IS NULL OR p.id = r.profile_id) \
         LEFT JOIN users u ON u.id = p.user_id \
         WHERE {} AND r.role = $1::text AND NOT coalesce(({}), FALSE) \
         ORDER BY 1",
        email(schema),
        profile.table.quoted(),
        due::role_request(When::Now),
        due::profile(profile, When::Now)
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
