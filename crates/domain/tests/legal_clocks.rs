//! Legal clocks on the legal calendar, table-style: every row names a clock of the
//! default rules (or of a rules text), the act's time in China Standard Time, how many
//! extensions are granted, and the due time expected, through the single `check`
//! helper. The shipped calendar files are the ones under `deploy/calendar/`. Then the
//! rules and calendar files' validation (file, line, field), the digest, and property
//! tests of the counting.

use proptest::prelude::*;
use time::macros::{datetime, offset};
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use casebus_domain::{Calendar, CalendarError, ClockName, DeadlineRules, RulesError};

const CAL_2026: &str = include_str!("../../../deploy/calendar/2026.toml");
const CAL_2027: &str = include_str!("../../../deploy/calendar/2027.toml");

/// The calendar as shipped: 2026 published, 2027 awaiting its notice.
fn shipped() -> Calendar {
    Calendar::parse_files([
        ("deploy/calendar/2026.toml", CAL_2026),
        ("deploy/calendar/2027.toml", CAL_2027),
    ])
    .expect("the shipped calendar files are valid")
}

/// `"2026-03-06 15:00"` in China Standard Time.
fn cst(text: &str) -> OffsetDateTime {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    PrimitiveDateTime::parse(text, format)
        .unwrap_or_else(|e| panic!("bad test time {text:?}: {e}"))
        .assume_offset(offset!(+8))
}

/// `"2026-03-09 24:00"` (the end of that day) or `"2026-03-07 11:00"`, in CST.
fn due(text: &str) -> OffsetDateTime {
    match text.strip_suffix(" 24:00") {
        Some(day) => cst(&format!("{day} 00:00")) + time::Duration::days(1),
        None => cst(text),
    }
}

/// Counts `clock` of `rules` from an act at `act` (CST) with `granted` extensions on
/// `calendar`, and compares with `expected` (a due time as [`due`] reads it, or an
/// error).
fn check_with(
    rules: &DeadlineRules,
    calendar: &Calendar,
    clock: ClockName,
    act: &str,
    granted: usize,
    expected: Result<&str, CalendarError>,
) {
    let got = rules
        .clock(clock)
        .due_after(cst(act), granted, calendar)
        .map(|t| t.to_offset(offset!(+8)));
    let want = expected.map(|t| due(t).to_offset(offset!(+8)));
    assert_eq!(
        got, want,
        "{clock:?} from {act} CST with {granted} extension(s)"
    );
}

fn check(clock: ClockName, act: &str, granted: usize, expected: Result<&str, CalendarError>) {
    check_with(
        &DeadlineRules::default(),
        &shipped(),
        clock,
        act,
        granted,
        expected,
    );
}

use ClockName::*;

#[test]
fn a_friday_referral_counts_the_weekend_and_a_last_day_on_a_weekend_rolls_over() {
    // Fri 6 March: days 1-3 are Sat, Sun, Mon; Monday is a working day.
    check(
        FilingDecision,
        "2026-03-06 15:00",
        0,
        Ok("2026-03-09 24:00"),
    );
    // Wed 4 March: the third day is Saturday, which moves to Monday.
    check(
        FilingDecision,
        "2026-03-04 09:00",
        0,
        Ok("2026-03-09 24:00"),
    );
    // Thu 5 March: the third day is Sunday, which moves to Monday.
    check(
        FilingDecision,
        "2026-03-05 09:00",
        0,
        Ok("2026-03-09 24:00"),
    );
    // Tue 3 March: the third day is Friday.
    check(
        FilingDecision,
        "2026-03-03 09:00",
        0,
        Ok("2026-03-06 24:00"),
    );
}

#[test]
fn days_are_counted_in_china_standard_time_not_utc() {
    // 17:00 UTC on Tuesday 3 March is 01:00 CST on Wednesday 4 March: the act's day is
    // Wednesday, so the third day is Saturday and rolls to Monday. Counted in UTC it
    // would have ended on Friday.
    let rules = DeadlineRules::default();
    let act = datetime!(2026-03-03 17:00 UTC);
    assert_eq!(
        rules.clock(FilingDecision).due(act, &shipped()),
        Ok(due("2026-03-09 24:00"))
    );
}

#[test]
fn the_filing_decision_extends_to_10_and_30_days_and_no_further() {
    check(
        FilingDecision,
        "2026-03-06 15:00",
        1,
        Ok("2026-03-16 24:00"),
    );
    // 30 days from 6 March end on Sunday 5 April, inside the Qingming holiday (4-6 April):
    // the first working day after it is Tuesday 7 April.
    check(
        FilingDecision,
        "2026-03-06 15:00",
        2,
        Ok("2026-04-07 24:00"),
    );
    check(
        FilingDecision,
        "2026-03-06 15:00",
        3,
        Ok("2026-04-07 24:00"),
    );
}

