//! The job's settings: command-line flags, then environment, then `--env-file`.
//!
//! Every setting has a flag and an environment variable, so that the systemd unit can take
//! them all from its `EnvironmentFile=` while a person at a terminal uses flags. A flag wins
//! over the environment, which wins over `--env-file`; an empty variable counts as unset, so
//! the package's config file can list every setting with an empty value. A single-valued flag
//! given twice is an error rather than a silent "last one wins".

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::envfile::{self, EnvFile};
use crate::sql::{TableName, is_plain_identifier};

/// What the program was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Delete what is due.
    Run,
    /// Connect, detect the schema, and print what is due.
    Check,
    /// Delete these held accounts, if they are due.
    Approve(Vec<i64>),
    /// List what will be deleted in the next `days` days.
    Pending { days: u32, json: bool },
    /// Alert that the service failed (run by the unit's `OnFailure=` hook).
    NotifyFailure,
}

/// Where log records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// The journal when its socket is reachable, else stderr.
    Auto,
    /// The journal, falling back to stderr if it cannot be reached.
    Journal,
    /// Standard error.
    Stderr,
}

/// When to send the run summary to the configured alert channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyOn {
    /// After every run.
    Always,
    /// When something was deleted, or the run did not succeed.
    Deletions,
    /// Only when the run did not succeed (exit code other than 0).
    Failure,
}

/// How email addresses appear in the report, the journal and alerts (never in the audit
/// table, which keeps what the setup guide specifies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailPolicy {
    Full,
    /// `a***@example.com`.
    Masked,
    None,
}

/// A role and the table holding its profiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleTable {
    /// The role name as it appears in `users.roles`.
    pub role: String,
    /// The profile table.
    pub table: TableName,
}

/// Everything a run needs to know.
#[derive(Debug)]
pub struct Settings {
    pub command: Command,
    /// Required by every command but `notify-failure`.
    pub database_url: Option<String>,
    pub timezone: Option<String>,
    pub roles: Vec<RoleTable>,
    /// Whether `roles` was given explicitly (then a missing table is an error).
    pub roles_explicit: bool,
    pub dry_run: bool,
    pub audit: bool,
    /// 0 means no limit.
    pub max_accounts: u64,
    pub log_target: LogTarget,
    pub report_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub notify_command: Option<String>,
    pub webhook_url: Option<String>,
    pub notify_on: NotifyOn,
    /// SQL boolean expression over `users`: due accounts matching it are held.
    pub hold_where: Option<String>,
    pub log_emails: EmailPolicy,
}

/// The outcome of reading the command line.
pub enum Parsed {
    /// Run with these settings.
    Settings(Box<Settings>),
    /// `--help` or `--version` was printed; exit 0.
    Done,
}

pub const DEFAULT_ROLES: [&str; 5] = ["student", "tutor", "parent", "advertiser", "user"];
const DEFAULT_MAX_ACCOUNTS: u64 = 1000;
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 60;
const DEFAULT_LOCK_TIMEOUT_SECS: u64 = 5;
const DEFAULT_STATEMENT_TIMEOUT_SECS: u64 = 300;
const DEFAULT_PENDING_DAYS: u64 = 7;

pub const HELP: &str = "\
astegni-delete-expired: permanently delete Astegni roles and accounts past their grace period

