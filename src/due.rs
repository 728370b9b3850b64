//! What makes a role profile, an account or a deletion request due, written once, as SQL
//! conditions over fixed aliases, for a moment given as a [`When`]: the purge and the dry run
//! ask about now, `check` about now and later, `pending` about the next N days.
//!
//! The app writes `scheduled_deletion_at` as naive time, in two zones: "Leave Astegni" writes
//! server-local time into `users` and `account_deletion_requests`, "Manage Role" writes UTC
//! into the profile tables. A naive column is compared with `now()` converted to its zone:
//! the session's `TimeZone` (`--timezone`) for users and requests, `--role-timezone` for the
//! profile tables, which the session holds as the setting `astegni.role_timezone` (see
//! `db::configure_session`). A `timestamptz` column is compared with `now()` as it is.

use crate::schema::{ProfileTable, Schema};

/// The session setting holding `--role-timezone`, when it differs from the session zone.
pub const ROLE_TIMEZONE_SETTING: &str = "astegni.role_timezone";

/// Which moment a condition is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Due now: the deadline has passed.
    Now,
    /// Due within the number of days bound as parameter `$n` (an integer), overdue included.
    WithinDays(u8),
    /// Scheduled, but not due yet.
    Later,
    /// Scheduled, whenever.
    Any,
}

/// `column` compared with the moment `when`, the column holding naive time in the session
/// zone (or a `timestamptz`).
fn deadline(column: &str, when: When) -> String {
    deadline_against(column, when, "now()")
}

fn deadline_against(column: &str, when: When, now: &str) -> String {
    match when {
        When::Now => format!("{column} <= {now}"),
        When::WithinDays(n) => format!("{column} <= {now} + make_interval(days => ${n})"),
        When::Later => format!("{column} > {now}"),
        When::Any => format!("{column} IS NOT NULL"),
    }
}

/// Now, as a profile table's naive `scheduled_deletion_at` reads: in `--role-timezone`.
fn role_now(profile: &ProfileTable) -> &'static str {
    if profile.naive_in_role_zone {
        "(now() AT TIME ZONE current_setting('astegni.role_timezone'))"
    } else {
        "now()"
    }
}

/// A profile whose role was deleted on its own ("Manage Role"), over alias `p`.
pub fn profile(profile: &ProfileTable, when: When) -> String {
    if profile.schedule_type.is_none() {
        return "FALSE".to_owned();
    }
    let now = role_now(profile);
    let column = "p.scheduled_deletion_at";
    let time = match when {
        // The horizon is added before the conversion, so a DST change in the role's zone
        // does not move it.
        When::WithinDays(n) if profile.naive_in_role_zone => format!(
            "{column} <= ((now() + make_interval(days => ${n})) \
             AT TIME ZONE current_setting('astegni.role_timezone'))"
        ),
        _ => deadline_against(column, when, now),
    };
    format!("p.is_active = FALSE AND {time}")
}

/// The moment a profile (alias `p`) becomes due, as a `timestamptz`.
pub fn profile_deadline(profile: &ProfileTable) -> &'static str {
    if profile.naive_in_role_zone {
        "(p.scheduled_deletion_at AT TIME ZONE current_setting('astegni.role_timezone'))"
    } else {
        "p.scheduled_deletion_at::timestamptz"
    }
}

/// A user whose own row says the account is due ("Leave Astegni"), over `alias`.
pub fn user(schema: &Schema, alias: &str, when: When) -> String {
    if schema.users.schedule_type.is_none() {
        return "FALSE".to_owned();
    }
    format!(
        "{alias}.account_status = 'pending_deletion' AND {}",
        deadline(&format!("{alias}.scheduled_deletion_at"), when)
    )
}

/// A pending request that deletes the whole account, over alias `r`: one without the
/// per-role columns, one that names no role (what "Leave Astegni" writes, whatever
/// `delete_user` says), or one with `delete_user` not FALSE.
pub fn account_request(schema: &Schema, when: When) -> String {
    let kind = match &schema.requests {
        Some(requests) if requests.per_role => {
            " AND (r.role IS NULL OR r.delete_user IS NOT FALSE)"
        }
        Some(_) => "",
        None => return "FALSE".to_owned(),
    };
    format!(
        "r.status = 'pending'{kind} AND {}",
        deadline("r.scheduled_deletion_at", when)
    )
}

/// A pending request that deletes one role only, over alias `r`: it names a role, and
/// `delete_user` is FALSE. Only for a requests table with the per-role columns.
pub fn role_request(when: When) -> String {
    format!(
        "r.status = 'pending' AND r.role IS NOT NULL AND r.delete_user = FALSE AND {}",
        deadline("r.scheduled_deletion_at", when)
    )
}

/// An account that is due, by its own row or by a request, over alias `u`: the form for a
/// few given users (one probe of the requests per user).
pub fn account(schema: &Schema, when: When) -> String {
    match schema.requests {
        Some(_) => format!(
            "({} OR EXISTS (SELECT 1 FROM account_deletion_requests r \
             WHERE r.user_id = u.id AND {}))",
            user(schema, "u", when),
            account_request(schema, when)
        ),
        None => format!("({})", user(schema, "u", when)),
    }
}

/// An account that is due, over alias `u`: the form for scanning all users. The due users
/// are computed once as a set (a scan of each table and a hash) instead of probing the
/// requests once per user of the table (BENCHMARKS.md, "Due accounts as one set").
pub fn account_set(schema: &Schema, when: When) -> String {
    match schema.requests {
        Some(_) => format!(
            "u.id IN (SELECT u2.id FROM users u2 WHERE {} \
             UNION ALL SELECT r.user_id FROM account_deletion_requests r WHERE {})",
            user(schema, "u2", when),
            account_request(schema, when)
        ),
        None => format!("({})", user(schema, "u", when)),
    }
}
