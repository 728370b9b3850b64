//! The job's settings: command-line flags, then environment, then `--env-file`.
//!
//! Every setting has a flag and an environment variable, so that the systemd unit can take
//! them all from its `EnvironmentFile=` while a person at a terminal uses flags. A flag wins
//! over the environment, which wins over `--env-file`; an empty variable counts as unset, so
//! the package's config file can list every setting with an empty value. A single-valued flag
//! given twice is an error rather than a silent "last one wins".

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::envfile::{self, EnvFile};
use crate::sql::{TableName, is_plain_identifier};

/// What the program was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Delete what is due.
    Run,
    /// Connect, detect the schema, and print what is due.
    Check,
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
    pub database_url: String,
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

pub const HELP: &str = "\
astegni-delete-expired: permanently delete Astegni roles and accounts past their grace period

USAGE:
    astegni-delete-expired [OPTIONS]          run the job
    astegni-delete-expired check [OPTIONS]    show the detected schema and what is due

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
    --log-target T          ASTEGNI_LOG_TARGET         auto, journal or stderr [default: auto]
    --report-file PATH      ASTEGNI_REPORT_FILE        append the run report there, not to stdout
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

/// Flags as given, before the environment fills the gaps.
#[derive(Default)]
struct Flags {
    command: Option<Command>,
    database_url: Option<String>,
    env_file: Option<PathBuf>,
    timezone: Option<String>,
    roles: Vec<String>,
    dry_run: bool,
    no_audit: bool,
    max_accounts: Option<String>,
    log_target: Option<String>,
    report_file: Option<PathBuf>,
    connect_timeout: Option<String>,
    lock_timeout: Option<String>,
    statement_timeout: Option<String>,
}

/// Reads the command line and the environment into [`Settings`].
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Parsed> {
    let Some(flags) = parse_flags(args)? else {
        return Ok(Parsed::Done);
    };
    let env_file = match &flags.env_file {
        Some(path) => envfile::read(path)?,
        None => EnvFile::new(),
    };
    let source = Source {
        process_env: true,
        env_file,
    };
    settings_from(flags, &source).map(|settings| Parsed::Settings(Box::new(settings)))
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
            Long("database-url") => set_once(
                &mut flags.database_url,
                "--database-url",
                parser.value()?.string()?,
            )?,
            Long("env-file") => {
                set_once(&mut flags.env_file, "--env-file", parser.value()?.into())?
            }
            Long("timezone") => {
                set_once(&mut flags.timezone, "--timezone", parser.value()?.string()?)?
            }
            Long("role") => flags.roles.push(parser.value()?.string()?),
            Long("dry-run") => flags.dry_run = set_flag_once(flags.dry_run, "--dry-run")?,
            Long("no-audit") => flags.no_audit = set_flag_once(flags.no_audit, "--no-audit")?,
            Long("max-accounts") => set_once(
                &mut flags.max_accounts,
                "--max-accounts",
                parser.value()?.string()?,
            )?,
            Long("log-target") => set_once(
                &mut flags.log_target,
                "--log-target",
                parser.value()?.string()?,
            )?,
            Long("report-file") => set_once(
                &mut flags.report_file,
                "--report-file",
                parser.value()?.into(),
            )?,
            Long("connect-timeout") => set_once(
                &mut flags.connect_timeout,
                "--connect-timeout",
                parser.value()?.string()?,
            )?,
            Long("lock-timeout") => set_once(
                &mut flags.lock_timeout,
                "--lock-timeout",
                parser.value()?.string()?,
            )?,
            Long("statement-timeout") => set_once(
                &mut flags.statement_timeout,
                "--statement-timeout",
                parser.value()?.string()?,
            )?,
            Value(value) if flags.command.is_none() => {
                flags.command = Some(match value.string()?.as_str() {
                    "run" => Command::Run,
                    "check" => Command::Check,
                    other => bail!(
                        "unknown command {other:?} (expected check, or no command to run the job)"
                    ),
                });
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Some(flags))
}

fn set_once<T>(slot: &mut Option<T>, flag: &str, value: T) -> anyhow::Result<()> {
    if slot.is_some() {
        bail!("{flag} given more than once");
    }
    *slot = Some(value);
    Ok(())
}

fn set_flag_once(already: bool, flag: &str) -> anyhow::Result<bool> {
    if already {
        bail!("{flag} given more than once");
    }
    Ok(true)
}

/// The environment, then the env file: where settings not given as flags come from.
struct Source {
    /// Whether to look at the process environment at all (unit tests do not).
    process_env: bool,
    env_file: EnvFile,
}

