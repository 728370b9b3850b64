//! The run report (stdout or `--report-file`) and the matching journal entries.
//!
//! It also keeps the first [`TRANSCRIPT_LINES`] lines of the report in memory, for the alert
//! sent after the run, and applies `--log-emails` to every address it shows (the audit table
//! keeps the full address; it is written by SQL, not here).
//!
//! The report keeps the old job's format, which operators already grep: every line starts
//! with `[YYYY-MM-DD HH:MM:SS] ` (blank separator lines stay blank, as in the setup guide),
//! and the last line is `COMPLETED: X roles and Y accounts deleted`.
//!
//! Each deletion is also one journal entry with the fields `DELETION_TYPE`, `ROLE`,
//! `USER_ID`, `PROFILE_ID` and `USER_EMAIL`; the run ends with one summary entry whose
//! `MESSAGE_ID` is [`SUMMARY_MESSAGE_ID`], rendered from the run's [`Summary`] like the last
//! line: the counts, `DURATION_MS`, `LONGEST_TRANSACTION_MS` (the longest of our
//! transactions that locked rows: the live app never waited on us for longer),
//! `P95_TRANSACTION_MS` and `TRANSACTIONS`. The report only renders: what the run did is
//! counted in the `Summary`, by the purge. A report file that cannot be written (disk full,
//! permissions) costs the report, never the run or the journal: the first write error is
//! logged as a warning and the rest of the report is dropped.
//!
//! The report is buffered and flushed after every batch ([`Report::flush`]) and at the end:
//! one `write` per batch instead of one per line, since a system call per line weighs on a
//! run that does little else, such as a dry run (BENCHMARKS.md, "Client CPU and output"). A
//! line is in the report at most one batch after its deletion committed; the journal entry
//! is sent at once.

use crate::config::EmailPolicy;
use crate::logging::FINAL;
use crate::summary::Summary;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;

/// `MESSAGE_ID` of the summary entry: `journalctl MESSAGE_ID=...` finds every run.
pub const SUMMARY_MESSAGE_ID: &str = "cb4d3d2f54e44f6a944cf560455a9e33";
/// `MESSAGE_ID` of the entry for a run that broke off.
pub const FAILURE_MESSAGE_ID: &str = "35c48abe2761481e94176b1b16c1e311";

const RULE: &str =
    "================================================================================";

/// What was (or, in a dry run, would be) deleted.
pub enum Deletion<'a> {
    /// A role profile; `user_id` is `None` for a profile without a user, and `user_missing`
    /// says that the user it names does not exist (a profile of the advertiser database,
    /// which has no foreign key to `users`).
    Role {
        role: &'a str,
        profile_id: i64,
        user_id: Option<i64>,
        email: Option<&'a str>,
        user_missing: bool,
    },
    /// A whole account.
    Account {
        user_id: i64,
        email: Option<&'a str>,
    },
}

/// Rows of one table that a deletion plan deleted or nullified before a unit.
pub struct Dependents {
    pub table: String,
    pub rows: i64,
}

/// One foreign key that blocks a deletion.
pub struct Blocker {
    /// The constraint's name.
    pub key: String,
    /// The referencing table.
    pub table: String,
    /// How many of its rows reference what the deletion would remove.
    pub rows: i64,
    /// The setting (or migration) that would unblock it.
    pub unblock: String,
}

/// Report lines kept for the alert; the rest is counted, not kept.
pub const TRANSCRIPT_LINES: usize = 200;

/// The report writer.
pub struct Report {
    out: BufWriter<Box<dyn Write>>,
    out_name: String,
    write_failed: bool,
    dry_run: bool,
    emails: EmailPolicy,
    transcript: Vec<String>,
    transcript_omitted: usize,
    /// The last line written, which ends the transcript even when lines were left out.
    last_line: String,
    stamp: Stamp,
    /// Which database the entries are about: the `DATABASE` journal field.
    database: Database,
}

/// The database a journal entry is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Database {
    #[default]
    User,
    Advertiser,
}

impl Database {
    fn field(self) -> &'static str {
        match self {
            Database::User => "user",
            Database::Advertiser => "advertiser",
        }
    }
}

/// The local time of a report line, to the second.
#[derive(Default)]
struct Stamp {
    second: Option<i64>,
    text: String,
}

impl Stamp {
    /// Now, as "2026-11-26 02:00:00". Thousands of lines share a second: the local time
    /// (the time zone lookup, which may change the offset at any second, say at 02:00 on a
    /// DST night) is worked out and formatted once per second, not once per line.
    fn now(&mut self) -> &str {
        let now = chrono::Utc::now();
        if self.second != Some(now.timestamp()) {
            self.second = Some(now.timestamp());
            self.text = now
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string();
        }
        &self.text
    }
}

