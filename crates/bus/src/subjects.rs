//! Names on the wire: streams, subjects and headers. Everything that must match between
//! producers, consumers and operators is spelled once, here.

use casebus_proto::CaseId;

/// The source of truth: every case event, on `case.<case_id>`.
pub const CASES_STREAM: &str = "CASES";
/// Messages a consumer could not decode or verify, on `dlq.<consumer>`.
pub const DLQ_STREAM: &str = "CASES_DLQ";
/// One record per timeline read at a gateway, on `audit.<office>`.
pub const AUDIT_STREAM: &str = "AUDIT";

/// The transparency log's signed checkpoints, on `checkpoint.<origin token>`, and the
/// witnesses' cosignatures, on `cosignature.<origin token>.<witness token>`.
pub const CHECKPOINTS_STREAM: &str = "CHECKPOINTS";

/// Subjects of the `CASES` stream: exactly one token after `case.`.
pub const CASES_SUBJECTS: &str = "case.*";
/// Subjects of the `CASES_DLQ` stream.
pub const DLQ_SUBJECTS: &str = "dlq.*";
/// Subjects of the `AUDIT` stream.
pub const AUDIT_SUBJECTS: &str = "audit.*";

/// Subjects of the `CHECKPOINTS` stream.
pub const CHECKPOINTS_SUBJECTS: [&str; 2] = ["checkpoint.*", "cosignature.*.*"];

/// One subject token for a log origin or a witness's key name, which may hold `.`,
/// `/` and other characters a token may not: the first 16 hex digits of the SHA-256 of
/// the name (64 bits, so two names of one deployment do not collide by chance).
pub fn name_token(name: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The subject of an origin's checkpoints: `checkpoint.<name_token(origin)>`.
pub fn checkpoint_subject(origin: &str) -> String {
    format!("checkpoint.{}", name_token(origin))
}

/// The subject of one witness's cosignatures of an origin's checkpoints:
/// `cosignature.<name_token(origin)>.<name_token(witness)>`.
pub fn cosignature_subject(origin: &str, witness: &str) -> String {
    format!("cosignature.{}.{}", name_token(origin), name_token(witness))
}

/// Every witness's cosignatures of an origin: `cosignature.<name_token(origin)>.*`.
pub fn cosignatures_filter(origin: &str) -> String {
    format!("cosignature.{}.*", name_token(origin))
}

/// The subject of a case: `case.<case_id>`. A `CaseId` is always one safe token.
pub fn case_subject(case_id: &CaseId) -> String {
    format!("case.{case_id}")
}

/// The case id of a `case.<id>` subject, if it is one.
pub fn case_of_subject(subject: &str) -> Option<CaseId> {
    subject
        .strip_prefix("case.")
        .and_then(|id| CaseId::new(id).ok())
}

/// The dead-letter subject of a consumer: `dlq.<consumer>`.
pub fn dlq_subject(consumer: &str) -> String {
    format!("dlq.{consumer}")
}

/// The audit subject of an office: `audit.<office>` with `:` kept (it is not a subject
/// metacharacter).
pub fn audit_subject(office: &str) -> String {
    format!("audit.{office}")
}

/// Header names set on published events and dead letters.
pub mod headers {
    /// Catalogue name of the payload kind (informational; the signed bytes are the truth).
    pub const EVENT_TYPE: &str = "Casebus-Event-Type";
    /// Recording office (informational).
    pub const OFFICE: &str = "Casebus-Office";
    /// Case version (informational).
    pub const CASE_VERSION: &str = "Casebus-Case-Version";
    /// Why a message was dead-lettered, human-readable.
    pub const DLQ_REASON: &str = "Casebus-Dlq-Reason";
    /// Why a message was dead-lettered, a stable code (`bad_signature`, `gap`, ...).
    pub const DLQ_CODE: &str = "Casebus-Dlq-Code";
    /// The consumer that dead-lettered it.
    pub const DLQ_CONSUMER: &str = "Casebus-Dlq-Consumer";
    /// The stream the message came from.
    pub const DLQ_STREAM: &str = "Casebus-Dlq-Stream";
    /// The message's sequence in that stream.
    pub const DLQ_SEQUENCE: &str = "Casebus-Dlq-Sequence";
    /// The message's original subject.
    pub const DLQ_SUBJECT: &str = "Casebus-Dlq-Subject";
}
