//! `decide`: checks one command against the case state and returns the event to record
//! or the rejection that says why. Who may do what, in which state, lives here and only
//! here.
//!
//! Checks run in a fixed order so the answer is predictable: the command's own fields
//! (INVALID_ARGUMENT), the case's existence for the acting agency (NOT_FOUND also when
//! the agency takes no part in it; ALREADY_EXISTS for opening a taken id), the acting
//! agency's permission (PERMISSION_DENIED), then the state rules (FAILED_PRECONDITION).

use time::OffsetDateTime;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    Agency, CaseType, DeterminationOutcome, HandoffKind, IpRight, IpRightKind, Party, PartyRole,
    Procedure, RecordedDue, Visibility, VisibilityKind,
};
use casebus_proto::{OfficeId, agency_name, timestamp_from, validate_local_id};

use crate::command::{Command, Context, Decision, Rejection};
use crate::rules::ClockName;
use crate::state::{CaseState, ClockAnswerKind, HandoffClockKind, HandoffClocks, HandoffStatus};

/// Returns for supplementary investigation allowed per case (CPL Art. 175: "以二次为限").
const MAX_SUPPLEMENTARY_RETURNS: usize = 2;

/// How far in the future `occurred_at` may lie, for clock skew between offices.
const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);
/// The earliest `occurred_at` accepted: no case on this bus predates the year 2000.
const EARLIEST: OffsetDateTime = time::macros::datetime!(2000-01-01 0:00 UTC);
/// Longest short text (titles, numbers, names).
const SHORT: usize = 300;
/// Longest long text (summaries, reasons, notes, opinions).
const LONG: usize = 20_000;
/// Longest legal basis of a legal hold (a citation, not a statement of facts).
const LEGAL_BASIS: usize = 2_000;
/// Most repeated entries in one list (rights, parties, evidence ids, agencies).
const MAX_ITEMS: usize = 100;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Rejection {
    Rejection::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn precondition(rule: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection::Precondition {
        rule,
        detail: detail.into(),
    }
}

fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), Rejection> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "is required"));
    }
    let len = value.chars().count();
    if len > max {
        return Err(invalid(
            field,
            format!("is {len} characters long; at most {max} are allowed"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

fn local_id(field: &str, value: &str) -> Result<(), Rejection> {
    validate_local_id("id", value).map_err(|e| invalid(field, e.to_string()))
}

fn items<T>(field: &str, list: &[T]) -> Result<(), Rejection> {
    if list.len() > MAX_ITEMS {
        return Err(invalid(
            field,
            format!(
                "has {} entries; at most {MAX_ITEMS} are allowed",
                list.len()
            ),
        ));
    }
    Ok(())
}

/// A `recorded_dues` field, which only the recording service fills.
fn counted_by_service(field: &str, dues: &[RecordedDue]) -> Result<(), Rejection> {
    if dues.is_empty() {
        Ok(())
    } else {
        Err(invalid(
            field,
            "is computed from the deadline rules by the recording service; leave it unset",
        ))
    }
}

fn known_agency(field: &str, raw: i32) -> Result<Agency, Rejection> {
    match Agency::try_from(raw) {
        Ok(Agency::Unspecified) => Err(invalid(field, "must name an agency")),
        Ok(agency) => Ok(agency),
        Err(_) => Err(invalid(field, format!("unknown agency value {raw}"))),
    }
}

fn validate_visibility(v: &Visibility) -> Result<Visibility, Rejection> {
    let kind = VisibilityKind::try_from(v.kind).map_err(|_| {
        invalid(
            "visibility.kind",
            format!("unknown visibility kind {}", v.kind),
        )
    })?;
    items("visibility.agencies", &v.agencies)?;
    for (i, a) in v.agencies.iter().enumerate() {
        known_agency(&format!("visibility.agencies[{i}]"), *a)?;
    }
    match kind {
        VisibilityKind::ListedAgencies if v.agencies.is_empty() => Err(invalid(
            "visibility.agencies",
            "LISTED_AGENCIES needs at least one agency",
        )),
        VisibilityKind::ListedAgencies => Ok(v.clone()),
        _ if !v.agencies.is_empty() => Err(invalid(
            "visibility.agencies",
            "may only be set with LISTED_AGENCIES",
        )),
        VisibilityKind::Unspecified => Ok(Visibility {
            kind: VisibilityKind::Participants as i32,
            agencies: Vec::new(),
        }),
        _ => Ok(v.clone()),
    }
}

fn validate_party(field: &str, party: &Party) -> Result<(), Rejection> {
    local_id(&format!("{field}.party_id"), &party.party_id)?;
    match PartyRole::try_from(party.role) {
        Ok(PartyRole::Unspecified) => return Err(invalid(format!("{field}.role"), "is required")),
        Err(_) => {
            return Err(invalid(
                format!("{field}.role"),
                format!("unknown role {}", party.role),
            ));
        }
        Ok(_) => {}
    }
    text(&format!("{field}.name"), &party.name, SHORT, true)?;
    text(
        &format!("{field}.identifier"),
        &party.identifier,
        SHORT,
        false,
    )?;
    text(
        &format!("{field}.description"),
        &party.description,
        LONG,
        false,
    )
}

fn validate_right(field: &str, right: &IpRight) -> Result<(), Rejection> {
    match IpRightKind::try_from(right.kind) {
        Ok(IpRightKind::Unspecified) => {
            return Err(invalid(format!("{field}.kind"), "is required"));
        }
        Err(_) => {
            return Err(invalid(
                format!("{field}.kind"),
                format!("unknown kind {}", right.kind),
            ));
        }
        Ok(_) => {}
    }
    text(
        &format!("{field}.registration_number"),
        &right.registration_number,
        SHORT,
        false,
    )?;
    text(&format!("{field}.holder"), &right.holder, SHORT, false)?;
    text(&format!("{field}.title"), &right.title, SHORT, false)
}

/// The agency that alone may record `kind`, or `None` for the kinds common to all.
fn owner(kind: &Kind) -> Option<Agency> {
    Some(match kind {
        Kind::GoodsDetained(_)
        | Kind::DetentionReleased(_)
        | Kind::RightsHolderNotified(_)
        | Kind::InfringementDetermined(_)
        | Kind::GoodsConfiscated(_)
        | Kind::RightsHolderApplied(_) => Agency::Customs,
        Kind::InfringementAssessed(_)
        | Kind::MediationConcluded(_)
        | Kind::PreExaminationRequested(_)
        | Kind::PreExaminationCompleted(_) => Agency::IpCenter,
        Kind::InvestigationFiled(_)
        | Kind::InvestigationDeclined(_)
        | Kind::NonFilingExplained(_)
        | Kind::SuspectDetained(_)
        | Kind::InvestigationConcluded(_) => Agency::PublicSecurity,
        Kind::ArrestApproved(_)
        | Kind::ArrestDenied(_)
        | Kind::IndictmentFiled(_)
        | Kind::NonProsecutionDecided(_) => Agency::Procuratorate,
        Kind::CaseDocketed(_)
        | Kind::PreliminaryInjunctionIssued(_)
        | Kind::HearingScheduled(_)
        | Kind::HearingHeld(_)
        | Kind::JudgmentIssued(_)
        | Kind::AppealFiled(_)
        | Kind::JudgmentEffective(_) => Agency::Court,
        _ => return None,
    })
}

/// Which agencies may send a hand-off of `kind`, and to which.
fn handoff_route(kind: HandoffKind) -> (&'static [Agency], &'static [Agency]) {
    use Agency::*;
    const ALL: &[Agency] = &[Court, Procuratorate, PublicSecurity, Customs, IpCenter];
    match kind {
        HandoffKind::SuspectedCrimeReferral => (&[Customs, IpCenter, Court], &[PublicSecurity]),
        HandoffKind::AssistanceRequest => (ALL, ALL),
        HandoffKind::ArrestApprovalRequest | HandoffKind::ProsecutionTransfer => {
            (&[PublicSecurity], &[Procuratorate])
        }
        HandoffKind::SupplementaryInvestigation => (&[Procuratorate], &[PublicSecurity]),
        HandoffKind::PublicProsecution => (&[Procuratorate], &[Court]),
        HandoffKind::JudgmentNotice => (&[Court], ALL),
        // Whoever may refer may ask for reconsideration; the rules check that this
        // agency referred the case the police declined.
        HandoffKind::ReconsiderationRequest => (&[Customs, IpCenter, Court], &[PublicSecurity]),
        HandoffKind::NonFilingExplanationRequest | HandoffKind::FilingNotice => {
            (&[Procuratorate], &[PublicSecurity])
        }
        HandoffKind::CourtAssistanceNotice => (&[Court], &[Customs]),
        HandoffKind::Unspecified => (&[], &[]),
    }
}

fn action(kind: &Kind) -> String {
    format!("record {}", casebus_proto::payload_type_name(kind))
}

fn fmt_time(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Decides `cmd` against `state`: the event to record, or why not.
///
/// # Errors
/// A [`Rejection`] naming the invalid field, the missing case, the agency that may not
/// act, or the rule that failed. A rejected command records nothing.
pub fn decide(state: &CaseState, cmd: &Command, ctx: &Context<'_>) -> Result<Decision, Rejection> {
    let agency = cmd.agency();
    if !ctx.offices.is_registered(&cmd.office) {
        return Err(Rejection::UnknownOffice {
            office: cmd.office.to_string(),
        });
    }
    text("actor", &cmd.actor, 128, true)?;
    if cmd.occurred_at > ctx.now + MAX_CLOCK_SKEW {
        return Err(invalid(
            "occurred_at",
            format!("{} lies in the future", fmt_time(cmd.occurred_at)),
        ));
    }
    if cmd.occurred_at < EARLIEST {
        return Err(invalid(
            "occurred_at",
            format!("{} lies before 2000-01-01", fmt_time(cmd.occurred_at)),
        ));
    }
    let visibility = match &cmd.visibility {
        Some(v) => validate_visibility(v)?,
        None => Visibility {
            kind: VisibilityKind::Participants as i32,
            agencies: Vec::new(),
        },
    };
    let mut payload = cmd.payload.clone();
    validate_fields(&mut payload, ctx)?;

    let case = cmd.case_id.as_str();
    if let Kind::CaseOpened(_) = payload {
        if state.exists() || state.version > 0 {
            return Err(Rejection::AlreadyExists {
                case_id: case.to_owned(),
                what: format!("case {case}"),
            });
        }
        return Ok(Decision {
            payload,
            visibility,
        });
    }
    // An agency that takes no part in the case (no track, no hand-off addressed to it)
    // must not learn that it exists: every command of it gets exactly the answer a case
    // that does not exist gets, before any rule could name a track, an office or an id.
    if !state.exists() || !state.involves(agency) {
        return Err(Rejection::CaseNotFound {
            case_id: case.to_owned(),
        });
    }
    if let Some(owner) = owner(&payload)
        && owner != agency
    {
        return Err(Rejection::NotPermitted {
            agency: agency_name(agency),
            action: action(&payload),
            reason: format!("only {} records this", agency_name(owner)),
        });
    }
    check_state(state, cmd, &mut payload, ctx)?;
    Ok(Decision {
        payload,
        visibility,
    })
}

/// Field checks that need no state. May complete the payload (none do yet).
fn validate_fields(payload: &mut Kind, _ctx: &Context<'_>) -> Result<(), Rejection> {
    match payload {
        Kind::CaseOpened(p) => {
            match CaseType::try_from(p.case_type) {
                Ok(CaseType::Unspecified) => {
                    return Err(invalid("case_opened.case_type", "is required"));
                }
                Err(_) => {
                    return Err(invalid(
                        "case_opened.case_type",
                        format!("unknown case type {}", p.case_type),
                    ));
                }
                Ok(_) => {}
            }
            text("case_opened.title", &p.title, SHORT, true)?;
            text("case_opened.summary", &p.summary, LONG, false)?;
            text(
                "case_opened.local_case_number",
                &p.local_case_number,
                64,
                false,
            )?;
            items("case_opened.rights", &p.rights)?;
            items("case_opened.parties", &p.parties)?;
            for (i, r) in p.rights.iter().enumerate() {
                validate_right(&format!("case_opened.rights[{i}]"), r)?;
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, party) in p.parties.iter().enumerate() {
                validate_party(&format!("case_opened.parties[{i}]"), party)?;
                if !seen.insert(&party.party_id) {
                    return Err(invalid(
                        format!("case_opened.parties[{i}].party_id"),
                        format!("{} is listed twice", party.party_id),
                    ));
                }
            }
        }
        Kind::PartyAdded(p) => match &p.party {
            Some(party) => validate_party("party_added.party", party)?,
            None => return Err(invalid("party_added.party", "is required")),
        },
        Kind::EvidenceRecorded(p) => {
            local_id("evidence_recorded.evidence_id", &p.evidence_id)?;
            text("evidence_recorded.description", &p.description, LONG, true)?;
            if p.content_sha256.len() != 32 {
                return Err(invalid(
                    "evidence_recorded.content_sha256",
                    format!(
                        "must be 32 bytes (SHA-256), found {}",
                        p.content_sha256.len()
                    ),
                ));
            }
            text("evidence_recorded.location", &p.location, 2048, true)?;
            text("evidence_recorded.media_type", &p.media_type, 128, false)?;
        }
        Kind::NoteAdded(p) => text("note_added.text", &p.text, LONG, true)?,
        Kind::ReferenceLinked(p) => {
            known_agency("reference_linked.agency", p.agency)?;
            text(
                "reference_linked.local_case_number",
                &p.local_case_number,
                64,
                true,
            )?;
        }
        Kind::HandoffRequested(p) => {
            local_id("handoff_requested.handoff_id", &p.handoff_id)?;
            match HandoffKind::try_from(p.kind) {
                Ok(HandoffKind::Unspecified) => {
                    return Err(invalid("handoff_requested.kind", "is required"));
                }
                Err(_) => {
                    return Err(invalid(
                        "handoff_requested.kind",
                        format!("unknown hand-off kind {}", p.kind),
                    ));
                }
                Ok(_) => {}
            }
            known_agency("handoff_requested.to_agency", p.to_agency)?;
            text("handoff_requested.reason", &p.reason, LONG, true)?;
            if p.due_at.is_some() {
                return Err(invalid(
                    "handoff_requested.due_at",
                    "is computed from the deadline rules; leave it unset",
                ));
            }
            if !p.recorded_dues.is_empty() {
                return Err(invalid(
                    "handoff_requested.recorded_dues",
                    "is computed from the deadline rules by the recording service; leave it unset",
                ));
            }
            items("handoff_requested.evidence_ids", &p.evidence_ids)?;
            for (i, e) in p.evidence_ids.iter().enumerate() {
                local_id(&format!("handoff_requested.evidence_ids[{i}]"), e)?;
            }
            if !p.to_office_id.is_empty() {
                OfficeId::new(&p.to_office_id)
                    .map_err(|e| invalid("handoff_requested.to_office_id", e.to_string()))?;
            }
        }
        Kind::HandoffAcknowledged(p) => local_id("handoff_acknowledged.handoff_id", &p.handoff_id)?,
        Kind::HandoffAccepted(p) => {
            local_id("handoff_accepted.handoff_id", &p.handoff_id)?;
            text(
                "handoff_accepted.local_case_number",
                &p.local_case_number,
                64,
                false,
            )?;
        }
        Kind::HandoffDeclined(p) => {
            local_id("handoff_declined.handoff_id", &p.handoff_id)?;
            text("handoff_declined.reason", &p.reason, LONG, true)?;
        }
        Kind::TrackClosed(p) => text("track_closed.reason", &p.reason, LONG, true)?,
        Kind::VisibilityChanged(p) => {
            if p.target_version == 0 {
                return Err(invalid(
                    "visibility_changed.target_version",
                    "must be 1 or more",
                ));
            }
            match &p.visibility {
                Some(v) => {
                    validate_visibility(v)?;
                }
                None => return Err(invalid("visibility_changed.visibility", "is required")),
            }
            text("visibility_changed.reason", &p.reason, LONG, true)?;
            if !p.wrapped_keys.is_empty() {
                return Err(invalid(
                    "visibility_changed.wrapped_keys",
                    "is set by the recording service when the change widens a sealed event; leave it empty",
                ));
            }
        }
        Kind::ClockExtended(p) => {
            if p.subject_id.is_empty() {
                local_id("clock_extended.handoff_id", &p.handoff_id)?;
            } else {
                local_id("clock_extended.subject_id", &p.subject_id)?;
                if !p.handoff_id.is_empty() {
                    return Err(invalid(
                        "clock_extended.handoff_id",
                        "names a hand-off while subject_id names a suspect; a clock runs on one of them, leave the other empty",
                    ));
                }
            }
            clock_key("clock_extended.clock", &p.clock)?;
            text("clock_extended.basis", &p.basis, LONG, true)?;
            if p.approving_office_id.is_empty() {
                return Err(invalid("clock_extended.approving_office_id", "is required"));
            }
            OfficeId::new(&p.approving_office_id)
                .map_err(|e| invalid("clock_extended.approving_office_id", e.to_string()))?;
            if let Some(t) = &p.new_due_at
                && casebus_proto::datetime_from(t).is_none()
            {
                return Err(invalid("clock_extended.new_due_at", "is not a valid time"));
            }
        }
        Kind::ClockSuspended(p) => {
            local_id("clock_suspended.handoff_id", &p.handoff_id)?;
            clock_key("clock_suspended.clock", &p.clock)?;
            text("clock_suspended.reason", &p.reason, LONG, true)?;
        }
        Kind::ClockResumed(p) => {
            local_id("clock_resumed.handoff_id", &p.handoff_id)?;
            clock_key("clock_resumed.clock", &p.clock)?;
            text("clock_resumed.reason", &p.reason, LONG, true)?;
        }
        Kind::LegalHoldPlaced(p) => {
            local_id("legal_hold_placed.hold_id", &p.hold_id)?;
            text(
                "legal_hold_placed.legal_basis",
                &p.legal_basis,
                LEGAL_BASIS,
                true,
            )?;
            text("legal_hold_placed.reason", &p.reason, LONG, false)?;
        }
        Kind::LegalHoldLifted(p) => {
            local_id("legal_hold_lifted.hold_id", &p.hold_id)?;
            text("legal_hold_lifted.reason", &p.reason, LONG, true)?;
        }
        Kind::GoodsDetained(p) => {
            local_id("goods_detained.detention_id", &p.detention_id)?;
            counted_by_service("goods_detained.recorded_dues", &p.recorded_dues)?;
            text("goods_detained.description", &p.description, LONG, true)?;
            text("goods_detained.quantity", &p.quantity, SHORT, false)?;
            text("goods_detained.port", &p.port, SHORT, false)?;
            text(
                "goods_detained.declaration_number",
                &p.declaration_number,
                64,
                false,
            )?;
        }
        Kind::DetentionReleased(p) => {
            local_id("detention_released.detention_id", &p.detention_id)?;
            text("detention_released.reason", &p.reason, LONG, true)?;
        }
        Kind::RightsHolderNotified(p) => {
            local_id("rights_holder_notified.detention_id", &p.detention_id)?;
            local_id(
                "rights_holder_notified.rights_holder_party_id",
                &p.rights_holder_party_id,
            )?;
            counted_by_service("rights_holder_notified.recorded_dues", &p.recorded_dues)?;
        }
        Kind::RightsHolderApplied(p) => {
            local_id("rights_holder_applied.detention_id", &p.detention_id)?;
            local_id(
                "rights_holder_applied.rights_holder_party_id",
                &p.rights_holder_party_id,
            )?;
            counted_by_service("rights_holder_applied.recorded_dues", &p.recorded_dues)?;
        }
        Kind::InfringementDetermined(p) => {
            local_id("infringement_determined.detention_id", &p.detention_id)?;
            text("infringement_determined.basis", &p.basis, LONG, true)?;
            let outcome = DeterminationOutcome::try_from(p.outcome).map_err(|_| {
                invalid(
                    "infringement_determined.outcome",
                    format!("unknown outcome {}", p.outcome),
                )
            })?;
            match outcome {
                // Recorded events always name their outcome.
                DeterminationOutcome::Unspecified => {
                    p.set_outcome(crate::state::outcome_of(p));
                }
                DeterminationOutcome::Infringing => p.infringing = true,
                _ if p.infringing => {
                    return Err(invalid(
                        "infringement_determined.infringing",
                        format!(
                            "is true while the outcome is {}; leave it unset or name INFRINGING",
                            outcome.as_str_name()
                        ),
                    ));
                }
                _ => {}
            }
        }
        Kind::GoodsConfiscated(p) => {
            local_id("goods_confiscated.detention_id", &p.detention_id)?;
            text("goods_confiscated.disposal", &p.disposal, LONG, false)?;
        }
        Kind::InfringementAssessed(p) => {
            local_id("infringement_assessed.assessment_id", &p.assessment_id)?;
            text("infringement_assessed.opinion", &p.opinion, LONG, true)?;
            if !p.handoff_id.is_empty() {
                local_id("infringement_assessed.handoff_id", &p.handoff_id)?;
            }
        }
        Kind::MediationConcluded(p) => text("mediation_concluded.terms", &p.terms, LONG, false)?,
        Kind::PreExaminationRequested(p) => {
            local_id(
                "pre_examination_requested.pre_examination_id",
                &p.pre_examination_id,
            )?;
            text(
                "pre_examination_requested.application_number",
                &p.application_number,
                64,
                true,
            )?;
            match IpRightKind::try_from(p.patent_kind) {
                Ok(
                    IpRightKind::InventionPatent
                    | IpRightKind::UtilityModelPatent
                    | IpRightKind::DesignPatent,
                ) => {}
                _ => {
                    return Err(invalid(
                        "pre_examination_requested.patent_kind",
                        "must be a patent kind (invention, utility model or design)",
                    ));
                }
            }
        }
        Kind::PreExaminationCompleted(p) => {
            local_id(
                "pre_examination_completed.pre_examination_id",
                &p.pre_examination_id,
            )?;
            text("pre_examination_completed.notes", &p.notes, LONG, false)?;
        }
        Kind::InvestigationFiled(p) => {
            text(
                "investigation_filed.police_case_number",
                &p.police_case_number,
                64,
                true,
            )?;
            text(
                "investigation_filed.suspected_offence",
                &p.suspected_offence,
                SHORT,
                true,
            )?;
            text("investigation_filed.basis", &p.basis, LONG, false)?;
        }
        Kind::InvestigationDeclined(p) => {
            text("investigation_declined.reason", &p.reason, LONG, true)?
        }
        Kind::NonFilingExplained(p) => {
            local_id("non_filing_explained.handoff_id", &p.handoff_id)?;
            text(
                "non_filing_explained.explanation",
                &p.explanation,
                LONG,
                true,
            )?;
        }
        Kind::SuspectDetained(p) => {
            local_id("suspect_detained.party_id", &p.party_id)?;
            text("suspect_detained.measure", &p.measure, SHORT, true)?;
            text("suspect_detained.location", &p.location, SHORT, false)?;
            counted_by_service("suspect_detained.recorded_dues", &p.recorded_dues)?;
        }
        Kind::InvestigationConcluded(p) => {
            text("investigation_concluded.findings", &p.findings, LONG, true)?
        }
        Kind::ArrestApproved(p) => {
            local_id("arrest_approved.handoff_id", &p.handoff_id)?;
            local_id("arrest_approved.party_id", &p.party_id)?;
            counted_by_service("arrest_approved.recorded_dues", &p.recorded_dues)?;
        }
        Kind::ArrestDenied(p) => {
            local_id("arrest_denied.handoff_id", &p.handoff_id)?;
            local_id("arrest_denied.party_id", &p.party_id)?;
            text("arrest_denied.reason", &p.reason, LONG, true)?;
        }
        Kind::IndictmentFiled(p) => {
            local_id("indictment_filed.handoff_id", &p.handoff_id)?;
            text(
                "indictment_filed.indictment_number",
                &p.indictment_number,
                64,
                true,
            )?;
            text("indictment_filed.charges", &p.charges, LONG, true)?;
            if p.defendant_party_ids.is_empty() {
                return Err(invalid(
                    "indictment_filed.defendant_party_ids",
                    "needs at least one defendant",
                ));
            }
            items(
                "indictment_filed.defendant_party_ids",
                &p.defendant_party_ids,
            )?;
            for (i, d) in p.defendant_party_ids.iter().enumerate() {
                local_id(&format!("indictment_filed.defendant_party_ids[{i}]"), d)?;
            }
        }
        Kind::NonProsecutionDecided(p) => {
            local_id("non_prosecution_decided.handoff_id", &p.handoff_id)?;
            text("non_prosecution_decided.reason", &p.reason, LONG, true)?;
        }
        Kind::CaseDocketed(p) => {
            text(
                "case_docketed.court_case_number",
                &p.court_case_number,
                64,
                true,
            )?;
            match Procedure::try_from(p.procedure) {
                Ok(Procedure::Unspecified) => {
                    return Err(invalid("case_docketed.procedure", "is required"));
                }
                Err(_) => {
                    return Err(invalid(
                        "case_docketed.procedure",
                        format!("unknown procedure {}", p.procedure),
                    ));
                }
                Ok(_) => {}
            }
            text(
                "case_docketed.presiding_judge",
                &p.presiding_judge,
                SHORT,
                false,
            )?;
        }
        Kind::PreliminaryInjunctionIssued(p) => {
            text(
                "preliminary_injunction_issued.order_number",
                &p.order_number,
                64,
                true,
            )?;
            text("preliminary_injunction_issued.scope", &p.scope, LONG, true)?;
        }
        Kind::HearingScheduled(p) => {
            local_id("hearing_scheduled.hearing_id", &p.hearing_id)?;
            if p.scheduled_for
                .as_ref()
                .and_then(casebus_proto::datetime_from)
                .is_none()
            {
                return Err(invalid("hearing_scheduled.scheduled_for", "is required"));
            }
            text("hearing_scheduled.location", &p.location, SHORT, false)?;
        }
        Kind::HearingHeld(p) => {
            local_id("hearing_held.hearing_id", &p.hearing_id)?;
            text("hearing_held.summary", &p.summary, LONG, false)?;
        }
        Kind::JudgmentIssued(p) => {
            text(
                "judgment_issued.judgment_number",
                &p.judgment_number,
                64,
                true,
            )?;
            text("judgment_issued.outcome", &p.outcome, LONG, true)?;
            text("judgment_issued.summary", &p.summary, LONG, false)?;
        }
        Kind::AppealFiled(p) => {
            local_id("appeal_filed.appellant_party_id", &p.appellant_party_id)?;
            text("appeal_filed.grounds", &p.grounds, LONG, true)?;
        }
        Kind::JudgmentEffective(p) => {
            text(
                "judgment_effective.judgment_number",
                &p.judgment_number,
                64,
                true,
            )?;
        }
    }
    Ok(())
}

fn need_track(state: &CaseState, cmd: &Command) -> Result<(), Rejection> {
    let agency = cmd.agency();
    match state.track(agency) {
        Some(t) if t.status == crate::state::TrackStatus::Active => Ok(()),
        Some(_) => Err(precondition(
            "track_open",
            format!(
                "the {} track of case {} is closed",
                agency_name(agency),
                cmd.case_id
            ),
        )),
        None => Err(precondition(
            "track_open",
            format!(
                "{} has no track in case {}; accept a hand-off first",
                agency_name(agency),
                cmd.case_id
            ),
        )),
    }
}

fn need_party(state: &CaseState, field: &str, party_id: &str) -> Result<(), Rejection> {
    if state.parties.contains_key(party_id) {
        Ok(())
    } else {
        Err(precondition(
            "party_known",
            format!("{field}: no party {party_id} in the case; add it first"),
        ))
    }
}

/// Finds a hand-off the acting agency received and accepted, of one of `kinds`, that it
/// has not answered yet.
fn need_accepted_handoff(
    state: &CaseState,
    cmd: &Command,
    handoff_id: &str,
    kinds: &[HandoffKind],
    rule: &'static str,
) -> Result<(), Rejection> {
    let Some(h) = state.handoffs.get(handoff_id) else {
        return Err(precondition(
            rule,
            format!("no hand-off {handoff_id} in case {}", cmd.case_id),
        ));
    };
    if !kinds.contains(&h.kind) {
        return Err(precondition(
            rule,
            format!("hand-off {handoff_id} is a {:?}, not a {:?}", h.kind, kinds),
        ));
    }
    if h.to_agency != cmd.agency() || h.status != HandoffStatus::Accepted {
        return Err(precondition(
            rule,
            format!(
                "hand-off {handoff_id} must first be accepted by {}",
                agency_name(cmd.agency())
            ),
        ));
    }
    if h.answered {
        return Err(precondition(
            rule,
            format!("hand-off {handoff_id} was answered already"),
        ));
    }
    Ok(())
}

/// The open hand-offs of `kind` to the police (their decision clock still runs), oldest
/// first.
fn open_to_police(state: &CaseState, kind: HandoffKind) -> Vec<&HandoffClocks> {
    let mut open: Vec<&HandoffClocks> = state
        .clocks
        .values()
        .filter(|c| c.kind == kind && c.to_agency == Agency::PublicSecurity && c.decision.is_none())
        .collect();
    open.sort_by_key(|c| c.requested_version);
    open
}

fn ids(clocks: &[&HandoffClocks]) -> String {
    clocks
        .iter()
        .map(|c| c.handoff_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The police decide on filing once, except where the law asks them to decide again:
/// after a decision not to file, on a request for reconsideration (file or decline
/// again) and on the procuratorate's filing supervision (file; once notified to file,
/// they may not decline).
fn check_filing_decision(state: &CaseState, payload: &Kind) -> Result<(), Rejection> {
    let filing = matches!(payload, Kind::InvestigationFiled(_));
    match state.investigation_filed {
        None => Ok(()),
        Some(true) => Err(precondition(
            "investigation_undecided",
            "the police filed the case already",
        )),
        Some(false) => {
            let reconsideration = open_to_police(state, HandoffKind::ReconsiderationRequest);
            let explanation = open_to_police(state, HandoffKind::NonFilingExplanationRequest);
            let notice = open_to_police(state, HandoffKind::FilingNotice);
            if !filing && !notice.is_empty() {
                return Err(precondition(
                    "filing_notice_binds",
                    format!(
                        "CPL Art. 113: notified by the procuratorate to file ({}), the police file the case; they cannot decide not to file again",
                        ids(&notice)
                    ),
                ));
            }
            let may_decide = if filing {
                !(reconsideration.is_empty() && explanation.is_empty() && notice.is_empty())
            } else {
                !reconsideration.is_empty()
            };
            if may_decide {
                Ok(())
            } else {
                Err(precondition(
                    "investigation_undecided",
                    if filing {
                        "the police decided not to file; they decide again only on a request for reconsideration or the procuratorate's filing supervision"
                    } else {
                        "the police decided not to file already; they decide again only on a request for reconsideration"
                    },
                ))
            }
        }
    }
}

/// A request for reconsideration of a decision not to file: by the organ that referred
/// the case the police declined, once per case, within its window after the decision.
fn check_reconsideration_request(
    state: &CaseState,
    cmd: &Command,
    ctx: &Context<'_>,
) -> Result<(), Rejection> {
    let (Some(false), Some((_, declined_at))) = (state.investigation_filed, state.declined) else {
        return Err(precondition(
            "investigation_declined",
            "only a decision of the police not to file can be reconsidered",
        ));
    };
    let agency = cmd.agency();
    let referred = state.clocks.values().any(|c| {
        c.kind == HandoffKind::SuspectedCrimeReferral
            && c.decision
                .is_some_and(|d| d.by == ClockAnswerKind::InvestigationDeclined)
            && state
                .handoffs
                .get(&c.handoff_id)
                .is_some_and(|h| h.from_office.agency() == agency)
    });
    if !referred {
        return Err(Rejection::NotPermitted {
            agency: agency_name(agency),
            action: "ask for reconsideration of the decision not to file".into(),
            reason: "only the organ whose referral the police declined may ask (State Council Order 310 Art. 9)".into(),
        });
    }
    if let Some(earlier) = state
        .clocks
        .values()
        .find(|c| c.kind == HandoffKind::ReconsiderationRequest)
    {
        return Err(precondition(
            "reconsideration_once",
            format!(
                "reconsideration was asked for already ({}); the referring organ may instead ask the procuratorate for filing supervision",
                earlier.handoff_id
            ),
        ));
    }
    let window = ctx.rules.clock(ClockName::ReconsiderationRequest);
    match window.due(declined_at, ctx.calendar) {
        Ok(until) if cmd.occurred_at <= until => Ok(()),
        Ok(until) => Err(precondition(
            "reconsideration_window",
            format!(
                "{}; the decision not to file of {} could be reconsidered until {}",
                window.basis,
                fmt_time(declined_at),
                fmt_time(until)
            ),
        )),
        Err(e) => Err(precondition(
            "reconsideration_window",
            format!("the window for reconsideration cannot be counted: {e}"),
        )),
    }
}

/// Filing supervision (CPL Art. 113): the procuratorate asks the police to explain a
/// decision not to file, then, the reasons untenable, notifies them to file; one step
/// of each open at a time.
fn check_filing_supervision(
    state: &CaseState,
    cmd: &Command,
    kind: HandoffKind,
) -> Result<(), Rejection> {
    if state.investigation_filed != Some(false) {
        return Err(precondition(
            "investigation_declined",
            format!(
                "filing supervision needs a decision of the police not to file; case {} has {}",
                cmd.case_id,
                if state.investigation_filed == Some(true) {
                    "a filed investigation"
                } else {
                    "no filing decision yet"
                }
            ),
        ));
    }
    let open = open_to_police(state, kind);
    if !open.is_empty() {
        return Err(precondition(
            "filing_supervision_open",
            format!("a {kind:?} to the police is open already ({})", ids(&open)),
        ));
    }
    if kind == HandoffKind::FilingNotice
        && !state
            .clocks
            .values()
            .any(|c| c.kind == HandoffKind::NonFilingExplanationRequest)
    {
        return Err(precondition(
            "non_filing_explanation_first",
            "CPL Art. 113: ask the police to explain why they did not file before notifying them to file",
        ));
    }
    Ok(())
}

fn check_state(
    state: &CaseState,
    cmd: &Command,
    payload: &mut Kind,
    ctx: &Context<'_>,
) -> Result<(), Rejection> {
    let case = cmd.case_id.as_str();
    let agency = cmd.agency();
    let exists = |what: String| Rejection::AlreadyExists {
        case_id: case.to_owned(),
        what,
    };
    // Hand-off answers come from the addressee, who may not have a track yet.
    match payload {
        Kind::HandoffAcknowledged(p) => {
            return answer_handoff(state, cmd, &p.handoff_id, HandoffStatus::Acknowledged);
        }
        Kind::HandoffAccepted(p) => {
            answer_handoff(state, cmd, &p.handoff_id, HandoffStatus::Accepted)?;
            if !p.local_case_number.is_empty()
                && state
                    .references
                    .iter()
                    .any(|r| r.office == cmd.office && r.number == p.local_case_number)
            {
                return Err(exists(format!(
                    "reference {} of {}",
                    p.local_case_number, cmd.office
                )));
            }
            return Ok(());
        }
        Kind::HandoffDeclined(p) => {
            return answer_handoff(state, cmd, &p.handoff_id, HandoffStatus::Declined);
        }
        // A legal hold binds the whole case, also after the placing agency closed its
        // track: any agency taking part may place one.
        Kind::LegalHoldPlaced(p) => {
            hold_visible_to_participants(cmd)?;
            if state.legal_holds.contains_key(&p.hold_id)
                || state.lifted_holds.contains_key(&p.hold_id)
            {
                return Err(exists(format!("legal hold {}", p.hold_id)));
            }
            return Ok(());
        }
        Kind::LegalHoldLifted(p) => {
            hold_visible_to_participants(cmd)?;
            return lift_hold(state, cmd, &p.hold_id);
        }
        _ => {}
    }
    need_track(state, cmd)?;
    match payload {
        Kind::CaseOpened(_)
        | Kind::HandoffAcknowledged(_)
        | Kind::HandoffAccepted(_)
        | Kind::HandoffDeclined(_)
        | Kind::LegalHoldPlaced(_)
        | Kind::LegalHoldLifted(_)
        | Kind::NoteAdded(_)
        | Kind::TrackClosed(_) => {}
        Kind::PartyAdded(p) => {
            let id = p
                .party
                .as_ref()
                .map(|x| x.party_id.clone())
                .unwrap_or_default();
            if state.parties.contains_key(&id) {
                return Err(exists(format!("party {id}")));
            }
        }
        Kind::EvidenceRecorded(p) => {
            if state.evidence.contains(&p.evidence_id) {
                return Err(exists(format!("evidence {}", p.evidence_id)));
            }
        }
        Kind::ReferenceLinked(p) => {
            if p.agency != agency as i32 {
                return Err(Rejection::NotPermitted {
                    agency: agency_name(agency),
                    action: "link another agency's case number".into(),
                    reason: "an agency links only its own numbers".into(),
                });
            }
            if state
                .references
                .iter()
                .any(|r| r.office == cmd.office && r.number == p.local_case_number)
            {
                return Err(exists(format!(
                    "reference {} of {}",
                    p.local_case_number,
                    agency_name(agency)
                )));
            }
        }
        Kind::HandoffRequested(p) => {
            if state.handoffs.contains_key(&p.handoff_id) {
                return Err(exists(format!("hand-off {}", p.handoff_id)));
            }
            let kind = p.kind();
            let to = p.to_agency();
            let (senders, receivers) = handoff_route(kind);
            if !senders.contains(&agency) {
                return Err(Rejection::NotPermitted {
                    agency: agency_name(agency),
                    action: format!("send a {kind:?} hand-off"),
                    reason: "this kind of hand-off is sent by another agency".into(),
                });
            }
            if to == agency || !receivers.contains(&to) {
                return Err(precondition(
                    "handoff_route",
                    format!(
                        "a {kind:?} hand-off cannot go from {} to {}",
                        agency_name(agency),
                        agency_name(to)
                    ),
                ));
            }
            if !p.to_office_id.is_empty() {
                let office = OfficeId::new(&p.to_office_id)
                    .map_err(|e| invalid("handoff_requested.to_office_id", e.to_string()))?;
                if office.agency() != to {
                    return Err(invalid(
                        "handoff_requested.to_office_id",
                        format!("{office} is not an office of {}", agency_name(to)),
                    ));
                }
                if !ctx.offices.is_registered(&office) {
                    return Err(Rejection::UnknownOffice {
                        office: office.to_string(),
                    });
                }
            }
            for e in &p.evidence_ids {
                if !state.evidence.contains(e) {
                    return Err(precondition(
                        "evidence_known",
                        format!("no evidence {e} in case {case}"),
                    ));
                }
            }
            match kind {
                HandoffKind::ArrestApprovalRequest if state.investigation_filed != Some(true) => {
                    return Err(precondition(
                        "investigation_filed",
                        "file the investigation before asking for arrest approval",
                    ));
                }
                HandoffKind::ProsecutionTransfer if !state.investigation_concluded => {
                    return Err(precondition(
                        "investigation_concluded",
                        "conclude the investigation before transferring for prosecution",
                    ));
                }
                HandoffKind::SupplementaryInvestigation => {
                    let pending = state.handoffs.values().any(|h| {
                        h.kind == HandoffKind::ProsecutionTransfer
                            && h.to_agency == Agency::Procuratorate
                            && h.status == HandoffStatus::Accepted
                            && !h.answered
                    });
                    if !pending {
                        return Err(precondition(
                            "prosecution_review_pending",
                            "only a case under prosecution review can be returned for supplementary investigation",
                        ));
                    }
                    let returns: Vec<&str> = state
                        .handoffs
                        .values()
                        .filter(|h| h.kind == HandoffKind::SupplementaryInvestigation)
                        .map(|h| h.handoff_id.as_str())
                        .collect();
                    if returns.len() >= MAX_SUPPLEMENTARY_RETURNS {
                        return Err(precondition(
                            "supplementary_investigation_at_most_twice",
                            format!(
                                "CPL Art. 175: a case is returned for supplementary investigation at most twice; case {case} was returned already by {}; decide on indictment or non-prosecution",
                                returns.join(" and ")
                            ),
                        ));
                    }
                }
                HandoffKind::PublicProsecution => {
                    // The procuratorate's latest decision on a prosecution transfer is
                    // what counts: after a non-prosecution or a return for
                    // supplementary investigation nothing may go to court until an
                    // indictment follows.
                    match &state.prosecution_decision {
                        None => {
                            return Err(precondition(
                                "indictment_filed",
                                "file the indictment before the public prosecution",
                            ));
                        }
                        Some(d) if d.by != ClockAnswerKind::IndictmentFiled => {
                            return Err(precondition(
                                "prosecution_decision_is_indictment",
                                format!(
                                    "the latest decision on prosecution transfer {} (version {}) is {}, not an indictment; a case goes to court only on an indictment",
                                    d.handoff_id,
                                    d.version,
                                    match d.by {
                                        ClockAnswerKind::NonProsecutionDecided => "non-prosecution",
                                        ClockAnswerKind::ReturnedForSupplementaryInvestigation => {
                                            "a return for supplementary investigation"
                                        }
                                        _ => "another answer",
                                    }
                                ),
                            ));
                        }
                        Some(_) => {}
                    }
                }
                HandoffKind::CourtAssistanceNotice
                    if !state.detentions.values().any(|d| d.is_active()) =>
                {
                    return Err(precondition(
                        "detention_active",
                        format!(
                            "case {case} has no goods customs still detains; a court assistance notice keeps a running detention from release"
                        ),
                    ));
                }
                HandoffKind::JudgmentNotice if state.judgment.is_none() => {
                    return Err(precondition(
                        "judgment_issued",
                        "issue the judgment before notifying it",
                    ));
                }
                HandoffKind::ReconsiderationRequest => {
                    check_reconsideration_request(state, cmd, ctx)?;
                }
                HandoffKind::NonFilingExplanationRequest | HandoffKind::FilingNotice => {
                    check_filing_supervision(state, cmd, kind)?;
                }
                _ => {}
            }
            p.recorded_dues = crate::dues::recorded_dues(
                kind,
                cmd.occurred_at,
                ctx.rules,
                ctx.calendar,
                ctx.rules_digest,
            );
            // The flat due time of the first rules; the kinds added with the legal
            // clocks record their decision clock's due time there.
            p.due_at = match ctx.rules.handoff_due(kind) {
                Some(period) => Some(timestamp_from(cmd.occurred_at + period)),
                None => p.recorded_dues.last().and_then(|d| d.due_at),
            };
        }
        Kind::VisibilityChanged(p) => {
            let index = usize::try_from(p.target_version)
                .ok()
                .and_then(|v| v.checked_sub(1));
            let Some(meta) = index.and_then(|i| state.events.get(i)) else {
                return Err(invalid(
                    "visibility_changed.target_version",
                    format!("case {case} has no version {}", p.target_version),
                ));
            };
            if meta.office != cmd.office {
                return Err(Rejection::NotPermitted {
                    agency: agency_name(agency),
                    action: "change the visibility of another office's event".into(),
                    // The office of an event the caller may not read and that is
                    // sealed stays hidden, as it does on every read surface.
                    reason: if crate::visibility::names_office(state, p.target_version, &cmd.office)
                    {
                        format!(
                            "version {} was recorded by {}",
                            p.target_version, meta.office
                        )
                    } else {
                        format!(
                            "version {} was recorded by another office",
                            p.target_version
                        )
                    },
                });
            }
            let participants = p
                .visibility
                .as_ref()
                .is_none_or(|v| v.kind() == VisibilityKind::Participants);
            if state.is_legal_hold_event(p.target_version) && !participants {
                return Err(precondition(
                    LEGAL_HOLD_VISIBILITY,
                    format!(
                        "version {} of case {case} places or lifts a legal hold, which every agency of the case sees; its visibility cannot be narrowed",
                        p.target_version
                    ),
                ));
            }
        }
        Kind::ClockExtended(p) if !p.subject_id.is_empty() => {
            let rule_name = ClockName::from_key(&p.clock);
            let Some(c) = rule_name
                .and_then(|r| state.case_clocks.get(&(r, p.subject_id.clone())))
                .filter(|c| c.answer.is_none())
            else {
                return Err(precondition(
                    "clock_running",
                    format!(
                        "no {} clock runs on suspect {} in case {case}",
                        p.clock, p.subject_id
                    ),
                ));
            };
            if c.agency != agency {
                return Err(Rejection::NotPermitted {
                    agency: agency_name(agency),
                    action: format!("extend the {} clock of suspect {}", p.clock, p.subject_id),
                    reason: format!(
                        "it runs for {}, which alone extends it",
                        agency_name(c.agency)
                    ),
                });
            }
            // Custody is extended on the approval of a procuratorate (CPL Arts. 156,
            // 158, 159); the police's own clocks by a police office.
            let approver = if c.rule == ClockName::Custody {
                Agency::Procuratorate
            } else {
                c.agency
            };
            let label = format!("suspect {}", p.subject_id);
            extend_clock(
                &label,
                (c.rule, &c.adjust, c.started_at),
                approver,
                p,
                state,
                cmd,
                ctx,
            )?;
        }
        Kind::ClockExtended(p) => {
            let clocks = running_decision_clock(state, cmd, &p.handoff_id, &p.clock)?;
            let name =
                ClockName::decision_of(clocks.kind).expect("checked by running_decision_clock");
            if let Some(since) = clocks.adjust.suspended_since {
                return Err(precondition(
                    "clock_not_suspended",
                    format!(
                        "the {} clock of hand-off {} is suspended since {}; resume it before extending it",
                        p.clock,
                        p.handoff_id,
                        fmt_time(since)
                    ),
                ));
            }
            let label = format!("hand-off {}", p.handoff_id);
            extend_clock(
                &label,
                (name, &clocks.adjust, clocks.started_at),
                clocks.to_agency,
                p,
                state,
                cmd,
                ctx,
            )?;
        }
        Kind::ClockSuspended(p) => {
            let clocks = running_decision_clock(state, cmd, &p.handoff_id, &p.clock)?;
            if let Some(since) = clocks.adjust.suspended_since {
                return Err(precondition(
                    "clock_not_suspended",
                    format!(
                        "the {} clock of hand-off {} is suspended already, since {}",
                        p.clock,
                        p.handoff_id,
                        fmt_time(since)
                    ),
                ));
            }
            let name =
                ClockName::decision_of(clocks.kind).expect("checked by running_decision_clock");
            // A period that has run out cannot be stopped after the fact.
            if let Ok(due) =
                clocks
                    .adjust
                    .due(ctx.rules.clock(name), clocks.started_at, ctx.calendar)
                && cmd.occurred_at > due
            {
                return Err(precondition(
                    "clock_not_overdue",
                    format!(
                        "the {} clock of hand-off {} fell due at {}; a clock past due cannot be suspended",
                        p.clock,
                        p.handoff_id,
                        fmt_time(due)
                    ),
                ));
            }
        }
        Kind::ClockResumed(p) => {
            let clocks = running_decision_clock(state, cmd, &p.handoff_id, &p.clock)?;
            let Some(since) = clocks.adjust.suspended_since else {
                return Err(precondition(
                    "clock_suspended",
                    format!(
                        "the {} clock of hand-off {} is not suspended",
                        p.clock, p.handoff_id
                    ),
                ));
            };
            if cmd.occurred_at < since {
                return Err(invalid(
                    "occurred_at",
                    format!(
                        "{} lies before the suspension at {}",
                        fmt_time(cmd.occurred_at),
                        fmt_time(since)
                    ),
                ));
            }
        }
        Kind::GoodsDetained(p) => {
            if state.detentions.contains_key(&p.detention_id) {
                return Err(exists(format!("detention {}", p.detention_id)));
            }
            if p.on_rights_holder_application {
                p.recorded_dues = record_dues(&[ClockName::ReleaseOnApplication], cmd, ctx);
            }
        }
        Kind::DetentionReleased(p) => {
            let d = detention(state, &p.detention_id)?;
            if d.released || d.confiscated {
                return Err(precondition(
                    "detention_active",
                    format!(
                        "detention {} is released or confiscated already",
                        p.detention_id
                    ),
                ));
            }
        }
        Kind::RightsHolderNotified(p) => {
            let d = active_detention(state, &p.detention_id)?;
            need_party(
                state,
                "rights_holder_notified.rights_holder_party_id",
                &p.rights_holder_party_id,
            )?;
            // The first notice of goods held ex officio starts the rights holder's 3
            // working days; the notice says until when, unless customs wrote it.
            if !d.on_application && d.notified_at.is_none() {
                p.recorded_dues = record_dues(&[ClockName::RightsHolderApplication], cmd, ctx);
                if p.respond_by.is_none() {
                    p.respond_by = p.recorded_dues.first().and_then(|d| d.due_at);
                }
            }
        }
        Kind::RightsHolderApplied(p) => {
            check_rights_holder_application(state, cmd, ctx, p)?;
            p.recorded_dues = record_dues(
                &[ClockName::CustomsInvestigation, ClockName::ReleaseExOfficio],
                cmd,
                ctx,
            );
        }
        Kind::InfringementDetermined(p) => {
            let d = active_detention(state, &p.detention_id)?;
            if !d.on_application && !d.applied {
                return Err(precondition(
                    "rights_holder_applied",
                    format!(
                        "goods of detention {} are held ex officio: they are detained, and investigated, only once the rights holder applies (Regulations on Customs Protection of IP Rights Art. 16)",
                        p.detention_id
                    ),
                ));
            }
            if d.infringing.is_some() {
                return Err(precondition(
                    "not_determined_yet",
                    format!(
                        "infringement for detention {} was determined already",
                        p.detention_id
                    ),
                ));
            }
        }
        Kind::GoodsConfiscated(p) => {
            let d = detention(state, &p.detention_id)?;
            if d.released || d.confiscated {
                return Err(precondition(
                    "detention_active",
                    format!(
                        "detention {} is released or confiscated already",
                        p.detention_id
                    ),
                ));
            }
            if d.infringing != Some(true) {
                return Err(precondition(
                    "determined_infringing",
                    format!(
                        "goods of detention {} must first be determined infringing",
                        p.detention_id
                    ),
                ));
            }
        }
        Kind::InfringementAssessed(p) => {
            if state.assessments.contains(&p.assessment_id) {
                return Err(exists(format!("assessment {}", p.assessment_id)));
            }
            if !p.handoff_id.is_empty() {
                let h = state.handoffs.get(&p.handoff_id);
                if !h.is_some_and(|h| {
                    h.to_agency == Agency::IpCenter && h.status == HandoffStatus::Accepted
                }) {
                    return Err(precondition(
                        "handoff_accepted",
                        format!(
                            "hand-off {} is not an accepted request to the IP center",
                            p.handoff_id
                        ),
                    ));
                }
            }
        }
        Kind::MediationConcluded(_) => {
            if state.mediation.is_some() {
                return Err(precondition(
                    "mediation_open",
                    "mediation was concluded already",
                ));
            }
        }
        Kind::PreExaminationRequested(p) => {
            if state.pre_examinations.contains_key(&p.pre_examination_id) {
                return Err(exists(format!("pre-examination {}", p.pre_examination_id)));
            }
        }
        Kind::PreExaminationCompleted(p) => match state.pre_examinations.get(&p.pre_examination_id)
        {
            None => {
                return Err(precondition(
                    "pre_examination_requested",
                    format!("no pre-examination {} was requested", p.pre_examination_id),
                ));
            }
            Some(true) => {
                return Err(precondition(
                    "pre_examination_open",
                    format!(
                        "pre-examination {} is completed already",
                        p.pre_examination_id
                    ),
                ));
            }
            Some(false) => {}
        },
        Kind::InvestigationFiled(_) | Kind::InvestigationDeclined(_) => {
            check_filing_decision(state, &*payload)?;
        }
        Kind::NonFilingExplained(p) => {
            need_accepted_handoff(
                state,
                cmd,
                &p.handoff_id,
                &[HandoffKind::NonFilingExplanationRequest],
                "non_filing_explanation_accepted",
            )?;
            if state.investigation_filed == Some(true) {
                return Err(precondition(
                    "investigation_declined",
                    "the police filed the case; there is no decision not to file to explain",
                ));
            }
        }
        Kind::SuspectDetained(p) => {
            if state.investigation_filed != Some(true) || state.investigation_concluded {
                return Err(precondition(
                    "investigation_open",
                    "a suspect can be detained only during a filed, unconcluded investigation",
                ));
            }
            need_party(state, "suspect_detained.party_id", &p.party_id)?;
            p.recorded_dues = record_dues(&[ClockName::ArrestRequest], cmd, ctx);
        }
        Kind::InvestigationConcluded(_) => {
            if state.investigation_filed != Some(true) || state.investigation_concluded {
                return Err(precondition(
                    "investigation_open",
                    "only a filed, unconcluded investigation can be concluded",
                ));
            }
        }
        Kind::ArrestApproved(p) => {
            need_accepted_handoff(
                state,
                cmd,
                &p.handoff_id,
                &[HandoffKind::ArrestApprovalRequest],
                "arrest_request_accepted",
            )?;
            need_party(state, "arrest_approved.party_id", &p.party_id)?;
            p.recorded_dues = record_dues(&[ClockName::Custody], cmd, ctx);
        }
        Kind::ArrestDenied(p) => {
            need_accepted_handoff(
                state,
                cmd,
                &p.handoff_id,
                &[HandoffKind::ArrestApprovalRequest],
                "arrest_request_accepted",
            )?;
            need_party(state, "arrest_denied.party_id", &p.party_id)?;
        }
        Kind::IndictmentFiled(p) => {
            need_accepted_handoff(
                state,
                cmd,
                &p.handoff_id,
                &[HandoffKind::ProsecutionTransfer],
                "prosecution_transfer_accepted",
            )?;
            for d in &p.defendant_party_ids {
                need_party(state, "indictment_filed.defendant_party_ids", d)?;
            }
        }
        Kind::NonProsecutionDecided(p) => {
            need_accepted_handoff(
                state,
                cmd,
                &p.handoff_id,
                &[HandoffKind::ProsecutionTransfer],
                "prosecution_transfer_accepted",
            )?;
        }
        Kind::CaseDocketed(_) => {
            if state.docketed.is_some() {
                return Err(precondition("not_docketed", "the case is docketed already"));
            }
        }
        Kind::PreliminaryInjunctionIssued(_) => need_docketed(state)?,
        Kind::HearingScheduled(p) => {
            need_docketed(state)?;
            if state.hearings.contains_key(&p.hearing_id) {
                return Err(exists(format!("hearing {}", p.hearing_id)));
            }
            if state.judgment.as_ref().is_some_and(|j| j.effective) {
                return Err(precondition(
                    "judgment_not_effective",
                    "the judgment is effective; no further hearings",
                ));
            }
        }
        Kind::HearingHeld(p) => match state.hearings.get(&p.hearing_id) {
            None => {
                return Err(precondition(
                    "hearing_scheduled",
                    format!("no hearing {} was scheduled", p.hearing_id),
                ));
            }
            Some(h) if h.held => {
                return Err(precondition(
                    "hearing_pending",
                    format!("hearing {} was held already", p.hearing_id),
                ));
            }
            Some(_) => {}
        },
        Kind::JudgmentIssued(_) => {
            need_docketed(state)?;
            if state.judgment.is_some() {
                return Err(precondition(
                    "no_judgment_yet",
                    "a judgment was issued already",
                ));
            }
            if !state.hearings.values().any(|h| h.held) {
                return Err(precondition(
                    "hearing_held",
                    "hold a hearing before issuing the judgment",
                ));
            }
        }
        Kind::AppealFiled(p) => {
            let Some(j) = &state.judgment else {
                return Err(precondition(
                    "judgment_issued",
                    "there is no judgment to appeal",
                ));
            };
            if j.effective {
                return Err(precondition(
                    "judgment_not_effective",
                    "the judgment is effective already",
                ));
            }
            let deadline = j.issued_at + ctx.rules.appeal_period();
            if cmd.occurred_at > deadline {
                return Err(precondition(
                    "appeal_period",
                    format!("the appeal period ended at {}", fmt_time(deadline)),
                ));
            }
            need_party(
                state,
                "appeal_filed.appellant_party_id",
                &p.appellant_party_id,
            )?;
        }
        Kind::JudgmentEffective(p) => {
            let Some(j) = &state.judgment else {
                return Err(precondition(
                    "judgment_issued",
                    "there is no judgment to make effective",
                ));
            };
            if j.effective {
                return Err(precondition(
                    "judgment_not_effective",
                    "the judgment is effective already",
                ));
            }
            if j.number != p.judgment_number {
                return Err(invalid(
                    "judgment_effective.judgment_number",
                    format!("the judgment of this case is {}", j.number),
                ));
            }
            let deadline = j.issued_at + ctx.rules.appeal_period();
            if !j.appealed && cmd.occurred_at <= deadline {
                return Err(precondition(
                    "appeal_period",
                    format!("the appeal period runs until {}", fmt_time(deadline)),
                ));
            }
        }
    }
    Ok(())
}

fn clock_key(field: &str, key: &str) -> Result<ClockName, Rejection> {
    ClockName::from_key(key).ok_or_else(|| {
        let names: Vec<&str> = ClockName::ALL.iter().map(|c| c.key()).collect();
        // A long value is not repeated: the message travels in a gRPC trailer.
        let given = if key.len() <= 64 {
            format!("{key:?}")
        } else {
            format!("a value of {} bytes", key.len())
        };
        invalid(
            field,
            format!(
                "{given} is not a clock of the deadline rules; use one of {}",
                names.join(", ")
            ),
        )
    })
}

/// Grants the next extension step of a running clock counted under `name` from
/// `started_at` with `adjust` (a hand-off's decision clock, or a suspect's clock),
/// approved by an office of `approver_agency`: fills `new_due_at`, or checks the shorter
/// one asked for. `label` names the clock's hand-off or suspect in the refusals.
fn extend_clock(
    label: &str,
    (name, adjust, started_at): (ClockName, &crate::state::ClockAdjust, OffsetDateTime),
    approver_agency: Agency,
    p: &mut casebus_proto::event::v1::ClockExtended,
    state: &CaseState,
    cmd: &Command,
    ctx: &Context<'_>,
) -> Result<(), Rejection> {
    let rule = ctx.rules.clock(name);
    let granted = adjust.extensions.len();
    let Some(step) = rule.extensions.get(granted) else {
        let cap = adjust
            .due(rule, started_at, ctx.calendar)
            .map(fmt_time)
            .unwrap_or_else(|e| e.to_string());
        return Err(precondition(
            "clock_extension_cap",
            format!(
                "the {} clock of {} has every extension the deadline rules allow ({granted} of {}); it is at its cap, due {cap}",
                p.clock,
                label,
                rule.extensions.len()
            ),
        ));
    };
    let approver = OfficeId::new(&p.approving_office_id)
        .map_err(|e| invalid("clock_extended.approving_office_id", e.to_string()))?;
    if approver.agency() != approver_agency {
        return Err(invalid(
            "clock_extended.approving_office_id",
            format!(
                "{approver} is not an office of {}, which approves this extension",
                agency_name(approver_agency)
            ),
        ));
    }
    if !ctx.offices.is_registered(&approver) {
        return Err(Rejection::UnknownOffice {
            office: approver.to_string(),
        });
    }
    let countable = |e: crate::calendar::CalendarError| {
        precondition(
            "clock_countable",
            format!("the {} clock of {} cannot be counted: {e}", p.clock, label),
        )
    };
    let current = adjust
        .due(rule, started_at, ctx.calendar)
        .map_err(countable)?;
    if cmd.occurred_at > current {
        return Err(precondition(
            "clock_not_overdue",
            format!(
                "the {} clock of {} fell due at {}; an extension is granted before the period runs out",
                p.clock,
                label,
                fmt_time(current)
            ),
        ));
    }
    let mut next = adjust.clone();
    next.extensions.push(crate::state::Extension {
        version: state.version + 1,
        new_due_at: None,
        suspensions_before: next.suspensions.len(),
    });
    let allowed = next
        .due(rule, started_at, ctx.calendar)
        .map_err(countable)?;
    match p.new_due_at.as_ref().and_then(casebus_proto::datetime_from) {
        None => p.new_due_at = Some(timestamp_from(allowed)),
        Some(asked) if asked > allowed => {
            return Err(precondition(
                "clock_extension_cap",
                format!(
                    "the {} clock of {} may be extended to {} at the latest (+{} {}: {}); {} is later",
                    p.clock,
                    label,
                    fmt_time(allowed),
                    step.amount,
                    step.unit.key(),
                    step.basis,
                    fmt_time(asked)
                ),
            ));
        }
        Some(asked) if asked <= current => {
            return Err(invalid(
                "clock_extended.new_due_at",
                format!(
                    "{} is not after the clock's current due time {}",
                    fmt_time(asked),
                    fmt_time(current)
                ),
            ));
        }
        Some(_) => {}
    }
    Ok(())
}

/// The clocks of `handoff_id` when `clock` names its decision clock, that clock runs,
/// and the acting agency is the one it runs for (the receiving agency, which alone
/// extends, suspends and resumes it).
fn running_decision_clock<'s>(
    state: &'s CaseState,
    cmd: &Command,
    handoff_id: &str,
    clock: &str,
) -> Result<&'s HandoffClocks, Rejection> {
    let Some(clocks) = state.clocks.get(handoff_id) else {
        return Err(precondition(
            "handoff_known",
            format!("no hand-off {handoff_id} in case {}", cmd.case_id),
        ));
    };
    let agency = cmd.agency();
    if clocks.to_agency != agency {
        return Err(Rejection::NotPermitted {
            agency: agency_name(agency),
            action: format!("change the {clock} clock of hand-off {handoff_id}"),
            reason: format!(
                "it runs for {}, which alone extends, suspends or resumes it",
                agency_name(clocks.to_agency)
            ),
        });
    }
    let decision = ClockName::decision_of(clocks.kind).map(ClockName::key);
    let running = match clocks.open() {
        Some(HandoffClockKind::Decision) => decision,
        Some(HandoffClockKind::Receipt) => Some(ClockName::Receipt.key()),
        None => None,
    };
    if running != Some(clock) || decision != Some(clock) {
        return Err(precondition(
            "clock_running",
            match running {
                Some(r) => format!(
                    "the running clock of hand-off {handoff_id} is {r}, not {clock}; only a running decision clock is extended, suspended or resumed"
                ),
                None => format!("hand-off {handoff_id} has no running clock: it was answered"),
            },
        ));
    }
    Ok(clocks)
}

fn need_docketed(state: &CaseState) -> Result<(), Rejection> {
    if state.docketed.is_none() {
        return Err(precondition("docketed", "docket the case first"));
    }
    Ok(())
}

fn detention<'s>(state: &'s CaseState, id: &str) -> Result<&'s crate::state::Detention, Rejection> {
    state
        .detentions
        .get(id)
        .ok_or_else(|| precondition("goods_detained", format!("no detention {id} in the case")))
}

/// The detention `id`, which must still hold the goods.
fn active_detention<'s>(
    state: &'s CaseState,
    id: &str,
) -> Result<&'s crate::state::Detention, Rejection> {
    let d = detention(state, id)?;
    if d.is_active() {
        Ok(d)
    } else {
        Err(precondition(
            "detention_active",
            format!("detention {id} is released or confiscated already"),
        ))
    }
}

/// The dues of the clocks `names` the command's event starts, counted by the service's
/// rules from the act's `occurred_at`.
fn record_dues(names: &[ClockName], cmd: &Command, ctx: &Context<'_>) -> Vec<RecordedDue> {
    crate::dues::dues_of(
        names,
        cmd.occurred_at,
        ctx.rules,
        ctx.calendar,
        ctx.rules_digest,
    )
}

/// The rights holder's application for goods held ex officio (Regulations on Customs
/// Protection of IP Rights Art. 16): after customs' notice, once, within the rights
/// holder's 3 working days.
fn check_rights_holder_application(
    state: &CaseState,
    cmd: &Command,
    ctx: &Context<'_>,
    p: &casebus_proto::event::v1::RightsHolderApplied,
) -> Result<(), Rejection> {
    let id = &p.detention_id;
    let d = active_detention(state, id)?;
    if d.on_application {
        return Err(precondition(
            "detention_ex_officio",
            format!("detention {id} was made on the rights holder's application already"),
        ));
    }
    let Some(notified_at) = d.notified_at else {
        return Err(precondition(
            "rights_holder_notified",
            format!("notify the rights holder of detention {id} first"),
        ));
    };
    if d.applied {
        return Err(precondition(
            "not_applied_yet",
            format!("the rights holder applied for detention {id} already"),
        ));
    }
    need_party(
        state,
        "rights_holder_applied.rights_holder_party_id",
        &p.rights_holder_party_id,
    )?;
    let window = state
        .open_case_clocks(ctx.rules, ctx.calendar)
        .into_iter()
        .find(|c| c.rule == ClockName::RightsHolderApplication && c.subject == *id);
    let basis = &ctx.rules.clock(ClockName::RightsHolderApplication).basis;
    match window.map(|c| c.due_at) {
        Some(Ok(until)) if cmd.occurred_at > until => Err(precondition(
            "rights_holder_application_window",
            format!(
                "{basis}; the notice of {} could be answered until {}: customs may not detain the goods now and releases them",
                fmt_time(notified_at),
                fmt_time(until)
            ),
        )),
        Some(Err(e)) => Err(precondition(
            "rights_holder_application_window",
            format!("the rights holder's window cannot be counted: {e}"),
        )),
        _ => Ok(()),
    }
}

/// The rule of a legal hold's visibility.
const LEGAL_HOLD_VISIBILITY: &str = "legal_hold_visible_to_participants";

/// A legal hold's events are seen by every agency of the case: PARTICIPANTS (or unset).
fn hold_visible_to_participants(cmd: &Command) -> Result<(), Rejection> {
    // `decide` validated the visibility already: unknown kinds are refused, agencies
    // come only with LISTED_AGENCIES.
    match cmd.visibility.as_ref().map(Visibility::kind) {
        None | Some(VisibilityKind::Unspecified | VisibilityKind::Participants) => Ok(()),
        Some(other) => Err(precondition(
            LEGAL_HOLD_VISIBILITY,
            format!(
                "a legal hold is recorded for every agency of case {} to see; record it with PARTICIPANTS visibility, not {}",
                cmd.case_id,
                other.as_str_name()
            ),
        )),
    }
}

/// Only an open hold is lifted, and only by the agency that placed it.
fn lift_hold(state: &CaseState, cmd: &Command, hold_id: &str) -> Result<(), Rejection> {
    let agency = cmd.agency();
    let Some(hold) = state.legal_holds.get(hold_id) else {
        return Err(precondition(
            "legal_hold_open",
            match state.lifted_holds.get(hold_id) {
                Some(l) => format!(
                    "legal hold {hold_id} of case {} was lifted already (version {})",
                    cmd.case_id, l.lifted_version
                ),
                None => format!("no legal hold {hold_id} in case {}", cmd.case_id),
            },
        ));
    };
    if hold.office.agency() != agency {
        return Err(Rejection::NotPermitted {
            agency: agency_name(agency),
            action: format!("lift legal hold {hold_id}"),
            reason: format!(
                "it was placed by {}; only {} lifts it",
                hold.office,
                agency_name(hold.office.agency())
            ),
        });
    }
    Ok(())
}

/// Whether the personal data of the case may be erased now: refused, naming every open
/// legal hold with its basis, while one is open (PIPL Art. 47(2)). For the erasure
/// command when it is built (docs/CONFIDENTIALITY.md); the case rules call it for
/// nothing else yet.
///
/// # Errors
/// [`Rejection::Precondition`] with rule `no_open_legal_hold`.
pub fn check_erasable(state: &CaseState, case_id: &casebus_proto::CaseId) -> Result<(), Rejection> {
    if !state.has_open_hold() {
        return Ok(());
    }
    let holds: Vec<String> = state
        .legal_holds
        .values()
        .map(|h| format!("{} placed by {} ({})", h.hold_id, h.office, h.legal_basis))
        .collect();
    Err(precondition(
        "no_open_legal_hold",
        format!(
            "case {case_id} is under legal hold: {}; the placing agency must lift it first",
            holds.join("; ")
        ),
    ))
}

fn answer_handoff(
    state: &CaseState,
    cmd: &Command,
    handoff_id: &str,
    to: HandoffStatus,
) -> Result<(), Rejection> {
    let Some(h) = state.handoffs.get(handoff_id) else {
        return Err(precondition(
            "handoff_known",
            format!("no hand-off {handoff_id} in case {}", cmd.case_id),
        ));
    };
    let agency = cmd.agency();
    let addressed = h.to_agency == agency && h.to_office.as_ref().is_none_or(|o| *o == cmd.office);
    if !addressed {
        return Err(Rejection::NotPermitted {
            agency: agency_name(agency),
            action: format!("answer hand-off {handoff_id}"),
            reason: match &h.to_office {
                Some(o) => format!("it is addressed to {o}"),
                None => format!("it is addressed to {}", agency_name(h.to_agency)),
            },
        });
    }
    let ok = match to {
        HandoffStatus::Acknowledged => h.status == HandoffStatus::Requested,
        _ => h.status.is_open(),
    };
    if !ok {
        return Err(precondition(
            if to == HandoffStatus::Acknowledged {
                "handoff_unacknowledged"
            } else {
                "handoff_open"
            },
            format!("hand-off {handoff_id} is {:?} already", h.status),
        ));
    }
    Ok(())
}
