//! Integration-test harness: gives every test a real, empty PostgreSQL
//! database (never a mock) and a way to run the binary under test.
//!
//! # Which server
//!
//! * If `ASTEGNI_TEST_DATABASE_URL` is set (a superuser conninfo or URL for an
//!   existing server), that server is used. `ASTEGNI_TEST_TCP_PORT` (and
//!   optionally `ASTEGNI_TEST_TCP_HOST`, default `127.0.0.1`) tells the
//!   password-over-TCP tests where that server accepts `scram-sha-256` logins;
//!   without it [`tcp_port`] returns `None` and those tests skip themselves.
//! * Otherwise the harness starts a throwaway cluster, once per test binary
//!   (a `LazyLock`), so `cargo test` works on a machine that only has the
//!   `postgresql` package installed and no server running:
//!   - binaries: `ASTEGNI_TEST_PG_BINDIR` if set, else the highest
//!     `/usr/lib/postgresql/<version>/bin` holding `initdb`, `pg_ctl` and
//!     `postgres`, else `pg_config --bindir`, else whatever `initdb` is on
//!     `PATH` (`pg_config --bindir` alone can point at a client-only dir);
//!   - `initdb -U postgres -A trust -N --locale=C -E UTF8` into a fresh
//!     directory `/tmp/astegni-pg-<pid>-<nanos>-<n>/data`. It is under `/tmp`
//!     rather than `$TMPDIR` because the socket path must stay short (< 108
//!     bytes) and every parent must be traversable by the server user;
//!   - the server listens on a Unix socket in that directory (`trust`) and on
//!     `127.0.0.1` (`scram-sha-256`, see [`tcp_port`]), with `fsync=off`,
//!     `max_connections=200` and `timezone=UTC`. The port starts at a value
//!     derived from the pid and moves on if `127.0.0.1:<port>` is taken, so
//!     test binaries running concurrently don't clash (their socket
//!     directories differ anyway);
//!   - `pg_ctl start -w` waits for readiness: there are no sleeps anywhere;
//!   - TLS is on (see below).
//!
//! # Private clusters
//!
//! [`start_private`] starts another throwaway [`Cluster`] with the same code
//! (binaries, directory, user, watchdog and settings as above), for tests
//! that restart or stop the server (`tests/faults.rs`), whatever server the
//! others use. It differs on purpose: it listens only on the Unix socket in
//! its own directory (`listen_addresses = ''`, no TLS, the `pg_hba.conf` of
//! `initdb -A trust`), allows 60 connections and keeps `synchronous_commit`
//! on, so a commit a client saw acknowledged survives an immediate (crash)
//! stop. [`Cluster`] has `restart(mode)` / `stop(mode)` / `start_again()`
//! (`pg_ctl ... -m fast|immediate`), `url(dbname)`, `create_db` / `drop_db`
//! and `log_text()`; dropping it stops the server and removes its directory.
//!
//! # TLS
//!
//! The throwaway cluster serves TLS on its TCP listener (`ssl = on`). Before
//! the server starts, the harness makes with the `openssl` crate a throwaway
//! CA (`<base>/ca.crt`, see [`tls_ca_file`]) and a server certificate signed
//! by it whose only name is `DNS:localhost` (no IP address, on purpose:
//! `verify-full` to `host=localhost` succeeds, to `host=127.0.0.1` it fails
//! on the name while `verify-ca` succeeds). The certificate and its key
//! (`<base>/server.crt`, `<base>/server.key`, both mode 0600 and owned by the
//! server user) are named by `ssl_cert_file` / `ssl_key_file`.
//!
//! `pg_hba.conf` accepts password logins over TCP with and without TLS,
//! except for members of two group roles made at start-up (see
//! [`TcpAccess`] and [`TestRole::with_access`]): members of
//! [`TLS_ONLY_GROUP`] may log in only over TLS (`hostssl`), members of
//! [`PLAIN_ONLY_GROUP`] only without it (`hostnossl`); the other kind of
//! connection is `reject`ed. For an external server, [`tls_ca_file`] is
//! `ASTEGNI_TEST_TLS_CA` (if set) and those groups don't exist.
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as root,
//! every server-side command (`initdb`, `pg_ctl start/stop/restart`) is run through
//! `setpriv --reuid --regid --clear-groups` (or `runuser -u` if `setpriv` is
//! missing) as the `postgres` system user if it exists, else as `nobody`, and
//! the temp directory is `chown`ed to that user. The tests themselves stay
//! root and just connect over the socket. Config files are edited in place as
//! root, which keeps their owner.
//!
//! # Cleanup
//!
//! Statics are never dropped, so every cluster (shared or private) is stopped
//! by a watchdog of its own: a `sh` started (in its own process group,
//! ignoring INT/TERM/HUP/QUIT) before `initdb`, blocked in `cat` on a pipe
//! whose only write end the test process holds (Rust creates it
//! close-on-exec, so no other child inherits it). When the write end closes,
//! the watchdog runs `pg_ctl stop -m immediate -w` (as the server user) if
//! the server runs and `rm -rf`s the temp directory. The write end closes
//! when the test process dies in any way (panic=abort, SIGKILL, Ctrl-C). On a
//! normal exit (including `process::exit(101)` after failed tests) an
//! `atexit` hook closes the write ends of all clusters still there and
//! *waits* for their watchdogs, so no `postgres` process or temp dir is left
//! once `cargo test` returns. Dropping a private [`Cluster`] does the same
//! for that cluster at once.
//!
//! Databases made by [`TestDb::create`] are dropped `WITH (FORCE)` when the
//! `TestDb` is dropped; roles made by [`TestRole::create`] likewise.

