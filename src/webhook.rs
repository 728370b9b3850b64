//! POSTs a Slack-compatible `{"text": ...}` message to a webhook, over HTTPS or HTTP, directly
//! or through the proxy the environment names.
//!
//! The client is `ureq`, with TLS through `native-tls`: the OpenSSL already linked for
//! PostgreSQL, verifying the certificate and host name against the system's trust store
//! (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured). It tries every address the host name
//! resolves to. Each attempt has a short timeout; failures that can heal (network errors, 5xx,
//! 429) are retried a couple of times. Redirects are not followed: a webhook that moved is a
//! configuration error to report, not a reason to send the alert somewhere else.
//!
//! The proxy is chosen here, by curl's rules, which the proxy settings of a server are written
//! for: `https_proxy` for an https URL, `http_proxy` for an http one, else `all_proxy` (each in
//! lower or upper case), unless `no_proxy` names the host. ureq's own reading of the
//! environment differs (`ALL_PROXY` first, whatever the scheme; `example.com` in `NO_PROXY`
//! not matching its subdomains), so it is never used. ureq reaches an http URL through a
//! proxy with `CONNECT` too, as it does an https one; some proxies allow that only to port 443.
//!
//! A webhook URL is a credential (Slack's path *is* the secret), and a proxy URL may hold a
//! password: messages name only the webhook's scheme and host and the proxy's host and port.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ureq::http::Uri;
use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Proxy, ProxyProtocol};

const ATTEMPTS: u32 = 3;
/// For one attempt: resolving, connecting (to the proxy too), TLS, request and answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The parts of a webhook URL that may be shown and that choose the proxy; the rest is secret.
struct Url {
    https: bool,
    host: String,
    port: u16,
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
        let authority = match rest.find(['/', '?', '#']) {
            Some(end) => &rest[..end],
            None => rest,
        };
        let (host, port) = split_host_port(authority, if https { 443 } else { 80 })?;
        Ok(Url { https, host, port })
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
    // The URL is a secret: a parse error gets a message of our own, which cannot quote it.
    let uri = Uri::try_from(url)
        .ok()
        .context("the webhook URL is not a valid URL")?;
    let proxy = proxy_for(&parsed, &|name| std::env::var(name).ok())
        .with_context(|| format!("webhook {}", redacted(url)))?;
    let target = match &proxy {
        Some(proxy) => format!(
            "{} via proxy {}:{}",
            redacted(url),
            proxy.host(),
            proxy.port()
        ),
        None => redacted(url),
    };
    let agent = agent(proxy);
    let body = format!("{{\"text\":{}}}", crate::json::string(text));
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        let answer = agent
            .post(uri.clone())
            .header("Content-Type", "application/json")
            .send(body.as_str());
        match answer.map(|response| response.status().as_u16()) {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            Ok(status) if status == 429 || status >= 500 => {
                last_error = Some(anyhow!("HTTP status {status}"));
            }
            Ok(status) => bail!("{target} answered HTTP status {status}"),
            Err(error) => last_error = Some(describe(error)),
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(Duration::from_secs(u64::from(attempt)));
        }
    }
    let error = last_error.unwrap_or_else(|| anyhow!("no attempt made"));
    Err(error.context(format!("webhook {target} failed after {ATTEMPTS} attempts")))
}

/// The client for one alert: OpenSSL with the system's roots, the chosen proxy or none, the
/// per-attempt timeout, statuses and redirects handed back to [`post`] to judge.
fn agent(proxy: Option<Proxy>) -> Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::NativeTls)
        // With native-tls this is OpenSSL's default trust store, not a bundled list.
        .root_certs(RootCerts::PlatformVerifier)
        .build();
    Agent::config_builder()
        .tls_config(tls)
        // Always set, `None` included: the default would be ureq's reading of the environment.
        .proxy(proxy)
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!(
            env!("CARGO_PKG_NAME"),
            "/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .into()
}

/// One line for a failed attempt. ureq's messages are used as they are, except where they
/// could be clearer or could quote the URL (`BadUri`).
fn describe(error: ureq::Error) -> anyhow::Error {
    match error {
        ureq::Error::Timeout(_) => anyhow!("no answer within {} s", TIMEOUT.as_secs()),
        ureq::Error::HostNotFound => anyhow!("the host name does not resolve"),
        ureq::Error::ConnectProxyFailed(reason) => anyhow!("no tunnel through the proxy: {reason}"),
        ureq::Error::BadUri(_) => anyhow!("the webhook URL is not a valid URL"),
        ureq::Error::Io(error) => anyhow!(error),
        other => anyhow!(other),
    }
}

