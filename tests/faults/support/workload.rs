//! A large, seeded Astegni database: thousands of users with profiles in every state, role-only
//! and whole-account requests (due, later, cancelled, completed), child rows that cascade, in
//! a schema variant picked by the seed.
//!
//! The schema is the one fixture of every test database (`tests/fixtures/astegni.sql`, through
//! [`astegni::schema_sql`]), in the [`Variant`] the seed picks. Ids are explicit, so the same
//! seed gives the same data. Every user has at most one profile per role, so "the role audit
//! row of (user, role)" is well defined.

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::Rng;
use super::cluster::PrivateCluster;
use crate::common::TestDb;
use crate::common::astegni::{self, Variant};

pub use crate::common::astegni::ROLES;

/// A database on the shared test server (dropped with it) or on a private cluster.
pub struct Db {
    pub url: String,
    pub name: String,
    _shared: Option<TestDb>,
}

impl Db {
    /// A fresh database on the shared test server.
    pub fn shared(prefix: &str) -> Db {
        let db = TestDb::create(prefix);
        Db {
            url: db.url.clone(),
            name: db.name.clone(),
            _shared: Some(db),
        }
    }

    /// A fresh database on a private cluster (dropped with the cluster).
    pub fn private(cluster: &PrivateCluster, name: &str) -> Db {
        Db {
            url: cluster.create_db(name),
            name: name.to_owned(),
            _shared: None,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name))
    }

    pub fn exec(&self, sql: &str) {
        if let Err(e) = self.client().batch_execute(sql) {
            let text = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.to_string());
            let head: String = sql.chars().take(400).collect();
            panic!("SQL failed in {}: {text}\n--- SQL ---\n{head}", self.name);
        }
    }

    pub fn scalar(&self, sql: &str) -> i64 {
        self.client()
            .query_one(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

/// The fault suite's side of the fixture's schema variants.
impl Variant {
    /// The variant a seed picks: a `roles` type, an id type and a schedule type the job must
    /// handle, and the audit table there already three times in four.
    pub fn random(rng: &mut Rng) -> Variant {
        Variant {
            roles_type: ["json", "jsonb", "text[]", "varchar(50)[]"][rng.below(4) as usize],
            id_type: ["integer", "bigint"][rng.below(2) as usize],
            schedule_type: ["timestamp", "timestamptz"][rng.below(2) as usize],
            audit_table: rng.percent(75),
            ..Variant::default()
        }
    }

    /// `users.roles` of alias `u` as text[] (empty for NULL or a non-array).
    pub fn roles_as_array(&self) -> &'static str {
        match self.roles_type {
            "json" => {
                "CASE WHEN json_typeof(u.roles) = 'array' \
                 THEN ARRAY(SELECT json_array_elements_text(u.roles)) ELSE '{}'::text[] END"
            }
            "jsonb" => {
                "CASE WHEN jsonb_typeof(u.roles) = 'array' \
                 THEN ARRAY(SELECT jsonb_array_elements_text(u.roles)) ELSE '{}'::text[] END"
            }
            _ => "coalesce(u.roles::text[], '{}'::text[])",
        }
    }

    fn roles_literal(&self, roles: &[&str]) -> String {
        if self.roles_type.starts_with("json") {
            let items: Vec<String> = roles.iter().map(|role| format!("\"{role}\"")).collect();
            format!("'[{}]'", items.join(","))
        } else {
            format!("'{{{}}}'", roles.join(","))
        }
    }
}

/// A past moment (due) or a future one (not due), as SQL.
fn past(rng: &mut Rng) -> String {
    format!(
        "now() - interval '{} minutes'",
        rng.between(5, 200 * 24 * 60)
    )
}

fn future(rng: &mut Rng) -> String {
    format!(
        "now() + interval '{} minutes'",
        rng.between(60, 89 * 24 * 60)
    )
}

/// Rows of one table, flushed as multi-row INSERTs.
struct Inserts {
    head: String,
    rows: Vec<String>,
    sql: String,
}

impl Inserts {
    fn new(head: &str) -> Inserts {
        Inserts {
            head: head.to_owned(),
            rows: Vec::new(),
            sql: String::new(),
        }
    }

    fn push(&mut self, row: String) {
        self.rows.push(row);
        if self.rows.len() == 1000 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.rows.is_empty() {
            self.sql.push_str(&format!(
                "INSERT INTO {} VALUES\n{};\n",
                self.head,
                self.rows.join(",\n")
            ));
            self.rows.clear();
        }
    }

    fn finish(mut self) -> String {
        self.flush();
        self.sql
    }
}

/// What the generator made, for tests that want to pick rows.
#[derive(Default, Debug)]
pub struct Census {
    pub users: usize,
    pub profiles: usize,
    pub requests: usize,
}

/// A seeded Astegni database.
pub struct Workload {
    pub db: Db,
    pub shape: Variant,
    pub seed: u64,
    pub census: Census,
    /// Whether it has the production traits (keys that do not cascade, at depth 1 and 2,
    /// with rows behind them) and the job runs with `--foreign-keys delete`.
    pub plan: bool,
}

impl Workload {
    /// The flags the job needs on this workload besides the suite's.
    pub fn job_flags(&self) -> &'static [&'static str] {
        if self.plan {
            &["--foreign-keys", "delete"]
        } else {
            &[]
        }
    }
}