#![allow(dead_code)]

pub mod astegni;

use std::ffi::c_int;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, Once, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use postgres::{Client, NoTls};

/// Superuser conninfo/URL of an existing server to use instead of starting one.
pub const EXTERNAL_URL_ENV: &str = "ASTEGNI_TEST_DATABASE_URL";
/// TCP port (scram-sha-256) of the external server, if any.
pub const EXTERNAL_TCP_PORT_ENV: &str = "ASTEGNI_TEST_TCP_PORT";
/// TCP host of the external server (default `127.0.0.1`).
pub const EXTERNAL_TCP_HOST_ENV: &str = "ASTEGNI_TEST_TCP_HOST";
/// CA certificate (PEM) that signed the external server's certificate.
pub const EXTERNAL_TLS_CA_ENV: &str = "ASTEGNI_TEST_TLS_CA";
/// Group role whose members the throwaway cluster lets in over TCP only with
/// TLS (`hostssl`).
pub const TLS_ONLY_GROUP: &str = "astegni_test_tls_only";
/// Group role whose members the throwaway cluster lets in over TCP only
/// without TLS (`hostnossl`).
pub const PLAIN_ONLY_GROUP: &str = "astegni_test_plain_only";
/// Overrides the PostgreSQL bin dir used for the throwaway cluster.
pub const BINDIR_ENV: &str = "ASTEGNI_TEST_PG_BINDIR";
/// [`run_job`] kills the binary after this long, so a hang fails instead of
/// blocking the whole test run.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// Superuser of the throwaway cluster.
const SUPERUSER: &str = "postgres";

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

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
    /// (an external server: the groups and their `pg_hba.conf` lines are the
    /// throwaway cluster's).
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

/// The server's superuser conninfo (database `postgres` for the throwaway
/// cluster; the given value for an external server).
pub fn admin_url() -> String {
    server().admin_url()
}

/// New superuser connection (see [`admin_url`]).
pub fn admin_client() -> Client {
    connect(&admin_url())
}

/// TCP port on which the server accepts password (`scram-sha-256`) logins
/// from 127.0.0.1. Always `Some` for the throwaway cluster; for an external
/// server only if `ASTEGNI_TEST_TCP_PORT` is set.
pub fn tcp_port() -> Option<u16> {
    server().tcp_port
}

/// CA certificate (PEM file) that signed the server's certificate: the
/// throwaway cluster's own CA, or for an external server the file named by
/// `ASTEGNI_TEST_TLS_CA` (`None` if that is unset: TLS tests skip).
pub fn tls_ca_file() -> Option<PathBuf> {
    match &server().kind {
        Kind::External(_) => std::env::var_os(EXTERNAL_TLS_CA_ENV)
            .filter(|path| !path.is_empty())
            .map(PathBuf::from),
        Kind::Local(_) => server().tls_ca.clone(),
    }
}

