//! Deadline rules: the legal clocks (amount, unit, legal basis, roll-over, extension
//! caps) and, from before legal clocks, the flat time a receiving agency has for each
//! kind of hand-off and the appeal period. Configuration, not code: parsed from TOML
//! text the caller reads from a file, with defaults from the law for anything left out.
//!
//! ```toml
//! [clocks.prosecution_review]
//! amount = 1
//! unit = "months"
//! basis = "CPL Art. 172"
//! roll_over = true
//! extensions = [{ amount = 15, unit = "days", basis = "CPL Art. 172: major or complex case" }]
//!
//! # Still accepted: the flat durations of the first rules files. Each also sets the
//! # clock it maps to (see `ClockName::legacy_key`), unless that clock is set too.
//! [handoff_due]
//! suspected_crime_referral = "3days"
//!
//! [periods]
//! appeal = "10days"
//! ```
//!
//! Errors name the file, the line and the field. `DeadlineRules::digest` is the SHA-256
//! of a canonical form of the rules and the calendar, so a service can record which
//! rules it counted with.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use casebus_proto::event::v1::HandoffKind;

use crate::calendar::Calendar;
use crate::clock::{ClockRule, Step, Unit};

/// Why a deadline rules file or a holiday calendar file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// A value is missing, malformed or out of range, or the TOML does not parse.
    #[error("{file}{}: {field}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        /// The file, as the caller named it.
        file: String,
        /// The 1-based line of the value, when known.
        line: Option<usize>,
        /// The field, e.g. `clocks.custody.unit` or `handoff_due.arrest_approval_request`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// An error at byte `offset` of `text`.
