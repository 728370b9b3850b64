//! An Astegni-shaped database for the tests, in each schema variant the job must handle.
//!
//! The tables come from the one schema fixture, `tests/fixtures/astegni.sql` (also loaded by
//! the demo, the system test and the benchmark), written from the schema notes (README
//! "Schema expectations"), not from the job's code. [`schema_sql`] fills in its marked
//! values and sections for a [`Variant`]: a `roles` column of json, jsonb, text[] or
//! varchar[]; integer or bigint ids; naive or zoned timestamps; advertiser profiles or not;
//! `account_deletion_requests` absent or in its old or new shape; the audit table there
//! already or not. [`Astegni`] adds rows and reads them back.

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
    /// Whether `deletion_audit_log` exists before the job runs (else the job creates it).
    pub audit_table: bool,
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
            audit_table: false,
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

    /// An Astegni database whose one user, `leaver@example.com`, left a day past the grace
    /// period: a run deletes one account.
    pub fn with_one_due_account(prefix: &str) -> Astegni {
        let astegni = Astegni::new(prefix);
        let leaver = astegni.user("leaver@example.com", Some(&["user"]), "user");
        astegni.leave(leaver, -1);
        astegni
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
        self.tables_content(true)
            .into_iter()
            .map(|(table, rows)| format!("{table}: {rows}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every table's rows, without the columns that hold a time (when the scene was made,
    /// when the run ran) or the audit's serial id: two databases that went through the same
    /// deletions at different times compare equal.
    pub fn content_without_times(&self) -> std::collections::BTreeMap<String, String> {
        self.tables_content(false).into_iter().collect()
    }

    /// (table, its rows as text) per table of the public schema; see [`tables_content`].
    fn tables_content(&self, all_columns: bool) -> Vec<(String, String)> {
        tables_content(&mut self.db.client(), all_columns)
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

/// (table, its rows as text) per table of the public schema of `client`'s database;
/// `all_columns` false leaves out the time columns and the audit's id.
pub fn tables_content(client: &mut postgres::Client, all_columns: bool) -> Vec<(String, String)> {
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
        .into_iter()
        .map(|table| {
            let columns: Vec<String> = client
                .query(
                    "SELECT quote_ident(column_name::text) FROM information_schema.columns \
                     WHERE table_schema = 'public' AND table_name = $1 AND ($2 OR \
                     (data_type NOT LIKE 'timestamp%' AND NOT \
                     (table_name = 'deletion_audit_log' AND column_name = 'id'))) \
                     ORDER BY ordinal_position",
                    &[&table, &all_columns],
                )
                .expect("columns")
                .iter()
                .map(|row| row.get(0))
                .collect();
            let rows: Option<String> = client
                .query_one(
                    &format!(
                        "SELECT string_agg(r::text, '|' ORDER BY r::text) FROM \
                         (SELECT {} FROM \"{table}\") r",
                        columns.join(", ")
                    ),
                    &[],
                )
                .expect("table content")
                .get(0);
            (table, rows.unwrap_or_default())
        })
        .collect()
}

/// The schema fixture every test database is made from; its header lists the marked values
/// and sections that [`schema_sql`] fills in.
const FIXTURE: &str = include_str!("../fixtures/astegni.sql");

/// The fixture's DDL for `variant`. Values are checked before they go into the SQL (they name
/// types and actions, never data), and every marked value and section must be in the fixture,
/// so a fixture and a loader that drift apart fail here rather than in a test's assertions.
pub fn schema_sql(variant: &Variant) -> String {
    let id_serial = match variant.id_type {
        "integer" => "serial",
        "bigint" => "bigserial",
        other => panic!("id type {other:?}: integer or bigint"),
    };
    let on_delete = one_of(
        "requests_on_delete",
        variant.requests_on_delete,
        &["CASCADE", "SET NULL", "RESTRICT", "NO ACTION"],
    );
    let values = [
        ("id_serial", id_serial),
        ("id_type", variant.id_type),
        ("roles_type", type_name("roles_type", variant.roles_type)),
        (
            "schedule_type",
            one_of(
                "schedule_type",
                variant.schedule_type,
                &["timestamp", "timestamptz"],
            ),
        ),
        (
            "requests_user_not_null",
            if on_delete == "SET NULL" {
                ""
            } else {
                "NOT NULL"
            },
        ),
        ("requests_on_delete", on_delete),
    ];
    let sections = [
        ("advertiser", variant.with_advertiser),
        ("requests", variant.requests.is_some()),
        ("request_roles", variant.requests == Some(true)),
        ("audit_log", variant.audit_table),
    ];
    for (name, _) in values {
        let marker = format!("/*<{name}>*/");
        assert!(FIXTURE.contains(&marker), "fixture: no value {marker}");
    }
    fill_values(&keep_sections(FIXTURE, &sections), &values)
}

fn one_of<'a>(what: &str, value: &'a str, allowed: &[&str]) -> &'a str {
    assert!(
        allowed.contains(&value),
        "{what} {value:?}: one of {allowed:?}"
    );
    value
}

/// A type name such as `varchar(50)[]`: nothing that could end the column definition. Any
/// type passes, wrong ones too, since tests check that the job refuses them.
fn type_name<'a>(what: &str, value: &'a str) -> &'a str {
    assert!(
        !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "()[] ".contains(c)),
        "{what} {value:?}: not a type name"
    );
    value
}

/// Leaves out the lines between `-- <name>` and `-- </name>` of each section that is off
/// (the marker lines are SQL comments and stay).
fn keep_sections(sql: &str, sections: &[(&str, bool)]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut open: Vec<(&str, bool)> = Vec::new();
    let mut seen = Vec::new();
    for line in sql.lines() {
        let marker = line
            .trim()
            .strip_prefix("-- <")
            .and_then(|m| m.strip_suffix('>'));
        match marker {
            Some(name) if name.starts_with('/') => {
                let (opened, _) = open
                    .pop()
                    .unwrap_or_else(|| panic!("fixture: {line} unopened"));
                assert_eq!(&name[1..], opened, "fixture: {line} closes <{opened}>");
            }
            Some(name) => {
                let (_, on) = sections
                    .iter()
                    .find(|(known, _)| *known == name)
                    .unwrap_or_else(|| panic!("fixture: unknown section <{name}>"));
                open.push((name, *on));
                seen.push(name);
            }
            None => {}
        }
        if marker.is_some() || open.iter().all(|(_, on)| *on) {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(open.is_empty(), "fixture: section {open:?} not closed");
    for (name, _) in sections {
        assert!(seen.contains(name), "fixture: no section <{name}>");
    }
    out
}

/// Replaces each `/*<name>*/default/*</name>*/` (on one line, outside `--` comments) with the
/// value of `name`.
fn fill_values(sql: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(sql.len());
    for line in sql.lines() {
        let mut rest = line;
        if !line.trim_start().starts_with("--") {
            while let Some(start) = rest.find("/*<") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 3..];
                let name = after
                    .find(">*/")
                    .map(|end| &after[..end])
                    .unwrap_or_else(|| panic!("fixture: unterminated marker in {line:?}"));
                let close = format!("/*</{name}>*/");
                let value_end = after
                    .find(&close)
                    .unwrap_or_else(|| panic!("fixture: /*<{name}>*/ without {close}: {line:?}"));
                let (_, value) = values
                    .iter()
                    .find(|(known, _)| *known == name)
                    .unwrap_or_else(|| panic!("fixture: unknown value <{name}>"));
                out.push_str(value);
                rest = &after[value_end + close.len()..];
            }
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}
