//! Overdue hand-offs, from one of two sources:
//!
//! - [`GatewayReader`]: the query gateway, with an `admin` token: `ListCases` with
//!   `has_overdue_handoffs`, then `GetCase` for each listed case whose version changed
//!   since the last look (every gateway read is audited, so unchanged cases are not read
//!   again; their due times are compared with the clock here).
//! - [`HandoffFold`]: without a gateway, the hand-off events of `CASES` folded into the
//!   open hand-offs (requested, not yet accepted or declined) with their due times.
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

use casebus_proto::event::v1::{Agency, Event, HandoffKind, payload::Kind};
use casebus_proto::gateway::v1::gateway_client::GatewayClient;
use casebus_proto::gateway::v1::{GetCaseRequest, Handoff, HandoffStatus, ListCasesRequest};
use casebus_proto::{agency_name, datetime_from};

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
                    has_overdue_handoffs: true,
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
            let handoffs = match self.seen.remove(&case_id) {
                Some(previous) if previous.version == version => previous.handoffs,
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
                            .map(|c| c.handoffs)
                            .unwrap_or_default(),
                        // Listed a moment ago, gone now: nothing to show for it.
                        Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
                        Err(s) => return Err(call("GetCase")(s)),
                    }
                }
            };
            out.extend(
                handoffs
                    .iter()
                    .filter_map(|h| overdue_of_gateway(&case_id, h, now)),
            );
            seen.insert(case_id, Seen { version, handoffs });
        }
        self.seen = seen;
        Ok(out)
    }
}

fn overdue_of_gateway(case_id: &str, h: &Handoff, now: OffsetDateTime) -> Option<OverdueHandoff> {
    let status = h.status();
    if !matches!(
        status,
        HandoffStatus::Requested | HandoffStatus::Acknowledged
    ) {
        return None;
    }
    let due = h.due_at.as_ref().and_then(datetime_from)?;
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

/// An open hand-off, as folded from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpenHandoff {
    kind: HandoffKind,
    from_office: String,
    to_agency: Agency,
    to_office: String,
    acknowledged: bool,
    requested_at: Option<OffsetDateTime>,
    due_at: Option<OffsetDateTime>,
}

/// The open hand-offs of every case, folded from the hand-off events of `CASES`.
/// Memory holds only open hand-offs: an accepted or declined one is forgotten.
#[derive(Debug, Default)]
pub struct HandoffFold {
    open: BTreeMap<(String, String), OpenHandoff>,
}

impl HandoffFold {
    /// Applies one verified event. Events arrive in stream order, so a case's
    /// hand-off events arrive in case order.
    pub fn apply(&mut self, event: &Event) {
        let Some(kind) = event.payload.as_ref().and_then(|p| p.kind.as_ref()) else {
            return;
        };
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
                        requested_at: event.occurred_at.as_ref().and_then(datetime_from),
                        due_at: p.due_at.as_ref().and_then(datetime_from),
                    },
                );
            }
            Kind::HandoffAcknowledged(p) => {
                if let Some(h) = self.open.get_mut(&key(&p.handoff_id)) {
                    h.acknowledged = true;
                }
            }
            Kind::HandoffAccepted(p) => {
                self.open.remove(&key(&p.handoff_id));
            }
            Kind::HandoffDeclined(p) => {
                self.open.remove(&key(&p.handoff_id));
            }
            _ => {}
        }
    }

    /// Open hand-offs past their due time at `now`.
    pub fn overdue(&self, now: OffsetDateTime) -> Vec<OverdueHandoff> {
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
                    status: if h.acknowledged {
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
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use casebus_proto::event::v1::{
        HandoffAccepted, HandoffAcknowledged, HandoffRequested, Payload,
    };
    use casebus_proto::timestamp_from;

    use super::*;

    const T0: OffsetDateTime = datetime!(2026-03-01 8:00 UTC);

    fn event(case: &str, kind: Kind, at: OffsetDateTime) -> Event {
        Event {
            case_id: case.into(),
            office_id: "customs:ningbo".into(),
            occurred_at: Some(timestamp_from(at)),
            payload: Some(Payload { kind: Some(kind) }),
            ..Default::default()
        }
    }

    fn requested(id: &str, due: OffsetDateTime) -> Kind {
        Kind::HandoffRequested(HandoffRequested {
            handoff_id: id.into(),
            kind: HandoffKind::SuspectedCrimeReferral as i32,
            to_agency: Agency::PublicSecurity as i32,
            due_at: Some(timestamp_from(due)),
            ..Default::default()
        })
    }

    #[test]
    fn the_fold_keeps_open_hand_offs_and_reports_those_past_due() {
        let mut fold = HandoffFold::default();
        fold.apply(&event(
            "A",
            requested("h1", T0 + time::Duration::days(3)),
            T0,
        ));
        fold.apply(&event(
            "B",
            requested("h1", T0 + time::Duration::days(1)),
            T0,
        ));
        fold.apply(&event(
            "C",
            requested("h1", T0 + time::Duration::days(1)),
            T0,
        ));
        fold.apply(&event(
            "B",
            Kind::HandoffAcknowledged(HandoffAcknowledged {
                handoff_id: "h1".into(),
            }),
            T0,
        ));
        fold.apply(&event(
            "C",
            Kind::HandoffAccepted(HandoffAccepted {
                handoff_id: "h1".into(),
                ..Default::default()
            }),
            T0,
        ));
        let now = T0 + time::Duration::days(2);
        let overdue = fold.overdue(now);
        assert_eq!(overdue.len(), 1, "{overdue:?}");
        let b = &overdue[0];
        assert_eq!(b.case_id, "B");
        assert_eq!(b.status, "ACKNOWLEDGED");
        assert_eq!(b.to_agency, "public_security");
        assert_eq!(b.kind, "SUSPECTED_CRIME_REFERRAL");
        assert_eq!(b.overdue_seconds, 86_400);
    }

    #[test]
    fn only_open_gateway_hand_offs_past_due_are_overdue() {
        let handoff = |status: HandoffStatus, due: OffsetDateTime| Handoff {
            handoff_id: "h".into(),
            kind: HandoffKind::PublicProsecution as i32,
            to_agency: Agency::Court as i32,
            status: status as i32,
            due_at: Some(timestamp_from(due)),
            ..Default::default()
        };
        let past = T0 - time::Duration::hours(1);
        assert!(overdue_of_gateway("A", &handoff(HandoffStatus::Acknowledged, past), T0).is_some());
        assert!(overdue_of_gateway("A", &handoff(HandoffStatus::Accepted, past), T0).is_none());
        assert!(
            overdue_of_gateway(
                "A",
                &handoff(HandoffStatus::Requested, T0 + time::Duration::hours(1)),
                T0
            )
            .is_none()
        );
        let found =
            overdue_of_gateway("A", &handoff(HandoffStatus::Requested, past), T0).expect("overdue");
        assert_eq!(found.to_agency, "court");
        assert_eq!(found.kind, "PUBLIC_PROSECUTION");
        assert_eq!(found.overdue_seconds, 3600);
    }
}
