//! `casebus case show <id>`: the case read straight from `CASES` and verified the way
//! the services load it (a failing message is left out of the chain and listed), its
//! timeline, and a summary folded by the case rules: tracks, parties, hand-offs with their
//! recorded due times, their running legal clock (counted with `--deadline-rules` and
//! `--calendar-dir`) and overdue flags, linked references.

use serde_json::{Value, json};
use time::OffsetDateTime;

use casebus_domain::{CaseState, HandoffStatus, OpenClock, TrackStatus};
use casebus_integrity::seal::Opener;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{HandoffKind, PartyRole};
use casebus_proto::{CaseId, agency_name};
use casebus_runtime::clocks::{ClockArgs, Clocks};

use crate::cli::DecryptionArgs;
use crate::context::Ctx;
use crate::decode::{Content, Problem, content_of, load_opener, verified_json};
use crate::error::{CliError, Outcome};
use crate::output::table;
use crate::times::{rfc3339, short, short_or_dash};

fn track_status(status: TrackStatus) -> &'static str {
    match status {
        TrackStatus::Active => "active",
        TrackStatus::Closed => "closed",
    }
}

fn handoff_status(status: HandoffStatus) -> &'static str {
    match status {
        HandoffStatus::Requested => "requested",
        HandoffStatus::Acknowledged => "acknowledged",
        HandoffStatus::Accepted => "accepted",
        HandoffStatus::Declined => "declined",
    }
}

fn handoff_kind(kind: HandoffKind) -> String {
    kind.as_str_name().to_ascii_lowercase()
}

fn party_role(role: i32) -> String {
    PartyRole::try_from(role).map_or_else(
        |_| role.to_string(),
        |r| r.as_str_name().to_ascii_lowercase(),
    )
}

/// A hand-off's running clock, if one runs.
fn clock_of(state: &CaseState, handoff_id: &str, clocks: &Clocks) -> Option<OpenClock> {
    state.open_clock(handoff_id, &clocks.rules, &clocks.calendar)
}

fn clock_json(clock: Option<&OpenClock>) -> Value {
    clock.map_or(Value::Null, |c| {
        json!({
            "name": c.rule.key(),
            "started_at": rfc3339(c.started_at),
            "due_at": c.due_at.as_ref().ok().map(|d| rfc3339(*d)),
            "basis": c.basis,
            "due_error": c.due_at.as_ref().err().map(ToString::to_string),
            "extensions": c.extensions,
            "extensions_allowed": c.extensions_allowed,
            "suspended_since": c.suspended_since.map(rfc3339),
        })
    })
}

fn is_overdue(clock: Option<&OpenClock>, now: OffsetDateTime) -> bool {
    clock.is_some_and(|c| c.is_overdue(now))
}

/// The content of every event of a case (by version order), opened with `opener` where
/// it is sealed for one of its keys or widened to one.
fn contents(loaded: &casebus_bus::LoadedCase, opener: Option<&Opener>) -> Vec<Content> {
    loaded
        .events
        .iter()
        .map(|stored| {
            content_of(
                &stored.event.event,
                opener,
                loaded.state.widened_keys(stored.event.version()),
            )
        })
        .collect()
}

/// What the summary shows for the case's content fields: the title and party names
/// from the opened payloads, or "sealed for ..." where a sealed event was not opened.
#[derive(Default)]
struct Shown {
    title: Option<String>,
    names: std::collections::HashMap<String, String>,
}

