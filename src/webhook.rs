//! POSTs a Slack-compatible `{"text": ...}` message to a webhook, over HTTPS or HTTP.
//!
//! One small request per run does not justify an HTTP client crate and its TLS stack: this is
//! HTTP/1.1 with `Connection: close` over `std::net`, and OpenSSL (already linked for
//! PostgreSQL) for HTTPS, verifying the certificate and host name against the system's trust
//! store (`SSL_CERT_FILE` is honoured). Each attempt has a short timeout; failures that can
//! heal (network errors, 5xx, 429) are retried a couple of times.
//!
//! A webhook URL is a credential (Slack's path *is* the secret), so messages name only its
//! scheme and host, never its path.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use openssl::ssl::{SslConnector, SslMethod};

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

/// The parts of a webhook URL.
struct Url {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    fn parse(url: &str) -> anyhow::Result<Url> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!("the webhook URL must start with https:// or http://");
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority, if https { 443 } else { 80 })?;
        Ok(Url {
            https,
            host,
            port,
            path: path.to_owned(),
        })
    }
}

fn split_host_port(authority: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    if authority.contains('@') {
        bail!("the webhook URL must not contain user information");
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .context("the webhook URL has an unterminated [IPv6] host")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("the webhook URL has no host");
    }
    let port = match port {
        Some(port) => port
            .parse()
            .ok()
            .context("the webhook URL has an invalid port")?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

/// The URL without its secret part, for messages: `https://hooks.slack.com/...`.
pub fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}:{}/...",
            if parsed.https { "https" } else { "http" },
            parsed.host,
            parsed.port
        ),
        Err(_) => "(invalid webhook URL)".to_owned(),
    }
}

/// Posts `{"text": text}` to `url`, retrying failures that can heal.
pub fn post(url: &str, text: &str) -> anyhow::Result<()> {
    let parsed = Url::parse(url)?;
    let body = format!("{{\"text\":{}}}", crate::json::string(text));
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        match post_once(&parsed, &body) {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            Ok(status) if status == 429 || status >= 500 => {
                last_error = Some(anyhow::anyhow!("HTTP status {status}"));
            }
            Ok(status) => bail!("{} answered HTTP status {status}", redacted(url)),
            Err(error) => last_error = Some(error),
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(Duration::from_secs(u64::from(attempt)));
        }
    }
    let error = last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made"));
    Err(error.context(format!(
        "webhook {} failed after {ATTEMPTS} attempts",
        redacted(url)
    )))
}

/// One request; returns the HTTP status code.
fn post_once(url: &Url, body: &str) -> anyhow::Result<u16> {
    let address = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", url.host))?
        .next()
        .with_context(|| format!("{} has no address", url.host))?;
    let stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .with_context(|| format!("cannot connect to {}:{}", url.host, url.port))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        url.path,
        url.host,
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if url.https {
        let connector = SslConnector::builder(SslMethod::tls())
            .context("cannot set up TLS")?
            .build();
        let stream = connector
            .connect(&url.host, stream)
            .map_err(|error| anyhow::anyhow!("TLS with {} failed: {error}", url.host))?;
        exchange(stream, &request)
    } else {
        exchange(stream, &request)
    }
}

fn exchange(mut stream: impl Read + Write, request: &str) -> anyhow::Result<u16> {
    stream
        .write_all(request.as_bytes())
        .context("cannot send the webhook request")?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 1024 {
        if stream
            .read(&mut byte)
            .context("cannot read the webhook answer")?
            == 0
        {
            break;
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", status_line.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_redacted() {
        let url = Url::parse("https://hooks.slack.com/services/T0/B0/s3cret").unwrap();
        assert!(url.https);
        assert_eq!((url.host.as_str(), url.port), ("hooks.slack.com", 443));
        assert_eq!(url.path, "/services/T0/B0/s3cret");
        let url = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/s3cret"),
            "https://hooks.slack.com:443/..."
        );
        assert!(Url::parse("ftp://x/y").is_err());
        assert!(Url::parse("http://user:pw@x/y").is_err());
        assert!(Url::parse("http://x:port/y").is_err());
    }
}
