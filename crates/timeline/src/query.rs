//! The reads: timelines (paged either way), the agency feed (events after a stream
//! position), case summaries, folded case states for visibility decisions, case lists
//! with filters and cursor paging, lookup by agency case number, counts and overdue
//! hand-offs.
//!
//! Every read returns plain values, and all but one leave visibility to the gateway,
//! which applies `casebus_domain::sight` to what it gets here. The exception is a case
//! list with a `ListReader`: its page is filled inside the query from what that reader
//! may see (so a hidden row never shapes a page, a count or a cursor), by an SQL copy of
//! the rule that `a_readers_listing_holds_exactly_the_cases_and_matches_that_sight_allows`
//! keeps equal to `sight`. Every page takes an explicit limit of
//! 1 to [`MAX_LIMIT`]; anything else is refused with [`QueryError::InvalidLimit`].

use rusqlite::types::Value;
use rusqlite::{
    Connection, OptionalExtension as _, Row, StatementStatus, params, params_from_iter,
};
use time::OffsetDateTime;

use casebus_domain::{CaseState, Handoff, Opened, Reference, Track};
use casebus_integrity::EventHash;
use casebus_proto::event::v1::{Agency, CaseType, HandoffKind, PartyRole, Visibility};
use casebus_proto::{CaseId, EventId, OfficeId};

use crate::codec::{
    OPEN_STATUSES_SQL, agency, agency_list, agency_text, case_type_raw, case_type_text,
    handoff_kind_raw, handoff_status, instant, nanos, party_role_raw, saturating_i64, to_u64,
    track_status, track_status_text, visibility_kind_raw,
};
use crate::error::{QueryError, query};
use crate::fold::{RebuildError, fold_forward, rebuild};
use crate::model::{
    CaseClockSummary, CaseFilter, CaseListItem, CasePage, CaseSummary, Direction, HandoffSummary,
    OverdueHandoff, PartySummary, ProjectionCounts, ReferenceSummary, RunningClock, TimelineRow,
};
use crate::projection::Projection;

/// The largest page any query returns.
pub const MAX_LIMIT: usize = 1000;

/// The longest text filter accepted, in characters.
pub const MAX_TEXT_FILTER: usize = 200;

const EVENT_COLUMNS: &str = "stream_sequence, case_id, case_version, event_id, office_id, \
     agency, type_name, occurred_at, recorded_at, visibility, visible_to, hash, prev_hash, signed";

const HANDOFF_COLUMNS: &str = "case_id, handoff_id, kind, from_office, to_agency, to_office, \
     status, requested_at, due_at, requested_version, requested_event_id, answered, clock, \
     clock_started_at, clock_due_at, clock_basis, clock_error, clock_extensions, \
     clock_extensions_allowed, clock_suspended_since";

fn check_limit(limit: usize) -> Result<i64, QueryError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(QueryError::InvalidLimit {
            limit,
            max: MAX_LIMIT,
        });
    }
    Ok(saturating_i64(limit as u64))
}

fn corrupt(table: &'static str, column: &'static str, reason: impl ToString) -> QueryError {
    QueryError::Corrupt {
        table,
        column,
        reason: reason.to_string(),
    }
}

fn stored_u64(table: &'static str, column: &'static str, value: i64) -> Result<u64, QueryError> {
    to_u64(value).ok_or_else(|| corrupt(table, column, format!("negative value {value}")))
}

/// An `events` row as stored, before its values are checked.
struct RawEvent {
    sequence: i64,
    case_id: String,
    version: i64,
    event_id: String,
    office: String,
    agency: String,
    type_name: String,
    occurred_at: i64,
    recorded_at: i64,
    visibility: String,
    visible_to: String,
    hash: Vec<u8>,
    prev_hash: Option<Vec<u8>>,
    signed: Vec<u8>,
}

fn raw_event(row: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        sequence: row.get(0)?,
        case_id: row.get(1)?,
        version: row.get(2)?,
        event_id: row.get(3)?,
        office: row.get(4)?,
        agency: row.get(5)?,
        type_name: row.get(6)?,
        occurred_at: row.get(7)?,
        recorded_at: row.get(8)?,
        visibility: row.get(9)?,
        visible_to: row.get(10)?,
        hash: row.get(11)?,
        prev_hash: row.get(12)?,
        signed: row.get(13)?,
    })
}

