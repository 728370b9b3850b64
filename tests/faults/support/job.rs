//! The job under test as a child process: spawned with `--log-target stderr`, its output going
//! to files (a pipe nobody reads would block it after 64 KiB), killable at any moment.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postgres::Client;

/// No run of the suite takes this long; a job still running then has hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(180);

static JOBS: AtomicU64 = AtomicU64::new(0);

/// Variables the job reads; removed from its environment so the caller's shell can't leak in.
const JOB_VARIABLES: [&str; 12] = [
    "DATABASE_URL",
    "ASTEGNI_TIMEZONE",
    "ASTEGNI_ROLES",
    "ASTEGNI_DRY_RUN",
    "ASTEGNI_NO_AUDIT",
    "ASTEGNI_MAX_ACCOUNTS",
    "ASTEGNI_LOG_TARGET",
    "ASTEGNI_REPORT_FILE",
    "ASTEGNI_CONNECT_TIMEOUT",
    "ASTEGNI_LOCK_TIMEOUT",
    "ASTEGNI_STATEMENT_TIMEOUT",
    "PGPASSWORD",
];

/// A running job.
pub struct Job {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
    killed: bool,
}

/// A job that has ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit code; `128 + n` for a death by signal n; `-1` if it had to be killed as hung.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub hung: bool,
}

impl Finished {
    /// The `COMPLETED: X roles and Y accounts deleted` counts of the report, if present.
    pub fn completed_counts(&self) -> Option<(u64, u64)> {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|line| line.contains("COMPLETED: "))?;
        let rest = &line[line.find("COMPLETED: ")? + "COMPLETED: ".len()..];
        let mut words = rest.split_whitespace();
        let roles = words.next()?.parse().ok()?;
        let _ = (words.next()?, words.next()?);
        let accounts = words.next()?.parse().ok()?;
        Some((roles, accounts))
    }

    /// Report lines (stdout) containing `[FAILED]`.
    pub fn failed_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| line.contains("[FAILED]"))
            .collect()
    }

    /// A short description for failure messages: code, time and the last lines of output.
    pub fn describe(&self) -> String {
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(6)..].join("\n      ")
        };
        format!(
            "exit {} after {:.1}s{}\n    stdout tail:\n      {}\n    stderr tail:\n      {}",
            self.code,
            self.elapsed.as_secs_f64(),
            if self.hung { " (HUNG, killed)" } else { "" },
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// The binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_astegni-delete-expired")
}

/// Starts the job: `--database-url <url> --log-target stderr <extra...>`.
pub fn spawn(url: &str, extra: &[&str]) -> Job {
    let mut args = vec!["--database-url", url, "--log-target", "stderr"];
    args.extend_from_slice(extra);
    spawn_args(&args, &[])
}

/// Starts the binary with exactly `args` and extra environment `env`.
pub fn spawn_args(args: &[&str], env: &[(&str, &str)]) -> Job {
    spawn_command(Command::new(exe()), args, env)
}

/// Starts `command` (the binary, possibly behind a wrapper) with `args` and `env`.
pub fn spawn_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Job {
    let n = JOBS.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("astegni-fault-job-{}-{n}", std::process::id()));
    let stdout = base.with_extension("out");
    let stderr = base.with_extension("err");
    let open = |path: &PathBuf| {
        fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
    };
    command.args(args);
    // Unless the caller set it on `command` on purpose.
    let set: Vec<std::ffi::OsString> = command.get_envs().map(|(key, _)| key.to_owned()).collect();
    for variable in JOB_VARIABLES {
        if !set.iter().any(|key| key == variable) {
            command.env_remove(variable);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(open(&stdout))
        .stderr(open(&stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe()));
    Job {
        child,
        stdout,
        stderr,
        started: Instant::now(),
        killed: false,
    }
}

/// Runs the job to its end (see [`spawn`]).
pub fn run(url: &str, extra: &[&str]) -> Finished {
    spawn(url, extra).wait(HANG_LIMIT)
}

impl Job {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.killed = true;
        let _ = self.child.kill();
    }

    /// What the job wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the end, at most `limit`; a job still running then is killed and marked hung.
    pub fn wait(mut self, limit: Duration) -> Finished {
        let deadline = self.started + limit;
        let mut hung = false;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                hung = true;
                let _ = self.child.kill();
                break self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let code = match status {
            _ if hung => -1,
            Some(status) => status
                .code()
                .or_else(|| status.signal().map(|signal| 128 + signal))
                .unwrap_or(-1),
            None => -1,
        };
        let stdout = String::from_utf8_lossy(&fs::read(&self.stdout).unwrap_or_default()).into();
        let stderr = String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into();
        let _ = fs::remove_file(&self.stdout);
        let _ = fs::remove_file(&self.stderr);
        Finished {
            code,
            stdout,
            stderr,
            elapsed,
            hung,
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_file(&self.stdout);
        let _ = fs::remove_file(&self.stderr);
    }
}

/// Rows in `deletion_audit_log` (0 while the table does not exist): the job's progress.
pub fn audit_rows(client: &mut Client) -> i64 {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('public.deletion_audit_log') IS NOT NULL",
            &[],
        )
        .map(|row| row.get(0))
        .unwrap_or(false);
    if !exists {
        return 0;
    }
    client
        .query_one("SELECT count(*) FROM public.deletion_audit_log", &[])
        .map(|row| row.get(0))
        .unwrap_or(0)
}

/// Polls until the job has written at least `target` audit rows or has ended; returns the
/// count seen last.
pub fn wait_for_progress(job: &mut Job, client: &mut Client, target: i64) -> i64 {
    let deadline = Instant::now() + HANG_LIMIT;
    loop {
        let seen = audit_rows(client);
        if seen >= target || !job.running() || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The pid of the job's backend on `client`'s database, if it has one.
pub fn backend_pid(client: &mut Client) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'astegni-delete-expired' \
             AND datname = current_database() ORDER BY backend_start DESC LIMIT 1",
            &[],
        )
        .ok()
        .flatten()
        .map(|row| row.get(0))
}
