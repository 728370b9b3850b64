//! Server commands as another user when the tests run as root.
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as root,
//! every server-side command (`initdb`, `pg_ctl start/stop/restart`) is run
//! through `setpriv --reuid --regid --clear-groups` (or `runuser -u` if
//! `setpriv` is missing) as the `postgres` system user if it exists, else as
//! `nobody`, and the temp directory is `chown`ed to that user. The tests
//! themselves stay root and just connect over the socket. Config files are
//! edited in place as root, which keeps their owner.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How server-side commands are run: directly, or (as root) via a
/// privilege-dropping wrapper, with the temp dir owned by that user.
pub(super) struct Runner {
    /// e.g. `["setpriv", "--reuid=101", "--regid=104", "--clear-groups", "--"]`
    pub(super) prefix: Vec<String>,
    /// `(uid, gid, name)` of the server user when dropping privileges.
    pub(super) owner: Option<(u32, u32, String)>,
}

impl Runner {
    pub(super) fn detect() -> Runner {
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

    pub(super) fn command(&self, program: &Path, cwd: &Path) -> Command {
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

pub(super) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