/// Whether the server is the harness's own throwaway cluster, whose TLS
/// certificate names only `localhost` and whose `pg_hba.conf` is known.
pub fn is_throwaway_cluster() -> bool {
    matches!(server().kind, Kind::Local(_))
}

/// A fresh self-signed CA certificate (PEM) that has signed nothing: a
/// trust anchor the server's certificate does not chain to.
pub fn unrelated_ca_pem(common_name: &str) -> String {
    let (certificate, _key) = make_ca(common_name);
    let pem = certificate
        .to_pem()
        .unwrap_or_else(|e| panic!("encoding a CA certificate: {e}"));
    String::from_utf8(pem).expect("PEM is ASCII")
}

/// Host to use with [`tcp_port`].
pub fn tcp_host() -> String {
    match &server().kind {
        Kind::External(_) => std::env::var(EXTERNAL_TCP_HOST_ENV)
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".to_owned()),
        Kind::Local(_) => "127.0.0.1".to_owned(),
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

/// Runs the binary under test with `args` and extra `env`; returns
/// `(exit code, stdout, stderr)`. `DATABASE_URL` is removed from the
/// inherited environment and `ASTEGNI_LOG_TARGET=stderr` is set unless `env`
/// overrides it. Stdin is `/dev/null`. A process killed by signal N reports
/// `128 + N`; after [`JOB_TIMEOUT`] the process is killed (and a note is
/// appended to stderr).
pub fn run_job(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let exe = env!("CARGO_BIN_EXE_astegni-delete-expired");
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("ASTEGNI_LOG_TARGET", "stderr");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));

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

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn connect(url: &str) -> Client {
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

/// Replaces the database in a URL (`postgres[ql]://...`) or appends `dbname=`
/// to a key=value conninfo (the last occurrence of a key wins).
fn with_dbname(url: &str, dbname: &str) -> String {
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (main, query) = match rest.find('?') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            // Socket paths in the authority are percent-encoded, so the first
            // '/' ends it.
            let authority = main.split('/').next().unwrap_or("");
            return format!("{scheme}{authority}/{dbname}{query}");
        }
    }
    format!("{url} dbname={}", quote_conninfo_value(dbname))
}

// ---------------------------------------------------------------------------
// The shared server
// ---------------------------------------------------------------------------

struct Server {
    kind: Kind,
    tcp_port: Option<u16>,
    /// The throwaway cluster's CA certificate.
    tls_ca: Option<PathBuf>,
    /// Whether [`TLS_ONLY_GROUP`] and [`PLAIN_ONLY_GROUP`] exist and
    /// `pg_hba.conf` enforces them.
    hba_groups: bool,
}

enum Kind {
    External(String),
    Local(Cluster),
}

impl Server {
    fn url_for_db(&self, dbname: &str) -> String {
        match &self.kind {
            Kind::External(url) => with_dbname(url, dbname),
            Kind::Local(cluster) => cluster.url(dbname),
        }
    }

    fn admin_url(&self) -> String {
        match &self.kind {
            Kind::External(url) => url.clone(),
            Kind::Local(_) => self.url_for_db("postgres"),
        }
    }
}

static SERVER: LazyLock<Server> = LazyLock::new(|| match std::env::var(EXTERNAL_URL_ENV) {
    Ok(url) if !url.trim().is_empty() => {
        let tcp_port = std::env::var(EXTERNAL_TCP_PORT_ENV).ok().map(|p| {
            p.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{EXTERNAL_TCP_PORT_ENV}={p:?}: {e}"))
        });
        Server {
            kind: Kind::External(url),
            tcp_port,
            tls_ca: None,
            hba_groups: false,
        }
    }
    _ => {
        let (cluster, tls) = Cluster::start(Flavor::Shared);
        Server {
            tcp_port: Some(cluster.port),
            tls_ca: tls.map(|files| files.ca),
            hba_groups: true,
            kind: Kind::Local(cluster),
        }
    }
});

fn server() -> &'static Server {
    &SERVER
}