pub(crate) fn invalid_at(
    file: &str,
    text: &str,
    offset: usize,
    field: &str,
    reason: &str,
) -> RulesError {
    RulesError::Invalid {
        file: file.to_owned(),
        line: Some(line_of(text, offset)),
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A TOML error, with the text at its span as the field (the key or value toml points at).
pub(crate) fn parse_error(file: &str, text: &str, error: &toml::de::Error) -> RulesError {
    let span = error.span();
    let field = span
        .clone()
        .and_then(|s| text.get(s))
        .map(|s| s.lines().next().unwrap_or_default().trim().to_owned())
        .filter(|s| !s.is_empty() && s.chars().count() <= 80)
        .unwrap_or_else(|| "(file)".to_owned());
    RulesError::Invalid {
        file: file.to_owned(),
        line: span.map(|s| line_of(text, s.start)),
        field,
        reason: error.message().trim().to_owned(),
    }
}

/// The legal clocks casebus counts, by the name used in the rules file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ClockName {
    /// The receiving service's automatic receipt of any hand-off.
    Receipt,
    /// The police decide whether to file a referred case.
    FilingDecision,
    /// The receiver of a request for assistance gives its answer (the IP center its
    /// infringement assessment).
    AssistanceDecision,
    /// The procuratorate approves or denies an arrest.
    ArrestDecision,
    /// The procuratorate's review for prosecution.
    ProsecutionReview,
    /// The police complete a supplementary investigation.
    SupplementaryInvestigation,
    /// The court reviews a public prosecution and dockets it.
    CourtAcceptance,
    /// The notified agency confirms service of the judgment.
    JudgmentService,
    /// The police ask for arrest approval after detaining a suspect.
    ArrestRequest,
    /// Custody after an approved arrest.
    Custody,
    /// The appeal period after a criminal judgment.
    Appeal,
    /// The rights holder applies for detention after customs' notice.
    RightsHolderApplication,
    /// Customs investigates detained goods.
    CustomsInvestigation,
    /// Customs releases goods detained on the rights holder's application without a
    /// court's assistance notice.
    ReleaseOnApplication,
    /// Customs releases goods detained ex officio, not determined, without a court's
    /// assistance notice.
    ReleaseExOfficio,
    /// The referring organ may ask the police to reconsider a decision not to file (a
    /// window for the request, not a duty: no hand-off runs on it).
    ReconsiderationRequest,
    /// The police decide again on filing after a request for reconsideration.
    ReconsiderationDecision,
    /// The police explain to the procuratorate why they did not file.
    NonFilingExplanation,
    /// The police file the case once the procuratorate notified them to.
    FilingOnNotice,
    /// Customs takes a court's assistance notice.
    CourtAssistance,
}

impl ClockName {
    /// Every clock, in the order of the rules file and the digest.
    pub const ALL: [ClockName; 20] = [
        Self::Receipt,
        Self::FilingDecision,
        Self::AssistanceDecision,
        Self::ArrestDecision,
        Self::ProsecutionReview,
        Self::SupplementaryInvestigation,
        Self::CourtAcceptance,
        Self::JudgmentService,
        Self::ArrestRequest,
        Self::Custody,
        Self::Appeal,
        Self::RightsHolderApplication,
        Self::CustomsInvestigation,
        Self::ReleaseOnApplication,
        Self::ReleaseExOfficio,
        Self::ReconsiderationRequest,
        Self::ReconsiderationDecision,
        Self::NonFilingExplanation,
        Self::FilingOnNotice,
        Self::CourtAssistance,
    ];

    /// The name in the rules file (`[clocks.<key>]`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Receipt => "receipt",
            Self::FilingDecision => "filing_decision",
            Self::AssistanceDecision => "assistance_decision",
            Self::ArrestDecision => "arrest_decision",
            Self::ProsecutionReview => "prosecution_review",
            Self::SupplementaryInvestigation => "supplementary_investigation",
            Self::CourtAcceptance => "court_acceptance",
            Self::JudgmentService => "judgment_service",
            Self::ArrestRequest => "arrest_request",
            Self::Custody => "custody",
            Self::Appeal => "appeal",
            Self::RightsHolderApplication => "rights_holder_application",
            Self::CustomsInvestigation => "customs_investigation",
            Self::ReleaseOnApplication => "release_on_application",
            Self::ReleaseExOfficio => "release_ex_officio",
            Self::ReconsiderationRequest => "reconsideration_request",
            Self::ReconsiderationDecision => "reconsideration_decision",
            Self::NonFilingExplanation => "non_filing_explanation",
            Self::FilingOnNotice => "filing_on_notice",
            Self::CourtAssistance => "court_assistance",
        }
    }

    /// The clock named `key` in the rules file.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.key() == key)
    }

    /// The key of the first rules files that also sets this clock, if any.
    pub fn legacy_key(self) -> Option<&'static str> {
        Some(match self {
            Self::FilingDecision => "handoff_due.suspected_crime_referral",
            Self::AssistanceDecision => "handoff_due.assistance_request",
            Self::ArrestDecision => "handoff_due.arrest_approval_request",
            Self::ProsecutionReview => "handoff_due.prosecution_transfer",
            Self::SupplementaryInvestigation => "handoff_due.supplementary_investigation",
            Self::CourtAcceptance => "handoff_due.public_prosecution",
            Self::JudgmentService => "handoff_due.judgment_notice",
            Self::Appeal => "periods.appeal",
            _ => return None,
        })
    }

    /// The clock that a hand-off of `kind` runs until its legal answer; `None` for the
    /// unspecified kind.
    pub fn decision_of(kind: HandoffKind) -> Option<Self> {
        Some(match kind {
            HandoffKind::SuspectedCrimeReferral => Self::FilingDecision,
            HandoffKind::AssistanceRequest => Self::AssistanceDecision,
            HandoffKind::ArrestApprovalRequest => Self::ArrestDecision,
            HandoffKind::ProsecutionTransfer => Self::ProsecutionReview,
            HandoffKind::SupplementaryInvestigation => Self::SupplementaryInvestigation,
            HandoffKind::PublicProsecution => Self::CourtAcceptance,
            HandoffKind::JudgmentNotice => Self::JudgmentService,
            HandoffKind::ReconsiderationRequest => Self::ReconsiderationDecision,
            HandoffKind::NonFilingExplanationRequest => Self::NonFilingExplanation,
            HandoffKind::FilingNotice => Self::FilingOnNotice,
            HandoffKind::CourtAssistanceNotice => Self::CourtAssistance,
            HandoffKind::Unspecified => return None,
        })
    }
}