impl RawEvent {
    fn check(self) -> Result<TimelineRow, QueryError> {
        const T: &str = "events";
        let prev_hash = match self.prev_hash {
            None => None,
            Some(bytes) => Some(
                EventHash::from_slice(&bytes)
                    .ok_or_else(|| corrupt(T, "prev_hash", "not 32 bytes"))?,
            ),
        };
        Ok(TimelineRow {
            sequence: stored_u64(T, "stream_sequence", self.sequence)?,
            case_id: CaseId::new(&self.case_id).map_err(|e| corrupt(T, "case_id", e))?,
            version: stored_u64(T, "case_version", self.version)?,
            event_id: EventId::new(&self.event_id).map_err(|e| corrupt(T, "event_id", e))?,
            office: OfficeId::new(&self.office).map_err(|e| corrupt(T, "office_id", e))?,
            agency: agency(&self.agency)
                .ok_or_else(|| corrupt(T, "agency", format!("unknown agency {:?}", self.agency)))?,
            type_name: self.type_name,
            occurred_at: instant(self.occurred_at),
            recorded_at: instant(self.recorded_at),
            hash: EventHash::from_slice(&self.hash)
                .ok_or_else(|| corrupt(T, "hash", "not 32 bytes"))?,
            prev_hash,
            signed: self.signed,
            visibility: Visibility {
                kind: visibility_kind_raw(&self.visibility).ok_or_else(|| {
                    corrupt(
                        T,
                        "visibility",
                        format!("unknown kind {:?}", self.visibility),
                    )
                })?,
                agencies: agency_list(&self.visible_to).ok_or_else(|| {
                    corrupt(
                        T,
                        "visible_to",
                        format!("unknown agency in {:?}", self.visible_to),
                    )
                })?,
            },
        })
    }
}

/// A `handoffs` row as stored, before its values are checked.
struct RawHandoff {
    case_id: String,
    handoff_id: String,
    kind: String,
    from_office: String,
    to_agency: String,
    to_office: Option<String>,
    status: String,
    requested_at: i64,
    due_at: Option<i64>,
    requested_version: i64,
    requested_event_id: String,
    answered: bool,
    clock: Option<String>,
    clock_started_at: Option<i64>,
    clock_due_at: Option<i64>,
    clock_basis: Option<String>,
    clock_error: Option<String>,
    clock_extensions: i64,
    clock_extensions_allowed: i64,
    clock_suspended_since: Option<i64>,
}

fn raw_handoff(row: &Row<'_>) -> rusqlite::Result<RawHandoff> {
    Ok(RawHandoff {
        case_id: row.get(0)?,
        handoff_id: row.get(1)?,
        kind: row.get(2)?,
        from_office: row.get(3)?,
        to_agency: row.get(4)?,
        to_office: row.get(5)?,
        status: row.get(6)?,
        requested_at: row.get(7)?,
        due_at: row.get(8)?,
        requested_version: row.get(9)?,
        requested_event_id: row.get(10)?,
        answered: row.get(11)?,
        clock: row.get(12)?,
        clock_started_at: row.get(13)?,
        clock_due_at: row.get(14)?,
        clock_basis: row.get(15)?,
        clock_error: row.get(16)?,
        clock_extensions: row.get(17)?,
        clock_extensions_allowed: row.get(18)?,
        clock_suspended_since: row.get(19)?,
    })
}

impl RawHandoff {
    fn check(self) -> Result<(CaseId, Handoff, Option<RunningClock>), QueryError> {
        const T: &str = "handoffs";
        let clock = match self.clock {
            None => None,
            Some(name) => Some(RunningClock {
                name,
                started_at: instant(
                    self.clock_started_at
                        .ok_or_else(|| corrupt(T, "clock_started_at", "missing"))?,
                ),
                due_at: self.clock_due_at.map(instant),
                basis: self.clock_basis.unwrap_or_default(),
                error: self.clock_error,
                extensions: u32::try_from(self.clock_extensions)
                    .map_err(|_| corrupt(T, "clock_extensions", "out of range"))?,
                extensions_allowed: u32::try_from(self.clock_extensions_allowed)
                    .map_err(|_| corrupt(T, "clock_extensions_allowed", "out of range"))?,
                suspended_since: self.clock_suspended_since.map(instant),
            }),
        };
        let kind = handoff_kind_raw(&self.kind)
            .ok_or_else(|| corrupt(T, "kind", format!("unknown kind {:?}", self.kind)))?;
        let to_office = match self.to_office {
            None => None,
            Some(office) => Some(OfficeId::new(&office).map_err(|e| corrupt(T, "to_office", e))?),
        };
        let handoff = Handoff {
            handoff_id: self.handoff_id,
            kind: HandoffKind::try_from(kind).unwrap_or(HandoffKind::Unspecified),
            from_office: OfficeId::new(&self.from_office)
                .map_err(|e| corrupt(T, "from_office", e))?,
            to_agency: agency(&self.to_agency).ok_or_else(|| {
                corrupt(
                    T,
                    "to_agency",
                    format!("unknown agency {:?}", self.to_agency),
                )
            })?,
            to_office,
            status: handoff_status(&self.status)
                .ok_or_else(|| corrupt(T, "status", format!("unknown status {:?}", self.status)))?,
            requested_at: instant(self.requested_at),
            due_at: self.due_at.map(instant),
            requested_version: stored_u64(T, "requested_version", self.requested_version)?,
            requested_event_id: EventId::new(&self.requested_event_id)
                .map_err(|e| corrupt(T, "requested_event_id", e))?,
            answered: self.answered,
        };
        let case_id = CaseId::new(&self.case_id).map_err(|e| corrupt(T, "case_id", e))?;
        Ok((case_id, handoff, clock))
    }
}

