//! `Projection::apply_batch`: writes a batch of verified events and everything derived
//! from them in one transaction, together with the new stream position.
//!
//! Per event: skip it if its sequence is at or below the position (redelivery), check
//! that it is the next version of its case, fold it, insert its row, and apply a
//! VisibilityChanged to its target row. Per case touched by the batch, once: rewrite the
//! `cases` row, and delete and reinsert from the folded state each of its tracks,
//! parties, hand-offs, case clocks, references and participants whose source in the state changed
//! during the batch. Deriving whole rows from the state, rather than updating them event
//! by event, keeps the tables equal to what the case rules fold.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use casebus_domain::{
    CaseClock, CaseState, ClockName, Handoff, HandoffClocks, Reference, Track, effective_visibility,
};
use casebus_integrity::VerifiedEvent;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, Party, Visibility, VisibilityKind};
use casebus_proto::{CaseId, PayloadKind};

use crate::codec::{
    agency_list_text, agency_text, case_type_text, handoff_kind_text, handoff_status_text, nanos,
    party_role_text, to_u64, track_status_text, visibility_kind_text,
};
use crate::error::{ProjectError, storage};
use crate::fold::{Folded, RebuildError, StateCache, rebuild, recorded};
use crate::model::{ApplyOutcome, ProjectedInput};
use crate::projection::{ClockSet, Projection, read_position};

/// The parts of a folded case that the derived tables are written from, as they were
/// before the batch; comparing them after the batch tells which tables need rewriting.
struct Derived {
    tracks: BTreeMap<Agency, Track>,
    parties: BTreeMap<String, Party>,
    party_versions: BTreeMap<String, u64>,
    handoffs: BTreeMap<String, Handoff>,
    clocks: BTreeMap<String, HandoffClocks>,
    case_clocks: BTreeMap<(ClockName, String), CaseClock>,
    references: BTreeSet<Reference>,
    reference_versions: BTreeMap<Reference, u64>,
    participants: BTreeSet<Agency>,
}

impl Derived {
    fn of(folded: &Folded) -> Self {
        let state = &folded.state;
        Self {
            tracks: state.tracks.clone(),
            parties: state.parties.clone(),
            party_versions: folded.party_versions.clone(),
            handoffs: state.handoffs.clone(),
            clocks: state.clocks.clone(),
            case_clocks: state.case_clocks.clone(),
            references: state.references.clone(),
            reference_versions: folded.reference_versions.clone(),
            participants: state.participants(),
        }
    }
}

/// A case being written by the current batch.
struct Touched {
    folded: Folded,
    /// The derived rows stored before the batch; `None` for a case new in this batch
    /// (it has no rows yet).
    before: Option<Derived>,
    /// Whether the batch applied an event of the case.
    dirty: bool,
    last_sequence: i64,
    updated_at: i64,
}

fn sequence_i64(sequence: u64) -> Result<i64, ProjectError> {
    i64::try_from(sequence).map_err(|_| ProjectError::OutOfRange {
        what: "stream sequence",
        value: sequence,
    })
}

fn version_i64(version: u64) -> Result<i64, ProjectError> {
    i64::try_from(version).map_err(|_| ProjectError::OutOfRange {
        what: "case version",
        value: version,
    })
}