/// The defaults, from the law; `docs/DEADLINES.md` lists them with their sources.
fn default_clocks() -> BTreeMap<ClockName, ClockRule> {
    use ClockName::*;
    use Unit::*;
    let custody_note = "no roll-over: a period of custody ends when it ends (CPL Art. 105)";
    BTreeMap::from([
        (
            Receipt,
            ClockRule::new(
                24,
                Hours,
                "State Council Order 310 (rev. Order 730) Art. 8: the receiving organ signs the receipt of a transfer; 24 hours is casebus's service level for the automatic receipt",
                false,
            ),
        ),
        (
            FilingDecision,
            ClockRule::new(
                3,
                Days,
                "State Council Order 310 (rev. Order 730) Art. 8: the police decide within 3 days whether to file a transferred case",
                true,
            )
            .extended_by(
                7,
                Days,
                "SPP/MPS Provisions on Economic Crime Cases (2017) Art. 16: at the latest within 10 days",
            )
            .extended_by(
                20,
                Days,
                "SPP/MPS Provisions on Economic Crime Cases (2017) Art. 16: major, difficult or complex case, approval of a county-level police chief (30 days in all)",
            ),
        ),
        (
            AssistanceDecision,
            ClockRule::new(
                15,
                Days,
                "no statutory period: casebus default for an IP center assessment or other assistance",
                true,
            ),
        ),
        (
            ArrestDecision,
            ClockRule::new(
                7,
                Days,
                &*format!("CPL Art. 91: decide within 7 days of the request for a detained suspect; {custody_note}"),
                false,
            ),
        ),
        (
            ProsecutionReview,
            ClockRule::new(
                1,
                Months,
                "CPL Art. 172: decide within 1 month of the transfer",
                true,
            )
            .extended_by(15, Days, "CPL Art. 172: major or complex case, +15 days"),
        ),
        (
            SupplementaryInvestigation,
            ClockRule::new(
                1,
                Months,
                "CPL Art. 175: a supplementary investigation is completed within 1 month",
                true,
            ),
        ),
        (
            CourtAcceptance,
            ClockRule::new(
                7,
                Days,
                "SPC Interpretation of the CPL (2021) Arts. 218-219 (review of a public prosecution before docketing); 7 days is casebus's default",
                true,
            ),
        ),
        (
            JudgmentService,
            ClockRule::new(
                10,
                Days,
                "no statutory period for the receiver: casebus default for confirming service of a judgment notice",
                true,
            ),
        ),
        (
            ArrestRequest,
            ClockRule::new(
                3,
                Days,
                &*format!("CPL Art. 91: ask for arrest approval within 3 days of detention; {custody_note}"),
                false,
            )
            .extended_by(4, Days, "CPL Art. 91: special circumstances, 1 to 4 days more (7 days in all)")
            .extended_by(
                23,
                Days,
                "CPL Art. 91: roving, repeated or gang crime, up to 30 days in all",
            ),
        ),
        (
            Custody,
            ClockRule::new(
                2,
                Months,
                &*format!("CPL Art. 156: custody during investigation after arrest, 2 months; {custody_note}"),
                false,
            )
            .extended_by(1, Months, "CPL Art. 156: complex case, approval of the procuratorate at the next higher level, +1 month")
            .extended_by(2, Months, "CPL Art. 158: the cases listed there, approval of the provincial procuratorate, +2 months")
            .extended_by(2, Months, "CPL Art. 159: possible sentence of 10 years or more, approval of the provincial procuratorate, +2 months"),
        ),
        (
            Appeal,
            ClockRule::new(
                10,
                Days,
                "CPL Art. 230: appeal or protest against a criminal judgment within 10 days of service",
                true,
            ),
        ),
        (
            RightsHolderApplication,
            ClockRule::new(
                3,
                WorkingDays,
                "Regulations on Customs Protection of IP Rights Art. 16: the rights holder applies within 3 working days of the notice",
                true,
            ),
        ),
        (
            CustomsInvestigation,
            ClockRule::new(
                30,
                WorkingDays,
                "Implementing Measures of the Regulations on Customs Protection of IP Rights Art. 25: customs investigates within 30 working days of detention",
                true,
            ),
        ),
        (
            ReleaseOnApplication,
            ClockRule::new(
                20,
                WorkingDays,
                "Regulations on Customs Protection of IP Rights Art. 24(1): release 20 working days after detention on application unless a court assistance notice arrives",
                true,
            ),
        ),
        (
            ReleaseExOfficio,
            ClockRule::new(
                50,
                WorkingDays,
                "Regulations on Customs Protection of IP Rights Art. 24(2): release 50 working days after ex officio detention, not determined, unless a court assistance notice arrives",
                true,
            ),
        ),
        (
            ReconsiderationRequest,
            ClockRule::new(
                3,
                Days,
                "State Council Order 310 (rev. Order 730) Art. 9: the referring organ may ask for reconsideration within 3 days of the notice not to file",
                true,
            ),
        ),
        (
            ReconsiderationDecision,
            ClockRule::new(
                3,
                Days,
                "State Council Order 310 (rev. Order 730) Art. 9: the police decide to file or not within 3 days of the request for reconsideration",
                true,
            ),
        ),
        (
            NonFilingExplanation,
            ClockRule::new(
                7,
                Days,
                "CPL Art. 113; Provisions on Several Issues in the Implementation of the CPL (2012) Art. 18: the police answer the procuratorate's request to explain not filing within 7 days",
                true,
            ),
        ),
        (
            FilingOnNotice,
            ClockRule::new(
                15,
                Days,
                "CPL Art. 113 (the police shall file once notified); Provisions on Several Issues in the Implementation of the CPL (2012) Art. 18: decide to file within 15 days of the notice",
                true,
            ),
        ),
        (
            CourtAssistance,
            ClockRule::new(
                1,
                Days,
                "Regulations on Customs Protection of IP Rights Art. 24 (customs assists on the court's notice); no period for taking it is set: 1 day is casebus's default",
                true,
            ),
        ),
    ])
}

