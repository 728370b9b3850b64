//! TLS against the real test server: every `sslmode`, `sslrootcert`, and a server that
//! refuses TLS.
//!
//! The throwaway cluster (tests/common/) serves TLS with a certificate for
//! `DNS:localhost` only, signed by its own CA ([`common::tls_ca_file`]); roles made with
//! [`TcpAccess::TlsOnly`] are let in over TCP only with TLS (`hostssl`), roles made with
//! [`TcpAccess::PlainOnly`] only without (`hostnossl`). A role that gets in only over TLS is
//! how the tests see that the job really used TLS: its backend is gone when the job exits.
//!
//! Every run goes through [`Fixture::check`] / [`job`], which assert that the password is in
//! neither stdout nor stderr.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use common::astegni::Astegni;
use common::{TcpAccess, TestRole, quote_conninfo_value, run_job};

/// URL-safe, so it can go into the URL form unencoded.
const PASSWORD: &str = "Tls-Pw-0f-Astegni-42";

/// What [`run_job`] returns.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `check` against `url`; asserts the password is in no output.
fn job(url: &str) -> Run {
    let (code, stdout, stderr) = run_job(
        &["--database-url", url, "--connect-timeout", "5", "check"],
        &[],
    );
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "the password leaked (exit {code})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    Run {
        code,
        stdout,
        stderr,
    }
}

/// A fixture database and a password role with rights in it. Field order is drop order: the
/// database goes before the role that has privileges in it.
struct Fixture {
    astegni: Astegni,
    role: TestRole,
    port: u16,
}

impl Fixture {
    /// `None` (the test skips) without a TCP listener, without a CA file, or when `access`
    /// can't be enforced (an external server).
    fn new(prefix: &str, access: TcpAccess) -> Option<Fixture> {
        let Some(port) = common::tcp_port() else {
            eprintln!("skipped: no TCP listener (set ASTEGNI_TEST_TCP_PORT)");
            return None;
        };
        if common::tls_ca_file().is_none() {
            eprintln!("skipped: no CA for the server's certificate (set ASTEGNI_TEST_TLS_CA)");
            return None;
        }
        let Some(role) = TestRole::with_access(&format!("{prefix}_user"), PASSWORD, access) else {
            eprintln!("skipped: {access:?} logins need the harness's own cluster");
            return None;
        };
        let astegni = Astegni::new(prefix);
        astegni.db.exec(&format!(
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO \"{0}\";
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO \"{0}\";
             GRANT CREATE ON SCHEMA public TO \"{0}\";",
            role.name
        ));
        Some(Fixture {
            astegni,
            role,
            port,
        })
    }

    /// key=value conninfo to `host` with the role's password, plus `extra` parameters.
    fn conninfo(&self, host: &str, extra: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname={} {extra}",
            quote_conninfo_value(host),
            self.port,
            quote_conninfo_value(&self.role.name),
            quote_conninfo_value(PASSWORD),
            quote_conninfo_value(&self.astegni.db.name),
        )
    }

    /// Runs `check` with [`Fixture::conninfo`].
    fn check(&self, host: &str, extra: &str) -> Run {
        job(&self.conninfo(host, extra))
    }

    /// Asserts a successful `check` as this role in this database.
    fn assert_ok(&self, run: &Run, what: &str) {
        assert_eq!(run.code, 0, "{what}: {run:#?}");
        let expected = format!(
            "database {}, user {},",
            self.astegni.db.name, self.role.name
        );
        assert!(
            run.stdout
                .lines()
                .next()
                .unwrap_or_default()
                .contains(&expected),
            "{what}: the check did not report {expected:?}: {run:#?}"
        );
    }
}

