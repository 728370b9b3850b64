//! Connecting: TLS as `sslmode` asks, retries while the server is not reachable yet, and the
//! session settings every run relies on.
//!
//! TLS is set up by `tls`.
//!
//! After a boot the timer's catch-up run can start before PostgreSQL accepts connections, so
//! failures that can heal (refused, timed out, "the database system is starting up", too many
//! connections) are retried with backoff until `--connect-timeout`. Failures that cannot heal
//! (a wrong password, a missing database, a TLS policy the server does not meet) stop at once.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use postgres::Client;
use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::types::Type;

use crate::conninfo::{Target, TlsMode};
use crate::tls::Tls;

/// Why no connection could be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The server could not be reached before the timeout (exit 75).
    Unreachable(anyhow::Error),
    /// The server or the configuration refused the connection (exit 2).
    Refused(anyhow::Error),
}

/// Session settings applied right after connecting.
pub struct Session<'a> {
    pub timezone: Option<&'a str>,
    /// `--role-timezone`, when it differs from `timezone`.
    pub role_timezone: Option<&'a str>,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

/// Connects to `target`, retrying healable failures until `timeout` has passed. `which`
/// names the database in messages when there are two ("the advertiser database at "), and
/// is empty for the user database.
pub fn connect(target: &Target, which: &str, timeout: Duration) -> Result<Client, ConnectError> {
    let tls = Tls::new(target).map_err(ConnectError::Refused)?;
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(250);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Each attempt ends by the deadline, so the whole loop does too (give the first
        // attempt a moment even with --connect-timeout 0).
        let attempt_timeout = remaining.clamp(Duration::from_millis(200), Duration::from_secs(10));
        let (reason, healable) = match connect_within(target, &tls, attempt_timeout) {
            Attempt::Connected(client) => return Ok(*client),
            Attempt::Failed(error) => (error_text(&error), is_healable(&error)),
            Attempt::TimedOut => (
                format!("no answer within {}ms", attempt_timeout.as_millis()),
                true,
            ),
        };
        let description = format!("cannot connect to {which}{}: {reason}", target.describe());
        if !healable {
            return Err(ConnectError::Refused(anyhow!(description)));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ConnectError::Unreachable(anyhow!(
                "database unreachable after {attempts} attempt(s) in {}s: {description} \
                 (--connect-timeout SECS waits longer)",
                timeout.as_secs()
            )));
        }
        log::warn!("{description}; retrying (attempt {attempts})");
        std::thread::sleep(delay.min(remaining));
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The outcome of one connection attempt.
enum Attempt {
    Connected(Box<Client>),
    Failed(postgres::Error),
    /// The server accepted the connection but did not complete TLS, startup or
    /// authentication in time (the `postgres` crate bounds only the TCP connect).
    TimedOut,
}

/// One connection attempt, abandoned after `timeout` whatever it is waiting for. The
/// abandoned attempt's thread ends with the process.
fn connect_within(target: &Target, tls: &Tls, timeout: Duration) -> Attempt {
    let (sender, receiver) = std::sync::mpsc::channel();
    let (target, tls) = (target.clone(), tls.clone());
    let spawned = std::thread::Builder::new()
        .name("connect".to_owned())
        .spawn(move || {
            let _ = sender.send(connect_once(&target, &tls, timeout));
        });
    if spawned.is_err() {
        return Attempt::TimedOut;
    }
    // A little over the socket timeout, so that a refused or timed-out socket reports itself.
    match receiver.recv_timeout(timeout + Duration::from_millis(250)) {
        Ok(Ok(client)) => Attempt::Connected(Box::new(client)),
        Ok(Err(error)) => Attempt::Failed(error),
        Err(_) => Attempt::TimedOut,
    }
}

/// One connection attempt. As in libpq, `prefer` retries without TLS, and `allow` with TLS,
/// when the server turns the first try away (a `hostssl`/`hostnossl` rule, a failed
/// handshake).
fn connect_once(target: &Target, tls: &Tls, timeout: Duration) -> Result<Client, postgres::Error> {
    let mut config = target.config.clone();
    config.connect_timeout(timeout);
    let result = config.connect(tls.clone());
    let fallback = match target.tls_mode {
        TlsMode::Prefer => SslMode::Disable,
        TlsMode::Allow => SslMode::Require,
        _ => return result,
    };
    match result {
        Err(error) if is_turned_away(&error) => {
            config.ssl_mode(fallback);
            config.connect(tls.clone())
        }
        other => other,
    }
}

/// Whether the server refused this kind of connection (a pg_hba.conf rule for or against
/// TLS, or a failed handshake), so that the other kind may work. A wrong password (28P01)
/// would fail either way, and is reported as it is.
fn is_turned_away(error: &postgres::Error) -> bool {
    match error.as_db_error() {
        Some(db_error) => *db_error.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        None => crate::tls::is_tls_failure(error),
    }
}

/// Whether `error` means the connection is gone or was held up, rather than anything being
/// wrong with the configuration: such errors during setup end the run with exit 1, not 2.
pub fn is_connection_trouble(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.as_db_error() {
        Some(db_error) => {
            let code = db_error.code();
            sqlstate_class(code) == "08"
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::DATABASE_DROPPED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::QUERY_CANCELED,
                ]
                .contains(code)
        }
        None => is_healable(error),
    }
}

