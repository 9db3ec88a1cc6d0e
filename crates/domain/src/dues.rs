//! Recorded due times: one authority for when a clock falls due.
//!
//! The service that records a triggering event (`HandoffRequested`; the customs
//! events that start a detention's clocks: `GoodsDetained`, `RightsHolderNotified`,
//! `RightsHolderApplied`; and a suspect's `SuspectDetained` and `ArrestApproved`) counts the due time of every clock it starts from the
//! deadline rules and the holiday calendar it runs with, and records it in the event
//! (`recorded_dues`) with the clock's name and the digest of the rules and calendar
//! ([`DeadlineRules::digest`]). Readers then show the recorded due
//! time until an extension or suspension changes the clock ([`crate::CaseState`]), and
//! an auditor recomputes it from the event's `occurred_at` with the same inputs
//! ([`check_recorded_dues`], `casebus verify`).
//!
//! **Boundary:** pure; rules and calendar come in as arguments.

use time::OffsetDateTime;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{HandoffKind, RecordedDue};
use casebus_proto::{datetime_from, timestamp_from};

use crate::calendar::Calendar;
use crate::rules::{ClockName, DeadlineRules};
use crate::state::RecordedEvent;

/// The clocks a hand-off of `kind` starts, in the order they are recorded: its receipt
/// clock, then its decision clock; empty for the unspecified kind.
pub fn clocks_started_by(kind: HandoffKind) -> Vec<ClockName> {
    match ClockName::decision_of(kind) {
        Some(decision) => vec![ClockName::Receipt, decision],
        None => Vec::new(),
    }
}

/// The dues a hand-off of `kind` requested at `occurred_at` records, counted by `rules`
/// on `calendar`, each with `digest` (the caller passes `rules.digest(calendar)`, which
/// a service computes once at start). A clock the calendar cannot count (a year without
/// a known schedule) is recorded without a due time.
pub fn recorded_dues(
    kind: HandoffKind,
    occurred_at: OffsetDateTime,
    rules: &DeadlineRules,
    calendar: &Calendar,
    digest: &str,
) -> Vec<RecordedDue> {
    dues_of(
        &clocks_started_by(kind),
        occurred_at,
        rules,
        calendar,
        digest,
    )
}

/// The dues of the clocks `names` started at `occurred_at`, as [`recorded_dues`] counts
/// them.
pub fn dues_of(
    names: &[ClockName],
    occurred_at: OffsetDateTime,
    rules: &DeadlineRules,
    calendar: &Calendar,
    digest: &str,
) -> Vec<RecordedDue> {
    names
        .iter()
        .map(|&name| RecordedDue {
            clock: name.key().to_owned(),
            due_at: rules
                .clock(name)
                .due(occurred_at, calendar)
                .ok()
                .map(timestamp_from),
            rules_digest: digest.to_owned(),
        })
        .collect()
}

/// The digest a due was counted with, as the fold keeps it: the 32 bytes of a
/// `sha256:` digest in place (no allocation for each of the two dues every hand-off
/// records), or the recorded text as it is when it has another form, so that a reader
/// and `casebus verify` still see exactly what was recorded. Shown (`Display`) as it
/// was recorded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RulesDigest {
    /// `sha256:` and 64 lower-case hex digits, as [`DeadlineRules::digest`] writes it.
    Sha256([u8; 32]),
    /// Any other text.
    Other(Box<str>),
}

