//! The invariant checker every fault trial uses.
//!
//! [`snapshot`] records, before the job starts, in a schema `fault_check` of the database
//! itself (the job never looks at it):
//!
//! * `due_profile(role, id, user_id, restored)`: every profile due, by itself (`is_active =
//!   FALSE AND scheduled_deletion_at <= now()`) or by a pending, due role-only request naming
//!   it (README "What it deletes", step 1);
//! * `due_user(id, restored)`: every account due, by its own row or by a pending, due request
//!   that deletes the whole account (step 2);
//! * `kept_profile`, `kept_user`: what is not due (profiles of users that are not due either:
//!   a profile of a deleted account goes with it by `ON DELETE CASCADE`);
//! * `roles_before(user_id, role)`: `users.roles`, as text, whatever the column type;
//! * `request_before`: every request with its status and whether it was due;
//! * `dependents_before(tab, owner, n)`: with the production traits, the rows of the tables
//!   behind keys that do not cascade, per owning user or tutor profile.
//!
//! The application's restores during a run set `restored` in the same transaction as the
//! restore (see `workload::restore_profile`), so a restore is recorded if and only if it
//! committed. "Due now" is computed by the views `profile_now` and `user_now`, written from the
//! README, not from the job's SQL.
//!
//! [`check`] then runs each invariant of the issue as one SQL query returning the violations,
//! in one REPEATABLE READ snapshot; [`Phase::Final`] (after the rerun) adds "nothing due is
//! left".

use postgres::{Client, Transaction};

use super::workload::{Db, ROLES};
use crate::common::astegni::Variant;

/// When the check runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Right after the fault: work may be unfinished, but never wrong or half done.
    AfterFault,
    /// After the rerun: additionally, nothing due may be left.
    Final,
}

/// Creates the `fault_check` schema and records what is due now.
pub fn snapshot(db: &Db, shape: &Variant) {
    let profiles: Vec<String> = ROLES
        .iter()
        .map(|role| {
            format!(
                "SELECT '{role}'::text AS role, id::bigint AS id, user_id::bigint AS user_id, \
                 is_active, scheduled_deletion_at FROM public.{role}_profiles"
            )
        })
        .collect();
    db.exec(&format!(
        "DROP SCHEMA IF EXISTS fault_check CASCADE;
         CREATE SCHEMA fault_check;
         CREATE VIEW fault_check.profile_now AS
         SELECT p.role, p.id, p.user_id,
                coalesce(p.is_active = FALSE AND p.scheduled_deletion_at <= now(), FALSE)
                OR EXISTS (SELECT 1 FROM public.account_deletion_requests r
                           WHERE r.user_id = p.user_id AND r.role = p.role
                             AND r.status = 'pending' AND r.scheduled_deletion_at <= now()
                             AND r.delete_user = FALSE
                             AND (r.profile_id IS NULL OR r.profile_id = p.id)) AS due
         FROM ({profiles}) p;
         CREATE VIEW fault_check.user_now AS
         SELECT u.id::bigint AS id, {roles} AS roles, u.active_role::text AS active_role,
                coalesce(u.account_status = 'pending_deletion'
                         AND u.scheduled_deletion_at <= now(), FALSE)
                OR EXISTS (SELECT 1 FROM public.account_deletion_requests r
                           WHERE r.user_id = u.id AND r.status = 'pending'
                             AND r.scheduled_deletion_at <= now()
                             AND (r.role IS NULL OR r.delete_user IS NOT FALSE)) AS due
         FROM public.users u;
         CREATE TABLE fault_check.due_user AS
           SELECT id, FALSE AS restored FROM fault_check.user_now WHERE due;
         ALTER TABLE fault_check.due_user ADD PRIMARY KEY (id);
         CREATE TABLE fault_check.kept_user AS
           SELECT id FROM fault_check.user_now WHERE NOT due;
         ALTER TABLE fault_check.kept_user ADD PRIMARY KEY (id);
         CREATE TABLE fault_check.due_profile AS
           SELECT role, id, user_id, FALSE AS restored FROM fault_check.profile_now WHERE due;
         ALTER TABLE fault_check.due_profile ADD PRIMARY KEY (role, id);
         CREATE INDEX ON fault_check.due_profile (user_id, role);
         CREATE TABLE fault_check.kept_profile AS
           SELECT p.role, p.id, p.user_id FROM fault_check.profile_now p
           WHERE NOT p.due AND p.user_id NOT IN (SELECT id FROM fault_check.due_user);
         CREATE TABLE fault_check.roles_before AS
           SELECT id AS user_id, unnest(roles) AS role FROM fault_check.user_now;
         CREATE TABLE fault_check.request_before AS
           SELECT id::bigint AS id, user_id::bigint AS user_id, status::text AS status,
                  role::text AS role, delete_user,
                  (status = 'pending' AND scheduled_deletion_at <= now()) AS due
           FROM public.account_deletion_requests;
         ALTER TABLE fault_check.request_before ADD PRIMARY KEY (id);
         ANALYZE fault_check.due_user, fault_check.kept_user, fault_check.due_profile,
                 fault_check.kept_profile, fault_check.roles_before, fault_check.request_before;",
        profiles = profiles.join(" UNION ALL "),
        roles = shape.roles_as_array(),
    ));
    if db.scalar("SELECT count(*) FROM pg_class WHERE oid = to_regclass('refresh_tokens')") == 1 {
        db.exec(&format!(
            "CREATE TABLE fault_check.dependents_before AS {DEPENDENTS}"
        ));
    }
    let audit_rows = super::job::audit_rows(&mut db.client());
    assert_eq!(audit_rows, 0, "the audit table must start empty");
}

