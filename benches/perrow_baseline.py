#!/usr/bin/env python3
"""The per-row baseline: the old cron_delete_expired_roles.py algorithm, for the benchmark.

Reproduced from the setup guide (/work/shared/seed/cron-job-setup-guide.md) and the schema
notes' list of what it did: psycopg 3, one connection, and for each kind of work

  * one SELECT of everything due (fetched whole, as the old job did), then per row:
  * SELECT the user's email (for the log line and the audit row),
  * DELETE the row by id (no re-check that it is still due),
  * UPDATE: users.roles/active_role for a role; the requests' status for an account
    (a role-only request also gets its request UPDATE),
  * INSERT the deletion_audit_log row (the guide's "Database Logging" option),
  * COMMIT,
  * print a "[DELETED]" line.

One deliberate difference: the old job removed the role with
`UPDATE users SET roles = array_remove(roles, %s)`, which fails on the json `roles` column
(every role deletion rolled back). This baseline keeps the algorithm (one UPDATE per row)
with a json-correct removal: the same expression the job uses, so that all three contenders
leave identical databases. It also moves active_role off the deleted role the way the job
does, for the same reason.

Usage: perrow_baseline.py CONNINFO
"""

import sys
from datetime import datetime

import psycopg

ROLES = [
    ("student", "student_profiles"),
    ("tutor", "tutor_profiles"),
    ("parent", "parent_profiles"),
    ("advertiser", "advertiser_profiles"),
    ("user", "user_profiles"),
]

# Role removal, json-correct, order kept; active_role to the first other role, else 'user'.
UPDATE_ROLES = """
UPDATE users u SET
  roles = CASE WHEN json_typeof(u.roles) = 'array' THEN
            (SELECT coalesce(json_agg(e.value ORDER BY e.n), '[]'::json)
             FROM json_array_elements(u.roles) WITH ORDINALITY AS e(value, n)
             WHERE NOT (json_typeof(e.value) = 'string' AND e.value #>> '{}' = %(role)s))
          ELSE u.roles END,
  active_role = CASE WHEN u.active_role = %(role)s THEN
            coalesce(CASE WHEN json_typeof(u.roles) = 'array' THEN
              (SELECT e.value #>> '{}' FROM json_array_elements(u.roles) WITH ORDINALITY AS e(value, n)
               WHERE json_typeof(e.value) = 'string' AND e.value #>> '{}' NOT IN (%(role)s, 'user')
               ORDER BY e.n LIMIT 1) END, 'user')
          ELSE u.active_role END
WHERE u.id = %(user_id)s
"""

INSERT_AUDIT = """
INSERT INTO deletion_audit_log (deletion_type, user_id, user_email, role_name)
VALUES (%s, %s, %s, %s)
"""


def log(message):
    print(f"[{datetime.now():%Y-%m-%d %H:%M:%S}] {message}")


def email_of(cur, user_id):
    cur.execute("SELECT email FROM users WHERE id = %s", (user_id,))
    row = cur.fetchone()
    return row[0] if row else None


def delete_expired_roles(conn):
    deleted = 0
    cur = conn.cursor()
    for role, table in ROLES:
        cur.execute(
            f"SELECT id, user_id FROM {table} "
            "WHERE is_active = FALSE AND scheduled_deletion_at <= NOW() ORDER BY id"
        )
        for profile_id, user_id in cur.fetchall():
            email = email_of(cur, user_id)
            cur.execute(f"DELETE FROM {table} WHERE id = %s", (profile_id,))
            cur.execute(UPDATE_ROLES, {"role": role, "user_id": user_id})
            cur.execute(INSERT_AUDIT, ("role", user_id, email, role))
            conn.commit()
            log(f"  [DELETED] role '{role}' (profile {profile_id}) of user {user_id} <{email}>")
            deleted += 1
    # Role-only requests (delete_user = FALSE), in the job's role order.
    tables = dict(ROLES)
    cur.execute(
        "SELECT id, user_id, role, profile_id FROM account_deletion_requests "
        "WHERE status = 'pending' AND scheduled_deletion_at <= NOW() AND delete_user = FALSE "
        "ORDER BY role, id"
    )
    for request_id, user_id, role, profile_id in cur.fetchall():
        table = tables[role]
        email = email_of(cur, user_id)
        cur.execute(
            f"DELETE FROM {table} WHERE user_id = %s AND (%s::integer IS NULL OR id = %s) "
            "RETURNING id",
            (user_id, profile_id, profile_id),
        )
        profiles = [row[0] for row in cur.fetchall()]
        if profiles:
            cur.execute(UPDATE_ROLES, {"role": role, "user_id": user_id})
        cur.execute(
            "UPDATE account_deletion_requests SET status = 'completed', completed_at = NOW() "
            "WHERE id = %s",
            (request_id,),
        )
        for profile in profiles:
            cur.execute(INSERT_AUDIT, ("role", user_id, email, role))
        conn.commit()
        for profile in profiles:
            log(f"  [DELETED] role '{role}' (profile {profile}) of user {user_id} <{email}>")
            deleted += 1
    return deleted


def delete_expired_accounts(conn):
    deleted = 0
    cur = conn.cursor()
    cur.execute(
        "SELECT u.id FROM users u "
        "WHERE (u.account_status = 'pending_deletion' AND u.scheduled_deletion_at <= NOW()) "
        "OR EXISTS (SELECT 1 FROM account_deletion_requests r WHERE r.user_id = u.id "
        "AND r.status = 'pending' AND r.scheduled_deletion_at <= NOW() "
        "AND r.delete_user IS NOT FALSE) ORDER BY u.id"
    )
    for (user_id,) in cur.fetchall():
        email = email_of(cur, user_id)
        cur.execute(INSERT_AUDIT, ("account", user_id, email, None))
        cur.execute("DELETE FROM users WHERE id = %s", (user_id,))
        cur.execute(
            "UPDATE account_deletion_requests SET status = 'completed', completed_at = NOW() "
            "WHERE user_id = %s AND status = 'pending'",
            (user_id,),
        )
        conn.commit()
        log(f"  [DELETED] account of user {user_id} <{email}>")
        deleted += 1
    return deleted


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: perrow_baseline.py CONNINFO")
    rule = "=" * 80
    log(rule)
    log("CRON JOB: Delete Expired Roles and Accounts")
    log(rule)
    print()
    with psycopg.connect(sys.argv[1], application_name="perrow-baseline") as conn:
        log("[1/2] Checking for expired role deletions...")
        roles = delete_expired_roles(conn)
        log(f"[SUMMARY] Deleted {roles} expired roles")
        print()
        log("[2/2] Checking for expired account deletions...")
        accounts = delete_expired_accounts(conn)
        log(f"[SUMMARY] Deleted {accounts} expired accounts")
    print()
    log(rule)
    log(f"COMPLETED: {roles} roles and {accounts} accounts deleted")
    log(rule)


if __name__ == "__main__":
    main()
