//! Generated protobuf types of casebus (`casebus.*.v1`), the id newtypes that guard every
//! identifier at the boundary, and helpers for payload kinds, including kinds this build
//! does not know.
//!
//! This crate does no I/O. It does not sign or verify (see `casebus-integrity`) and it
//! holds no case rules (see `casebus-domain`).

pub mod content;
mod ids;
mod payload;
mod timestamps;

pub use ids::{
    AGENCY_NAMES, CaseId, EventId, IdError, OfficeId, RequestId, agency_from_name, agency_name,
    validate_local_id,
};
pub use payload::{PayloadKind, payload_type_name, peek_signed_event, unknown_payload};
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

/// The command API every agency service offers: common commands, inbox, case view
/// (`casebus.agency.v1`).
pub mod agency {
    /// Version 1 of the agency API.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.agency.v1.rs"));
    }
}

/// The customs service's own commands (`casebus.customs.v1`).
pub mod customs {
    /// Version 1 of the customs API.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.customs.v1.rs"));
    }
}

/// The IP center service's own commands (`casebus.ip_center.v1`).
pub mod ip_center {
    /// Version 1 of the IP center API.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.ip_center.v1.rs"));
    }
}

/// The public security service's own commands (`casebus.public_security.v1`).
pub mod public_security {
    /// Version 1 of the public security API.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.public_security.v1.rs"));
    }
}

/// The procuratorate service's own commands (`casebus.procuratorate.v1`).
pub mod procuratorate {
    /// Version 1 of the procuratorate API.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.procuratorate.v1.rs"));
    }
}

/// The court service's own commands (`casebus.court.v1`).
pub mod court {
    /// Version 1 of the court API.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.court.v1.rs"));
    }
}

/// The query gateway's read API: timelines, case views, case lists, reference lookup
/// and the agency feed (`casebus.gateway.v1`).
pub mod gateway {
    /// Version 1 of the gateway API.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.gateway.v1.rs"));
    }
}

pub use prost_types::Timestamp;

/// The benchmarks' bare tonic echo baseline (`casebus.bench.v1`).
pub mod bench {
    /// Version 1.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/casebus.bench.v1.rs"));
    }
}