/// Creates the schema in `db` and fills it with about `users` users, seeded by `seed`; half
/// the seeds add the production traits (see [`add_production_traits`]).
pub fn build(db: Db, seed: u64, users: usize) -> Workload {
    let mut rng = Rng::new(seed);
    let shape = Variant::random(&mut rng);
    let plan = rng.percent(50);
    let mut workload = build_with(db, seed, users, shape);
    if plan {
        add_production_traits(&workload.db, seed);
        workload.plan = true;
    }
    workload
}

/// Foreign keys that do not cascade, as in production, with rows behind them: the tutor and
/// student profiles' `user_id` becomes NO ACTION; users get refresh tokens (NO ACTION, no
/// index) and playlists (NO ACTION) with videos (NO ACTION, one level down); tutor profiles
/// get reels (CASCADE) with chapters (NO ACTION, one level down). Deterministic per seed.
pub fn add_production_traits(db: &Db, seed: u64) {
    let salt = (seed % 1_000_000) as i64;
    db.exec(&format!(
        "ALTER TABLE tutor_profiles DROP CONSTRAINT tutor_profiles_user_id_fkey,
             ADD CONSTRAINT tutor_profiles_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id);
         ALTER TABLE student_profiles DROP CONSTRAINT student_profiles_user_id_fkey,
             ADD CONSTRAINT student_profiles_user_id_fkey FOREIGN KEY (user_id)
             REFERENCES users (id);
         CREATE TABLE refresh_tokens (id serial PRIMARY KEY,
             user_id bigint NOT NULL REFERENCES users (id), token text);
         CREATE TABLE playlists (id serial PRIMARY KEY,
             user_id bigint NOT NULL REFERENCES users (id), title text);
         CREATE INDEX ON playlists (user_id);
         CREATE TABLE playlist_videos (id serial PRIMARY KEY,
             playlist_id integer NOT NULL REFERENCES playlists (id), url text);
         CREATE INDEX ON playlist_videos (playlist_id);
         CREATE TABLE video_reels (id serial PRIMARY KEY,
             tutor_profile_id integer NOT NULL REFERENCES tutor_profiles (id) ON DELETE CASCADE);
         CREATE INDEX ON video_reels (tutor_profile_id);
         CREATE TABLE video_chapters (id serial PRIMARY KEY,
             reel_id integer NOT NULL REFERENCES video_reels (id), title text);
         CREATE INDEX ON video_chapters (reel_id);
         INSERT INTO refresh_tokens (user_id, token)
             SELECT id, 't' || id FROM users WHERE (id * 7 + {salt}) % 10 < 4;
         WITH p AS (INSERT INTO playlists (user_id, title)
                    SELECT id, 'p' || id FROM users WHERE (id * 3 + {salt}) % 10 < 2 RETURNING id)
         INSERT INTO playlist_videos (playlist_id, url)
             SELECT id, 'v' || n FROM p, generate_series(1, 2) n;
         WITH r AS (INSERT INTO video_reels (tutor_profile_id)
                    SELECT id FROM tutor_profiles WHERE (id + {salt}) % 2 = 0 RETURNING id)
         INSERT INTO video_chapters (reel_id, title) SELECT id, 'c' || n FROM r,
             generate_series(1, 2) n;
         ANALYZE;"
    ));
}