#[test]
fn one_month_from_31_january_ends_on_the_last_day_of_february() {
    // 28 February 2026 is a Saturday but a make-up working day of the Spring Festival,
    // so the period ends on it.
    check(
        ProsecutionReview,
        "2026-01-31 10:00",
        0,
        Ok("2026-02-28 24:00"),
    );
    // The +15 days of a major or complex case run from that last day: 15 March is a
    // Sunday, so the review ends on Monday 16 March.
    check(
        ProsecutionReview,
        "2026-01-31 10:00",
        1,
        Ok("2026-03-16 24:00"),
    );
    // A month from the 31st of a month with a 30-day successor ends on its 30th.
    check(
        ProsecutionReview,
        "2026-03-31 10:00",
        0,
        Ok("2026-04-30 24:00"),
    );
    // A month from the 15th ends on the 15th.
    check(
        ProsecutionReview,
        "2026-06-15 10:00",
        0,
        Ok("2026-07-15 24:00"),
    );
}

#[test]
fn a_last_day_in_the_spring_festival_moves_past_the_whole_holiday() {
    // 15 February is the first day of the Spring Festival holiday (15-23 February).
    check(
        ProsecutionReview,
        "2026-01-15 10:00",
        0,
        Ok("2026-02-24 24:00"),
    );
    check(
        SupplementaryInvestigation,
        "2026-01-20 10:00",
        0,
        Ok("2026-02-24 24:00"),
    );
}

#[test]
fn working_days_skip_the_spring_festival_and_count_its_make_up_saturday() {
    // Thu 12 February: Fri 13 (1), Sat 14 is a make-up working day (2), 15-23 are the
    // holiday, Tue 24 (3).
    check(
        RightsHolderApplication,
        "2026-02-12 16:00",
        0,
        Ok("2026-02-24 24:00"),
    );
}

#[test]
fn working_days_skip_mid_autumn_and_national_day_and_count_their_make_up_days() {
    // Tue 29 September: Wed 30 (1), 1-7 October are the holiday, Thu 8 (2), Fri 9 (3).
    check(
        RightsHolderApplication,
        "2026-09-29 16:00",
        0,
        Ok("2026-10-09 24:00"),
    );
    // Fri 18 September: Sat 19 rests, Sun 20 is a make-up working day (1), Mon 21 (2),
    // Tue 22 (3).
    check(
        RightsHolderApplication,
        "2026-09-18 16:00",
        0,
        Ok("2026-09-22 24:00"),
    );
    // Thu 24 September: 25-27 are Mid-Autumn, Mon 28 (1), Tue 29 (2), Wed 30 (3); with
    // six working days, Thu 8 (4), Fri 9 (5) and the make-up Saturday 10 October (6).
    check(
        RightsHolderApplication,
        "2026-09-24 16:00",
        0,
        Ok("2026-09-30 24:00"),
    );
    let six = DeadlineRules::parse_file(
        "six.toml",
        "[clocks.rights_holder_application]\namount = 6\n",
    )
    .expect("valid");
    check_with(
        &six,
        &shipped(),
        RightsHolderApplication,
        "2026-09-24 16:00",
        0,
        Ok("2026-10-10 24:00"),
    );
}

#[test]
fn a_custody_clock_ending_on_a_holiday_does_not_roll_over() {
    // Two months from 1 August end on 1 October, National Day: custody ends there.
    check(Custody, "2026-08-01 10:00", 0, Ok("2026-10-01 24:00"));
    // The same last day on a clock that rolls over moves past the holiday and the
    // weekend after it to Thursday 8 October.
    check(
        ProsecutionReview,
        "2026-09-01 10:00",
        0,
        Ok("2026-10-08 24:00"),
    );
    // Custody extended by 1 month ends on Sunday 1 November, still without roll-over.
    check(Custody, "2026-08-01 10:00", 1, Ok("2026-11-01 24:00"));
    // Every extension (+1, +2, +2 months: 7 in all) counts months from the arrest, so it
    // needs no holiday calendar, even in a year without one.
    check(Custody, "2026-08-01 10:00", 3, Ok("2027-03-01 24:00"));
    // The arrest request and decision periods of a detained suspect do not roll over
    // either: 3 days from Saturday 2 May end on Tuesday 5 May, a Labour Day holiday.
    check(ArrestRequest, "2026-05-02 10:00", 0, Ok("2026-05-05 24:00"));
    check(ArrestRequest, "2026-05-02 10:00", 1, Ok("2026-05-09 24:00"));
    check(
        ArrestDecision,
        "2026-09-24 10:00",
        0,
        Ok("2026-10-01 24:00"),
    );
    // A filing decision from the same Saturday rolls over to Wednesday 6 May.
    check(
        FilingDecision,
        "2026-05-02 10:00",
        0,
        Ok("2026-05-06 24:00"),
    );
}

