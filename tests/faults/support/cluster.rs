//! A private PostgreSQL cluster for tests that restart or stop the server (never the shared
//! one other tests use): the harness's own cluster code (`tests/common/cluster.rs`, see
//! [`crate::common::start_private`] for how it differs from the shared server), under the
//! names the fault suite uses.

pub type PrivateCluster = crate::common::Cluster;

/// initdb and start a new private cluster; stopped and removed when dropped.
pub fn start() -> PrivateCluster {
    crate::common::start_private()
}