impl Shown {
    fn of(loaded: &casebus_bus::LoadedCase, contents: &[Content]) -> Self {
        let mut shown = Self::default();
        for (stored, content) in loaded.events.iter().zip(contents) {
            let event = &stored.event.event;
            let readable = event.payload.as_ref().and_then(|p| p.kind.as_ref());
            let (kind, label) = match content {
                Content::Clear => continue,
                Content::Opened { payload, .. } => (payload.kind.as_ref(), None),
                Content::Sealed { .. } => (readable, Some(format!("({})", content.label()))),
            };
            match kind {
                Some(Kind::CaseOpened(p)) if stored.event.version() == 1 => {
                    shown.title = Some(label.unwrap_or_else(|| p.title.clone()));
                }
                Some(Kind::PartyAdded(p)) => {
                    if let Some(party) = &p.party {
                        shown.names.insert(
                            party.party_id.clone(),
                            label.unwrap_or_else(|| party.name.clone()),
                        );
                    }
                }
                _ => {}
            }
        }
        shown
    }

    fn title(&self, state: &CaseState) -> Option<String> {
        self.title
            .clone()
            .or_else(|| state.opened.as_ref().map(|o| o.title.clone()))
    }

    fn name(&self, party: &casebus_proto::event::v1::Party) -> String {
        self.names
            .get(&party.party_id)
            .cloned()
            .unwrap_or_else(|| party.name.clone())
    }
}

/// The summary of a folded case as JSON.
fn summary_json(state: &CaseState, shown: &Shown, clocks: &Clocks, now: OffsetDateTime) -> Value {
    json!({
        "version": state.version,
        "title": shown.title(state),
        "case_type": state.opened.as_ref().map(|o| o.case_type.as_str_name().to_ascii_lowercase()),
        "opened_by": state.opened.as_ref().map(|o| o.office.to_string()),
        "opened_at": state.opened.as_ref().map(|o| rfc3339(o.at)),
        "tracks": state.tracks.values().map(|t| json!({
            "agency": agency_name(t.agency),
            "office": t.office.as_str(),
            "status": track_status(t.status),
            "opened_at": rfc3339(t.opened_at),
        })).collect::<Vec<_>>(),
        "parties": state.parties.values().map(|p| json!({
            "party_id": p.party_id,
            "role": party_role(p.role),
            "name": shown.name(p),
            "organisation": p.organisation,
        })).collect::<Vec<_>>(),
        "handoffs": state.handoffs.values().map(|h| {
            let clock = clock_of(state, &h.handoff_id, clocks);
            json!({
                "handoff_id": h.handoff_id,
                "kind": handoff_kind(h.kind),
                "from_office": h.from_office.as_str(),
                "to_agency": agency_name(h.to_agency),
                "to_office": h.to_office.as_ref().map(|o| o.to_string()),
                "status": handoff_status(h.status),
                "requested_at": rfc3339(h.requested_at),
                "due_at": h.due_at.map(rfc3339),
                "clock": clock_json(clock.as_ref()),
                "overdue": is_overdue(clock.as_ref(), now),
            })
        }).collect::<Vec<_>>(),
        "clocks": state.open_case_clocks(&clocks.rules, &clocks.calendar).iter().map(|c| json!({
            "name": c.rule.key(),
            "subject": c.subject,
            "agency": agency_name(c.agency),
            "started_at": rfc3339(c.started_at),
            "due_at": c.due_at.as_ref().ok().map(|d| rfc3339(*d)),
            "basis": c.basis,
            "due_error": c.due_at.as_ref().err().map(ToString::to_string),
            "extensions": c.extensions,
            "extensions_allowed": c.extensions_allowed,
            "overdue": c.is_overdue(now),
            "version": c.started_version,
        })).collect::<Vec<_>>(),
        "references": state.references.iter().map(|r| json!({
            "agency": agency_name(r.agency),
            "office": r.office.as_str(),
            "number": r.number,
        })).collect::<Vec<_>>(),
        "legal_holds": state.legal_holds.values().map(|h| json!({
            "hold_id": h.hold_id,
            "placed_by": h.office.as_str(),
            "placed_at": rfc3339(h.placed_at),
            "legal_basis": h.legal_basis,
            "version": h.placed_version,
        })).collect::<Vec<_>>(),
    })
}

