//! The legal calendar: which days are working days in China, year by year, from the
//! holiday schedule the General Office of the State Council publishes each year (one
//! TOML file per year, parsed from text the caller reads), and the time zone legal
//! periods are counted in.
//!
//! Legal periods are counted in China Standard Time (the IANA zone Asia/Shanghai). China
//! has kept UTC+8 all year since it ended daylight saving time in 1991, so the zone is a
//! fixed offset for every date a case on this bus can have (none predates 2000) and no
//! time zone database is needed.
//!
//! A day is a rest day when the year's schedule lists it as a holiday, or when it is a
//! Saturday or Sunday that the schedule does not list as a make-up working day (调休上班).
//! A date in a year that is not loaded is an error naming the year, never a guess: the
//! schedule changes every year and cannot be derived from the statutory holidays alone.
//!
//! **Boundary:** no I/O and no clock; the files' text comes in as an argument.
//!
//! ```toml
//! year = 2026
//! status = "published"
//! notice = "国务院办公厅关于2026年部分节假日安排的通知"
//! issued = 2025-11-04
//! source = "Xinhua News Agency, 2025-11-04"
//! rest_days = [2026-01-01, 2026-01-02, 2026-01-03]
//! working_days = [2026-01-04]
//! ```

use std::collections::{BTreeMap, BTreeSet};

use time::{Date, Month, UtcOffset, Weekday};

use crate::rules::{RulesError, invalid_at, parse_error};

/// China Standard Time, UTC+8, in which every legal period is counted.
pub const CHINA_STANDARD_TIME: UtcOffset = time::macros::offset!(+8);

/// Why a date could not be judged working day or rest day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CalendarError {
    /// No holiday calendar is loaded for the year.
    #[error(
        "no holiday calendar for {year} is loaded; add the State Council's schedule for {year} (deploy/calendar/{year}.toml)"
    )]
    YearNotLoaded {
        /// The year asked about.
        year: i32,
    },
    /// The year's file is loaded but says the State Council has not published (or casebus
    /// has not confirmed) the year's schedule yet.
    #[error(
        "the holiday calendar for {year} ({file}) is awaiting the State Council's notice; fill in its schedule"
    )]
    YearAwaitingNotice {
        /// The year asked about.
        year: i32,
        /// The file that declared it.
        file: String,
    },
    /// A computed date or time falls outside what the calendar arithmetic supports.
    #[error("{what} is out of range")]
    OutOfRange {
        /// What overflowed, e.g. `the last day of a 12 months period from 9999-12-01`.
        what: String,
    },
}

/// Whether a year's schedule is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum YearStatus {
    /// The State Council's notice is published and transcribed in the file.
    Published,
    /// The notice is not published yet, or could not be confirmed; the year's dates are
    /// refused until the file is filled in.
    AwaitingNotice,
}

/// One year's schedule as the State Council published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YearCalendar {
    /// The year.
    pub year: i32,
    /// Whether the schedule is known.
    pub status: YearStatus,
    /// The notice the schedule comes from, by its title.
    pub notice: String,
    /// The file the year was read from, for error messages.
    pub file: String,
    /// Holidays (including the weekend days inside a holiday block).
    pub rest_days: BTreeSet<Date>,
    /// Make-up working days: Saturdays or Sundays worked in exchange for a holiday.
    pub working_days: BTreeSet<Date>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: toml::Spanned<i64>,
    status: toml::Spanned<String>,
    notice: toml::Spanned<String>,
    // Kept in the file for the reader (when the notice was issued, where it was read);
    // they do not change which days are working days.
    #[serde(default)]
    #[allow(dead_code)]
    issued: Option<toml::value::Datetime>,
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    #[serde(default)]
    rest_days: Vec<toml::Spanned<toml::value::Datetime>>,
    #[serde(default)]
    working_days: Vec<toml::Spanned<toml::value::Datetime>>,
}

