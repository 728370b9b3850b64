//! The TLS connector `sslmode` asks for, built only when a connection uses TLS.
//!
//! TLS uses OpenSSL through `postgres-openssl`: it is the library libpq itself uses, Debian
//! ships and patches it (`libssl3`), it reads the system trust store, and it lets us follow
//! libpq's `sslmode` meanings exactly (verify-ca checks the chain but not the host name).
//!
//! Building an OpenSSL connector loads and parses the system's CA bundle: a large share of
//! the job's own CPU and memory, wasted in a run that uses no TLS (BENCHMARKS.md, "Client
//! CPU and output"). With `sslmode` disable, allow or prefer and no `sslrootcert`, a
//! connection may use no TLS at all (a Unix socket, a server without TLS), so there the
//! connector is built on the first TLS handshake. Modes that always use TLS, or name a root
//! certificate, build it at once, so a certificate file that cannot be read is reported
//! before connecting.

use std::error::Error;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use postgres::Socket;
use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres_openssl::{MakeTlsConnector, TlsStream};

use crate::conninfo::{Target, TlsMode};

type BoxError = Box<dyn Error + Send + Sync>;

/// A failure of our TLS set-up or handshake: connection errors are told apart by this type
/// in their chain of causes, not by their text.
#[derive(Debug)]
pub struct TlsFailure(BoxError);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for TlsFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// Whether `error` failed in our TLS set-up or handshake.
pub fn is_tls_failure(error: &postgres::Error) -> bool {
    let mut source = Error::source(error);
    while let Some(cause) = source {
        if cause.is::<TlsFailure>() {
            return true;
        }
        source = cause.source();
    }
    false
}

fn tls_failure(error: BoxError) -> BoxError {
    Box::new(TlsFailure(error))
}

/// The connector for one target, shared by every connection attempt.
#[derive(Clone)]
pub struct Tls {
    mode: TlsMode,
    built: Arc<OnceLock<Result<MakeTlsConnector, String>>>,
}

impl Tls {
    /// The connector for `target`: built now when the mode always uses TLS or names a root
    /// certificate (so a bad certificate file stops the run before connecting), else later.
    pub fn new(target: &Target) -> anyhow::Result<Tls> {
        let may_go_without = matches!(
            target.tls_mode,
            TlsMode::Disable | TlsMode::Allow | TlsMode::Prefer
        );
        let built = if target.root_cert.is_some() || !may_go_without {
            OnceLock::from(Ok(build(target.tls_mode, target.root_cert.as_deref())?))
        } else {
            OnceLock::new()
        };
        Ok(Tls {
            mode: target.tls_mode,
            built: Arc::new(built),
        })
    }

    fn connector(&self) -> Result<MakeTlsConnector, BoxError> {
        self.built
            .get_or_init(|| build(self.mode, None).map_err(|error| format!("{error:#}")))
            .clone()
            .map_err(BoxError::from)
    }
}

impl MakeTlsConnect<Socket> for Tls {
    type Stream = TlsStream<Socket>;
    type TlsConnect = Handshake;
    type Error = BoxError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Handshake, BoxError> {
        Ok(Handshake {
            tls: self.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// One connection's TLS handshake, should the server and `sslmode` agree on TLS.
pub struct Handshake {
    tls: Tls,
    domain: String,
}

type HandshakeFuture = Pin<Box<dyn Future<Output = Result<TlsStream<Socket>, BoxError>> + Send>>;

impl TlsConnect<Socket> for Handshake {
    type Stream = TlsStream<Socket>;
    type Error = BoxError;
    type Future = HandshakeFuture;

    fn connect(self, stream: Socket) -> HandshakeFuture {
        let handshake = self.tls.connector().and_then(|mut connector| {
            MakeTlsConnect::<Socket>::make_tls_connect(&mut connector, &self.domain)
                .map_err(BoxError::from)
        });
        match handshake {
            Ok(handshake) => {
                let connected = handshake.connect(stream);
                Box::pin(async move { connected.await.map_err(tls_failure) })
            }
            Err(error) => Box::pin(std::future::ready(Err(tls_failure(error)))),
        }
    }
}

fn build(mode: TlsMode, root_cert: Option<&Path>) -> anyhow::Result<MakeTlsConnector> {
    let mut builder = SslConnector::builder(SslMethod::tls()).context("cannot set up TLS")?;
    let verify_chain = match (mode, root_cert) {
        (TlsMode::VerifyCa | TlsMode::VerifyFull, _) => true,
        // As libpq: with a root certificate given, "require" verifies the chain.
        (TlsMode::Require, Some(_)) => true,
        _ => false,
    };
    if let Some(path) = root_cert {
        builder.set_cert_store(trust_store(path)?);
    }
    builder.set_verify(if verify_chain {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });
    let mut connector = MakeTlsConnector::new(builder.build());
    let verify_host = mode == TlsMode::VerifyFull;
    connector.set_callback(move |config, _host| {
        config.set_verify_hostname(verify_host);
        Ok(())
    });
    Ok(connector)
}

fn trust_store(path: &Path) -> anyhow::Result<openssl::x509::store::X509Store> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read sslrootcert {}", path.display()))?;
    let certificates = X509::stack_from_pem(&pem)
        .ok()
        .filter(|certificates| !certificates.is_empty())
        .with_context(|| format!("sslrootcert {} holds no PEM certificate", path.display()))?;
    let mut store = X509StoreBuilder::new().context("cannot set up TLS")?;
    for certificate in certificates {
        store
            .add_cert(certificate)
            .with_context(|| format!("cannot use sslrootcert {}", path.display()))?;
    }
    Ok(store.build())
}
