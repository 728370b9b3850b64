//! Throwaway PostgreSQL clusters: the shared server when no existing one is
//! named ([`super::server`]), and private ones for tests that restart or stop
//! the server.
//!
//! # The shared cluster
//!
//! * binaries: `ASTEGNI_TEST_PG_BINDIR` if set, else the highest
//!   `/usr/lib/postgresql/<version>/bin` holding `initdb`, `pg_ctl` and
//!   `postgres`, else `pg_config --bindir`, else whatever `initdb` is on
//!   `PATH` (`pg_config --bindir` alone can point at a client-only dir);
//! * `initdb -U postgres -A trust -N --locale=C -E UTF8` into a fresh
//!   directory `/tmp/astegni-pg-<pid>-<nanos>-<n>/data`. It is under `/tmp`
//!   rather than `$TMPDIR` because the socket path must stay short (< 108
//!   bytes) and every parent must be traversable by the server user (as root
//!   the server runs as another user: [`super::runner`]);
//! * the server listens on a Unix socket in that directory (`trust`) and on
//!   `127.0.0.1` (`scram-sha-256`, see [`super::tcp_port`]), with
//!   `fsync=off`, `max_connections=200` and `timezone=UTC`. The port starts
//!   at a value derived from the pid and moves on if `127.0.0.1:<port>` is
//!   taken, so test binaries running concurrently don't clash (their socket
//!   directories differ anyway);
//! * `pg_ctl start -w` waits for readiness: there are no sleeps anywhere;
//! * TLS is on, with certificates made for the run ([`super::certs`]).
//!
//! `pg_hba.conf` accepts password logins over TCP with and without TLS,
//! except for members of two group roles made at start-up (see
//! [`super::TcpAccess`] and [`super::TestRole::with_access`]): members of
//! [`TLS_ONLY_GROUP`] may log in only over TLS (`hostssl`), members of
//! [`PLAIN_ONLY_GROUP`] only without it (`hostnossl`); the other kind of
//! connection is `reject`ed.
//!
//! # Private clusters
//!
//! [`start_private`] starts another throwaway [`Cluster`] with the same code
//! (binaries, directory, user, watchdog and settings as above), for tests
//! that restart or stop the server (`tests/faults/`), whatever server the
//! others use. It differs on purpose: it listens only on the Unix socket in
//! its own directory (`listen_addresses = ''`, no TLS, the `pg_hba.conf` of
//! `initdb -A trust`), allows 60 connections and keeps `synchronous_commit`
//! on, so a commit a client saw acknowledged survives an immediate (crash)
//! stop. [`Cluster`] has `restart(mode)` / `stop(mode)` / `start_again()`
//! (`pg_ctl ... -m fast|immediate`), `url(dbname)`, `create_db` / `drop_db`
//! and `log_text()`; dropping it stops the server and removes its directory
//! ([`super::watchdog`]).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

use super::api::{connect, describe_error};
use super::certs::{TlsFiles, write_tls_files};
use super::runner::{Runner, which};
use super::server::EXTERNAL_URL_ENV;
use super::watchdog::{spawn_watchdog, stop_watchdog};

/// Group role whose members the throwaway cluster lets in over TCP only with
/// TLS (`hostssl`).
pub const TLS_ONLY_GROUP: &str = "astegni_test_tls_only";
/// Group role whose members the throwaway cluster lets in over TCP only
/// without TLS (`hostnossl`).
pub const PLAIN_ONLY_GROUP: &str = "astegni_test_plain_only";
/// Overrides the PostgreSQL bin dir used for the throwaway cluster.
pub const BINDIR_ENV: &str = "ASTEGNI_TEST_PG_BINDIR";

/// Superuser of the throwaway cluster.
const SUPERUSER: &str = "postgres";

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
pub(super) enum Flavor {
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
    pub(super) fn start(flavor: Flavor) -> (Cluster, Option<TlsFiles>) {
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
            "\n# added by the test harness (tests/common/cluster.rs)\n\
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
                "# written by the test harness (tests/common/cluster.rs)\n\
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
    // One line and the end of this test binary, not one panic per test: on a fresh machine
    // this is the first thing a newcomer sees. Written to the file descriptor, past the test
    // harness's capture of `eprintln!`, which exiting would discard.
    let _ = writeln!(
        std::io::stderr(),
        "\nastegni tests: PostgreSQL is not installed: apt install postgresql (no server needs \
         to run), or set {EXTERNAL_URL_ENV} to a server, or {BINDIR_ENV} to its binaries\n"
    );
    std::process::exit(1);
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