fn local_date(
    file: &str,
    text: &str,
    field: &str,
    value: &toml::Spanned<toml::value::Datetime>,
) -> Result<Date, RulesError> {
    let bad = |reason: &str| invalid_at(file, text, value.span().start, field, reason);
    let dt = value.get_ref();
    let (Some(d), None, None) = (dt.date, dt.time, dt.offset) else {
        return Err(bad("must be a plain date such as 2026-10-01"));
    };
    let month = Month::try_from(d.month).map_err(|_| bad("has no such month"))?;
    Date::from_calendar_date(i32::from(d.year), month, d.day).map_err(|_| bad("is not a date"))
}

impl YearCalendar {
    /// Parses one year's file; `file` names it in errors.
    ///
    /// # Errors
    /// [`RulesError::Invalid`] naming the file, line and field: bad TOML or an unknown
    /// key, a status other than `published` or `awaiting_notice`, a date outside the
    /// year, a day listed twice or as both rest day and working day, a make-up working
    /// day that is not a Saturday or Sunday, a published year with no rest days, or an
    /// awaiting year that lists days.
    pub fn parse(file: &str, text: &str) -> Result<Self, RulesError> {
        let raw: YearFile = toml::from_str(text).map_err(|e| parse_error(file, text, &e))?;
        let year_span = raw.year.span().start;
        let year = i32::try_from(*raw.year.get_ref())
            .ok()
            .filter(|y| (2000..=2100).contains(y))
            .ok_or_else(|| {
                invalid_at(
                    file,
                    text,
                    year_span,
                    "year",
                    "must be between 2000 and 2100",
                )
            })?;
        let status = match raw.status.get_ref().as_str() {
            "published" => YearStatus::Published,
            "awaiting_notice" => YearStatus::AwaitingNotice,
            other => {
                return Err(invalid_at(
                    file,
                    text,
                    raw.status.span().start,
                    "status",
                    &format!("is {other:?}; use \"published\" or \"awaiting_notice\""),
                ));
            }
        };
        if raw.notice.get_ref().trim().is_empty() {
            return Err(invalid_at(
                file,
                text,
                raw.notice.span().start,
                "notice",
                "must name the State Council notice the schedule comes from",
            ));
        }
        let mut rest_days = BTreeSet::new();
        let mut working_days = BTreeSet::new();
        for (field, list, into) in [
            ("rest_days", &raw.rest_days, &mut rest_days),
            ("working_days", &raw.working_days, &mut working_days),
        ] {
            for value in list {
                let at = value.span().start;
                let date = local_date(file, text, field, value)?;
                if date.year() != year {
                    return Err(invalid_at(
                        file,
                        text,
                        at,
                        field,
                        &format!("{date} is not in {year}"),
                    ));
                }
                if !into.insert(date) {
                    return Err(invalid_at(
                        file,
                        text,
                        at,
                        field,
                        &format!("{date} is listed twice"),
                    ));
                }
            }
        }
        for value in &raw.working_days {
            let date = local_date(file, text, "working_days", value)?;
            let at = value.span().start;
            if rest_days.contains(&date) {
                return Err(invalid_at(
                    file,
                    text,
                    at,
                    "working_days",
                    &format!("{date} is also listed as a rest day"),
                ));
            }
            if !is_weekend(date) {
                return Err(invalid_at(
                    file,
                    text,
                    at,
                    "working_days",
                    &format!(
                        "{date} is a {}; a make-up working day is a Saturday or Sunday",
                        date.weekday()
                    ),
                ));
            }
        }
        match status {
            YearStatus::Published if rest_days.is_empty() => Err(invalid_at(
                file,
                text,
                raw.status.span().start,
                "rest_days",
                "a published schedule lists its holidays",
            )),
            YearStatus::AwaitingNotice if !rest_days.is_empty() || !working_days.is_empty() => {
                Err(invalid_at(
                    file,
                    text,
                    raw.status.span().start,
                    "status",
                    "a year awaiting its notice lists no days; set status = \"published\"",
                ))
            }
            _ => Ok(Self {
                year,
                status,
                notice: raw.notice.into_inner(),
                file: file.to_owned(),
                rest_days,
                working_days,
            }),
        }
    }
}