/// How long each deadline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineRules {
    suspected_crime_referral: Duration,
    assistance_request: Duration,
    arrest_approval_request: Duration,
    prosecution_transfer: Duration,
    supplementary_investigation: Duration,
    public_prosecution: Duration,
    judgment_notice: Duration,
    appeal: Duration,
    /// Every clock of [`ClockName::ALL`], always complete.
    clocks: BTreeMap<ClockName, ClockRule>,
}

const DAY: u64 = 24 * 60 * 60;

impl Default for DeadlineRules {
    /// Defaults after the Criminal Procedure Law and the rules on transfer of suspected
    /// crimes by administrative organs: police decide on a referral within 3 days; the
    /// procuratorate decides on arrest approval within 7 days and reviews for
    /// prosecution within 1 month (30 days); supplementary investigation takes up to
    /// 1 month; an appeal is possible within 10 days of judgment. The legal clocks'
    /// defaults are those of `docs/DEADLINES.md`.
    fn default() -> Self {
        Self {
            suspected_crime_referral: Duration::from_secs(3 * DAY),
            assistance_request: Duration::from_secs(15 * DAY),
            arrest_approval_request: Duration::from_secs(7 * DAY),
            prosecution_transfer: Duration::from_secs(30 * DAY),
            supplementary_investigation: Duration::from_secs(30 * DAY),
            public_prosecution: Duration::from_secs(7 * DAY),
            judgment_notice: Duration::from_secs(10 * DAY),
            appeal: Duration::from_secs(10 * DAY),
            clocks: default_clocks(),
        }
    }
}