/// With the production traits: the rows behind keys that do not cascade, per owner (a user,
/// or the tutor profile of a reel's chapters).
macro_rules! dependents {
    () => {
        "SELECT 'refresh_tokens'::text AS tab, user_id::bigint AS owner,
         count(*) AS n FROM public.refresh_tokens GROUP BY user_id
     UNION ALL SELECT 'playlist_videos', p.user_id, count(*)
         FROM public.playlist_videos v JOIN public.playlists p ON p.id = v.playlist_id
         GROUP BY p.user_id
     UNION ALL SELECT 'video_chapters', r.tutor_profile_id, count(*)
         FROM public.video_chapters c JOIN public.video_reels r ON r.id = c.reel_id
         GROUP BY r.tutor_profile_id"
    };
}
const DEPENDENTS: &str = dependents!();

/// What was due at the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub profiles: i64,
    pub users: i64,
}

impl Due {
    pub fn total(&self) -> i64 {
        self.profiles + self.users
    }
}

pub fn due(db: &Db) -> Due {
    Due {
        profiles: db.scalar("SELECT count(*) FROM fault_check.due_profile"),
        users: db.scalar("SELECT count(*) FROM fault_check.due_user"),
    }
}

/// Restores recorded (committed) so far: (profiles, users).
pub fn restored(db: &Db) -> (i64, i64) {
    (
        db.scalar("SELECT count(*) FROM fault_check.due_profile WHERE restored"),
        db.scalar("SELECT count(*) FROM fault_check.due_user WHERE restored"),
    )
}