#[test]
fn an_hours_clock_starts_at_the_next_full_hour_and_never_rolls_over() {
    // 10:20 on Friday: the hour of the act is not counted, so 24 hours run from 11:00
    // and end at 11:00 on Saturday, a rest day.
    check(Receipt, "2026-03-06 10:20", 0, Ok("2026-03-07 11:00"));
    check(Receipt, "2026-10-01 23:00", 0, Ok("2026-10-03 00:00"));
}

#[test]
fn a_date_in_a_year_without_a_schedule_is_an_error_naming_the_year() {
    // The third day after 30 December 2026 is 2 January 2027, whose schedule is awaited.
    check(
        FilingDecision,
        "2026-12-30 10:00",
        0,
        Err(CalendarError::YearAwaitingNotice {
            year: 2027,
            file: "deploy/calendar/2027.toml".into(),
        }),
    );
    let only_2026 =
        Calendar::parse_files([("2026.toml", CAL_2026)]).expect("the 2026 file is valid");
    check_with(
        &DeadlineRules::default(),
        &only_2026,
        FilingDecision,
        "2026-12-30 10:00",
        0,
        Err(CalendarError::YearNotLoaded { year: 2027 }),
    );
    check(
        FilingDecision,
        "2025-06-10 10:00",
        0,
        Err(CalendarError::YearNotLoaded { year: 2025 }),
    );
    let err = shipped()
        .is_rest_day(Date::from_calendar_date(2025, time::Month::June, 1).expect("date"))
        .expect_err("2025 is not loaded");
    assert!(err.to_string().contains("2025"), "{err}");
}

#[test]
fn legacy_keys_still_set_the_clock_they_stand_for() {
    let rules = DeadlineRules::parse_file(
        "old.toml",
        "[handoff_due]\nsuspected_crime_referral = \"2days\"\nassistance_request = \"2s\"\n",
    )
    .expect("the old format is accepted");
    // Two days from Friday 6 March end on Sunday, which rolls to Monday.
    check_with(
        &rules,
        &shipped(),
        FilingDecision,
        "2026-03-06 15:00",
        0,
        Ok("2026-03-09 24:00"),
    );
    assert_eq!(
        rules.clock(FilingDecision).basis,
        DeadlineRules::default().clock(FilingDecision).basis,
        "a legacy key keeps the clock's legal basis"
    );
    // A duration shorter than an hour (as end-to-end tests use) runs exactly.
    let act = cst("2026-03-06 15:00");
    assert_eq!(
        rules.clock(AssistanceDecision).due(act, &shipped()),
        Ok(act + time::Duration::seconds(2))
    );
}

