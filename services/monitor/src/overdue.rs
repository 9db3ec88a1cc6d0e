//! Overdue hand-offs, from one of two sources:
//!
//! - [`GatewayReader`]: the query gateway, with an `admin` token: `ListCases` with
//!   `has_overdue_handoffs`, then `GetCase` for each listed case whose version changed
//!   since the last look (every gateway read is audited, so unchanged cases are not read
//!   again; their running clocks' due times are compared with the clock here).
//! - [`HandoffFold`]: without a gateway, the hand-off and decision events of `CASES`
//!   folded by the domain's clock fold (`CaseState::apply_clocks`) into the hand-offs
//!   whose legal clock still runs, counted with the monitor's deadline rules and
//!   calendar.
//!
//! Either way a hand-off is overdue when its running legal clock (receipt, then the
//! decision clock, which accepting does not stop) is past due, as on the gateway and in
//! the agency inbox; a customs detention's clocks (release, investigation, the rights
//! holder's application) are listed the same way, as rows of their own.
//!
//! **Boundary:** both only read; the monitor never writes to `CASES`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use time::OffsetDateTime;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use casebus_domain::{CaseState, RecordedEvent};
use casebus_proto::event::v1::{Agency, Event, HandoffKind, payload::Kind};
use casebus_proto::gateway::v1::gateway_client::GatewayClient;
use casebus_proto::gateway::v1::{
    CaseClock, GetCaseRequest, Handoff, HandoffStatus, ListCasesRequest,
};
use casebus_proto::{CaseId, EventId, OfficeId, agency_name, datetime_from};
use casebus_runtime::clocks::Clocks;

use crate::model::OverdueHandoff;

/// Cases listed per `ListCases` page.
const PAGE: i32 = 200;
/// Most cases with overdue hand-offs read per refresh.
const MAX_CASES: usize = 2_000;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Why the gateway could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The gateway URL or TLS settings are unusable.
    #[error("gateway {url}: {reason}")]
    Config {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The token file cannot be read or holds no token.
    #[error("gateway token file {path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The gateway refused or failed a call.
    #[error("gateway {method} failed: {code:?} {message}")]
    Call {
        /// The method.
        method: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The gateway's message.
        message: String,
    },
}

/// Adds the monitor's current gateway token to every call.
#[derive(Clone)]
struct TokenHeader(Arc<RwLock<Option<MetadataValue<Ascii>>>>);

