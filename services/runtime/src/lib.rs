//! The shared runtime of every casebus service binary (the five agency services and the
//! gateway): configuration groups for clap, caller authentication (bearer tokens signed
//! by a trusted issuer, or TLS client certificates naming the office), gRPC serving with
//! TLS, standard health and reflection, Prometheus metrics and a `/metrics` endpoint,
//! tracing setup, and graceful shutdown on SIGINT/SIGTERM.
//!
//! It lives under `services/` because it is binary-side code: it may use clap and a
//! tracing subscriber, which library crates under `crates/` may not.

pub mod args;
pub mod auth;
pub mod clocks;
mod error;
pub mod files;
pub mod grpc;
pub mod metrics;
pub mod registry;
pub mod shutdown;
pub mod telemetry;
pub mod tlog_keys;

pub use error::RuntimeError;
