//! The inbox snapshot (`--inbox-snapshot`, docs/STARTUP.md): the inbox as folded up to a
//! stream position, kept in a file of the service instance so that a restart loads its
//! open work and follows the stream from there, instead of folding the whole stream.
//!
//! The file is `InboxSnapshotFile` (`proto/casebus/agency/v1/snapshot.proto`): the
//! encoded `InboxSnapshot` and its SHA-256. [`decode`] refuses a file whose digest, format
//! version, office or stream is not this service's, each with its own [`Refused`]
//! reason; [`resume`] then checks it against the stream (the message at `position` must
//! hash to `anchor`, and each open entry's request must be stored at its sequence)
//! before it loads it. A refused snapshot is logged and counted
//! (`casebus_inbox_snapshot_refused_total{reason}`), and the inbox is rebuilt from the
//! first message: it never stops the service from starting.
//!
//! Besides the open entries the snapshot holds the legal clocks of every case with a
//! clock still running (any office's), which later events of those cases fold onto.
//! Cases whose clocks are all answered are left out: the inbox folds a later event of
//! such a case onto fresh clocks, as it would after a rebuild; only a pre-snapshot
//! message stored again after the snapshot's position (a replay the appender does not
//! make) could then count where a rebuild would ignore it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use casebus_bus::Bus;
use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;
use casebus_domain::{
    CaseState, ClockAdjust, ClockAnswer, ClockAnswerKind, ClockName, Extension, HandoffClocks,
    ProsecutionDecision, RecordedDueTime, RecordedDues, RulesDigest, Suspension,
};
use casebus_proto::agency::v1::{
    HandoffStatus, InboxSnapshot, InboxSnapshotAnswer, InboxSnapshotCase, InboxSnapshotClocks,
    InboxSnapshotEntry, InboxSnapshotExtension, InboxSnapshotFile,
    InboxSnapshotProsecutionDecision, InboxSnapshotSuspension,
};
use casebus_proto::event::v1::{Agency, Event, HandoffKind, RecordedDue, SignedEvent};
use casebus_proto::{CaseId, EventId, OfficeId, Timestamp, datetime_from, timestamp_from};

use crate::inbox::{Entry, Inbox};

/// The snapshot format this build writes and reads. Version 2 added each hand-off's
/// recorded due times; a version 1 file lacks them (its clocks would count with this
/// service's rules where a rebuild shows the recorded due times), so it is refused and
/// the inbox rebuilt from the stream.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Longest time between two snapshots while the inbox moves.
pub(crate) const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);
/// Messages folded after which a snapshot is written without waiting for the interval.
pub(crate) const SNAPSHOT_MESSAGES: u64 = 10_000;
/// How often the writer looks at the inbox's position.
const WRITER_TICK: Duration = Duration::from_secs(1);
/// First pause before checking the snapshot against the stream again after a read error.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest such pause.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Open entries checked against the stream at once.
const ENTRY_CHECKS_IN_FLIGHT: usize = 16;

/// The inbox folded up to `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub office: OfficeId,
    pub stream: String,
    /// The last stream sequence folded.
    pub position: u64,
    /// SHA-256 of the message stored at `position` ([`anchor_of`]); empty at 0.
    pub anchor: Vec<u8>,
    /// The open entries, in key order.
    pub entries: Vec<Entry>,
    /// The legal clocks of every case with a clock still running.
    pub cases: Vec<(CaseId, CaseState)>,
}

/// Why a snapshot is not resumed from; [`Refused::reason`] is the metric's label.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The file exists but cannot be read.
    #[error("the file cannot be read")]
    Unreadable(#[source] std::io::Error),
    /// The bytes are not an inbox snapshot.
    #[error("the file is not an inbox snapshot: {0}")]
    Malformed(String),
    /// The digest does not match the contents.
    #[error("its SHA-256 does not match its contents (a torn or edited file)")]
    Digest,
    /// Another format version.
    #[error("format version {found}; this service reads version {expected}")]
    FormatVersion {
        /// The file's.
        found: u32,
        /// This build's.
        expected: u32,
    },
    /// Another office's snapshot.
    #[error(
        "it is the inbox of office {found}, not of {expected}: --inbox-snapshot names another office's file"
    )]
    Office {
        /// The file's office.
        found: String,
        /// This service's.
        expected: OfficeId,
    },
    /// A snapshot of another stream.
    #[error("it is a snapshot of stream {found:?}, not of {expected}")]
    Stream {
        /// The file's stream.
        found: String,
        /// The stream the inbox follows.
        expected: &'static str,
    },
    /// The position lies beyond what the stream holds.
    #[error("its position {position} lies beyond the stream's last sequence {last}")]
    BeyondStream {
        /// The snapshot's position.
        position: u64,
        /// The stream's last sequence.
        last: u64,
    },
    /// The stream holds no message at the position.
    #[error("the stream holds no message at its position {position}")]
    AnchorMissing {
        /// The snapshot's position.
        position: u64,
    },
    /// The message at the position is another one.
    #[error(
        "the message the stream holds at its position {position} is not the one it was taken after (another stream, or a stream that lost its tail)"
    )]
    AnchorMismatch {
        /// The snapshot's position.
        position: u64,
    },
    /// An open entry's request is not stored at its sequence.
    #[error(
        "hand-off {handoff_id} of case {case_id}: the stream holds no request {event_id} at sequence {sequence}"
    )]
    Entry {
        /// The entry's case.
        case_id: CaseId,
        /// Its hand-off.
        handoff_id: String,
        /// Its request's event id.
        event_id: EventId,
        /// Its request's stream sequence.
        sequence: u64,
    },
}

