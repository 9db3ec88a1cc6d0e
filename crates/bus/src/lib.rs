//! The casebus contract on NATS JetStream, and the only crate that talks to NATS.
//!
//! - [`subjects`]: stream names, subjects and header names.
//! - [`provision`]: idempotent creation of the `CASES`, `CASES_DLQ` and `AUDIT` streams.
//! - [`Bus`]: a connected handle; [`Bus::load_case`] reads and verifies one case.
//! - [`Appender`]: load, fold, decide, sign, publish with `Nats-Msg-Id` and
//!   `Nats-Expected-Last-Subject-Sequence`, retrying on a concurrent write.
//! - [`ConsumerRunner`]: a durable consumer that verifies every message, hands good
//!   events to a handler, acks only after the handler committed, and moves anything it
//!   cannot verify to `CASES_DLQ` so a poison message never blocks it; in batched mode
//!   ([`ConsumerRunner::run_batched`], [`BatchHandler`]) it hands over and acks whole
//!   batches.
//!
//! **Boundary:** no other casebus crate depends on async-nats.

mod append;
mod bus;
mod connect;
mod consumer;
pub mod discovery;
mod error;
mod memory;
pub mod ops;
pub mod provision;
pub mod service;
mod store;
pub mod subjects;
mod tail;

pub use append::{
    AppendRequest, Appended, Appender, AppenderConfig, AppenderStats, DEFAULT_CACHE_BYTES,
    command_digest,
};
pub use async_nats::Client;
pub use bus::{Bus, BusConfig, DIRECT_READS};
pub use connect::{ConnectConfig, DEFAULT_MAX_RECONNECT_DELAY, check_inbox_prefix, connect};
pub use consumer::{
    BatchHandler, ConsumerConfig, ConsumerCounters, ConsumerRunner, EventHandler, HandlerError,
};
pub use error::{AppendError, BusError, ConsumeError, LoadError, ProvisionError};
pub use provision::StreamSettings;
pub use store::{LoadedCase, RejectedMessage, StoredEvent, recorded};
pub use tail::{RawEvent, RawEvents};

/// Re-exported so callers can build a shutdown token without naming tokio-util.
pub use tokio_util::sync::CancellationToken;
