//! The job's settings: command-line flags, then environment, then `--env-file`.
//!
//! Every setting is one row of [`SETTINGS`]: its flag, its environment variable, its default
//! and its help line. `--help` is printed from that table, and a test checks that README, the
//! man page and the packaged config file mention every row. Reading the settings goes in two
//! steps, as ripgrep's `LowArgs` -> `HiArgs` do: the flags fill the fields of [`LowArgs`] (one
//! match arm per flag), the environment and the env file fill what the flags left empty, then
//! one validating conversion turns the text into the typed [`Settings`].
//!
//! A flag wins over the environment, which wins over `--env-file`; an empty variable counts
//! as unset, so the package's config file can list every setting with an empty value. A
//! single-valued flag given twice is an error rather than a silent "last one wins".

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::backup::Requirement;
use crate::envfile::{self, EnvFile};
use crate::plan::{KeyPolicy, KeyRule, Policy};
use crate::sql::{TableName, is_plain_identifier};

/// What the program was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Delete what is due.
    Run,
    /// Connect, detect the schema, and print what is due; or, with `graph`, the deletion
    /// plan in Graphviz DOT.
    Check { graph: bool },
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

impl FromStr for LogTarget {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<LogTarget, &'static str> {
        match text {
            "auto" => Ok(LogTarget::Auto),
            "journal" => Ok(LogTarget::Journal),
            "stderr" => Ok(LogTarget::Stderr),
            _ => Err("auto, journal, stderr"),
        }
    }
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

impl FromStr for NotifyOn {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<NotifyOn, &'static str> {
        match text {
            "always" => Ok(NotifyOn::Always),
            "deletions" => Ok(NotifyOn::Deletions),
            "failure" => Ok(NotifyOn::Failure),
            _ => Err("always, deletions, failure"),
        }
    }
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

impl FromStr for EmailPolicy {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<EmailPolicy, &'static str> {
        match text {
            "full" => Ok(EmailPolicy::Full),
            "masked" => Ok(EmailPolicy::Masked),
            "none" => Ok(EmailPolicy::None),
            _ => Err("full, masked, none"),
        }
    }
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
    /// The advertiser database, where the advertiser role's profiles live since the split.
    pub advertiser_database_url: Option<String>,
    /// Where the two URLs came from, for errors: the flag, or the variable (with the env
    /// file's path and line).
    pub database_url_from: String,
    pub advertiser_database_url_from: String,
    pub timezone: Option<String>,
    /// The zone of the profile tables' naive `scheduled_deletion_at`; None: as `timezone`.
    pub role_timezone: Option<String>,
    pub roles: Vec<RoleTable>,
    /// Whether `roles` was given explicitly (then a missing table is an error).
    pub roles_explicit: bool,
    /// The advertiser role's table in the advertiser database: as `roles` names it, else
    /// `advertiser_profiles`.
    pub advertiser_role: RoleTable,
    pub dry_run: bool,
    pub audit: bool,
    /// 0 means no limit.
    pub max_accounts: u64,
    pub log_target: LogTarget,
    pub report_file: Option<PathBuf>,
    /// Where a run writes its Prometheus metrics (node_exporter's textfile collector).
    pub metrics_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub notify_command: Option<String>,
    pub webhook_url: Option<String>,
    pub notify_on: NotifyOn,
    /// SQL boolean expression over `users`: due accounts matching it are held.
    pub hold_where: Option<String>,
    pub log_emails: EmailPolicy,
    /// What to do with foreign keys that do not cascade.
    pub keys: Policy,
    /// The backup interlock, if the operator turned it on.
    pub backup: Option<Requirement>,
    /// Warnings to log once logging is set up: env file keys that are not settings.
    pub warnings: Vec<String>,
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
/// At a terminal a person is waiting: a typo in the host should not cost a minute. Under
/// systemd (stderr is the journal) the minute covers a boot-time run before PostgreSQL.
const TERMINAL_CONNECT_TIMEOUT_SECS: u64 = 5;
const DEFAULT_LOCK_TIMEOUT_SECS: u64 = 5;
const DEFAULT_STATEMENT_TIMEOUT_SECS: u64 = 300;
const DEFAULT_PENDING_DAYS: u64 = 7;
const DEFAULT_BACKUP_MAX_AGE_HOURS: u64 = 26;
const DEFAULT_BACKUP_TIMEOUT_SECS: u64 = 120;

/// Which setting a row of [`SETTINGS`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    DatabaseUrl,
    AdvertiserDatabaseUrl,
    EnvFile,
    Timezone,
    RoleTimezone,
    Roles,
    DryRun,
    NoAudit,
    MaxAccounts,
    HoldWhere,
    LogTarget,
    LogEmails,
    ReportFile,
    MetricsFile,
    NotifyCommand,
    WebhookUrl,
    NotifyOn,
    ConnectTimeout,
    LockTimeout,
    StatementTimeout,
    ForeignKeys,
    ForeignKeyRules,
    RequireBackup,
    BackupMaxAge,
    BackupTimeout,
    Days,
    Json,
    Graph,
}

/// One setting: how it is given and what `--help` says of it.
pub struct Spec {
    key: Key,
    /// The long flag, without its dashes.
    pub flag: &'static str,
    /// The value's name in `--help` (`URL`), or None for a switch.
    value: Option<&'static str>,
    /// The environment variable, if the setting has one.
    pub env: Option<&'static str>,
    /// The default, as `--help` shows it.
    default: Option<&'static str>,
    /// The help text; lines after the first continue it.
    help: &'static str,
}

