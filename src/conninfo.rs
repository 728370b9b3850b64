//! Turns a `DATABASE_URL` (URL or key=value conninfo) into a connection target.
//!
//! The `postgres` crate parses both forms itself but knows only `sslmode` disable, prefer and
//! require, and not `sslrootcert`. We take those two parameters out of the string first, hand
//! the rest to the crate's parser, and keep the TLS policy for `db::tls_connector`.
//!
//! Nothing here ever puts a parameter's value into an error message: the string holds the
//! password. The crate's own parse errors name only the option (``invalid value for option
//! `port` ``), which is why we keep using its parser.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, bail};

/// How the connection is protected, with libpq's meaning of each `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text only.
    Disable,
    /// Plain text first; TLS without verification if the server refuses plain text.
    Allow,
    /// TLS without verification when the server offers it; plain text if it refuses TLS.
    Prefer,
    /// TLS or fail; the certificate is verified only when `sslrootcert` names a CA file.
    Require,
    /// TLS with a certificate signed by a trusted CA; the host name is not checked.
    VerifyCa,
    /// TLS with a trusted certificate whose name matches the host.
    VerifyFull,
}

impl FromStr for TlsMode {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<TlsMode> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => bail!(
                "invalid sslmode {other:?} (expected disable, allow, prefer, require, verify-ca \
                 or verify-full)"
            ),
        })
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    /// Everything the `postgres` crate understands, with `ssl_mode` set from [`TlsMode`].
    pub config: postgres::Config,
    /// The requested TLS policy.
    pub tls_mode: TlsMode,
    /// CA certificates to trust instead of the system's, from `sslrootcert`.
    pub root_cert: Option<PathBuf>,
}

impl Target {
    /// A description safe for logs: user, hosts, ports and database, never the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = self.config.get_ports().iter().map(u16::to_string).collect();
        format!(
            "user={} host={} port={} dbname={}",
            self.config.get_user().unwrap_or("(default)"),
            if hosts.is_empty() {
                "(default)".to_owned()
            } else {
                hosts.join(",")
            },
            if ports.is_empty() {
                "5432".to_owned()
            } else {
                ports.join(",")
            },
            self.config.get_dbname().unwrap_or("(default)"),
        )
    }
}

/// Parses a connection string in URL or key=value form.
pub fn parse(connection_string: &str) -> anyhow::Result<Target> {
    let connection_string = connection_string.trim();
    if connection_string.is_empty() {
        bail!("the database URL is empty");
    }
    let (rest, tls) = if is_url(connection_string) {
        split_url_tls_params(connection_string)?
    } else {
        split_conninfo_tls_params(connection_string)?
    };
    let mut config = postgres::Config::from_str(&rest).context("invalid database URL")?;
    let tls_mode = match tls.mode {
        Some(mode) => mode.parse()?,
        None => TlsMode::Prefer,
    };
    config.ssl_mode(match tls_mode {
        TlsMode::Disable | TlsMode::Allow => postgres::config::SslMode::Disable,
        TlsMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    if config.get_application_name().is_none() {
        config.application_name(env!("CARGO_PKG_NAME"));
    }
    detect_dead_peers(&mut config);
    Ok(Target {
        config,
        tls_mode,
        root_cert: tls.root_cert.map(PathBuf::from),
    })
}

/// Unless the string says otherwise, notice within about a minute that a server or network
/// went silent mid-run (the system default keepalive waits two hours).
fn detect_dead_peers(config: &mut postgres::Config) {
    use std::time::Duration;
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(60));
    }
}

fn is_url(value: &str) -> bool {
    value.starts_with("postgresql://") || value.starts_with("postgres://")
}

#[derive(Default)]
struct TlsParams {
    mode: Option<String>,
    root_cert: Option<String>,
}

impl TlsParams {
    /// Takes `key`'s value if it is one of ours; returns whether it was.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.mode = Some(value),
            "sslrootcert" => self.root_cert = Some(value),
            _ => return false,
        }
        true
    }
}

fn split_url_tls_params(url: &str) -> anyhow::Result<(String, TlsParams)> {
    let mut tls = TlsParams::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), tls));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !tls.take(key, percent_decode(value)?) {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

fn percent_decode(value: &str) -> anyhow::Result<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = value
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            let Some(byte) = hex else {
                bail!("invalid percent-encoding in the database URL");
            };
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).context("invalid percent-encoding in the database URL")
}

