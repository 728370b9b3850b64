//! An Astegni-shaped database for the tests, in each schema variant the job must handle.
//!
//! Written from the schema notes (README "Schema expectations"), not from the job's code: a
//! `users` table whose `roles` column is json, jsonb, text[] or varchar[]; five profile tables
//! (advertiser optional); child tables hanging off profiles and users with ON DELETE CASCADE;
//! `account_deletion_requests` in its old or new shape.

use super::TestDb;

/// Which variant of the schema to create.
#[derive(Clone, Debug)]
pub struct Variant {
    /// `json`, `jsonb`, `text[]` or `varchar(50)[]`.
    pub roles_type: &'static str,
    /// `integer` or `bigint`.
    pub id_type: &'static str,
    /// `timestamp` or `timestamptz`.
    pub schedule_type: &'static str,
    pub with_advertiser: bool,
    /// `None`: no requests table; `Some(false)`: old shape; `Some(true)`: with role,
    /// profile_id and delete_user.
    pub requests: Option<bool>,
    /// `ON DELETE` action of account_deletion_requests.user_id.
    pub requests_on_delete: &'static str,
}

impl Default for Variant {
    fn default() -> Variant {
        Variant {
            roles_type: "json",
            id_type: "integer",
            schedule_type: "timestamp",
            with_advertiser: true,
            requests: Some(true),
            requests_on_delete: "CASCADE",
        }
    }
}

pub const ROLES: [&str; 5] = ["student", "tutor", "parent", "advertiser", "user"];

/// The database with its variant, and helpers to fill and inspect it.
pub struct Astegni {
    pub db: TestDb,
    pub variant: Variant,
}

impl Astegni {
    pub fn create(prefix: &str, variant: Variant) -> Astegni {
        let db = TestDb::create(prefix);
        db.exec(&schema_sql(&variant));
        Astegni { db, variant }
    }

    pub fn new(prefix: &str) -> Astegni {
        Astegni::create(prefix, Variant::default())
    }

    fn roles_literal(&self, roles: Option<&[&str]>) -> String {
        let Some(roles) = roles else {
            return "NULL".to_owned();
        };
        if self.variant.roles_type.starts_with("json") {
            let items: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
            format!("'[{}]'::{}", items.join(","), self.variant.roles_type)
        } else {
            let items: Vec<String> = roles.iter().map(|r| format!("'{r}'")).collect();
            format!("ARRAY[{}]::{}", items.join(","), self.variant.roles_type)
        }
    }

    /// Adds an active user; returns its id.
    pub fn user(&self, email: &str, roles: Option<&[&str]>, active_role: &str) -> i64 {
        let email = if email.is_empty() {
            "NULL".to_owned()
        } else {
            format!("'{email}'")
        };
        self.db.scalar_i64(&format!(
            "INSERT INTO users (email, first_name, roles, active_role, is_active, account_status) \
             VALUES ({email}, 'Abebe', {}, '{active_role}', TRUE, 'active') RETURNING id::bigint",
            self.roles_literal(roles)
        ))
    }

    /// Adds a profile for `role`; `due_in_days` None keeps it active, Some(d) schedules its
    /// deletion d days from now (negative: in the past). Returns the profile id.
    pub fn profile(&self, role: &str, user: i64, due_in_days: Option<i64>) -> i64 {
        let (active, scheduled) = match due_in_days {
            None => ("TRUE".to_owned(), "NULL".to_owned()),
            Some(days) => (
                "FALSE".to_owned(),
                format!("now() + interval '{days} days'"),
            ),
        };
        self.db.scalar_i64(&format!(
            "INSERT INTO {role}_profiles (user_id, is_active, scheduled_deletion_at) \
             VALUES ({user}, {active}, {scheduled}) RETURNING id::bigint"
        ))
    }

    /// Schedules the account for deletion ("Leave Astegni") `days` from now.
    pub fn leave(&self, user: i64, days: i64) {
        self.db.exec(&format!(
            "UPDATE users SET account_status = 'pending_deletion', is_active = FALSE, \
             deactivated_at = now(), scheduled_deletion_at = now() + interval '{days} days' \
             WHERE id = {user}"
        ));
    }

    /// Adds a pending request `days` from now; `role` Some makes it a role-only request.
    pub fn request(&self, user: i64, days: i64, role: Option<&str>) -> i64 {
        let extra = match (self.variant.requests, role) {
            (Some(true), Some(role)) => format!(", '{role}', NULL, FALSE"),
            (Some(true), None) => ", NULL, NULL, TRUE".to_owned(),
            _ => String::new(),
        };
        let columns = if self.variant.requests == Some(true) {
            ", role, profile_id, delete_user"
        } else {
            ""
        };
        self.db.scalar_i64(&format!(
            "INSERT INTO account_deletion_requests (user_id, status, reasons, requested_at, \
             scheduled_deletion_at{columns}) VALUES ({user}, 'pending', '[\"other\"]', now(), \
             now() + interval '{days} days'{extra}) RETURNING id::bigint"
        ))
    }

    /// Adds child rows that cascade from the user and from a profile.
    pub fn children(&self, user: i64, tutor_profile: Option<i64>) {
        self.db.exec(&format!(
            "INSERT INTO user_sessions (user_id, token) VALUES ({user}, 'tok'); \
             INSERT INTO notifications (user_id, body) VALUES ({user}, 'hi');"
        ));
        if let Some(profile) = tutor_profile {
            self.db.exec(&format!(
                "INSERT INTO tutor_reviews (tutor_profile_id, rating) VALUES ({profile}, 5)"
            ));
        }
    }

