//! The SQL text of every statement the purge runs, built once from the detected schema.
//!
//! Values are always bound parameters (`$1`...); the only things spliced into the text are
//! table names that `sql::TableName` validated and quoted, and fragments chosen by column
//! type. Ids travel as `bigint[]` whatever the column type: int4 = int8 comparisons still use
//! the primary-key index.
//!
//! Every DELETE repeats the "is it still due" condition in its own WHERE clause. The rows that
//! condition reads (the target row, and the request rows an account deletion depends on) are
//! locked earlier in the same transaction, so the re-check cannot read a stale snapshot.

use crate::schema::{ProfileTable, RolesType, Schema};

/// Text of `users.email` as a nullable text expression over alias `u`.
fn email(schema: &Schema) -> &'static str {
    if schema.users.has_email {
        "u.email::text"
    } else {
        "NULL::text"
    }
}

/// A profile row of a role deleted on its own ("Manage Role"), over alias `p`.
pub fn profile_due(profile: &ProfileTable) -> &'static str {
    if profile.schedule_type.is_some() {
        "p.is_active = FALSE AND p.scheduled_deletion_at <= now()"
    } else {
        "FALSE"
    }
}

/// A request that deletes the whole account, over alias `r`.
pub fn account_request_due(schema: &Schema) -> &'static str {
    match &schema.requests {
        Some(requests) if requests.per_role => {
            "r.status = 'pending' AND r.scheduled_deletion_at <= now() \
             AND r.delete_user IS NOT FALSE"
        }
        Some(_) => "r.status = 'pending' AND r.scheduled_deletion_at <= now()",
        None => "FALSE",
    }
}

/// A request that deletes one role only, over alias `r`.
pub const ROLE_REQUEST_DUE: &str = "r.status = 'pending' AND r.scheduled_deletion_at <= now() \
                                    AND r.delete_user = FALSE";

/// A user whose own row says the account is due ("Leave Astegni"), over `alias`.
fn user_due(schema: &Schema, alias: &str) -> String {
    if schema.users.schedule_type.is_some() {
        format!(
            "{alias}.account_status = 'pending_deletion' \
             AND {alias}.scheduled_deletion_at <= now()"
        )
    } else {
        "FALSE".to_owned()
    }
}

/// An account that is due, by its own row or by a request, over alias `u`: the form for a
/// few given users (one probe of the requests per user).
pub fn account_due(schema: &Schema) -> String {
    match schema.requests {
        Some(_) => format!(
            "({} OR EXISTS (SELECT 1 FROM account_deletion_requests r \
             WHERE r.user_id = u.id AND {}))",
            user_due(schema, "u"),
            account_request_due(schema)
        ),
        None => format!("({})", user_due(schema, "u")),
    }
}

/// An account that is due, over alias `u`: the form for scanning all users. The due users
/// are computed once as a set (a scan of each table and a hash) instead of probing the
/// requests once per user: 181 ms against 245-780 ms over 1M users in the benchmark.
fn account_due_set(schema: &Schema) -> String {
    match schema.requests {
        Some(_) => format!(
            "u.id IN (SELECT u2.id FROM users u2 WHERE {} \
             UNION ALL SELECT r.user_id FROM account_deletion_requests r WHERE {})",
            user_due(schema, "u2"),
            account_request_due(schema)
        ),
        None => format!("({})", user_due(schema, "u")),
    }
}

/// Every profile id due, ascending: what the role phase goes through for this table.
pub fn due_profiles(profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint FROM {} p WHERE {} ORDER BY p.id",
        profile.table.quoted(),
        profile_due(profile)
    )
}