/// Removes `sslmode` and `sslrootcert` from key=value conninfo, keeping the rest verbatim.
fn split_conninfo_tls_params(conninfo: &str) -> anyhow::Result<(String, TlsParams)> {
    let mut tls = TlsParams::default();
    let mut rest = String::with_capacity(conninfo.len());
    let mut scanner = ConninfoScanner {
        text: conninfo,
        position: 0,
    };
    while let Some((key, value, span)) = scanner.next_pair()? {
        if !tls.take(key, value) {
            rest.push_str(&conninfo[span.0..span.1]);
            rest.push(' ');
        }
    }
    Ok((rest.trim_end().to_owned(), tls))
}

/// One `key = value` pair: the key, the unquoted value, and the byte span it covered.
type Pair<'a> = (&'a str, String, (usize, usize));

struct ConninfoScanner<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> ConninfoScanner<'a> {
    /// The next `key = value` pair with its byte span, or `None` at the end.
    fn next_pair(&mut self) -> anyhow::Result<Option<Pair<'a>>> {
        self.skip_whitespace();
        if self.position >= self.text.len() {
            return Ok(None);
        }
        let start = self.position;
        let key_end = self.text[start..]
            .find(|c: char| c == '=' || c.is_whitespace())
            .map_or(self.text.len(), |offset| start + offset);
        let key = &self.text[start..key_end];
        self.position = key_end;
        self.skip_whitespace();
        if !self.text[self.position..].starts_with('=') {
            // Not `key`: in a string that is not conninfo at all it may be the password.
            bail!("invalid connection string: expected key=value pairs or a postgresql:// URL");
        }
        self.position += 1;
        self.skip_whitespace();
        let value = self.value()?;
        Ok(Some((key, value, (start, self.position))))
    }

    fn skip_whitespace(&mut self) {
        let rest = &self.text[self.position..];
        self.position += rest.len() - rest.trim_start().len();
    }

    fn value(&mut self) -> anyhow::Result<String> {
        let quoted = self.text[self.position..].starts_with('\'');
        if quoted {
            self.position += 1;
        }
        let mut value = String::new();
        let mut chars = self.text[self.position..].chars();
        while let Some(c) = chars.next() {
            self.position += c.len_utf8();
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        self.position += escaped.len_utf8();
                        value.push(escaped);
                    }
                }
                '\'' if quoted => return Ok(value),
                c if c.is_whitespace() && !quoted => {
                    self.position -= c.len_utf8();
                    return Ok(value);
                }
                c => value.push(c),
            }
        }
        if quoted {
            bail!("invalid connection string: unterminated quoted value");
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_parameters_are_taken_out() {
        let target = parse(
            "postgresql://app:s3cret@db.example.com:6543/astegni?sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(target.tls_mode, TlsMode::VerifyFull);
        assert_eq!(target.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(target.config.get_application_name(), Some("x"));
        assert_eq!(target.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(
            target.describe(),
            "user=app host=db.example.com port=6543 dbname=astegni"
        );
    }

    #[test]
    fn conninfo_tls_parameters_are_taken_out() {
        let target =
            parse("host=/run/postgresql password='a b\\'c' sslmode = verify-ca sslrootcert='/etc/my ca.pem' dbname=astegni")
                .unwrap();
        assert_eq!(target.tls_mode, TlsMode::VerifyCa);
        assert_eq!(target.root_cert, Some(PathBuf::from("/etc/my ca.pem")));
        assert_eq!(target.config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(target.config.get_dbname(), Some("astegni"));
    }

    #[test]
    fn default_is_prefer_and_application_name_is_ours() {
        let target = parse("postgres://localhost/astegni").unwrap();
        assert_eq!(target.tls_mode, TlsMode::Prefer);
        assert_eq!(
            target.config.get_application_name(),
            Some("astegni-delete-expired")
        );
    }

    #[test]
    fn errors_never_contain_the_password() {
        for bad in [
            "postgresql://app:hunter2@db:notaport/astegni",
            "postgresql://app:hunter2@db/astegni?sslmode=sometimes",
            "host=db password=hunter2 port=x",
            "host=db password='hunter2",
            "host=db password=hunter2 bogus=1",
            "postgresql://app:hunter2@db/astegni?sslrootcert=%zz",
        ] {
            let message = match parse(bad) {
                Ok(_) => panic!("{bad} accepted"),
                Err(error) => format!("{error:#}"),
            };
            assert!(!message.contains("hunter2"), "{bad}: {message}");
        }
    }
}