impl Source {
    /// The variable's value from the process environment, else the env file; empty is unset.
    fn get(&self, name: &str) -> anyhow::Result<Option<String>> {
        let from_env = match std::env::var(name) {
            _ if !self.process_env => None,
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not valid UTF-8"),
        };
        let value = from_env.or_else(|| self.env_file.get(name).cloned());
        Ok(value.filter(|value| !value.trim().is_empty()))
    }

    fn bool(&self, name: &str) -> anyhow::Result<bool> {
        match self.get(name)?.as_deref().map(str::trim) {
            None => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(_) => bail!("{name} must be true or false"),
        }
    }
}

fn settings_from(flags: Flags, source: &Source) -> anyhow::Result<Settings> {
    let database_url = match flags.database_url {
        Some(url) => url,
        None => source.get("DATABASE_URL")?.context(
            "no database given: use --database-url, DATABASE_URL, or --env-file with DATABASE_URL",
        )?,
    };
    let (roles, roles_explicit) = roles(flags.roles, source)?;
    Ok(Settings {
        command: flags.command.unwrap_or(Command::Run),
        database_url,
        timezone: flags.timezone.or(source.get("ASTEGNI_TIMEZONE")?),
        roles,
        roles_explicit,
        dry_run: flags.dry_run || source.bool("ASTEGNI_DRY_RUN")?,
        audit: !(flags.no_audit || source.bool("ASTEGNI_NO_AUDIT")?),
        max_accounts: number(
            flags.max_accounts,
            source,
            "--max-accounts",
            "ASTEGNI_MAX_ACCOUNTS",
        )?
        .unwrap_or(DEFAULT_MAX_ACCOUNTS),
        log_target: log_target(flags.log_target.or(source.get("ASTEGNI_LOG_TARGET")?))?,
        report_file: flags
            .report_file
            .or(source.get("ASTEGNI_REPORT_FILE")?.map(PathBuf::from)),
        connect_timeout: seconds(
            flags.connect_timeout,
            source,
            "--connect-timeout",
            "ASTEGNI_CONNECT_TIMEOUT",
            DEFAULT_CONNECT_TIMEOUT_SECS,
        )?,
        lock_timeout: seconds(
            flags.lock_timeout,
            source,
            "--lock-timeout",
            "ASTEGNI_LOCK_TIMEOUT",
            DEFAULT_LOCK_TIMEOUT_SECS,
        )?,
        statement_timeout: seconds(
            flags.statement_timeout,
            source,
            "--statement-timeout",
            "ASTEGNI_STATEMENT_TIMEOUT",
            DEFAULT_STATEMENT_TIMEOUT_SECS,
        )?,
    })
}

fn roles(flag_values: Vec<String>, source: &Source) -> anyhow::Result<(Vec<RoleTable>, bool)> {
    let specs: Vec<String> = if flag_values.is_empty() {
        match source.get("ASTEGNI_ROLES")? {
            Some(list) => list.split(',').map(|spec| spec.trim().to_owned()).collect(),
            None => Vec::new(),
        }
    } else {
        flag_values
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

fn number(
    flag: Option<String>,
    source: &Source,
    flag_name: &str,
    env_name: &str,
) -> anyhow::Result<Option<u64>> {
    let (text, name) = match flag {
        Some(text) => (text, flag_name),
        None => match source.get(env_name)? {
            Some(text) => (text, env_name),
            None => return Ok(None),
        },
    };
    text.trim()
        .parse::<u64>()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{name} must be a non-negative whole number, not {text:?}"))
}

fn seconds(
    flag: Option<String>,
    source: &Source,
    flag_name: &str,
    env_name: &str,
    default: u64,
) -> anyhow::Result<Duration> {
    let secs = number(flag, source, flag_name, env_name)?.unwrap_or(default);
    if secs > 86_400 {
        bail!("{flag_name} must be at most 86400 seconds");
    }
    Ok(Duration::from_secs(secs))
}

fn log_target(value: Option<String>) -> anyhow::Result<LogTarget> {
    Ok(match value.as_deref() {
        None | Some("auto") => LogTarget::Auto,
        Some("journal") => LogTarget::Journal,
        Some("stderr") => LogTarget::Stderr,
        Some(other) => bail!("invalid log target {other:?} (expected auto, journal or stderr)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env_file: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let flags = parse_flags(args.iter().map(OsString::from))?.expect("not help");
        let source = Source {
            process_env: false,
            env_file: env_file
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        settings_from(flags, &source)
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
        assert_eq!(settings.database_url, "postgres://flag/db");
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
        ] {
            assert!(parse(args, &url).is_err(), "{args:?} accepted");
        }
        assert!(parse(&[], &[]).is_err(), "no database accepted");
        assert!(parse(&[], &[("DATABASE_URL", "x"), ("ASTEGNI_DRY_RUN", "maybe")]).is_err());
    }
}