/// Each invariant: a name and a query returning one text row per violation. They read the
/// temporary tables `pn` (profiles now), `un` (users now) and `an` (audit rows now).
const CHECKS: &[(&str, &str)] = &[
    (
        "a due profile deleted while its user stays has exactly one role audit row",
        "SELECT format('%s profile %s of user %s was deleted with %s role audit rows (want 1)',
                d.role, d.id, d.user_id, n)
         FROM (SELECT d.*, (SELECT count(*) FROM an WHERE an.kind = 'role'
                            AND an.user_id = d.user_id AND an.role = d.role) AS n
               FROM fault_check.due_profile d) d
         WHERE NOT EXISTS (SELECT 1 FROM pn WHERE pn.role = d.role AND pn.id = d.id)
           AND EXISTS (SELECT 1 FROM un WHERE un.id = d.user_id) AND n <> 1",
    ),
    (
        "a due profile gone with its account: one account audit row, at most one role row",
        "SELECT format('%s profile %s of deleted user %s: %s account and %s role audit rows',
                d.role, d.id, d.user_id, accounts, roles)
         FROM (SELECT d.*,
                 (SELECT count(*) FROM an WHERE an.kind = 'account'
                  AND an.user_id = d.user_id) AS accounts,
                 (SELECT count(*) FROM an WHERE an.kind = 'role'
                  AND an.user_id = d.user_id AND an.role = d.role) AS roles
               FROM fault_check.due_profile d) d
         WHERE NOT EXISTS (SELECT 1 FROM pn WHERE pn.role = d.role AND pn.id = d.id)
           AND NOT EXISTS (SELECT 1 FROM un WHERE un.id = d.user_id)
           AND (accounts <> 1 OR roles > 1)",
    ),
    // active_role falls back to `user` when no other role remains (README), also when the
    // deleted role is `user` itself.
    (
        "no user keeps (in users.roles or active_role) a role whose profile was deleted",
        "SELECT format('user %s still has role %s (roles %s, active_role %s) but its profile %s \
                        was deleted', d.user_id, d.role, un.roles, un.active_role, d.id)
         FROM fault_check.due_profile d JOIN un ON un.id = d.user_id
         WHERE NOT EXISTS (SELECT 1 FROM pn WHERE pn.role = d.role AND pn.id = d.id)
           AND (d.role = ANY (un.roles)
                OR (un.active_role = d.role AND d.role <> 'user'))",
    ),
    (
        "a due profile still there is still due (or was restored) and has no audit row",
        "SELECT format('%s profile %s of user %s is still there but no longer due, and was not \
                        restored', d.role, d.id, d.user_id)
         FROM fault_check.due_profile d JOIN pn ON pn.role = d.role AND pn.id = d.id
         WHERE NOT d.restored AND NOT pn.due
         UNION ALL
         SELECT format('%s profile %s of user %s is still there but has a role audit row',
                d.role, d.id, d.user_id)
         FROM fault_check.due_profile d JOIN pn ON pn.role = d.role AND pn.id = d.id
         WHERE EXISTS (SELECT 1 FROM an WHERE an.kind = 'role' AND an.user_id = d.user_id
                       AND an.role = d.role)",
    ),
    (
        "nothing that was not due, or was restored, is deleted",
        "SELECT format('%s profile %s of user %s was not due but was deleted',
                k.role, k.id, k.user_id)
         FROM fault_check.kept_profile k
         WHERE NOT EXISTS (SELECT 1 FROM pn WHERE pn.role = k.role AND pn.id = k.id)
         UNION ALL
         SELECT format('%s profile %s of user %s was restored during the run but was deleted',
                d.role, d.id, d.user_id)
         FROM fault_check.due_profile d
         WHERE d.restored AND NOT EXISTS (SELECT 1 FROM pn WHERE pn.role = d.role
                                          AND pn.id = d.id)
         UNION ALL
         SELECT format('user %s was not due but was deleted', k.id)
         FROM fault_check.kept_user k WHERE NOT EXISTS (SELECT 1 FROM un WHERE un.id = k.id)
         UNION ALL
         SELECT format('user %s was restored during the run but was deleted', d.id)
         FROM fault_check.due_user d
         WHERE d.restored AND NOT EXISTS (SELECT 1 FROM un WHERE un.id = d.id)",
    ),
    (
        "a due account deleted has exactly one account audit row",
        "SELECT format('user %s was deleted with %s account audit rows (want 1)', d.id, n)
         FROM (SELECT d.*, (SELECT count(*) FROM an WHERE an.kind = 'account'
                            AND an.user_id = d.id) AS n
               FROM fault_check.due_user d) d
         WHERE NOT EXISTS (SELECT 1 FROM un WHERE un.id = d.id) AND n <> 1",
    ),
    (
        "a due account still there is still due (or was restored) and has no audit row",
        "SELECT format('user %s is still there but no longer due, and was not restored', d.id)
         FROM fault_check.due_user d JOIN un ON un.id = d.id
         WHERE NOT d.restored AND NOT un.due
         UNION ALL
         SELECT format('user %s is still there but has an account audit row', d.id)
         FROM fault_check.due_user d JOIN un ON un.id = d.id
         WHERE EXISTS (SELECT 1 FROM an WHERE an.kind = 'account' AND an.user_id = d.id)",
    ),
    (
        "no audit row without its deletion",
        "SELECT format('role audit row (user %s, role %s) without a deleted due profile',
                an.user_id, an.role)
         FROM an WHERE an.kind = 'role' AND NOT EXISTS (
           SELECT 1 FROM fault_check.due_profile d
           WHERE d.user_id = an.user_id AND d.role = an.role
             AND NOT EXISTS (SELECT 1 FROM pn WHERE pn.role = d.role AND pn.id = d.id))
         UNION ALL
         SELECT format('account audit row for user %s, which was not a deleted due account',
                an.user_id)
         FROM an WHERE an.kind = 'account'
           AND (EXISTS (SELECT 1 FROM un WHERE un.id = an.user_id)
                OR NOT EXISTS (SELECT 1 FROM fault_check.due_user d WHERE d.id = an.user_id))
         UNION ALL
         SELECT format('audit row of unexpected type %s', an.kind)
         FROM an WHERE an.kind IS DISTINCT FROM 'role' AND an.kind IS DISTINCT FROM 'account'",
    ),
    (
        "no request marked completed whose deletion did not happen; requests not due untouched",
        "SELECT format('role request %s (user %s, role %s) is completed but the profile is \
                        still there or its deletion has %s audit rows', r.id, r.user_id, r.role,
                (SELECT count(*) FROM an WHERE an.kind = 'role' AND an.user_id = r.user_id
                 AND an.role = r.role))
         FROM public.account_deletion_requests r
         JOIN fault_check.request_before b ON b.id = r.id
         WHERE r.status = 'completed' AND b.status <> 'completed' AND r.delete_user = FALSE
           AND (EXISTS (SELECT 1 FROM pn WHERE pn.user_id = r.user_id AND pn.role = r.role
                        AND (r.profile_id IS NULL OR pn.id = r.profile_id))
                OR (SELECT count(*) FROM an WHERE an.kind = 'role' AND an.user_id = r.user_id
                    AND an.role = r.role) <> 1)
         UNION ALL
         SELECT format('account request %s is completed but user %s still exists',
                r.id, r.user_id)
         FROM public.account_deletion_requests r
         JOIN fault_check.request_before b ON b.id = r.id
         WHERE r.status = 'completed' AND b.status <> 'completed'
           AND r.delete_user IS NOT FALSE
           AND EXISTS (SELECT 1 FROM un WHERE un.id = r.user_id)
         UNION ALL
         SELECT format('request %s was not due (status %s) but is now %s', r.id, b.status,
                r.status)
         FROM public.account_deletion_requests r
         JOIN fault_check.request_before b ON b.id = r.id
         WHERE NOT b.due AND r.status IS DISTINCT FROM b.status
         UNION ALL
         SELECT format('request %s (not due) vanished while user %s exists', b.id, b.user_id)
         FROM fault_check.request_before b
         WHERE NOT b.due
           AND NOT EXISTS (SELECT 1 FROM public.account_deletion_requests r WHERE r.id = b.id)
           AND EXISTS (SELECT 1 FROM un WHERE un.id = b.user_id)",
    ),
    (
        "nothing half done: a role leaves users.roles only with its profile",
        "SELECT format('user %s lost role %s from users.roles but its profile %s is still there',
                pn.user_id, pn.role, pn.id)
         FROM pn JOIN un ON un.id = pn.user_id
         WHERE EXISTS (SELECT 1 FROM fault_check.roles_before b
                       WHERE b.user_id = pn.user_id AND b.role = pn.role)
           AND NOT (pn.role = ANY (un.roles))",
    ),
];