/// Every setting, in the order of `--help`.
pub const SETTINGS: &[Spec] = &[
    Spec {
        key: Key::DatabaseUrl,
        flag: "database-url",
        value: Some("URL"),
        env: Some("DATABASE_URL"),
        default: None,
        help: "postgresql:// URL or key=value conninfo; sslmode and sslrootcert are honoured",
    },
    Spec {
        key: Key::AdvertiserDatabaseUrl,
        flag: "advertiser-database-url",
        value: Some("URL"),
        env: Some("ADVERTISER_DATABASE_URL"),
        default: None,
        help: "the advertiser database, where the advertiser role's profiles are deleted",
    },
    Spec {
        key: Key::EnvFile,
        flag: "env-file",
        value: Some("PATH"),
        env: None,
        default: None,
        help: "dotenv file to read the variables from",
    },
    Spec {
        key: Key::Timezone,
        flag: "timezone",
        value: Some("ZONE"),
        env: Some("ASTEGNI_TIMEZONE"),
        default: Some("the server's"),
        help: "zone of the naive timestamps of users and account_deletion_requests",
    },
    Spec {
        key: Key::RoleTimezone,
        flag: "role-timezone",
        value: Some("ZONE"),
        env: Some("ASTEGNI_ROLE_TIMEZONE"),
        default: Some("as --timezone"),
        help: "zone of the profile tables' naive scheduled_deletion_at",
    },
    Spec {
        key: Key::Roles,
        flag: "role",
        value: Some("NAME=TABLE"),
        env: Some("ASTEGNI_ROLES"),
        default: Some("student, tutor, parent, advertiser, user -> <role>_profiles"),
        help: "role and its profile table, repeatable (env: comma-separated)",
    },
    Spec {
        key: Key::DryRun,
        flag: "dry-run",
        value: None,
        env: Some("ASTEGNI_DRY_RUN"),
        default: None,
        help: "report what would be deleted, change nothing",
    },
    Spec {
        key: Key::NoAudit,
        flag: "no-audit",
        value: None,
        env: Some("ASTEGNI_NO_AUDIT"),
        default: None,
        help: "do not write deletion_audit_log",
    },
    Spec {
        key: Key::MaxAccounts,
        flag: "max-accounts",
        value: Some("N"),
        env: Some("ASTEGNI_MAX_ACCOUNTS"),
        default: Some("1000; 0 = no limit"),
        help: "delete no account if more than N are due",
    },
    Spec {
        key: Key::HoldWhere,
        flag: "hold-where",
        value: Some("SQL"),
        env: Some("ASTEGNI_HOLD_WHERE"),
        default: None,
        help: "boolean SQL over users: matching due accounts are held for `approve`",
    },
    Spec {
        key: Key::LogTarget,
        flag: "log-target",
        value: Some("T"),
        env: Some("ASTEGNI_LOG_TARGET"),
        default: Some("auto"),
        help: "auto, journal or stderr",
    },
    Spec {
        key: Key::LogEmails,
        flag: "log-emails",
        value: Some("E"),
        env: Some("ASTEGNI_LOG_EMAILS"),
        default: Some("full"),
        help: "full, masked or none",
    },
    Spec {
        key: Key::ReportFile,
        flag: "report-file",
        value: Some("PATH"),
        env: Some("ASTEGNI_REPORT_FILE"),
        default: Some("stdout"),
        help: "append the run report there",
    },
    Spec {
        key: Key::MetricsFile,
        flag: "metrics-file",
        value: Some("PATH"),
        env: Some("ASTEGNI_METRICS_FILE"),
        default: None,
        help: "write the run's Prometheus metrics there (node_exporter textfile)",
    },
    Spec {
        key: Key::NotifyCommand,
        flag: "notify-command",
        value: Some("CMD"),
        env: Some("ASTEGNI_NOTIFY_COMMAND"),
        default: None,
        help: "run by /bin/sh -c with the summary on stdin",
    },
    Spec {
        key: Key::WebhookUrl,
        flag: "webhook-url",
        value: Some("URL"),
        env: Some("ASTEGNI_WEBHOOK_URL"),
        default: None,
        help: "Slack-compatible webhook for the summary",
    },
    Spec {
        key: Key::NotifyOn,
        flag: "notify-on",
        value: Some("WHEN"),
        env: Some("ASTEGNI_NOTIFY_ON"),
        default: Some("deletions"),
        help: "always, deletions or failure",
    },
    Spec {
        key: Key::ConnectTimeout,
        flag: "connect-timeout",
        value: Some("SECS"),
        env: Some("ASTEGNI_CONNECT_TIMEOUT"),
        default: Some("60; 5 at a terminal"),
        help: "keep retrying the connection this long (0: one attempt, no retry)",
    },
    Spec {
        key: Key::LockTimeout,
        flag: "lock-timeout",
        value: Some("SECS"),
        env: Some("ASTEGNI_LOCK_TIMEOUT"),
        default: Some("5"),
        help: "longest wait for a row another transaction holds",
    },
    Spec {
        key: Key::StatementTimeout,
        flag: "statement-timeout",
        value: Some("SECS"),
        env: Some("ASTEGNI_STATEMENT_TIMEOUT"),
        default: Some("300"),
        help: "longest single statement",
    },
    Spec {
        key: Key::ForeignKeys,
        flag: "foreign-keys",
        value: Some("POLICY"),
        env: Some("ASTEGNI_FOREIGN_KEYS"),
        default: Some("block"),
        help: "what to do with the rows of a foreign key that does not cascade: block (report \
               the deletion as blocked) or delete (delete them first, as a cascade would)",
    },
    Spec {
        key: Key::ForeignKeyRules,
        flag: "foreign-key",
        value: Some("[TABLE.]KEY=ACTION"),
        env: Some("ASTEGNI_FOREIGN_KEY_RULES"),
        default: None,
        help: "the policy of one foreign key: block, delete or nullify, repeatable (env: \
               comma-separated)",
    },
    Spec {
        key: Key::RequireBackup,
        flag: "require-backup",
        value: Some("SOURCE"),
        env: Some("ASTEGNI_REQUIRE_BACKUP"),
        default: Some("none"),
        help: "delete nothing unless a recent backup exists: archiver (WAL archiving), \
               file:PATH (newest file there) or command:CMD (exit status 0)",
    },
    Spec {
        key: Key::BackupMaxAge,
        flag: "backup-max-age",
        value: Some("HOURS"),
        env: Some("ASTEGNI_BACKUP_MAX_AGE"),
        default: Some("26"),
        help: "how old the newest backup may be",
    },
    Spec {
        key: Key::BackupTimeout,
        flag: "backup-timeout",
        value: Some("SECS"),
        env: Some("ASTEGNI_BACKUP_TIMEOUT"),
        default: Some("120"),
        help: "longest run of the backup command",
    },
    Spec {
        key: Key::Days,
        flag: "days",
        value: Some("N"),
        env: None,
        default: Some("7"),
        help: "pending: how many days ahead to list",
    },
    Spec {
        key: Key::Json,
        flag: "json",
        value: None,
        env: None,
        default: None,
        help: "pending: print JSON",
    },
    Spec {
        key: Key::Graph,
        flag: "graph",
        value: None,
        env: None,
        default: None,
        help: "check: print the deletion plan in Graphviz DOT",
    },
];