impl Projection {
    /// Projects a batch of verified events, in stream order, in one transaction that
    /// also stores the new position (the highest sequence seen).
    ///
    /// Redelivery is expected and not an error: an event whose sequence is at or below
    /// the stored position is skipped (`already_applied`), and an event already stored
    /// under an earlier sequence (same case version, same bytes) is skipped
    /// (`duplicates`). Applying the same batch twice therefore changes nothing the
    /// second time.
    ///
    /// # Errors
    /// The whole batch is rolled back on any error; retry it, or apply its events one by
    /// one to find the one at fault.
    /// - [`ProjectError::OutOfOrder`] when an event is not the next version of its case
    ///   (an earlier event of the case is missing);
    /// - [`ProjectError::Conflict`] when an event claims a case version held by another
    ///   event;
    /// - [`ProjectError::CorruptEvent`] when a stored event cannot be decoded while its
    ///   case is rebuilt;
    /// - [`ProjectError::OutOfRange`] for a sequence or version above `i64::MAX`;
    /// - [`ProjectError::Storage`] when SQLite fails ([`ProjectError::is_transient`] tells
    ///   whether it was only busy).
    #[tracing::instrument(skip_all, fields(events = inputs.len()))]
    pub fn apply_batch(
        &mut self,
        inputs: &[ProjectedInput<'_>],
    ) -> Result<ApplyOutcome, ProjectError> {
        if inputs.is_empty() {
            return Ok(ApplyOutcome {
                position: self.position()?,
                ..ApplyOutcome::default()
            });
        }
        if !self.clocks_checked {
            self.recount_clocks()?;
        }
        let clocks = self.clocks.clone();
        let cache = self.cache.get_mut();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage("starting a batch"))?;
        let stored_position = read_position(&tx)?;
        let mut position = stored_position;
        let mut outcome = ApplyOutcome::default();
        let mut touched: HashMap<CaseId, Touched> = HashMap::new();
        // Cases in the order the batch first touched them, so the writes (and any error)
        // do not depend on hash order.
        let mut order: Vec<CaseId> = Vec::new();

        for input in inputs {
            if input.sequence <= position {
                outcome.already_applied += 1;
                continue;
            }
            let event = input.event;
            let case = match touched.entry(event.case_id.clone()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    order.push(event.case_id.clone());
                    entry.insert(load(&tx, cache, &event.case_id)?)
                }
            };
            if apply_event(&tx, case, input)? {
                outcome.applied += 1;
            } else {
                outcome.duplicates += 1;
            }
            position = input.sequence;
        }

        for case_id in &order {
            if let Some(case) = touched.get(case_id)
                && case.dirty
            {
                write_case(&tx, case_id, case, &clocks)?;
                outcome.cases_touched += 1;
            }
        }
        if position != stored_position {
            let value = sequence_i64(position)?;
            tx.prepare_cached("UPDATE position SET last_sequence = ?1 WHERE id = 1")
                .and_then(|mut stmt| stmt.execute([value]))
                .map_err(storage("storing the position"))?;
        }
        tx.commit().map_err(storage("committing a batch"))?;

        // Only after the commit may the folded states serve later batches; on any error
        // above they are dropped with `touched` and rebuilt from the table when needed.
        for case_id in order {
            if let Some(case) = touched.remove(&case_id) {
                cache.put(case_id, case.folded);
            }
        }
        outcome.position = position;
        tracing::debug!(
            applied = outcome.applied,
            already_applied = outcome.already_applied,
            duplicates = outcome.duplicates,
            position,
            "batch projected"
        );
        Ok(outcome)
    }
}

/// The folded state of a case as stored: from the cache when its entry is current,
/// else rebuilt from the case's events.
fn load(
    conn: &Connection,
    cache: &mut StateCache,
    case_id: &CaseId,
) -> Result<Touched, ProjectError> {
    let row: Option<(i64, i64, i64)> = conn
        .prepare_cached("SELECT version, last_sequence, updated_at FROM cases WHERE case_id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([case_id.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
        })
        .map_err(storage("reading a case"))?;
    let Some((version, last_sequence, updated_at)) = row else {
        return Ok(Touched {
            folded: Folded::default(),
            before: None,
            dirty: false,
            last_sequence: 0,
            updated_at: 0,
        });
    };
    let version = to_u64(version).unwrap_or(0);
    let folded = match cache.take(case_id, version) {
        Some(folded) => folded,
        None => rebuild(conn, case_id).map_err(|e| match e {
            RebuildError::Storage(source) => ProjectError::Storage {
                operation: "rebuilding a case from its events",
                source,
            },
            RebuildError::Corrupt { version, reason } => ProjectError::CorruptEvent {
                case_id: case_id.to_string(),
                version,
                reason,
            },
        })?,
    };
    Ok(Touched {
        before: Some(Derived::of(&folded)),
        folded,
        dirty: false,
        last_sequence,
        updated_at,
    })
}