/// Locks the candidate profiles `$1` that are still due, then their users; returns (profile
/// id, whether its user's row is ours or gone). One statement, so one round trip: the user
/// locks read the profiles locked just before. A profile whose user another transaction
/// holds stays locked until the attempt ends, but is not deleted.
pub fn lock_profiles(profile: &ProfileTable) -> String {
    format!(
        "WITH locked_profiles AS MATERIALIZED (SELECT p.id, p.user_id FROM {} p \
         WHERE p.id = ANY($1::bigint[]) AND {} FOR UPDATE SKIP LOCKED), \
         locked_users AS MATERIALIZED (SELECT u.id FROM users u \
         WHERE u.id = ANY (ARRAY(SELECT user_id FROM locked_profiles)) \
         ORDER BY u.id FOR UPDATE SKIP LOCKED) \
         SELECT p.id::bigint, p.user_id IS NULL OR p.user_id IN (SELECT id FROM locked_users) \
         OR NOT EXISTS (SELECT 1 FROM users x WHERE x.id = p.user_id) \
         FROM locked_profiles p",
        profile.table.quoted(),
        profile_due(profile)
    )
}

/// Of the ids in `$1`, those whose profile is still due (to tell "locked" from "restored").
pub fn still_due_profiles(profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint FROM {} p WHERE p.id = ANY($1::bigint[]) AND {}",
        profile.table.quoted(),
        profile_due(profile)
    )
}

/// Waits (up to lock_timeout) until the profile `$1` is free; run in a throwaway transaction.
pub fn wait_for_profile(profile: &ProfileTable) -> String {
    format!(
        "SELECT 1 FROM {} p WHERE p.id = $1::bigint FOR UPDATE",
        profile.table.quoted()
    )
}

pub const LOCK_USERS: &str =
    "SELECT id::bigint FROM users WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE SKIP LOCKED";
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

/// CTEs `updated` (the users whose role was removed, with their email) following a CTE
/// `deleted(profile_id, user_id)`, and the final SELECT of (profile id, user id, email).
fn role_tail(schema: &Schema, audit: bool) -> String {
    let mut tail = match role_removal(schema) {
        Some(set) => format!(
            ", updated AS (UPDATE users u SET {set} \
             WHERE u.id IN (SELECT user_id FROM deleted) \
             RETURNING u.id::bigint AS user_id, {} AS email)",
            email(schema)
        ),
        None => format!(
            ", updated AS (SELECT u.id::bigint AS user_id, {} AS email FROM users u \
             WHERE u.id IN (SELECT user_id FROM deleted))",
            email(schema)
        ),
    };
    if audit {
        tail.push_str(
            ", audited AS (INSERT INTO deletion_audit_log \
             (deletion_type, user_id, user_email, role_name) \
             SELECT 'role', d.user_id, up.email, $2::text \
             FROM deleted d LEFT JOIN updated up ON up.user_id = d.user_id)",
        );
    }
    tail.push_str(
        " SELECT d.profile_id, d.user_id, up.email FROM deleted d \
         LEFT JOIN updated up ON up.user_id = d.user_id ORDER BY d.profile_id",
    );
    tail
}

/// Deletes the profiles `$1` that are still due, removes role `$2` from their users and
/// writes the audit rows; returns (profile id, user id, email) per deleted profile.
pub fn delete_profiles(schema: &Schema, profile: &ProfileTable, audit: bool) -> String {
    format!(
        "WITH deleted AS (DELETE FROM {} p WHERE p.id = ANY($1::bigint[]) AND {} \
         RETURNING p.id::bigint AS profile_id, p.user_id::bigint AS user_id){}",
        profile.table.quoted(),
        profile_due(profile),
        role_tail(schema, audit)
    )
}

/// Every role-only request due for a role in `$1`, ascending.
pub const DUE_ROLE_REQUESTS: &str = "SELECT r.id::bigint FROM account_deletion_requests r \
     WHERE r.status = 'pending' AND r.scheduled_deletion_at <= now() \
     AND r.delete_user = FALSE AND r.role = ANY($1::text[]) ORDER BY r.id";

