//! Generated protobuf types of casebus (`casebus.*.v1`), the id newtypes that guard every
//! identifier at the boundary, and helpers for payload kinds, including kinds this build
//! does not know.
//!
//! This crate does no I/O. It does not sign or verify (see `casebus-integrity`) and it
//! holds no case rules (see `casebus-domain`).

mod ids;
mod payload;
mod timestamps;

pub use ids::{
    AGENCY_NAMES, CaseId, EventId, IdError, OfficeId, RequestId, agency_from_name, agency_name,
    validate_local_id,
};
pub use payload::{PayloadKind, payload_type_name, unknown_payload};
pub use timestamps::{datetime_from, timestamp_from};

/// The encoded `FileDescriptorSet` of every `.proto` in `proto/`, for gRPC reflection
/// and the schema evolution guard.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/casebus_descriptor.bin"));

/// Case events: envelope, signed wrapper, payload catalogue (`casebus.event.v1`).
pub mod event {
    /// Version 1 of the case event protocol.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.event.v1.rs"));
    }
}

pub use prost_types::Timestamp;
