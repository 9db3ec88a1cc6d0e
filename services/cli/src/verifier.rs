//! Verifying a whole stream in one pass, case by case, keeping only each case's chain
//! tip in memory. Two rules for what a failure does to the chain, as in the rest of
//! casebus:
//!
//! - [`Rule::Audit`] is `casebus_integrity::verify_case`'s: every failure is reported,
//!   and after a gap the chain resynchronises on the event found, so one missing event
//!   is reported once. `verify --all` uses it, so it reports exactly what
//!   `verify --case` reports for each case.
//! - [`Rule::Consumer`] is the consumers' and loaders' (`ConsumerRunner`,
//!   `Bus::load_case`): a failing message is left out and the next valid event links to
//!   the last valid one. `rebuild` uses it, so it projects what the gateway projects.

use std::collections::HashMap;

use prost::Message as _;

use casebus_bus::ops::StoredMessage;
use casebus_integrity::{
    ChainTip, OfficeRegistry, VerifiedEvent, VerifyError, verify_signed, verify_signed_all,
};
use casebus_proto::CaseId;
use casebus_proto::event::v1::{Event, SignedEvent};

use crate::decode::Problem;

/// What a failure does to the chain that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Report everything; resynchronise after a gap (`verify_case`).
    Audit,
    /// Leave failing messages out of the chain (consumers).
    Consumer,
}

/// One message that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The case, from the subject (or the subject itself when it names no case).
    pub case_id: String,
    /// The stream sequence.
    pub sequence: u64,
    /// The version the message claims, when it decodes.
    pub version: Option<u64>,
    /// What failed.
    pub problem: Problem,
}

impl Failure {
    /// The failure as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "case": self.case_id,
            "sequence": self.sequence,
            "version": self.version,
            "code": self.problem.code,
            "reason": self.problem.reason,
        })
    }

    /// The failure as one line of text.
    pub fn to_line(&self) -> String {
        let version = self
            .version
            .map_or_else(|| "v?".to_owned(), |v| format!("v{v}"));
        format!(
            "FAIL case {} {version} seq {}: {} ({})",
            self.case_id, self.sequence, self.problem.reason, self.problem.code
        )
    }
}

/// The outcome of one message.
#[derive(Debug)]
pub enum Checked {
    /// It verified and continues its case's chain.
    Valid(Box<VerifiedEvent>),
    /// It failed.
    Failed(Failure),
}

fn claimed_version(raw: &[u8]) -> Option<u64> {
    SignedEvent::decode(raw)
        .ok()
        .and_then(|s| Event::decode(s.event.as_slice()).ok())
        .map(|e| e.case_version)
}

/// Verifies messages of many cases in stream order.
#[derive(Debug)]
pub struct StreamVerifier<'a> {
    registry: &'a OfficeRegistry,
    rule: Rule,
    tips: HashMap<CaseId, ChainTip>,
}

impl<'a> StreamVerifier<'a> {
    /// A verifier with no case seen yet.
    pub fn new(registry: &'a OfficeRegistry, rule: Rule) -> Self {
        Self {
            registry,
            rule,
            tips: HashMap::new(),
        }
    }

    /// Cases seen so far.
    pub fn cases(&self) -> usize {
        self.tips.len()
    }

    /// Checks the next message of the stream.
    pub fn check(&mut self, sequence: u64, subject: &str, raw: &[u8]) -> Checked {
        let signature = verify_signed(raw, self.registry);
        self.settle(sequence, subject, raw, signature)
    }