impl Refused {
    /// The stable code of the reason (`digest`, `office`, `anchor_mismatch` ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreadable(_) => "unreadable",
            Self::Malformed(_) => "malformed",
            Self::Digest => "digest",
            Self::FormatVersion { .. } => "format_version",
            Self::Office { .. } => "office",
            Self::Stream { .. } => "stream",
            Self::BeyondStream { .. } => "beyond_stream",
            Self::AnchorMissing { .. } => "anchor_missing",
            Self::AnchorMismatch { .. } => "anchor_mismatch",
            Self::Entry { .. } => "entry",
        }
    }
}

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unwritable {
    /// A clock was answered by a kind this format has no name for.
    #[error("a clock answer of kind {0:?} has no name in snapshot format {FORMAT_VERSION}")]
    Answer(ClockAnswerKind),
    /// The stream could not be read for the anchor.
    #[error("reading the message at position {position} for the anchor")]
    Read {
        /// The position.
        position: u64,
        /// The bus error.
        #[source]
        source: casebus_bus::BusError,
    },
    /// The stream no longer holds the message at the position.
    #[error("the stream holds no message at position {0}")]
    Gone(u64),
    /// The file could not be written.
    #[error("writing {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The anchor of a stored message: SHA-256 of its subject, a zero byte and its payload.
pub(crate) fn anchor_of(subject: &str, payload: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(subject.as_bytes());
    hash.update([0]);
    hash.update(payload);
    hash.finalize().to_vec()
}

const ANSWERS: [(ClockAnswerKind, &str); 14] = [
    (ClockAnswerKind::Acknowledged, "acknowledged"),
    (ClockAnswerKind::Accepted, "accepted"),
    (ClockAnswerKind::Declined, "declined"),
    (ClockAnswerKind::InvestigationFiled, "investigation_filed"),
    (
        ClockAnswerKind::InvestigationDeclined,
        "investigation_declined",
    ),
    (ClockAnswerKind::ArrestApproved, "arrest_approved"),
    (ClockAnswerKind::ArrestDenied, "arrest_denied"),
    (ClockAnswerKind::IndictmentFiled, "indictment_filed"),
    (
        ClockAnswerKind::NonProsecutionDecided,
        "non_prosecution_decided",
    ),
    (
        ClockAnswerKind::ReturnedForSupplementaryInvestigation,
        "returned_for_supplementary_investigation",
    ),
    (ClockAnswerKind::TransferredAgain, "transferred_again"),
    (ClockAnswerKind::CaseDocketed, "case_docketed"),
    (
        ClockAnswerKind::InfringementAssessed,
        "infringement_assessed",
    ),
    (ClockAnswerKind::NonFilingExplained, "non_filing_explained"),
];

fn answer_name(kind: ClockAnswerKind) -> Result<&'static str, Unwritable> {
    ANSWERS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, name)| *name)
        .ok_or(Unwritable::Answer(kind))
}

fn answer_kind(name: &str) -> Result<ClockAnswerKind, Refused> {
    ANSWERS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(kind, _)| *kind)
        .ok_or_else(|| Refused::Malformed(format!("unknown clock answer {name:?}")))
}

fn answer_to(answer: &ClockAnswer) -> Result<InboxSnapshotAnswer, Unwritable> {
    Ok(InboxSnapshotAnswer {
        by: answer_name(answer.by)?.to_owned(),
        version: answer.version,
        at: Some(timestamp_from(answer.at)),
    })
}

