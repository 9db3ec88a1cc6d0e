//! Conversions between protobuf `Timestamp` and `time::OffsetDateTime`, the one time
//! type the domain computes with.

use prost_types::Timestamp;
use time::OffsetDateTime;

/// The protobuf timestamp of `at` (nanosecond precision, UTC).
pub fn timestamp_from(at: OffsetDateTime) -> Timestamp {
    let nanos = at.unix_timestamp_nanos();
    let seconds = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000);
    Timestamp {
        // Any OffsetDateTime (years -9999..=9999) fits both casts.
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: i32::try_from(sub).unwrap_or(0),
    }
}

/// The instant of a protobuf timestamp, or `None` when it is out of range or its nanos
/// are not in `0..1e9`.
pub fn datetime_from(ts: &Timestamp) -> Option<OffsetDateTime> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_before_the_epoch() {
        for nanos in [
            0_i128,
            1,
            -1,
            1_764_115_200_123_456_789,
            -86_400_000_000_001,
        ] {
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("in range");
            assert_eq!(datetime_from(&timestamp_from(at)), Some(at));
        }
    }

    #[test]
    fn rejects_out_of_range_nanos() {
        assert_eq!(
            datetime_from(&Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
        assert_eq!(
            datetime_from(&Timestamp {
                seconds: 0,
                nanos: 1_000_000_000
            }),
            None
        );
        assert_eq!(
            datetime_from(&Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            None
        );
    }
}
