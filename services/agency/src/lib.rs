//! The agency kit: what the five agency services (`casebus-customs`, `casebus-ip-center`,
//! `casebus-public-security`, `casebus-procuratorate`, `casebus-court`) share, and each
//! agency's gRPC API. Every binary is a thin `main` over [`Service`].
//!
//! - [`AgencyConfig`]: the one configuration of every agency binary (flags and
//!   `CASEBUS_*` environment variables).
//! - [`Kit`]: the shared state of a running service and its one command path,
//!   [`Kit::execute`]: authorise the caller, turn the request into an append request,
//!   append (load the case, decide with the case rules, sign, publish), answer. Every
//!   append error reaches the caller through [`status_of`], the one mapping to gRPC codes.
//! - Automatic receipts: a durable consumer per office that acknowledges every hand-off
//!   addressed to the office, idempotently (see `receipts`).
//! - The bulk import (`Import`): a stream of common commands, each through
//!   [`Kit::execute`], one case's items in order, different cases concurrently, with a
//!   bounded window (see `import`).
//! - The inbox: pending hand-offs addressed to the office, folded from the stream and
//!   served by `ListInbox` and `WatchInbox` (see `inbox`), resumed at start from its
//!   snapshot file when `--inbox-snapshot` is given (see `snapshot`).
//! - [`agencies`]: the common `AgencyService` and the five agency-specific services.
//! - [`Service`]: start (load files, connect, bind) and run (serve, react, register as a
//!   NATS service, shut down in order).
//!
//! **Boundary:** no NATS client here (everything goes through `casebus-bus`) and no case
//! rules (they live in `casebus-domain`); this crate wires them to gRPC.

pub mod agencies;
mod config;
mod error;
mod import;
mod inbox;
mod keys;
mod kit;
mod receipts;
mod service;
mod snapshot;
mod stats;
mod status;

pub use agencies::{AgencyApi, Court, Customs, IpCenter, Procuratorate, PublicSecurity};
pub use config::AgencyConfig;
pub use error::AgencyError;
pub use kit::Kit;
pub use service::{RECEIPTS_ACK_WAIT, ReadyFile, Service};
pub use status::{REASON_METADATA, RULE_METADATA, status_of};