fn clocks_to(clocks: &HandoffClocks) -> Result<InboxSnapshotClocks, Unwritable> {
    Ok(InboxSnapshotClocks {
        handoff_id: clocks.handoff_id.clone(),
        kind: clocks.kind as i32,
        to_agency: clocks.to_agency as i32,
        started_at: Some(timestamp_from(clocks.started_at)),
        requested_version: clocks.requested_version,
        receipt: clocks.receipt.as_ref().map(answer_to).transpose()?,
        decision: clocks.decision.as_ref().map(answer_to).transpose()?,
        extensions: clocks
            .adjust
            .extensions
            .iter()
            .map(|e| InboxSnapshotExtension {
                version: e.version,
                new_due_at: e.new_due_at.map(timestamp_from),
                suspensions_before: e.suspensions_before as u64,
            })
            .collect(),
        suspensions: clocks
            .adjust
            .suspensions
            .iter()
            .map(|s| InboxSnapshotSuspension {
                from: Some(timestamp_from(s.from)),
                to: Some(timestamp_from(s.to)),
            })
            .collect(),
        suspended_since: clocks.adjust.suspended_since.map(timestamp_from),
        recorded_receipt: clocks
            .recorded
            .receipt
            .as_ref()
            .map(|r| recorded_to(r, ClockName::Receipt)),
        recorded_decision: match (
            clocks.recorded.decision.as_ref(),
            ClockName::decision_of(clocks.kind),
        ) {
            (Some(r), Some(name)) => Some(recorded_to(r, name)),
            _ => None,
        },
    })
}

fn recorded_to(due: &RecordedDueTime, clock: ClockName) -> RecordedDue {
    RecordedDue {
        clock: clock.key().to_owned(),
        due_at: due.due_at.map(timestamp_from),
        rules_digest: due.rules_digest.to_string(),
    }
}

fn recorded_from(
    due: Option<&RecordedDue>,
    what: &str,
) -> Result<Option<RecordedDueTime>, Refused> {
    due.map(|d| {
        Ok(RecordedDueTime {
            due_at: optional_time(d.due_at.as_ref(), what)?,
            rules_digest: RulesDigest::parse(&d.rules_digest),
        })
    })
    .transpose()
}

fn case_to(case_id: &CaseId, case: &CaseState) -> Result<InboxSnapshotCase, Unwritable> {
    Ok(InboxSnapshotCase {
        case_id: case_id.to_string(),
        version: case.version,
        clocks: case
            .clocks
            .values()
            .map(clocks_to)
            .collect::<Result<_, _>>()?,
        prosecution_decision: case
            .prosecution_decision
            .as_ref()
            .map(|d| {
                Ok::<_, Unwritable>(InboxSnapshotProsecutionDecision {
                    handoff_id: d.handoff_id.clone(),
                    by: answer_name(d.by)?.to_owned(),
                    version: d.version,
                })
            })
            .transpose()?,
    })
}