/// Asserts exit 2, nothing on stdout, and exactly one error line on stderr containing each
/// of `needles` (case-insensitive); returns that line.
fn assert_refused(run: &Run, what: &str, needles: &[&str]) -> String {
    assert_eq!(run.code, 2, "{what}: {run:#?}");
    assert_eq!(run.stdout, "", "{what}: {run:#?}");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{what}: expected one error line: {run:#?}");
    let line = lines[0];
    assert!(
        line.starts_with("astegni-delete-expired: error: "),
        "{what}: {line}"
    );
    for needle in needles {
        assert!(
            line.to_lowercase().contains(&needle.to_lowercase()),
            "{what}: {needle:?} missing from: {line}"
        );
    }
    line.to_owned()
}

/// The server's CA file as a conninfo value.
fn ca() -> String {
    let path = common::tls_ca_file().expect("checked by Fixture::new");
    quote_conninfo_value(path.to_str().expect("UTF-8 path"))
}

/// A host name the server's certificate is valid for.
fn cert_host() -> String {
    if common::is_throwaway_cluster() {
        "localhost".to_owned()
    } else {
        common::tcp_host()
    }
}

/// A file removed on drop.
struct TempFile(PathBuf);

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "astegni-tls-{}-{}-{name}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn conninfo_value(&self) -> String {
        quote_conninfo_value(self.0.to_str().expect("UTF-8 path"))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_test_server_speaks_tls_with_a_certificate_for_localhost_only() {
    let Some(fixture) = Fixture::new("tls_server", TcpAccess::Any) else {
        return;
    };
    if !common::is_throwaway_cluster() {
        return;
    }
    let ca_path = common::tls_ca_file().expect("CA");
    let connect = |host: &str| {
        let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
            .expect("TLS connector");
        builder.set_ca_file(&ca_path).expect("load the CA");
        let connector = postgres_openssl::MakeTlsConnector::new(builder.build());
        postgres::Client::connect(
            &fixture.conninfo(host, "sslmode=require"),
            connector.clone(),
        )
    };
    let mut client = connect("localhost").unwrap_or_else(|e| {
        panic!(
            "TLS with host name verification to localhost: {}",
            common::describe_error(&e)
        )
    });
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .expect("pg_stat_ssl");
    let (ssl, version): (bool, Option<String>) = (row.get(0), row.get(1));
    assert!(ssl, "the server does not see TLS");
    assert!(version.is_some_and(|v| v.starts_with("TLSv1")));
    // The certificate names no IP address: full verification to 127.0.0.1 must fail.
    let error = match connect("127.0.0.1") {
        Ok(_) => panic!("the certificate was accepted for 127.0.0.1"),
        Err(error) => format!("{error:?}"),
    };
    assert!(error.contains("certificate verify failed"), "{error}");
}

#[test]
fn require_uses_tls_and_disable_does_not() {
    let Some(fixture) = Fixture::new("tls_require", TcpAccess::TlsOnly) else {
        return;
    };
    // This role gets in only over TLS (hostssl): success proves the job used TLS.
    fixture.assert_ok(
        &fixture.check("127.0.0.1", "sslmode=require"),
        "require, TLS-only role",
    );
    // Without sslmode the job prefers TLS, like libpq; allow may use it as well.
    fixture.assert_ok(
        &fixture.check("127.0.0.1", ""),
        "default sslmode, TLS-only role",
    );
    fixture.assert_ok(
        &fixture.check("127.0.0.1", "sslmode=prefer"),
        "prefer, TLS-only role",
    );
    fixture.assert_ok(
        &fixture.check("127.0.0.1", "sslmode=allow"),
        "allow, TLS-only role",
    );
    // disable really sends no TLS: the server's pg_hba.conf rejects the plain connection.
    let run = fixture.check("127.0.0.1", "sslmode=disable");
    assert_refused(
        &run,
        "disable, TLS-only role",
        &["pg_hba.conf rejects connection", "no encryption"],
    );
}

#[test]
fn the_ordinary_password_rule_works_with_and_without_tls() {
    let Some(fixture) = Fixture::new("tls_any", TcpAccess::Any) else {
        return;
    };
    for mode in ["disable", "allow", "prefer", "require"] {
        fixture.assert_ok(
            &fixture.check(&common::tcp_host(), &format!("sslmode={mode}")),
            mode,
        );
    }
}

#[test]
fn disable_works_for_a_role_that_may_not_use_tls() {
    let Some(fixture) = Fixture::new("tls_plain", TcpAccess::PlainOnly) else {
        return;
    };
    fixture.assert_ok(
        &fixture.check("127.0.0.1", "sslmode=disable"),
        "disable, plain-only role",
    );
}

#[test]
fn verify_full_checks_the_host_name() {
    let Some(fixture) = Fixture::new("tls_vfull", TcpAccess::TlsOnly) else {
        return;
    };
    let ca = ca();
    fixture.assert_ok(
        &fixture.check(
            &cert_host(),
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        "verify-full to the certificate's name",
    );
    // Without sslrootcert the system's CAs are trusted, and they did not sign the test CA.
    let run = fixture.check(&cert_host(), "sslmode=verify-full");
    assert_refused(
        &run,
        "verify-full with the system's CAs",
        &["TLS", "certificate verify failed"],
    );
    if !common::is_throwaway_cluster() {
        return;
    }
    // The certificate is for DNS:localhost only: 127.0.0.1 is not its name.
    let run = fixture.check(
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    );
    assert_refused(
        &run,
        "verify-full to an address the certificate does not name",
        &["TLS", "certificate verify failed", "mismatch"],
    );
}

#[test]
fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let Some(fixture) = Fixture::new("tls_vca", TcpAccess::TlsOnly) else {
        return;
    };
    let ca = ca();
    let host = if common::is_throwaway_cluster() {
        // Not the certificate's name: verify-ca must not care.
        "127.0.0.1".to_owned()
    } else {
        common::tcp_host()
    };
    fixture.assert_ok(
        &fixture.check(&host, &format!("sslmode=verify-ca sslrootcert={ca}")),
        "verify-ca with the server's CA",
    );
    let unrelated = TempFile::new(
        "unrelated-ca.crt",
        &common::unrelated_ca_pem("Unrelated CA"),
    );
    for (mode, host) in [
        ("verify-ca", host.as_str()),
        ("verify-ca", cert_host().as_str()),
        ("verify-full", cert_host().as_str()),
        // As libpq: with a root certificate given, require verifies the chain too.
        ("require", host.as_str()),
    ] {
        let run = fixture.check(
            host,
            &format!("sslmode={mode} sslrootcert={}", unrelated.conninfo_value()),
        );
        assert_refused(
            &run,
            &format!("{mode} to {host} with an unrelated CA"),
            &["TLS", "certificate verify failed"],
        );
    }
    // And with the right CA, require (which then verifies the chain) succeeds.
    fixture.assert_ok(
        &fixture.check(&host, &format!("sslmode=require sslrootcert={ca}")),
        "require with the server's CA",
    );
}

#[test]
fn a_missing_sslrootcert_is_a_configuration_error_naming_the_file() {
    let Some(fixture) = Fixture::new("tls_rootcert", TcpAccess::TlsOnly) else {
        return;
    };
    let missing =
        std::env::temp_dir().join(format!("astegni-tls-{}-no-such-ca.crt", std::process::id()));
    assert!(!missing.exists());
    let missing_text = missing.to_str().expect("UTF-8 path");
    for mode in ["verify-full", "verify-ca", "require"] {
        let run = fixture.check(
            &cert_host(),
            &format!(
                "sslmode={mode} sslrootcert={}",
                quote_conninfo_value(missing_text)
            ),
        );
        assert_refused(
            &run,
            &format!("{mode} with a missing sslrootcert"),
            &["sslrootcert", missing_text, "No such file"],
        );
    }
}

/// libpq refuses an `sslrootcert` file without certificates ("could not read root
/// certificate file ...: no certificate or crl found"). Used as an empty trust store, it
/// would only fail later, in the handshake, with "unable to get local issuer certificate"
/// and without naming the file.
#[test]
fn an_sslrootcert_without_certificates_is_named_in_the_error() {
    let Some(fixture) = Fixture::new("tls_nocert", TcpAccess::TlsOnly) else {
        return;
    };
    let empty = TempFile::new("not-a-ca.crt", "this is not a certificate\n");
    for mode in ["verify-full", "verify-ca", "require"] {
        let run = fixture.check(
            &cert_host(),
            &format!("sslmode={mode} sslrootcert={}", empty.conninfo_value()),
        );
        assert_refused(
            &run,
            &format!("{mode} with an sslrootcert holding no certificate"),
            &["sslrootcert", empty.path().to_str().expect("UTF-8 path")],
        );
    }
}

#[test]
fn the_url_form_takes_sslmode_and_sslrootcert_too() {
    let Some(fixture) = Fixture::new("tls_url", TcpAccess::TlsOnly) else {
        return;
    };
    let ca_path = common::tls_ca_file().expect("CA");
    let ca_path = ca_path.to_str().expect("UTF-8 path");
    let url = |host: &str, query: &str| {
        format!(
            "postgresql://{}:{PASSWORD}@{host}:{}/{}?{query}",
            fixture.role.name, fixture.port, fixture.astegni.db.name
        )
    };
    fixture.assert_ok(
        &job(&url(
            &cert_host(),
            &format!("sslmode=verify-full&sslrootcert={ca_path}"),
        )),
        "URL, verify-full",
    );
    // Percent-encoded path, parameters in the other order, and another one kept.
    let encoded = ca_path.replace('/', "%2F").replace('-', "%2D");
    fixture.assert_ok(
        &job(&url(
            &cert_host(),
            &format!("sslrootcert={encoded}&application_name=tls-test&sslmode=verify-full"),
        )),
        "URL, verify-full, percent-encoded sslrootcert",
    );
    let run = job(&url(&cert_host(), "sslmode=disable"));
    assert_refused(&run, "URL, disable, TLS-only role", &["no encryption"]);
    if common::is_throwaway_cluster() {
        let run = job(&url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca_path}"),
        ));
        assert_refused(
            &run,
            "URL, verify-full to 127.0.0.1",
            &["certificate verify failed"],
        );
        fixture.assert_ok(
            &job(&url(
                "127.0.0.1",
                &format!("sslmode=verify-ca&sslrootcert={ca_path}"),
            )),
            "URL, verify-ca to 127.0.0.1",
        );
    }
}

