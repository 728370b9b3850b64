//! The run report (stdout or `--report-file`) and the matching journal entries.
//!
//! The report keeps the old job's format, which operators already grep: every line starts
//! with `[YYYY-MM-DD HH:MM:SS] ` (blank separator lines stay blank, as in the setup guide),
//! and the last line is `COMPLETED: X roles and Y accounts deleted`.
//!
//! Each deletion is also one journal entry with the fields `DELETION_TYPE`, `ROLE`,
//! `USER_ID`, `PROFILE_ID` and `USER_EMAIL`; the run ends with one summary entry whose
//! `MESSAGE_ID` is [`SUMMARY_MESSAGE_ID`]. A report file that cannot be written (disk full,
//! permissions) costs the report, never the run or the journal: the first write error is
//! logged as a warning and the rest of the report is dropped.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::logging::FINAL;

/// `MESSAGE_ID` of the summary entry: `journalctl MESSAGE_ID=...` finds every run.
pub const SUMMARY_MESSAGE_ID: &str = "cb4d3d2f54e44f6a944cf560455a9e33";
/// `MESSAGE_ID` of the entry for a run that broke off.
pub const FAILURE_MESSAGE_ID: &str = "35c48abe2761481e94176b1b16c1e311";

const RULE: &str =
    "================================================================================";

/// What was (or, in a dry run, would be) deleted.
pub enum Deletion<'a> {
    /// A role profile; `user_id` is `None` for a profile without a user.
    Role {
        role: &'a str,
        profile_id: i64,
        user_id: Option<i64>,
        email: Option<&'a str>,
    },
    /// A whole account.
    Account {
        user_id: i64,
        email: Option<&'a str>,
    },
}

/// How the run ended, for the last report line and the summary entry.
pub enum Ending<'a> {
    /// All phases ran (some rows may have failed).
    Completed,
    /// The run broke off with this error.
    BrokeOff(&'a str),
}

/// The report writer and the run's counters.
pub struct Report {
    out: Box<dyn Write>,
    out_name: String,
    write_failed: bool,
    dry_run: bool,
    started: Instant,
    pub roles: u64,
    pub accounts: u64,
    pub failed: u64,
}

impl Report {
    /// A report appended to `file`, or written to stdout. A file that cannot be opened is a
    /// warning; the report then goes to stdout.
    pub fn new(file: Option<&Path>, dry_run: bool) -> Report {
        let (out, out_name): (Box<dyn Write>, String) = match file {
            None => (Box::new(std::io::stdout()), "stdout".to_owned()),
            Some(path) => match OpenOptions::new().create(true).append(true).open(path) {
                Ok(file) => (Box::new(file), path.display().to_string()),
                Err(error) => {
                    log::warn!(
                        "cannot open report file {}: {error}; writing the report to stdout",
                        path.display()
                    );
                    (Box::new(std::io::stdout()), "stdout".to_owned())
                }
            },
        };
        Report {
            out,
            out_name,
            write_failed: false,
            dry_run,
            started: Instant::now(),
            roles: 0,
            accounts: 0,
            failed: 0,
        }
    }

    /// Writes one timestamped line.
    pub fn line(&mut self, text: &str) {
        let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        self.write(&format!("[{stamp}] {text}\n"));
    }

    /// Writes an empty separator line.
    pub fn blank(&mut self) {
        self.write("\n");
    }

    fn write(&mut self, text: &str) {
        if self.write_failed {
            return;
        }
        if let Err(error) = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
        {
            self.write_failed = true;
            log::warn!(
                "cannot write the run report to {}: {error}; the journal still records every \
                 deletion",
                self.out_name
            );
        }
    }

    /// The opening banner.
    pub fn banner(&mut self) {
        self.line(RULE);
        if self.dry_run {
            self.line("CRON JOB: Delete Expired Roles and Accounts (DRY RUN: nothing is deleted)");
        } else {
            self.line("CRON JOB: Delete Expired Roles and Accounts");
        }
        self.line(RULE);
        self.blank();
    }