fn print_text(
    ctx: &Ctx,
    case: &CaseId,
    loaded: &casebus_bus::LoadedCase,
    contents: &[Content],
    clocks: &Clocks,
    now: OffsetDateTime,
) -> Result<(), CliError> {
    let state = &loaded.state;
    let out = &ctx.out;
    let shown = Shown::of(loaded, contents);
    match &state.opened {
        Some(opened) => out.line(format!(
            "case {case}: {:?} ({}), opened by {} at {}",
            shown.title(state).unwrap_or_default(),
            opened.case_type.as_str_name().to_ascii_lowercase(),
            opened.office,
            short(opened.at)
        ))?,
        None => out.line(format!("case {case}: not opened by any verified event"))?,
    }
    out.line(format!(
        "version {}, last sequence {}, {}",
        state.version,
        loaded.last_sequence,
        if loaded.rejected.is_empty() {
            "chain and signatures verified".to_owned()
        } else {
            format!(
                "{} message(s) FAILED verification (listed below)",
                loaded.rejected.len()
            )
        }
    ))?;

    out.line("\nTracks")?;
    let mut t = table(&["agency", "office", "status", "opened"]);
    for track in state.tracks.values() {
        t.add_row([
            agency_name(track.agency).to_owned(),
            track.office.to_string(),
            track_status(track.status).to_owned(),
            short(track.opened_at),
        ]);
    }
    out.table(&t)?;

    out.line("\nParties")?;
    let mut t = table(&["party", "role", "name"]);
    for party in state.parties.values() {
        t.add_row([
            party.party_id.clone(),
            party_role(party.role),
            shown.name(party),
        ]);
    }
    out.table(&t)?;

    out.line("\nHand-offs")?;
    let mut t = table(&[
        "hand-off",
        "kind",
        "from",
        "to",
        "status",
        "requested",
        "due",
        "clock",
        "clock due",
        "overdue",
    ]);
    for h in state.handoffs.values() {
        let clock = clock_of(state, &h.handoff_id, clocks);
        let (name, due) = match &clock {
            None => ("-".to_owned(), "-".to_owned()),
            Some(c) => {
                let mut name = c.rule.key().to_owned();
                if c.extensions > 0 {
                    name.push_str(&format!(
                        " (extended {}/{})",
                        c.extensions, c.extensions_allowed
                    ));
                }
                let mut due = match &c.due_at {
                    Ok(due) => short(*due),
                    Err(e) => format!("cannot count: {e}"),
                };
                if let Some(since) = c.suspended_since {
                    due.push_str(&format!(" (suspended since {})", short(since)));
                }
                (name, due)
            }
        };
        t.add_row([
            h.handoff_id.clone(),
            handoff_kind(h.kind),
            h.from_office.to_string(),
            h.to_office
                .as_ref()
                .map_or_else(|| agency_name(h.to_agency).to_owned(), ToString::to_string),
            handoff_status(h.status).to_owned(),
            short(h.requested_at),
            short_or_dash(h.due_at),
            name,
            due,
            if is_overdue(clock.as_ref(), now) {
                "OVERDUE"
            } else {
                ""
            }
            .to_owned(),
        ]);
    }
    out.table(&t)?;

    let case_clocks = state.open_case_clocks(&clocks.rules, &clocks.calendar);
    if !case_clocks.is_empty() {
        out.line("\nClocks (not on a hand-off)")?;
        let mut t = table(&["clock", "on", "by", "started", "due", "overdue", "basis"]);
        for c in &case_clocks {
            let mut name = c.rule.key().to_owned();
            if c.extensions > 0 {
                name.push_str(&format!(
                    " (extended {}/{})",
                    c.extensions, c.extensions_allowed
                ));
            }
            t.add_row([
                name,
                c.subject.clone(),
                agency_name(c.agency).to_owned(),
                short(c.started_at),
                match &c.due_at {
                    Ok(due) => short(*due),
                    Err(e) => format!("cannot count: {e}"),
                },
                if c.is_overdue(now) { "OVERDUE" } else { "" }.to_owned(),
                c.basis.clone(),
            ]);
        }
        out.table(&t)?;
    }

    if !state.references.is_empty() {
        out.line("\nReferences")?;
        let mut t = table(&["agency", "office", "number"]);
        for r in &state.references {
            t.add_row([
                agency_name(r.agency).to_owned(),
                r.office.to_string(),
                r.number.clone(),
            ]);
        }
        out.table(&t)?;
    }

    if !state.legal_holds.is_empty() {
        out.line("\nLegal holds (erasure refused while one is open)")?;
        let mut t = table(&["hold", "placed by", "placed", "legal basis"]);
        for h in state.legal_holds.values() {
            t.add_row([
                h.hold_id.clone(),
                h.office.to_string(),
                short(h.placed_at),
                h.legal_basis.clone(),
            ]);
        }
        out.table(&t)?;
    }

    out.line("\nTimeline")?;
    let mut t = table(&["v", "seq", "recorded", "office", "actor", "type", "payload"]);
    for (stored, content) in loaded.events.iter().zip(contents) {
        let e = &stored.event;
        t.add_row([
            e.version().to_string(),
            stored.sequence.to_string(),
            short(e.recorded_at),
            e.office.to_string(),
            e.event.actor.clone(),
            e.type_name(),
            content.payload_text(&e.signed.event, 60),
        ]);
    }
    out.table(&t)?;

    if !loaded.rejected.is_empty() {
        out.line("\nMessages that FAILED verification (left out of the chain)")?;
        let mut t = table(&["seq", "code", "reason"]);
        for r in &loaded.rejected {
            t.add_row([
                r.sequence.to_string(),
                r.error.code().to_owned(),
                r.error.to_string(),
            ]);
        }
        out.table(&t)?;
    }
    Ok(())
}

