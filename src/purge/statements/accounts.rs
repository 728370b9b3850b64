//! The attempt at account deletions: a user due by its own row or by a pending request that
//! deletes the whole account.

use super::{
    Attempt, ONLY_CLEARED, Selection, Shape, completed_at, email, not_held, request_due_columns,
};
use crate::due::{self, When};
use crate::schema::Schema;

/// What the account's statement does with the user's requests besides marking the pending
/// ones completed: nothing (`ON DELETE` takes care of them), or what the deletion plan says
/// for their key to `users` (the plan leaves that to this statement, which judges the user
/// by them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnRequests {
    Completed,
    Deleted,
    Nullified,
}

/// One attempt at the accounts `$1`: locks the users, then every pending request of the
/// users locked; deletes the users it holds whose account is still due, judging requests
/// only by the locked rows, and leaves alone a user one of whose pending requests another
/// transaction holds. Marks the requests completed and audits. The units are users; what
/// it leaves for the sweep are user ids.
pub fn attempt_accounts(
    schema: &Schema,
    audit: bool,
    selection: Selection,
    own_requests: OwnRequests,
) -> Attempt {
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
            complete_requests(schema, own_requests),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let (not_blocked, blocked) = match schema.requests {
        Some(_) => (
            " AND u.id NOT IN (SELECT user_id FROM blocked)",
            vec!["SELECT user_id AS id FROM blocked".to_owned()],
        ),
        None => ("", Vec::new()),
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
    // Whether a locked user is still due, read on the user's newest version: as the DELETE's
    // WHERE clause, or as the WHERE clause of a second lock of the rows we hold.
    let still_due = format!(
        "u.id = ANY (ARRAY(SELECT id FROM locked_users)){not_blocked} \
         AND (({}){request_check}){hold}",
        due::user(schema, "u", When::Now)
    );
    let mut busy = blocked;
    busy.push(
        "SELECT x.id FROM unnest($1::bigint[]) AS w(id) JOIN users x ON x.id = w.id \
         WHERE w.id NOT IN (SELECT id FROM locked_users)"
            .to_owned(),
    );
    Attempt {
        shape: Shape::Account,
        unit_alias: "u",
        locks: format!(
            "locked_users AS MATERIALIZED (SELECT u.id FROM users u \
             WHERE u.id = ANY($1::bigint[]) ORDER BY u.id FOR UPDATE SKIP LOCKED), \
             {request_ctes}"
        ),
        units: format!("SELECT u.id FROM users u WHERE {still_due} FOR UPDATE"),
        busy,
        delete: format!(
            "deleted AS (DELETE FROM users u WHERE {still_due}{ONLY_CLEARED} \
             RETURNING u.id::bigint AS user_id, {} AS email){complete}{audited}",
            email(schema)
        ),
        unit_info: super::account_unit_info(schema),
        cleared_requests: None,
    }
}

/// The CTE after `deleted` that marks the deleted users' pending requests completed, and
/// deletes or nullifies their requests when the plan says so.
fn complete_requests(schema: &Schema, own_requests: OwnRequests) -> String {
    let deleted_users = "r.user_id = ANY (ARRAY(SELECT user_id FROM deleted))";
    match own_requests {
        OwnRequests::Completed => format!(
            ", completed AS (UPDATE account_deletion_requests r SET status = 'completed'{} \
             WHERE r.id = ANY (ARRAY(SELECT id FROM locked_requests)) AND {deleted_users})",
            completed_at(schema)
        ),
        OwnRequests::Deleted => {
            format!(
                ", completed AS (DELETE FROM account_deletion_requests r WHERE {deleted_users})"
            )
        }
        OwnRequests::Nullified => {
            let pending = "r.id IN (SELECT id FROM locked_requests)";
            let completed_at = if completed_at(schema).is_empty() {
                String::new()
            } else {
                format!(", completed_at = CASE WHEN {pending} THEN now() ELSE r.completed_at END")
            };
            format!(
                ", completed AS (UPDATE account_deletion_requests r \
                 SET status = CASE WHEN {pending} THEN 'completed' ELSE r.status END\
                 {completed_at}, user_id = NULL WHERE {deleted_users})"
            )
        }
    }
}