impl RulesDigest {
    /// The digest recorded as `text`.
    pub fn parse(text: &str) -> Self {
        let bytes = text.strip_prefix("sha256:").filter(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        match bytes {
            Some(hex) => {
                let mut out = [0u8; 32];
                for (i, byte) in out.iter_mut().enumerate() {
                    // Checked above: two lower-case hex digits.
                    *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_default();
                }
                Self::Sha256(out)
            }
            None => Self::Other(text.into()),
        }
    }
}

impl std::fmt::Display for RulesDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sha256(bytes) => {
                f.write_str("sha256:")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl std::fmt::Debug for RulesDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// A recorded due time as the fold keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDueTime {
    /// When the recording service counted the clock to fall due; `None` when it could
    /// not count it.
    pub due_at: Option<OffsetDateTime>,
    /// The digest of the rules and calendar it counted with.
    pub rules_digest: RulesDigest,
}

/// The recorded due of `clock` in `dues`, if there is one (the first, should a producer
/// record a clock twice).
pub fn recorded_due_of(dues: &[RecordedDue], clock: ClockName) -> Option<RecordedDueTime> {
    dues.iter()
        .find(|d| d.clock == clock.key())
        .map(|d| RecordedDueTime {
            due_at: d.due_at.as_ref().and_then(datetime_from),
            rules_digest: RulesDigest::parse(&d.rules_digest),
        })
}

/// What a triggering event records due times for: the kind and id of the subject its
/// clocks run on, the clocks it may start, and the dues it recorded. `None` for events
/// that start no clock.
pub fn recorded_in(kind: &Kind) -> Option<(&'static str, &str, Vec<ClockName>, &[RecordedDue])> {
    Some(match kind {
        Kind::HandoffRequested(p) => (
            "hand-off",
            p.handoff_id.as_str(),
            clocks_started_by(p.kind()),
            p.recorded_dues.as_slice(),
        ),
        Kind::GoodsDetained(p) => (
            "detention",
            p.detention_id.as_str(),
            if p.on_rights_holder_application {
                vec![ClockName::ReleaseOnApplication]
            } else {
                Vec::new()
            },
            p.recorded_dues.as_slice(),
        ),
        Kind::RightsHolderNotified(p) => (
            "detention",
            p.detention_id.as_str(),
            vec![ClockName::RightsHolderApplication],
            p.recorded_dues.as_slice(),
        ),
        Kind::RightsHolderApplied(p) => (
            "detention",
            p.detention_id.as_str(),
            vec![ClockName::CustomsInvestigation, ClockName::ReleaseExOfficio],
            p.recorded_dues.as_slice(),
        ),
        Kind::SuspectDetained(p) => (
            "suspect",
            p.party_id.as_str(),
            vec![ClockName::ArrestRequest],
            p.recorded_dues.as_slice(),
        ),
        Kind::ArrestApproved(p) => (
            "suspect",
            p.party_id.as_str(),
            vec![ClockName::Custody],
            p.recorded_dues.as_slice(),
        ),
        _ => return None,
    })
}

/// What is wrong with one recorded due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueProblem {
    /// The due time recorded is not the one the rules give (`None`: not counted, or
    /// the calendar cannot count it).
    DueTime {
        /// As recorded.
        recorded: Option<OffsetDateTime>,
        /// As recomputed with the rules and calendar given; `Err` with the calendar's
        /// error when they cannot count it.
        recomputed: Result<OffsetDateTime, String>,
    },
    /// The due was counted with other rules or another calendar than those given.
    RulesDigest {
        /// As recorded.
        recorded: String,
        /// The digest of the rules and calendar given.
        expected: String,
    },
    /// The recorded clock is not one the event starts under these rules (an unknown
    /// name, another kind's decision clock, or a clock recorded twice).
    UnexpectedClock,
    /// A clock the event starts has no recorded due, while others do.
    MissingClock,
}

/// One recorded due that does not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueMismatch {
    /// Version of the triggering event in its case.
    pub version: u64,
    /// What the clock runs on: `hand-off`, `detention` or `suspect`.
    pub subject_kind: &'static str,
    /// Its id (the hand-off the event requested, the detention).
    pub subject: String,
    /// The clock, as recorded (or as the rules name it, for a missing one).
    pub clock: String,
    /// What is wrong.
    pub problem: DueProblem,
}

fn fmt(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl std::fmt::Display for DueMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (version, clock) = (self.version, &self.clock);
        let id = format!("{} {}", self.subject_kind, self.subject);
        match &self.problem {
            DueProblem::DueTime {
                recorded,
                recomputed,
            } => write!(
                f,
                "version {version} ({id}): the {clock} clock is recorded due {}, the rules give {}",
                recorded.map_or_else(|| "(not counted)".to_owned(), fmt),
                match recomputed {
                    Ok(at) => fmt(*at),
                    Err(e) => format!("no due time ({e})"),
                }
            ),
            DueProblem::RulesDigest { recorded, expected } => write!(
                f,
                "version {version} ({id}): the {clock} clock was counted with rules {recorded}, not {expected}"
            ),
            DueProblem::UnexpectedClock => write!(
                f,
                "version {version} ({id}): a due is recorded for the {clock} clock, which the event does not start (or is recorded twice)"
            ),
            DueProblem::MissingClock => write!(
                f,
                "version {version} ({id}): no due is recorded for the {clock} clock the event starts"
            ),
        }
    }
}

/// Recomputes every recorded due of `events` (any order, any cases; each event's own
/// version is reported) with `rules` on `calendar`, and reports each that differs: a
/// digest other than `rules.digest(calendar)` (counted with other rules, so its due
/// time is not compared), a due time that is not the one the rules give, a clock the
/// event does not start, or one it starts and does not record. Events without recorded dues (recorded before due times were
/// recorded) are not checked.
pub fn check_recorded_dues<'a>(
    events: impl IntoIterator<Item = RecordedEvent<'a>>,
    rules: &DeadlineRules,
    calendar: &Calendar,
) -> Vec<DueMismatch> {
    check_recorded_dues_against(events, rules, calendar, &rules.digest(calendar))
}

