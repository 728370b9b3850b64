//! Integration-test harness: gives every test a real, empty PostgreSQL
//! database (never a mock) and a way to run the binary under test.
//!
//! * [`server`]: which server the tests use: an existing one named by
//!   `ASTEGNI_TEST_DATABASE_URL`, or a throwaway cluster started once per test
//!   binary;
//! * [`cluster`]: throwaway clusters: that shared one, and private ones
//!   ([`start_private`]) for tests that restart or stop the server;
//! * [`runner`]: server commands run as another user when the tests run as
//!   root (`initdb` and `postgres` refuse root);
//! * [`watchdog`]: every cluster stopped and its files removed, however the
//!   test process ends;
//! * [`certs`]: the TLS certificates, made fresh by every run;
//! * [`api`]: what the tests use: [`TestDb`], [`TestRole`], [`run_job`] and
//!   helpers, re-exported here (`common::TestDb`) with the server queries;
//! * [`astegni`]: an Astegni-shaped database made from the one schema fixture
//!   (`tests/fixtures/astegni.sql`), in each schema variant the job must handle.

#![allow(dead_code)]

pub mod api;
pub mod astegni;
pub mod certs;
pub mod cluster;
mod runner;
pub mod server;
mod watchdog;

// The tests' names for the harness (`common::TestDb`, `common::tcp_port`...); each
// test binary uses its own share of them.
pub use api::*;
#[allow(unused_imports)]
pub use certs::{localhost_identity, unrelated_ca_pem};
#[allow(unused_imports)]
pub use cluster::{BINDIR_ENV, Cluster, PLAIN_ONLY_GROUP, TLS_ONLY_GROUP, start_private};
#[allow(unused_imports)]
pub use server::{
    EXTERNAL_HBA_GROUPS_ENV, EXTERNAL_TCP_HOST_ENV, EXTERNAL_TCP_PORT_ENV, EXTERNAL_TLS_CA_ENV,
    EXTERNAL_URL_ENV, admin_client, admin_url, is_throwaway_cluster, tcp_host, tcp_port,
    tls_ca_file,
};