/// Like [`build`] with a given shape.
pub fn build_with(db: Db, seed: u64, users: usize, shape: Variant) -> Workload {
    let mut rng = Rng::new(seed ^ 0x5eed_da7a);
    db.exec(&astegni::schema_sql(&shape));
    let mut user_rows = Inserts::new(
        "users (id, email, first_name, roles, active_role, is_active, account_status, \
         deactivated_at, scheduled_deletion_at)",
    );
    let mut profile_rows: Vec<Inserts> = ROLES
        .iter()
        .map(|role| {
            Inserts::new(&format!(
                "{role}_profiles (id, user_id, is_active, scheduled_deletion_at, bio)"
            ))
        })
        .collect();
    let mut next_profile = [1i64; 5];
    let mut request_rows = Inserts::new(
        "account_deletion_requests (id, user_id, status, reasons, requested_at, \
         scheduled_deletion_at, cancelled_at, completed_at, role, profile_id, delete_user)",
    );
    let mut next_request = 1i64;
    let mut session_rows = Inserts::new("user_sessions (user_id, token)");
    let mut notification_rows = Inserts::new("notifications (user_id, body)");
    let mut review_rows = Inserts::new("tutor_reviews (tutor_profile_id, rating)");
    let mut census = Census::default();

    let mut request = |rows: &mut Inserts,
                       user: i64,
                       status: &str,
                       when: String,
                       role: Option<(&str, Option<i64>)>| {
        let id = next_request;
        next_request += 1;
        let (cancelled, completed) = match status {
            "cancelled" => ("now() - interval '1 day'", "NULL"),
            "completed" => ("NULL", "now() - interval '1 day'"),
            _ => ("NULL", "NULL"),
        };
        let (role, profile, delete_user) = match role {
            Some((role, profile)) => (
                format!("'{role}'"),
                profile.map_or("NULL".to_owned(), |id| id.to_string()),
                "FALSE",
            ),
            None => ("NULL".to_owned(), "NULL".to_owned(), "TRUE"),
        };
        rows.push(format!(
            "({id}, {user}, '{status}', '[\"other\"]', now() - interval '100 days', {when}, \
             {cancelled}, {completed}, {role}, {profile}, {delete_user})"
        ));
    };

    for user in 1..=users as i64 {
        census.users += 1;
        // The user's roles: always "user", then some of the others.
        let mut roles: Vec<&str> = vec!["user"];
        for role in ["student", "tutor", "parent", "advertiser"] {
            if rng.percent(45) {
                roles.push(role);
            }
        }
        let roles_null = rng.percent(2);
        let active_role = *rng.pick(&roles);
        // The account: 70 % normal, 12 % left and due, 5 % left for later, 8 % a due request,
        // 5 % a request for later.
        let kind = rng.below(100);
        let (status, schedule) = match kind {
            0..=11 => ("pending_deletion", past(&mut rng)),
            12..=16 => ("pending_deletion", future(&mut rng)),
            _ => ("active", "NULL".to_owned()),
        };
        user_rows.push(format!(
            "({user}, 'u{user}@example.com', 'Abebe', {}, '{active_role}', {}, '{status}', {}, \
             {schedule})",
            if roles_null {
                "NULL".to_owned()
            } else {
                shape.roles_literal(&roles)
            },
            if status == "active" { "TRUE" } else { "FALSE" },
            if status == "active" {
                "NULL"
            } else {
                "now() - interval '91 days'"
            },
        ));
        match kind {
            17..=24 => {
                let when = past(&mut rng);
                request(&mut request_rows, user, "pending", when, None);
            }
            25..=29 => {
                let when = future(&mut rng);
                request(&mut request_rows, user, "pending", when, None);
            }
            _ => {}
        }
        if kind < 6 && rng.percent(30) {
            // Left and also asked through the request table.
            let when = past(&mut rng);
            request(&mut request_rows, user, "pending", when, None);
        }
        if rng.percent(6) {
            // History that must not count: a cancelled and a completed request in the past.
            let when = past(&mut rng);
            let status = if rng.percent(50) {
                "cancelled"
            } else {
                "completed"
            };
            request(&mut request_rows, user, status, when, None);
        }
        // Profiles: one per role the user has (the basic "user" role only sometimes).
        for &role in &roles {
            if role == "user" && !rng.percent(30) {
                continue;
            }
            let table = ROLES.iter().position(|known| *known == role).expect("role");
            let id = next_profile[table];
            next_profile[table] += 1;
            census.profiles += 1;
            let state = rng.below(100);
            let (active, schedule) = match state {
                // Due by itself ("Manage Role").
                0..=29 => ("FALSE", past(&mut rng)),
                // Due by itself and by a role-only request.
                30..=34 => ("FALSE", past(&mut rng)),
                // Scheduled for later.
                35..=42 => ("FALSE", future(&mut rng)),
                _ => ("TRUE", "NULL".to_owned()),
            };
            profile_rows[table].push(format!("({id}, {user}, {active}, {schedule}, 'bio')"));
            let named = if rng.percent(50) { Some(id) } else { None };
            let role_request = match state {
                // Due by a role-only request.
                30..=34 | 43..=54 => Some(("pending", past(&mut rng))),
                // A role-only request for later.
                55..=58 => Some(("pending", future(&mut rng))),
                // A cancelled role-only request in the past.
                59..=60 => Some(("cancelled", past(&mut rng))),
                _ => None,
            };
            if let Some((status, when)) = role_request {
                request(&mut request_rows, user, status, when, Some((role, named)));
            }
            if role == "tutor" && rng.percent(40) {
                review_rows.push(format!("({id}, {})", rng.between(1, 5)));
            }
        }
        if rng.percent(30) {
            session_rows.push(format!("({user}, 'token-{user}')"));
        }
        if rng.percent(30) {
            notification_rows.push(format!("({user}, 'hello')"));
        }
    }
    census.requests = (next_request - 1) as usize;
    let mut sql = user_rows.finish();
    for rows in profile_rows {
        sql.push_str(&rows.finish());
    }
    sql.push_str(&request_rows.finish());
    sql.push_str(&session_rows.finish());
    sql.push_str(&notification_rows.finish());
    sql.push_str(&review_rows.finish());
    let mut tables = vec!["users", "account_deletion_requests"];
    let profile_tables: Vec<String> = ROLES
        .iter()
        .map(|role| format!("{role}_profiles"))
        .collect();
    tables.extend(profile_tables.iter().map(String::as_str));
    for table in tables {
        sql.push_str(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
             coalesce((SELECT max(id) FROM {table}), 0) + 1, false);\n"
        ));
    }
    sql.push_str("ANALYZE;\n");
    db.exec(&sql);
    Workload {
        db,
        shape,
        seed,
        census,
        plan: false,
    }
}