/// Applies one event to its case; `Ok(false)` when it is a duplicate of a stored event.
#[tracing::instrument(level = "debug", skip_all, fields(case_id = %input.event.case_id, event_id = %input.event.event_id))]
fn apply_event(
    conn: &Connection,
    case: &mut Touched,
    input: &ProjectedInput<'_>,
) -> Result<bool, ProjectError> {
    let event = input.event;
    let version = event.version();
    let expected = case.folded.state.version + 1;
    if version != expected {
        return if version < expected {
            duplicate_or_conflict(conn, event, input.sequence)
        } else {
            Err(ProjectError::OutOfOrder {
                case_id: event.case_id.to_string(),
                event_id: event.event_id.to_string(),
                sequence: input.sequence,
                expected,
                found: version,
            })
        };
    }
    let sequence = sequence_i64(input.sequence)?;
    let version_value = version_i64(version)?;
    case.folded.apply(&recorded(event));

    // The event's own row carries the visibility in force, which the fold normalised.
    let visibility = effective_visibility(&case.folded.state, version)
        .cloned()
        .unwrap_or_else(participants_visibility);
    conn.prepare_cached(
        "INSERT INTO events (stream_sequence, case_id, case_version, event_id, office_id,
             agency, type_name, occurred_at, recorded_at, visibility, visible_to, hash,
             prev_hash, signed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            sequence,
            event.case_id.as_str(),
            version_value,
            event.event_id.as_str(),
            event.office.as_str(),
            agency_text(event.agency() as i32),
            event.type_name(),
            nanos(event.occurred_at),
            nanos(event.recorded_at),
            visibility_kind_text(visibility.kind),
            agency_list_text(&visibility.agencies),
            event.hash.as_bytes().as_slice(),
            event.prev_hash.as_ref().map(|h| h.as_bytes().to_vec()),
            event.encode_signed(),
        ])
    })
    .map_err(storage("inserting an event"))?;

    if let PayloadKind::Known(Kind::VisibilityChanged(p)) = event.payload_kind()
        && let Some(changed) = effective_visibility(&case.folded.state, p.target_version)
    {
        conn.prepare_cached(
            "UPDATE events SET visibility = ?1, visible_to = ?2
             WHERE case_id = ?3 AND case_version = ?4",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                visibility_kind_text(changed.kind),
                agency_list_text(&changed.agencies),
                event.case_id.as_str(),
                version_i64(p.target_version).unwrap_or(i64::MAX),
            ])
        })
        .map_err(storage("updating an event's visibility"))?;
    }

    case.dirty = true;
    case.last_sequence = sequence;
    case.updated_at = nanos(event.recorded_at);
    tracing::debug!(sequence = input.sequence, version, "event projected");
    Ok(true)
}

fn participants_visibility() -> Visibility {
    Visibility {
        kind: VisibilityKind::Participants as i32,
        agencies: Vec::new(),
    }
}

/// An event at a version the case already has: the same event again (same bytes, so
/// the same hash) is a duplicate, anything else is a conflict.
fn duplicate_or_conflict(
    conn: &Connection,
    event: &VerifiedEvent,
    sequence: u64,
) -> Result<bool, ProjectError> {
    let version = event.version();
    let stored: Option<(String, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT event_id, hash FROM events WHERE case_id = ?1 AND case_version = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![
                    event.case_id.as_str(),
                    version_i64(version).unwrap_or(i64::MAX)
                ],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
        })
        .map_err(storage("looking up a stored version"))?;
    match stored {
        Some((_, hash)) if hash.as_slice() == event.hash.as_bytes().as_slice() => {
            tracing::debug!(
                case_id = %event.case_id,
                event_id = %event.event_id,
                sequence,
                "duplicate event skipped"
            );
            Ok(false)
        }
        stored => Err(ProjectError::Conflict {
            case_id: event.case_id.to_string(),
            event_id: event.event_id.to_string(),
            sequence,
            version,
            stored_event_id: stored.map(|(id, _)| id).unwrap_or_default(),
        }),
    }
}

