//! Dev-only test harness for casebus: real `nats-server` processes on loopback.
//!
//! [`NatsServer`] runs one JetStream server in its own temporary directory, and
//! [`NatsCluster`] runs a JetStream cluster of several such nodes. Both read the ports the
//! server picked from its `.ports` file, wait for JetStream to answer before returning,
//! and kill their processes on drop, so every test can own its servers and tests run in
//! parallel. [`wait_until`] polls a condition under a named deadline instead of sleeping.
//! [`NatsServer::start_from_config`] runs a complete config of the test's own (a
//! deployment config rendered for loopback), and [`PermissionProbe`] logs in as one of
//! its users and tells whether the server refuses a publish, request or subscription.
//!
//! [`command_line`] holds the command-line checks every agency service binary passes.
//!
//! This crate is a dev-dependency only; nothing in it belongs in a service binary.

mod binary;
mod cluster;
pub mod command_line;
mod error;
mod node;
mod probe;
mod server;
mod wait;

pub use binary::{INSTALL_HINT, NATS_SERVER_BIN_ENV, find_nats_server};
pub use cluster::{CLUSTER_NAME, ClusterNode, ClusterOptions, NatsCluster};
pub use error::HarnessError;
pub use node::process_exists;
pub use probe::{PermissionProbe, ProbeLogin, Probed, REFUSAL_TIMEOUT};
pub use server::{NatsServer, NatsServerOptions};
pub use wait::{
    CLUSTER_READY_TIMEOUT, POLL_INTERVAL, PROBE_TIMEOUT, Ready, STARTUP_TIMEOUT, STOP_TIMEOUT,
    retry_pause, wait_until, wait_until_owned,
};