/// The proxy to reach `url` through, by curl's rules (see the module comment); `env` looks a
/// variable up. An empty variable counts as unset. Errors name the variable, never its value,
/// which may hold a password.
fn proxy_for(url: &Url, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<Proxy>> {
    // Lower case first, as curl does.
    let variable = |upper: &str| {
        [upper.to_ascii_lowercase(), upper.to_owned()]
            .into_iter()
            .find_map(|name| {
                let value = env(&name)?.trim().to_owned();
                (!value.is_empty()).then_some((name, value))
            })
    };
    let scheme_variable = if url.https {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    let Some((name, value)) = variable(scheme_variable).or_else(|| variable("ALL_PROXY")) else {
        return Ok(None);
    };
    if let Some((_, list)) = variable("NO_PROXY")
        && no_proxy_matches(&list, &url.host)
    {
        return Ok(None);
    }
    let proxy = Proxy::new(&value)
        .ok()
        .with_context(|| format!("{name} is not a valid proxy URL"))?;
    // SOCKS needs a ureq feature we leave out (a proxy for Slack is an HTTP proxy).
    if !matches!(proxy.protocol(), ProxyProtocol::Http | ProxyProtocol::Https) {
        bail!(
            "{name} names a {} proxy; only http:// and https:// proxies are supported",
            proxy.protocol()
        );
    }
    Ok(Some(proxy))
}

/// Whether the `no_proxy` list exempts `host`, by curl's rules: entries separated by commas
/// (or spaces); `*` matches every host; a host name matches itself and its subdomains (a
/// leading `.` or `*.` changes nothing); an IP address matches itself, a CIDR range
/// (`10.0.0.0/8`) the addresses in it. Case does not matter, nor a trailing dot.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            match host_ip {
                Some(ip) => ip_matches(entry, ip),
                None => {
                    let name = entry
                        .trim_start_matches("*.")
                        .trim_start_matches('.')
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    !name.is_empty()
                        && (host == name
                            || host
                                .strip_suffix(&name)
                                .is_some_and(|rest| rest.ends_with('.')))
                }
            }
        })
}

