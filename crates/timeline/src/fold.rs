//! Folding for the projection: `Folded` (the domain's `CaseState` plus the version that
//! set each party and reference, which the state does not keep), the conversion of a
//! `VerifiedEvent` into the domain's `RecordedEvent`, the rebuild of a case from its
//! stored events, and `StateCache`, the bounded in-memory map of folded cases.
//!
//! The case rules themselves live in `casebus-domain`; this module only feeds them.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;
use rusqlite::Connection;

use casebus_domain::{CaseState, RecordedEvent, Reference};
use casebus_integrity::VerifiedEvent;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Event, SignedEvent};
use casebus_proto::{CaseId, EventId, OfficeId, PayloadKind, datetime_from};

use crate::codec::to_u64;

/// The domain's view of a verified event (the same conversion as the bus's `recorded`).
pub(crate) fn recorded(event: &VerifiedEvent) -> RecordedEvent<'_> {
    RecordedEvent {
        case_id: &event.case_id,
        version: event.version(),
        event_id: &event.event_id,
        office: &event.office,
        occurred_at: event.occurred_at,
        visibility: event.event.visibility.as_ref(),
        payload: match event.payload_kind() {
            PayloadKind::Known(kind) => Some(kind),
            _ => None,
        },
    }
}

/// A case folded for the projection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Folded {
    /// The state as the case rules fold it.
    pub state: CaseState,
    /// Party id to the version of the event that last set it (as the state does, the
    /// last CaseOpened or PartyAdded wins).
    pub party_versions: BTreeMap<String, u64>,
    /// Reference to the version of the event that first linked it.
    pub reference_versions: BTreeMap<Reference, u64>,
}

impl Folded {
    /// Folds one event; mirrors which payloads set parties and references in
    /// `CaseState::apply`, and ignores an event that is not the next version as it does.
    pub fn apply(&mut self, event: &RecordedEvent<'_>) {
        if event.version != self.state.version + 1 {
            return;
        }
        let version = event.version;
        let agency = event.office.agency();
        let mut link = |reference: Reference| {
            self.reference_versions.entry(reference).or_insert(version);
        };
        match event.payload {
            Some(Kind::CaseOpened(p)) => {
                for party in &p.parties {
                    self.party_versions.insert(party.party_id.clone(), version);
                }
                if !p.local_case_number.is_empty() {
                    link(Reference {
                        agency,
                        office: event.office.clone(),
                        number: p.local_case_number.clone(),
                    });
                }
            }
            Some(Kind::PartyAdded(p)) => {
                if let Some(party) = &p.party {
                    self.party_versions.insert(party.party_id.clone(), version);
                }
            }
            Some(Kind::ReferenceLinked(p)) => link(Reference {
                agency: p.agency(),
                office: event.office.clone(),
                number: p.local_case_number.clone(),
            }),
            Some(Kind::HandoffAccepted(p)) if !p.local_case_number.is_empty() => {
                link(Reference {
                    agency,
                    office: event.office.clone(),
                    number: p.local_case_number.clone(),
                });
            }
            _ => {}
        }
        self.state.apply(event);
    }
}

/// Why a case could not be rebuilt from its stored events.
#[derive(Debug)]
pub(crate) enum RebuildError {
    /// SQLite failed.
    Storage(rusqlite::Error),
    /// A stored event could not be decoded.
    Corrupt {
        /// Its version.
        version: u64,
        /// What is wrong.
        reason: String,
    },
}

impl From<rusqlite::Error> for RebuildError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Storage(error)
    }
}

/// Folds a case from its stored events. The events were verified before they were
/// stored, so only decoding is repeated here, not the signature checks.
#[tracing::instrument(level = "debug", skip_all, fields(case_id = %case_id))]
pub(crate) fn rebuild(conn: &Connection, case_id: &CaseId) -> Result<Folded, RebuildError> {
    fold_forward(conn, case_id, Folded::default())
}

/// Folds the stored events of a case after `folded`'s version into it: a cached state
/// one or two events behind is brought up to date by decoding only those events, not
/// the whole case again.
#[tracing::instrument(level = "debug", skip_all, fields(case_id = %case_id))]
pub(crate) fn fold_forward(
    conn: &Connection,
    case_id: &CaseId,
    mut folded: Folded,
) -> Result<Folded, RebuildError> {
    let mut stmt = conn.prepare_cached(
        "SELECT case_version, event_id, office_id, signed FROM events
         WHERE case_id = ?1 AND case_version > ?2 ORDER BY case_version",
    )?;
    let after = i64::try_from(folded.state.version).unwrap_or(i64::MAX);
    let mut rows = stmt.query(rusqlite::params![case_id.as_str(), after])?;
    while let Some(row) = rows.next()? {
        let raw_version: i64 = row.get(0)?;
        let event_id: String = row.get(1)?;
        let office: String = row.get(2)?;
        let signed: Vec<u8> = row.get(3)?;
        let version = to_u64(raw_version).unwrap_or(0);
        let corrupt = |reason: String| RebuildError::Corrupt { version, reason };
        let event_id = EventId::new(&event_id).map_err(|e| corrupt(e.to_string()))?;
        let office = OfficeId::new(&office).map_err(|e| corrupt(e.to_string()))?;
        let signed = SignedEvent::decode(signed.as_slice()).map_err(|e| corrupt(e.to_string()))?;
        let event = Event::decode(signed.event.as_slice()).map_err(|e| corrupt(e.to_string()))?;
        let occurred_at = event
            .occurred_at
            .as_ref()
            .and_then(datetime_from)
            .ok_or_else(|| corrupt("occurred_at is missing or out of range".into()))?;
        folded.apply(&RecordedEvent {
            case_id,
            version,
            event_id: &event_id,
            office: &office,
            occurred_at,
            visibility: event.visibility.as_ref(),
            payload: event.payload.as_ref().and_then(|p| p.kind.as_ref()),
        });
    }
    Ok(folded)
}

