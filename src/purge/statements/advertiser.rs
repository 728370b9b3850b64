//! The statements of advertiser role deletions, which touch two databases: the profile is
//! deleted in the advertiser database, the role removed and the audit row written in the
//! user database, with an intent row in between (see `purge::advertiser`).

use super::profiles::role_removal;
use super::{Attempt, ONLY_CLEARED, Shape};
use crate::due::{self, When};
use crate::schema::{ProfileTable, Schema};

/// In the advertiser database: of the profiles `$1`, the due ones and their users.
pub fn due_with_users(profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint, p.user_id::bigint FROM {} p WHERE p.id = ANY($1::bigint[]) \
         AND {} ORDER BY p.id",
        profile.table.quoted(),
        due::profile(profile, When::Now)
    )
}

/// In the advertiser database: one attempt at the profiles `$1`: locks those still due and
/// deletes them. The units are the profiles; it returns (profile id, user id, NULL) per
/// deletion, the email being the user database's.
///
/// A fresh attempt skips profiles others hold (the sweep waits for them). A replay waits
/// for them (`wait`): the holder may be the DELETE of a run that was killed, which its
/// backend carries on and commits after the job is gone; only once it has ended does the
/// replay know whether the profile is gone (and completes it) or still due (and deletes it).
pub fn attempt(profile: &ProfileTable, wait: bool) -> Attempt {
    let table = profile.table.quoted();
    let due = due::profile(profile, When::Now);
    let skip = if wait { "" } else { " SKIP LOCKED" };
    Attempt {
        shape: Shape::Role,
        unit_alias: "p",
        locks: format!(
            "locked_profiles AS MATERIALIZED (SELECT p.id FROM {table} p \
             WHERE p.id = ANY($1::bigint[]) AND {due} FOR UPDATE{skip}), "
        ),
        units: "SELECT id FROM locked_profiles".to_owned(),
        busy: vec![format!(
            "SELECT p.id FROM unnest($1::bigint[]) AS w(id) JOIN {table} p ON p.id = w.id \
             WHERE w.id NOT IN (SELECT id FROM locked_profiles) AND {due}"
        )],
        delete: format!(
            "deleted AS (DELETE FROM {table} p \
             WHERE p.id = ANY (ARRAY(SELECT id FROM locked_profiles)) AND {due}{ONLY_CLEARED} \
             RETURNING p.id::bigint AS profile_id, p.user_id::bigint AS user_id, \
             NULL::text AS email)"
        ),
        unit_info: unit_info(profile),
        cleared_requests: None,
    }
}

/// In the advertiser database: (id, user id, NULL email) of the profiles in CTE `units`.
pub fn unit_info(profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint AS id, p.user_id::bigint AS user_id, NULL::text AS email \
         FROM {} p WHERE p.id = ANY (ARRAY(SELECT id FROM units))",
        profile.table.quoted()
    )
}

/// In the advertiser database: which of the profiles `$1` exist.
pub fn existing(profile: &ProfileTable) -> String {
    format!(
        "SELECT p.id::bigint FROM {} p WHERE p.id = ANY($1::bigint[])",
        profile.table.quoted()
    )
}

/// In the user database: announces the deletions of profiles `$1` of users `$2`; returns
/// the profiles announced now (not those another run already announced).
pub const ANNOUNCE: &str = "INSERT INTO advertiser_deletion_intents (profile_id, user_id) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING \
     RETURNING profile_id";

/// In the user database: every announced deletion and its user.
pub const ANNOUNCED_WITH_USERS: &str =
    "SELECT profile_id, user_id FROM advertiser_deletion_intents ORDER BY profile_id";

/// In the user database: (id, email) of the users `$1` that exist.
pub fn emails(schema: &Schema) -> String {
    format!(
        "SELECT u.id::bigint, {} FROM users u WHERE u.id = ANY($1::bigint[])",
        super::email(schema)
    )
}

/// In the user database: every announced deletion, oldest profile first.
pub const ANNOUNCED: &str =
    "SELECT profile_id FROM advertiser_deletion_intents ORDER BY profile_id";

/// In the user database, in the transaction that will complete them: locks the intents of
/// profiles `$1` and their users, skipping rows others hold (`skip`), or waiting for them:
/// an intent left by an interrupted run may still be held by its backend, which has not yet
/// noticed that its client is gone. Returns (profile id, user id) of those whose intent and
/// user (if it exists) it holds.
pub fn lock_intents(skip: bool) -> String {
    let how = if skip { " SKIP LOCKED" } else { "" };
    format!(
        "WITH intents AS MATERIALIZED (SELECT i.profile_id, i.user_id \
         FROM advertiser_deletion_intents i WHERE i.profile_id = ANY($1::bigint[]) \
         ORDER BY i.profile_id FOR UPDATE{how}), \
         locked_users AS MATERIALIZED (SELECT u.id FROM users u \
         WHERE u.id = ANY (ARRAY(SELECT user_id FROM intents)) ORDER BY u.id FOR UPDATE{how}) \
         SELECT i.profile_id, i.user_id FROM intents i WHERE i.user_id IS NULL \
         OR i.user_id IN (SELECT id FROM locked_users) \
         OR NOT EXISTS (SELECT 1 FROM users x WHERE x.id = i.user_id) ORDER BY 1"
    )
}

/// In the user database: completes the deletions of profiles `$1` of users `$3` (role `$2`)
/// that are gone from the advertiser database (removes the role, fixes `active_role`,
/// audits) and forgets the intents of profiles `$4`. Returns (profile id, user id, email,
/// whether the user exists) per completed deletion.
pub fn complete(schema: &Schema, audit: bool) -> String {
    let email = if schema.users.has_email {
        "(SELECT x.email::text FROM users x WHERE x.id = g.user_id)"
    } else {
        "NULL::text"
    };
    let mut ctes = vec![
        "gone AS (SELECT * FROM unnest($1::bigint[], $3::bigint[]) AS g(profile_id, user_id))"
            .to_owned(),
    ];
    if let Some(set) = role_removal(schema) {
        ctes.push(format!(
            "updated AS (UPDATE users u SET {set} \
             WHERE u.id = ANY (ARRAY(SELECT user_id FROM gone)))"
        ));
    }
    if audit {
        ctes.push(format!(
            "audited AS (INSERT INTO deletion_audit_log \
             (deletion_type, user_id, user_email, role_name) \
             SELECT 'role', g.user_id, {email}, $2::text FROM gone g)"
        ));
    }
    ctes.push(
        "forgotten AS (DELETE FROM advertiser_deletion_intents \
         WHERE profile_id = ANY($4::bigint[]))"
            .to_owned(),
    );
    format!(
        "WITH {} SELECT g.profile_id, g.user_id, {email}, \
         EXISTS (SELECT 1 FROM users x WHERE x.id = g.user_id) FROM gone g ORDER BY 1",
        ctes.join(", ")
    )
}

/// In the user database: forgets the intents of profiles `$1`.
pub const FORGET: &str =
    "DELETE FROM advertiser_deletion_intents WHERE profile_id = ANY($1::bigint[])";