/// Parses `text` as the rules file `rules.toml` and returns the error's
/// (line, field, reason).
fn rules_error(text: &str) -> (Option<usize>, String, String) {
    match DeadlineRules::parse_file("rules.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(RulesError::Invalid {
            file,
            line,
            field,
            reason,
        }) => {
            assert_eq!(file, "rules.toml");
            (line, field, reason)
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn a_bad_rules_file_is_refused_naming_the_file_line_and_field() {
    let (line, field, reason) = rules_error("# custody\n[clocks.custody]\nunit = \"weeks\"\n");
    assert_eq!(
        (line, field.as_str()),
        (Some(3), "clocks.custody.unit"),
        "{reason}"
    );
    assert!(reason.contains("weeks"), "{reason}");

    let (line, field, _) = rules_error("[clocks.custdy]\namount = 2\n");
    assert_eq!((line, field.as_str()), (Some(1), "clocks.custdy"));

    let (line, field, _) = rules_error("[clocks.receipt]\namount = 0\n");
    assert_eq!((line, field.as_str()), (Some(2), "clocks.receipt.amount"));

    let (line, field, _) = rules_error("[clocks.receipt]\nbasis = \"  \"\n");
    assert_eq!((line, field.as_str()), (Some(2), "clocks.receipt.basis"));

    let (line, field, reason) = rules_error(
        "[clocks.prosecution_review]\nextensions = [{ amount = 5, unit = \"hours\", basis = \"x\" }]\n",
    );
    assert_eq!(
        (line, field.as_str()),
        (Some(1), "clocks.prosecution_review.extensions[0].unit"),
        "{reason}"
    );

    let (line, field, reason) = rules_error(
        "[handoff_due]\nsuspected_crime_referral = \"3days\"\n\n[clocks.filing_decision]\namount = 4\n",
    );
    assert_eq!((line, field.as_str()), (Some(4), "clocks.filing_decision"));
    assert!(
        reason.contains("handoff_due.suspected_crime_referral"),
        "{reason}"
    );

    let (line, field, _) = rules_error("[clocks.receipt]\namount = 24\nroll_ovr = true\n");
    assert_eq!((line, field.as_str()), (Some(3), "roll_ovr"));

    let (line, _, _) = rules_error("[clocks.receipt]\namount = = 24\n");
    assert_eq!(line, Some(2));

    let err = DeadlineRules::parse_file("rules.toml", "[periods]\nappeal = \"soon\"\n")
        .expect_err("bad duration");
    assert!(
        err.to_string()
            .starts_with("rules.toml line 2: periods.appeal: \"soon\": "),
        "{err}"
    );
}

/// Parses `text` as the calendar file `cal.toml` and returns the error's (line, field).
fn calendar_error(text: &str) -> (Option<usize>, String, String) {
    match Calendar::parse_files([("cal.toml", text)]) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(RulesError::Invalid {
            file,
            line,
            field,
            reason,
        }) => {
            assert_eq!(file, "cal.toml");
            (line, field, reason)
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

const HEAD: &str = "year = 2026\nstatus = \"published\"\nnotice = \"n\"\n";

#[test]
fn a_bad_calendar_file_is_refused_naming_the_file_line_and_field() {
    let (line, field, reason) = calendar_error(&format!(
        "{HEAD}rest_days = [2026-10-01]\nworking_days = [\n  2026-10-09,\n]\n"
    ));
    assert_eq!(
        (line, field.as_str()),
        (Some(6), "working_days"),
        "{reason}"
    );
    assert!(reason.contains("Friday"), "{reason}");

    let (line, field, reason) =
        calendar_error(&format!("{HEAD}rest_days = [2026-10-01, 2027-01-01]\n"));
    assert_eq!((line, field.as_str()), (Some(4), "rest_days"), "{reason}");

    let (_, field, reason) =
        calendar_error(&format!("{HEAD}rest_days = [2026-10-01, 2026-10-01]\n"));
    assert_eq!(field, "rest_days");
    assert!(reason.contains("twice"), "{reason}");

    let (_, field, _) = calendar_error(&format!(
        "{HEAD}rest_days = [2026-10-01]\nworking_days = [2026-10-01]\n"
    ));
    assert_eq!(field, "working_days");

    let (line, field, _) = calendar_error("year = 2026\nstatus = \"draft\"\nnotice = \"n\"\n");
    assert_eq!((line, field.as_str()), (Some(2), "status"));

    let (_, field, _) = calendar_error(&format!("{HEAD}\n"));
    assert_eq!(field, "rest_days", "a published year lists its holidays");

    let (_, field, _) = calendar_error(
        "year = 2027\nstatus = \"awaiting_notice\"\nnotice = \"n\"\nrest_days = [2027-01-01]\n",
    );
    assert_eq!(field, "status");

    let (line, field, _) = calendar_error(&format!("{HEAD}rest_days = [2026-10-01T10:00:00]\n"));
    assert_eq!((line, field.as_str()), (Some(4), "rest_days"));

    let (line, field, _) = calendar_error(&format!("{HEAD}holidays = [2026-10-01]\n"));
    assert_eq!((line, field.as_str()), (Some(4), "holidays"));

    let twice = Calendar::parse_files([("a.toml", CAL_2026), ("b.toml", CAL_2026)])
        .expect_err("2026 twice");
    assert!(twice.to_string().contains("a.toml"), "{twice}");
}

#[test]
fn the_shipped_2026_calendar_is_the_state_councils_schedule() {
    let calendar = shipped();
    let day = |m: u8, d: u8| {
        Date::from_calendar_date(2026, time::Month::try_from(m).expect("month"), d).expect("date")
    };
    let rest: Vec<Date> = (1..=12u8)
        .flat_map(|m| {
            (1..=31u8).filter_map(move |d| {
                Date::from_calendar_date(2026, time::Month::try_from(m).ok()?, d).ok()
            })
        })
        .filter(|d| calendar.is_rest_day(*d).expect("2026 is loaded"))
        .collect();
    // 104 weekend days, plus the holidays falling on weekdays, minus 6 make-up days.
    let weekdays_off = [
        day(1, 1),
        day(1, 2),
        day(2, 16),
        day(2, 17),
        day(2, 18),
        day(2, 19),
        day(2, 20),
        day(2, 23),
        day(4, 6),
        day(5, 1),
        day(5, 4),
        day(5, 5),
        day(6, 19),
        day(9, 25),
        day(10, 1),
        day(10, 2),
        day(10, 5),
        day(10, 6),
        day(10, 7),
    ];
    for d in weekdays_off {
        assert!(rest.contains(&d), "{d} is a holiday");
    }
    for d in [
        day(1, 4),
        day(2, 14),
        day(2, 28),
        day(5, 9),
        day(9, 20),
        day(10, 10),
    ] {
        assert!(!rest.contains(&d), "{d} is a make-up working day");
    }
    assert_eq!(rest.len(), 104 + weekdays_off.len() - 6);
}

#[test]
fn the_digest_changes_with_what_is_counted_and_only_with_that() {
    let calendar = shipped();
    let default = DeadlineRules::default().digest(&calendar);
    assert!(
        default.starts_with("sha256:") && default.len() == 7 + 64,
        "{default}"
    );
    let same = DeadlineRules::parse_file(
        "same.toml",
        "# the default, spelt out\n[clocks.custody]\namount = 2\nunit = \"months\"\n",
    )
    .expect("valid");
    assert_eq!(same.digest(&calendar), default);
    let longer =
        DeadlineRules::parse_file("l.toml", "[clocks.custody]\namount = 3\n").expect("valid");
    assert_ne!(longer.digest(&calendar), default);
    let only_2026 = Calendar::parse_files([("2026.toml", CAL_2026)]).expect("valid");
    assert_ne!(DeadlineRules::default().digest(&only_2026), default);
    let moved = CAL_2026.replace("2026-10-10, #", "2026-10-11, #");
    let moved = Calendar::parse_files([("2026.toml", moved.as_str()), ("2027.toml", CAL_2027)])
        .expect("still valid");
    assert_ne!(DeadlineRules::default().digest(&moved), default);
}

fn start_in_2026() -> impl Strategy<Value = OffsetDateTime> {
    // Any minute of 2026 (UTC), so acts late in December reach into 2027.
    (0i64..365 * 24 * 60).prop_map(|m| datetime!(2026-01-01 0:00 UTC) + time::Duration::minutes(m))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the clock, the act and the extensions granted, a due time is never
    /// before its start (it is after it), more extensions never end earlier, and none
    /// goes past the cap; the only failure is the year whose schedule is awaited.
    #[test]
    fn a_due_time_is_never_before_its_start(
        start in start_in_2026(),
        clock in 0usize..ClockName::ALL.len(),
        granted in 0usize..4,
    ) {
        let calendar = shipped();
        let rules = DeadlineRules::default();
        let rule = rules.clock(ClockName::ALL[clock]);
        match (rule.due_after(start, granted, &calendar), rule.due_after(start, granted + 1, &calendar), rule.cap(start, &calendar)) {
            (Ok(due), Ok(later), Ok(cap)) => {
                prop_assert!(due > start, "{:?} due {} before start {}", ClockName::ALL[clock], due, start);
                prop_assert!(later >= due);
                prop_assert!(cap >= later);
            }
            (a, b, c) => {
                for r in [a, b, c] {
                    if let Err(e) = r {
                        prop_assert!(matches!(e, CalendarError::YearAwaitingNotice { year: 2027, .. }), "{e}");
                    }
                }
            }
        }
    }

    /// Rolling over only ever moves a due time later, and a rolled-over due time ends a
    /// working day.
    #[test]
    fn a_rolled_over_due_time_ends_a_working_day(start in start_in_2026(), days in 1u32..60) {
        let calendar = shipped();
        let rolled = casebus_domain::ClockRule::new(days, casebus_domain::Unit::Days, "t", true);
        let fixed = casebus_domain::ClockRule::new(days, casebus_domain::Unit::Days, "t", false);
        let fixed_due = fixed.due(start, &calendar).expect("days without roll-over need no calendar");
        if let Ok(due) = rolled.due(start, &calendar) {
            prop_assert!(due >= fixed_due);
            let last_day = casebus_domain::legal_date(due - time::Duration::seconds(1));
            prop_assert_eq!(calendar.is_working_day(last_day), Ok(true));
        }
    }
}

#[test]
fn the_shipped_calendar_loads_and_is_the_files_under_deploy() {
    assert_eq!(Calendar::shipped(), shipped());
    assert_eq!(Calendar::shipped().years().count(), 2);
}