/// A bounded map of folded cases, evicting the least recently used quarter when full.
///
/// Entries are only a shortcut: every user checks an entry's version against the
/// `cases` table before trusting it. An entry behind it (another connection wrote the
/// file since) is folded forward over the newer events, since stored events never
/// change; an entry ahead of it (a transaction rolled back) is rebuilt.
#[derive(Debug)]
pub(crate) struct StateCache {
    entries: HashMap<CaseId, (Folded, u64)>,
    clock: u64,
    capacity: usize,
}

impl StateCache {
    /// An empty cache holding at most `capacity` cases (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            clock: 0,
            capacity: capacity.max(1),
        }
    }

    /// Changes the capacity, evicting if needed.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.evict();
    }

    /// Removes and returns the case's entry if it is at `version`; a stale entry is
    /// dropped.
    pub fn take(&mut self, case_id: &CaseId, version: u64) -> Option<Folded> {
        let (folded, _) = self.entries.remove(case_id)?;
        (folded.state.version == version).then_some(folded)
    }

    /// Removes and returns the case's entry if it is at `version` or behind it (to be
    /// folded forward); an entry ahead of `version` is dropped.
    pub fn take_behind(&mut self, case_id: &CaseId, version: u64) -> Option<Folded> {
        let (folded, _) = self.entries.remove(case_id)?;
        (folded.state.version <= version).then_some(folded)
    }

    /// A copy of the case's state if its entry is at `version`.
    pub fn state_at(&mut self, case_id: &CaseId, version: u64) -> Option<CaseState> {
        self.clock += 1;
        let clock = self.clock;
        let (folded, used) = self.entries.get_mut(case_id)?;
        if folded.state.version != version {
            return None;
        }
        *used = clock;
        Some(folded.state.clone())
    }

    /// Stores a folded case as most recently used.
    pub fn put(&mut self, case_id: CaseId, folded: Folded) {
        self.clock += 1;
        self.entries.insert(case_id, (folded, self.clock));
        if self.entries.len() > self.capacity {
            self.evict();
        }
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Number of cached cases.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Shrinks to three quarters of the capacity by dropping the least recently used
    /// entries, so eviction runs once per quarter-capacity insertions, not on each.
    fn evict(&mut self) {
        if self.entries.len() <= self.capacity {
            return;
        }
        let keep = self.capacity - self.capacity / 4;
        let mut ages: Vec<u64> = self.entries.values().map(|(_, used)| *used).collect();
        let drop = ages.len().saturating_sub(keep);
        if drop == 0 {
            return;
        }
        // The drop-th smallest use stamp: everything used before it goes.
        let (_, cutoff, _) = ages.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        self.entries.retain(|_, (_, used)| *used > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(n: usize) -> CaseId {
        CaseId::new(&format!("C{n}")).expect("valid case id")
    }

    #[test]
    fn the_cache_stays_within_capacity_and_keeps_recently_used_cases() {
        let mut cache = StateCache::new(8);
        for n in 0..8 {
            cache.put(case(n), Folded::default());
        }
        // Touch case 0 so it is the most recently used.
        assert!(cache.state_at(&case(0), 0).is_some());
        cache.put(case(8), Folded::default());
        assert!(cache.len() <= 8);
        assert!(cache.state_at(&case(0), 0).is_some());
        assert!(cache.state_at(&case(8), 0).is_some());
        assert!(cache.state_at(&case(1), 0).is_none(), "oldest is evicted");
    }

    #[test]
    fn a_cache_entry_at_another_version_is_not_used() {
        let mut cache = StateCache::new(4);
        cache.put(case(1), Folded::default());
        assert!(cache.state_at(&case(1), 3).is_none());
        assert!(cache.take(&case(1), 3).is_none());
        assert_eq!(cache.len(), 0, "a stale entry is dropped when taken");
    }

    #[test]
    fn an_entry_behind_is_taken_to_be_folded_forward_and_one_ahead_is_dropped() {
        let mut cache = StateCache::new(4);
        cache.put(case(1), Folded::default());
        let behind = cache.take_behind(&case(1), 3).expect("an entry behind");
        assert_eq!(behind.state.version, 0);
        let mut ahead = Folded::default();
        ahead.state.version = 5;
        cache.put(case(2), ahead);
        assert!(cache.take_behind(&case(2), 3).is_none());
        assert_eq!(cache.len(), 0, "taken or dropped");
    }
}
