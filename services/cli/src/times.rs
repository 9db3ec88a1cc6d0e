//! Times on the command line and in output: instants given as RFC 3339
//! (`2026-03-01T08:00:00Z`), a date (`2026-03-01`, midnight UTC), `now`, or a humantime
//! duration meaning "that long ago" (`2h`, `3days`, `1h30m`); durations (`8h`, `2m`);
//! and RFC 3339 rendering.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

/// Parses an instant relative to `now`: RFC 3339, `YYYY-MM-DD` (midnight UTC), `now`,
/// or a duration meaning that long before `now`.
///
/// # Errors
/// A message naming the value and the accepted forms.
pub fn parse_instant(value: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(at);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(value, &date_format) {
        return Ok(date.with_time(Time::MIDNIGHT).assume_utc());
    }
    if let Ok(ago) = humantime::parse_duration(value) {
        let ago = time::Duration::try_from(ago).map_err(|_| format!("{value:?} is too long"))?;
        return now
            .checked_sub(ago)
            .ok_or_else(|| format!("{value:?} reaches before the year -9999"));
    }
    Err(format!(
        "{value:?} is not a time: use RFC 3339 (2026-03-01T08:00:00Z), a date (2026-03-01), \
         `now`, or a duration ago (2h, 3days)"
    ))
}

/// A clap value parser for instants, relative to the time of parsing.
///
/// # Errors
/// As [`parse_instant`].
pub fn instant_arg(value: &str) -> Result<OffsetDateTime, String> {
    parse_instant(value, OffsetDateTime::now_utc())
}

/// A clap value parser for durations (`8h`, `2m`, `1h30m`, `7days`).
///
/// # Errors
/// A message naming the value when it is not a positive duration.
pub fn duration_arg(value: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not a duration like 30s, 2m, 8h or 7days: {e}"))?;
    if parsed.is_zero() {
        return Err(format!("{value:?} must be longer than zero"));
    }
    Ok(parsed)
}

/// RFC 3339 text of an instant, in UTC.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// RFC 3339 text in UTC to the second, for tables and lines read by people (JSON keeps
/// the full precision).
pub fn short(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.replace_nanosecond(0)
        .map_or_else(|_| rfc3339(at), rfc3339)
}

/// [`short`] text, or `-` for none.
pub fn short_or_dash(at: Option<OffsetDateTime>) -> String {
    at.map_or_else(|| "-".to_owned(), short)
}

/// A short human duration (`3h 12m`), rounded to seconds.
pub fn human(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

    #[test]
    fn instants_parse_in_every_documented_form() {
        assert_eq!(
            parse_instant("2026-02-01T08:30:00Z", NOW),
            Ok(datetime!(2026-02-01 8:30 UTC))
        );
        assert_eq!(
            parse_instant("2026-02-01T08:30:00+08:00", NOW),
            Ok(datetime!(2026-02-01 0:30 UTC))
        );
        assert_eq!(
            parse_instant("2026-02-01", NOW),
            Ok(datetime!(2026-02-01 0:00 UTC))
        );
        assert_eq!(parse_instant("now", NOW), Ok(NOW));
        assert_eq!(
            parse_instant("2h", NOW),
            Ok(datetime!(2026-03-01 10:00 UTC))
        );
        assert_eq!(
            parse_instant("1h30m", NOW),
            Ok(datetime!(2026-03-01 10:30 UTC))
        );
    }

    #[test]
    fn a_bad_instant_is_refused_naming_the_value_and_the_forms() {
        let err = parse_instant("yesterday-ish", NOW).expect_err("not a time");
        assert!(
            err.contains("yesterday-ish") && err.contains("RFC 3339"),
            "{err}"
        );
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(duration_arg("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert!(duration_arg("0s").is_err());
        assert!(duration_arg("soon").is_err());
    }

    #[test]
    fn instants_render_in_utc() {
        assert_eq!(
            rfc3339(datetime!(2026-02-01 8:30 +8)),
            "2026-02-01T00:30:00Z"
        );
        assert_eq!(short_or_dash(None), "-");
        assert_eq!(
            short(datetime!(2026-02-01 8:30:15.123456 +8)),
            "2026-02-01T00:30:15Z"
        );
    }
}