/// How server-side commands are run: directly, or (as root) via a
/// privilege-dropping wrapper, with the temp dir owned by that user.
struct Runner {
    /// e.g. `["setpriv", "--reuid=101", "--regid=104", "--clear-groups", "--"]`
    prefix: Vec<String>,
    /// `(uid, gid, name)` of the server user when dropping privileges.
    owner: Option<(u32, u32, String)>,
}

impl Runner {
    fn detect() -> Runner {
        if effective_uid() != 0 {
            return Runner {
                prefix: Vec::new(),
                owner: None,
            };
        }
        let user = if id_number("-u", "postgres").is_some() {
            "postgres"
        } else {
            "nobody"
        };
        let uid = id_number("-u", user).unwrap_or_else(|| {
            panic!(
                "running as root but there is no user {user:?} to run the test PostgreSQL server as"
            )
        });
        let gid = id_number("-g", user).unwrap_or_else(|| panic!("no group for user {user:?}"));
        let prefix = if let Some(setpriv) = which("setpriv") {
            vec![
                setpriv.display().to_string(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_owned(),
                "--".to_owned(),
            ]
        } else if let Some(runuser) = which("runuser") {
            vec![
                runuser.display().to_string(),
                "-u".to_owned(),
                user.to_owned(),
                "--".to_owned(),
            ]
        } else {
            panic!(
                "running as root, but neither setpriv nor runuser is available to drop privileges for PostgreSQL"
            );
        };
        Runner {
            prefix,
            owner: Some((uid, gid, user.to_owned())),
        }
    }

    fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = match self.prefix.split_first() {
            Some((wrapper, wrapper_args)) => {
                let mut c = Command::new(wrapper);
                c.args(wrapper_args).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.current_dir(cwd)
            .env("LC_ALL", "C")
            .env("HOME", cwd)
            .stdin(Stdio::null());
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

fn effective_uid() -> u32 {
    // /proc/self/status: "Uid:\treal\teffective\tsaved\tfs"
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    {
        return euid;
    }
    let out = Command::new("id")
        .arg("-u")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `id -u`: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse `id -u` output: {e}"))
}

/// `id -u USER` / `id -g USER`, or None if the user doesn't exist.
fn id_number(flag: &str, user: &str) -> Option<u32> {
    let out = Command::new("id")
        .args([flag, user])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn has_server_tools(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|tool| dir.join(tool).is_file())
}

fn find_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            has_server_tools(&dir),
            "{BINDIR_ENV}={} has no initdb/pg_ctl/postgres",
            dir.display()
        );
        return dir;
    }
    // Debian/Ubuntu: /usr/lib/postgresql/<major>/bin; take the highest.
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(version) = name
                .split('.')
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_server_tools(&bin) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    if let Some((_, bin)) = best {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server_tools(&dir) {
            return dir;
        }
    }
    if let Some(initdb) = which("initdb")
        && let Some(dir) = initdb.parent().filter(|d| has_server_tools(d))
    {
        return dir.to_path_buf();
    }
    panic!(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: install the \
         `postgresql` package, set {BINDIR_ENV}, or point {EXTERNAL_URL_ENV} at a server"
    );
}

/// Creates `/tmp/astegni-pg-<pid>-<nanos>-<n>` (mode 0755, owned by the
/// server user).
fn make_base_dir(runner: &Runner) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let pid = std::process::id();
    for n in 0..1000 {
        let dir = PathBuf::from(format!("/tmp/astegni-pg-{pid}-{nanos}-{n}"));
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {
                // The umask may have removed bits; the server user (and, for
                // the socket, the tests) must be able to get in.
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
                if let Some((uid, gid, _)) = &runner.owner {
                    std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid))
                        .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
                }
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
    panic!("cannot find a free /tmp/astegni-pg-{pid}-* directory name");
}

// --- watchdog ---------------------------------------------------------------

/// A running watchdog and the write end of its stdin pipe (see the module
/// docs), keyed by the id its [`Cluster`] holds.
struct Watchdog {
    id: u64,
    stdin: ChildStdin,
    child: Child,
}

