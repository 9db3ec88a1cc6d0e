//! Deadline rules: how long a receiving agency has to decide on each kind of hand-off,
//! and the appeal period after a judgment. Configuration, not code: parsed from TOML
//! text the caller reads from a file, with defaults for anything left out.
//!
//! ```toml
//! [handoff_due]
//! suspected_crime_referral = "3days"
//! arrest_approval_request = "7days"
//! prosecution_transfer = "30days"
//!
//! [periods]
//! appeal = "10days"
//! ```

use std::time::Duration;

use casebus_proto::event::v1::HandoffKind;

/// Why deadline rules text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The text is not TOML of the expected shape (unknown keys are refused).
    #[error("deadline rules: {0}")]
    Parse(String),
    /// A duration could not be parsed or is out of range.
    #[error("deadline rules: {key} = {value:?}: {reason}")]
    BadDuration {
        /// The key, e.g. `handoff_due.arrest_approval_request`.
        key: String,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
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
}

const DAY: u64 = 24 * 60 * 60;

impl Default for DeadlineRules {
    /// Defaults after the Criminal Procedure Law and the rules on transfer of suspected
    /// crimes by administrative organs: police decide on a referral within 3 days; the
    /// procuratorate decides on arrest approval within 7 days and reviews for
    /// prosecution within 1 month (30 days); supplementary investigation takes up to
    /// 1 month; an appeal is possible within 10 days of judgment.
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
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    handoff_due: HandoffDue,
    #[serde(default)]
    periods: Periods,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HandoffDue {
    suspected_crime_referral: Option<String>,
    assistance_request: Option<String>,
    arrest_approval_request: Option<String>,
    prosecution_transfer: Option<String>,
    supplementary_investigation: Option<String>,
    public_prosecution: Option<String>,
    judgment_notice: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Periods {
    appeal: Option<String>,
}

/// The longest deadline accepted: one year.
const MAX_DEADLINE: Duration = Duration::from_secs(366 * DAY);

fn set(slot: &mut Duration, key: &str, value: Option<String>) -> Result<(), RulesError> {
    let Some(value) = value else { return Ok(()) };
    let bad = |reason: String| RulesError::BadDuration {
        key: key.to_owned(),
        value: value.clone(),
        reason,
    };
    let parsed = humantime::parse_duration(&value).map_err(|e| bad(e.to_string()))?;
    if parsed.is_zero() || parsed > MAX_DEADLINE {
        return Err(bad("must be more than zero and at most 366 days".into()));
    }
    *slot = parsed;
    Ok(())
}

impl DeadlineRules {
    /// Parses rules TOML; keys left out keep their defaults.
    ///
    /// # Errors
    /// [`RulesError::Parse`] for bad TOML or unknown keys; [`RulesError::BadDuration`]
    /// for a duration that does not parse or is zero or longer than 366 days.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let file: RulesFile =
            toml::from_str(text).map_err(|e| RulesError::Parse(e.message().to_owned()))?;
        let mut rules = Self::default();
        let h = file.handoff_due;
        set(
            &mut rules.suspected_crime_referral,
            "handoff_due.suspected_crime_referral",
            h.suspected_crime_referral,
        )?;
        set(
            &mut rules.assistance_request,
            "handoff_due.assistance_request",
            h.assistance_request,
        )?;
        set(
            &mut rules.arrest_approval_request,
            "handoff_due.arrest_approval_request",
            h.arrest_approval_request,
        )?;
        set(
            &mut rules.prosecution_transfer,
            "handoff_due.prosecution_transfer",
            h.prosecution_transfer,
        )?;
        set(
            &mut rules.supplementary_investigation,
            "handoff_due.supplementary_investigation",
            h.supplementary_investigation,
        )?;
        set(
            &mut rules.public_prosecution,
            "handoff_due.public_prosecution",
            h.public_prosecution,
        )?;
        set(
            &mut rules.judgment_notice,
            "handoff_due.judgment_notice",
            h.judgment_notice,
        )?;
        set(&mut rules.appeal, "periods.appeal", file.periods.appeal)?;
        Ok(rules)
    }

    /// How long the receiver of a hand-off of `kind` has to decide; `None` for the
    /// unspecified kind.
    pub fn handoff_due(&self, kind: HandoffKind) -> Option<Duration> {
        Some(match kind {
            HandoffKind::SuspectedCrimeReferral => self.suspected_crime_referral,
            HandoffKind::AssistanceRequest => self.assistance_request,
            HandoffKind::ArrestApprovalRequest => self.arrest_approval_request,
            HandoffKind::ProsecutionTransfer => self.prosecution_transfer,
            HandoffKind::SupplementaryInvestigation => self.supplementary_investigation,
            HandoffKind::PublicProsecution => self.public_prosecution,
            HandoffKind::JudgmentNotice => self.judgment_notice,
            HandoffKind::Unspecified => return None,
        })
    }

    /// How long after a judgment an appeal may be filed.
    pub fn appeal_period(&self) -> Duration {
        self.appeal
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
