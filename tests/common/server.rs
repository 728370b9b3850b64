//! Which server the tests use.
//!
//! * If `ASTEGNI_TEST_DATABASE_URL` is set (a superuser conninfo or URL for an
//!   existing server), that server is used. `ASTEGNI_TEST_TCP_PORT` (and
//!   optionally `ASTEGNI_TEST_TCP_HOST`, default `127.0.0.1`) tells the
//!   password-over-TCP tests where that server accepts `scram-sha-256` logins;
//!   without it [`tcp_port`] returns `None` and those tests skip themselves.
//!   [`tls_ca_file`] is then `ASTEGNI_TEST_TLS_CA` (if set); its certificate
//!   must name that host and not `127.0.0.1`, as the throwaway cluster's
//!   names only `localhost` (so use `ASTEGNI_TEST_TCP_HOST=localhost`). The
//!   group roles of [`super::TcpAccess`] are taken to exist, with the
//!   throwaway cluster's `pg_hba.conf` lines for them, only if
//!   `ASTEGNI_TEST_HBA_GROUPS=1`; otherwise the tests that need them skip.
//! * Otherwise the harness starts a throwaway cluster ([`super::cluster`]),
//!   once per test binary (a `LazyLock`), so `cargo test` works on a machine
//!   that only has the `postgresql` package installed and no server running.

use std::path::PathBuf;
use std::sync::LazyLock;

use postgres::Client;

use super::api::{connect, quote_conninfo_value};
use super::cluster::{Cluster, Flavor};

/// Superuser conninfo/URL of an existing server to use instead of starting one.
pub const EXTERNAL_URL_ENV: &str = "ASTEGNI_TEST_DATABASE_URL";
/// TCP port (scram-sha-256) of the external server, if any.
pub const EXTERNAL_TCP_PORT_ENV: &str = "ASTEGNI_TEST_TCP_PORT";
/// TCP host of the external server (default `127.0.0.1`).
pub const EXTERNAL_TCP_HOST_ENV: &str = "ASTEGNI_TEST_TCP_HOST";
/// CA certificate (PEM) that signed the external server's certificate.
pub const EXTERNAL_TLS_CA_ENV: &str = "ASTEGNI_TEST_TLS_CA";
/// `1`: the external server has [`super::TLS_ONLY_GROUP`] and
/// [`super::PLAIN_ONLY_GROUP`], and its `pg_hba.conf` enforces them for
/// `127.0.0.1` as the throwaway cluster's does (`tests/common/cluster.rs`).
pub const EXTERNAL_HBA_GROUPS_ENV: &str = "ASTEGNI_TEST_HBA_GROUPS";

/// The server's superuser conninfo (database `postgres` for the throwaway
/// cluster; the given value for an external server).
pub fn admin_url() -> String {
    server().admin_url()
}

/// New superuser connection (see [`admin_url`]).
pub fn admin_client() -> Client {
    connect(&admin_url())
}

/// TCP port on which the server accepts password (`scram-sha-256`) logins
/// from 127.0.0.1. Always `Some` for the throwaway cluster; for an external
/// server only if `ASTEGNI_TEST_TCP_PORT` is set.
pub fn tcp_port() -> Option<u16> {
    server().tcp_port
}

/// CA certificate (PEM file) that signed the server's certificate: the
/// throwaway cluster's own CA, or for an external server the file named by
/// `ASTEGNI_TEST_TLS_CA` (`None` if that is unset: TLS tests skip).
pub fn tls_ca_file() -> Option<PathBuf> {
    match &server().kind {
        Kind::External(_) => std::env::var_os(EXTERNAL_TLS_CA_ENV)
            .filter(|path| !path.is_empty())
            .map(PathBuf::from),
        Kind::Local(_) => server().tls_ca.clone(),
    }
}

/// Whether the server is the harness's own throwaway cluster, whose TLS
/// certificate names only `localhost` and whose `pg_hba.conf` is known.
pub fn is_throwaway_cluster() -> bool {
    matches!(server().kind, Kind::Local(_))
}

/// Host to use with [`tcp_port`].
pub fn tcp_host() -> String {
    match &server().kind {
        Kind::External(_) => std::env::var(EXTERNAL_TCP_HOST_ENV)
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".to_owned()),
        Kind::Local(_) => "127.0.0.1".to_owned(),
    }
}

pub(super) struct Server {
    kind: Kind,
    tcp_port: Option<u16>,
    /// The throwaway cluster's CA certificate.
    tls_ca: Option<PathBuf>,
    /// Whether [`TLS_ONLY_GROUP`] and [`PLAIN_ONLY_GROUP`] exist and
    /// `pg_hba.conf` enforces them.
    pub(super) hba_groups: bool,
}

pub(super) enum Kind {
    External(String),
    Local(Cluster),
}

impl Server {
    pub(super) fn url_for_db(&self, dbname: &str) -> String {
        match &self.kind {
            Kind::External(url) => with_dbname(url, dbname),
            Kind::Local(cluster) => cluster.url(dbname),
        }
    }

    fn admin_url(&self) -> String {
        match &self.kind {
            Kind::External(url) => url.clone(),
            Kind::Local(_) => self.url_for_db("postgres"),
        }
    }
}

static SERVER: LazyLock<Server> = LazyLock::new(|| match std::env::var(EXTERNAL_URL_ENV) {
    Ok(url) if !url.trim().is_empty() => {
        let tcp_port = std::env::var(EXTERNAL_TCP_PORT_ENV).ok().map(|p| {
            p.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{EXTERNAL_TCP_PORT_ENV}={p:?}: {e}"))
        });
        Server {
            kind: Kind::External(url),
            tcp_port,
            tls_ca: None,
            hba_groups: std::env::var(EXTERNAL_HBA_GROUPS_ENV).is_ok_and(|v| v.trim() == "1"),
        }
    }
    _ => {
        let (cluster, tls) = Cluster::start(Flavor::Shared);
        Server {
            tcp_port: Some(cluster.port()),
            tls_ca: tls.map(|files| files.ca),
            hba_groups: true,
            kind: Kind::Local(cluster),
        }
    }
});

pub(super) fn server() -> &'static Server {
    &SERVER
}

/// Replaces the database in a URL (`postgres[ql]://...`) or appends `dbname=`
/// to a key=value conninfo (the last occurrence of a key wins).
fn with_dbname(url: &str, dbname: &str) -> String {
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (main, query) = match rest.find('?') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            // Socket paths in the authority are percent-encoded, so the first
            // '/' ends it.
            let authority = main.split('/').next().unwrap_or("");
            return format!("{scheme}{authority}/{dbname}{query}");
        }
    }
    format!("{url} dbname={}", quote_conninfo_value(dbname))
}