    /// The user's roles as strings, whatever the column type; None for NULL.
    pub fn roles_of(&self, user: i64) -> Option<Vec<String>> {
        let row = self
            .db
            .client()
            .query_one(
                &format!("SELECT roles::text, active_role FROM users WHERE id = {user}"),
                &[],
            )
            .expect("user exists");
        let text: Option<String> = row.get(0);
        text.map(|text| {
            text.trim_matches(|c| matches!(c, '[' | ']' | '{' | '}'))
                .split(',')
                .map(|item| item.trim().trim_matches('"').to_owned())
                .filter(|item| !item.is_empty())
                .collect()
        })
    }

    pub fn active_role(&self, user: i64) -> String {
        self.db
            .client()
            .query_one(
                &format!("SELECT active_role FROM users WHERE id = {user}"),
                &[],
            )
            .expect("user exists")
            .get(0)
    }

    pub fn exists(&self, table: &str, id: i64) -> bool {
        self.db
            .scalar_i64(&format!("SELECT count(*) FROM {table} WHERE id = {id}"))
            == 1
    }

    pub fn count(&self, table: &str) -> i64 {
        self.db.scalar_i64(&format!("SELECT count(*) FROM {table}"))
    }

    /// Audit rows as (type, user id, email, role), sorted.
    pub fn audit(&self) -> Vec<(String, i64, Option<String>, Option<String>)> {
        self.db
            .client()
            .query(
                "SELECT deletion_type::text, user_id::bigint, user_email::text, role_name::text \
                 FROM deletion_audit_log ORDER BY 1, 2, 4",
                &[],
            )
            .expect("audit table")
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect()
    }

    /// A fingerprint of every table's content, to prove that nothing changed.
    pub fn snapshot(&self) -> String {
        let mut client = self.db.client();
        let tables: Vec<String> = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
                &[],
            )
            .expect("tables")
            .iter()
            .map(|row| row.get(0))
            .collect();
        tables
            .iter()
            .map(|table| {
                let content: Option<String> = client
                    .query_one(
                        &format!(
                            "SELECT string_agg(t::text, '|' ORDER BY t::text) FROM \"{table}\" t"
                        ),
                        &[],
                    )
                    .expect("table content")
                    .get(0);
                format!("{table}: {}", content.unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the job against this database with extra arguments.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.db_run_with_env(args, &[])
    }

    /// Runs the job against this database with extra arguments and environment.
    pub fn db_run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut all = vec!["--database-url", &self.db.url, "--connect-timeout", "5"];
        all.extend_from_slice(args);
        super::run_job(&all, env)
    }
}

fn schema_sql(variant: &Variant) -> String {
    let id = if variant.id_type == "bigint" {
        "bigserial"
    } else {
        "serial"
    };
    let fk = variant.id_type;
    let ts = variant.schedule_type;
    let mut sql = format!(
        "CREATE TABLE users (
            id {id} PRIMARY KEY,
            email varchar(255) UNIQUE,
            first_name varchar(100),
            father_name varchar(100),
            roles {roles},
            active_role varchar(50),
            is_active boolean DEFAULT TRUE,
            account_status varchar(30) DEFAULT 'active',
            deactivated_at timestamp,
            scheduled_deletion_at {ts}
        );
        CREATE TABLE user_sessions (id serial PRIMARY KEY,
            user_id {fk} NOT NULL REFERENCES users(id) ON DELETE CASCADE, token text);
        CREATE INDEX ON user_sessions (user_id);
        CREATE TABLE notifications (id serial PRIMARY KEY,
            user_id {fk} NOT NULL REFERENCES users(id) ON DELETE CASCADE, body text);
        CREATE INDEX ON notifications (user_id);
        ",
        roles = variant.roles_type
    );
    for role in ROLES {
        if role == "advertiser" && !variant.with_advertiser {
            continue;
        }
        sql.push_str(&format!(
            "CREATE TABLE {role}_profiles (id serial PRIMARY KEY,
                user_id {fk} REFERENCES users(id) ON DELETE CASCADE,
                is_active boolean DEFAULT TRUE, scheduled_deletion_at timestamp,
                bio text);
             CREATE INDEX ON {role}_profiles (user_id);
            "
        ));
    }
    sql.push_str(
        "CREATE TABLE tutor_reviews (id serial PRIMARY KEY,
            tutor_profile_id integer NOT NULL REFERENCES tutor_profiles(id) ON DELETE CASCADE,
            rating integer);
         CREATE INDEX ON tutor_reviews (tutor_profile_id);
        ",
    );
    if let Some(per_role) = variant.requests {
        let on_delete = variant.requests_on_delete;
        let nullable = if on_delete == "SET NULL" {
            ""
        } else {
            "NOT NULL"
        };
        let extra = if per_role {
            ", role varchar(50), profile_id integer, delete_user boolean DEFAULT TRUE"
        } else {
            ""
        };
        sql.push_str(&format!(
            "CREATE TABLE account_deletion_requests (id serial PRIMARY KEY,
                user_id {fk} {nullable} REFERENCES users(id) ON DELETE {on_delete},
                status varchar(20) DEFAULT 'pending', reasons json, other_reason text,
                deletion_fee numeric(10,2), requested_at timestamp DEFAULT now(),
                scheduled_deletion_at {ts}, ip_address varchar(45), user_agent text,
                cancelled_at timestamp, cancelled_by_login boolean,
                cancellation_reason text, completed_at timestamp{extra});
             CREATE INDEX ON account_deletion_requests (user_id);
            "
        ));
    }
    sql
}
