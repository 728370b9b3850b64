//! The backup interlock (`--require-backup`): whether a recent enough backup exists, checked
//! before anything is deleted.
//!
//! The setup guide's first rule is "always ensure automated backups are running before
//! enabling automatic deletion"; this makes it an interlock instead of a checklist item. A
//! source is one of PostgreSQL's own WAL archiving (`pg_stat_archiver`, of every database the
//! run deletes from), the newest file of a backup path, or a command that says whether a
//! good backup exists. The check only reads; when it finds no recent backup, the run stops
//! before its first write (audit table creation included), so the database is left exactly
//! as it was.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use postgres::Client;

use crate::shell;

/// Where the evidence of a backup is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// PostgreSQL's WAL archiving, from `pg_stat_archiver`.
    Archiver,
    /// The modification time of a file, or of the newest file below a directory.
    File(PathBuf),
    /// A command whose exit status 0 means "a good backup exists".
    Command(String),
}

impl FromStr for Source {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Source, &'static str> {
        const EXPECTED: &str = "none, archiver, file:PATH or command:CMD";
        if text == "archiver" {
            return Ok(Source::Archiver);
        }
        if let Some(path) = text.strip_prefix("file:") {
            return match path.trim() {
                path if path.starts_with('/') => Ok(Source::File(PathBuf::from(path))),
                _ => Err("file: followed by an absolute path"),
            };
        }
        match text.strip_prefix("command:").map(str::trim) {
            Some(command) if !command.is_empty() => Ok(Source::Command(command.to_owned())),
            _ => Err(EXPECTED),
        }
    }
}

impl fmt::Display for Source {
    /// The source as `check` and the messages name it; never a command's text, which may
    /// carry a secret.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Archiver => write!(out, "archiver"),
            Source::File(path) => write!(out, "file:{}", path.display()),
            Source::Command(_) => write!(out, "command"),
        }
    }
}

/// The interlock as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct Requirement {
    pub source: Source,
    /// How old the newest backup may be (archiver and file).
    pub max_age: Duration,
    /// How long the command may run.
    pub command_timeout: Duration,
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Whether a recent enough backup exists.
    pub recent: bool,
    /// What was found, in words: "WAL archiving: the last file (...) was archived 0.4 h ago".
    pub text: String,
}

impl Finding {
    fn new(recent: bool, text: String) -> Finding {
        Finding { recent, text }
    }
}

impl Requirement {
    /// Checks the backup; the archiver source reads the databases the run deletes from.
    pub fn check(&self, user_db: &mut Client, advertiser_db: Option<&mut Client>) -> Finding {
        match &self.source {
            Source::Archiver => {
                let user = archiver(user_db, self.max_age);
                match advertiser_db.map(|client| archiver(client, self.max_age)) {
                    None => user,
                    Some(advertiser) => Finding::new(
                        user.recent && advertiser.recent,
                        format!("{}; advertiser database: {}", user.text, advertiser.text),
                    ),
                }
            }
            Source::File(path) => newest_file(path, self.max_age),
            Source::Command(command) => match shell::run(command, None, self.command_timeout) {
                Ok(()) => Finding::new(true, "the backup command succeeded".to_owned()),
                Err(error) => Finding::new(false, format!("the backup command failed: {error:#}")),
            },
        }
    }

    /// The error of a run the check refused: what was found, and how to override.
    pub fn refusal(&self, finding: &Finding) -> anyhow::Error {
        let limit = match self.source {
            Source::Command(_) => String::new(),
            _ => format!(", --backup-max-age {}", hours(self.max_age)),
        };
        anyhow::anyhow!(
            "no recent backup, so nothing was deleted: {} (--require-backup {}{limit}); make a \
             backup, or override once with --require-backup none",
            finding.text,
            self.source,
        )
    }
}