/// The watchdogs of every cluster this process started and has not dropped.
static WATCHDOGS: Mutex<Vec<Watchdog>> = Mutex::new(Vec::new());
static WATCHDOG_IDS: AtomicU64 = AtomicU64::new(0);
static ATEXIT: Once = Once::new();

unsafe extern "C" {
    /// libc's `atexit(3)`; registering a plain function is safe.
    safe fn atexit(callback: extern "C" fn()) -> c_int;
}

/// Closes the pipes of `watchdogs` (all at once, so the clusters stop in
/// parallel) and waits for each watchdog to finish. Must not panic.
fn finish_watchdogs(watchdogs: Vec<Watchdog>) {
    let children: Vec<Child> = watchdogs
        .into_iter()
        .map(|Watchdog { stdin, child, .. }| {
            drop(stdin);
            child
        })
        .collect();
    for mut child in children {
        let _ = child.wait();
    }
}

fn watchdogs() -> std::sync::MutexGuard<'static, Vec<Watchdog>> {
    WATCHDOGS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs at normal process exit: close the pipes and wait for the watchdogs
/// to stop the servers and remove the temp dirs. Must not panic.
extern "C" fn stop_clusters_at_exit() {
    let taken = std::mem::take(&mut *watchdogs());
    finish_watchdogs(taken);
}

/// Stops the cluster of watchdog `id` (if still running) and removes its
/// temp dir, waiting for both.
fn stop_watchdog(id: u64) {
    let taken: Vec<Watchdog> = {
        let mut guard = watchdogs();
        match guard.iter().position(|w| w.id == id) {
            Some(index) => vec![guard.remove(index)],
            None => Vec::new(),
        }
    };
    finish_watchdogs(taken);
}

const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT QUIT TERM PIPE
cat >/dev/null 2>&1
base=$1
data=$2
shift 2
if [ -f "$data/postmaster.pid" ]; then
    "$@" stop -D "$data" -m immediate -w -s >/dev/null
fi
rm -rf "$base"
"#;

/// Starts the watchdog of a cluster in `base` and returns its id.
fn spawn_watchdog(base: &Path, data: &Path, runner: &Runner, pg_ctl: &Path) -> u64 {
    ATEXIT.call_once(|| {
        assert_eq!(
            atexit(stop_clusters_at_exit),
            0,
            "atexit() failed to register the cluster cleanup"
        );
    });
    // Paths and the wrapper go in as positional parameters: no quoting.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("astegni-pg-watchdog")
        .arg(base)
        .arg(data)
        .args(&runner.prefix)
        .arg(pg_ctl)
        .current_dir("/")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // Own process group: a Ctrl-C aimed at `cargo test` doesn't reach it.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the cleanup watchdog (/bin/sh): {e}"));
    let stdin = child.stdin.take().expect("watchdog stdin is piped");
    let id = WATCHDOG_IDS.fetch_add(1, Ordering::Relaxed);
    watchdogs().push(Watchdog { id, stdin, child });
    id
}

// --- cluster ------------------------------------------------------------------

/// First port at or after `start` (within 15000..30000) that is free on
/// 127.0.0.1.
fn free_port_from(start: u16) -> u16 {
    let mut port = start;
    for _ in 0..15000 {
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        port = if port >= 29999 { 15000 } else { port + 1 };
    }
    panic!("no free TCP port on 127.0.0.1 in 15000..30000");
}

/// Text appended to `path` since byte `offset`.
fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// Which of the two kinds of cluster [`Cluster::start`] makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// The shared server: TCP on 127.0.0.1 with TLS and the `pg_hba.conf`
    /// groups, `synchronous_commit = off`, 200 connections.
    Shared,
    /// [`start_private`]: Unix socket only, no TLS, initdb's `pg_hba.conf`,
    /// `synchronous_commit` on, 60 connections.
    Private,
}

/// A throwaway PostgreSQL cluster this process started: initdb'd into a fresh
/// `/tmp/astegni-pg-*` directory, run as the server user when root, cleaned
/// up by a watchdog (see the module docs). The shared server is one (never
/// dropped: the watchdog stops it at exit); [`start_private`] makes another,
/// which is also stopped and removed, waiting, when it is dropped.
pub struct Cluster {
    base: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pg_ctl: PathBuf,
    runner: Runner,
    port: u16,
    watchdog: u64,
}