/// Runs an `events` query and checks every row.
fn event_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    operation: &'static str,
) -> Result<Vec<TimelineRow>, QueryError> {
    let mut stmt = conn.prepare_cached(sql).map_err(query(operation))?;
    let raws = stmt
        .query_map(params, raw_event)
        .map_err(query(operation))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(query(operation))?;
    raws.into_iter().map(RawEvent::check).collect()
}

/// Runs a `handoffs` query and checks every row.
fn handoff_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    operation: &'static str,
) -> Result<Vec<(CaseId, Handoff, Option<RunningClock>)>, QueryError> {
    let mut stmt = conn.prepare_cached(sql).map_err(query(operation))?;
    let raws = stmt
        .query_map(params, raw_handoff)
        .map_err(query(operation))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(query(operation))?;
    raws.into_iter().map(RawHandoff::check).collect()
}

fn count(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<u64, QueryError> {
    let value: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params, |row| row.get(0)))
        .map_err(query("counting rows"))?;
    Ok(to_u64(value).unwrap_or(0))
}

/// Encodes the list position after a case: a version tag, then hex of
/// `<opened_at nanos>|<case id>`. Opaque to callers; only this module reads it.
fn encode_cursor(opened_at: i64, case_id: &str) -> String {
    let plain = format!("{opened_at}|{case_id}");
    let mut out = String::with_capacity(2 + plain.len() * 2);
    out.push_str(CURSOR_TAG);
    for byte in plain.bytes() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

const CURSOR_TAG: &str = "c1";

fn decode_cursor(cursor: &str) -> Result<(i64, CaseId), QueryError> {
    let malformed = |reason| QueryError::MalformedCursor { reason };
    let hex = cursor
        .strip_prefix(CURSOR_TAG)
        .ok_or(malformed("unknown cursor version"))?;
    if hex.len() % 2 != 0 || hex.len() > 2 * 128 {
        return Err(malformed("wrong length"));
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(malformed("not hex"))?;
    let plain = String::from_utf8(bytes).map_err(|_| malformed("not text"))?;
    let (at, case_id) = plain.split_once('|').ok_or(malformed("no separator"))?;
    let at: i64 = at.parse().map_err(|_| malformed("bad instant"))?;
    let case_id = CaseId::new(case_id).map_err(|_| malformed("bad case id"))?;
    Ok((at, case_id))
}

/// Adds a parameter and returns its placeholder.
fn bind(args: &mut Vec<Value>, value: Value) -> String {
    args.push(value);
    format!("?{}", args.len())
}

/// Escapes `%`, `_` and the escape character itself for `LIKE ... ESCAPE '\'`.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Projection {
    /// One page of a case's timeline, starting at `from_version` (inclusive): ascending
    /// from it for [`Direction::Forward`], descending from it for
    /// [`Direction::Backward`] (pass `u64::MAX` to start from the latest event). An
    /// unknown case yields an empty page.
    ///
    /// # Errors
    /// [`QueryError::InvalidLimit`] for a limit of 0 or above [`MAX_LIMIT`];
    /// [`QueryError::Corrupt`] or [`QueryError::Storage`] when the projection fails.
    #[tracing::instrument(level = "debug", skip_all, fields(case_id = %case_id))]
    pub fn timeline(
        &self,
        case_id: &CaseId,
        from_version: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<TimelineRow>, QueryError> {
        let limit = check_limit(limit)?;
        let sql = match direction {
            Direction::Forward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE case_id = ?1 AND case_version >= ?2
                 ORDER BY case_version ASC LIMIT ?3"
            ),
            Direction::Backward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE case_id = ?1 AND case_version <= ?2
                 ORDER BY case_version DESC LIMIT ?3"
            ),
        };
        event_rows(
            &self.conn,
            &sql,
            params![case_id.as_str(), saturating_i64(from_version), limit],
            "reading a timeline",
        )
    }

    /// Events of one case with a version above `version`, ascending: the catch-up part
    /// of watching a timeline.
    ///
    /// # Errors
    /// As [`Projection::timeline`].
    #[tracing::instrument(level = "debug", skip_all, fields(case_id = %case_id))]
    pub fn case_events_after_version(
        &self,
        case_id: &CaseId,
        version: u64,
        limit: usize,
    ) -> Result<Vec<TimelineRow>, QueryError> {
        let limit = check_limit(limit)?;
        event_rows(
            &self.conn,
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE case_id = ?1 AND case_version > ?2
                 ORDER BY case_version ASC LIMIT ?3"
            ),
            params![case_id.as_str(), saturating_i64(version), limit],
            "reading case events after a version",
        )
    }

    /// Events of every case with a stream sequence above `position`, in stream order:
    /// the agency feed. The caller filters by visibility.
    ///
    /// # Errors
    /// As [`Projection::timeline`].
    pub fn events_after(
        &self,
        position: u64,
        limit: usize,
    ) -> Result<Vec<TimelineRow>, QueryError> {
        let limit = check_limit(limit)?;
        event_rows(
            &self.conn,
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream_sequence > ?1
                 ORDER BY stream_sequence ASC LIMIT ?2"
            ),
            params![saturating_i64(position), limit],
            "reading events after a position",
        )
    }

    /// The summary of one case: how it was opened, tracks, parties, hand-offs with their
    /// overdue flags at `now`, linked references and participating agencies; `None` for
    /// a case with no events. All parts come from one consistent snapshot.
    ///
    /// # Errors
    /// [`QueryError::Corrupt`] or [`QueryError::Storage`] when the projection fails.
    #[tracing::instrument(level = "debug", skip_all, fields(case_id = %case_id))]
    pub fn case_summary(
        &self,
        case_id: &CaseId,
        now: OffsetDateTime,
    ) -> Result<Option<CaseSummary>, QueryError> {
        let op = "reading a case summary";
        // A read transaction, so a writer on another connection cannot commit between
        // the statements below.
        let tx = self.conn.unchecked_transaction().map_err(query(op))?;
        let id = case_id.as_str();
        type CaseRow = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            i64,
            i64,
            i64,
        );
        let row: Option<CaseRow> = tx
            .prepare_cached(
                "SELECT case_type, title, opened_by_office, opened_at, version, last_sequence,
                     updated_at
                 FROM cases WHERE case_id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([id], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .optional()
            })
            .map_err(query(op))?;
        let Some((case_type, title, opened_by, opened_at, version, last_sequence, updated_at)) =
            row
        else {
            return Ok(None);
        };
        let opened = match (case_type, title, opened_by, opened_at) {
            (Some(case_type), Some(title), Some(office), Some(at)) => Some(Opened {
                case_type: case_type_raw(&case_type)
                    .and_then(|raw| CaseType::try_from(raw).ok())
                    .unwrap_or(CaseType::Unspecified),
                title,
                office: OfficeId::new(&office)
                    .map_err(|e| corrupt("cases", "opened_by_office", e))?,
                at: instant(at),
            }),
            _ => None,
        };

        let mut tracks = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT agency, office_id, status, opened_at FROM tracks WHERE case_id = ?1",
                )
                .map_err(query(op))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(query(op))?;
            for row in rows {
                let (agency_name, office, status, at) = row.map_err(query(op))?;
                tracks.push(Track {
                    agency: agency(&agency_name).ok_or_else(|| {
                        corrupt(
                            "tracks",
                            "agency",
                            format!("unknown agency {agency_name:?}"),
                        )
                    })?,
                    office: OfficeId::new(&office)
                        .map_err(|e| corrupt("tracks", "office_id", e))?,
                    status: track_status(&status).ok_or_else(|| {
                        corrupt("tracks", "status", format!("unknown status {status:?}"))
                    })?,
                    opened_at: instant(at),
                });
            }
        }
        tracks.sort_by_key(|t| t.agency);

        let mut parties = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT party_id, role, name, organisation, source_version FROM parties
                     WHERE case_id = ?1 ORDER BY party_id",
                )
                .map_err(query(op))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .map_err(query(op))?;
            for row in rows {
                let (party_id, role, name, organisation, source) = row.map_err(query(op))?;
                parties.push(PartySummary {
                    party_id,
                    role: party_role_raw(&role)
                        .and_then(|raw| PartyRole::try_from(raw).ok())
                        .unwrap_or(PartyRole::Unspecified),
                    name,
                    organisation,
                    source_version: stored_u64("parties", "source_version", source)?,
                });
            }
        }

        let handoffs = handoff_rows(
            &tx,
            &format!(
                "SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE case_id = ?1
                 ORDER BY requested_version, handoff_id"
            ),
            [id],
            op,
        )?
        .into_iter()
        .map(|(_, handoff, clock)| HandoffSummary {
            overdue: clock.as_ref().is_some_and(|c| c.is_overdue(now)),
            handoff,
            clock,
        })
        .collect();

        let mut clocks = Vec::new();
        {
            const T: &str = "case_clocks";
            let mut stmt = tx
                .prepare_cached(
                    "SELECT clock, subject, agency, started_at, due_at, basis, error,
                         extensions, extensions_allowed, source_version
                     FROM case_clocks WHERE case_id = ?1 ORDER BY clock, subject",
                )
                .map_err(query(op))?;
            type ClockRow = (
                String,
                String,
                String,
                i64,
                Option<i64>,
                String,
                Option<String>,
                (i64, i64),
                i64,
            );
            let rows = stmt
                .query_map([id], |r| -> rusqlite::Result<ClockRow> {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        (r.get(7)?, r.get(8)?),
                        r.get(9)?,
                    ))
                })
                .map_err(query(op))?;
            for row in rows {
                let (name, subject, agency_name, started, due, basis, error, ext, source) =
                    row.map_err(query(op))?;
                let clock = RunningClock {
                    name,
                    started_at: instant(started),
                    due_at: due.map(instant),
                    basis,
                    error,
                    extensions: u32::try_from(ext.0)
                        .map_err(|_| corrupt(T, "extensions", "out of range"))?,
                    extensions_allowed: u32::try_from(ext.1)
                        .map_err(|_| corrupt(T, "extensions_allowed", "out of range"))?,
                    suspended_since: None,
                };
                clocks.push(CaseClockSummary {
                    subject,
                    agency: agency(&agency_name).ok_or_else(|| {
                        corrupt(T, "agency", format!("unknown agency {agency_name:?}"))
                    })?,
                    overdue: clock.is_overdue(now),
                    clock,
                    source_version: stored_u64(T, "source_version", source)?,
                });
            }
        }

        let mut references = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT agency, local_number, office_id, source_version FROM case_references
                     WHERE case_id = ?1",
                )
                .map_err(query(op))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(query(op))?;
            for row in rows {
                let (agency_name, number, office, source) = row.map_err(query(op))?;
                references.push(ReferenceSummary {
                    reference: Reference {
                        agency: agency(&agency_name).ok_or_else(|| {
                            corrupt(
                                "case_references",
                                "agency",
                                format!("unknown agency {agency_name:?}"),
                            )
                        })?,
                        office: OfficeId::new(&office)
                            .map_err(|e| corrupt("case_references", "office_id", e))?,
                        number,
                    },
                    source_version: stored_u64("case_references", "source_version", source)?,
                });
            }
        }
        references.sort_by(|a, b| a.reference.cmp(&b.reference));

        let mut participants = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached("SELECT agency FROM participants WHERE case_id = ?1")
                .map_err(query(op))?;
            let rows = stmt
                .query_map([id], |r| r.get::<_, String>(0))
                .map_err(query(op))?;
            for row in rows {
                let name = row.map_err(query(op))?;
                participants.push(agency(&name).ok_or_else(|| {
                    corrupt("participants", "agency", format!("unknown agency {name:?}"))
                })?);
            }
        }
        participants.sort();
        tx.commit().map_err(query(op))?;

        Ok(Some(CaseSummary {
            case_id: case_id.clone(),
            version: stored_u64("cases", "version", version)?,
            last_sequence: stored_u64("cases", "last_sequence", last_sequence)?,
            updated_at: instant(updated_at),
            opened,
            tracks,
            parties,
            handoffs,
            clocks,
            references,
            participants,
        }))
    }

    /// The case's state folded by the case rules, for visibility decisions
    /// (`casebus_domain::sight`); `None` for a case with no events. Served from the
    /// cache when its entry is current, folded forward over the newer events when the
    /// entry is behind, else folded from all the stored events.
    ///
    /// # Errors
    /// [`QueryError::Corrupt`] when a stored event cannot be decoded;
    /// [`QueryError::Storage`] when SQLite fails.
    #[tracing::instrument(level = "debug", skip_all, fields(case_id = %case_id))]
    pub fn case_state(&self, case_id: &CaseId) -> Result<Option<CaseState>, QueryError> {
        let op = "reading a case state";
        // The version check and the fold read one snapshot.
        let tx = self.conn.unchecked_transaction().map_err(query(op))?;
        let version: Option<i64> = tx
            .prepare_cached("SELECT version FROM cases WHERE case_id = ?1")
            .and_then(|mut stmt| stmt.query_row([case_id.as_str()], |r| r.get(0)).optional())
            .map_err(query(op))?;
        let Some(version) = version else {
            return Ok(None);
        };
        let version = stored_u64("cases", "version", version)?;
        let mut cache = self.cache.borrow_mut();
        if let Some(state) = cache.state_at(case_id, version) {
            return Ok(Some(state));
        }
        // An entry behind the stored version (the case moved on since it was folded) is
        // folded forward from where it is; only a missing entry is folded from scratch.
        let folded = match cache.take_behind(case_id, version) {
            Some(behind) => fold_forward(&tx, case_id, behind),
            None => rebuild(&tx, case_id),
        }
        .map_err(|e| match e {
            RebuildError::Storage(source) => QueryError::Storage {
                operation: op,
                source,
            },
            RebuildError::Corrupt { version, reason } => corrupt(
                "events",
                "signed",
                format!("case {case_id} version {version}: {reason}"),
            ),
        })?;
        tx.commit().map_err(query(op))?;
        let state = folded.state.clone();
        cache.put(case_id.clone(), folded);
        Ok(Some(state))
    }

    /// One page of cases matching `filter`, ordered by (opened_at, case_id), starting
    /// after `cursor` (the `next_cursor` of the previous page; `None` for the first).
    /// Only opened cases are listed. Paging is stable: a case appears on exactly one
    /// page however the pages are cut.
    ///
    /// # Errors
    /// - [`QueryError::InvalidLimit`] for a limit of 0 or above [`MAX_LIMIT`];
    /// - [`QueryError::MalformedCursor`] for a cursor this projection did not make;
    /// - [`QueryError::InvalidFilter`] for an empty or overlong text filter, or
    ///   `opened_from` after `opened_to`;
    /// - [`QueryError::Corrupt`] or [`QueryError::Storage`] when the projection fails.
    pub fn list_cases(
        &self,
        filter: &CaseFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<CasePage, QueryError> {
        let limit = check_limit(limit)?;
        let after = cursor.map(decode_cursor).transpose()?;
        if let (Some(from), Some(to)) = (filter.opened_from, filter.opened_to)
            && from > to
        {
            return Err(QueryError::InvalidFilter {
                field: "opened_from",
                reason: "lies after opened_to".into(),
            });
        }
        let mut args: Vec<Value> = Vec::new();
        let columns = "c.case_id, c.case_type, c.title, c.opened_by_office, c.opened_at, \
             c.version, c.updated_at";
        // `readable(v)` is the domain's `sight` for the event at version `v` of the row's
        // case, as SQL: the reader's agency takes part in the case, and the event is its
        // own office's, or open to participants, or listed for its agency (or recorded
        // by its agency). Unknown visibility kinds count as participants, as in `sight`.
        let readable: Box<dyn Fn(&str) -> String> = match &filter.reader {
            None => Box::new(|_| "1".to_owned()),
            Some(reader) => {
                let ra = bind(
                    &mut args,
                    Value::Text(agency_text(reader.office.agency() as i32)),
                );
                let ro = bind(&mut args, Value::Text(reader.office.to_string()));
                Box::new(move |version: &str| {
                    format!(
                        "(EXISTS (SELECT 1 FROM participants rp WHERE rp.case_id = c.case_id AND rp.agency = {ra}) \
                         AND EXISTS (SELECT 1 FROM events re WHERE re.case_id = c.case_id AND re.case_version = {version} \
                         AND (re.office_id = {ro} OR re.visibility NOT IN ('listed_agencies', 'origin_only') \
                         OR (re.visibility = 'listed_agencies' AND (re.agency = {ra} \
                         OR instr(',' || re.visible_to || ',', ',' || {ra} || ',') > 0)))))"
                    )
                })
            }
        };
        let mut sql = match &filter.reader {
            // A reader who is not an administrator walks its own agency's participations
            // (index `participants_by_agency`), so no row of a case it takes no part in is
            // read at all: neither the answer nor the work depends on hidden cases.
            // CROSS JOIN keeps that loop order whatever the planner would prefer.
            Some(reader) if !reader.all_cases => {
                let ra = bind(
                    &mut args,
                    Value::Text(agency_text(reader.office.agency() as i32)),
                );
                format!(
                    "SELECT {columns} FROM participants sp CROSS JOIN cases c ON c.case_id = sp.case_id
                     WHERE sp.agency = {ra} AND c.opened_at IS NOT NULL"
                )
            }
            _ => format!("SELECT {columns} FROM cases c WHERE c.opened_at IS NOT NULL"),
        };
        if let Some(a) = filter.agency {
            let p = bind(&mut args, Value::Text(agency_text(a as i32)));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM participants p WHERE p.case_id = c.case_id AND p.agency = {p})"
            ));
        }
        if let Some(status) = filter.track_status {
            let s = bind(&mut args, Value::Text(track_status_text(status).into()));
            let mut clause = format!(
                " AND EXISTS (SELECT 1 FROM tracks t WHERE t.case_id = c.case_id AND t.status = {s}"
            );
            if let Some(a) = filter.agency {
                let p = bind(&mut args, Value::Text(agency_text(a as i32)));
                clause.push_str(&format!(" AND t.agency = {p}"));
            }
            clause.push(')');
            sql.push_str(&clause);
        }
        if let Some(case_type) = filter.case_type {
            let p = bind(&mut args, Value::Text(case_type_text(case_type as i32)));
            // CASE fixes the order: a type the reader may not read is never compared.
            sql.push_str(&format!(
                " AND CASE WHEN {} THEN c.case_type = {p} ELSE 0 END",
                readable("1")
            ));
        }
        if let Some(from) = filter.opened_from {
            let p = bind(&mut args, Value::Integer(nanos(from)));
            sql.push_str(&format!(" AND c.opened_at >= {p}"));
        }
        if let Some(to) = filter.opened_to {
            let p = bind(&mut args, Value::Integer(nanos(to)));
            sql.push_str(&format!(" AND c.opened_at < {p}"));
        }
        if let Some(at) = filter.overdue_at {
            let p = bind(&mut args, Value::Integer(nanos(at)));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM handoffs h WHERE h.case_id = c.case_id AND h.clock_due_at < {p} AND h.clock_suspended_since IS NULL)"
            ));
        }
        if let Some(at) = filter.any_clock_overdue_at {
            let p = bind(&mut args, Value::Integer(nanos(at)));
            // A case clock counts only when the reader may read the event that started
            // it, as GetCase shows it.
            sql.push_str(&format!(
                " AND (EXISTS (SELECT 1 FROM handoffs h WHERE h.case_id = c.case_id AND h.clock_due_at < {p} AND h.clock_suspended_since IS NULL) \
                 OR EXISTS (SELECT 1 FROM case_clocks cc WHERE cc.case_id = c.case_id AND cc.due_at < {p} AND {}))",
                readable("cc.source_version"),
            ));
        }
        if let Some(text) = &filter.text {
            let chars = text.chars().count();
            if chars == 0 || chars > MAX_TEXT_FILTER {
                return Err(QueryError::InvalidFilter {
                    field: "text",
                    reason: format!(
                        "is {chars} characters long; use 1 to {MAX_TEXT_FILTER}, or no text filter"
                    ),
                });
            }
            let p = bind(&mut args, Value::Text(like_pattern(text)));
            // As for the type: hidden titles and names are never compared with the text.
            sql.push_str(&format!(
                " AND (CASE WHEN {} THEN c.title LIKE {p} ESCAPE '\\' ELSE 0 END \
                 OR EXISTS (SELECT 1 FROM parties pa WHERE pa.case_id = c.case_id \
                 AND CASE WHEN {} THEN pa.name LIKE {p} ESCAPE '\\' ELSE 0 END))",
                readable("1"),
                readable("pa.source_version"),
            ));
        }
        if let Some((at, case_id)) = &after {
            let a = bind(&mut args, Value::Integer(*at));
            let c = bind(&mut args, Value::Text(case_id.to_string()));
            sql.push_str(&format!(" AND (c.opened_at, c.case_id) > ({a}, {c})"));
        }
        // One row more than asked tells whether another page follows.
        let l = bind(&mut args, Value::Integer(limit + 1));
        sql.push_str(&format!(" ORDER BY c.opened_at, c.case_id LIMIT {l}"));

        let op = "listing cases";
        type ListRow = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            i64,
            i64,
        );
        let budget = self.list_work_budget;
        let interrupted = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::OperationInterrupted) => QueryError::TooMuchWork { budget },
            _ => query(op)(e),
        };
        let (rows, work): (Vec<ListRow>, u64) = {
            let mut stmt = self.conn.prepare_cached(&sql).map_err(query(op))?;
            stmt.reset_status(StatementStatus::VmStep);
            let rows = self.with_work_budget(budget, || {
                stmt.query_map(params_from_iter(args), |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(interrupted)?
                .collect::<Result<Vec<ListRow>, _>>()
                .map_err(interrupted)
            })?;
            let work = u64::try_from(stmt.get_status(StatementStatus::VmStep)).unwrap_or(0);
            (rows, work)
        };
        let more = rows.len() as i64 > limit;
        let mut cases = Vec::with_capacity(rows.len());
        let mut last = None;
        for (case_id, case_type, title, opened_by, opened_at, version, updated_at) in rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(MAX_LIMIT))
        {
            const T: &str = "cases";
            last = Some((opened_at, case_id.clone()));
            cases.push(CaseListItem {
                case_id: CaseId::new(&case_id).map_err(|e| corrupt(T, "case_id", e))?,
                case_type: case_type
                    .as_deref()
                    .and_then(case_type_raw)
                    .and_then(|raw| CaseType::try_from(raw).ok())
                    .unwrap_or(CaseType::Unspecified),
                title: title.unwrap_or_default(),
                opened_by: OfficeId::new(opened_by.as_deref().unwrap_or_default())
                    .map_err(|e| corrupt(T, "opened_by_office", e))?,
                opened_at: instant(opened_at),
                version: stored_u64(T, "version", version)?,
                updated_at: instant(updated_at),
            });
        }
        let next_cursor = match last {
            Some((at, case_id)) if more => Some(encode_cursor(at, &case_id)),
            _ => None,
        };
        Ok(CasePage {
            cases,
            next_cursor,
            work,
        })
    }

    /// The cases to which `agency` linked the local case number `local_number`, by
    /// case id. Usually one; several when an agency reused a number.
    ///
    /// # Errors
    /// [`QueryError::Corrupt`] or [`QueryError::Storage`] when the projection fails.
    pub fn find_by_reference(
        &self,
        agency: Agency,
        local_number: &str,
    ) -> Result<Vec<CaseId>, QueryError> {
        let op = "finding a case by reference";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT case_id FROM case_references
                 WHERE agency = ?1 AND local_number = ?2 ORDER BY case_id",
            )
            .map_err(query(op))?;
        let ids = stmt
            .query_map(params![agency_text(agency as i32), local_number], |r| {
                r.get::<_, String>(0)
            })
            .map_err(query(op))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query(op))?;
        ids.iter()
            .map(|id| CaseId::new(id).map_err(|e| corrupt("case_references", "case_id", e)))
            .collect()
    }

    /// Hand-offs whose running clock's due time passed at `now`, most overdue first.
    ///
    /// # Errors
    /// As [`Projection::timeline`].
    pub fn overdue_handoffs(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<OverdueHandoff>, QueryError> {
        let limit = check_limit(limit)?;
        let rows = handoff_rows(
            &self.conn,
            &format!(
                "SELECT {HANDOFF_COLUMNS} FROM handoffs
                 WHERE clock_due_at < ?1 AND clock_suspended_since IS NULL
                 ORDER BY clock_due_at, case_id, handoff_id LIMIT ?2"
            ),
            params![nanos(now), limit],
            "reading overdue hand-offs",
        )?;
        Ok(rows
            .into_iter()
            .map(|(case_id, handoff, clock)| OverdueHandoff {
                case_id,
                handoff,
                clock,
            })
            .collect())
    }

    /// Row counts, with overdue hand-offs counted at `now`, from one snapshot.
    ///
    /// # Errors
    /// [`QueryError::Storage`] when SQLite fails.
    pub fn counts(&self, now: OffsetDateTime) -> Result<ProjectionCounts, QueryError> {
        let op = "counting rows";
        let tx = self.conn.unchecked_transaction().map_err(query(op))?;
        let counts = ProjectionCounts {
            position: count(&tx, "SELECT last_sequence FROM position WHERE id = 1", [])?,
            events: count(&tx, "SELECT count(*) FROM events", [])?,
            cases: count(&tx, "SELECT count(*) FROM cases", [])?,
            tracks: count(&tx, "SELECT count(*) FROM tracks", [])?,
            parties: count(&tx, "SELECT count(*) FROM parties", [])?,
            references: count(&tx, "SELECT count(*) FROM case_references", [])?,
            handoffs: count(&tx, "SELECT count(*) FROM handoffs", [])?,
            handoffs_open: count(
                &tx,
                &format!("SELECT count(*) FROM handoffs WHERE {OPEN_STATUSES_SQL}"),
                [],
            )?,
            handoffs_overdue: count(
                &tx,
                "SELECT count(*) FROM handoffs
                 WHERE clock_due_at < ?1 AND clock_suspended_since IS NULL",
                [nanos(now)],
            )?,
            case_clocks_overdue: count(
                &tx,
                "SELECT count(*) FROM case_clocks WHERE due_at < ?1",
                [nanos(now)],
            )?,
        };
        tx.commit().map_err(query(op))?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_timeline_query_is_not_prepared_again_when_its_limit_changes() {
        let projection = Projection::open_in_memory().expect("open");
        let case = CaseId::new("CASE-1").expect("valid case id");
        for limit in [50, 1, 50, 7] {
            projection
                .timeline(&case, 1, Direction::Forward, limit)
                .expect("query");
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE case_id = ?1 AND case_version >= ?2
                 ORDER BY case_version ASC LIMIT ?3"
        );
        let stmt = projection.conn.prepare_cached(&sql).expect("cached");
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::Run),
            4,
            "the very statement the queries ran"
        );
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "prepared once, reused as is"
        );
    }

    #[test]
    fn cursors_round_trip() {
        let case = CaseId::new("CASE-7_x").expect("valid case id");
        let cursor = encode_cursor(-42, case.as_str());
        assert_eq!(decode_cursor(&cursor).ok(), Some((-42, case)));
    }

    #[test]
    fn malformed_cursors_are_refused_with_a_reason() {
        for bad in [
            "",
            "zz",
            "c1zz",
            "c1abc",
            "c1",
            "c17c",
            &format!("c1{}", "41".repeat(10)),
        ] {
            assert!(
                matches!(decode_cursor(bad), Err(QueryError::MalformedCursor { .. })),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