impl Report {
    /// A report appended to `file`, or written to stdout. A file that cannot be opened is a
    /// warning; the report then goes to stdout.
    pub fn new(file: Option<&Path>, dry_run: bool, emails: EmailPolicy) -> Report {
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
            out: BufWriter::with_capacity(64 * 1024, out),
            out_name,
            write_failed: false,
            dry_run,
            emails,
            transcript: Vec::new(),
            transcript_omitted: 0,
            last_line: String::new(),
            stamp: Stamp::default(),
            database: Database::User,
        }
    }

    /// The database the following entries are about.
    pub fn set_database(&mut self, database: Database) {
        self.database = database;
    }

    /// Writes one timestamped line.
    pub fn line(&mut self, text: &str) {
        let line = format!("[{}] {text}", self.stamp.now());
        self.write(&line);
        self.keep(line);
    }

    /// Writes an empty separator line.
    pub fn blank(&mut self) {
        self.write("");
        self.keep(String::new());
    }

    fn keep(&mut self, line: String) {
        if self.transcript.len() < TRANSCRIPT_LINES {
            self.transcript.push(line);
        } else {
            self.transcript_omitted += 1;
            self.last_line = line;
        }
    }

    /// The report as kept for alerts: its first lines, a note of what was left out, and the
    /// last line.
    pub fn transcript(&self) -> String {
        let mut text = self.transcript.join("\n");
        if self.transcript_omitted > 1 {
            text.push_str(&format!(
                "\n... {} more lines in the report and the journal ...",
                self.transcript_omitted - 1
            ));
        }
        if self.transcript_omitted > 0 {
            text.push('\n');
            text.push_str(&self.last_line);
        }
        text
    }

    fn write(&mut self, line: &str) {
        if self.write_failed {
            return;
        }
        if let Err(error) = writeln!(self.out, "{line}") {
            self.write_error(&error);
        }
    }

    /// Writes out the buffered lines, the report's and the log's: after every batch, and at
    /// the end.
    pub fn flush(&mut self) {
        log::logger().flush();
        if self.write_failed {
            return;
        }
        if let Err(error) = self.out.flush() {
            self.write_error(&error);
        }
    }

    fn write_error(&mut self, error: &std::io::Error) {
        self.write_failed = true;
        log::warn!(
            "cannot write the run report to {}: {error}; the journal still records every \
             deletion",
            self.out_name
        );
    }

    /// The opening banner with `title`.
    pub fn banner(&mut self, title: &str) {
        self.line(RULE);
        if self.dry_run {
            self.line(&format!("{title} (DRY RUN: nothing is deleted)"));
        } else {
            self.line(title);
        }
        self.line(RULE);
        self.blank();
    }

    /// One deletion, in the report and the journal, with the rows of other tables the
    /// deletion plan deleted or nullified first.
    pub fn deleted(&mut self, deletion: &Deletion, dependents: &[Dependents]) {
        let verb = if self.dry_run {
            "WOULD DELETE"
        } else {
            "DELETED"
        };
        let text = describe(deletion, self.emails);
        let total: i64 = dependents.iter().map(|d| d.rows).sum();
        let with = match total {
            0 => String::new(),
            1 => " and 1 dependent row".to_owned(),
            n => format!(" and {n} dependent rows"),
        };
        self.line(&format!("  [{verb}] {text}{with}"));
        let (kind, role, user_id, profile_id, email) = fields(deletion, self.emails);
        let message = if self.dry_run {
            format!("Would delete {text}{with} (dry run)")
        } else {
            format!("Deleted {text}{with}")
        };
        if dependents.is_empty() {
            log::info!(
                deletion_type = kind, role = role, user_id = user_id, profile_id = profile_id,
                user_email = email, dry_run = self.dry_run, database = self.database.field();
                "{message}"
            );
        } else {
            let dependents = dependents
                .iter()
                .map(|d| format!("{}:{}", d.table, d.rows))
                .collect::<Vec<_>>()
                .join(",");
            log::info!(
                deletion_type = kind, role = role, user_id = user_id, profile_id = profile_id,
                user_email = email, dry_run = self.dry_run, dependents = dependents,
                database = self.database.field();
                "{message}"
            );
        }
    }

    /// A deletion that foreign keys block: nothing of it was changed.
    pub fn blocked(&mut self, deletion: &Deletion, blockers: &[Blocker]) {
        let text = describe(deletion, self.emails);
        let keys = blockers
            .iter()
            .map(|b| {
                let rows = if b.rows == 1 { "row" } else { "rows" };
                format!("{} ({}: {} {rows})", b.key, b.table, b.rows)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut unblock: Vec<&str> = blockers.iter().map(|b| b.unblock.as_str()).collect();
        unblock.dedup();
        let unblock = unblock.join(" and ");
        // The dry run says BLOCKED too: its lines are the ones the run would write.
        self.line(&format!(
            "  [BLOCKED] {text}: {keys}; unblocked by {unblock}"
        ));
        let (kind, role, user_id, profile_id, email) = fields(deletion, self.emails);
        let blocked_by = blockers
            .iter()
            .map(|b| format!("{}:{}", b.key, b.rows))
            .collect::<Vec<_>>()
            .join(",");
        log::error!(
            deletion_type = kind, role = role, user_id = user_id, profile_id = profile_id,
            user_email = email, dry_run = self.dry_run, blocked_by = blocked_by,
            database = self.database.field();
            "Blocked {text}: {keys}; unblocked by {unblock}"
        );
    }

    /// A due account held for manual review by `--hold-where`.
    pub fn held(&mut self, user_id: i64, email: Option<&str>) {
        let text = describe(&Deletion::Account { user_id, email }, self.emails);
        self.line(&format!(
            "  [HELD] {text}: matches --hold-where; delete it with `astegni-delete-expired \
             approve {user_id}`"
        ));
        let email = show_email(self.emails, email).unwrap_or_default();
        log::warn!(
            deletion_type = "account", user_id = user_id, user_email = email.as_ref(),
            held = true;
            "Held {text} for manual review (matches --hold-where)"
        );
    }

    /// A row that could not be deleted; the run goes on.
    pub fn failed(&mut self, what: &str, error: &str) {
        self.line(&format!("  [FAILED] {what}: {error}"));
        log::error!(database = self.database.field(); "failed to delete {what}: {error}");
    }

    /// Records a warning that belongs in the report too.
    pub fn warning(&mut self, text: &str) {
        self.line(&format!("  [WARNING] {text}"));
        log::warn!("{text}");
    }

    /// The closing lines and the summary journal entry, from the run's `summary`.
    pub fn finish(&mut self, summary: &Summary) {
        let last = summary.headline();
        self.blank();
        self.line(RULE);
        self.line(&last);
        self.flush();
        let level = if summary.has_trouble() {
            log::Level::Error
        } else {
            log::Level::Info
        };
        log::log!(
            target: FINAL, level, message_id = SUMMARY_MESSAGE_ID, roles_deleted = summary.counts.roles,
            accounts_deleted = summary.counts.accounts, failed = summary.counts.failed,
            dry_run = summary.dry_run, duration_ms = summary.duration.as_millis() as u64,
            longest_transaction_ms = summary.transactions.longest().as_millis() as u64,
            p95_transaction_ms = summary.transactions.percentile(95).as_millis() as u64,
            transactions = summary.transactions.count(),
            held = summary.counts.held, blocked = summary.counts.blocked;
            "Run summary: {last}"
        );
    }
}

fn describe(deletion: &Deletion, emails: EmailPolicy) -> String {
    match deletion {
        Deletion::Role {
            role,
            profile_id,
            user_id,
            email,
            user_missing,
        } => {
            let user = match (user_id, user_missing) {
                (Some(id), false) => format!("user {id}{}", email_suffix(emails, *email)),
                (Some(id), true) => format!("user {id}, who is not in the user database"),
                (None, _) => "no user".to_owned(),
            };
            format!("role '{role}' (profile {profile_id}) of {user}")
        }
        Deletion::Account { user_id, email } => {
            format!("account of user {user_id}{}", email_suffix(emails, *email))
        }
    }
}

fn email_suffix(emails: EmailPolicy, email: Option<&str>) -> String {
    show_email(emails, email)
        .map(|email| format!(" <{email}>"))
        .unwrap_or_default()
}

/// `email` as the policy allows it to be shown: whole, masked (`a***@example.com`), or not.
pub fn show_email(emails: EmailPolicy, email: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    let email = email?;
    match emails {
        EmailPolicy::Full => Some(email.into()),
        EmailPolicy::None => None,
        EmailPolicy::Masked => Some(match email.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}").into()
            }
            None => "***".into(),
        }),
    }
}

/// The journal fields of a deletion: type, role, user id, profile id, email ("" if none).
fn fields(
    deletion: &Deletion,
    emails: EmailPolicy,
) -> (&'static str, String, String, String, String) {
    let text = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    match deletion {
        Deletion::Role {
            role,
            profile_id,
            user_id,
            email,
            ..
        } => (
            "role",
            (*role).to_owned(),
            text(*user_id),
            profile_id.to_string(),
            show_email(emails, *email).unwrap_or_default().into_owned(),
        ),
        Deletion::Account { user_id, email } => (
            "account",
            String::new(),
            user_id.to_string(),
            String::new(),
            show_email(emails, *email).unwrap_or_default().into_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_shown_as_the_policy_says() {
        let email = Some("abebe@example.com");
        assert_eq!(show_email(EmailPolicy::Full, email).as_deref(), email);
        assert_eq!(
            show_email(EmailPolicy::Masked, email).as_deref(),
            Some("a***@example.com")
        );
        assert_eq!(
            show_email(EmailPolicy::Masked, Some("odd")).as_deref(),
            Some("***")
        );
        assert_eq!(show_email(EmailPolicy::None, email), None);
        assert_eq!(show_email(EmailPolicy::Full, None), None);
    }
}