/// One SQL statement and its parameters.
type Statement<'a> = (&'a str, &'a [&'a (dyn ToSql + Sync)]);

/// The application restoring a role ("Manage Role" cancelled): reactivates the profile and
/// cancels the user's pending role-only requests for that role, in the order `rng` picks, and
/// records the restore in `fault_check` in the same transaction. Returns whether the profile
/// still existed (the restore committed); a profile the job already deleted is not restored.
pub fn restore_profile(client: &mut Client, rng: &mut Rng, role: &str, id: i64, user: i64) -> bool {
    let reactivate = format!(
        "UPDATE {role}_profiles SET is_active = TRUE, scheduled_deletion_at = NULL \
         WHERE id = $1::bigint"
    );
    let cancel = "UPDATE account_deletion_requests SET status = 'cancelled', \
                  cancelled_at = now() WHERE user_id = $1::bigint AND role = $2::text \
                  AND delete_user = FALSE AND status = 'pending' \
                  AND scheduled_deletion_at <= now()";
    let record = "UPDATE fault_check.due_profile SET restored = TRUE \
                  WHERE role = $1::text AND id = $2::bigint";
    restore(
        client,
        rng,
        (&reactivate, &[&id]),
        (cancel, &[&user, &role]),
        (record, &[&role, &id]),
    )
}

/// The application restoring an account (a login during the grace period): cancels the pending
/// whole-account requests and reactivates the user, in the order `rng` picks, and records the
/// restore in `fault_check`. Returns whether the user still existed (the restore committed).
pub fn restore_user(client: &mut Client, rng: &mut Rng, user: i64) -> bool {
    let reactivate = "UPDATE users SET account_status = 'active', is_active = TRUE, \
                      scheduled_deletion_at = NULL, deactivated_at = NULL WHERE id = $1::bigint";
    let cancel = "UPDATE account_deletion_requests SET status = 'cancelled', \
                  cancelled_at = now(), cancelled_by_login = TRUE WHERE user_id = $1::bigint \
                  AND delete_user IS NOT FALSE AND status = 'pending' \
                  AND scheduled_deletion_at <= now()";
    let record = "UPDATE fault_check.due_user SET restored = TRUE WHERE id = $1::bigint";
    restore(
        client,
        rng,
        (reactivate, &[&user]),
        (cancel, &[&user]),
        (record, &[&user]),
    )
}

/// A restore in one transaction: `reactivate` and `cancel` in the order `rng` picks, then
/// `record`; committed only if `reactivate` found its row (else the job got there first).
fn restore(
    client: &mut Client,
    rng: &mut Rng,
    reactivate: Statement,
    cancel: Statement,
    record: Statement,
) -> bool {
    let Ok(mut transaction) = client.transaction() else {
        return false;
    };
    let cancel_first = rng.percent(50);
    let result = (|| -> Result<bool, postgres::Error> {
        if cancel_first {
            transaction.execute(cancel.0, cancel.1)?;
        }
        let found = transaction.execute(reactivate.0, reactivate.1)? == 1;
        if !cancel_first {
            transaction.execute(cancel.0, cancel.1)?;
        }
        transaction.execute(record.0, record.1)?;
        Ok(found)
    })();
    match result {
        Ok(true) => transaction.commit().is_ok(),
        _ => {
            let _ = transaction.rollback();
            false
        }
    }
}
