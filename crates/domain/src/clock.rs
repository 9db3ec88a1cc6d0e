//! Legal clocks: a rule (amount, unit, legal basis, whether a last day on a rest day
//! moves to the next working day, and the extensions the law allows) and the
//! computation of its due time from the triggering act's `occurred_at` on the legal
//! calendar.
//!
//! Counting follows Criminal Procedure Law Art. 105: the hour or day in which the act
//! falls is not counted, so a period in hours starts at the next full hour and a period
//! in days starts on the day after the act; a period ends at 24:00 China Standard Time
//! of its last day; a last day that is a rest day moves to the first working day after
//! it, except for periods of custody, which end when they end. A period in months ends
//! on the same date as the act in the month the period reaches, or on that month's last
//! day when the date does not exist (1 month from 31 January ends on 28 or 29
//! February). Working days are counted from the day after the act, skipping rest days.
//!
//! **Boundary:** pure arithmetic; the calendar comes in as an argument.

use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time};

use crate::calendar::{CHINA_STANDARD_TIME, Calendar, CalendarError};

/// The unit a clock's amount counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// Hours from the full hour after the act; never moved.
    Hours,
    /// Calendar days from the day after the act.
    Days,
    /// Working days from the day after the act.
    WorkingDays,
    /// Months, ending on the act's date in the month reached (or that month's last day).
    Months,
    /// Exact elapsed seconds from the act, outside the calendar: only for deadline
    /// rules written before legal clocks (`"2s"`, `"200ms"` in tests) and never a legal
    /// period.
    Seconds,
}

impl Unit {
    /// The name used in the rules file.
    pub fn key(self) -> &'static str {
        match self {
            Self::Hours => "hours",
            Self::Days => "days",
            Self::WorkingDays => "working_days",
            Self::Months => "months",
            Self::Seconds => "seconds",
        }
    }

    /// The unit named `key` in the rules file.
    pub fn from_key(key: &str) -> Option<Self> {
        Some(match key {
            "hours" => Self::Hours,
            "days" => Self::Days,
            "working_days" => Self::WorkingDays,
            "months" => Self::Months,
            "seconds" => Self::Seconds,
            _ => return None,
        })
    }

    /// Whether the unit counts days (days, working days, months) rather than time.
    pub fn counts_days(self) -> bool {
        matches!(self, Self::Days | Self::WorkingDays | Self::Months)
    }

    /// The largest amount accepted: about one year in every unit.
    pub fn max_amount(self) -> u32 {
        match self {
            Self::Hours => 366 * 24,
            Self::Days => 366,
            Self::WorkingDays => 260,
            Self::Months => 12,
            Self::Seconds => 366 * 24 * 60 * 60,
        }
    }
}

/// One extension step a clock allows: the amount added on top of the period before it,
/// with its own legal basis (usually the approval it needs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Step {
    /// How much is added.
    pub amount: u32,
    /// In which unit.
    pub unit: Unit,
    /// The law that allows it, e.g. `CPL Art. 172 (major or complex case)`.
    pub basis: String,
}

/// How one legal clock runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClockRule {
    /// The period's length.
    pub amount: u32,
    /// Its unit.
    pub unit: Unit,
    /// The law that sets it.
    pub basis: String,
    /// Whether a last day on a rest day moves to the next working day (false for
    /// custody periods, CPL Art. 105).
    pub roll_over: bool,
    /// The extensions allowed, in the order they may be granted; granting all of them
    /// reaches the clock's cap.
    pub extensions: Vec<Step>,
}

/// Where a period ends before it is turned into an instant.
enum End {
    /// Nothing counted yet.
    Act,
    /// At an instant (hours, seconds).
    At(OffsetDateTime),
    /// At 24:00 of a day.
    Day(Date),
}

fn out_of_range(what: impl Into<String>) -> CalendarError {
    CalendarError::OutOfRange { what: what.into() }
}

/// The date `months` months after `from`, or the last day of that month.
fn add_months(from: Date, months: u32) -> Result<Date, CalendarError> {
    let index =
        i64::from(from.year()) * 12 + i64::from(u8::from(from.month())) - 1 + i64::from(months);
    let year = i32::try_from(index.div_euclid(12))
        .map_err(|_| out_of_range(format!("{months} months after {from}")))?;
    let month = u8::try_from(index.rem_euclid(12) + 1)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(|| out_of_range(format!("{months} months after {from}")))?;
    let day = from.day().min(month.length(year));
    Date::from_calendar_date(year, month, day)
        .map_err(|_| out_of_range(format!("{months} months after {from}")))
}

fn next_day(date: Date) -> Result<Date, CalendarError> {
    date.next_day()
        .ok_or_else(|| out_of_range(format!("the day after {date}")))
}

/// The `n`th working day after `from` (not counting `from` itself).
fn working_days_after(calendar: &Calendar, from: Date, n: u32) -> Result<Date, CalendarError> {
    let mut day = from;
    let mut counted = 0;
    while counted < n {
        day = next_day(day)?;
        if calendar.is_working_day(day)? {
            counted += 1;
        }
    }
    Ok(day)
}

/// The full hour after `at`.
fn next_full_hour(at: OffsetDateTime) -> OffsetDateTime {
    // UTC+8 is a whole number of hours, so a full hour in UTC is one in CST too.
    let utc = at.to_offset(time::UtcOffset::UTC);
    let floor = utc.replace_time(Time::MIDNIGHT) + Duration::hours(utc.hour().into());
    floor + Duration::hours(1)
}