type Sp<T> = toml::Spanned<T>;

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    handoff_due: HandoffDue,
    #[serde(default)]
    periods: Periods,
    #[serde(default)]
    clocks: BTreeMap<String, Sp<ClockFile>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HandoffDue {
    suspected_crime_referral: Option<Sp<String>>,
    assistance_request: Option<Sp<String>>,
    arrest_approval_request: Option<Sp<String>>,
    prosecution_transfer: Option<Sp<String>>,
    supplementary_investigation: Option<Sp<String>>,
    public_prosecution: Option<Sp<String>>,
    judgment_notice: Option<Sp<String>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Periods {
    appeal: Option<Sp<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockFile {
    amount: Option<Sp<i64>>,
    unit: Option<Sp<String>>,
    basis: Option<Sp<String>>,
    roll_over: Option<bool>,
    extensions: Option<Vec<Sp<StepFile>>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    amount: Sp<i64>,
    unit: Sp<String>,
    basis: Sp<String>,
}

/// The longest deadline accepted: one year.
const MAX_DEADLINE: Duration = Duration::from_secs(366 * DAY);

/// Reads one file, remembering its name and text for errors.
struct Reader<'a> {
    file: &'a str,
    text: &'a str,
}

impl Reader<'_> {
    fn at(&self, offset: usize, field: &str, reason: &str) -> RulesError {
        invalid_at(self.file, self.text, offset, field, reason)
    }

    fn duration(&self, key: &str, value: &Sp<String>) -> Result<Duration, RulesError> {
        let bad = |reason: String| {
            self.at(
                value.span().start,
                key,
                &format!("{:?}: {reason}", value.get_ref()),
            )
        };
        let parsed = humantime::parse_duration(value.get_ref()).map_err(|e| bad(e.to_string()))?;
        if parsed.is_zero() || parsed > MAX_DEADLINE {
            return Err(bad("must be more than zero and at most 366 days".into()));
        }
        Ok(parsed)
    }

    fn amount(&self, field: &str, value: &Sp<i64>, unit: Unit) -> Result<u32, RulesError> {
        let max = unit.max_amount();
        u32::try_from(*value.get_ref())
            .ok()
            .filter(|a| (1..=max).contains(a))
            .ok_or_else(|| {
                self.at(
                    value.span().start,
                    field,
                    &format!("must be 1 to {max} {}", unit.key()),
                )
            })
    }

    fn unit(&self, field: &str, value: &Sp<String>) -> Result<Unit, RulesError> {
        Unit::from_key(value.get_ref()).ok_or_else(|| {
            self.at(
                value.span().start,
                field,
                &format!(
                    "is {:?}; use hours, days, working_days or months",
                    value.get_ref()
                ),
            )
        })
    }

    fn basis(&self, field: &str, value: &Sp<String>) -> Result<String, RulesError> {
        let text = value.get_ref().trim();
        if text.is_empty() || text.chars().count() > 500 {
            return Err(self.at(
                value.span().start,
                field,
                "must name the law that sets the period (1-500 characters)",
            ));
        }
        Ok(text.to_owned())
    }

    fn clock(
        &self,
        name: ClockName,
        table: &Sp<ClockFile>,
        mut rule: ClockRule,
    ) -> Result<ClockRule, RulesError> {
        let key = name.key();
        let f = table.get_ref();
        if let Some(unit) = &f.unit {
            let unit = self.unit(&format!("clocks.{key}.unit"), unit)?;
            if unit != rule.unit && f.amount.is_none() {
                return Err(self.at(
                    table.span().start,
                    &format!("clocks.{key}.amount"),
                    "is required when the unit changes",
                ));
            }
            rule.unit = unit;
        }
        if let Some(amount) = &f.amount {
            rule.amount = self.amount(&format!("clocks.{key}.amount"), amount, rule.unit)?;
        }
        if let Some(basis) = &f.basis {
            rule.basis = self.basis(&format!("clocks.{key}.basis"), basis)?;
        }
        if let Some(roll_over) = f.roll_over {
            rule.roll_over = roll_over;
        }
        if let Some(steps) = &f.extensions {
            rule.extensions = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                let field = format!("clocks.{key}.extensions[{i}]");
                let s = step.get_ref();
                let unit = self.unit(&format!("{field}.unit"), &s.unit)?;
                rule.extensions.push(Step {
                    amount: self.amount(&format!("{field}.amount"), &s.amount, unit)?,
                    unit,
                    basis: self.basis(&format!("{field}.basis"), &s.basis)?,
                });
            }
        }
        // A day count cannot follow a count of hours: "24 hours + 3 days" has no
        // counting rule in the law, so such a rule is refused rather than guessed.
        if let Some(i) = rule
            .extensions
            .iter()
            .position(|s| s.unit.counts_days() != rule.unit.counts_days())
        {
            return Err(self.at(
                table.span().start,
                &format!("clocks.{key}.extensions[{i}].unit"),
                &format!(
                    "{} cannot extend a clock counted in {}; use hours with hours, and days, working days or months with each other",
                    rule.extensions[i].unit.key(),
                    rule.unit.key()
                ),
            ));
        }
        Ok(rule)
    }
}