/// With the production traits (when `fault_check.dependents_before` exists): the plan's own
/// deletions touch no row of a user or tutor profile that stays.
const DEPENDENT_CHECKS: &[(&str, &str)] = &[(
    "rows behind keys that do not cascade are only deleted with their owner",
    concat!(
        "WITH now AS (",
        dependents!(),
        ")
     SELECT format('%s of %s %s: %s rows before, %s now, but the owner is still there',
            b.tab, CASE WHEN b.tab = 'video_chapters' THEN 'tutor profile' ELSE 'user' END,
            b.owner, b.n, coalesce(now.n, 0))
     FROM fault_check.dependents_before b
     LEFT JOIN now ON now.tab = b.tab AND now.owner = b.owner
     WHERE coalesce(now.n, 0) <> b.n
       AND CASE WHEN b.tab = 'video_chapters'
                THEN EXISTS (SELECT 1 FROM pn WHERE pn.role = 'tutor' AND pn.id = b.owner)
                ELSE EXISTS (SELECT 1 FROM un WHERE un.id = b.owner) END"
    ),
)];

/// Only after the rerun: the work is finished.
const FINAL_CHECKS: &[(&str, &str)] = &[(
    "the rerun finished the work: nothing due is left",
    "SELECT format('%s profile %s of user %s is still due', pn.role, pn.id, pn.user_id)
     FROM pn WHERE pn.due
     UNION ALL
     SELECT format('user %s is still due', un.id) FROM un WHERE un.due
     UNION ALL
     SELECT format('request %s of user %s is still pending and due', r.id, r.user_id)
     FROM public.account_deletion_requests r
     WHERE r.status = 'pending' AND r.scheduled_deletion_at <= now()",
)];