    /// Records one deletion in the report and the journal.
    pub fn deleted(&mut self, deletion: &Deletion) {
        let verb = if self.dry_run {
            "WOULD DELETE"
        } else {
            "DELETED"
        };
        let text = describe(deletion);
        self.line(&format!("  [{verb}] {text}"));
        let (kind, role, user_id, profile_id, email) = fields(deletion);
        let message = if self.dry_run {
            format!("Would delete {text} (dry run)")
        } else {
            format!("Deleted {text}")
        };
        log::info!(
            deletion_type = kind, role = role, user_id = user_id, profile_id = profile_id,
            user_email = email, dry_run = self.dry_run;
            "{message}"
        );
        match deletion {
            Deletion::Role { .. } => self.roles += 1,
            Deletion::Account { .. } => self.accounts += 1,
        }
    }

    /// Records a row that could not be deleted; the run goes on.
    pub fn failed(&mut self, what: &str, error: &str) {
        self.failed += 1;
        self.line(&format!("  [FAILED] {what}: {error}"));
        log::error!("failed to delete {what}: {error}");
    }

    /// Records a warning that belongs in the report too.
    pub fn warning(&mut self, text: &str) {
        self.line(&format!("  [WARNING] {text}"));
        log::warn!("{text}");
    }

    /// The closing lines and the summary journal entry.
    pub fn finish(&mut self, ending: &Ending) {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let counts = if self.dry_run {
            format!(
                "{} roles and {} accounts would be deleted (dry run: nothing was deleted)",
                self.roles, self.accounts
            )
        } else {
            format!(
                "{} roles and {} accounts deleted",
                self.roles, self.accounts
            )
        };
        let failed = if self.failed > 0 {
            format!(", {} failed", self.failed)
        } else {
            String::new()
        };
        let last = match ending {
            Ending::Completed => format!("COMPLETED: {counts}{failed}"),
            Ending::BrokeOff(error) => {
                format!("FAILED: run broke off after {counts}{failed}: {error}")
            }
        };
        self.blank();
        self.line(RULE);
        self.line(&last);
        let broke_off = matches!(ending, Ending::BrokeOff(_));
        let summary = format!("Run summary: {last}");
        let fields = (
            self.roles,
            self.accounts,
            self.failed,
            self.dry_run,
            duration_ms,
        );
        if broke_off || self.failed > 0 {
            log::error!(
                target: FINAL, message_id = SUMMARY_MESSAGE_ID, roles_deleted = fields.0,
                accounts_deleted = fields.1, failed = fields.2, dry_run = fields.3,
                duration_ms = fields.4;
                "{summary}"
            );
        } else {
            log::info!(
                target: FINAL, message_id = SUMMARY_MESSAGE_ID, roles_deleted = fields.0,
                accounts_deleted = fields.1, failed = fields.2, dry_run = fields.3,
                duration_ms = fields.4;
                "{summary}"
            );
        }
    }
}

fn describe(deletion: &Deletion) -> String {
    match deletion {
        Deletion::Role {
            role,
            profile_id,
            user_id,
            email,
        } => {
            let user = match user_id {
                Some(id) => format!("user {id}{}", email_suffix(*email)),
                None => "no user".to_owned(),
            };
            format!("role '{role}' (profile {profile_id}) of {user}")
        }
        Deletion::Account { user_id, email } => {
            format!("account of user {user_id}{}", email_suffix(*email))
        }
    }
}

fn email_suffix(email: Option<&str>) -> String {
    email.map(|email| format!(" <{email}>")).unwrap_or_default()
}

/// The journal fields of a deletion: type, role, user id, profile id, email ("" if none).
fn fields(deletion: &Deletion) -> (&'static str, String, String, String, String) {
    let text = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    match deletion {
        Deletion::Role {
            role,
            profile_id,
            user_id,
            email,
        } => (
            "role",
            (*role).to_owned(),
            text(*user_id),
            profile_id.to_string(),
            email.unwrap_or_default().to_owned(),
        ),
        Deletion::Account { user_id, email } => (
            "account",
            String::new(),
            user_id.to_string(),
            String::new(),
            email.unwrap_or_default().to_owned(),
        ),
    }
}