/// The class of a SQLSTATE: its first two characters ("08", connection exception). The
/// `SqlState` type names single codes; a class is what a whole family of codes shares.
pub fn sqlstate_class(code: &SqlState) -> &str {
    code.code().get(..2).unwrap_or_default()
}

fn is_healable(error: &postgres::Error) -> bool {
    if let Some(db_error) = error.as_db_error() {
        let code = db_error.code();
        return sqlstate_class(code) == "08"
            || [
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
            ]
            .contains(code);
    }
    if crate::tls::is_tls_failure(error) {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Applies the session settings; an invalid time zone is a configuration error.
pub fn configure_session(client: &mut Client, session: &Session) -> anyhow::Result<()> {
    client
        .query_typed(
            "SELECT set_config('lock_timeout', $1, false),
                    set_config('statement_timeout', $2, false),
                    set_config('idle_in_transaction_session_timeout', $3, false)",
            &[
                (&millis(session.lock_timeout), Type::TEXT),
                (&millis(session.statement_timeout), Type::TEXT),
                (
                    &millis(session.statement_timeout.max(Duration::from_secs(60))),
                    Type::TEXT,
                ),
            ],
        )
        .context("cannot apply session settings")?;
    if let Some(zone) = session.timezone {
        client
            .query_typed(
                "SELECT set_config('TimeZone', $1, false)",
                &[(&zone, Type::TEXT)],
            )
            .map_err(|error| anyhow!("invalid --timezone {zone:?}: {}", db_message(&error)))?;
    }
    if let Some(zone) = session.role_timezone {
        // Converting a time checks the zone; set_config alone would accept any text.
        client
            .query_typed(
                &format!(
                    "SELECT now() AT TIME ZONE $1, set_config('{}', $1, false)",
                    crate::due::ROLE_TIMEZONE_SETTING
                ),
                &[(&zone, Type::TEXT)],
            )
            .map_err(|error| anyhow!("invalid --role-timezone {zone:?}: {}", db_message(&error)))?;
    }
    Ok(())
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Starts a READ ONLY transaction: whatever runs in it cannot change the database.
pub fn read_only(client: &mut Client) -> anyhow::Result<postgres::Transaction<'_>> {
    client
        .build_transaction()
        .read_only(true)
        .start()
        .context("cannot start a read-only transaction")
}

/// The server's message for a database error, else the error's own text.
pub fn db_message(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db_error) => db_error.message().to_owned(),
        None => error_text(error),
    }
}

/// The error and its causes on one line: the `postgres` crate's own text stops at the
/// outermost cause ("db error", "error performing TLS handshake").
pub fn error_text(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