/// `casebus case show`.
pub async fn show(
    ctx: &Ctx,
    case: &CaseId,
    clocks: &ClockArgs,
    decryption: &DecryptionArgs,
) -> Result<Outcome, CliError> {
    // A bad rules file, calendar or key file is refused before anything is read.
    let clocks = clocks.load().map_err(CliError::from_source)?;
    let opener = load_opener(decryption)?;
    let registry = ctx.registry("to verify the case")?;
    let bus = ctx.bus(registry).await?;
    let loaded = bus.load_case(case).await.map_err(CliError::from_source)?;
    if loaded.events.is_empty() && loaded.rejected.is_empty() {
        return Err(CliError::refused(format!("case {case} not found in CASES")));
    }
    let now = OffsetDateTime::now_utc();
    let contents = contents(&loaded, opener.as_ref());
    if ctx.out.is_json() {
        let shown = Shown::of(&loaded, &contents);
        let mut summary = summary_json(&loaded.state, &shown, &clocks, now);
        if let Some(object) = summary.as_object_mut() {
            object.insert("case".into(), case.as_str().into());
            object.insert("last_sequence".into(), loaded.last_sequence.into());
            object.insert("verified".into(), loaded.rejected.is_empty().into());
            object.insert(
                "events".into(),
                loaded
                    .events
                    .iter()
                    .map(|e| {
                        let widened = loaded.state.widened_keys(e.event.version());
                        verified_json(e.sequence, &e.event, opener.as_ref(), widened)
                    })
                    .collect(),
            );
            object.insert(
                "rejected".into(),
                loaded
                    .rejected
                    .iter()
                    .map(|r| {
                        let problem = Problem::from(&r.error);
                        json!({ "sequence": r.sequence, "code": problem.code, "reason": problem.reason })
                    })
                    .collect(),
            );
        }
        ctx.out.json_document(&summary)?;
    } else {
        print_text(ctx, case, &loaded, &contents, &clocks, now)?;
    }
    Ok(Outcome::problems_if(!loaded.rejected.is_empty()))
}