impl Interceptor for TokenHeader {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Status::unauthenticated("no gateway token loaded"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// What the last look at a case found.
struct Seen {
    version: u64,
    handoffs: Vec<Handoff>,
    clocks: Vec<CaseClock>,
}

/// Reads overdue hand-offs from the gateway.
pub struct GatewayReader {
    client: GatewayClient<InterceptedService<Channel, TokenHeader>>,
    token: Arc<RwLock<Option<MetadataValue<Ascii>>>>,
    token_file: PathBuf,
    seen: HashMap<String, Seen>,
}

impl std::fmt::Debug for GatewayReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayReader")
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

impl GatewayReader {
    /// A reader of the gateway at `url` (`http://` or `https://`; TLS trusts `ca`),
    /// authenticating with the token in `token_file` (read again before every refresh,
    /// so a renewed token is picked up). Connects on first use.
    ///
    /// # Errors
    /// [`GatewayError::Config`] for a bad URL or CA file.
    pub fn new(
        url: &str,
        ca: Option<&std::path::Path>,
        token_file: PathBuf,
    ) -> Result<Self, GatewayError> {
        let config = |reason: String| GatewayError::Config {
            url: url.to_owned(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| config(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(10));
        if url.starts_with("https://") {
            let Some(ca) = ca else {
                return Err(config(
                    "an https gateway needs --gateway-tls-ca (the CA of its certificate)".into(),
                ));
            };
            let pem = std::fs::read(ca).map_err(|e| config(format!("{}: {e}", ca.display())))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| config(e.to_string()))?;
        }
        let token = Arc::new(RwLock::new(None));
        let channel = endpoint.connect_lazy();
        Ok(Self {
            client: GatewayClient::with_interceptor(channel, TokenHeader(token.clone())),
            token,
            token_file,
            seen: HashMap::new(),
        })
    }

    fn load_token(&self) -> Result<(), GatewayError> {
        let bad = |reason: String| GatewayError::Token {
            path: self.token_file.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&self.token_file).map_err(|e| bad(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| bad("the token is not ASCII".into()))?;
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some(value);
        Ok(())
    }

    /// Every open hand-off past its due time at `now`.
    ///
    /// # Errors
    /// [`GatewayError::Token`] when the token cannot be read; [`GatewayError::Call`]
    /// when the gateway refuses or fails a call.
    pub async fn overdue(
        &mut self,
        now: OffsetDateTime,
    ) -> Result<Vec<OverdueHandoff>, GatewayError> {
        self.load_token()?;
        let call = |method: &'static str| {
            move |s: Status| GatewayError::Call {
                method,
                code: s.code(),
                message: s.message().to_owned(),
            }
        };
        let mut listed: Vec<(String, u64)> = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client
                .list_cases(ListCasesRequest {
                    has_overdue_clocks: true,
                    page_token: page_token.clone(),
                    limit: PAGE,
                    ..Default::default()
                })
                .await
                .map_err(call("ListCases"))?
                .into_inner();
            listed.extend(page.cases.into_iter().map(|c| (c.case_id, c.version)));
            if page.next_page_token.is_empty() || listed.len() >= MAX_CASES {
                break;
            }
            page_token = page.next_page_token;
        }
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for (case_id, version) in listed {
            let (handoffs, clocks) = match self.seen.remove(&case_id) {
                Some(previous) if previous.version == version => {
                    (previous.handoffs, previous.clocks)
                }
                _ => {
                    let answer = self
                        .client
                        .get_case(GetCaseRequest {
                            case_id: case_id.clone(),
                        })
                        .await;
                    match answer {
                        Ok(reply) => reply
                            .into_inner()
                            .case
                            .map(|c| (c.handoffs, c.clocks))
                            .unwrap_or_default(),
                        // Listed a moment ago, gone now: nothing to show for it.
                        Err(s) if s.code() == tonic::Code::NotFound => Default::default(),
                        Err(s) => return Err(call("GetCase")(s)),
                    }
                }
            };
            out.extend(
                handoffs
                    .iter()
                    .filter_map(|h| overdue_of_gateway(&case_id, h, now)),
            );
            out.extend(clocks.iter().filter_map(|c| {
                let clock = c.clock.as_ref()?;
                let due = clock.due_at.as_ref().and_then(datetime_from)?;
                (due < now).then(|| {
                    case_clock_row(
                        &case_id,
                        &c.subject_id,
                        &clock.name,
                        c.agency(),
                        clock.started_at.as_ref().and_then(datetime_from),
                        due,
                        now,
                    )
                })
            }));
            seen.insert(
                case_id,
                Seen {
                    version,
                    handoffs,
                    clocks,
                },
            );
        }
        self.seen = seen;
        Ok(out)
    }
}

fn overdue_of_gateway(case_id: &str, h: &Handoff, now: OffsetDateTime) -> Option<OverdueHandoff> {
    let status = h.status();
    if status == HandoffStatus::Declined {
        return None;
    }
    // The running clock the gateway counted; none once its clocks are answered.
    // A suspended clock is never overdue.
    let clock = h.clock.as_ref().filter(|c| c.suspended_since.is_none())?;
    let due = clock.due_at.as_ref().and_then(datetime_from)?;
    if due >= now {
        return None;
    }
    let requested = h.requested_at.as_ref().and_then(datetime_from);
    Some(OverdueHandoff {
        case_id: case_id.to_owned(),
        handoff_id: h.handoff_id.clone(),
        kind: h.kind().as_str_name().to_owned(),
        from_office: h.from_office_id.clone(),
        to_agency: agency_name(h.to_agency()).to_owned(),
        to_office: h.to_office_id.clone(),
        status: status.as_str_name().to_owned(),
        requested_at: requested.map(rfc3339).unwrap_or_default(),
        due_at: rfc3339(due),
        due_unix: due.unix_timestamp(),
        overdue_seconds: (now - due).whole_seconds(),
    })
}

/// The row of a running clock not tied to a hand-off (a detention's) past due: the
/// subject in `handoff_id`, the clock's name in `kind`, status `RUNNING`.
fn case_clock_row(
    case_id: &str,
    subject: &str,
    clock: &str,
    agency: Agency,
    started_at: Option<OffsetDateTime>,
    due: OffsetDateTime,
    now: OffsetDateTime,
) -> OverdueHandoff {
    OverdueHandoff {
        case_id: case_id.to_owned(),
        handoff_id: subject.to_owned(),
        kind: clock.to_owned(),
        from_office: String::new(),
        to_agency: agency_name(agency).to_owned(),
        to_office: String::new(),
        status: "RUNNING".to_owned(),
        requested_at: started_at.map(rfc3339).unwrap_or_default(),
        due_at: rfc3339(due),
        due_unix: due.unix_timestamp(),
        overdue_seconds: (now - due).whole_seconds(),
    }
}

/// A hand-off whose legal clock runs, as folded from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpenHandoff {
    kind: HandoffKind,
    from_office: String,
    to_agency: Agency,
    to_office: String,
    acknowledged: bool,
    accepted: bool,
    requested_at: Option<OffsetDateTime>,
    /// The running clock's due time, when the calendar can count it.
    due_at: Option<OffsetDateTime>,
}

/// The hand-offs of every case whose legal clock runs, folded from the hand-off and
/// decision events of `CASES`. Memory holds the clocks of every case with a hand-off
/// and only the hand-offs still running a clock.
#[derive(Debug)]
pub struct HandoffFold {
    open: BTreeMap<(String, String), OpenHandoff>,
    cases: BTreeMap<String, CaseState>,
    clocks: Arc<Clocks>,
}

impl Default for HandoffFold {
    fn default() -> Self {
        Self::new(Arc::new(Clocks::default()))
    }
}

impl HandoffFold {
    /// An empty fold counting clocks with `clocks`.
    pub fn new(clocks: Arc<Clocks>) -> Self {
        Self {
            open: BTreeMap::new(),
            cases: BTreeMap::new(),
            clocks,
        }
    }

