//! What the tests use: [`TestDb`] (a fresh, empty database), [`TestRole`] (a
//! login role with a password), [`run_job`] (the binary under test, with a
//! timeout) and quoting helpers.
//!
//! Databases made by [`TestDb::create`] are dropped `WITH (FORCE)` when the
//! `TestDb` is dropped; roles made by [`TestRole::create`] likewise.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::cluster::{PLAIN_ONLY_GROUP, TLS_ONLY_GROUP};
use super::server::{admin_client, admin_url, server, tcp_host, tcp_port};

/// [`run_job`] kills the binary after this long, so a hang fails instead of
/// blocking the whole test run.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// A fresh, empty database on the shared test server; dropped on `Drop`.
pub struct TestDb {
    pub name: String,
    /// libpq-style conninfo (or URL, for an external URL-style server) usable
    /// as the binary's `--database-url`.
    pub url: String,
}

static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// Creates a fresh, empty database with a unique name (prefix + counter +
    /// pid) on the shared server.
    pub fn create(prefix: &str) -> TestDb {
        let name = unique_name(prefix, &DB_COUNTER);
        let mut admin = admin_client();
        // A stale database of that name can only come from an earlier run
        // with the same pid that was killed before cleaning up.
        let drop_sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        admin
            .batch_execute(&drop_sql)
            .unwrap_or_else(|e| panic!("{drop_sql}: {}", describe_error(&e)));
        // Separate statement: CREATE DATABASE can't run in the implicit
        // transaction of a multi-statement batch. template0 = really empty.
        let create_sql = format!("CREATE DATABASE \"{name}\" TEMPLATE template0");
        admin
            .batch_execute(&create_sql)
            .unwrap_or_else(|e| panic!("{create_sql}: {}", describe_error(&e)));
        let url = server().url_for_db(&name);
        TestDb { name, url }
    }

    /// New connection to this database.
    pub fn client(&self) -> Client {
        connect(&self.url)
    }

    /// Runs a batch of SQL (`batch_execute`); panics with the SQL error.
    pub fn exec(&self, sql: &str) {
        if let Err(e) = self.client().batch_execute(sql) {
            panic!(
                "SQL failed in database {}: {}\n--- SQL ---\n{sql}",
                self.name,
                describe_error(&e)
            );
        }
    }

    /// Single integer value from a query like `SELECT count(*) FROM x`.
    /// Accepts `bigint`, `integer` and `smallint` results; panics on error,
    /// on NULL and on a row count other than one.
    pub fn scalar_i64(&self, sql: &str) -> i64 {
        let row = self.client().query_one(sql, &[]).unwrap_or_else(|e| {
            panic!(
                "query failed in database {}: {}\n--- SQL ---\n{sql}",
                self.name,
                describe_error(&e)
            )
        });
        if let Ok(v) = row.try_get::<_, Option<i64>>(0) {
            return v.unwrap_or_else(|| panic!("{sql}: returned NULL"));
        }
        if let Ok(v) = row.try_get::<_, Option<i32>>(0) {
            return i64::from(v.unwrap_or_else(|| panic!("{sql}: returned NULL")));
        }
        match row.try_get::<_, Option<i16>>(0) {
            Ok(v) => i64::from(v.unwrap_or_else(|| panic!("{sql}: returned NULL"))),
            Err(e) => panic!("{sql}: first column is not an integer: {e}"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&admin_url(), NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A login role with a password (stored as SCRAM-SHA-256), dropped on `Drop`.
/// Roles are cluster-wide, so the name is unique per process like database
/// names. Drop it after (declare it before) the `TestDb`s it has privileges
/// in, or `DROP ROLE` fails (ignored) because objects depend on it.
pub struct TestRole {
    pub name: String,
    pub password: String,
}

static ROLE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestRole {
    pub fn create(prefix: &str, password: &str) -> TestRole {
        let name = unique_name(prefix, &ROLE_COUNTER);
        let sql = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             DROP ROLE IF EXISTS \"{name}\";\n\
             CREATE ROLE \"{name}\" LOGIN PASSWORD {};",
            quote_literal(password)
        );
        admin_client()
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("creating role {name}: {}", describe_error(&e)));
        TestRole {
            name,
            password: password.to_owned(),
        }
    }
}

/// Which TCP connections the server accepts for a [`TestRole`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpAccess {
    /// With or without TLS (`host ... scram-sha-256`).
    Any,
    /// Only over TLS (`hostssl`, member of [`TLS_ONLY_GROUP`]).
    TlsOnly,
    /// Only without TLS (`hostnossl`, member of [`PLAIN_ONLY_GROUP`]).
    PlainOnly,
}

