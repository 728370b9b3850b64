//! astegni-delete-expired: permanently deletes Astegni roles and accounts whose 90-day grace
//! period has passed, logging every deletion.
//!
//! This file is the outline of a run: read the settings, connect, detect the schema, then
//! run the command, and map what happened to an exit code (see `EXIT_*`) in one place,
//! [`exit_code`], from plain values: the run's [`Summary`] or the [`Failure`] that ended it.
//! Each step lives in its own module.

mod backup;
mod check;
mod config;
mod conninfo;
mod db;
mod due;
mod envfile;
mod json;
mod logging;
mod metrics;
mod notify;
mod pending;
mod plan;
mod purge;
mod report;
mod schema;
mod shell;
mod sql;
mod summary;
mod tls;
mod webhook;

use std::process::ExitCode;

use config::{ArgsError, Command, Parsed, Settings};
use purge::advertiser::Advertiser;
use report::{FAILURE_MESSAGE_ID, Report};
use summary::{Ending, Summary};

/// Done, also when nothing was due.
const EXIT_OK: u8 = 0;
/// Some deletions failed, or the run broke off.
const EXIT_FAILED: u8 = 1;
/// Usage or configuration error.
const EXIT_CONFIG: u8 = 2;
/// Refused by the safety cap (`--max-accounts`).
const EXIT_CAPPED: u8 = 3;
/// Refused by the backup interlock (`--require-backup`): no recent backup.
const EXIT_NO_BACKUP: u8 = 4;
/// The database could not be reached (EX_TEMPFAIL).
const EXIT_UNREACHABLE: u8 = 75;

/// An error that ends the run, with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

/// A failure while preparing a run: a configuration error (exit 2), unless the connection
/// was lost or held up on the way (exit 1, as for the run itself).
fn setup_failure(error: anyhow::Error) -> Failure {
    let trouble = error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<postgres::Error>())
        .any(db::is_connection_trouble);
    Failure {
        code: if trouble { EXIT_FAILED } else { EXIT_CONFIG },
        error,
    }
}

/// What a command that did not fail produced.
enum Done {
    /// `check` or `pending`: output written, nothing deleted.
    Listed,
    /// The job or `approve`: what it did, and the report it wrote (for the alert).
    Purged {
        summary: Box<Summary>,
        transcript: String,
    },
}