/// Role-only requests due for a role without a profile table `$1`: (request id, user id, role).
pub const UNKNOWN_ROLE_REQUESTS: &str = "SELECT r.id::bigint, r.user_id::bigint, coalesce(r.role::text, '') \
     FROM account_deletion_requests r \
     WHERE r.status = 'pending' AND r.scheduled_deletion_at <= now() \
     AND r.delete_user = FALSE AND (r.role IS NULL OR r.role <> ALL($1::text[])) ORDER BY r.id";

/// Locks the role-only requests `$1` still due; returns (request id, user id, role).
pub const LOCK_ROLE_REQUESTS: &str = "SELECT r.id::bigint, r.user_id::bigint, r.role::text FROM account_deletion_requests r \
     WHERE r.id = ANY($1::bigint[]) AND r.status = 'pending' AND r.scheduled_deletion_at <= now() \
     AND r.delete_user = FALSE FOR UPDATE SKIP LOCKED";

pub const STILL_DUE_ROLE_REQUESTS: &str = "SELECT r.id::bigint FROM account_deletion_requests r \
     WHERE r.id = ANY($1::bigint[]) AND r.status = 'pending' AND r.scheduled_deletion_at <= now() \
     AND r.delete_user = FALSE";

pub const WAIT_FOR_REQUEST: &str =
    "SELECT 1 FROM account_deletion_requests WHERE id = $1::bigint FOR UPDATE";

/// Locks every profile of the users `$1` in this table; returns (profile id, locked?).
pub fn lock_profiles_of_users(profile: &ProfileTable) -> String {
    let table = profile.table.quoted();
    format!(
        "WITH locked AS (SELECT p.id FROM {table} p WHERE p.user_id = ANY($1::bigint[]) \
         FOR UPDATE SKIP LOCKED) \
         SELECT p.user_id::bigint, p.id IN (SELECT id FROM locked) \
         FROM {table} p WHERE p.user_id = ANY($1::bigint[])"
    )
}

/// Waits for the profile a role request `(user $1, profile $2 or any)` names.
pub fn wait_for_requested_profile(profile: &ProfileTable) -> String {
    format!(
        "SELECT 1 FROM {} p WHERE p.user_id = $1::bigint \
         AND ($2::bigint IS NULL OR p.id = $2::bigint) FOR UPDATE",
        profile.table.quoted()
    )
}

/// Carries out the role-only requests `$1` (locked) for role `$2`: deletes the profile the
/// request names, removes the role, audits, and marks the requests completed.
pub fn delete_requested_profiles(schema: &Schema, profile: &ProfileTable, audit: bool) -> String {
    let completed_at = completed_at(schema);
    format!(
        "WITH req AS (SELECT r.id, r.user_id, r.profile_id FROM account_deletion_requests r \
         WHERE r.id = ANY($1::bigint[]) AND {ROLE_REQUEST_DUE}), \
         completed AS (UPDATE account_deletion_requests r SET status = 'completed'{completed_at} \
         WHERE r.id IN (SELECT id FROM req)), \
         deleted AS (DELETE FROM {} p USING req \
         WHERE p.user_id = req.user_id AND (req.profile_id IS NULL OR p.id = req.profile_id) \
         RETURNING p.id::bigint AS profile_id, p.user_id::bigint AS user_id){}",
        profile.table.quoted(),
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
            account_due_set(schema),
            not_held(hold)
        ),
        Selection::Approved => format!(
            "SELECT u.id::bigint FROM users u WHERE u.id = ANY($1::bigint[]) AND {} \
             ORDER BY u.id",
            account_due(schema)
        ),
    }
}

/// How many accounts the daily run would delete now (held ones excluded).
pub fn count_due_accounts(schema: &Schema, hold: Option<&str>) -> String {
    format!(
        "SELECT count(*) FROM users u WHERE {}{}",
        account_due_set(schema),
        not_held(hold)
    )
}

/// Due accounts the hold rule matches: (user id, email).
pub fn held_accounts(schema: &Schema, hold: &str) -> String {
    format!(
        "SELECT u.id::bigint, {} FROM users u WHERE {} AND coalesce(({hold}), FALSE) \
         ORDER BY u.id",
        email(schema),
        account_due_set(schema)
    )
}