/// As [`check_recorded_dues`], with `rules.digest(calendar)` computed by the caller
/// once (a service's `Clocks::digest`), for callers that check event by event.
pub fn check_recorded_dues_against<'a>(
    events: impl IntoIterator<Item = RecordedEvent<'a>>,
    rules: &DeadlineRules,
    calendar: &Calendar,
    expected: &str,
) -> Vec<DueMismatch> {
    let mut out = Vec::new();
    for event in events {
        let Some((subject_kind, subject, started, recorded)) = event.payload.and_then(recorded_in)
        else {
            continue;
        };
        if recorded.is_empty() {
            continue;
        }
        let mismatch = |clock: &str, problem| DueMismatch {
            version: event.version,
            subject_kind,
            subject: subject.to_owned(),
            clock: clock.to_owned(),
            problem,
        };
        let mut seen = Vec::new();
        for due in recorded {
            let name = ClockName::from_key(&due.clock)
                .filter(|n| started.contains(n) && !seen.contains(n));
            let Some(name) = name else {
                out.push(mismatch(&due.clock, DueProblem::UnexpectedClock));
                continue;
            };
            seen.push(name);
            // Counted with other rules: recomputing with these says nothing about it.
            if due.rules_digest != expected {
                out.push(mismatch(
                    &due.clock,
                    DueProblem::RulesDigest {
                        recorded: due.rules_digest.clone(),
                        expected: expected.to_owned(),
                    },
                ));
                continue;
            }
            let recorded = due.due_at.as_ref().and_then(datetime_from);
            let recomputed = rules
                .clock(name)
                .due(event.occurred_at, calendar)
                .map_err(|e| e.to_string());
            if recorded != recomputed.as_ref().ok().copied() {
                out.push(mismatch(
                    &due.clock,
                    DueProblem::DueTime {
                        recorded,
                        recomputed,
                    },
                ));
            }
        }
        for name in started.into_iter().filter(|n| !seen.contains(n)) {
            out.push(mismatch(name.key(), DueProblem::MissingClock));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_digest_is_kept_in_place_and_shown_exactly_as_it_was_recorded() {
        let digest = DeadlineRules::default().digest(&Calendar::shipped());
        let kept = RulesDigest::parse(&digest);
        assert!(matches!(kept, RulesDigest::Sha256(_)), "{kept:?}");
        assert_eq!(kept.to_string(), digest);
        // Any other form is kept as text, so verify reports what was recorded: upper
        // case hex, a short digest, another algorithm, nothing.
        let upper = digest.to_uppercase().replacen("SHA256", "sha256", 1);
        for text in [upper.as_str(), "sha256:ab", "sha512:00", ""] {
            let kept = RulesDigest::parse(text);
            assert!(matches!(kept, RulesDigest::Other(_)), "{text}: {kept:?}");
            assert_eq!(kept.to_string(), text);
        }
        assert_ne!(RulesDigest::parse(&upper), RulesDigest::parse(&digest));
    }

    #[test]
    fn a_referral_records_its_receipt_and_filing_clocks() {
        let rules = DeadlineRules::default();
        let calendar = Calendar::shipped();
        // Friday 6 November 2026, 10:30 CST.
        let at = datetime!(2026-11-06 02:30 UTC);
        let dues = recorded_dues(
            HandoffKind::SuspectedCrimeReferral,
            at,
            &rules,
            &calendar,
            "sha256:x",
        );
        let names: Vec<&str> = dues.iter().map(|d| d.clock.as_str()).collect();
        assert_eq!(names, ["receipt", "filing_decision"]);
        // Receipt: from 11:00 CST, 24 hours.
        assert_eq!(
            dues[0].due_at,
            Some(timestamp_from(datetime!(2026-11-07 03:00 UTC)))
        );
        // 3 days from Saturday 7 November end on Monday 9 November, 24:00 CST.
        assert_eq!(
            dues[1].due_at,
            Some(timestamp_from(datetime!(2026-11-09 16:00 UTC)))
        );
        assert!(dues.iter().all(|d| d.rules_digest == "sha256:x"));
        assert!(recorded_dues(HandoffKind::Unspecified, at, &rules, &calendar, "d").is_empty());
    }

    #[test]
    fn a_clock_the_calendar_cannot_count_is_recorded_without_a_due_time() {
        let rules = DeadlineRules::default();
        // 2027 awaits its notice: a 15-day assistance clock from late December 2026
        // ends on a 2027 day that cannot be checked for roll-over.
        let at = datetime!(2026-12-28 02:00 UTC);
        let dues = recorded_dues(
            HandoffKind::AssistanceRequest,
            at,
            &rules,
            &Calendar::shipped(),
            "d",
        );
        assert!(dues[0].due_at.is_some(), "hours need no calendar");
        assert_eq!(dues[1].clock, "assistance_decision");
        assert_eq!(dues[1].due_at, None);
    }
}