fn entry_to(entry: &Entry) -> InboxSnapshotEntry {
    InboxSnapshotEntry {
        case_id: entry.case_id.to_string(),
        handoff_id: entry.handoff_id.clone(),
        kind: entry.kind as i32,
        from_office_id: entry.from_office.to_string(),
        names_office: entry.names_office,
        to_agency: entry.to_agency as i32,
        to_office_id: entry
            .to_office
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        status: entry.status as i32,
        reason: entry.reason.clone(),
        evidence_ids: entry.evidence_ids.clone(),
        visibility: Some(entry.visibility.clone()),
        clear: entry.clear,
        requested_at: Some(timestamp_from(entry.requested_at)),
        due_at: entry.due_at.map(timestamp_from),
        requested_event_id: entry.event_id.to_string(),
        requested_version: entry.version,
        stream_sequence: entry.sequence,
        acknowledged_by_office_id: entry
            .acknowledged_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

/// Encodes `snapshot` as the file's bytes.
pub(crate) fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, Unwritable> {
    let contents = InboxSnapshot {
        format_version: FORMAT_VERSION,
        office_id: snapshot.office.to_string(),
        stream: snapshot.stream.clone(),
        position: snapshot.position,
        anchor: snapshot.anchor.clone(),
        entries: snapshot.entries.iter().map(entry_to).collect(),
        cases: snapshot
            .cases
            .iter()
            .map(|(id, case)| case_to(id, case))
            .collect::<Result<_, _>>()?,
    }
    .encode_to_vec();
    let sha256 = Sha256::digest(&contents).to_vec();
    Ok(InboxSnapshotFile { contents, sha256 }.encode_to_vec())
}

fn malformed(what: impl std::fmt::Display) -> Refused {
    Refused::Malformed(what.to_string())
}

fn time_of(ts: Option<&Timestamp>, what: &str) -> Result<OffsetDateTime, Refused> {
    ts.and_then(datetime_from)
        .ok_or_else(|| malformed(format_args!("{what}: missing or invalid time")))
}

fn optional_time(ts: Option<&Timestamp>, what: &str) -> Result<Option<OffsetDateTime>, Refused> {
    ts.map(|t| time_of(Some(t), what)).transpose()
}

fn office_of(id: &str, what: &str) -> Result<OfficeId, Refused> {
    OfficeId::new(id).map_err(|e| malformed(format_args!("{what}: {e}")))
}

fn optional_office(id: &str, what: &str) -> Result<Option<OfficeId>, Refused> {
    if id.is_empty() {
        Ok(None)
    } else {
        office_of(id, what).map(Some)
    }
}

fn handoff_kind(value: i32, what: &str) -> Result<HandoffKind, Refused> {
    HandoffKind::try_from(value).map_err(|_| malformed(format_args!("{what}: kind {value}")))
}

fn agency(value: i32, what: &str) -> Result<Agency, Refused> {
    Agency::try_from(value).map_err(|_| malformed(format_args!("{what}: agency {value}")))
}

fn answer_from(answer: &InboxSnapshotAnswer, what: &str) -> Result<ClockAnswer, Refused> {
    Ok(ClockAnswer {
        by: answer_kind(&answer.by)?,
        version: answer.version,
        at: time_of(answer.at.as_ref(), what)?,
    })
}

fn clocks_from(clocks: &InboxSnapshotClocks, case_id: &str) -> Result<HandoffClocks, Refused> {
    let what = format!("clocks of hand-off {} of case {case_id}", clocks.handoff_id);
    Ok(HandoffClocks {
        handoff_id: clocks.handoff_id.clone(),
        kind: handoff_kind(clocks.kind, &what)?,
        to_agency: agency(clocks.to_agency, &what)?,
        started_at: time_of(clocks.started_at.as_ref(), &what)?,
        requested_version: clocks.requested_version,
        receipt: clocks
            .receipt
            .as_ref()
            .map(|a| answer_from(a, &what))
            .transpose()?,
        decision: clocks
            .decision
            .as_ref()
            .map(|a| answer_from(a, &what))
            .transpose()?,
        adjust: ClockAdjust {
            extensions: clocks
                .extensions
                .iter()
                .map(|e| {
                    Ok(Extension {
                        version: e.version,
                        new_due_at: optional_time(e.new_due_at.as_ref(), &what)?,
                        suspensions_before: usize::try_from(e.suspensions_before)
                            .map_err(|_| malformed(&what))?,
                    })
                })
                .collect::<Result<_, Refused>>()?,
            suspensions: clocks
                .suspensions
                .iter()
                .map(|s| {
                    Ok(Suspension {
                        from: time_of(s.from.as_ref(), &what)?,
                        to: time_of(s.to.as_ref(), &what)?,
                    })
                })
                .collect::<Result<_, Refused>>()?,
            suspended_since: optional_time(clocks.suspended_since.as_ref(), &what)?,
        },
        recorded: RecordedDues {
            receipt: recorded_from(clocks.recorded_receipt.as_ref(), &what)?,
            decision: recorded_from(clocks.recorded_decision.as_ref(), &what)?,
        },
    })
}

fn case_from(case: &InboxSnapshotCase) -> Result<(CaseId, CaseState), Refused> {
    let case_id = CaseId::new(&case.case_id).map_err(|e| malformed(format_args!("case: {e}")))?;
    let mut state = CaseState {
        version: case.version,
        ..CaseState::default()
    };
    for clocks in &case.clocks {
        let clocks = clocks_from(clocks, &case.case_id)?;
        state.clocks.insert(clocks.handoff_id.clone(), clocks);
    }
    state.prosecution_decision = case
        .prosecution_decision
        .as_ref()
        .map(|d| {
            Ok::<_, Refused>(ProsecutionDecision {
                handoff_id: d.handoff_id.clone(),
                by: answer_kind(&d.by)?,
                version: d.version,
            })
        })
        .transpose()?;
    Ok((case_id, state))
}

fn entry_from(entry: &InboxSnapshotEntry) -> Result<Entry, Refused> {
    let what = format!(
        "entry of hand-off {} of case {}",
        entry.handoff_id, entry.case_id
    );
    let status = HandoffStatus::try_from(entry.status)
        .ok()
        .filter(|s| *s != HandoffStatus::Unspecified)
        .ok_or_else(|| malformed(format_args!("{what}: status {}", entry.status)))?;
    Ok(Entry {
        case_id: CaseId::new(&entry.case_id).map_err(|e| malformed(format_args!("{what}: {e}")))?,
        handoff_id: entry.handoff_id.clone(),
        kind: handoff_kind(entry.kind, &what)?,
        from_office: office_of(&entry.from_office_id, &what)?,
        names_office: entry.names_office,
        to_agency: agency(entry.to_agency, &what)?,
        to_office: optional_office(&entry.to_office_id, &what)?,
        status,
        reason: entry.reason.clone(),
        evidence_ids: entry.evidence_ids.clone(),
        visibility: entry
            .visibility
            .clone()
            .ok_or_else(|| malformed(format_args!("{what}: no visibility")))?,
        clear: entry.clear,
        requested_at: time_of(entry.requested_at.as_ref(), &what)?,
        due_at: optional_time(entry.due_at.as_ref(), &what)?,
        event_id: EventId::new(&entry.requested_event_id)
            .map_err(|e| malformed(format_args!("{what}: {e}")))?,
        version: entry.requested_version,
        sequence: entry.stream_sequence,
        acknowledged_by: optional_office(&entry.acknowledged_by_office_id, &what)?,
        // Counted again from the case's clocks when loaded.
        clock: None,
    })
}

/// Decodes the file's bytes and checks what can be checked without the stream: the
/// digest, the format version, the office (`office`) and the stream (`stream`).
pub(crate) fn decode(bytes: &[u8], office: &OfficeId, stream: &str) -> Result<Snapshot, Refused> {
    let file = InboxSnapshotFile::decode(bytes).map_err(malformed)?;
    if Sha256::digest(&file.contents).as_slice() != file.sha256.as_slice() {
        return Err(Refused::Digest);
    }
    let contents = InboxSnapshot::decode(file.contents.as_slice()).map_err(malformed)?;
    if contents.format_version != FORMAT_VERSION {
        return Err(Refused::FormatVersion {
            found: contents.format_version,
            expected: FORMAT_VERSION,
        });
    }
    if contents.office_id != office.as_str() {
        return Err(Refused::Office {
            found: contents.office_id,
            expected: office.clone(),
        });
    }
    if contents.stream != stream {
        return Err(Refused::Stream {
            found: contents.stream,
            expected: CASES_STREAM,
        });
    }
    if (contents.position == 0) != contents.anchor.is_empty() {
        return Err(malformed("an anchor without a position, or the reverse"));
    }
    let entries = contents
        .entries
        .iter()
        .map(entry_from)
        .collect::<Result<Vec<_>, _>>()?;
    let cases = contents
        .cases
        .iter()
        .map(case_from)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(orphan) = entries
        .iter()
        .find(|e| !cases.iter().any(|(id, _)| id == &e.case_id))
    {
        return Err(malformed(format_args!(
            "hand-off {} of case {} has no clocks",
            orphan.handoff_id, orphan.case_id
        )));
    }
    Ok(Snapshot {
        office: office.clone(),
        stream: contents.stream,
        position: contents.position,
        anchor: contents.anchor,
        entries,
        cases,
    })
}

/// Writes `bytes` to `path` atomically: a sibling file, synced, then renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)
}

/// Takes the inbox's snapshot, anchors it to the message at its position and writes it
/// to `path`. Returns its position.
pub(crate) async fn write(inbox: &Inbox, bus: &Bus, path: &Path) -> Result<u64, Unwritable> {
    let mut snapshot = inbox.snapshot(CASES_STREAM);
    let position = snapshot.position;
    if position > 0 {
        let message = bus
            .message_at(position)
            .await
            .map_err(|source| Unwritable::Read { position, source })?
            .ok_or(Unwritable::Gone(position))?;
        snapshot.anchor = anchor_of(&message.subject, &message.payload);
    }
    let bytes = encode(&snapshot)?;
    let path_buf = path.to_owned();
    tokio::task::spawn_blocking(move || write_atomically(&path_buf, &bytes))
        .await
        .map_err(|e| Unwritable::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| Unwritable::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok(position)
}

/// Keeps the snapshot at `path`: once the inbox has caught up, then every
/// [`SNAPSHOT_INTERVAL`] or [`SNAPSHOT_MESSAGES`] messages folded (whichever comes
/// first) while it moves, and once more when `stop` is cancelled. A failed write is
/// logged; the next one tries again.
pub(crate) async fn keep(inbox: &Inbox, bus: &Bus, path: &Path, stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => return,
        () = inbox.wait_ready() => {}
    }
    let mut written = write_logged(inbox, bus, path).await;
    let mut at = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(WRITER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let position = inbox.position();
        let moved = written.is_none_or(|w| position != w);
        if moved
            && (position.saturating_sub(written.unwrap_or(0)) >= SNAPSHOT_MESSAGES
                || at.elapsed() >= SNAPSHOT_INTERVAL)
        {
            written = write_logged(inbox, bus, path).await.or(written);
            at = tokio::time::Instant::now();
        }
    }
    if let Some(position) = write_logged(inbox, bus, path).await {
        tracing::info!(position, path = %path.display(), "inbox snapshot written at shutdown");
    }
}

async fn write_logged(inbox: &Inbox, bus: &Bus, path: &Path) -> Option<u64> {
    match write(inbox, bus, path).await {
        Ok(position) => {
            tracing::debug!(position, path = %path.display(), "inbox snapshot written");
            Some(position)
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), error = %error, "writing the inbox snapshot failed");
            None
        }
    }
}