/// The clock a flat legacy duration stands for: whole days count as days, whole hours
/// as hours, anything shorter as exact seconds; the basis and roll-over stay the
/// clock's, extensions stay when the unit family does.
fn legacy_clock(mut rule: ClockRule, duration: Duration) -> ClockRule {
    let secs = duration.as_secs().max(1);
    let (amount, unit) = if secs.is_multiple_of(DAY) {
        (secs / DAY, Unit::Days)
    } else if secs.is_multiple_of(3600) {
        (secs / 3600, Unit::Hours)
    } else {
        (secs, Unit::Seconds)
    };
    if unit.counts_days() != rule.unit.counts_days() {
        rule.extensions.clear();
    }
    rule.amount = u32::try_from(amount).unwrap_or(u32::MAX);
    rule.unit = unit;
    rule
}

impl DeadlineRules {
    /// Parses rules TOML; keys left out keep their defaults. Errors name the file as
    /// `deadline rules`; use [`DeadlineRules::parse_file`] to name the real file.
    ///
    /// # Errors
    /// As [`DeadlineRules::parse_file`].
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        Self::parse_file("deadline rules", text)
    }

    /// Parses rules TOML read from `file`; keys left out keep their defaults.
    ///
    /// # Errors
    /// [`RulesError::Invalid`] naming the file, line and field: bad TOML or an unknown
    /// key or clock; a duration that does not parse or is zero or longer than 366
    /// days; an amount out of range for its unit; an unknown unit; an empty basis; an
    /// extension counting days on a clock counting hours (or the reverse); a clock set
    /// both under `[clocks]` and by its legacy key.
    pub fn parse_file(file: &str, text: &str) -> Result<Self, RulesError> {
        let reader = Reader { file, text };
        let raw: RulesFile = toml::from_str(text).map_err(|e| parse_error(file, text, &e))?;
        let mut rules = Self::default();
        let h = &raw.handoff_due;
        let legacy: [(&str, &Option<Sp<String>>, &mut Duration); 8] = [
            (
                "handoff_due.suspected_crime_referral",
                &h.suspected_crime_referral,
                &mut rules.suspected_crime_referral,
            ),
            (
                "handoff_due.assistance_request",
                &h.assistance_request,
                &mut rules.assistance_request,
            ),
            (
                "handoff_due.arrest_approval_request",
                &h.arrest_approval_request,
                &mut rules.arrest_approval_request,
            ),
            (
                "handoff_due.prosecution_transfer",
                &h.prosecution_transfer,
                &mut rules.prosecution_transfer,
            ),
            (
                "handoff_due.supplementary_investigation",
                &h.supplementary_investigation,
                &mut rules.supplementary_investigation,
            ),
            (
                "handoff_due.public_prosecution",
                &h.public_prosecution,
                &mut rules.public_prosecution,
            ),
            (
                "handoff_due.judgment_notice",
                &h.judgment_notice,
                &mut rules.judgment_notice,
            ),
            ("periods.appeal", &raw.periods.appeal, &mut rules.appeal),
        ];
        let mut legacy_set = BTreeMap::new();
        for (key, value, slot) in legacy {
            if let Some(value) = value {
                *slot = reader.duration(key, value)?;
                legacy_set.insert(key, (*slot, value.span().start));
            }
        }
        for name in ClockName::ALL {
            if let Some((duration, _)) = name.legacy_key().and_then(|k| legacy_set.get(k)) {
                let rule = rules.clocks[&name].clone();
                rules.clocks.insert(name, legacy_clock(rule, *duration));
            }
        }
        for (key, table) in &raw.clocks {
            let Some(name) = ClockName::from_key(key) else {
                let known: Vec<_> = ClockName::ALL.iter().map(|c| c.key()).collect();
                return Err(reader.at(
                    table.span().start,
                    &format!("clocks.{key}"),
                    &format!("unknown clock; the clocks are {}", known.join(", ")),
                ));
            };
            if let Some(legacy) = name.legacy_key().filter(|k| legacy_set.contains_key(k)) {
                return Err(reader.at(
                    table.span().start,
                    &format!("clocks.{key}"),
                    &format!("is set by {legacy} too; keep one of them"),
                ));
            }
            let rule = reader.clock(name, table, rules.clocks[&name].clone())?;
            rules.clocks.insert(name, rule);
        }
        Ok(rules)
    }

    /// How long the receiver of a hand-off of `kind` has to decide, as a flat duration
    /// (the rules before legal clocks, still what `HandoffRequested.due_at` records);
    /// `None` for the unspecified kind and for the kinds added with the legal clocks,
    /// whose `due_at` is their decision clock's due time.
    pub fn handoff_due(&self, kind: HandoffKind) -> Option<Duration> {
        Some(match kind {
            HandoffKind::SuspectedCrimeReferral => self.suspected_crime_referral,
            HandoffKind::AssistanceRequest => self.assistance_request,
            HandoffKind::ArrestApprovalRequest => self.arrest_approval_request,
            HandoffKind::ProsecutionTransfer => self.prosecution_transfer,
            HandoffKind::SupplementaryInvestigation => self.supplementary_investigation,
            HandoffKind::PublicProsecution => self.public_prosecution,
            HandoffKind::JudgmentNotice => self.judgment_notice,
            HandoffKind::ReconsiderationRequest
            | HandoffKind::NonFilingExplanationRequest
            | HandoffKind::FilingNotice
            | HandoffKind::CourtAssistanceNotice
            | HandoffKind::Unspecified => return None,
        })
    }

    /// How long after a judgment an appeal may be filed (flat, as before legal clocks).
    pub fn appeal_period(&self) -> Duration {
        self.appeal
    }

    /// The rule of one legal clock.
    pub fn clock(&self, name: ClockName) -> &ClockRule {
        // Every constructor fills in all of ClockName::ALL.
        self.clocks
            .get(&name)
            .expect("the rules hold every clock of ClockName::ALL")
    }

    /// The canonical form of the rules the digest covers: every clock and every flat
    /// duration, resolved (defaults included), one line each in a fixed order.
    pub fn canonical(&self) -> String {
        let mut out = String::from("casebus-deadline-rules v1\n");
        for name in ClockName::ALL {
            out.push_str(&format!(
                "clock {} {}\n",
                name.key(),
                self.clock(name).canonical()
            ));
        }
        for kind in [
            HandoffKind::SuspectedCrimeReferral,
            HandoffKind::AssistanceRequest,
            HandoffKind::ArrestApprovalRequest,
            HandoffKind::ProsecutionTransfer,
            HandoffKind::SupplementaryInvestigation,
            HandoffKind::PublicProsecution,
            HandoffKind::JudgmentNotice,
        ] {
            let due = self.handoff_due(kind).unwrap_or_default();
            out.push_str(&format!(
                "handoff_due {} {}ms\n",
                kind.as_str_name(),
                due.as_millis()
            ));
        }
        out.push_str(&format!("appeal {}ms\n", self.appeal.as_millis()));
        out
    }

    /// `sha256:` and the hex SHA-256 of the canonical rules followed by the canonical
    /// calendar: equal for two services exactly when they count every clock alike,
    /// whatever the files' comments, order or spacing.
    pub fn digest(&self, calendar: &Calendar) -> String {
        let mut hash = Sha256::new();
        hash.update(self.canonical().as_bytes());
        hash.update(calendar.canonical().as_bytes());
        let bytes = hash.finalize();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_the_defaults() {
        assert_eq!(DeadlineRules::parse(""), Ok(DeadlineRules::default()));
        let rules = DeadlineRules::default();
        assert_eq!(
            rules.handoff_due(HandoffKind::SuspectedCrimeReferral),
            Some(Duration::from_secs(3 * DAY))
        );
        assert_eq!(rules.appeal_period(), Duration::from_secs(10 * DAY));
    }

    #[test]
    fn a_configured_value_overrides_only_its_default() {
        let rules = DeadlineRules::parse("[handoff_due]\narrest_approval_request = \"5days\"\n")
            .expect("valid");
        assert_eq!(
            rules.handoff_due(HandoffKind::ArrestApprovalRequest),
            Some(Duration::from_secs(5 * DAY))
        );
        assert_eq!(
            rules.handoff_due(HandoffKind::ProsecutionTransfer),
            Some(Duration::from_secs(30 * DAY))
        );
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused_naming_the_key() {
        let err = DeadlineRules::parse("[handoff_due]\narest = \"1d\"\n").expect_err("typo");
        assert!(err.to_string().contains("arest"), "{err}");
        let err = DeadlineRules::parse("[periods]\nappeal = \"soon\"\n").expect_err("bad");
        assert!(err.to_string().contains("periods.appeal"), "{err}");
        let err = DeadlineRules::parse("[periods]\nappeal = \"0s\"\n").expect_err("zero");
        assert!(err.to_string().contains("more than zero"), "{err}");
    }
}
