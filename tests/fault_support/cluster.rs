//! A private PostgreSQL cluster for tests that restart or stop the server (never the shared
//! one other tests use).
//!
//! Same approach as `tests/common/mod.rs`: the binaries from `ASTEGNI_TEST_PG_BINDIR` or the
//! highest `/usr/lib/postgresql/<v>/bin`; `initdb -A trust` into a fresh `/tmp` directory;
//! as root every server command runs as `postgres` (else `nobody`) through `setpriv` (or
//! `runuser`). The server listens only on a Unix socket in its own directory (no TCP port to
//! clash on). `fsync = off` is safe here because only the server process is ever killed,
//! never the machine; `synchronous_commit` stays on so that a commit the job saw acknowledged
//! survives an immediate (crash) stop.
//!
//! A watchdog `sh`, blocked reading a pipe only this process writes to, stops the server and
//! removes the directory when the test process ends in any way (also `kill -9`); `Drop` does
//! the same at once.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use postgres::{Client, NoTls};

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

pub struct PrivateCluster {
    base: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pg_ctl: PathBuf,
    prefix: Vec<String>,
    port: u16,
    watchdog: Option<(ChildStdin, Child)>,
}

const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT QUIT TERM PIPE
cat >/dev/null 2>&1
base=$1
data=$2
shift 2
if [ -f "$data/postmaster.pid" ]; then
    "$@" stop -D "$data" -m immediate -w -s >/dev/null 2>&1
fi
rm -rf "$base"
"#;

impl PrivateCluster {
    /// initdb and start a new cluster.
    pub fn start() -> PrivateCluster {
        let bindir = find_bindir();
        let prefix = privilege_prefix();
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let base = PathBuf::from(format!("/tmp/astegni-fault-pg-{pid}-{n}"));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir(&base).unwrap_or_else(|e| panic!("mkdir {}: {e}", base.display()));
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", base.display()));
        if let Some((uid, gid)) = server_owner() {
            std::os::unix::fs::chown(&base, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", base.display()));
        }
        let data = base.join("data");
        let log = base.join("server.log");
        let pg_ctl = bindir.join("pg_ctl");
        let mut watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("astegni-fault-pg-watchdog")
            .arg(&base)
            .arg(&data)
            .args(&prefix)
            .arg(&pg_ctl)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the cluster watchdog: {e}"));
        let stdin = watchdog.stdin.take().expect("piped");
        // 20000..29999, away from the shared cluster's pid-derived range start.
        let port = 20000 + ((pid as u64 * 7 + n) % 10000) as u16;
        let cluster = PrivateCluster {
            base,
            data,
            log,
            pg_ctl,
            prefix,
            port,
            watchdog: Some((stdin, watchdog)),
        };
        cluster.server_command(&bindir.join("initdb"), |cmd| {
            cmd.arg("-D")
                .arg(&cluster.data)
                .args(["-U", "postgres", "-A", "trust", "-N", "-E", "UTF8"])
                .arg("--locale=C");
        });
        let settings = format!(
            "\n# added by tests/fault_support/cluster.rs\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{}'\n\
             unix_socket_permissions = 0777\n\
             port = {}\n\
             max_connections = 60\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             full_page_writes = off\n\
             timezone = 'UTC'\n\
             log_timezone = 'UTC'\n",
            cluster.base.display(),
            cluster.port
        );
        fs::OpenOptions::new()
            .append(true)
            .open(cluster.data.join("postgresql.conf"))
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .unwrap_or_else(|e| panic!("appending to postgresql.conf: {e}"));
        cluster.pg_ctl(&["start", "-w", "-t", "120"]);
        cluster
    }

    fn server_command(&self, program: &Path, args: impl FnOnce(&mut Command)) {
        let mut cmd = match self.prefix.split_first() {
            Some((wrapper, wrapper_args)) => {
                let mut cmd = Command::new(wrapper);
                cmd.args(wrapper_args).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.current_dir(&self.base)
            .env("LC_ALL", "C")
            .env("HOME", &self.base)
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
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.pg_ctl.clone();
        self.server_command(&pg_ctl, |cmd| {
            cmd.args(args)
                .arg("-s")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log);
        });
    }

    /// `pg_ctl restart -m <mode>`: `fast` terminates every session cleanly, `immediate` is a
    /// crash followed by recovery.
    pub fn restart(&self, mode: &str) {
        self.pg_ctl(&["restart", "-w", "-t", "120", "-m", mode]);
    }

    /// `pg_ctl stop -m <mode>`.
    pub fn stop(&self, mode: &str) {
        self.pg_ctl(&["stop", "-w", "-t", "120", "-m", mode]);
    }

    /// `pg_ctl start` after [`PrivateCluster::stop`].
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w", "-t", "120"]);
    }

    /// Conninfo for database `dbname` as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.base.display(),
            self.port
        )
    }

    pub fn socket_dir(&self) -> &Path {
        &self.base
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin(&self) -> Client {
        Client::connect(&self.url("postgres"), NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the private cluster: {e}"))
    }

    /// Creates (or recreates) an empty database.
    pub fn create_db(&self, name: &str) -> String {
        let mut admin = self.admin();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .unwrap_or_else(|e| panic!("drop database {name}: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE template0"))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.url(name)
    }

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

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Some((stdin, mut child)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn effective_uid() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

fn id_number(flag: &str, user: &str) -> Option<u32> {
    let out = Command::new("id")
        .args([flag, user])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .flatten()
}

fn server_user() -> &'static str {
    if id_number("-u", "postgres").is_some() {
        "postgres"
    } else {
        "nobody"
    }
}

/// (uid, gid) of the user the server runs as, when the tests run as root.
fn server_owner() -> Option<(u32, u32)> {
    if effective_uid() != 0 {
        return None;
    }
    let user = server_user();
    Some((
        id_number("-u", user).expect("server user uid"),
        id_number("-g", user).expect("server user gid"),
    ))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn privilege_prefix() -> Vec<String> {
    let Some((uid, gid)) = server_owner() else {
        return Vec::new();
    };
    if let Some(setpriv) = which("setpriv") {
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
            server_user().to_owned(),
            "--".to_owned(),
        ]
    } else {
        panic!("running as root without setpriv or runuser to drop privileges for PostgreSQL")
    }
}

fn has_server_tools(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|tool| dir.join(tool).is_file())
}

fn find_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ASTEGNI_TEST_PG_BINDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(version) = name
            .split('.')
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        if has_server_tools(&bin) && best.as_ref().is_none_or(|(known, _)| version > *known) {
            best = Some((version, bin));
        }
    }
    if let Some((_, bin)) = best {
        return bin;
    }
    if let Some(dir) = which("initdb").and_then(|path| path.parent().map(Path::to_path_buf))
        && has_server_tools(&dir)
    {
        return dir;
    }
    panic!("no PostgreSQL server binaries (initdb, pg_ctl, postgres) for the private cluster")
}