/// Runs every invariant; returns the violations, each prefixed with its invariant.
pub fn check(db: &Db, phase: Phase) -> Vec<String> {
    let mut client = db.client();
    check_with(&mut client, phase)
}

pub fn check_with(client: &mut Client, phase: Phase) -> Vec<String> {
    let mut transaction = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .expect("begin check");
    let violations = check_in(&mut transaction, phase);
    transaction.commit().expect("end check");
    violations
}

/// Runs every invariant inside `outer` (in a savepoint it rolls back), so a test can check a
/// state it never commits.
pub fn check_in(outer: &mut Transaction, phase: Phase) -> Vec<String> {
    let mut transaction = outer.transaction().expect("savepoint");
    let audit_exists: bool = transaction
        .query_one(
            "SELECT to_regclass('public.deletion_audit_log') IS NOT NULL",
            &[],
        )
        .expect("to_regclass")
        .get(0);
    let audit = if audit_exists {
        "SELECT deletion_type::text AS kind, user_id::bigint AS user_id, role_name::text AS role \
         FROM public.deletion_audit_log"
    } else {
        "SELECT NULL::text AS kind, NULL::bigint AS user_id, NULL::text AS role WHERE FALSE"
    };
    transaction
        .batch_execute(&format!(
            "CREATE TEMP TABLE pn AS SELECT * FROM fault_check.profile_now;
             CREATE INDEX ON pn (role, id); CREATE INDEX ON pn (user_id, role);
             CREATE TEMP TABLE un AS SELECT * FROM fault_check.user_now;
             CREATE INDEX ON un (id);
             CREATE TEMP TABLE an AS {audit};
             CREATE INDEX ON an (user_id, kind, role);
             ANALYZE pn, un, an;"
        ))
        .expect("materialize the current state");
    let mut violations = Vec::new();
    let finals: &[(&str, &str)] = if phase == Phase::Final {
        FINAL_CHECKS
    } else {
        &[]
    };
    let with_plan: bool = transaction
        .query_one(
            "SELECT to_regclass('fault_check.dependents_before') IS NOT NULL",
            &[],
        )
        .expect("to_regclass")
        .get(0);
    let dependents: &[(&str, &str)] = if with_plan { DEPENDENT_CHECKS } else { &[] };
    for (name, sql) in CHECKS.iter().chain(finals).chain(dependents) {
        let rows = transaction
            .query(*sql, &[])
            .unwrap_or_else(|e| panic!("invariant query {name:?} failed: {e:?}"));
        for row in rows {
            let text: String = row.get(0);
            violations.push(format!("[{name}] {text}"));
        }
    }
    // Drops the temporary tables.
    transaction.rollback().expect("rollback savepoint");
    violations
}
