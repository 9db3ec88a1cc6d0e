//! What a consumer remembers of each case it follows: the chain tip, the last stream
//! sequence of the case it examined, and a replay index, the hash prefix and stream
//! sequence of every event at or below the tip, by version.
//!
//! The index answers in constant time, without reading the stream, whether a message
//! is a copy of an event handled already (any agency user may publish on `case.*`, so a
//! stored, validly signed message can be published again): its version is at or below
//! the tip, the event remembered at that version has the same hash, and a different
//! stream sequence (the same sequence is a redelivery, which is handed over again).
//! Eight bytes of the hash are enough: a message at or below the tip is never the next
//! event of the case, so the index only decides how it is reported (`replay` rather
//! than `reorder`), never whether a valid event is accepted.
//!
//! Memory: 16 bytes per remembered event plus one entry per case, bounded by the number
//! of cases and the number of events remembered over all cases ([`Memories::new`]);
//! beyond either bound arbitrary cases are forgotten and read from the stream again
//! when their next message comes.

use std::collections::HashMap;

use casebus_integrity::{ChainTip, EventHash, VerifiedEvent};
use casebus_proto::CaseId;

use crate::store::LoadedCase;

/// One remembered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    hash: u64,
    sequence: u64,
}

fn prefix(hash: &EventHash) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&hash.0[..8]);
    u64::from_le_bytes(first)
}

/// What the index knows of a message at or below the tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// The very message that was handled at this version (same stream sequence).
    Redelivery,
    /// A copy of the event handled at this version, stored again at another sequence.
    Replay {
        /// Where the original is.
        original_sequence: u64,
    },
}

/// A consumer's memory of one case.
#[derive(Debug, Clone)]
pub(crate) struct CaseMemory {
    /// The last event that continued the chain.
    pub tip: ChainTip,
    /// Stream sequence of the last message of the case examined, valid or not.
    pub examined: u64,
    /// Version of `versions[0]`.
    first: u64,
    /// The events of versions `first..=tip.version`, in order.
    versions: Vec<Seen>,
}

impl CaseMemory {
    /// The memory of a case with nothing examined yet.
    pub fn empty(case_id: CaseId) -> Self {
        Self {
            tip: ChainTip::empty(case_id),
            examined: 0,
            first: 1,
            versions: Vec::new(),
        }
    }

    /// The memory of a case as loaded from the stream.
    pub fn loaded(case: &LoadedCase) -> Self {
        let mut memory = Self::empty(case.case_id().clone());
        for stored in &case.events {
            memory.advance(stored.sequence, &stored.event);
        }
        memory.tip = case.tip.clone();
        memory.examined = case.last_sequence;
        memory
    }

    /// Events remembered.
    pub fn weight(&self) -> usize {
        self.versions.len()
    }

    /// Moves the tip to `event` (which passed the chain check), stored at `sequence`.
    pub fn advance(&mut self, sequence: u64, event: &VerifiedEvent) {
        let version = event.version();
        if version != self.first + self.versions.len() as u64 {
            // Only a caller that skipped the chain check gets here; an index with a hole
            // would misreport, so start it again at this event.
            self.versions.clear();
            self.first = version;
        }
        self.versions.push(Seen {
            hash: prefix(&event.hash),
            sequence,
        });
        self.tip.advance(event);
        self.examined(sequence);
    }

    /// Notes that the message at `sequence` was examined.
    pub fn examined(&mut self, sequence: u64) {
        self.examined = self.examined.max(sequence);
    }

    /// Whether the message at `sequence` is the event remembered at its version, or a
    /// copy of it; `None` for anything else (above the tip, or a different event).
    pub fn known(&self, sequence: u64, event: &VerifiedEvent) -> Option<Known> {
        self.known_hash(sequence, event.version(), &event.hash)
    }

    /// [`CaseMemory::known`] for a message not verified yet: its claimed `version` and
    /// the hash of its event bytes. A match is a byte-for-byte copy of an event that
    /// verified already (up to the eight bytes compared), so its signature need not be
    /// checked again to report it.
    pub fn known_hash(&self, sequence: u64, version: u64, hash: &EventHash) -> Option<Known> {
        let index = usize::try_from(version.checked_sub(self.first)?).ok()?;
        let seen = self.versions.get(index)?;
        if seen.sequence == sequence {
            Some(Known::Redelivery)
        } else if seen.hash == prefix(hash) {
            Some(Known::Replay {
                original_sequence: seen.sequence,
            })
        } else {
            None
        }
    }
}

/// The memories of every case a consumer follows, bounded by cases and by events.
#[derive(Debug)]
pub(crate) struct Memories {
    cases: HashMap<CaseId, CaseMemory>,
    max_cases: usize,
    max_events: usize,
    events: usize,
}

impl Memories {
    /// Remembers at most `max_cases` cases and `max_events` events over all of them.
    pub fn new(max_cases: usize, max_events: usize) -> Self {
        Self {
            cases: HashMap::new(),
            max_cases: max_cases.max(1),
            max_events,
            events: 0,
        }
    }

    /// The memory of a case, if it is remembered.
    pub fn get(&self, case_id: &CaseId) -> Option<&CaseMemory> {
        self.cases.get(case_id)
    }

    /// Remembers `memory` for its case, replacing what was there, and forgets arbitrary
    /// other cases while a bound is exceeded.
    pub fn insert(&mut self, memory: CaseMemory) {
        let case_id = memory.tip.case_id.clone();
        self.events += memory.weight();
        if let Some(old) = self.cases.insert(case_id.clone(), memory) {
            self.events -= old.weight();
        }
        self.bound(&case_id);
    }

    /// Moves the case's tip to `event`, stored at `sequence` (starting a memory when the
    /// case has none).
    pub fn advance(&mut self, sequence: u64, event: &VerifiedEvent) {
        let memory = self
            .cases
            .entry(event.case_id.clone())
            .or_insert_with(|| CaseMemory::empty(event.case_id.clone()));
        let before = memory.weight();
        memory.advance(sequence, event);
        self.events = self.events + memory.weight() - before;
        self.bound(&event.case_id);
    }

    /// Takes the case's memory out (to change it and [`Memories::insert`] it again).
    pub fn remove(&mut self, case_id: &CaseId) -> Option<CaseMemory> {
        let memory = self.cases.remove(case_id)?;
        self.events -= memory.weight();
        Some(memory)
    }

    /// Notes that the case's message at `sequence` was examined (it was dead-lettered).
    pub fn examined(&mut self, case_id: &CaseId, sequence: u64) {
        if let Some(memory) = self.cases.get_mut(case_id) {
            memory.examined(sequence);
        }
    }

    /// Forgets arbitrary cases other than `keep` (the map's hashing is seeded per
    /// process) until both bounds hold, or only `keep` is left.
    fn bound(&mut self, keep: &CaseId) {
        while (self.cases.len() > self.max_cases || self.events > self.max_events)
            && self.cases.len() > 1
        {
            let Some(victim) = self.cases.keys().find(|k| *k != keep).cloned() else {
                break;
            };
            if let Some(old) = self.cases.remove(&victim) {
                self.events -= old.weight();
            }
        }
    }
}