    /// Applies one verified event. Events arrive in stream order, so a case's events
    /// arrive in case order.
    pub fn apply(&mut self, event: &Event) {
        let Some(kind) = event.payload.as_ref().and_then(|p| p.kind.as_ref()) else {
            return;
        };
        self.apply_entry(event, kind);
        self.apply_clocks(event, kind);
    }

    /// The clocks' part: the case's clocks folded by the domain, then each of its
    /// hand-offs given its running clock's due time, or dropped once none runs.
    fn apply_clocks(&mut self, event: &Event, kind: &Kind) {
        if !CaseState::moves_clocks(kind) {
            return;
        }
        let (Ok(case_id), Ok(event_id), Ok(office)) = (
            CaseId::new(&event.case_id),
            EventId::new(&event.event_id),
            OfficeId::new(&event.office_id),
        ) else {
            return;
        };
        let Some(occurred_at) = event.occurred_at.as_ref().and_then(datetime_from) else {
            return;
        };
        // The events that can start a case's first clock: a hand-off, a detention of
        // goods, a detention of a suspect (in a case the police opened themselves).
        if matches!(
            kind,
            Kind::HandoffRequested(_) | Kind::GoodsDetained(_) | Kind::SuspectDetained(_)
        ) {
            self.cases.entry(event.case_id.clone()).or_default();
        }
        let Some(case) = self.cases.get_mut(&event.case_id) else {
            return;
        };
        case.apply_clocks(&RecordedEvent {
            case_id: &case_id,
            version: event.case_version,
            event_id: &event_id,
            office: &office,
            occurred_at,
            visibility: event.visibility.as_ref(),
            payload: Some(kind),
        });
        let (rules, calendar) = (&self.clocks.rules, &self.clocks.calendar);
        let case = &*case;
        let start = (event.case_id.clone(), String::new());
        let keys: Vec<(String, String)> = self
            .open
            .range(start..)
            .take_while(|(k, _)| k.0 == event.case_id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            match case.open_clock(&key.1, rules, calendar) {
                None => {
                    self.open.remove(&key);
                }
                Some(clock) => {
                    if let Some(h) = self.open.get_mut(&key) {
                        // A suspended clock is never overdue.
                        h.due_at = clock
                            .due_at
                            .ok()
                            .filter(|_| clock.suspended_since.is_none());
                    }
                }
            }
        }
    }