/// Whether the `no_proxy` entry (an address, `[IPv6]`, or a CIDR range) covers `ip`.
fn ip_matches(entry: &str, ip: IpAddr) -> bool {
    let entry = entry.trim_start_matches('[').trim_end_matches(']');
    let (address, bits) = match entry.split_once('/') {
        Some((address, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (address, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    match (address.parse::<IpAddr>(), ip) {
        (Ok(IpAddr::V4(network)), IpAddr::V4(ip)) => {
            prefix_matches(network.to_bits().into(), ip.to_bits().into(), 32, bits)
        }
        (Ok(IpAddr::V6(network)), IpAddr::V6(ip)) => {
            prefix_matches(network.to_bits(), ip.to_bits(), 128, bits)
        }
        _ => false,
    }
}

/// Whether the first `bits` (all `width` if none) of `network` and `ip` are equal.
fn prefix_matches(network: u128, ip: u128, width: u32, bits: Option<u32>) -> bool {
    let bits = bits.unwrap_or(width);
    if bits > width {
        return false;
    }
    // The comparison ignores the low `width - bits` bits; `checked_shl` covers a /0.
    let ignored = width - bits;
    let mask = u128::MAX.checked_shl(ignored).unwrap_or(0);
    network & mask == ip & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_redacted() {
        let url = Url::parse("https://hooks.slack.com/services/T0/B0/s3cret").unwrap();
        assert!(url.https);
        assert_eq!((url.host.as_str(), url.port), ("hooks.slack.com", 443));
        let url = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 8080));
        let url = Url::parse("http://example.com?token=s3cret").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("example.com", 80));
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/s3cret"),
            "https://hooks.slack.com:443/..."
        );
        assert!(Url::parse("ftp://x/y").is_err());
        assert!(Url::parse("http://user:pw@x/y").is_err());
        assert!(Url::parse("http://x:port/y").is_err());
    }

    /// The proxy `url` goes through with the environment `env`, as "host:port" (or None).
    fn proxy(url: &str, env: &[(&str, &str)]) -> anyhow::Result<Option<String>> {
        let lookup = |name: &str| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        let proxy = proxy_for(&Url::parse(url)?, &lookup)?;
        Ok(proxy.map(|proxy| format!("{}:{}", proxy.host(), proxy.port())))
    }

    #[test]
    fn the_proxy_variable_follows_the_scheme_then_all_proxy() {
        let env = [
            ("HTTPS_PROXY", "http://secure.example:3128"),
            ("http_proxy", "plain.example:8080"),
            ("ALL_PROXY", "http://all.example"),
        ];
        let https = "https://hooks.slack.com/x";
        let http = "http://hooks.example/x";
        assert_eq!(proxy(https, &env).unwrap().unwrap(), "secure.example:3128");
        assert_eq!(proxy(http, &env).unwrap().unwrap(), "plain.example:8080");
        assert_eq!(
            proxy(http, &env[..1]).unwrap(),
            None,
            "HTTPS_PROXY is not for http"
        );
        assert_eq!(proxy(http, &env[2..]).unwrap().unwrap(), "all.example:80");
        // Lower case wins, as in curl; an empty value counts as unset.
        let env = [
            ("https_proxy", "http://lower.example:1"),
            ("HTTPS_PROXY", "http://upper.example:2"),
        ];
        assert_eq!(proxy(https, &env).unwrap().unwrap(), "lower.example:1");
        let env = [
            ("https_proxy", " "),
            ("HTTPS_PROXY", "http://upper.example:2"),
        ];
        assert_eq!(proxy(https, &env).unwrap().unwrap(), "upper.example:2");
        assert_eq!(proxy(https, &[]).unwrap(), None);
        // An https:// proxy (TLS to the proxy) is fine; the default port follows the scheme.
        let env = [("HTTPS_PROXY", "https://user:pw@tls.example")];
        assert_eq!(proxy(https, &env).unwrap().unwrap(), "tls.example:443");
    }

    #[test]
    fn no_proxy_exempts_hosts_by_curls_rules() {
        let env = [
            ("HTTPS_PROXY", "http://proxy.example:3128"),
            ("NO_PROXY", "localhost, .internal,example.org"),
        ];
        assert_eq!(proxy("https://localhost:8443/x", &env).unwrap(), None);
        assert_eq!(proxy("https://a.b.internal/x", &env).unwrap(), None);
        assert_eq!(proxy("https://sub.example.org/x", &env).unwrap(), None);
        assert!(proxy("https://hooks.slack.com/x", &env).unwrap().is_some());
        let env = [
            ("HTTPS_PROXY", "http://proxy.example:3128"),
            ("no_proxy", "hooks.slack.com"),
            ("NO_PROXY", "*"),
        ];
        assert_eq!(proxy("https://hooks.slack.com/x", &env).unwrap(), None);
        assert!(proxy("https://other.slack.com/x", &env).unwrap().is_some());

        for (list, host) in [
            ("*", "anything.example"),
            ("example.com", "example.com"),
            ("example.com", "a.b.example.com"),
            (".example.com", "example.com"),
            ("*.example.com", "x.example.com"),
            ("EXAMPLE.com.", "Example.COM."),
            ("a.example b.example", "b.example"),
            ("10.0.0.0/8", "10.1.2.3"),
            ("192.168.1.7", "192.168.1.7"),
            ("0.0.0.0/0", "203.0.113.9"),
            ("[::1]", "::1"),
            ("fd00::/8", "fd12:3456::1"),
        ] {
            assert!(no_proxy_matches(list, host), "{list:?} must exempt {host}");
        }
        for (list, host) in [
            ("", "example.com"),
            ("example.com", "badexample.com"),
            ("a.example.com", "example.com"),
            (".", "example.com"),
            ("10.0.0.0/8", "11.0.0.1"),
            ("10.0.0.0/33", "10.0.0.1"),
            ("10.0.0.0/x", "10.0.0.1"),
            ("192.168.1.7", "192.168.1.8"),
            ("127.0.0.1", "::1"),
            ("fd00::/8", "fe80::1"),
            ("10.0.0.1", "host10.0.0.1"),
        ] {
            assert!(
                !no_proxy_matches(list, host),
                "{list:?} must not exempt {host}"
            );
        }
    }

    #[test]
    fn proxy_errors_name_the_variable_never_its_value() {
        let https = "https://hooks.slack.com/x";
        for value in ["http://user:Pa55@[broken", "ftp://user:Pa55@proxy.example"] {
            let error = proxy(https, &[("https_proxy", value)]).unwrap_err();
            let error = format!("{error:#}");
            assert!(
                error.starts_with("https_proxy is not a valid proxy URL"),
                "{error}"
            );
            assert!(!error.contains("Pa55"), "{error}");
        }
        let error = proxy(https, &[("ALL_PROXY", "socks5://user:Pa55@proxy.example")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "ALL_PROXY names a SOCKS5 proxy; only http:// and https:// proxies are supported"
        );
    }
}
