//! TLS certificates, made with the `openssl` crate for every run (none is
//! checked in, none expires under a test).
//!
//! The throwaway cluster serves TLS on its TCP listener (`ssl = on`). Before
//! the server starts, the harness makes a throwaway CA (`<base>/ca.crt`, see
//! [`super::tls_ca_file`]) and a server certificate signed by it whose only
//! name is `DNS:localhost` (no IP address, on purpose: `verify-full` to
//! `host=localhost` succeeds, to `host=127.0.0.1` it fails on the name while
//! `verify-ca` succeeds). The certificate and its key (`<base>/server.crt`,
//! `<base>/server.key`, both mode 0600 and owned by the server user) are named
//! by `ssl_cert_file` / `ssl_key_file`. [`localhost_identity`] makes the same
//! kind of pair for test servers of our own; [`unrelated_ca_pem`] a CA that
//! signed nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

use super::runner::Runner;

/// The throwaway cluster's TLS files.
pub(super) struct TlsFiles {
    pub(super) ca: PathBuf,
    pub(super) certificate: PathBuf,
    pub(super) key: PathBuf,
}

/// Writes a new CA (`ca.crt`, mode 0644) and a server certificate for
/// `DNS:localhost` signed by it (`server.crt`, `server.key`, mode 0600,
/// owned by the server user) into `base`.
pub(super) fn write_tls_files(base: &Path, runner: &Runner) -> TlsFiles {
    let (ca, ca_key) = make_ca("astegni-delete-expired test CA");
    let (certificate, key) = make_server_certificate(&ca, &ca_key);
    let files = TlsFiles {
        ca: base.join("ca.crt"),
        certificate: base.join("server.crt"),
        key: base.join("server.key"),
    };
    let pem = |result: Result<Vec<u8>, openssl::error::ErrorStack>| {
        result.unwrap_or_else(|e| panic!("encoding TLS test files: {e}"))
    };
    write_owned(&files.ca, &pem(ca.to_pem()), 0o644, runner);
    write_owned(
        &files.certificate,
        &pem(certificate.to_pem()),
        0o600,
        runner,
    );
    write_owned(
        &files.key,
        &pem(key.private_key_to_pem_pkcs8()),
        0o600,
        runner,
    );
    files
}

/// Creates `path` with `mode` (whatever the umask), owned by the server user
/// when dropping privileges.
fn write_owned(path: &Path, contents: &[u8], mode: u32, runner: &Runner) {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    if let Some((uid, gid, _)) = &runner.owner {
        std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

fn new_key() -> PKey<Private> {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
        .and_then(|group| EcKey::generate(&group))
        .and_then(PKey::from_ec_key)
        .unwrap_or_else(|e| panic!("generating a P-256 key: {e}"))
}

/// A certificate builder for `common_name` and `key`, valid from an hour ago
/// for 30 days, with a random serial and a subject key identifier.
fn certificate_builder(common_name: &str, key: &PKey<Private>) -> X509Builder {
    let build = || -> Result<X509Builder, openssl::error::ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let serial: Asn1Integer = serial.to_asn1_integer()?;
        let not_before: Asn1Time =
            Asn1Time::from_unix(i64::try_from(now).unwrap_or(i64::MAX) - 3600)?;
        let not_after: Asn1Time = Asn1Time::days_from_now(30)?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(key)?;
        builder.set_not_before(&not_before)?;
        builder.set_not_after(&not_after)?;
        let subject_key_id =
            SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(subject_key_id)?;
        Ok(builder)
    };
    build().unwrap_or_else(|e| panic!("building a certificate for {common_name}: {e}"))
}

/// A self-signed CA certificate and its key.
fn make_ca(common_name: &str) -> (X509, PKey<Private>) {
    let key = new_key();
    let mut builder = certificate_builder(common_name, &key);
    let build = |builder: &mut X509Builder| -> Result<(), openssl::error::ErrorStack> {
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        builder.sign(&key, MessageDigest::sha256())
    };
    build(&mut builder).unwrap_or_else(|e| panic!("signing the CA {common_name}: {e}"));
    (builder.build(), key)
}

/// A server certificate for `DNS:localhost` only (no IP address), signed by
/// `ca`, and its key.
fn make_server_certificate(ca: &X509, ca_key: &PKey<Private>) -> (X509, PKey<Private>) {
    let key = new_key();
    let mut builder = certificate_builder("localhost", &key);
    let build = |builder: &mut X509Builder| -> Result<(), openssl::error::ErrorStack> {
        builder.set_issuer_name(ca.subject_name())?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        builder.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .build(&builder.x509v3_context(Some(ca), None))?;
        builder.append_extension(san)?;
        let authority_key_id = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(ca), None))?;
        builder.append_extension(authority_key_id)?;
        builder.sign(ca_key, MessageDigest::sha256())
    };
    build(&mut builder).unwrap_or_else(|e| panic!("signing the server certificate: {e}"));
    (builder.build(), key)
}

/// A fresh CA and a certificate for `localhost` it signed, for test servers of our own
/// (the HTTPS webhook): returns (CA certificate as PEM, server certificate, server key).
pub fn localhost_identity() -> (Vec<u8>, X509, PKey<Private>) {
    let (ca, ca_key) = make_ca("astegni test webhook CA");
    let (certificate, key) = make_server_certificate(&ca, &ca_key);
    let pem = ca
        .to_pem()
        .unwrap_or_else(|e| panic!("encoding the CA: {e}"));
    (pem, certificate, key)
}

/// A fresh self-signed CA certificate (PEM) that has signed nothing: a
/// trust anchor the server's certificate does not chain to.
pub fn unrelated_ca_pem(common_name: &str) -> String {
    let (certificate, _key) = make_ca(common_name);
    let pem = certificate
        .to_pem()
        .unwrap_or_else(|e| panic!("encoding a CA certificate: {e}"));
    String::from_utf8(pem).expect("PEM is ASCII")
}
