//! Column encodings shared by the writes and the queries: instants as unix nanoseconds,
//! proto enums as lower-case names (a value this build does not know as its decimal
//! number), statuses as lower-case words, agency lists as comma-separated names.
//!
//! Every encoding here round-trips: `decode(encode(x)) == x` for any value the domain
//! produces, except instants outside the `i64` nanosecond range, which are clamped.

use time::OffsetDateTime;

use casebus_domain::{HandoffStatus, TrackStatus};
use casebus_proto::event::v1::{Agency, CaseType, HandoffKind, PartyRole, VisibilityKind};

/// The column value of an instant: unix nanoseconds, clamped to the `i64` range
/// (1677-09-21 to 2262-04-11).
pub(crate) fn nanos(at: OffsetDateTime) -> i64 {
    let n = at.unix_timestamp_nanos();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// The instant of a column value written by [`nanos`].
pub(crate) fn instant(nanos: i64) -> OffsetDateTime {
    // Every i64 nanosecond count lies within OffsetDateTime's range (years -9999..=9999),
    // so the fallback is unreachable.
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A `u64` query bound as a column value, saturating: no stored value exceeds `i64::MAX`.
pub(crate) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored non-negative integer as `u64`; `None` for a negative value.
pub(crate) fn to_u64(value: i64) -> Option<u64> {
    u64::try_from(value).ok()
}

macro_rules! enum_codec {
    ($ty:ty, $encode:ident, $decode:ident) => {
        /// The lower-case proto name of the raw value, or its decimal number when this
        /// build does not know it.
        pub(crate) fn $encode(raw: i32) -> String {
            match <$ty>::try_from(raw) {
                Ok(value) => value.as_str_name().to_ascii_lowercase(),
                Err(_) => raw.to_string(),
            }
        }

        /// The raw value of a column written by the matching encoder.
        pub(crate) fn $decode(text: &str) -> Option<i32> {
            <$ty>::from_str_name(&text.to_ascii_uppercase())
                .map(|value| value as i32)
                .or_else(|| text.parse().ok())
        }
    };
}

enum_codec!(Agency, agency_text, agency_raw);
enum_codec!(CaseType, case_type_text, case_type_raw);
enum_codec!(HandoffKind, handoff_kind_text, handoff_kind_raw);
enum_codec!(PartyRole, party_role_text, party_role_raw);
enum_codec!(VisibilityKind, visibility_kind_text, visibility_kind_raw);

/// The agency of a column written by [`agency_text`]; unknown values become
/// `Unspecified` (the domain types hold only known agencies).
pub(crate) fn agency(text: &str) -> Option<Agency> {
    agency_raw(text).map(|raw| Agency::try_from(raw).unwrap_or(Agency::Unspecified))
}

/// Comma-separated agency names of a visibility's agency list, in recorded order.
pub(crate) fn agency_list_text(agencies: &[i32]) -> String {
    let names: Vec<String> = agencies.iter().map(|a| agency_text(*a)).collect();
    names.join(",")
}

/// The raw agency list of a column written by [`agency_list_text`].
pub(crate) fn agency_list(text: &str) -> Option<Vec<i32>> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(agency_raw)
        .collect()
}

/// Column text of a track status.
pub(crate) fn track_status_text(status: TrackStatus) -> &'static str {
    match status {
        TrackStatus::Active => "active",
        TrackStatus::Closed => "closed",
    }
}

/// The track status of a column written by [`track_status_text`].
pub(crate) fn track_status(text: &str) -> Option<TrackStatus> {
    match text {
        "active" => Some(TrackStatus::Active),
        "closed" => Some(TrackStatus::Closed),
        _ => None,
    }
}

/// Column text of a hand-off status.
pub(crate) fn handoff_status_text(status: HandoffStatus) -> &'static str {
    match status {
        HandoffStatus::Requested => "requested",
        HandoffStatus::Acknowledged => "acknowledged",
        HandoffStatus::Accepted => "accepted",
        HandoffStatus::Declined => "declined",
    }
}

/// The hand-off status of a column written by [`handoff_status_text`].
pub(crate) fn handoff_status(text: &str) -> Option<HandoffStatus> {
    match text {
        "requested" => Some(HandoffStatus::Requested),
        "acknowledged" => Some(HandoffStatus::Acknowledged),
        "accepted" => Some(HandoffStatus::Accepted),
        "declined" => Some(HandoffStatus::Declined),
        _ => None,
    }
}

/// The SQL list of open hand-off statuses, as used in queries and in the partial index
/// `handoffs_open_by_due` (the text must match the index's WHERE clause exactly for
/// SQLite to use it).
pub(crate) const OPEN_STATUSES_SQL: &str = "status IN ('requested', 'acknowledged')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_round_trip_and_unknown_values_keep_their_number() {
        assert_eq!(
            agency_text(Agency::PublicSecurity as i32),
            "public_security"
        );
        assert_eq!(
            agency_raw("public_security"),
            Some(Agency::PublicSecurity as i32)
        );
        assert_eq!(
            case_type_text(CaseType::CounterfeitTrademark as i32),
            "counterfeit_trademark"
        );
        assert_eq!(agency_text(42), "42");
        assert_eq!(agency_raw("42"), Some(42));
        assert_eq!(agency_raw("navy"), None);
    }

    #[test]
    fn agency_lists_round_trip_including_the_empty_list() {
        for list in [vec![], vec![1], vec![4, 2, 99]] {
            assert_eq!(agency_list(&agency_list_text(&list)), Some(list));
        }
    }

    #[test]
    fn instants_round_trip_and_clamp_outside_the_nanosecond_range() {
        let at =
            OffsetDateTime::from_unix_timestamp_nanos(1_764_115_200_123_456_789).expect("in range");
        assert_eq!(instant(nanos(at)), at);
        let far = time::macros::datetime!(3000-01-01 0:00 UTC);
        assert_eq!(nanos(far), i64::MAX);
        let early = time::macros::datetime!(1500-01-01 0:00 UTC);
        assert_eq!(nanos(early), i64::MIN);
    }

    #[test]
    fn statuses_round_trip() {
        for s in [TrackStatus::Active, TrackStatus::Closed] {
            assert_eq!(track_status(track_status_text(s)), Some(s));
        }
        for s in [
            HandoffStatus::Requested,
            HandoffStatus::Acknowledged,
            HandoffStatus::Accepted,
            HandoffStatus::Declined,
        ] {
            assert_eq!(handoff_status(handoff_status_text(s)), Some(s));
        }
    }
}