#[test]
fn tls_required_but_refused_by_the_server_is_one_clear_error() {
    let Some(fixture) = Fixture::new("tls_refused", TcpAccess::PlainOnly) else {
        return;
    };
    let ca = ca();
    for extra in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-full sslrootcert={ca}"),
    ] {
        let host = if extra.contains("verify-full") {
            cert_host()
        } else {
            "127.0.0.1".to_owned()
        };
        let run = fixture.check(&host, &extra);
        let line = assert_refused(
            &run,
            &format!("hostnossl role with {extra}"),
            &[
                "cannot connect to",
                &format!("user={}", fixture.role.name),
                "pg_hba.conf rejects connection",
                "SSL encryption",
            ],
        );
        assert!(!line.contains("password="), "{line}");
    }
}

/// A TCP server that does what PostgreSQL with `ssl = off` does: answer an SSLRequest with
/// `N`. Returns its port and a thread that yields, per connection, whether the first packet
/// was an SSLRequest and how many bytes the client sent after the `N`.
fn server_without_tls(connections: usize) -> (u16, std::thread::JoinHandle<Vec<(bool, usize)>>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("local address").port();
    let thread = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .expect("read timeout");
            let mut request = [0u8; 8];
            stream.read_exact(&mut request).expect("first packet");
            // Length 8, code 80877103 (1234 << 16 | 5679).
            let is_ssl_request = request == [0, 0, 0, 8, 4, 210, 22, 47];
            stream.write_all(b"N").expect("answer N");
            let mut after = Vec::new();
            let _ = stream.read_to_end(&mut after);
            seen.push((is_ssl_request, after.len()));
        }
        seen
    });
    (port, thread)
}

