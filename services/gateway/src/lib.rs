//! casebus-gateway, the query gateway: consumes the `CASES` stream with its own durable
//! consumer into an embedded SQLite projection (`casebus-timeline`), and serves every
//! agency the shared case record over gRPC (`casebus.gateway.v1.Gateway`): timelines
//! (paged, and watched from a version), case views, case lists, reference lookup and the
//! agency feed, each filtered by the events' visibility and recorded in the `AUDIT`
//! stream before it is answered.
//!
//! - [`app::run`]: start, serve, stop;
//! - `store`: the projection file (one writer, a pool of readers, position announcements);
//! - `projector`: the consumer's batch handler;
//! - `service` and `watch`: the gRPC reads and streams;
//! - `visibility` and `convert`: who sees what, and how it goes on the wire;
//! - `audit`: one audit record per read;
//! - `page_token`: sealed, tamper-evident `ListCases` page tokens;
//! - [`tlog`]: the follower that keeps the transparency log level with `CASES`.
//!
//! **Boundary:** the gateway never writes to `CASES`; it does not verify events itself
//! (the bus's consumer does, and dead-letters what fails); it decides visibility only
//! through `casebus_domain::sight`.

pub mod app;
mod audit;
pub mod checkpoint;
pub mod config;
mod convert;
pub mod error;
mod metrics;
pub mod opening;
mod page_token;
mod projector;
mod proofs;
mod service;
mod store;
pub mod tlog;
mod visibility;
mod watch;
