//! Cleanup: every cluster is stopped and its directory removed, however the
//! test process ends.
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
//! once `cargo test` returns. Dropping a private [`super::Cluster`] does the
//! same for that cluster at once.

use std::ffi::c_int;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use super::runner::Runner;

/// A running watchdog and the write end of its stdin pipe (see the module
/// docs), keyed by the id its [`super::Cluster`] holds.
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
pub(super) fn stop_watchdog(id: u64) {
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
pub(super) fn spawn_watchdog(base: &Path, data: &Path, runner: &Runner, pg_ctl: &Path) -> u64 {
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
