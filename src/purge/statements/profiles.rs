//! The attempts at role deletions: profiles due by themselves ("Manage Role"), and the
//! profiles that role-only requests name. Each deletes the profiles, removes the role from
//! `users.roles` (whatever its type), fixes `active_role` and audits, in one statement.

use super::{
    Attempt, ClearedRequests, ONLY_CLEARED, Shape, completed_at, deleted_profile_columns, email,
    user_ready,
};
use crate::due::{self, When};
use crate::schema::{ProfileTable, RolesType, Schema};

/// One attempt at the profiles `$1` of role `$2`: locks those still due, then their users;
/// deletes the profiles whose user it holds (or that have none), removes the role from
/// those users and audits. The units are the profiles; what it leaves for the sweep are
/// profile ids.
pub fn attempt_profiles(schema: &Schema, profile: &ProfileTable, audit: bool) -> Attempt {
    let table = profile.table.quoted();
    let due = &due::profile(profile, When::Now);
    Attempt {
        shape: Shape::Role,
        unit_alias: "p",
        locks: format!(
            "locked_profiles AS MATERIALIZED (SELECT p.id, p.user_id FROM {table} p \
             WHERE p.id = ANY($1::bigint[]) AND {due} FOR UPDATE SKIP LOCKED), \
             locked_users AS MATERIALIZED (SELECT u.id FROM users u \
             WHERE u.id = ANY (ARRAY(SELECT user_id FROM locked_profiles)) \
             ORDER BY u.id FOR UPDATE SKIP LOCKED), \
             ready AS MATERIALIZED (SELECT p.id FROM locked_profiles p WHERE {}), ",
            user_ready("p")
        ),
        units: "SELECT id FROM ready".to_owned(),
        busy: vec![
            "SELECT p.id FROM locked_profiles p WHERE p.id NOT IN (SELECT id FROM ready)"
                .to_owned(),
            format!(
                "SELECT p.id FROM unnest($1::bigint[]) AS w(id) JOIN {table} p ON p.id = w.id \
                 WHERE w.id NOT IN (SELECT id FROM locked_profiles) AND {due}"
            ),
        ],
        delete: format!(
            "deleted AS (DELETE FROM {table} p WHERE p.id = ANY (ARRAY(SELECT id FROM ready)) \
             AND {due}{ONLY_CLEARED} RETURNING {}){}",
            deleted_profile_columns(schema),
            role_tail(schema, audit)
        ),
        unit_info: unit_info(schema, profile),
        cleared_requests: None,
    }
}

/// (id, user id, email) of the profiles in CTE `units`, for the report.
pub fn unit_info(schema: &Schema, profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint AS id, p.user_id::bigint AS user_id, {} AS email FROM {} p \
         LEFT JOIN users u ON u.id = p.user_id WHERE p.id = ANY (ARRAY(SELECT id FROM units))",
        email(schema),
        profile.table.quoted()
    )
}

/// One attempt at the role-only requests `$1` for role `$2`, whose profiles are in this
/// table: locks the requests still due, their users and every profile of those users in
/// the table. For each request whose user and profiles it holds, it deletes the profile the
/// request names (or all of them), removes the role, audits and marks the request
/// completed. The units are the profiles; what it leaves for the sweep are request ids.
pub fn attempt_requested_profiles(schema: &Schema, profile: &ProfileTable, audit: bool) -> Attempt {
    let table = profile.table.quoted();
    let completed_at = completed_at(schema);
    let due = due::role_request(When::Now);
    let requested = "p.user_id = req.user_id AND (req.profile_id IS NULL OR p.id = req.profile_id)";
    Attempt {
        shape: Shape::Role,
        unit_alias: "p",
        locks: format!(
            "locked_requests AS MATERIALIZED (SELECT r.id, r.user_id, r.profile_id \
             FROM account_deletion_requests r WHERE r.id = ANY($1::bigint[]) \
             AND r.role = $2::text AND {due} FOR UPDATE SKIP LOCKED), \
             locked_users AS MATERIALIZED (SELECT u.id FROM users u \
             WHERE u.id = ANY (ARRAY(SELECT user_id FROM locked_requests)) \
             ORDER BY u.id FOR UPDATE SKIP LOCKED), \
             locked_profiles AS MATERIALIZED (SELECT p.id FROM {table} p \
             WHERE p.user_id = ANY (ARRAY(SELECT id FROM locked_users)) FOR UPDATE SKIP LOCKED), \
             ready AS MATERIALIZED (SELECT r.id, r.user_id, r.profile_id FROM locked_requests r \
             WHERE {} AND NOT EXISTS (SELECT 1 FROM {table} p WHERE p.user_id = r.user_id \
             AND p.id NOT IN (SELECT id FROM locked_profiles))), ",
            user_ready("r")
        ),
        units: format!(
            "SELECT p.id FROM {table} p JOIN ready req ON {requested} \
             WHERE p.id = ANY (ARRAY(SELECT id FROM locked_profiles))"
        ),
        busy: vec![
            "SELECT r.id FROM locked_requests r WHERE r.id NOT IN (SELECT id FROM ready)"
                .to_owned(),
            format!(
                "SELECT r.id FROM account_deletion_requests r \
                 WHERE r.id = ANY($1::bigint[]) AND r.id NOT IN (SELECT id FROM locked_requests) \
                 AND r.role = $2::text AND {due}"
            ),
        ],
        delete: format!(
            "completed AS (UPDATE account_deletion_requests r SET status = 'completed'\
             {completed_at} WHERE r.id = ANY (ARRAY(SELECT id FROM ready))), \
             deleted AS (DELETE FROM {table} p USING ready req WHERE {requested} \
             AND p.id = ANY (ARRAY(SELECT id FROM locked_profiles)){ONLY_CLEARED} \
             RETURNING {}){}",
            deleted_profile_columns(schema),
            role_tail(schema, audit)
        ),
        unit_info: unit_info(schema, profile),
        cleared_requests: Some(ClearedRequests {
            requests: format!(
                "SELECT r.id FROM ready r WHERE NOT EXISTS (SELECT 1 FROM {table} p \
                 WHERE p.user_id = r.user_id AND (r.profile_id IS NULL OR p.id = r.profile_id) \
                 AND p.id IN (SELECT root FROM blockers))"
            ),
            profiles: format!(
                "SELECT p.id FROM {table} p JOIN ready req ON {requested} \
                 WHERE p.id = ANY (ARRAY(SELECT id FROM units)) \
                 AND NOT EXISTS (SELECT 1 FROM {table} x WHERE x.user_id = req.user_id \
                 AND (req.profile_id IS NULL OR x.id = req.profile_id) \
                 AND x.id IN (SELECT root FROM blockers))"
            ),
        }),
    }
}

pub(super) fn role_removal(schema: &Schema) -> Option<String> {
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
/// for it) and `audited`, following a CTE `deleted(profile_id, user_id, email)`.
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