const USAGE: &str = "\
astegni-delete-expired: permanently delete Astegni roles and accounts past their grace period

USAGE:
    astegni-delete-expired [run] [OPTIONS]            run the job
    astegni-delete-expired check [OPTIONS]            show the detected schema and what is due
    astegni-delete-expired pending [--days N] [--json] [OPTIONS]
                                                      what will be deleted in the next N days
    astegni-delete-expired approve USER_ID... [OPTIONS]
                                                      delete held accounts (if due), audited
                                                      as not automated
    astegni-delete-expired notify-failure [OPTIONS]   alert that the service failed (used by
                                                      the unit's OnFailure= hook)
    astegni-delete-expired help [COMMAND]             this help, or a command's own

OPTIONS (each also read from the environment variable shown, or from --env-file):
";

const EXIT_CODES: &str = "    -h, --help              print this help
    -V, --version           print the version

EXIT CODES:
    0   done (also when nothing was due)
    1   some deletions failed, or the run broke off
    2   usage or configuration error
    3   refused by the safety cap (--max-accounts)
    4   refused: no recent backup (--require-backup)
    75  database unreachable
";

/// `--help`, printed from [`SETTINGS`].
pub fn help() -> String {
    let mut text = USAGE.to_owned();
    text.push_str(&option_rows(SETTINGS.iter()));
    text.push_str(EXIT_CODES);
    text
}

/// One command's own help: what it does, its options, an example.
struct CommandHelp {
    name: &'static str,
    usage: &'static str,
    about: &'static str,
    /// The flags of [`SETTINGS`] that shape this command most.
    flags: &'static [&'static str],
    example: &'static str,
}

const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "run",
        usage: "astegni-delete-expired [run] [OPTIONS]",
        about: "Deletes every role profile and account past its grace period, one audit row and \
                one log entry per deletion (the command the service runs; `run` may be left out).",
        flags: &[
            "dry-run",
            "foreign-keys",
            "foreign-key",
            "max-accounts",
            "hold-where",
            "require-backup",
            "report-file",
            "metrics-file",
        ],
        example: "astegni-delete-expired --env-file /etc/astegni/delete-expired.env --dry-run",
    },
    CommandHelp {
        name: "check",
        usage: "astegni-delete-expired check [--graph] [OPTIONS]",
        about: "Connects, detects the schema and prints what is due now and later, the foreign \
                keys on the deletion path and the backup state; changes nothing.",
        flags: &["graph", "foreign-keys", "foreign-key", "require-backup"],
        example: "astegni-delete-expired check --env-file /etc/astegni/delete-expired.env \
                  --graph | dot -Tsvg > plan.svg",
    },
    CommandHelp {
        name: "pending",
        usage: "astegni-delete-expired pending [--days N] [--json] [OPTIONS]",
        about: "Lists the roles and accounts due within N days, overdue ones included; changes \
                nothing.",
        flags: &["days", "json", "hold-where", "log-emails"],
        example: "astegni-delete-expired pending --env-file /etc/astegni/delete-expired.env \
                  --days 30",
    },
    CommandHelp {
        name: "approve",
        usage: "astegni-delete-expired approve USER_ID... [OPTIONS]",
        about: "Deletes accounts held by --hold-where, each only if it is due, audited as not \
                automated.",
        flags: &["dry-run", "require-backup", "report-file"],
        example: "astegni-delete-expired approve 123 456 --env-file /etc/astegni/delete-expired.env",
    },
    CommandHelp {
        name: "notify-failure",
        usage: "astegni-delete-expired notify-failure [OPTIONS]",
        about: "Alerts that the service failed, unless the failed run alerted itself; run by the \
                unit's OnFailure= hook.",
        flags: &["notify-command", "webhook-url"],
        example: "systemctl start astegni-delete-expired-notify-failure.service",
    },
];

/// `COMMAND --help` and `help COMMAND`; None for a name that is not a command.
pub fn command_help(name: &str) -> Option<String> {
    let command = COMMANDS.iter().find(|command| command.name == name)?;
    let mut text = format!("USAGE:\n    {}\n\n", command.usage);
    for line in wrap(command.about, 92) {
        let _ = writeln!(text, "{line}");
    }
    text.push_str("\nOPTIONS (all options: astegni-delete-expired --help):\n");
    let specs = command
        .flags
        .iter()
        .filter_map(|flag| SETTINGS.iter().find(|spec| spec.flag == *flag));
    text.push_str(&option_rows(specs));
    let _ = write!(text, "\nEXAMPLE:\n    {}\n", command.example);
    Some(text)
}