/// What a check against the stream found: refused, or the stream could not be read.
enum CheckError {
    Refused(Refused),
    Read(String),
}

impl From<Refused> for CheckError {
    fn from(refused: Refused) -> Self {
        Self::Refused(refused)
    }
}

/// Checks `snapshot` against the stream: its position within it, the message at its
/// position hashing to its anchor, each open entry's request stored at its sequence.
async fn check(snapshot: &Snapshot, bus: &Bus) -> Result<(), CheckError> {
    if snapshot.position == 0 {
        return Ok(());
    }
    let last = Ops::from_bus(bus)
        .stream_status(CASES_STREAM)
        .await
        .map_err(|e| CheckError::Read(e.to_string()))?
        .map_or(0, |s| s.last_sequence);
    if snapshot.position > last {
        return Err(Refused::BeyondStream {
            position: snapshot.position,
            last,
        }
        .into());
    }
    let message = bus
        .message_at(snapshot.position)
        .await
        .map_err(read_error)?
        .ok_or(Refused::AnchorMissing {
            position: snapshot.position,
        })?;
    if anchor_of(&message.subject, &message.payload) != snapshot.anchor {
        return Err(Refused::AnchorMismatch {
            position: snapshot.position,
        }
        .into());
    }
    // One direct get per open entry, a few at a time.
    for chunk in snapshot.entries.chunks(ENTRY_CHECKS_IN_FLIGHT) {
        let mut checks = Vec::with_capacity(chunk.len());
        for entry in chunk {
            checks.push(check_entry(entry, snapshot.position, bus));
        }
        futures::future::try_join_all(checks).await?;
    }
    Ok(())
}