/// Starts a private cluster of this test process, for tests that restart or
/// stop the server (never the shared one other tests use). It is made like
/// the shared one (same binaries, user, temp dir, watchdog and settings) but
/// listens only on a Unix socket in its own directory, has no TLS, allows 60
/// connections and keeps `synchronous_commit` on, so that a commit a client
/// saw acknowledged survives an immediate (crash) stop (`fsync = off` is
/// still safe: only the server is ever killed, never the machine). Stopped
/// and removed when dropped, or by the watchdog when the process ends.
pub fn start_private() -> Cluster {
    Cluster::start(Flavor::Private).0
}

impl Cluster {
    fn start(flavor: Flavor) -> (Cluster, Option<TlsFiles>) {
        let bindir = find_bindir();
        let initdb = bindir.join("initdb");
        let pg_ctl = bindir.join("pg_ctl");
        let runner = Runner::detect();
        let base = make_base_dir(&runner);
        let data = base.join("data");
        let log = base.join("server.log");

        // Before anything can be left behind.
        let watchdog = spawn_watchdog(&base, &data, &runner, &pg_ctl);
        // From here on, dropping `cluster` (also on a panic) cleans up.
        let mut cluster = Cluster {
            base,
            data,
            log,
            pg_ctl,
            runner,
            port: 0,
            watchdog,
        };

        cluster.server_command(&initdb, |cmd| {
            cmd.arg("-D").arg(&cluster.data).args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
        });

        // Edited as root when dropping privileges: writing to existing files
        // keeps their owner.
        let tls = (flavor == Flavor::Shared).then(|| {
            let tls = write_tls_files(&cluster.base, &cluster.runner);
            cluster.write_shared_hba();
            tls
        });
        let (listen, max_connections) = match flavor {
            Flavor::Shared => ("127.0.0.1", 200),
            Flavor::Private => ("", 60),
        };
        let mut settings = format!(
            "\n# added by the test harness (tests/common/mod.rs)\n\
             listen_addresses = '{listen}'\n\
             unix_socket_directories = '{}'\n\
             unix_socket_permissions = 0777\n\
             max_connections = {max_connections}\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             full_page_writes = off\n\
             password_encryption = 'scram-sha-256'\n\
             timezone = 'UTC'\n\
             log_timezone = 'UTC'\n\
             logging_collector = off\n",
            cluster.base.display(),
        );
        if let Some(tls) = &tls {
            settings.push_str(&format!(
                "synchronous_commit = off\n\
                 ssl = on\n\
                 ssl_cert_file = '{}'\n\
                 ssl_key_file = '{}'\n",
                tls.certificate.display(),
                tls.key.display(),
            ));
        }
        fs::OpenOptions::new()
            .append(true)
            .open(cluster.data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .unwrap_or_else(|e| panic!("appending to postgresql.conf: {e}"));

        // Port: derived from the pid, moved on while taken on 127.0.0.1. The
        // probe-then-start race with another process is handled by retrying.
        // (A private cluster binds no TCP port; its number only names the
        // socket in its own directory.)
        cluster.port = free_port_from(15000 + (std::process::id() % 15000) as u16);
        for attempt in 1..=10 {
            let log_offset = fs::metadata(&cluster.log).map(|m| m.len()).unwrap_or(0);
            let out = cluster.pg_ctl_output(&["start", "-w", "-t", "120"]);
            if out.status.success() {
                if flavor == Flavor::Shared {
                    create_hba_groups(&cluster.url("postgres"));
                }
                return (cluster, tls);
            }
            let log_text = read_from(&cluster.log, log_offset);
            if attempt < 10 && log_text.contains("could not bind") {
                let port = cluster.port;
                cluster.port = free_port_from(if port >= 29999 { 15000 } else { port + 1 });
                continue;
            }
            panic!(
                "pg_ctl start failed ({}) for {}\n--- pg_ctl stderr ---\n{}\n--- server log ---\n{log_text}",
                out.status,
                cluster.data.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        unreachable!("the last attempt either returns or panics");
    }

    /// First match wins: the two groups get their one kind of TCP connection
    /// and are rejected on the other; everyone else may use either.
    fn write_shared_hba(&self) {
        fs::write(
            self.data.join("pg_hba.conf"),
            format!(
                "# written by the test harness (tests/common/mod.rs)\n\
                 local     all all                 trust\n\
                 hostssl   all +{TLS_ONLY_GROUP}   127.0.0.1/32 scram-sha-256\n\
                 host      all +{TLS_ONLY_GROUP}   127.0.0.1/32 reject\n\
                 hostnossl all +{PLAIN_ONLY_GROUP} 127.0.0.1/32 scram-sha-256\n\
                 host      all +{PLAIN_ONLY_GROUP} 127.0.0.1/32 reject\n\
                 host      all all                 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .unwrap_or_else(|e| panic!("writing pg_hba.conf: {e}"));
    }

    /// Runs a server-side program (as the server user when root); panics
    /// with its output and the server log if it fails.
    fn server_command(&self, program: &Path, args: impl FnOnce(&mut Command)) {
        let mut cmd = self.runner.command(program, &self.base);
        args(&mut cmd);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        if !out.status.success() {
            panic!(
                "{} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server log ---\n{}",
                program.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
        }
    }

    /// `pg_ctl <args> -s -D <data> -l <log> -o "-p <port>"`.
    fn pg_ctl_output(&self, args: &[&str]) -> Output {
        self.runner
            .command(&self.pg_ctl, &self.base)
            .args(args)
            .arg("-s")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .arg("-o")
            .arg(format!("-p {}", self.port))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.pg_ctl.display()))
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = self.pg_ctl_output(args);
        if !out.status.success() {
            panic!(
                "pg_ctl {} failed ({}) for {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server log ---\n{}",
                args.join(" "),
                out.status,
                self.data.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
        }
    }

    /// `pg_ctl restart -m <mode>`: `fast` terminates every session cleanly,
    /// `immediate` is a crash followed by recovery.
    pub fn restart(&self, mode: &str) {
        self.pg_ctl(&["restart", "-w", "-t", "120", "-m", mode]);
    }

    /// `pg_ctl stop -m <mode>`.
    pub fn stop(&self, mode: &str) {
        self.pg_ctl(&["stop", "-w", "-t", "120", "-m", mode]);
    }

    /// `pg_ctl start` after [`Cluster::stop`].
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w", "-t", "120"]);
    }

    /// Conninfo for database `dbname` as the superuser, over the socket.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={dbname}",
            self.base.display(),
            self.port
        )
    }

    /// The directory holding the Unix socket (and everything else).
    pub fn socket_dir(&self) -> &Path {
        &self.base
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// New superuser connection to database `postgres`.
    pub fn admin(&self) -> Client {
        connect(&self.url("postgres"))
    }

    /// Creates (or recreates) an empty database; returns its conninfo.
    pub fn create_db(&self, name: &str) -> String {
        let mut admin = self.admin();
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\" TEMPLATE template0"),
        ] {
            admin
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
        }
        self.url(name)
    }

    /// Drops a database if it exists; errors (also a stopped server) are
    /// ignored.
    pub fn drop_db(&self, name: &str) {
        if let Ok(mut admin) = Client::connect(&self.url("postgres"), NoTls) {
            let _ =
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
        }
    }

    /// The server log, for failure messages.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_watchdog(self.watchdog);
    }
}