/// Rewrites the `cases` row of one case, and each derived table whose rows the batch
/// changed, from the case's folded state.
impl Projection {
    /// Makes the stored hand-offs' running clocks those of this projection's rules and
    /// calendar: when the stored digest differs (a file migrated from schema version 1,
    /// or rules or calendar changed since), every case with hand-offs is folded again
    /// from its stored events and its hand-offs' clock columns rewritten, in one
    /// transaction with the new digest. Returns the number of cases recounted (0 when
    /// the digest matched). [`Projection::apply_batch`] calls it before its first batch.
    ///
    /// # Errors
    /// [`ProjectError::CorruptEvent`] when a stored event cannot be decoded;
    /// [`ProjectError::Storage`] when SQLite fails.
    pub fn recount_clocks(&mut self) -> Result<u64, ProjectError> {
        let clocks = self.clocks.clone();
        let op = "recounting hand-off clocks";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage(op))?;
        let stored: Option<String> = tx
            .query_row("SELECT digest FROM clock_settings WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(storage(op))?;
        if stored.as_deref() == Some(clocks.digest.as_str()) {
            self.clocks_checked = true;
            return Ok(0);
        }
        let case_ids: Vec<String> = tx
            .prepare(
                "SELECT case_id FROM handoffs
                 UNION SELECT case_id FROM events
                     WHERE type_name IN ('GoodsDetained', 'SuspectDetained')
                 ORDER BY case_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(storage(op))?;
        let mut recounted = 0;
        for id in &case_ids {
            let case_id = CaseId::new(id).map_err(|e| ProjectError::CorruptEvent {
                case_id: id.clone(),
                version: 0,
                reason: e.to_string(),
            })?;
            let folded = rebuild(&tx, &case_id).map_err(|e| match e {
                RebuildError::Storage(source) => ProjectError::Storage {
                    operation: op,
                    source,
                },
                RebuildError::Corrupt { version, reason } => ProjectError::CorruptEvent {
                    case_id: id.clone(),
                    version,
                    reason,
                },
            })?;
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE handoffs SET clock = ?3, clock_started_at = ?4, clock_due_at = ?5,
                         clock_basis = ?6, clock_error = ?7, clock_extensions = ?8,
                         clock_extensions_allowed = ?9, clock_suspended_since = ?10
                     WHERE case_id = ?1 AND handoff_id = ?2",
                )
                .map_err(storage(op))?;
            for handoff_id in folded.state.handoffs.keys() {
                let c = clock_columns(&folded.state, handoff_id, &clocks);
                stmt.execute(params![
                    id, handoff_id, c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7
                ])
                .map_err(storage(op))?;
            }
            tx.prepare_cached("DELETE FROM case_clocks WHERE case_id = ?1")
                .and_then(|mut stmt| stmt.execute([id]))
                .map_err(storage(op))?;
            write_case_clocks(&tx, id, &folded.state, &clocks)?;
            recounted += 1;
        }
        tx.execute(
            "INSERT INTO clock_settings (id, digest) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET digest = excluded.digest",
            [&clocks.digest],
        )
        .map_err(storage(op))?;
        tx.commit().map_err(storage(op))?;
        self.clocks_checked = true;
        if recounted > 0 {
            tracing::info!(cases = recounted, digest = %clocks.digest, "hand-off clocks recounted");
        }
        Ok(recounted)
    }
}