/// The act's date in China Standard Time.
pub fn legal_date(at: OffsetDateTime) -> Date {
    at.to_offset(CHINA_STANDARD_TIME).date()
}

/// 24:00 China Standard Time of `day`, in UTC.
pub fn end_of_day(day: Date) -> Result<OffsetDateTime, CalendarError> {
    let next = next_day(day)?;
    Ok(PrimitiveDateTime::new(next, Time::MIDNIGHT)
        .assume_offset(CHINA_STANDARD_TIME)
        .to_offset(time::UtcOffset::UTC))
}

impl ClockRule {
    /// A rule without extensions.
    pub fn new(amount: u32, unit: Unit, basis: impl Into<String>, roll_over: bool) -> Self {
        Self {
            amount,
            unit,
            basis: basis.into(),
            roll_over,
            extensions: Vec::new(),
        }
    }

    /// Adds an extension step.
    #[must_use]
    pub fn extended_by(mut self, amount: u32, unit: Unit, basis: impl Into<String>) -> Self {
        self.extensions.push(Step {
            amount,
            unit,
            basis: basis.into(),
        });
        self
    }

    /// When the period that started with an act at `start` ends.
    ///
    /// # Errors
    /// [`CalendarError::YearNotLoaded`] or [`CalendarError::YearAwaitingNotice`] when
    /// counting needs a day of a year without a known schedule (working days, or a
    /// roll-over check of the last day); [`CalendarError::OutOfRange`] for dates past
    /// the year 9999.
    pub fn due(
        &self,
        start: OffsetDateTime,
        calendar: &Calendar,
    ) -> Result<OffsetDateTime, CalendarError> {
        self.due_after(start, 0, calendar)
    }

    /// The latest due time the rule allows: every extension granted.
    ///
    /// # Errors
    /// As [`ClockRule::due`].
    pub fn cap(
        &self,
        start: OffsetDateTime,
        calendar: &Calendar,
    ) -> Result<OffsetDateTime, CalendarError> {
        self.due_after(start, self.extensions.len(), calendar)
    }

    /// When the period ends with the first `granted` extensions added (more than the
    /// rule has count as all of them).
    ///
    /// # Errors
    /// As [`ClockRule::due`].
    pub fn due_after(
        &self,
        start: OffsetDateTime,
        granted: usize,
        calendar: &Calendar,
    ) -> Result<OffsetDateTime, CalendarError> {
        let base = Step {
            amount: self.amount,
            unit: self.unit,
            basis: String::new(),
        };
        let steps = std::iter::once(&base).chain(self.extensions.iter().take(granted));
        let mut end = End::Act;
        // Months are counted from the date they start on, not from a previous month's
        // clamped end, so 1 month + 1 month from 31 January ends on 31 March, not 28.
        // The date a run of month steps counts from, and the months counted so far.
        let mut months_from: Option<(Date, u32)> = None;
        for step in steps {
            let amount = step.amount;
            end = match step.unit {
                Unit::Hours | Unit::Seconds => {
                    let from = match end {
                        // The hour of the act is not counted: hours start at the next
                        // full hour. Seconds (legacy rules) run from the act itself.
                        End::Act if step.unit == Unit::Hours => next_full_hour(start),
                        End::Act => start,
                        End::At(at) => at,
                        End::Day(day) => end_of_day(day)?,
                    };
                    let add = if step.unit == Unit::Hours {
                        Duration::hours(amount.into())
                    } else {
                        Duration::seconds(amount.into())
                    };
                    End::At(from + add)
                }
                Unit::Days | Unit::WorkingDays | Unit::Months => {
                    let from = match end {
                        End::Act => legal_date(start),
                        // A day count after a time count starts on the day the time
                        // ends (the rules file refuses such mixtures; code may not).
                        End::At(at) => legal_date(at),
                        End::Day(day) => day,
                    };
                    let last = match step.unit {
                        Unit::Days => {
                            months_from = None;
                            from.checked_add(Duration::days(amount.into()))
                                .ok_or_else(|| {
                                    out_of_range(format!("{amount} days after {from}"))
                                })?
                        }
                        Unit::WorkingDays => {
                            months_from = None;
                            working_days_after(calendar, from, amount)?
                        }
                        _ => {
                            let (anchor, before) = months_from.unwrap_or((from, 0));
                            let months = before + amount;
                            months_from = Some((anchor, months));
                            add_months(anchor, months)?
                        }
                    };
                    End::Day(last)
                }
            };
        }
        match end {
            End::Act => Ok(start),
            End::At(at) => Ok(at),
            End::Day(mut last) => {
                if self.roll_over {
                    while calendar.is_rest_day(last)? {
                        last = next_day(last)?;
                    }
                }
                end_of_day(last)
            }
        }
    }

    /// The canonical form the digest covers.
    pub fn canonical(&self) -> String {
        let steps = self
            .extensions
            .iter()
            .map(|s| format!("+{}{}({:?})", s.amount, s.unit.key(), s.basis))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "amount={} unit={} roll_over={} basis={:?} extensions=[{steps}]",
            self.amount,
            self.unit.key(),
            self.roll_over,
            self.basis
        )
    }
}
