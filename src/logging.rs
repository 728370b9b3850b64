//! Sends `log` records to the journal (native protocol, structured fields) or to stderr.
//!
//! journald attributes a native entry to its unit by looking up the sender's cgroup when it
//! reads the datagram; if the process has already exited, the entry loses `_SYSTEMD_UNIT` and
//! `journalctl -u` does not show it. The entries most at risk are the last ones: the summary
//! and the error that ended the run. Records logged with target [`FINAL`] are therefore also
//! written as one plain line to stderr, which under systemd is a journal *stream* attributed
//! to the unit when it was opened. Under systemd this shows the final lines twice, once with
//! fields and once as text; that is the price of never losing the reason a run failed.
//! At a terminal, warnings and errors are echoed to stderr too, so a person sees them. When
//! the report is shown on the terminal as well, stderr gets nothing else: the report already
//! has a line per deletion, and two streams on one terminal interleave.
//!
//! Without a journal (cron), every record goes to stderr. The info lines (one per deletion)
//! are then gathered and written out together at the end of each batch ([`log::Log::flush`],
//! called by the report) instead of one `write` each, a system call per deletion
//! (BENCHMARKS.md, "Client CPU and output"). A warning, an error or a final record writes
//! out what is pending first, so the order is kept; at a terminal nothing is held back.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, MutexGuard};

use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

use crate::config::LogTarget;

/// Target for records that must also reach stderr: the run summary and a fatal error.
pub const FINAL: &str = "astegni_delete_expired::final";

const IDENTIFIER: &str = "astegni-delete-expired";

/// Installs the logger for `target`; returns a warning to log if the journal was wanted but
/// could not be reached. `report_on_terminal`: the run report goes to a terminal, where a
/// person reads it; stderr, if it is that terminal too, then gets only warnings and errors,
/// so that each deletion is printed once, in the report's order.
pub fn init(target: LogTarget, report_on_terminal: bool) -> Option<String> {
    let (journal, warning) = match target {
        LogTarget::Stderr => (None, None),
        LogTarget::Auto => (open_journal().ok(), None),
        LogTarget::Journal => match open_journal() {
            Ok(journal) => (Some(journal), None),
            Err(error) => (
                None,
                Some(format!(
                    "the journal is not reachable ({error}); logging to stderr instead"
                )),
            ),
        },
    };
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let logger = Logger {
        journal,
        stderr_is_terminal,
        quiet_info: stderr_is_terminal && report_on_terminal,
        pending: Mutex::new(Vec::new()),
    };
    // Installing fails only if a logger is already installed, which we never do twice.
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
    warning
}

fn open_journal() -> std::io::Result<JournalLog> {
    Ok(JournalLog::new()?.with_syslog_identifier(IDENTIFIER.to_owned()))
}

struct Logger {
    journal: Option<JournalLog>,
    stderr_is_terminal: bool,
    /// Info records stay off stderr: the report on the same terminal shows them.
    quiet_info: bool,
    /// Info lines for stderr not written yet.
    pending: Mutex<Vec<u8>>,
}

/// Pending stderr lines are written out when they reach this size, whatever the batch.
const MAX_PENDING: usize = 64 * 1024;

impl Logger {
    /// Whether `record`'s stderr line may wait for the end of the batch.
    fn may_wait(&self, record: &Record) -> bool {
        !self.stderr_is_terminal && record.level() == Level::Info && record.target() != FINAL
    }

    /// The stderr lines not written yet. A poisoned lock only means a panic while
    /// appending: the bytes are still usable.
    fn pending(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends `line` to the pending lines, and writes them all out unless it may wait.
    fn write_stderr(&self, line: &str, may_wait: bool) {
        let mut pending = self.pending();
        pending.extend_from_slice(line.as_bytes());
        if !may_wait || pending.len() >= MAX_PENDING {
            write_out(&mut pending);
        }
    }

    fn echo_to_stderr(&self, record: &Record) -> bool {
        match self.journal {
            None => !self.quiet_info || record.level() <= Level::Warn,
            Some(_) => {
                record.target() == FINAL
                    || (self.stderr_is_terminal && record.level() <= Level::Warn)
            }
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(journal) = &self.journal {
            journal.log(record);
        }
        if self.echo_to_stderr(record) {
            self.write_stderr(&stderr_line(record), self.may_wait(record));
        }
    }

    fn flush(&self) {
        write_out(&mut self.pending());
    }
}

fn stderr_line(record: &Record) -> String {
    let level = match record.level() {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        _ => "",
    };
    format!("{IDENTIFIER}: {level}{}\n", record.args())
}

/// Writes `pending` to stderr (unbuffered: one `write` for all of it) and empties it. A failed
/// write has nowhere better to be reported.
fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        let _ = std::io::stderr().lock().write_all(pending);
        pending.clear();
    }
}