/// Of the ids in `$1`, those whose account is still due.
pub fn still_due_accounts(schema: &Schema) -> String {
    format!(
        "SELECT u.id::bigint FROM users u WHERE u.id = ANY($1::bigint[]) AND {}",
        account_due(schema)
    )
}

/// Locks the users `$1`, then the pending requests of those locked, in one statement (one
/// round trip). Returns (user id, NULL, TRUE) for each user locked, and (user id, request
/// id, locked?) for each pending request of a locked user.
pub const LOCK_ACCOUNTS: &str = "WITH locked_users AS MATERIALIZED (SELECT u.id FROM users u \
     WHERE u.id = ANY($1::bigint[]) ORDER BY u.id FOR UPDATE SKIP LOCKED), \
     locked_requests AS MATERIALIZED (SELECT r.id FROM account_deletion_requests r \
     WHERE r.user_id = ANY (ARRAY(SELECT id FROM locked_users)) AND r.status = 'pending' \
     FOR UPDATE SKIP LOCKED) \
     SELECT id::bigint, NULL::bigint, TRUE FROM locked_users \
     UNION ALL \
     SELECT r.user_id::bigint, r.id::bigint, r.id IN (SELECT id FROM locked_requests) \
     FROM account_deletion_requests r \
     WHERE r.user_id = ANY (ARRAY(SELECT id FROM locked_users)) AND r.status = 'pending'";

/// Deletes the users `$1` (locked) whose account is still due, judging requests only by the
/// locked rows `$2`; marks those requests completed and audits; returns (user id, email).
pub fn delete_accounts(schema: &Schema, audit: bool, selection: Selection) -> String {
    let (request_check, complete) = match schema.requests {
        Some(_) => (
            format!(
                " OR EXISTS (SELECT 1 FROM account_deletion_requests r \
                 WHERE r.user_id = u.id AND r.id = ANY($2::bigint[]) AND {})",
                account_request_due(schema)
            ),
            format!(
                ", completed AS (UPDATE account_deletion_requests r \
                 SET status = 'completed'{} WHERE r.id = ANY($2::bigint[]) \
                 AND r.user_id IN (SELECT user_id FROM deleted))",
                completed_at(schema)
            ),
        ),
        None => (String::new(), String::new()),
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
        "WITH deleted AS (DELETE FROM users u WHERE u.id = ANY($1::bigint[]) \
         AND (({}){request_check}){hold} \
         RETURNING u.id::bigint AS user_id, {} AS email){complete}{audited} \
         SELECT user_id, email FROM deleted ORDER BY user_id",
        user_due(schema, "u"),
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
        profile_due(profile)
    )
}

/// Everything due, for a dry run: profiles named by role-only requests for role `$1` and
/// not already due by themselves, as (profile id, user id, email).
pub fn preview_requested_profiles(schema: &Schema, profile: &ProfileTable) -> String {
    format!(
        "SELECT DISTINCT p.id::bigint, p.user_id::bigint, {} FROM account_deletion_requests r \
         JOIN {} p ON p.user_id = r.user_id AND (r.profile_id IS NULL OR p.id = r.profile_id) \
         LEFT JOIN users u ON u.id = p.user_id \
         WHERE {ROLE_REQUEST_DUE} AND r.role = $1::text AND NOT coalesce(({}), FALSE) \
         ORDER BY 1",
        email(schema),
        profile.table.quoted(),
        profile_due(profile)
    )
}

/// Everything due, for a dry run: accounts as (user id, email), held ones excluded.
pub fn preview_accounts(schema: &Schema, hold: Option<&str>) -> String {
    format!(
        "SELECT u.id::bigint, {} FROM users u WHERE {}{} ORDER BY u.id",
        email(schema),
        account_due_set(schema),
        not_held(hold)
    )
}