fn main() -> ExitCode {
    let settings = match config::parse_args(std::env::args_os().skip(1)) {
        Ok(Parsed::Settings(settings)) => settings,
        Ok(Parsed::Done) => return ExitCode::from(EXIT_OK),
        Err(ArgsError::Usage(error)) => {
            eprintln!("astegni-delete-expired: error: {error:#}");
            eprintln!("Try 'astegni-delete-expired --help' for more information.");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(ArgsError::Value(error)) => {
            eprintln!("astegni-delete-expired: error: {error:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let report_on_terminal =
        settings.report_file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    if let Some(warning) = logging::init(settings.log_target, report_on_terminal) {
        log::warn!("{warning}");
    }
    for warning in &settings.warnings {
        log::warn!("{warning}");
    }
    let code = if settings.command == Command::NotifyFailure {
        notify::notify_failure(&settings)
    } else {
        let started = std::time::Instant::now();
        let result = run(&settings);
        let code = exit_code(&result);
        log_failure(&result, code);
        alert(&settings, &result, code);
        write_metrics(&settings, &result, code, started.elapsed());
        code
    };
    // Info lines logged since the last batch (alerts sent, for one) may still be pending.
    log::logger().flush();
    ExitCode::from(code)
}

/// The exit code of a command's result.
fn exit_code(result: &Result<Done, Failure>) -> u8 {
    match result {
        Err(failure) => failure.code,
        Ok(Done::Listed) => EXIT_OK,
        Ok(Done::Purged { summary, .. }) => match summary.ending {
            Ending::Capped => EXIT_CAPPED,
            Ending::BrokeOff(_) => EXIT_FAILED,
            Ending::Completed if summary.has_trouble() => EXIT_FAILED,
            Ending::Completed if summary.backup_missing => EXIT_NO_BACKUP,
            Ending::Completed => EXIT_OK,
        },
    }
}

/// Logs the error that ended a command, at error priority with its exit code.
fn log_failure(result: &Result<Done, Failure>, code: u8) {
    let error = match result {
        Err(failure) => format!("{:#}", failure.error),
        Ok(Done::Purged { summary, .. }) => match &summary.ending {
            Ending::BrokeOff(error) => error.clone(),
            _ => return,
        },
        Ok(Done::Listed) => return,
    };
    log::error!(
        target: logging::FINAL, message_id = FAILURE_MESSAGE_ID, exit_code = code;
        "{error}"
    );
}

/// Alerts after the commands that delete, as `--notify-on` asks.
fn alert(settings: &Settings, result: &Result<Done, Failure>, code: u8) {
    if !matches!(settings.command, Command::Run | Command::Approve(_)) {
        return;
    }
    let (outcome, body, deleted) = match result {
        Ok(Done::Purged {
            summary,
            transcript,
        }) => (summary.headline(), transcript.clone(), summary.deleted()),
        Ok(Done::Listed) => return,
        Err(failure) => {
            let error = format!("{:#}", failure.error);
            (error.clone(), error, 0)
        }
    };
    let subject = if code == EXIT_OK {
        format!("Astegni deletion job: {outcome}")
    } else {
        format!("Astegni deletion job FAILED (exit {code}): {outcome}")
    };
    let alert = notify::Alert { subject, body };
    notify::after_run(settings, code, deleted, &alert);
}

/// Writes `--metrics-file` after a real run of the job (not a dry run, not `approve`: the
/// metrics watch the timer's runs).
fn write_metrics(
    settings: &Settings,
    result: &Result<Done, Failure>,
    code: u8,
    duration: std::time::Duration,
) {
    let Some(path) = &settings.metrics_file else {
        return;
    };
    if settings.command != Command::Run || settings.dry_run {
        return;
    }
    let summary = match result {
        Ok(Done::Purged { summary, .. }) => Some(summary.as_ref()),
        _ => None,
    };
    let run = metrics::LastRun {
        summary,
        exit_code: code,
        ended: std::time::SystemTime::now(),
        duration,
        two_databases: settings.advertiser_database_url.is_some(),
    };
    if let Err(error) = metrics::write(path, &run) {
        log::warn!("{error:#}");
    }
}

fn run(settings: &Settings) -> Result<Done, Failure> {
    let url = settings.database_url.as_deref().unwrap_or_default();
    let target = conninfo::parse(url)
        .map_err(|error| error.context(settings.database_url_from.clone()))
        .map_err(fail(EXIT_CONFIG))?;
    let mut client =
        db::connect(&target, "", settings.connect_timeout).map_err(|error| match error {
            db::ConnectError::Unreachable(error) => Failure {
                code: EXIT_UNREACHABLE,
                error,
            },
            db::ConnectError::Refused(error) => Failure {
                code: EXIT_CONFIG,
                error,
            },
        })?;
    let role_timezone = settings
        .role_timezone
        .as_deref()
        .filter(|zone| Some(*zone) != settings.timezone.as_deref());
    let session = db::Session {
        timezone: settings.timezone.as_deref(),
        role_timezone,
        lock_timeout: settings.lock_timeout,
        statement_timeout: settings.statement_timeout,
    };
    db::configure_session(&mut client, &session).map_err(setup_failure)?;
    let writes =
        matches!(settings.command, Command::Run | Command::Approve(_)) && !settings.dry_run;
    let expect = schema::Expect {
        roles: &settings.roles,
        roles_explicit: settings.roles_explicit,
        need_write: writes,
        role_zone: role_timezone.is_some(),
        keys: &settings.keys,
        advertiser_elsewhere: settings.advertiser_database_url.is_some(),
    };
    let schema = schema::detect(&mut client, &expect).map_err(setup_failure)?;
    let mut advertiser = match &settings.advertiser_database_url {
        Some(url) if !matches!(settings.command, Command::Approve(_)) => {
            Some(connect_advertiser(url, settings, &session, &expect)?)
        }
        _ => None,
    };
    if let Some(hold) = &settings.hold_where {
        schema::check_hold_rule(&mut client, hold).map_err(setup_failure)?;
    }
    let backup = check_backup(settings, writes, &mut client, advertiser.as_mut())?;
    if writes && settings.audit {
        prepare_audit(&mut client, &schema, &settings.command)?;
    }
    if writes && advertiser.is_some() && !schema.intents_exist {
        schema::create_intents_table(&mut client).map_err(setup_failure)?;
    }
    match &settings.command {
        Command::Check { graph: true } => {
            check::graph(&schema, advertiser.as_ref(), &mut std::io::stdout().lock())
                .map_err(fail(EXIT_FAILED))?;
            Ok(Done::Listed)
        }
        Command::Check { graph: false } => {
            let hold = settings.hold_where.as_deref();
            check::run(
                &mut client,
                &schema,
                advertiser.as_mut(),
                hold,
                backup.as_ref(),
                &mut std::io::stdout().lock(),
            )
            .map_err(fail(EXIT_FAILED))?;
            Ok(Done::Listed)
        }
        Command::Pending { days, json } => {
            let out = &mut std::io::stdout().lock();
            let listing = pending::Listing {
                hold: settings.hold_where.as_deref(),
                days: *days,
                json: *json,
                emails: settings.log_emails,
            };
            pending::run(&mut client, &schema, advertiser.as_mut(), &listing, out)
                .map_err(fail(EXIT_FAILED))?;
            Ok(Done::Listed)
        }
        Command::Run | Command::Approve(_) => Ok(purge_and_report(
            &mut client,
            &schema,
            advertiser.as_mut(),
            settings,
            backup,
        )),
        Command::NotifyFailure => Ok(Done::Listed),
    }
}

/// The backup interlock's finding, for the commands that delete or show it. A run that
/// `writes` and finds no recent backup fails here, before its first write.
fn check_backup(
    settings: &Settings,
    writes: bool,
    client: &mut postgres::Client,
    advertiser: Option<&mut Advertiser>,
) -> Result<Option<backup::Finding>, Failure> {
    let Some(requirement) = &settings.backup else {
        return Ok(None);
    };
    if !matches!(
        settings.command,
        Command::Run | Command::Approve(_) | Command::Check { graph: false }
    ) {
        return Ok(None);
    }
    let advertiser_db = match advertiser {
        Some(Advertiser::Ready { client, .. }) => Some(client.as_mut()),
        _ => None,
    };
    let finding = requirement.check(client, advertiser_db);
    if finding.recent {
        log::info!("backup check passed: {}", finding.text);
    } else if writes {
        return Err(Failure {
            code: EXIT_NO_BACKUP,
            error: requirement.refusal(&finding),
        });
    }
    Ok(Some(finding))
}

/// Connects to the advertiser database and reads its schema. A URL it cannot use, a
/// server that refuses it, or a schema that does not fit, is a configuration error (exit 2,
/// before anything changed); a server that cannot be reached fails only the advertiser part
/// of the run (exit 1), and the rest runs.
fn connect_advertiser(
    url: &str,
    settings: &Settings,
    session: &db::Session,
    expect: &schema::Expect,
) -> Result<Advertiser, Failure> {
    let in_advertiser_db = |error: anyhow::Error| error.context("the advertiser database");
    let target = conninfo::parse(url)
        .map_err(|error| {
            in_advertiser_db(error.context(settings.advertiser_database_url_from.clone()))
        })
        .map_err(fail(EXIT_CONFIG))?;
    let mut client = match db::connect(
        &target,
        "the advertiser database at ",
        settings.connect_timeout,
    ) {
        Ok(client) => client,
        Err(db::ConnectError::Unreachable(error)) => {
            let error = format!("{:#}", in_advertiser_db(error));
            log::error!(database = "advertiser"; "{error}");
            return Ok(Advertiser::Unreachable(error));
        }
        Err(db::ConnectError::Refused(error)) => {
            return Err(Failure {
                code: EXIT_CONFIG,
                error: in_advertiser_db(error),
            });
        }
    };
    db::configure_session(&mut client, session)
        .map_err(in_advertiser_db)
        .map_err(setup_failure)?;
    let advertiser = schema::detect_advertiser(&mut client, &settings.advertiser_role, expect)
        .map_err(in_advertiser_db)
        .map_err(setup_failure)?;
    Ok(Advertiser::Ready {
        client: Box::new(client),
        profile: Box::new(advertiser.profile),
    })
}

/// Creates the audit table if missing, and makes sure `approve` can mark its rows.
fn prepare_audit(
    client: &mut postgres::Client,
    schema: &schema::Schema,
    command: &Command,
) -> Result<(), Failure> {
    if !schema.audit_exists {
        schema::create_audit_table(client).map_err(setup_failure)?;
    } else if matches!(command, Command::Approve(_)) && !schema.audit_has_automated {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!(
                "deletion_audit_log has no automated column, so approved deletions cannot be \
                 told apart; add it (automated BOOLEAN DEFAULT TRUE) or use --no-audit"
            ),
        });
    }
    Ok(())
}

fn purge_and_report(
    client: &mut postgres::Client,
    schema: &schema::Schema,
    advertiser: Option<&mut Advertiser>,
    settings: &Settings,
    backup: Option<backup::Finding>,
) -> Done {
    let options = purge::Options {
        dry_run: settings.dry_run,
        audit: settings.audit,
        max_accounts: settings.max_accounts,
        hold: settings.hold_where.clone(),
        lock_timeout: settings.lock_timeout,
    };
    let mut report = Report::new(
        settings.report_file.as_deref(),
        settings.dry_run,
        settings.log_emails,
    );
    let mut summary = match &settings.command {
        Command::Approve(users) => purge::approve(client, schema, &options, users, &mut report),
        _ => purge::run(client, schema, &options, advertiser, &mut report),
    };
    match backup {
        Some(finding) if !finding.recent => {
            report.warning(&format!(
                "no recent backup: {}; the run would delete nothing",
                finding.text
            ));
            summary.backup_missing = true;
        }
        Some(finding) => report.line(&format!("  Backup: {}", finding.text)),
        None => {}
    }
    report.finish(&summary);
    Done::Purged {
        summary: Box::new(summary),
        transcript: report.transcript(),
    }
}