/// Checks that the stream holds `entry`'s request at its sequence (at or below
/// `position`).
async fn check_entry(entry: &Entry, position: u64, bus: &Bus) -> Result<(), CheckError> {
    let refused = || Refused::Entry {
        case_id: entry.case_id.clone(),
        handoff_id: entry.handoff_id.clone(),
        event_id: entry.event_id.clone(),
        sequence: entry.sequence,
    };
    if entry.sequence > position {
        return Err(refused().into());
    }
    let message = bus
        .message_at(entry.sequence)
        .await
        .map_err(read_error)?
        .ok_or_else(refused)?;
    let event_id = SignedEvent::decode(message.payload.as_ref())
        .ok()
        .and_then(|signed| Event::decode(signed.event.as_slice()).ok())
        .map(|event| event.event_id);
    if event_id.as_deref() != Some(entry.event_id.as_str()) {
        return Err(refused().into());
    }
    Ok(())
}

fn read_error(e: casebus_bus::BusError) -> CheckError {
    let source = std::error::Error::source(&e).map(ToString::to_string);
    CheckError::Read(format!("{e}: {}", source.unwrap_or_default()))
}

/// Resumes the inbox from the snapshot at `path`, when there is one and it passes every
/// check; otherwise the inbox stays empty and is rebuilt from the first message. A
/// refusal is logged (`inbox snapshot refused`) and counted by reason in `refused`.
/// Stream read errors during the checks are retried until `stop`.
pub(crate) async fn resume(
    inbox: &Inbox,
    bus: &Bus,
    path: &Path,
    refused: &prometheus::IntCounterVec,
    stop: &CancellationToken,
) {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no inbox snapshot yet; rebuilding the inbox from the first message");
            return;
        }
        Err(error) => return refuse(path, refused, &Refused::Unreadable(error)),
    };
    let snapshot = match decode(&bytes, inbox.office(), CASES_STREAM) {
        Ok(snapshot) => snapshot,
        Err(why) => return refuse(path, refused, &why),
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        match check(&snapshot, bus).await {
            Ok(()) => break,
            Err(CheckError::Refused(why)) => return refuse(path, refused, &why),
            Err(CheckError::Read(error)) => {
                tracing::warn!(error = %error, "checking the inbox snapshot against the stream failed; retrying");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    let (position, entries) = (snapshot.position, snapshot.entries.len());
    inbox.restore(snapshot);
    tracing::info!(
        position,
        entries,
        path = %path.display(),
        "inbox resumed from its snapshot; following the stream from position {}",
        position + 1
    );
}

fn refuse(path: &Path, refused: &prometheus::IntCounterVec, why: &Refused) {
    tracing::warn!(
        path = %path.display(),
        reason = %why.reason(),
        error = %why,
        "inbox snapshot refused; rebuilding the inbox from the first message"
    );
    refused.with_label_values(&[why.reason()]).inc();
}

#[cfg(test)]
mod tests {
    use casebus_proto::event::v1::{Visibility, VisibilityKind};

    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).expect("time")
    }

    fn office(id: &str) -> OfficeId {
        OfficeId::new(id).expect("office")
    }

    /// A snapshot with one open entry whose clocks carry every kind of field (an
    /// answered receipt, an extension, a suspension that ended and one that runs), and
    /// a second case with a prosecution decision.
    fn sample() -> Snapshot {
        let case_id = CaseId::new("C-1").expect("case");
        let mut case = CaseState {
            version: 7,
            ..CaseState::default()
        };
        case.clocks.insert(
            "h1".into(),
            HandoffClocks {
                handoff_id: "h1".into(),
                kind: HandoffKind::SuspectedCrimeReferral,
                to_agency: Agency::PublicSecurity,
                started_at: at(1_780_000_000),
                requested_version: 2,
                receipt: Some(ClockAnswer {
                    by: ClockAnswerKind::Acknowledged,
                    version: 3,
                    at: at(1_780_000_060),
                }),
                decision: None,
                adjust: ClockAdjust {
                    extensions: vec![Extension {
                        version: 4,
                        new_due_at: Some(at(1_781_000_000)),
                        suspensions_before: 0,
                    }],
                    suspensions: vec![Suspension {
                        from: at(1_780_100_000),
                        to: at(1_780_200_000),
                    }],
                    suspended_since: Some(at(1_780_300_000)),
                },
                recorded: RecordedDues {
                    receipt: Some(RecordedDueTime {
                        due_at: Some(at(1_780_088_400)),
                        rules_digest: RulesDigest::parse(&format!("sha256:{}", "ab".repeat(32))),
                    }),
                    decision: Some(RecordedDueTime {
                        due_at: None,
                        rules_digest: RulesDigest::parse("sha256:ab"),
                    }),
                },
            },
        );
        let other = CaseId::new("C-2").expect("case");
        let mut decided = CaseState {
            version: 3,
            ..CaseState::default()
        };
        decided.prosecution_decision = Some(ProsecutionDecision {
            handoff_id: "t1".into(),
            by: ClockAnswerKind::ReturnedForSupplementaryInvestigation,
            version: 3,
        });
        Snapshot {
            office: office("public_security:ningbo"),
            stream: CASES_STREAM.into(),
            position: 42,
            anchor: anchor_of("case.C-1", b"payload"),
            entries: vec![Entry {
                case_id: case_id.clone(),
                handoff_id: "h1".into(),
                kind: HandoffKind::SuspectedCrimeReferral,
                from_office: office("customs:ningbo"),
                names_office: true,
                to_agency: Agency::PublicSecurity,
                to_office: Some(office("public_security:ningbo")),
                status: HandoffStatus::Acknowledged,
                reason: "suspected crime".into(),
                evidence_ids: vec!["ev-1".into()],
                visibility: Visibility {
                    kind: VisibilityKind::ListedAgencies as i32,
                    agencies: vec![Agency::PublicSecurity as i32],
                },
                clear: true,
                requested_at: at(1_780_000_000),
                due_at: Some(at(1_780_086_400)),
                event_id: EventId::new("0123456789abcdef0123456789abcdef").expect("event id"),
                version: 2,
                sequence: 17,
                acknowledged_by: Some(office("public_security:ningbo")),
                clock: None,
            }],
            cases: vec![(case_id, case), (other, decided)],
        }
    }

    fn police() -> OfficeId {
        office("public_security:ningbo")
    }

    /// The file of `snapshot` with its contents changed by `change` and the digest
    /// computed again over them.
    fn resealed(snapshot: &Snapshot, change: impl FnOnce(&mut InboxSnapshot)) -> Vec<u8> {
        let file =
            InboxSnapshotFile::decode(encode(snapshot).expect("encode").as_slice()).expect("file");
        let mut contents = InboxSnapshot::decode(file.contents.as_slice()).expect("contents");
        change(&mut contents);
        let contents = contents.encode_to_vec();
        let sha256 = Sha256::digest(&contents).to_vec();
        InboxSnapshotFile { contents, sha256 }.encode_to_vec()
    }

    #[test]
    fn a_snapshot_round_trips_with_every_field() {
        let snapshot = sample();
        let bytes = encode(&snapshot).expect("encode");
        let decoded = decode(&bytes, &police(), CASES_STREAM).expect("decode");
        assert_eq!(decoded, snapshot);
    }

    #[test]
    fn an_empty_snapshot_of_an_empty_stream_round_trips() {
        let snapshot = Snapshot {
            office: police(),
            stream: CASES_STREAM.into(),
            position: 0,
            anchor: Vec::new(),
            entries: Vec::new(),
            cases: Vec::new(),
        };
        let bytes = encode(&snapshot).expect("encode");
        assert_eq!(
            decode(&bytes, &police(), CASES_STREAM).expect("decode"),
            snapshot
        );
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let bytes = encode(&sample()).expect("encode");
        for i in 0..bytes.len() {
            let mut torn = bytes.clone();
            torn[i] ^= 0x01;
            let refused = decode(&torn, &police(), CASES_STREAM)
                .expect_err(&format!("a flipped byte at {i} is noticed"));
            assert!(
                matches!(refused, Refused::Digest | Refused::Malformed(_)),
                "byte {i}: {refused:?}"
            );
        }
        // A byte of the contents (past the field header) breaks the digest itself.
        let mut torn = bytes.clone();
        torn[10] ^= 0x01;
        let refused = decode(&torn, &police(), CASES_STREAM).expect_err("refused");
        assert_eq!(refused.reason(), "digest", "{refused}");
        assert!(refused.to_string().contains("SHA-256"), "{refused}");
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let bytes = encode(&sample()).expect("encode");
        let refused =
            decode(&bytes[..bytes.len() / 2], &police(), CASES_STREAM).expect_err("refused");
        assert!(
            matches!(refused, Refused::Digest | Refused::Malformed(_)),
            "{refused:?}"
        );
    }

    #[test]
    fn another_offices_snapshot_is_refused_naming_the_flag() {
        let bytes = encode(&sample()).expect("encode");
        let refused =
            decode(&bytes, &office("public_security:hangzhou"), CASES_STREAM).expect_err("refused");
        assert_eq!(refused.reason(), "office");
        let message = refused.to_string();
        assert!(message.contains("public_security:ningbo"), "{message}");
        assert!(message.contains("--inbox-snapshot"), "{message}");
    }

    #[test]
    fn another_format_version_is_refused() {
        let bytes = resealed(&sample(), |c| c.format_version = FORMAT_VERSION + 1);
        let refused = decode(&bytes, &police(), CASES_STREAM).expect_err("refused");
        assert_eq!(refused.reason(), "format_version");
        assert!(
            refused
                .to_string()
                .contains(&format!("format version {}", FORMAT_VERSION + 1)),
            "{refused}"
        );
    }

    /// Version 1 files have no recorded due times: resuming from one would show this
    /// service's own count where a rebuild shows the recorded due, so it is refused
    /// (and the inbox rebuilt from the stream).
    #[test]
    fn a_version_1_snapshot_without_recorded_dues_is_refused() {
        let bytes = resealed(&sample(), |c| {
            c.format_version = 1;
            for case in &mut c.cases {
                for clocks in &mut case.clocks {
                    clocks.recorded_receipt = None;
                    clocks.recorded_decision = None;
                }
            }
        });
        let refused = decode(&bytes, &police(), CASES_STREAM).expect_err("refused");
        assert_eq!(refused.reason(), "format_version");
        let message = refused.to_string();
        assert!(
            message.contains("format version 1") && message.contains("reads version 2"),
            "{message}"
        );
    }

    #[test]
    fn a_snapshot_of_another_stream_is_refused() {
        let bytes = resealed(&sample(), |c| c.stream = "CASES_OLD".into());
        let refused = decode(&bytes, &police(), CASES_STREAM).expect_err("refused");
        assert_eq!(refused.reason(), "stream");
        assert!(refused.to_string().contains("CASES_OLD"), "{refused}");
    }

    #[test]
    fn an_entry_without_its_case_clocks_or_a_bad_field_is_malformed() {
        let orphan = resealed(&sample(), |c| c.cases.retain(|case| case.case_id != "C-1"));
        let refused = decode(&orphan, &police(), CASES_STREAM).expect_err("refused");
        assert_eq!(refused.reason(), "malformed");
        assert!(refused.to_string().contains("has no clocks"), "{refused}");

        let unknown = resealed(&sample(), |c| {
            c.cases[0].clocks[0].receipt.as_mut().expect("receipt").by = "bribed".into();
        });
        let refused = decode(&unknown, &police(), CASES_STREAM).expect_err("refused");
        assert_eq!(refused.reason(), "malformed");
        assert!(refused.to_string().contains("bribed"), "{refused}");

        let no_anchor = resealed(&sample(), |c| c.anchor.clear());
        let refused = decode(&no_anchor, &police(), CASES_STREAM).expect_err("refused");
        assert_eq!(refused.reason(), "malformed");
    }

    #[test]
    fn every_clock_answer_kind_has_a_name_both_ways() {
        for (kind, name) in ANSWERS {
            assert_eq!(answer_name(kind).expect("named"), name);
            assert_eq!(answer_kind(name).expect("known"), kind);
        }
    }
}