impl TestRole {
    /// Like [`TestRole::create`], but only the given kind of TCP connection
    /// is accepted for the role. `None` if the server can't enforce that
    /// (an external server without `ASTEGNI_TEST_HBA_GROUPS=1`: the groups
    /// and their `pg_hba.conf` lines are the throwaway cluster's).
    pub fn with_access(prefix: &str, password: &str, access: TcpAccess) -> Option<TestRole> {
        let group = match access {
            TcpAccess::Any => None,
            TcpAccess::TlsOnly => Some(TLS_ONLY_GROUP),
            TcpAccess::PlainOnly => Some(PLAIN_ONLY_GROUP),
        };
        if group.is_some() && !server().hba_groups {
            return None;
        }
        let role = TestRole::create(prefix, password);
        if let Some(group) = group {
            let sql = format!("GRANT \"{group}\" TO \"{}\"", role.name);
            admin_client()
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
        }
        Some(role)
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&admin_url(), NoTls) {
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", self.name));
        }
    }
}

/// Conninfo for a password login over TCP, or `None` if there is no TCP
/// listener (see [`tcp_port`]).
pub fn tcp_conninfo(user: &str, password: &str, dbname: &str) -> Option<String> {
    let port = tcp_port()?;
    Some(format!(
        "host={} port={port} user={} password={} dbname={}",
        quote_conninfo_value(&tcp_host()),
        quote_conninfo_value(user),
        quote_conninfo_value(password),
        quote_conninfo_value(dbname),
    ))
}

/// Quotes a conninfo value (`'...'` with `\` escapes), always.
pub fn quote_conninfo_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Quotes an SQL string literal (standard_conforming_strings = on).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The proxy variables the job honours for its webhook. They are removed from
/// the inherited environment: a developer's proxy must not carry the tests'
/// loopback webhooks (a test that wants a proxy sets them in `env`).
const PROXY_VARIABLES: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Runs the binary under test with `args` and extra `env`; returns
/// `(exit code, stdout, stderr)`. `DATABASE_URL` and the proxy variables are
/// removed from the inherited environment and `ASTEGNI_LOG_TARGET=stderr` is
/// set unless `env` overrides it. Stdin is `/dev/null`. A process killed by
/// signal N reports `128 + N`; after [`JOB_TIMEOUT`] the process is killed
/// (and a note is appended to stderr).
pub fn run_job(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    run_job_under(&[], args, env)
}

/// [`run_job`] with the binary run by `wrapper` (a command and its arguments,
/// e.g. `unshare ... sh -c '...; exec "$@"' sh`), which gets the binary's path
/// and `args` as its last arguments; empty: the binary itself.
pub fn run_job_under(
    wrapper: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let exe = env!("CARGO_BIN_EXE_astegni-delete-expired");
    let mut cmd = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut cmd = Command::new(program);
            cmd.args(wrapper_args).arg(exe);
            cmd
        }
        None => Command::new(exe),
    };
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("ASTEGNI_LOG_TARGET", "stderr");
    for variable in PROXY_VARIABLES {
        cmd.env_remove(variable);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", [wrapper, &[exe]].concat()));

    // Timeout without polling: a helper thread waits on a channel with a
    // deadline and kills the job if the deadline passes first.
    let pid = child.id().to_string();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if done_rx.recv_timeout(JOB_TIMEOUT) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            true
        } else {
            false
        }
    });
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {exe}: {e}"));
    let _ = done_tx.send(());
    let timed_out = killer.join().unwrap_or(false);

    let code = output
        .status
        .code()
        .or_else(|| output.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if timed_out {
        stderr.push_str(&format!(
            "\n[test harness: killed after {}s timeout]\n",
            JOB_TIMEOUT.as_secs()
        ));
    }
    (code, stdout, stderr)
}

pub(super) fn connect(url: &str) -> Client {
    Client::connect(url, NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {}", describe_error(&e)))
}

/// Error text including the server's message, detail, hint and position.
pub fn describe_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} [SQLSTATE {}]", db, db.code().code());
            if let Some(pos) = db.position() {
                s.push_str(&format!("\nPOSITION: {pos:?}"));
            }
            s
        }
        None => format!("{e} ({e:?})"),
    }
}

/// `<sanitised prefix>_<counter>_<pid>`, lower case, at most 63 bytes.
fn unique_name(prefix: &str, counter: &AtomicU64) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{n}_{}", std::process::id());
    let mut base: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "t_");
    }
    base.truncate(63 - suffix.len());
    base + &suffix
}