/// The clock columns of one hand-off: name, start, due time, basis, calendar error,
/// extensions granted and allowed, suspended since.
type ClockColumns = (
    Option<&'static str>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

fn clock_columns(state: &CaseState, handoff_id: &str, clocks: &ClockSet) -> ClockColumns {
    match state.open_clock(handoff_id, &clocks.rules, &clocks.calendar) {
        None => (None, None, None, None, None, 0, 0, None),
        Some(open) => (
            Some(open.rule.key()),
            Some(nanos(open.started_at)),
            open.due_at.as_ref().ok().map(|due| nanos(*due)),
            Some(open.basis),
            open.due_at.err().map(|e| e.to_string()),
            i64::try_from(open.extensions).unwrap_or(i64::MAX),
            i64::try_from(open.extensions_allowed).unwrap_or(i64::MAX),
            open.suspended_since.map(nanos),
        ),
    }
}

/// Inserts a row for each running case clock of `state` (the caller deleted the old
/// ones).
fn write_case_clocks(
    conn: &Connection,
    id: &str,
    state: &CaseState,
    clocks: &ClockSet,
) -> Result<(), ProjectError> {
    let op = "writing case clocks";
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO case_clocks (case_id, clock, subject, agency, started_at, due_at,
                 basis, error, extensions, extensions_allowed, source_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(storage(op))?;
    for open in state.open_case_clocks(&clocks.rules, &clocks.calendar) {
        stmt.execute(params![
            id,
            open.rule.key(),
            open.subject,
            agency_text(open.agency as i32),
            nanos(open.started_at),
            open.due_at.as_ref().ok().map(|due| nanos(*due)),
            open.basis,
            open.due_at.as_ref().err().map(ToString::to_string),
            i64::try_from(open.extensions).unwrap_or(i64::MAX),
            i64::try_from(open.extensions_allowed).unwrap_or(i64::MAX),
            version_i64(open.started_version).unwrap_or(i64::MAX),
        ])
        .map_err(storage(op))?;
    }
    Ok(())
}

fn write_case(
    conn: &Connection,
    case_id: &CaseId,
    case: &Touched,
    clocks: &ClockSet,
) -> Result<(), ProjectError> {
    let state = &case.folded.state;
    let id = case_id.as_str();
    let opened = state.opened.as_ref();
    conn.prepare_cached(
        "INSERT INTO cases (case_id, case_type, title, opened_by_office, opened_at, version,
             last_sequence, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (case_id) DO UPDATE SET
             case_type = excluded.case_type, title = excluded.title,
             opened_by_office = excluded.opened_by_office, opened_at = excluded.opened_at,
             version = excluded.version, last_sequence = excluded.last_sequence,
             updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id,
            opened.map(|o| case_type_text(o.case_type as i32)),
            opened.map(|o| o.title.as_str()),
            opened.map(|o| o.office.as_str()),
            opened.map(|o| nanos(o.at)),
            version_i64(state.version).unwrap_or(i64::MAX),
            case.last_sequence,
            case.updated_at,
        ])
    })
    .map_err(storage("writing a case row"))?;

    // Most events (notes, evidence, agency actions) change none of the derived rows;
    // only the tables whose source changed are rewritten, each as a whole.
    let before = case.before.as_ref();
    let folded = &case.folded;
    if before.is_none_or(|b| b.tracks != state.tracks) {
        clear(conn, before, "DELETE FROM tracks WHERE case_id = ?1", id)?;
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO tracks (case_id, agency, office_id, status, opened_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(storage("writing tracks"))?;
        for track in state.tracks.values() {
            stmt.execute(params![
                id,
                agency_text(track.agency as i32),
                track.office.as_str(),
                track_status_text(track.status),
                nanos(track.opened_at),
            ])
            .map_err(storage("writing tracks"))?;
        }
    }

    if before
        .is_none_or(|b| b.parties != state.parties || b.party_versions != folded.party_versions)
    {
        clear(conn, before, "DELETE FROM parties WHERE case_id = ?1", id)?;
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO parties (case_id, party_id, role, name, organisation, source_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(storage("writing parties"))?;
        for (party_id, party) in &state.parties {
            let source = folded.party_versions.get(party_id).copied().unwrap_or(0);
            stmt.execute(params![
                id,
                party_id,
                party_role_text(party.role),
                party.name,
                party.organisation,
                version_i64(source).unwrap_or(i64::MAX),
            ])
            .map_err(storage("writing parties"))?;
        }
    }

    if before.is_none_or(|b| b.handoffs != state.handoffs || b.clocks != state.clocks) {
        clear(conn, before, "DELETE FROM handoffs WHERE case_id = ?1", id)?;
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO handoffs (case_id, handoff_id, kind, from_office, to_agency,
                     to_office, status, requested_at, due_at, requested_version,
                     requested_event_id, answered, clock, clock_started_at, clock_due_at,
                     clock_basis, clock_error, clock_extensions, clock_extensions_allowed,
                     clock_suspended_since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20)",
            )
            .map_err(storage("writing hand-offs"))?;
        for handoff in state.handoffs.values() {
            let c = clock_columns(state, &handoff.handoff_id, clocks);
            stmt.execute(params![
                id,
                handoff.handoff_id,
                handoff_kind_text(handoff.kind as i32),
                handoff.from_office.as_str(),
                agency_text(handoff.to_agency as i32),
                handoff.to_office.as_ref().map(|o| o.as_str()),
                handoff_status_text(handoff.status),
                nanos(handoff.requested_at),
                handoff.due_at.map(nanos),
                version_i64(handoff.requested_version).unwrap_or(i64::MAX),
                handoff.requested_event_id.as_str(),
                handoff.answered,
                c.0,
                c.1,
                c.2,
                c.3,
                c.4,
                c.5,
                c.6,
                c.7,
            ])
            .map_err(storage("writing hand-offs"))?;
        }
    }

    // Most cases never have a detention: no rows to clear or write.
    if before.is_none_or(|b| b.case_clocks != state.case_clocks) && !state.case_clocks.is_empty() {
        clear(
            conn,
            before,
            "DELETE FROM case_clocks WHERE case_id = ?1",
            id,
        )?;
        write_case_clocks(conn, id, state, clocks)?;
    }

    if before.is_none_or(|b| {
        b.references != state.references || b.reference_versions != folded.reference_versions
    }) {
        clear(
            conn,
            before,
            "DELETE FROM case_references WHERE case_id = ?1",
            id,
        )?;
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO case_references (agency, local_number, case_id, office_id,
                     source_version)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(storage("writing references"))?;
        for reference in &state.references {
            let source = folded
                .reference_versions
                .get(reference)
                .copied()
                .unwrap_or(0);
            stmt.execute(params![
                agency_text(reference.agency as i32),
                reference.number,
                id,
                reference.office.as_str(),
                version_i64(source).unwrap_or(i64::MAX),
            ])
            .map_err(storage("writing references"))?;
        }
    }

    let participants = state.participants();
    if before.is_none_or(|b| b.participants != participants) {
        clear(
            conn,
            before,
            "DELETE FROM participants WHERE case_id = ?1",
            id,
        )?;
        let mut stmt = conn
            .prepare_cached("INSERT INTO participants (case_id, agency) VALUES (?1, ?2)")
            .map_err(storage("writing participants"))?;
        for agency in participants {
            stmt.execute(params![id, agency_text(agency as i32)])
                .map_err(storage("writing participants"))?;
        }
    }
    Ok(())
}

/// Deletes a case's rows of one derived table, unless the case is new in this batch.
fn clear(
    conn: &Connection,
    before: Option<&Derived>,
    sql: &str,
    case_id: &str,
) -> Result<(), ProjectError> {
    if before.is_some() {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([case_id]))
            .map_err(storage("deleting derived rows of a case"))?;
    }
    Ok(())
}