    fn apply_entry(&mut self, event: &Event, kind: &Kind) {
        let key = |id: &str| (event.case_id.clone(), id.to_owned());
        match kind {
            Kind::HandoffRequested(p) => {
                self.open.insert(
                    key(&p.handoff_id),
                    OpenHandoff {
                        kind: p.kind(),
                        from_office: event.office_id.clone(),
                        to_agency: p.to_agency(),
                        to_office: p.to_office_id.clone(),
                        acknowledged: false,
                        accepted: false,
                        requested_at: event.occurred_at.as_ref().and_then(datetime_from),
                        // Counted by `apply_clocks`.
                        due_at: None,
                    },
                );
            }
            Kind::HandoffAcknowledged(p) => {
                if let Some(h) = self.open.get_mut(&key(&p.handoff_id)) {
                    h.acknowledged = true;
                }
            }
            Kind::HandoffAccepted(p) => {
                // Accepting starts the work; the clock fold drops the hand-off once its
                // decision clock is answered.
                if let Some(h) = self.open.get_mut(&key(&p.handoff_id)) {
                    h.accepted = true;
                }
            }
            Kind::HandoffDeclined(p) => {
                self.open.remove(&key(&p.handoff_id));
            }
            _ => {}
        }
    }

    /// Hand-offs whose running clock is past due at `now`, then the clocks not tied to
    /// a hand-off (a detention's) past due.
    pub fn overdue(&self, now: OffsetDateTime) -> Vec<OverdueHandoff> {
        let (rules, calendar) = (&self.clocks.rules, &self.clocks.calendar);
        let case_clocks = self
            .cases
            .iter()
            .filter(|(_, case)| !case.case_clocks.is_empty())
            .flat_map(|(case_id, case)| {
                case.open_case_clocks(rules, calendar)
                    .into_iter()
                    .filter_map(move |c| {
                        let due = c.due_at.ok().filter(|d| *d < now)?;
                        Some(case_clock_row(
                            case_id,
                            &c.subject,
                            c.rule.key(),
                            c.agency,
                            Some(c.started_at),
                            due,
                            now,
                        ))
                    })
            });
        self.open
            .iter()
            .filter_map(|((case_id, handoff_id), h)| {
                let due = h.due_at.filter(|d| *d < now)?;
                Some(OverdueHandoff {
                    case_id: case_id.clone(),
                    handoff_id: handoff_id.clone(),
                    kind: h.kind.as_str_name().to_owned(),
                    from_office: h.from_office.clone(),
                    to_agency: agency_name(h.to_agency).to_owned(),
                    to_office: h.to_office.clone(),
                    status: if h.accepted {
                        "ACCEPTED"
                    } else if h.acknowledged {
                        "ACKNOWLEDGED"
                    } else {
                        "REQUESTED"
                    }
                    .to_owned(),
                    requested_at: h.requested_at.map(rfc3339).unwrap_or_default(),
                    due_at: rfc3339(due),
                    due_unix: due.unix_timestamp(),
                    overdue_seconds: (now - due).whole_seconds(),
                })
            })
            .chain(case_clocks)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use casebus_proto::event::v1::{
        HandoffAccepted, HandoffAcknowledged, HandoffRequested, InvestigationFiled, Payload,
    };
    use casebus_proto::gateway::v1::RunningClock;
    use casebus_proto::{RequestId, timestamp_from};

    use super::*;

    /// Sunday 1 March 2026, 16:00 China Standard Time.
    const T0: OffsetDateTime = datetime!(2026-03-01 8:00 UTC);
    const CUSTOMS: &str = "customs:ningbo";
    const POLICE: &str = "public_security:ningbo";

    fn event(case: &str, by: &str, version: u64, kind: Kind, at: OffsetDateTime) -> Event {
        let office = OfficeId::new(by).expect("office");
        let case_id = CaseId::new(case).expect("case");
        let request = RequestId::new(&format!("r{version}")).expect("request");
        Event {
            event_id: EventId::derive(&office, &case_id, &request).to_string(),
            case_id: case.into(),
            case_version: version,
            office_id: by.into(),
            occurred_at: Some(timestamp_from(at)),
            payload: Some(Payload { kind: Some(kind) }),
            ..Default::default()
        }
    }

    fn requested(id: &str) -> Kind {
        Kind::HandoffRequested(HandoffRequested {
            handoff_id: id.into(),
            kind: HandoffKind::SuspectedCrimeReferral as i32,
            to_agency: Agency::PublicSecurity as i32,
            // The flat due time recorded by the sender no longer counts.
            due_at: Some(timestamp_from(T0 + time::Duration::days(100))),
            ..Default::default()
        })
    }

    #[test]
    fn the_fold_keeps_hand_offs_whose_clock_runs_and_reports_those_past_due() {
        let mut fold = HandoffFold::default();
        let ack = || {
            Kind::HandoffAcknowledged(HandoffAcknowledged {
                handoff_id: "h1".into(),
            })
        };
        let accept = || {
            Kind::HandoffAccepted(HandoffAccepted {
                handoff_id: "h1".into(),
                ..Default::default()
            })
        };
        for case in ["A", "B", "C", "D"] {
            fold.apply(&event(case, CUSTOMS, 2, requested("h1"), T0));
        }
        for case in ["B", "C", "D"] {
            fold.apply(&event(case, POLICE, 3, ack(), T0));
        }
        for case in ["C", "D"] {
            fold.apply(&event(case, POLICE, 4, accept(), T0));
        }
        let filed = Kind::InvestigationFiled(InvestigationFiled::default());
        fold.apply(&event("D", POLICE, 5, filed, T0));

        // A's receipt clock ran out 24 hours after the full hour following the request.
        let overdue = fold.overdue(T0 + time::Duration::days(2));
        assert_eq!(overdue.len(), 1, "{overdue:?}");
        let a = &overdue[0];
        assert_eq!(a.case_id, "A");
        assert_eq!(a.status, "REQUESTED");
        assert_eq!(a.to_agency, "public_security");
        assert_eq!(a.kind, "SUSPECTED_CRIME_REFERRAL");
        assert_eq!(a.overdue_seconds, 23 * 3600);

        // The filing clocks (3 days from Monday 2 March) end on 4 March at 24:00 CST;
        // the accepted referral C counts, the decided D does not.
        let overdue = fold.overdue(datetime!(2026-03-05 0:00 UTC));
        let seen: Vec<(&str, &str)> = overdue
            .iter()
            .map(|o| (o.case_id.as_str(), o.status.as_str()))
            .collect();
        assert_eq!(
            seen,
            [("A", "REQUESTED"), ("B", "ACKNOWLEDGED"), ("C", "ACCEPTED")]
        );
        assert_eq!(overdue[1].overdue_seconds, 8 * 3600);
    }

    #[test]
    fn gateway_hand_offs_whose_running_clock_is_past_due_are_overdue() {
        let handoff = |status: HandoffStatus, due: Option<OffsetDateTime>| Handoff {
            handoff_id: "h".into(),
            kind: HandoffKind::PublicProsecution as i32,
            to_agency: Agency::Court as i32,
            status: status as i32,
            due_at: Some(timestamp_from(T0 + time::Duration::days(100))),
            clock: due.map(|due| RunningClock {
                name: "court_acceptance".into(),
                due_at: Some(timestamp_from(due)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let past = Some(T0 - time::Duration::hours(1));
        let check = |status, due| overdue_of_gateway("A", &handoff(status, due), T0);
        assert!(check(HandoffStatus::Acknowledged, past).is_some());
        assert!(
            check(HandoffStatus::Accepted, past).is_some(),
            "accepting does not stop the clock"
        );
        assert!(check(HandoffStatus::Accepted, None).is_none(), "answered");
        assert!(
            check(
                HandoffStatus::Requested,
                Some(T0 + time::Duration::hours(1))
            )
            .is_none()
        );
        let found = check(HandoffStatus::Requested, past).expect("overdue");
        assert_eq!(found.to_agency, "court");
        assert_eq!(found.kind, "PUBLIC_PROSECUTION");
        assert_eq!(found.overdue_seconds, 3600);
    }
}