USAGE:
    astegni-delete-expired [OPTIONS]                  run the job
    astegni-delete-expired check [OPTIONS]            show the detected schema and what is due
    astegni-delete-expired pending [--days N] [--json] [OPTIONS]
                                                      what will be deleted in the next N days
                                                      [default: 7]
    astegni-delete-expired approve USER_ID... [OPTIONS]
                                                      delete held accounts (if due), audited
                                                      as not automated
    astegni-delete-expired notify-failure [OPTIONS]   alert that the service failed (used by
                                                      the unit's OnFailure= hook)

OPTIONS (each also read from the environment variable shown, or from --env-file):
    --database-url URL      DATABASE_URL               postgresql:// URL or key=value conninfo;
                                                       sslmode and sslrootcert are honoured
    --env-file PATH                                    dotenv file to read the variables from
    --timezone ZONE         ASTEGNI_TIMEZONE           session time zone for naive timestamps
                                                       [default: the server's]
    --role NAME=TABLE       ASTEGNI_ROLES              role and its profile table, repeatable
                                                       (env: comma-separated) [default:
                                                       student, tutor, parent, advertiser, user
                                                       -> <role>_profiles]
    --dry-run               ASTEGNI_DRY_RUN=true       report what would be deleted, change nothing
    --no-audit              ASTEGNI_NO_AUDIT=true      do not write deletion_audit_log
    --max-accounts N        ASTEGNI_MAX_ACCOUNTS       delete no account if more than N are due
                                                       [default: 1000; 0 = no limit]
    --hold-where SQL        ASTEGNI_HOLD_WHERE         boolean SQL over users: matching due
                                                       accounts are held for `approve`
    --log-target T          ASTEGNI_LOG_TARGET         auto, journal or stderr [default: auto]
    --log-emails E          ASTEGNI_LOG_EMAILS         full, masked or none [default: full]
    --report-file PATH      ASTEGNI_REPORT_FILE        append the run report there, not to stdout
    --notify-command CMD    ASTEGNI_NOTIFY_COMMAND     run by /bin/sh -c with the summary on stdin
    --webhook-url URL       ASTEGNI_WEBHOOK_URL        Slack-compatible webhook for the summary
    --notify-on WHEN        ASTEGNI_NOTIFY_ON          always, deletions or failure
                                                       [default: deletions]
    --connect-timeout SECS  ASTEGNI_CONNECT_TIMEOUT    keep retrying the connection this long
                                                       [default: 60]
    --lock-timeout SECS     ASTEGNI_LOCK_TIMEOUT       longest wait for a row another transaction
                                                       holds [default: 5]
    --statement-timeout SECS ASTEGNI_STATEMENT_TIMEOUT longest single statement [default: 300]
    -h, --help              print this help
    -V, --version           print the version

EXIT CODES:
    0   done (also when nothing was due)
    1   some deletions failed, or the run broke off
    2   usage or configuration error
    3   refused by the safety cap (--max-accounts)
    75  database unreachable
";

/// Flags that take one value, and the environment variable standing in for each.
const VALUED_FLAGS: [(&str, Option<&str>); 15] = [
    ("database-url", Some("DATABASE_URL")),
    ("env-file", None),
    ("timezone", Some("ASTEGNI_TIMEZONE")),
    ("max-accounts", Some("ASTEGNI_MAX_ACCOUNTS")),
    ("hold-where", Some("ASTEGNI_HOLD_WHERE")),
    ("log-target", Some("ASTEGNI_LOG_TARGET")),
    ("log-emails", Some("ASTEGNI_LOG_EMAILS")),
    ("report-file", Some("ASTEGNI_REPORT_FILE")),
    ("notify-command", Some("ASTEGNI_NOTIFY_COMMAND")),
    ("webhook-url", Some("ASTEGNI_WEBHOOK_URL")),
    ("notify-on", Some("ASTEGNI_NOTIFY_ON")),
    ("connect-timeout", Some("ASTEGNI_CONNECT_TIMEOUT")),
    ("lock-timeout", Some("ASTEGNI_LOCK_TIMEOUT")),
    ("statement-timeout", Some("ASTEGNI_STATEMENT_TIMEOUT")),
    ("days", None),
];

/// Flags without a value, and their environment variable.
const SWITCHES: [(&str, Option<&str>); 3] = [
    ("dry-run", Some("ASTEGNI_DRY_RUN")),
    ("no-audit", Some("ASTEGNI_NO_AUDIT")),
    ("json", None),
];

/// Flags as given, before the environment fills the gaps.
#[derive(Default)]
struct Flags {
    command: Option<String>,
    operands: Vec<String>,
    values: BTreeMap<&'static str, String>,
    roles: Vec<String>,
    switches: BTreeSet<&'static str>,
}

/// Reads the command line and the environment into [`Settings`].
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Parsed> {
    let Some(flags) = parse_flags(args)? else {
        return Ok(Parsed::Done);
    };
    let env_file = match flags.values.get("env-file") {
        Some(path) => envfile::read(Path::new(path))?,
        None => EnvFile::new(),
    };
    let lookup = Lookup {
        flags,
        process_env: true,
        env_file,
    };
    settings_from(&lookup).map(|settings| Parsed::Settings(Box::new(settings)))
}

fn parse_flags(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Option<Flags>> {
    use lexopt::prelude::*;

    let mut flags = Flags::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Long("role") => flags.roles.push(parser.value()?.string()?),
            Long(name) if VALUED_FLAGS.iter().any(|(flag, _)| *flag == name) => {
                let key = static_name(&VALUED_FLAGS, name);
                let value = parser.value()?.string()?;
                if value.starts_with("--") {
                    // `--database-url --dry-run`: a forgotten value, not a value.
                    bail!("--{key} needs a value");
                }
                if flags.values.insert(key, value).is_some() {
                    bail!("--{key} given more than once");
                }
            }
            Long(name) if SWITCHES.iter().any(|(flag, _)| *flag == name) => {
                let key = static_name(&SWITCHES, name);
                if !flags.switches.insert(key) {
                    bail!("--{key} given more than once");
                }
            }
            Value(value) if flags.command.is_none() => flags.command = Some(value.string()?),
            Value(value) => flags.operands.push(value.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Some(flags))
}

fn static_name(table: &[(&'static str, Option<&'static str>)], name: &str) -> &'static str {
    table
        .iter()
        .map(|(flag, _)| *flag)
        .find(|flag| *flag == name)
        .unwrap_or("")
}

/// Flags first, then the process environment, then the env file.
struct Lookup {
    flags: Flags,
    /// Whether to look at the process environment at all (unit tests do not).
    process_env: bool,
    env_file: EnvFile,
}

impl Lookup {
    /// The variable's value from the process environment, else the env file; empty is unset.
    fn env(&self, name: &str) -> anyhow::Result<Option<String>> {
        let from_env = match std::env::var(name) {
            _ if !self.process_env => None,
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not valid UTF-8"),
        };
        let value = from_env.or_else(|| self.env_file.get(name).cloned());
        Ok(value.filter(|value| !value.trim().is_empty()))
    }

    /// A valued flag's setting and where it came from (for messages).
    fn value(&self, flag: &'static str) -> anyhow::Result<Option<(String, String)>> {
        if let Some(value) = self.flags.values.get(flag) {
            return Ok(Some((value.clone(), format!("--{flag}"))));
        }
        let variable = VALUED_FLAGS
            .iter()
            .find(|(name, _)| *name == flag)
            .and_then(|(_, variable)| *variable);
        match variable {
            Some(variable) => Ok(self
                .env(variable)?
                .map(|value| (value, variable.to_owned()))),
            None => Ok(None),
        }
    }

    fn string(&self, flag: &'static str) -> anyhow::Result<Option<String>> {
        Ok(self.value(flag)?.map(|(value, _)| value))
    }

    fn switch(&self, flag: &'static str) -> anyhow::Result<bool> {
        if self.flags.switches.contains(flag) {
            return Ok(true);
        }
        let variable = SWITCHES
            .iter()
            .find(|(name, _)| *name == flag)
            .and_then(|(_, variable)| *variable);
        let Some(variable) = variable else {
            return Ok(false);
        };
        match self.env(variable)?.as_deref().map(str::trim) {
            None => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(_) => bail!("{variable} must be true or false"),
        }
    }

    fn number(&self, flag: &'static str, default: u64) -> anyhow::Result<u64> {
        let Some((text, source)) = self.value(flag)? else {
            return Ok(default);
        };
        text.trim().parse::<u64>().map_err(|_| {
            anyhow::anyhow!("{source} must be a non-negative whole number, not {text:?}")
        })
    }

    fn seconds(&self, flag: &'static str, default: u64) -> anyhow::Result<Duration> {
        let secs = self.number(flag, default)?;
        if secs > 86_400 {
            bail!("--{flag} must be at most 86400 seconds");
        }
        Ok(Duration::from_secs(secs))
    }

    /// A setting with a fixed set of values.
    fn choice<T: Copy>(
        &self,
        flag: &'static str,
        choices: &[(&str, T)],
        default: T,
    ) -> anyhow::Result<T> {
        let Some((text, source)) = self.value(flag)? else {
            return Ok(default);
        };
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        choices
            .iter()
            .find(|(name, _)| *name == text.trim())
            .map(|(_, value)| *value)
            .with_context(|| format!("invalid {source} {text:?} (expected {})", names.join(", ")))
    }
}

fn settings_from(lookup: &Lookup) -> anyhow::Result<Settings> {
    let command = command(lookup)?;
    let database_url = lookup.string("database-url")?;
    if database_url.is_none() && command != Command::NotifyFailure {
        bail!(
            "no database given: use --database-url, DATABASE_URL, or --env-file with DATABASE_URL"
        );
    }
    let (roles, roles_explicit) = roles(lookup)?;
    Ok(Settings {
        command,
        database_url,
        timezone: lookup.string("timezone")?,
        roles,
        roles_explicit,
        dry_run: lookup.switch("dry-run")?,
        audit: !lookup.switch("no-audit")?,
        max_accounts: lookup.number("max-accounts", DEFAULT_MAX_ACCOUNTS)?,
        log_target: lookup.choice(
            "log-target",
            &[
                ("auto", LogTarget::Auto),
                ("journal", LogTarget::Journal),
                ("stderr", LogTarget::Stderr),
            ],
            LogTarget::Auto,
        )?,
        report_file: lookup.string("report-file")?.map(PathBuf::from),
        connect_timeout: lookup.seconds("connect-timeout", DEFAULT_CONNECT_TIMEOUT_SECS)?,
        lock_timeout: lookup.seconds("lock-timeout", DEFAULT_LOCK_TIMEOUT_SECS)?,
        statement_timeout: lookup.seconds("statement-timeout", DEFAULT_STATEMENT_TIMEOUT_SECS)?,
        notify_command: lookup.string("notify-command")?,
        webhook_url: webhook_url(lookup)?,
        notify_on: lookup.choice(
            "notify-on",
            &[
                ("always", NotifyOn::Always),
                ("deletions", NotifyOn::Deletions),
                ("failure", NotifyOn::Failure),
            ],
            NotifyOn::Deletions,
        )?,
        hold_where: hold_where(lookup)?,
        log_emails: lookup.choice(
            "log-emails",
            &[
                ("full", EmailPolicy::Full),
                ("masked", EmailPolicy::Masked),
                ("none", EmailPolicy::None),
            ],
            EmailPolicy::Full,
        )?,
    })
}

fn command(lookup: &Lookup) -> anyhow::Result<Command> {
    let flags = &lookup.flags;
    let name = flags.command.as_deref().unwrap_or("run");
    let pending_only = flags.values.contains_key("days") || flags.switches.contains("json");
    if pending_only && name != "pending" {
        bail!("--days and --json go with the pending command");
    }
    if !flags.operands.is_empty() && name != "approve" {
        bail!("unexpected argument {:?}", flags.operands[0]);
    }
    Ok(match name {
        "run" => Command::Run,
        "check" => Command::Check,
        "notify-failure" => Command::NotifyFailure,
        "pending" => {
            let days = lookup.number("days", DEFAULT_PENDING_DAYS)?;
            Command::Pending {
                days: u32::try_from(days.min(36_500)).unwrap_or(36_500),
                json: flags.switches.contains("json"),
            }
        }
        "approve" => Command::Approve(user_ids(&flags.operands)?),
        other => bail!(
            "unknown command {other:?} (expected check, pending, approve or notify-failure, or \
             none to run the job)"
        ),
    })
}

fn user_ids(operands: &[String]) -> anyhow::Result<Vec<i64>> {
    if operands.is_empty() {
        bail!("approve needs at least one USER_ID");
    }
    let mut ids: Vec<i64> = operands
        .iter()
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .with_context(|| format!("invalid USER_ID {text:?}: expected a positive integer"))
        })
        .collect::<anyhow::Result<_>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn webhook_url(lookup: &Lookup) -> anyhow::Result<Option<String>> {
    let Some((url, source)) = lookup.value("webhook-url")? else {
        return Ok(None);
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        // The URL carries a secret: say what is wrong, not what it is.
        bail!("{source} must start with https:// or http://");
    }
    Ok(Some(url))
}

fn hold_where(lookup: &Lookup) -> anyhow::Result<Option<String>> {
    let Some((expression, source)) = lookup.value("hold-where")? else {
        return Ok(None);
    };
    // The expression is SQL by design (the operator's own rule); it goes into statements
    // inside parentheses, so refuse what could close them or start another statement.
    if expression.contains(';') || expression.contains("--") || expression.contains("/*") {
        bail!("{source} must be one boolean SQL expression, without ';' or comments");
    }
    let mut depth = 0i32;
    for c in expression.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            bail!("{source} has unbalanced parentheses");
        }
    }
    if depth != 0 {
        bail!("{source} has unbalanced parentheses");
    }
    Ok(Some(expression))
}