/// The option lines of `--help` for `specs`: flag, variable, help and default.
fn option_rows<'a>(specs: impl Iterator<Item = &'a Spec>) -> String {
    const FLAG_WIDTH: usize = 25;
    const ENV_WIDTH: usize = 26;
    const HELP_WIDTH: usize = 42;
    let mut text = String::new();
    for spec in specs {
        let flag = match spec.value {
            Some(value) => format!("--{} {value}", spec.flag),
            None => format!("--{}", spec.flag),
        };
        let env = match (spec.env, spec.value) {
            (Some(env), Some(_)) => env.to_owned(),
            (Some(env), None) => format!("{env}=true"),
            (None, _) => String::new(),
        };
        let mut help = spec.help.to_owned();
        if let Some(default) = spec.default {
            help.push_str(&format!(" [default: {default}]"));
        }
        let mut lines = wrap(&help, HELP_WIDTH).into_iter();
        let first = lines.next().unwrap_or_default();
        let _ = writeln!(text, "    {flag:<FLAG_WIDTH$} {env:<ENV_WIDTH$} {first}");
        for line in lines {
            let _ = writeln!(
                text,
                "{:indent$}{line}",
                "",
                indent = 4 + FLAG_WIDTH + ENV_WIDTH + 2
            );
        }
    }
    text
}

/// `text` in lines of at most `width` characters, broken between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// A value as given, and where from: the flag or the variable, for messages.
#[derive(Clone, Debug)]
struct Given {
    text: String,
    from: String,
}

/// The settings as given, before validation: one field per setting.
#[derive(Default)]
struct LowArgs {
    command: Option<String>,
    operands: Vec<String>,
    database_url: Option<Given>,
    advertiser_database_url: Option<Given>,
    env_file: Option<Given>,
    timezone: Option<Given>,
    role_timezone: Option<Given>,
    roles: Vec<Given>,
    dry_run: Option<Given>,
    no_audit: Option<Given>,
    max_accounts: Option<Given>,
    hold_where: Option<Given>,
    log_target: Option<Given>,
    log_emails: Option<Given>,
    report_file: Option<Given>,
    metrics_file: Option<Given>,
    notify_command: Option<Given>,
    webhook_url: Option<Given>,
    notify_on: Option<Given>,
    connect_timeout: Option<Given>,
    lock_timeout: Option<Given>,
    statement_timeout: Option<Given>,
    foreign_keys: Option<Given>,
    foreign_key_rules: Vec<Given>,
    require_backup: Option<Given>,
    backup_max_age: Option<Given>,
    backup_timeout: Option<Given>,
    days: Option<Given>,
    json: Option<Given>,
    graph: Option<Given>,
}

