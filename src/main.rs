//! astegni-delete-expired: permanently deletes Astegni roles and accounts whose 90-day grace
//! period has passed, logging every deletion.
//!
//! This file is the outline of a run: read the settings, connect, detect the schema, then
//! run the command, alert, and map what happened to an exit code (see `EXIT_*`). Each step
//! lives in its own module.

mod check;
mod config;
mod conninfo;
mod db;
mod envfile;
mod json;
mod logging;
mod notify;
mod pending;
mod purge;
mod report;
mod schema;
mod sql;
mod tls;
mod webhook;

use std::process::ExitCode;

use config::{Command, Parsed, Settings};
use purge::Outcome;
use report::{Ending, FAILURE_MESSAGE_ID, Report};

/// Done, also when nothing was due.
const EXIT_OK: u8 = 0;
/// Some deletions failed, or the run broke off.
const EXIT_FAILED: u8 = 1;
/// Usage or configuration error.
const EXIT_CONFIG: u8 = 2;
/// Refused by the safety cap (`--max-accounts`).
const EXIT_CAPPED: u8 = 3;
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

/// What a finished command tells the alerting: its exit code, how many rows it deleted and
/// the report it wrote, if it wrote one.
struct Finished {
    code: u8,
    deleted: u64,
    report: Option<String>,
}

fn main() -> ExitCode {
    let settings = match config::parse_args(std::env::args_os().skip(1)) {
        Ok(Parsed::Settings(settings)) => settings,
        Ok(Parsed::Done) => return ExitCode::from(EXIT_OK),
        Err(error) => {
            eprintln!("astegni-delete-expired: error: {error:#}");
            eprintln!("Try 'astegni-delete-expired --help' for more information.");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(warning) = logging::init(settings.log_target) {
        log::warn!("{warning}");
    }
    let code = if settings.command == Command::NotifyFailure {
        notify::notify_failure(&settings)
    } else {
        run_and_alert(&settings)
    };
    // Info lines logged since the last batch (alerts sent, for one) may still be pending.
    log::logger().flush();
    ExitCode::from(code)
}

/// Runs the command and sends the alerts it calls for; returns the exit code.
fn run_and_alert(settings: &Settings) -> u8 {
    match run(settings) {
        Ok(finished) => {
            alert(settings, &finished, None);
            finished.code
        }
        Err(Failure { code, error }) => {
            log::error!(
                target: logging::FINAL, message_id = FAILURE_MESSAGE_ID, exit_code = code;
                "{error:#}"
            );
            let finished = Finished {
                code,
                deleted: 0,
                report: None,
            };
            alert(settings, &finished, Some(&format!("{error:#}")));
            code
        }
    }
}

/// Alerts after the commands that delete, as `--notify-on` asks.
fn alert(settings: &Settings, finished: &Finished, error: Option<&str>) {
    if !matches!(settings.command, Command::Run | Command::Approve(_)) {
        return;
    }
    let outcome = error
        .map(str::to_owned)
        .or_else(|| {
            finished
                .report
                .as_deref()
                .and_then(|report| report.lines().last())
                .and_then(|line| line.split_once("] ").map(|(_, text)| text.to_owned()))
        })
        .unwrap_or_default();
    let subject = if finished.code == EXIT_OK {
        format!("Astegni deletion job: {outcome}")
    } else {
        format!(
            "Astegni deletion job FAILED (exit {}): {outcome}",
            finished.code
        )
    };
    let body = finished.report.clone().unwrap_or_else(|| outcome.clone());
    let alert = notify::Alert { subject, body };
    notify::after_run(settings, finished.code, finished.deleted, &alert);
}

fn run(settings: &Settings) -> Result<Finished, Failure> {
    let url = settings.database_url.as_deref().unwrap_or_default();
    let target = conninfo::parse(url).map_err(fail(EXIT_CONFIG))?;
    let mut client =
        db::connect(&target, settings.connect_timeout).map_err(|error| match error {
            db::ConnectError::Unreachable(error) => Failure {
                code: EXIT_UNREACHABLE,
                error,
            },
            db::ConnectError::Refused(error) => Failure {
                code: EXIT_CONFIG,
                error,
            },
        })?;
    let session = db::Session {
        timezone: settings.timezone.as_deref(),
        lock_timeout: settings.lock_timeout,
        statement_timeout: settings.statement_timeout,
    };
    db::configure_session(&mut client, &session).map_err(setup_failure)?;
    let writes =
        matches!(settings.command, Command::Run | Command::Approve(_)) && !settings.dry_run;
    let schema = schema::detect(
        &mut client,
        &settings.roles,
        settings.roles_explicit,
        writes,
    )
    .map_err(setup_failure)?;
    if let Some(hold) = &settings.hold_where {
        schema::check_hold_rule(&mut client, hold).map_err(setup_failure)?;
    }
    if writes && settings.audit {
        prepare_audit(&mut client, &schema, &settings.command)?;
    }
    match &settings.command {
        Command::Check => {
            let hold = settings.hold_where.as_deref();
            check::run(&mut client, &schema, hold, &mut std::io::stdout().lock())
                .map_err(fail(EXIT_FAILED))?;
            Ok(quiet(EXIT_OK))
        }
        Command::Pending { days, json } => {
            let out = &mut std::io::stdout().lock();
            let hold = settings.hold_where.as_deref();
            pending::run(
                &mut client,
                &schema,
                hold,
                *days,
                *json,
                settings.log_emails,
                out,
            )
            .map_err(fail(EXIT_FAILED))?;
            Ok(quiet(EXIT_OK))
        }
        Command::Run | Command::Approve(_) => purge_and_report(&mut client, &schema, settings),
        Command::NotifyFailure => Ok(quiet(EXIT_OK)),
    }
}

fn quiet(code: u8) -> Finished {
    Finished {
        code,
        deleted: 0,
        report: None,
    }
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
    settings: &Settings,
) -> Result<Finished, Failure> {
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
    let result = match &settings.command {
        Command::Approve(users) => purge::approve(client, schema, &options, users, &mut report)
            .map(|()| Outcome::Completed),
        _ => purge::run(client, schema, &options, &mut report),
    };
    let deleted = if settings.dry_run {
        0
    } else {
        report.roles + report.accounts
    };
    match result {
        Ok(outcome) => {
            report.finish(&Ending::Completed);
            let code = match outcome {
                Outcome::Capped => EXIT_CAPPED,
                Outcome::Completed if report.failed > 0 => EXIT_FAILED,
                Outcome::Completed => EXIT_OK,
            };
            Ok(Finished {
                code,
                deleted,
                report: Some(report.transcript()),
            })
        }
        Err(error) => {
            report.finish(&Ending::BrokeOff(&format!("{error:#}")));
            log::error!(
                target: logging::FINAL, message_id = FAILURE_MESSAGE_ID, exit_code = EXIT_FAILED;
                "{error:#}"
            );
            Ok(Finished {
                code: EXIT_FAILED,
                deleted,
                report: Some(report.transcript()),
            })
        }
    }
}