fn roles(lookup: &Lookup) -> anyhow::Result<(Vec<RoleTable>, bool)> {
    let specs: Vec<String> = if lookup.flags.roles.is_empty() {
        match lookup.env("ASTEGNI_ROLES")? {
            Some(list) => list.split(',').map(|spec| spec.trim().to_owned()).collect(),
            None => Vec::new(),
        }
    } else {
        lookup.flags.roles.clone()
    };
    if specs.is_empty() {
        let defaults = DEFAULT_ROLES
            .iter()
            .map(|role| role_table(&format!("{role}={role}_profiles")))
            .collect::<anyhow::Result<_>>()?;
        return Ok((defaults, false));
    }
    let mut roles: Vec<RoleTable> = Vec::with_capacity(specs.len());
    for spec in &specs {
        let role = role_table(spec)?;
        if roles.iter().any(|known| known.role == role.role) {
            bail!("role {:?} given more than once", role.role);
        }
        roles.push(role);
    }
    Ok((roles, true))
}

fn role_table(spec: &str) -> anyhow::Result<RoleTable> {
    let Some((role, table)) = spec.split_once('=') else {
        bail!("invalid role {spec:?}: expected NAME=TABLE, e.g. tutor=tutor_profiles");
    };
    let role = role.trim();
    if !is_plain_identifier(role) || role.len() > 50 {
        bail!(
            "invalid role name {role:?}: only letters, digits and underscores, at most 50 characters"
        );
    }
    Ok(RoleTable {
        role: role.to_owned(),
        table: TableName::parse(table.trim())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env_file: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let flags = parse_flags(args.iter().map(OsString::from))?.expect("not help");
        let lookup = Lookup {
            flags,
            process_env: false,
            env_file: env_file
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        settings_from(&lookup)
    }

    #[test]
    fn flags_win_over_the_env_file() {
        let settings = parse(
            &[
                "--database-url",
                "postgres://flag/db",
                "--max-accounts",
                "0",
            ],
            &[
                ("DATABASE_URL", "postgres://file/db"),
                ("ASTEGNI_MAX_ACCOUNTS", "5"),
            ],
        )
        .unwrap();
        assert_eq!(settings.database_url.as_deref(), Some("postgres://flag/db"));
        assert_eq!(settings.max_accounts, 0);
        assert_eq!(settings.command, Command::Run);
    }

    #[test]
    fn defaults_when_only_the_url_is_given() {
        let settings = parse(&["check"], &[("DATABASE_URL", "postgres://file/db")]).unwrap();
        assert_eq!(settings.command, Command::Check);
        assert_eq!(settings.max_accounts, 1000);
        assert!(settings.audit && !settings.dry_run && !settings.roles_explicit);
        assert_eq!(settings.roles.len(), 5);
        assert_eq!(settings.roles[1].table.to_string(), "tutor_profiles");
        assert_eq!(settings.connect_timeout, Duration::from_secs(60));
    }

    #[test]
    fn explicit_roles_replace_the_defaults() {
        let settings = parse(
            &["--role", "tutor=app.tutors", "--role", "student=students"],
            &[("DATABASE_URL", "x")],
        )
        .unwrap();
        assert!(settings.roles_explicit);
        assert_eq!(settings.roles.len(), 2);
        assert_eq!(settings.roles[0].table.quoted(), "\"app\".\"tutors\"");
    }

    #[test]
    fn bad_input_is_refused() {
        let url = [("DATABASE_URL", "x")];
        for args in [
            &["--role", "x=users; drop table users"][..],
            &["--role", "tutor"],
            &["--role", "tu tor=t"],
            &["--role", "a=t", "--role", "a=u"],
            &["--dry-run", "--dry-run"],
            &["--database-url", "a", "--database-url", "b"],
            &["--max-accounts", "-1"],
            &["--max-accounts", "lots"],
            &["--log-target", "syslog"],
            &["--bogus"],
            &["purge"],
            &["--connect-timeout", "999999"],
            &["--json"],
            &["check", "--days", "3"],
            &["approve"],
            &["approve", "12", "x"],
            &["approve", "-4"],
            &["check", "extra"],
            &["--webhook-url", "ftp://hooks.example.com/secret"],
            &["--notify-on", "sometimes"],
            &["--log-emails", "hidden"],
            &["--hold-where", "true); DELETE FROM users; --"],
            &["--hold-where", "(balance > 0"],
        ] {
            assert!(parse(args, &url).is_err(), "{args:?} accepted");
        }
        assert!(parse(&[], &[]).is_err(), "no database accepted");
        assert!(
            parse(&["notify-failure"], &[]).is_ok(),
            "notify-failure needs no database"
        );
        assert!(parse(&[], &[("DATABASE_URL", "x"), ("ASTEGNI_DRY_RUN", "maybe")]).is_err());
    }

    #[test]
    fn commands_and_their_operands() {
        let url = [("DATABASE_URL", "x")];
        let approve = parse(&["approve", "7", "3", "7"], &url).unwrap();
        assert_eq!(approve.command, Command::Approve(vec![3, 7]));
        let pending = parse(&["pending", "--days", "30", "--json"], &url).unwrap();
        assert_eq!(
            pending.command,
            Command::Pending {
                days: 30,
                json: true
            }
        );
        let pending = parse(&["pending"], &url).unwrap();
        assert_eq!(
            pending.command,
            Command::Pending {
                days: 7,
                json: false
            }
        );
        let alerts = parse(
            &["--notify-on", "always", "--log-emails", "masked"],
            &[
                ("DATABASE_URL", "x"),
                (
                    "ASTEGNI_WEBHOOK_URL",
                    "https://hooks.example.com/T/B/secret",
                ),
                (
                    "ASTEGNI_HOLD_WHERE",
                    "account_balance > 0 OR roles::text LIKE '%advertiser%'",
                ),
            ],
        )
        .unwrap();
        assert_eq!(alerts.notify_on, NotifyOn::Always);
        assert_eq!(alerts.log_emails, EmailPolicy::Masked);
        assert!(alerts.webhook_url.is_some() && alerts.hold_where.is_some());
    }

    #[test]
    fn errors_about_the_webhook_do_not_repeat_its_secret() {
        let error = parse(
            &[],
            &[
                ("DATABASE_URL", "x"),
                ("ASTEGNI_WEBHOOK_URL", "hooks/T0/secret"),
            ],
        )
        .unwrap_err();
        assert!(!format!("{error:#}").contains("secret"), "{error:#}");
    }
}