/// Creates [`TLS_ONLY_GROUP`] and [`PLAIN_ONLY_GROUP`] (the cluster is new).
fn create_hba_groups(admin_url: &str) {
    let sql = format!("CREATE ROLE \"{TLS_ONLY_GROUP}\"; CREATE ROLE \"{PLAIN_ONLY_GROUP}\";");
    Client::connect(admin_url, NoTls)
        .and_then(|mut admin| admin.batch_execute(&sql))
        .unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
}

// --- TLS ----------------------------------------------------------------------

/// The throwaway cluster's TLS files.
struct TlsFiles {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
}

/// Writes a new CA (`ca.crt`, mode 0644) and a server certificate for
/// `DNS:localhost` signed by it (`server.crt`, `server.key`, mode 0600,
/// owned by the server user) into `base`.
fn write_tls_files(base: &Path, runner: &Runner) -> TlsFiles {
    let (ca, ca_key) = make_ca("astegni-delete-expired test CA");
    let (certificate, key) = make_server_certificate(&ca, &ca_key);
    let files = TlsFiles {
        ca: base.join("ca.crt"),
        certificate: base.join("server.crt"),
        key: base.join("server.key"),
    };
    let pem = |result: Result<Vec<u8>, openssl::error::ErrorStack>| {
        result.unwrap_or_else(|e| panic!("encoding TLS test files: {e}"))
    };
    write_owned(&files.ca, &pem(ca.to_pem()), 0o644, runner);
    write_owned(
        &files.certificate,
        &pem(certificate.to_pem()),
        0o600,
        runner,
    );
    write_owned(
        &files.key,
        &pem(key.private_key_to_pem_pkcs8()),
        0o600,
        runner,
    );
    files
}