fn is_weekend(date: Date) -> bool {
    matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// The shipped holiday calendar files, `(file name, text)`.
pub const SHIPPED_CALENDAR: [(&str, &str); 2] = [
    (
        "deploy/calendar/2026.toml",
        include_str!("../../../deploy/calendar/2026.toml"),
    ),
    (
        "deploy/calendar/2027.toml",
        include_str!("../../../deploy/calendar/2027.toml"),
    ),
];

/// The loaded years' schedules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Calendar {
    years: BTreeMap<i32, YearCalendar>,
}

impl Calendar {
    /// The calendar casebus ships, `deploy/calendar/*.toml` as compiled in: the State
    /// Council's 2026 schedule and 2027 awaiting its notice. Services count with it
    /// unless `--calendar-dir` names other files.
    ///
    /// # Panics
    /// Never: the shipped files are checked by the crate's tests
    /// (`the_shipped_calendar_loads_and_is_the_files_under_deploy`).
    pub fn shipped() -> Self {
        Self::parse_files(SHIPPED_CALENDAR).expect("the shipped calendar files are valid")
    }

    /// A calendar with no years loaded: every working-day question is an error.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one file per year, as `(file name, text)` pairs.
    ///
    /// # Errors
    /// What [`YearCalendar::parse`] refuses, and [`RulesError::Invalid`] on `year` when
    /// two files declare the same year.
    pub fn parse_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, RulesError> {
        let mut calendar = Self::new();
        for (file, text) in files {
            calendar.add(YearCalendar::parse(file, text)?)?;
        }
        Ok(calendar)
    }

    /// Adds one year.
    ///
    /// # Errors
    /// [`RulesError::Invalid`] on `year` when the year is loaded already.
    pub fn add(&mut self, year: YearCalendar) -> Result<(), RulesError> {
        if let Some(existing) = self.years.get(&year.year) {
            return Err(RulesError::Invalid {
                file: year.file.clone(),
                line: None,
                field: "year".into(),
                reason: format!("{} is declared by {} already", year.year, existing.file),
            });
        }
        self.years.insert(year.year, year);
        Ok(())
    }

    /// The loaded years, in order.
    pub fn years(&self) -> impl Iterator<Item = &YearCalendar> {
        self.years.values()
    }

    /// Whether `date` is a rest day (a holiday, or a weekend day not worked).
    ///
    /// # Errors
    /// [`CalendarError::YearNotLoaded`] or [`CalendarError::YearAwaitingNotice`] when the
    /// date's year has no known schedule.
    pub fn is_rest_day(&self, date: Date) -> Result<bool, CalendarError> {
        let year = self
            .years
            .get(&date.year())
            .ok_or(CalendarError::YearNotLoaded { year: date.year() })?;
        if year.status == YearStatus::AwaitingNotice {
            return Err(CalendarError::YearAwaitingNotice {
                year: year.year,
                file: year.file.clone(),
            });
        }
        Ok(year.rest_days.contains(&date)
            || (is_weekend(date) && !year.working_days.contains(&date)))
    }

    /// Whether `date` is a working day.
    ///
    /// # Errors
    /// As [`Calendar::is_rest_day`].
    pub fn is_working_day(&self, date: Date) -> Result<bool, CalendarError> {
        self.is_rest_day(date).map(|rest| !rest)
    }

    /// The canonical form the digest covers: every loaded year with its status, notice
    /// and days in order, one line per year.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for y in self.years.values() {
            let days = |set: &BTreeSet<Date>| {
                set.iter()
                    .map(Date::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            out.push_str(&format!(
                "calendar {} status={:?} notice={:?} rest={} work={}\n",
                y.year,
                y.status,
                y.notice,
                days(&y.rest_days),
                days(&y.working_days)
            ));
        }
        out
    }
}