/// `pg_stat_archiver` of the database `client` is connected to.
fn archiver(client: &mut Client, max_age: Duration) -> Finding {
    let query = "SELECT last_archived_wal,
                        extract(epoch FROM now() - last_archived_time)::float8,
                        last_failed_wal,
                        to_char(last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                        coalesce(last_failed_time > last_archived_time, false),
                        current_setting('archive_mode')
                 FROM pg_stat_archiver";
    let row = match client.query_one(query, &[]) {
        Ok(row) => row,
        Err(error) => {
            return Finding::new(false, format!("cannot read pg_stat_archiver: {error}"));
        }
    };
    let wal: Option<String> = row.get(0);
    let age: Option<f64> = row.get(1);
    let failed_wal: Option<String> = row.get(2);
    let failed_at: Option<String> = row.get(3);
    let failing: bool = row.get(4);
    let mode: String = row.get(5);
    let (Some(wal), Some(age)) = (wal, age) else {
        return Finding::new(
            false,
            format!("WAL archiving has not archived any file (archive_mode is {mode})"),
        );
    };
    let age = Duration::from_secs_f64(age.max(0.0));
    let last = format!("the last WAL file ({wal}) was archived {} ago", hours(age));
    if failing {
        return Finding::new(
            false,
            format!(
                "WAL archiving is failing: archiving {} failed at {} UTC, after {last}",
                failed_wal.unwrap_or_default(),
                failed_at.unwrap_or_default()
            ),
        );
    }
    aged(format!("WAL archiving: {last}"), age, max_age)
}

/// The modification time of `path`, or of the newest file below it.
fn newest_file(path: &Path, max_age: Duration) -> Finding {
    let newest = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => newest_below(path),
        Ok(meta) => meta.modified().map(|time| Some((time, path.to_owned()))),
        Err(error) => Err(error),
    };
    match newest {
        Err(error) => Finding::new(
            false,
            format!("cannot read the backup path {}: {error}", path.display()),
        ),
        Ok(None) => Finding::new(false, format!("no backup file under {}", path.display())),
        Ok(Some((modified, file))) => {
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default();
            aged(
                format!(
                    "the backup file {} was modified {} ago",
                    file.display(),
                    hours(age)
                ),
                age,
                max_age,
            )
        }
    }
}

/// The newest regular file below `dir`, at any depth; links are not followed.
fn newest_below(dir: &Path) -> std::io::Result<Option<(SystemTime, PathBuf)>> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                let modified = meta.modified()?;
                if newest.as_ref().is_none_or(|(time, _)| modified > *time) {
                    newest = Some((modified, entry.path()));
                }
            }
        }
    }
    Ok(newest)
}

/// `what`, judged by its age against the limit.
fn aged(what: String, age: Duration, max_age: Duration) -> Finding {
    if age <= max_age {
        Finding::new(true, what)
    } else {
        Finding::new(false, format!("{what}, more than {}", hours(max_age)))
    }
}

/// An age or a limit, in hours as the limit is given ("26 h", "1.5 h"); under an hour in
/// minutes or seconds, which an hour's tenths would round away.
fn hours(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    let (value, unit) = match seconds {
        s if s >= 3600.0 => (s / 3600.0, "h"),
        s if s >= 60.0 => (s / 60.0, "min"),
        s => (s, "s"),
    };
    let text = format!("{value:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_name_themselves_without_the_command() {
        assert_eq!("archiver".parse(), Ok(Source::Archiver));
        assert_eq!(
            "file:/var/backups/astegni".parse(),
            Ok(Source::File(PathBuf::from("/var/backups/astegni")))
        );
        assert_eq!(
            "command:pgbackrest --stanza=astegni check".parse(),
            Ok(Source::Command(
                "pgbackrest --stanza=astegni check".to_owned()
            ))
        );
        assert!("file:relative/path".parse::<Source>().is_err());
        assert!("command:".parse::<Source>().is_err());
        assert!("s3://bucket".parse::<Source>().is_err());
        let secret = Source::Command("PGPASSWORD=hunter2 check".to_owned());
        assert_eq!(secret.to_string(), "command");
    }

    #[test]
    fn ages_are_judged_against_the_limit_and_shown_in_hours() {
        let limit = Duration::from_secs(26 * 3600);
        assert!(aged("x".into(), Duration::from_secs(3600), limit).recent);
        let old = aged("x".into(), Duration::from_secs(30 * 3600), limit);
        assert!(!old.recent);
        assert_eq!(old.text, "x, more than 26 h");
        assert_eq!(hours(Duration::from_secs(5400)), "1.5 h");
        assert_eq!(hours(Duration::from_secs(1440)), "24 min");
        assert_eq!(hours(Duration::from_millis(1080)), "1.1 s");
    }
}