/// Creates `path` with `mode` (whatever the umask), owned by the server user
/// when dropping privileges.
fn write_owned(path: &Path, contents: &[u8], mode: u32, runner: &Runner) {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    if let Some((uid, gid, _)) = &runner.owner {
        std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

fn new_key() -> PKey<Private> {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
        .and_then(|group| EcKey::generate(&group))
        .and_then(PKey::from_ec_key)
        .unwrap_or_else(|e| panic!("generating a P-256 key: {e}"))
}

/// A certificate builder for `common_name` and `key`, valid from an hour ago
/// for 30 days, with a random serial and a subject key identifier.
fn certificate_builder(common_name: &str, key: &PKey<Private>) -> X509Builder {
    let build = || -> Result<X509Builder, openssl::error::ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let serial: Asn1Integer = serial.to_asn1_integer()?;
        let not_before: Asn1Time =
            Asn1Time::from_unix(i64::try_from(now).unwrap_or(i64::MAX) - 3600)?;
        let not_after: Asn1Time = Asn1Time::days_from_now(30)?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(key)?;
        builder.set_not_before(&not_before)?;
        builder.set_not_after(&not_after)?;
        let subject_key_id =
            SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(subject_key_id)?;
        Ok(builder)
    };
    build().unwrap_or_else(|e| panic!("building a certificate for {common_name}: {e}"))
}

/// A self-signed CA certificate and its key.
fn make_ca(common_name: &str) -> (X509, PKey<Private>) {
    let key = new_key();
    let mut builder = certificate_builder(common_name, &key);
    let build = |builder: &mut X509Builder| -> Result<(), openssl::error::ErrorStack> {
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        builder.sign(&key, MessageDigest::sha256())
    };
    build(&mut builder).unwrap_or_else(|e| panic!("signing the CA {common_name}: {e}"));
    (builder.build(), key)
}

/// A server certificate for `DNS:localhost` only (no IP address), signed by
/// `ca`, and its key.
fn make_server_certificate(ca: &X509, ca_key: &PKey<Private>) -> (X509, PKey<Private>) {
    let key = new_key();
    let mut builder = certificate_builder("localhost", &key);
    let build = |builder: &mut X509Builder| -> Result<(), openssl::error::ErrorStack> {
        builder.set_issuer_name(ca.subject_name())?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        builder.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .build(&builder.x509v3_context(Some(ca), None))?;
        builder.append_extension(san)?;
        let authority_key_id = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(ca), None))?;
        builder.append_extension(authority_key_id)?;
        builder.sign(ca_key, MessageDigest::sha256())
    };
    build(&mut builder).unwrap_or_else(|e| panic!("signing the server certificate: {e}"));
    (builder.build(), key)
}

/// A fresh CA and a certificate for `localhost` it signed, for test servers of our own
/// (the HTTPS webhook): returns (CA certificate as PEM, server certificate, server key).
pub fn localhost_identity() -> (Vec<u8>, X509, PKey<Private>) {
    let (ca, ca_key) = make_ca("astegni test webhook CA");
    let (certificate, key) = make_server_certificate(&ca, &ca_key);
    let pem = ca
        .to_pem()
        .unwrap_or_else(|e| panic!("encoding the CA: {e}"));
    (pem, certificate, key)
}