/// Where one setting's value goes in [`LowArgs`].
enum Slot<'a> {
    One(&'a mut Option<Given>),
    /// A repeatable flag; its variable is a comma-separated list.
    Many(&'a mut Vec<Given>),
}

impl LowArgs {
    fn slot(&mut self, key: Key) -> Slot<'_> {
        use Slot::{Many, One};
        match key {
            Key::DatabaseUrl => One(&mut self.database_url),
            Key::AdvertiserDatabaseUrl => One(&mut self.advertiser_database_url),
            Key::EnvFile => One(&mut self.env_file),
            Key::Timezone => One(&mut self.timezone),
            Key::RoleTimezone => One(&mut self.role_timezone),
            Key::Roles => Many(&mut self.roles),
            Key::DryRun => One(&mut self.dry_run),
            Key::NoAudit => One(&mut self.no_audit),
            Key::MaxAccounts => One(&mut self.max_accounts),
            Key::HoldWhere => One(&mut self.hold_where),
            Key::LogTarget => One(&mut self.log_target),
            Key::LogEmails => One(&mut self.log_emails),
            Key::ReportFile => One(&mut self.report_file),
            Key::MetricsFile => One(&mut self.metrics_file),
            Key::NotifyCommand => One(&mut self.notify_command),
            Key::WebhookUrl => One(&mut self.webhook_url),
            Key::NotifyOn => One(&mut self.notify_on),
            Key::ConnectTimeout => One(&mut self.connect_timeout),
            Key::LockTimeout => One(&mut self.lock_timeout),
            Key::StatementTimeout => One(&mut self.statement_timeout),
            Key::ForeignKeys => One(&mut self.foreign_keys),
            Key::ForeignKeyRules => Many(&mut self.foreign_key_rules),
            Key::RequireBackup => One(&mut self.require_backup),
            Key::BackupMaxAge => One(&mut self.backup_max_age),
            Key::BackupTimeout => One(&mut self.backup_timeout),
            Key::Days => One(&mut self.days),
            Key::Json => One(&mut self.json),
            Key::Graph => One(&mut self.graph),
        }
    }

    /// Fills what the flags left unset from `env` (the process environment, then the env
    /// file); an empty variable counts as unset.
    fn fill_from(
        &mut self,
        env: &dyn Fn(&str) -> anyhow::Result<Option<Given>>,
    ) -> anyhow::Result<()> {
        for spec in SETTINGS {
            let Some(variable) = spec.env else {
                continue;
            };
            match self.slot(spec.key) {
                Slot::One(slot) if slot.is_none() => *slot = env(variable)?,
                Slot::Many(slot) if slot.is_empty() => {
                    if let Some(list) = env(variable)? {
                        slot.extend(list.text.split(',').map(|text| Given {
                            text: text.trim().to_owned(),
                            from: list.from.clone(),
                        }));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Why the settings could not be read.
pub enum ArgsError {
    /// The command line itself: an unknown flag or command, a missing value; `--help` helps.
    Usage(anyhow::Error),
    /// A value, wherever it came from; the message says what is expected, and where from.
    Value(anyhow::Error),
}

/// Reads the command line and the environment into [`Settings`].
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, ArgsError> {
    let Some(mut low) = parse_flags(args).map_err(ArgsError::Usage)? else {
        return Ok(Parsed::Done);
    };
    let command = command(&low).map_err(ArgsError::Usage)?;
    let env_file = match &low.env_file {
        Some(path) => envfile::read(Path::new(&path.text)).map_err(ArgsError::Value)?,
        None => EnvFile::default(),
    };
    low.fill_from(&|name| environment(name, true, &env_file))
        .map_err(ArgsError::Value)?;
    let mut settings = Settings::from_low(low, command).map_err(ArgsError::Value)?;
    settings.warnings = unknown_keys(&env_file);
    Ok(Parsed::Settings(Box::new(settings)))
}

/// A variable's value from the process environment (if `process` is true), else the env
/// file, with where it came from; empty is unset.
fn environment(name: &str, process: bool, env_file: &EnvFile) -> anyhow::Result<Option<Given>> {
    let from_env = match std::env::var(name) {
        _ if !process => None,
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not valid UTF-8"),
    };
    let (text, from) = match (from_env, env_file.get(name), env_file.origin(name)) {
        (Some(text), _, _) => (text, name.to_owned()),
        (None, Some(text), Some(origin)) => (text.to_owned(), format!("{name} ({origin})")),
        _ => return Ok(None),
    };
    let text = text.trim();
    Ok((!text.is_empty()).then(|| Given {
        text: text.to_owned(),
        from,
    }))
}

/// Warnings for the env file's keys that look meant for the job but are not its settings:
/// an unknown `ASTEGNI_*` key, or a near miss of a setting's variable (`DATABSE_URL`). The
/// backend's other keys (`SECRET_KEY`, `REDIS_URL`...) pass silently.
fn unknown_keys(env_file: &EnvFile) -> Vec<String> {
    let known: Vec<&str> = SETTINGS.iter().filter_map(|spec| spec.env).collect();
    env_file
        .keys()
        .into_iter()
        .filter(|(key, _)| !known.contains(key))
        .filter_map(|(key, line)| {
            let nearest = known
                .iter()
                .map(|name| (edit_distance(key, name), *name))
                .min()
                .filter(|(distance, _)| *distance <= 2)
                .map(|(_, name)| name);
            let guess = nearest
                .map(|name| format!(" (did you mean {name}?)"))
                .unwrap_or_default();
            (key.starts_with("ASTEGNI_") || nearest.is_some()).then(|| {
                format!(
                    "env file {} line {line}: {key} is not a setting of this job{guess}; ignored",
                    env_file.path
                )
            })
        })
        .collect()
}

/// The Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn parse_flags(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Option<LowArgs>> {
    use lexopt::prelude::*;

    let mut low = LowArgs::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                // `check --help` or `--help check`: that command's help.
                let topic = low.command.clone().or_else(|| {
                    let mut rest = parser.raw_args().ok()?;
                    rest.find_map(|arg| arg.into_string().ok().filter(|a| !a.starts_with('-')))
                });
                let text = topic.as_deref().and_then(command_help);
                print!("{}", text.unwrap_or_else(help));
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Long("database-url") => once(&mut low.database_url, "database-url", &mut parser)?,
            Long("advertiser-database-url") => once(
                &mut low.advertiser_database_url,
                "advertiser-database-url",
                &mut parser,
            )?,
            Long("env-file") => once(&mut low.env_file, "env-file", &mut parser)?,
            Long("timezone") => once(&mut low.timezone, "timezone", &mut parser)?,
            Long("role-timezone") => once(&mut low.role_timezone, "role-timezone", &mut parser)?,
            Long("role") => low.roles.push(value(&mut parser, "role")?),
            Long("dry-run") => switch(&mut low.dry_run, "dry-run")?,
            Long("no-audit") => switch(&mut low.no_audit, "no-audit")?,
            Long("max-accounts") => once(&mut low.max_accounts, "max-accounts", &mut parser)?,
            Long("hold-where") => once(&mut low.hold_where, "hold-where", &mut parser)?,
            Long("log-target") => once(&mut low.log_target, "log-target", &mut parser)?,
            Long("log-emails") => once(&mut low.log_emails, "log-emails", &mut parser)?,
            Long("report-file") => once(&mut low.report_file, "report-file", &mut parser)?,
            Long("metrics-file") => once(&mut low.metrics_file, "metrics-file", &mut parser)?,
            Long("notify-command") => {
                once(&mut low.notify_command, "notify-command", &mut parser)?;
            }
            Long("webhook-url") => once(&mut low.webhook_url, "webhook-url", &mut parser)?,
            Long("notify-on") => once(&mut low.notify_on, "notify-on", &mut parser)?,
            Long("connect-timeout") => {
                once(&mut low.connect_timeout, "connect-timeout", &mut parser)?;
            }
            Long("lock-timeout") => once(&mut low.lock_timeout, "lock-timeout", &mut parser)?,
            Long("statement-timeout") => {
                once(&mut low.statement_timeout, "statement-timeout", &mut parser)?;
            }
            Long("foreign-keys") => once(&mut low.foreign_keys, "foreign-keys", &mut parser)?,
            Long("foreign-key") => low
                .foreign_key_rules
                .push(value(&mut parser, "foreign-key")?),
            Long("require-backup") => {
                once(&mut low.require_backup, "require-backup", &mut parser)?;
            }
            Long("backup-max-age") => {
                once(&mut low.backup_max_age, "backup-max-age", &mut parser)?;
            }
            Long("backup-timeout") => {
                once(&mut low.backup_timeout, "backup-timeout", &mut parser)?;
            }
            Long("days") => once(&mut low.days, "days", &mut parser)?,
            Long("json") => switch(&mut low.json, "json")?,
            Long("graph") => switch(&mut low.graph, "graph")?,
            Value(value) if low.command.is_none() => low.command = Some(value.string()?),
            Value(value) => low.operands.push(value.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    if low.command.as_deref() == Some("help") {
        let text = match low.operands.as_slice() {
            [] => help(),
            [topic] => command_help(topic).with_context(|| {
                let names: Vec<&str> = COMMANDS.iter().map(|command| command.name).collect();
                let (last, rest) = names.split_last().unwrap_or((&"run", &[]));
                format!(
                    "help: unknown command {topic:?} (expected {} or {last})",
                    rest.join(", ")
                )
            })?,
            _ => bail!("help takes one COMMAND"),
        };
        print!("{text}");
        return Ok(None);
    }
    Ok(Some(low))
}

/// The value of flag `--name`.
fn value(parser: &mut lexopt::Parser, name: &str) -> anyhow::Result<Given> {
    let text = lexopt::ValueExt::string(parser.value()?)?;
    if text.starts_with("--") {
        // `--database-url --dry-run`: a forgotten value, not a value.
        bail!("--{name} needs a value");
    }
    Ok(Given {
        text,
        from: format!("--{name}"),
    })
}

/// Sets a single-valued flag's slot, refusing a second value.
fn once(slot: &mut Option<Given>, name: &str, parser: &mut lexopt::Parser) -> anyhow::Result<()> {
    if slot.is_some() {
        bail!("--{name} given more than once");
    }
    *slot = Some(value(parser, name)?);
    Ok(())
}

/// Sets a switch's slot to true, refusing a second one.
fn switch(slot: &mut Option<Given>, name: &str) -> anyhow::Result<()> {
    if slot.is_some() {
        bail!("--{name} given more than once");
    }
    *slot = Some(Given {
        text: "true".to_owned(),
        from: format!("--{name}"),
    });
    Ok(())
}

impl Given {
    /// The value as `T`, or an error naming where it came from and what was expected.
    fn parse<T: FromStr<Err = &'static str>>(&self) -> anyhow::Result<T> {
        self.text.parse().map_err(|expected| {
            anyhow::anyhow!(
                "invalid {} {:?} (expected {expected})",
                self.from,
                self.text
            )
        })
    }

    fn switch(&self) -> anyhow::Result<bool> {
        match self.text.as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => bail!("{} must be true or false", self.from),
        }
    }

    fn number(&self) -> anyhow::Result<u64> {
        self.text.parse::<u64>().map_err(|_| {
            anyhow::anyhow!(
                "{} must be a non-negative whole number, not {:?}",
                self.from,
                self.text
            )
        })
    }

    /// Hours, possibly fractional ("0.5"), more than 0 and at most a year.
    fn hours(&self) -> anyhow::Result<Duration> {
        match self.text.parse::<f64>() {
            Ok(hours) if hours > 0.0 && hours <= 8760.0 => {
                Ok(Duration::from_secs_f64(hours * 3600.0))
            }
            _ => bail!(
                "{} must be a number of hours above 0 and at most 8760, not {:?}",
                self.from,
                self.text
            ),
        }
    }

    fn seconds(&self) -> anyhow::Result<Duration> {
        let secs = self.number()?;
        if secs > 86_400 {
            bail!("{} must be at most 86400 seconds", self.from);
        }
        Ok(Duration::from_secs(secs))
    }
}

/// Where a setting came from, or its variable's name when it was not given.
fn origin(given: &Option<Given>, variable: &str) -> String {
    given
        .as_ref()
        .map_or_else(|| variable.to_owned(), |given| given.from.clone())
}

fn text(given: Option<Given>) -> Option<String> {
    given.map(|given| given.text)
}

fn switch_or_false(given: &Option<Given>) -> anyhow::Result<bool> {
    given.as_ref().map_or(Ok(false), Given::switch)
}

fn number_or(given: &Option<Given>, default: u64) -> anyhow::Result<u64> {
    given.as_ref().map_or(Ok(default), Given::number)
}

fn seconds_or(given: &Option<Given>, default: u64) -> anyhow::Result<Duration> {
    given
        .as_ref()
        .map_or(Ok(Duration::from_secs(default)), Given::seconds)
}

fn parsed_or<T: FromStr<Err = &'static str>>(
    given: &Option<Given>,
    default: T,
) -> anyhow::Result<T> {
    given.as_ref().map_or(Ok(default), Given::parse)
}

impl Settings {
    /// The one validating conversion from the settings as given.
    fn from_low(low: LowArgs, command: Command) -> anyhow::Result<Settings> {
        if low.database_url.is_none() && command != Command::NotifyFailure {
            bail!(
                "no database given: use --database-url, DATABASE_URL, or --env-file with \
                 DATABASE_URL"
            );
        }
        let (roles, roles_explicit) = roles(&low.roles)?;
        let advertiser_role = match roles.iter().find(|role| role.role == "advertiser") {
            Some(role) => role.clone(),
            None => role_table("advertiser=advertiser_profiles")?,
        };
        let backup = backup(&low)?;
        Ok(Settings {
            advertiser_role,
            backup,
            warnings: Vec::new(),
            command,
            dry_run: switch_or_false(&low.dry_run)?,
            audit: !switch_or_false(&low.no_audit)?,
            max_accounts: number_or(&low.max_accounts, DEFAULT_MAX_ACCOUNTS)?,
            log_target: parsed_or(&low.log_target, LogTarget::Auto)?,
            connect_timeout: seconds_or(&low.connect_timeout, default_connect_timeout())?,
            lock_timeout: seconds_or(&low.lock_timeout, DEFAULT_LOCK_TIMEOUT_SECS)?,
            statement_timeout: seconds_or(&low.statement_timeout, DEFAULT_STATEMENT_TIMEOUT_SECS)?,
            webhook_url: webhook_url(low.webhook_url)?,
            notify_on: parsed_or(&low.notify_on, NotifyOn::Deletions)?,
            hold_where: hold_where(low.hold_where)?,
            log_emails: parsed_or(&low.log_emails, EmailPolicy::Full)?,
            keys: Policy {
                default: parsed_or(&low.foreign_keys, KeyPolicy::Block)?,
                rules: key_rules(&low.foreign_key_rules)?,
            },
            roles,
            roles_explicit,
            database_url_from: origin(&low.database_url, "DATABASE_URL"),
            advertiser_database_url_from: origin(
                &low.advertiser_database_url,
                "ADVERTISER_DATABASE_URL",
            ),
            database_url: text(low.database_url),
            advertiser_database_url: text(low.advertiser_database_url),
            timezone: text(low.timezone),
            role_timezone: text(low.role_timezone),
            report_file: text(low.report_file).map(PathBuf::from),
            metrics_file: metrics_file(low.metrics_file)?,
            notify_command: text(low.notify_command),
        })
    }
}

/// The backup interlock: `--require-backup` other than `none`, with its limits.
fn backup(low: &LowArgs) -> anyhow::Result<Option<Requirement>> {
    let max_age = match &low.backup_max_age {
        Some(given) => given.hours()?,
        None => Duration::from_secs(DEFAULT_BACKUP_MAX_AGE_HOURS * 3600),
    };
    let command_timeout = seconds_or(&low.backup_timeout, DEFAULT_BACKUP_TIMEOUT_SECS)?;
    match &low.require_backup {
        Some(given) if given.text != "none" => Ok(Some(Requirement {
            source: given.parse()?,
            max_age,
            command_timeout,
        })),
        _ => Ok(None),
    }
}

/// The connect timeout when none is given: short at a terminal, a minute otherwise.
fn default_connect_timeout() -> u64 {
    if std::io::stderr().is_terminal() {
        TERMINAL_CONNECT_TIMEOUT_SECS
    } else {
        DEFAULT_CONNECT_TIMEOUT_SECS
    }
}

fn command(low: &LowArgs) -> anyhow::Result<Command> {
    let name = low.command.as_deref().unwrap_or("run");
    if (low.days.is_some() || low.json.is_some()) && name != "pending" {
        bail!("--days and --json go with the pending command");
    }
    if low.graph.is_some() && name != "check" {
        bail!("--graph goes with the check command");
    }
    if !low.operands.is_empty() && name != "approve" {
        bail!("unexpected argument {:?}", low.operands[0]);
    }
    Ok(match name {
        "run" => Command::Run,
        "check" => Command::Check {
            graph: low.graph.is_some(),
        },
        "notify-failure" => Command::NotifyFailure,
        "pending" => {
            let days = number_or(&low.days, DEFAULT_PENDING_DAYS)?;
            Command::Pending {
                days: u32::try_from(days.min(36_500)).unwrap_or(36_500),
                json: low.json.is_some(),
            }
        }
        "approve" => Command::Approve(user_ids(&low.operands)?),
        other => bail!(
            "unknown command {other:?} (expected check, pending, approve, notify-failure or help, or \
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

fn webhook_url(given: Option<Given>) -> anyhow::Result<Option<String>> {
    let Some(Given { text: url, from }) = given else {
        return Ok(None);
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        // The URL carries a secret: say what is wrong, not what it is.
        bail!("{from} must start with https:// or http://");
    }
    Ok(Some(url))
}

fn metrics_file(given: Option<Given>) -> anyhow::Result<Option<PathBuf>> {
    let Some(Given { text: path, from }) = given else {
        return Ok(None);
    };
    // node_exporter's textfile collector reads only `*.prom`: any other name would never be
    // collected, and the alert on stale metrics would be the first sign.
    if !path.ends_with(".prom") || path.ends_with("/.prom") || path == ".prom" {
        bail!("{from} must name a file ending in .prom (node_exporter reads only those): {path}");
    }
    Ok(Some(PathBuf::from(path)))
}

fn hold_where(given: Option<Given>) -> anyhow::Result<Option<String>> {
    let Some(Given {
        text: expression,
        from,
    }) = given
    else {
        return Ok(None);
    };
    // The expression is SQL by design (the operator's own rule); it goes into statements
    // inside parentheses, so refuse what could close them or start another statement.
    if expression.contains(';') || expression.contains("--") || expression.contains("/*") {
        bail!("{from} must be one boolean SQL expression, without ';' or comments");
    }
    let mut depth = 0i32;
    for c in expression.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            bail!("{from} has unbalanced parentheses");
        }
    }
    if depth != 0 {
        bail!("{from} has unbalanced parentheses");
    }
    Ok(Some(expression))
}

fn key_rules(given: &[Given]) -> anyhow::Result<Vec<KeyRule>> {
    given
        .iter()
        .map(|rule| {
            rule.text.parse().map_err(|problem| {
                anyhow::anyhow!("invalid {} {:?}: {problem}", rule.from, rule.text)
            })
        })
        .collect()
}

fn roles(given: &[Given]) -> anyhow::Result<(Vec<RoleTable>, bool)> {
    if given.is_empty() {
        let defaults = DEFAULT_ROLES
            .iter()
            .map(|role| role_table(&format!("{role}={role}_profiles")))
            .collect::<anyhow::Result<_>>()?;
        return Ok((defaults, false));
    }
    let mut roles: Vec<RoleTable> = Vec::with_capacity(given.len());
    for spec in given {
        let role = role_table(&spec.text)?;
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
        let mut low = parse_flags(args.iter().map(OsString::from))?.expect("not help");
        let text: String = env_file
            .iter()
            .map(|(key, value)| {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{key}=\"{escaped}\"\n")
            })
            .collect();
        let env_file = envfile::parse(&text, "test.env")?;
        low.fill_from(&|name| environment(name, false, &env_file))?;
        let command = command(&low)?;
        Settings::from_low(low, command)
    }

    #[test]
    fn env_file_keys_meant_for_the_job_but_unknown_are_warned_about() {
        let file = envfile::parse(
            "SECRET_KEY=x\nASTEGNI_LOG_TARGT=stderr\nDATABSE_URL=y\nREDIS_URL=z\n\
             ASTEGNI_NEW_THING=1\nDATABASE_URL=ok\nASTEGNI_DRY_RUN=\n",
            "/etc/x.env",
        )
        .unwrap();
        assert_eq!(
            unknown_keys(&file),
            [
                "env file /etc/x.env line 2: ASTEGNI_LOG_TARGT is not a setting of this job \
                 (did you mean ASTEGNI_LOG_TARGET?); ignored",
                "env file /etc/x.env line 3: DATABSE_URL is not a setting of this job (did you \
                 mean DATABASE_URL?); ignored",
                "env file /etc/x.env line 5: ASTEGNI_NEW_THING is not a setting of this job; \
                 ignored",
            ]
        );
        assert_eq!(edit_distance("DATABASE_URL", "DATABASE_URL"), 0);
        assert_eq!(edit_distance("DATABSE_URL", "DATABASE_URL"), 1);
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
        assert_eq!(settings.command, Command::Check { graph: false });
        assert_eq!(settings.max_accounts, 1000);
        assert!(settings.audit && !settings.dry_run && !settings.roles_explicit);
        assert_eq!(settings.roles.len(), 5);
        assert_eq!(settings.roles[1].table.to_string(), "tutor_profiles");
        assert_eq!(settings.connect_timeout, Duration::from_secs(60));
        assert_eq!(settings.role_timezone, None);
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
        let from_env = parse(
            &[],
            &[
                ("DATABASE_URL", "x"),
                ("ASTEGNI_ROLES", "tutor=tutors, student=students"),
                ("ASTEGNI_ROLE_TIMEZONE", "UTC"),
            ],
        )
        .unwrap();
        assert_eq!(from_env.roles.len(), 2);
        assert_eq!(from_env.roles[1].table.quoted(), "\"students\"");
        assert_eq!(from_env.role_timezone.as_deref(), Some("UTC"));
        let keys = parse(
            &["--foreign-keys", "delete"],
            &[
                ("DATABASE_URL", "x"),
                (
                    "ASTEGNI_FOREIGN_KEY_RULES",
                    "users.users_kyc_fkey=nullify, otps_user_id_fkey=block",
                ),
            ],
        )
        .unwrap();
        assert_eq!(keys.keys.default, KeyPolicy::Delete);
        assert_eq!(keys.keys.rules.len(), 2);
        assert_eq!(keys.keys.rules[0].table.as_deref(), Some("users"));
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
            &["--graph"],
            &["--webhook-url", "ftp://hooks.example.com/secret"],
            &[
                "--metrics-file",
                "/var/lib/prometheus/node-exporter/astegni.txt",
            ],
            &["--metrics-file", "/var/lib/prometheus/node-exporter/.prom"],
            &["--notify-on", "sometimes"],
            &["--log-emails", "hidden"],
            &["--hold-where", "true); DELETE FROM users; --"],
            &["--hold-where", "(balance > 0"],
            &["--timezone", "--dry-run"],
            &["--foreign-keys", "cascade"],
            &["--foreign-key", "otps_user_id_fkey=drop"],
            &["--foreign-key", "otps_user_id_fkey"],
        ] {
            assert!(parse(args, &url).is_err(), "{args:?} accepted");
        }
        assert!(parse(&[], &[]).is_err(), "no database accepted");
        assert!(
            parse(&["notify-failure"], &[]).is_ok(),
            "notify-failure needs no database"
        );
        assert!(parse(&[], &[("DATABASE_URL", "x"), ("ASTEGNI_DRY_RUN", "maybe")]).is_err());
        let error = parse(
            &[],
            &[("DATABASE_URL", "x"), ("ASTEGNI_LOG_TARGET", "syslog")],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "invalid ASTEGNI_LOG_TARGET (test.env line 2) \"syslog\" (expected auto, journal, \
             stderr)"
        );
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

    #[test]
    fn every_flag_has_its_match_arm_and_its_help_line() {
        let help = help();
        for spec in SETTINGS {
            let flag = format!("--{}", spec.flag);
            assert!(help.contains(&flag), "{flag} missing from --help");
            if let Some(env) = spec.env {
                assert!(help.contains(env), "{env} missing from --help");
            }
            let mut args = vec![flag.clone()];
            if spec.value.is_some() {
                args.push("x".to_owned());
            }
            let error = parse_flags(args.iter().map(OsString::from))
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
            assert!(
                !error.contains("invalid option"),
                "{flag} has no match arm: {error}"
            );
        }
    }

    /// The documents operators read name every setting: its flag in README and the man
    /// page, its variable there and in the packaged config file.
    #[test]
    fn readme_man_page_and_config_file_mention_every_setting() {
        let readme = include_str!("../README.md");
        let man = include_str!("../packaging/astegni-delete-expired.8").replace("\\-", "-");
        let env_file = include_str!("../packaging/delete-expired.env");
        for spec in SETTINGS {
            let flag = format!("--{}", spec.flag);
            assert!(readme.contains(&flag), "README.md does not mention {flag}");
            assert!(man.contains(&flag), "the man page does not mention {flag}");
            if let Some(env) = spec.env {
                assert!(readme.contains(env), "README.md does not mention {env}");
                assert!(man.contains(env), "the man page does not mention {env}");
                assert!(
                    env_file.contains(env),
                    "packaging/delete-expired.env does not mention {env}"
                );
            }
        }
    }
}
