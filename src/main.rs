//! astegni-delete-expired: permanently deletes Astegni roles and accounts whose 90-day grace
//! period has passed, logging every deletion.
//!
//! This file is the outline of a run: read the settings, connect, detect the schema, then
//! check or purge, and map what happened to an exit code (see `EXIT_*`). Each step lives in
//! its own module.

mod check;
mod config;
mod conninfo;
mod db;
mod envfile;
mod logging;
mod purge;
mod report;
mod schema;
mod sql;

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
    let code = match run(&settings) {
        Ok(code) => code,
        Err(Failure { code, error }) => {
            log::error!(
                target: logging::FINAL, message_id = FAILURE_MESSAGE_ID, exit_code = code;
                "{error:#}"
            );
            code
        }
    };
    ExitCode::from(code)
}

fn run(settings: &Settings) -> Result<u8, Failure> {
    let target = conninfo::parse(&settings.database_url).map_err(fail(EXIT_CONFIG))?;
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
    db::configure_session(&mut client, &session).map_err(fail(EXIT_CONFIG))?;
    let writes = settings.command == Command::Run && !settings.dry_run;
    let schema = schema::detect(
        &mut client,
        &settings.roles,
        settings.roles_explicit,
        writes,
    )
    .map_err(fail(EXIT_CONFIG))?;
    match settings.command {
        Command::Check => {
            check::run(&mut client, &schema, &mut std::io::stdout().lock())
                .map_err(fail(EXIT_FAILED))?;
            Ok(EXIT_OK)
        }
        Command::Run => {
            if writes && settings.audit && !schema.audit_exists {
                schema::create_audit_table(&mut client).map_err(fail(EXIT_CONFIG))?;
            }
            purge_and_report(&mut client, &schema, settings)
        }
    }
}

fn purge_and_report(
    client: &mut postgres::Client,
    schema: &schema::Schema,
    settings: &Settings,
) -> Result<u8, Failure> {
    let options = purge::Options {
        dry_run: settings.dry_run,
        audit: settings.audit,
        max_accounts: settings.max_accounts,
    };
    let mut report = Report::new(settings.report_file.as_deref(), settings.dry_run);
    match purge::run(client, schema, &options, &mut report) {
        Ok(outcome) => {
            report.finish(&Ending::Completed);
            Ok(match outcome {
                Outcome::Capped => EXIT_CAPPED,
                Outcome::Completed if report.failed > 0 => EXIT_FAILED,
                Outcome::Completed => EXIT_OK,
            })
        }
        Err(error) => {
            report.finish(&Ending::BrokeOff(&format!("{error:#}")));
            Err(Failure {
                code: EXIT_FAILED,
                error,
            })
        }
    }
}