#[test]
fn tls_required_but_the_server_has_none_is_one_clear_error_without_fallback() {
    // Not the real server (it has TLS on); this is the SSLRequest exchange of one with
    // ssl = off, so that the job's answer to "no TLS here" can be seen on the wire.
    let modes = ["require", "verify-ca", "verify-full"];
    let (port, server) = server_without_tls(modes.len());
    for mode in modes {
        let url = format!(
            "host=127.0.0.1 port={port} user=astegni password={PASSWORD} \
             dbname=astegni sslmode={mode}"
        );
        let run = job(&url);
        let line = assert_refused(
            &run,
            &format!("{mode} against a server without TLS"),
            &["TLS"],
        );
        assert!(
            line.to_lowercase().contains("does not support tls"),
            "{mode}: {line}"
        );
    }
    let seen = server.join().expect("server thread");
    assert_eq!(
        seen,
        vec![(true, 0); modes.len()],
        "each connection must start with an SSLRequest and send nothing after the refusal \
         (no plain-text fallback)"
    );
}

/// As libpq: `prefer` retries without TLS when the server turns the TLS connection away (here
/// a `hostnossl` rule), and `allow` starts without TLS. The `postgres` crate's own `prefer`
/// falls back only when the server declines the SSLRequest.
#[test]
fn prefer_and_allow_fall_back_to_plain_when_the_server_refuses_tls() {
    let Some(fixture) = Fixture::new("tls_fallback", TcpAccess::PlainOnly) else {
        return;
    };
    for mode in ["prefer", "allow"] {
        fixture.assert_ok(
            &fixture.check("127.0.0.1", &format!("sslmode={mode}")),
            &format!("{mode}, plain-only role"),
        );
    }
}

/// With the default `prefer`, a wrong password for a role that may only use TLS fails the TLS
/// try with "password authentication failed"; a plain-text retry would then fail on
/// pg_hba.conf ("no encryption") and, if its error replaced the first, blame the encryption.
/// `allow` with a role that may not use TLS is the mirror image. (libpq retries and reports
/// both attempts; the job does not retry after a wrong password.)
#[test]
fn a_wrong_password_is_reported_as_such_whatever_the_sslmode() {
    for (access, modes) in [
        (
            TcpAccess::TlsOnly,
            &["", " sslmode=prefer", " sslmode=allow", " sslmode=require"][..],
        ),
        (
            TcpAccess::PlainOnly,
            &[" sslmode=allow", " sslmode=prefer", " sslmode=disable"][..],
        ),
    ] {
        let Some(fixture) = Fixture::new("tls_wrongpw", access) else {
            return;
        };
        let wrong = fixture
            .conninfo("127.0.0.1", "")
            .replace(&quote_conninfo_value(PASSWORD), "'not-the-password'");
        for extra in modes {
            let run = job(&format!("{wrong}{extra}"));
            assert_refused(
                &run,
                &format!("wrong password, {access:?} role,{extra:?}"),
                &["password authentication failed"],
            );
        }
    }
}