    /// Checks the next messages of the stream, in order: their signatures on up to
    /// `threads` threads (each with `verify_strict` on its own, as [`Self::check`] does),
    /// then their subjects and chains one after the other. The outcomes are exactly
    /// those of [`Self::check`] called on each message in turn.
    pub fn check_all(&mut self, messages: &[StoredMessage], threads: usize) -> Vec<Checked> {
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_ref()).collect();
        let signatures = verify_signed_all(&payloads, self.registry, threads);
        messages
            .iter()
            .zip(signatures)
            .map(|(m, signature)| self.settle(m.sequence, &m.subject, &m.payload, signature))
            .collect()
    }

    /// The subject and chain checks of one message whose signature check gave
    /// `signature`.
    fn settle(
        &mut self,
        sequence: u64,
        subject: &str,
        raw: &[u8],
        signature: Result<VerifiedEvent, VerifyError>,
    ) -> Checked {
        let Some(case_id) = subject
            .strip_prefix("case.")
            .and_then(|c| CaseId::new(c).ok())
        else {
            return Checked::Failed(Failure {
                case_id: subject.to_owned(),
                sequence,
                version: claimed_version(raw),
                problem: Problem {
                    code: "bad_subject".into(),
                    reason: format!("subject {subject} does not name a valid case"),
                },
            });
        };
        let fail = |version: Option<u64>, problem: Problem| {
            Checked::Failed(Failure {
                case_id: case_id.to_string(),
                sequence,
                version,
                problem,
            })
        };
        let tip = self
            .tips
            .entry(case_id.clone())
            .or_insert_with(|| ChainTip::empty(case_id.clone()));
        let event = match signature {
            Ok(event) => event,
            Err(error) => return fail(claimed_version(raw), Problem::from(&error)),
        };
        match tip.check(&event) {
            Ok(()) => {
                tip.advance(&event);
                Checked::Valid(Box::new(event))
            }
            Err(error) => {
                let resync = self.rule == Rule::Audit
                    && matches!(error, casebus_integrity::ChainError::Gap { .. })
                    && event.prev_hash.is_some();
                if resync {
                    tip.advance(&event);
                }
                fail(
                    Some(event.version()),
                    Problem::from(&casebus_integrity::VerifyError::from(error)),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use casebus_integrity::{OfficeEntry, OfficeSigner, verify_case};
    use casebus_proto::event::v1::payload::Kind;
    use casebus_proto::event::v1::{NoteAdded, Payload};
    use casebus_proto::{OfficeId, timestamp_from};

    use super::*;

    fn signer() -> OfficeSigner {
        OfficeSigner::from_seed(OfficeId::new("customs:ningbo").expect("id"), "k1", [3; 32])
            .expect("signer")
    }

    fn registry() -> OfficeRegistry {
        let mut registry = OfficeRegistry::default();
        registry
            .insert_office(OfficeEntry {
                id: OfficeId::new("customs:ningbo").expect("id"),
                name: String::new(),
                keys: vec![signer().key_entry(datetime!(2020-01-01 0:00 UTC))],
                encryption_keys: Vec::new(),
            })
            .expect("office");
        registry
    }

    /// Signed event `version` of `case` linking to `prev`.
    fn event(case: &str, version: u64, prev: Option<[u8; 32]>) -> (Vec<u8>, [u8; 32]) {
        let at = timestamp_from(datetime!(2026-01-01 0:00 UTC));
        let e = Event {
            event_id: format!("{version:032x}"),
            case_id: case.into(),
            case_version: version,
            office_id: "customs:ningbo".into(),
            agency: casebus_proto::event::v1::Agency::Customs as i32,
            actor: "a".into(),
            occurred_at: Some(at),
            recorded_at: Some(at),
            prev_event_hash: prev.map(|p| p.to_vec()).unwrap_or_default(),
            payload: Some(Payload {
                kind: Some(Kind::NoteAdded(NoteAdded {
                    text: format!("{version}"),
                })),
            }),
            ..Default::default()
        };
        let (signed, hash) = signer().sign(&e);
        (signed.encode_to_vec(), hash.0)
    }

    #[test]
    fn the_audit_rule_reports_what_verify_case_reports() {
        let (v1, h1) = event("A", 1, None);
        let (v2, h2) = event("A", 2, Some(h1));
        let (v3, h3) = event("A", 3, Some(h2));
        let (v4, _) = event("A", 4, Some(h3));
        let mut forged = v2.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        // v2 missing (gap at v3), a forged copy of v2, v4, then v2 late (a reorder).
        let messages: Vec<Vec<u8>> = vec![v1, v3, forged, v4, v2, b"junk".to_vec()];
        let registry = registry();
        let case = CaseId::new("A").expect("id");
        let report = verify_case(&case, messages.iter().map(Vec::as_slice), &registry);
        let mut verifier = StreamVerifier::new(&registry, Rule::Audit);
        let failures: Vec<Failure> = messages
            .iter()
            .enumerate()
            .filter_map(
                |(i, raw)| match verifier.check(i as u64 + 1, "case.A", raw) {
                    Checked::Failed(f) => Some(f),
                    Checked::Valid(_) => None,
                },
            )
            .collect();
        assert_eq!(failures.len(), report.failures.len());
        for (ours, theirs) in failures.iter().zip(&report.failures) {
            assert_eq!(ours.sequence, theirs.position as u64 + 1);
            assert_eq!(ours.version, theirs.version);
            assert_eq!(ours.problem.code, theirs.error.code());
        }
    }

    #[test]
    fn the_consumer_rule_leaves_failures_out_of_the_chain() {
        let (v1, h1) = event("A", 1, None);
        let (v2, h2) = event("A", 2, Some(h1));
        let (v3, _) = event("A", 3, Some(h2));
        let registry = registry();
        let mut verifier = StreamVerifier::new(&registry, Rule::Consumer);
        // v3 arrives before v2: dead-lettered; v2 is valid; a copy of v3 then is too.
        let outcomes: Vec<bool> = [v1, v3.clone(), v2, v3]
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                matches!(
                    verifier.check(i as u64 + 1, "case.A", raw),
                    Checked::Valid(_)
                )
            })
            .collect();
        assert_eq!(outcomes, [true, false, true, true]);
    }

    #[test]
    fn checking_a_batch_on_several_threads_equals_checking_one_by_one() {
        let registry = registry();
        let mut messages = Vec::new();
        let mut prev = None;
        for version in 1..=60 {
            let (raw, hash) = event("A", version, prev);
            prev = Some(hash);
            messages.push(("case.A", raw));
        }
        let (b1, _) = event("B", 1, None);
        // A forged copy, a gap (v40 of A missing, so v41 is out of order), junk, a
        // subject naming no case, and another case in between.
        let mut forged = messages[10].1.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        messages.insert(11, ("case.A", forged));
        messages.remove(40);
        messages.insert(20, ("case.B", b1.clone()));
        messages.insert(30, ("case.A", b"junk".to_vec()));
        messages.insert(50, ("case.a+b", b1));
        let stored: Vec<StoredMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, (subject, raw))| StoredMessage {
                sequence: i as u64 + 1,
                subject: (*subject).to_owned(),
                payload: raw.clone().into(),
                headers: Vec::new(),
                stored_at: time::OffsetDateTime::UNIX_EPOCH,
                pending: 0,
            })
            .collect();
        let summary = |c: &Checked| match c {
            Checked::Valid(e) => format!("ok {} v{}", e.case_id, e.version()),
            Checked::Failed(f) => format!("{} {} {:?}", f.problem.code, f.sequence, f.version),
        };
        let mut one = StreamVerifier::new(&registry, Rule::Consumer);
        let alone: Vec<String> = stored
            .iter()
            .map(|m| summary(&one.check(m.sequence, &m.subject, &m.payload)))
            .collect();
        assert_eq!(alone.iter().filter(|s| !s.starts_with("ok")).count(), 23);
        // Batches of 40 and of everything: enough messages for 2 and 4 threads (a
        // thread takes at least 16).
        for (threads, size) in [(1, 40), (2, 40), (4, 40), (4, stored.len())] {
            let mut all = StreamVerifier::new(&registry, Rule::Consumer);
            let together: Vec<String> = stored
                .chunks(size)
                .flat_map(|chunk| all.check_all(chunk, threads))
                .map(|c| summary(&c))
                .collect();
            assert_eq!(together, alone, "{threads} threads, batches of {size}");
        }
    }

    #[test]
    fn a_subject_naming_no_case_fails() {
        let registry = registry();
        let mut verifier = StreamVerifier::new(&registry, Rule::Audit);
        let Checked::Failed(f) = verifier.check(1, "case.a+b", b"x") else {
            panic!("must fail");
        };
        assert_eq!(f.problem.code, "bad_subject");
    }
}
