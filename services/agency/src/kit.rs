//! `Kit`: the shared state of one running agency service, and the one path every
//! command takes from a gRPC request to a signed event:
//!
//! 1. the caller must be this service's office with the `clerk` role;
//! 2. the request's `CommandMeta` and payload become an `AppendRequest` (ids checked,
//!    the actor taken from the credential, never from the request);
//! 3. the appender loads the case, recognises a retry by its event id, folds, decides
//!    with the case rules, signs and publishes with optimistic concurrency; it runs as
//!    a tracked task, so a caller hanging up never cuts an append in half and shutdown
//!    waits for it;
//! 4. the outcome is counted (metrics, `$SRV` stats) and answered: a `CommandReply`, or
//!    the status from [`crate::status_of`].
//!
//! Queries (inbox, case view) need the `clerk` or `reader` role of the same office.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt as _};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use casebus_bus::{AppendError, AppendRequest, Appended, Appender, Bus};
use casebus_domain::{Sight, names_office, office_known, sight};
use casebus_integrity::seal::{Opener, SealError, open_event_with};
use casebus_integrity::token::Role;
use casebus_proto::agency::v1::{
    CaseView, CommandMeta, CommandReply, GetCaseResponse, HandoffStatus as WireHandoffStatus,
    HandoffView, InboxChange, LegalHoldView, ListInboxResponse, TrackStatus as WireTrackStatus,
    TrackView, WatchInboxResponse,
};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::{
    CaseId, EventId, OfficeId, RequestId, agency_name, datetime_from, payload_type_name,
    timestamp_from,
};
use casebus_runtime::auth::{Authenticator, Caller, caller};
use casebus_runtime::metrics::Metrics;

use crate::inbox::{Change, Inbox};
use crate::stats::Stats;
use crate::status;

/// Longest correlation id accepted.
const MAX_CORRELATION_ID: usize = 128;

/// The stream of a `WatchInbox` call.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchInboxResponse, Status>> + Send>>;

struct Inner {
    office: OfficeId,
    service_name: &'static str,
    appender: Arc<Appender>,
    inbox: Arc<Inbox>,
    metrics: Metrics,
    stats: Arc<Stats>,
    auth: Authenticator,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// The office's decryption keys (`--decryption-key`), to open what is sealed for it.
    opener: Option<Arc<Opener>>,
}

/// The shared state of a running agency service; cheap to clone.
#[derive(Clone)]
pub struct Kit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kit")
            .field("office", &self.inner.office)
            .field("service", &self.inner.service_name)
            .finish_non_exhaustive()
    }
}

fn reply(appended: &Appended) -> CommandReply {
    CommandReply {
        event_id: appended.event_id.to_string(),
        case_id: appended.case_id.to_string(),
        case_version: appended.case_version,
        stream_sequence: appended.stream_sequence,
        event_hash: appended.hash.0.to_vec(),
        duplicate: appended.duplicate,
    }
}

/// The message field `field`, or INVALID_ARGUMENT naming it.
pub(crate) fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| status::required(field))
}

impl Kit {
    /// The kit of the service `service_name` recording for `office`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        office: OfficeId,
        service_name: &'static str,
        appender: Arc<Appender>,
        inbox: Arc<Inbox>,
        metrics: Metrics,
        stats: Arc<Stats>,
        auth: Authenticator,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        opener: Option<Arc<Opener>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                office,
                service_name,
                appender,
                inbox,
                metrics,
                stats,
                auth,
                tracker,
                shutdown,
                opener,
            }),
        }
    }

    /// The office this service records for.
    pub fn office(&self) -> &OfficeId {
        &self.inner.office
    }

    /// The service's name (`casebus-customs`, ...).
    pub fn service_name(&self) -> &'static str {
        self.inner.service_name
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The bus the service appends to.
    pub fn bus(&self) -> &Bus {
        self.inner.appender.bus()
    }

    pub(crate) fn appender(&self) -> &Arc<Appender> {
        &self.inner.appender
    }

    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// The tracker every task of the service runs on, so shutdown waits for it.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Cancelled when the service begins to shut down.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// The caller authenticator, to wrap gRPC services with.
    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// Checks that `caller` acts for this office and has one of `roles`.
    ///
    /// # Errors
    /// PERMISSION_DENIED naming the office or the role.
    pub fn authorize(&self, caller: &Caller, roles: &[Role]) -> Result<(), Status> {
        if caller.office != self.inner.office {
            return Err(status::wrong_office(&self.inner.office, &caller.office));
        }
        if !roles.iter().any(|r| caller.has(*r)) {
            let names: Vec<&str> = roles.iter().map(|r| role_name(*r)).collect();
            return Err(status::missing_role(&names.join(" or ")));
        }
        Ok(())
    }

    /// Runs one command RPC: authorises, splits the request into its meta and payload
    /// with `split`, and executes it.
    pub(crate) async fn command<T>(
        &self,
        request: Request<T>,
        split: impl FnOnce(T) -> Result<(Option<CommandMeta>, Kind), Status>,
    ) -> Result<Response<CommandReply>, Status> {
        let outcome = async {
            let caller = caller(&request)?.clone();
            // Authorise before looking at the request, so a stranger learns nothing
            // about what a valid request would be.
            self.authorize(&caller, &[Role::Clerk])?;
            let (meta, payload) = split(request.into_inner())?;
            self.execute(&caller, meta, payload).await
        }
        .await;
        self.inner.stats.count(&outcome);
        outcome.map(Response::new)
    }

    /// Executes one command: records `payload` on the case named in `meta`, acting for
    /// `caller`. This is the only way a command becomes an event.
    ///
    /// # Errors
    /// PERMISSION_DENIED when the caller is not this office's clerk; INVALID_ARGUMENT for a
    /// malformed `meta`; otherwise the status of the append error (see
    /// [`crate::status_of`]).
    #[tracing::instrument(
        skip_all,
        fields(
            agency_id = agency_name(self.inner.office.agency()),
            case_id = tracing::field::Empty,
            event_id = tracing::field::Empty,
        )
    )]
    pub async fn execute(
        &self,
        caller: &Caller,
        meta: Option<CommandMeta>,
        payload: Kind,
    ) -> Result<CommandReply, Status> {
        self.authorize(caller, &[Role::Clerk])?;
        let request = append_request(caller, meta, payload)?;
        let span = tracing::Span::current();
        span.record("case_id", tracing::field::display(&request.case_id));
        let type_name = payload_type_name(&request.payload);
        let handoff_to = match &request.payload {
            Kind::HandoffRequested(h) => Some(h.to_agency()),
            _ => None,
        };
        let started = Instant::now();
        let appender = self.inner.appender.clone();
        // The task carries this span, so the appender's events stay inside the command's.
        let joined = self
            .inner
            .tracker
            .spawn(async move { appender.append(request).await }.instrument(span.clone()))
            .await;
        let metrics = &self.inner.metrics;
        let stats = &self.inner.stats;
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(error = %error, "append task failed");
                return Err(status::internal());
            }
        };
        match outcome {
            Ok(appended) => {
                span.record("event_id", tracing::field::display(&appended.event_id));
                metrics
                    .append_latency
                    .observe(started.elapsed().as_secs_f64());
                if appended.duplicate {
                    metrics.duplicates.inc();
                    Stats::bump(&stats.duplicates);
                    tracing::debug!(version = appended.case_version, "command was a retry");
                } else {
                    metrics
                        .events_appended
                        .with_label_values(&[agency_name(self.inner.office.agency()), type_name])
                        .inc();
                    if let Some(to) = handoff_to {
                        metrics
                            .handoffs_opened
                            .with_label_values(&[agency_name(to)])
                            .inc();
                    }
                    Stats::bump(&stats.appended);
                    tracing::debug!(
                        version = appended.case_version,
                        r#type = type_name,
                        "event recorded"
                    );
                }
                Ok(reply(&appended))
            }
            Err(error) => {
                let reason = status::reason_of(&error);
                metrics.rejections.with_label_values(&[reason]).inc();
                match &error {
                    AppendError::Unavailable { .. } => {
                        Stats::bump(&stats.unavailable);
                        tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "append failed: bus unavailable");
                    }
                    AppendError::Contention { .. } => {
                        Stats::bump(&stats.rejected);
                        tracing::warn!(error = %error, "append gave up under contention");
                    }
                    AppendError::SigningKeyNotValid { .. } => {
                        Stats::bump(&stats.unavailable);
                        tracing::error!(error = %error, "the signing key is not valid; rotate it (the service reloads key and registry on SIGHUP or when their files change)");
                    }
                    AppendError::Sealing { .. } => {
                        Stats::bump(&stats.rejected);
                        tracing::error!(error = %error, "a restricted event cannot be sealed; give the service the office's decryption key (--decryption-key) and register its encryption key");
                    }
                    AppendError::UnknownSigner { .. } => {
                        Stats::bump(&stats.rejected);
                        tracing::error!(error = %error, "the signing key is not in the office registry");
                    }
                    _ => {
                        Stats::bump(&stats.rejected);
                        tracing::debug!(reason, "command refused");
                    }
                }
                Err(status::status_of(&error))
            }
        }
    }

    /// `ListInbox`: the pending hand-offs of this office.
    pub(crate) fn list_inbox(
        &self,
        caller: &Caller,
        case_id: &str,
        overdue_only: bool,
    ) -> Result<ListInboxResponse, Status> {
        self.authorize(caller, &[Role::Clerk, Role::Reader])?;
        let case = if case_id.is_empty() {
            None
        } else {
            Some(CaseId::new(case_id).map_err(|e| status::invalid("case_id", e))?)
        };
        if !self.inner.inbox.is_ready() {
            return Err(status::not_ready());
        }
        let (items, position) =
            self.inner
                .inbox
                .list(OffsetDateTime::now_utc(), case.as_ref(), overdue_only);
        Ok(ListInboxResponse { items, position })
    }

    /// `WatchInbox`: the pending hand-offs, a caught-up marker, then every change, until
    /// the caller hangs up, the service shuts down or the caller's credential expires.
    pub(crate) fn watch_inbox(&self, caller: &Caller) -> Result<WatchStream, Status> {
        self.authorize(caller, &[Role::Clerk, Role::Reader])?;
        if !self.inner.inbox.is_ready() {
            return Err(status::not_ready());
        }
        let (existing, receiver) = self.inner.inbox.watch();
        let now = OffsetDateTime::now_utc();
        let mut first: Vec<Result<WatchInboxResponse, Status>> = existing
            .iter()
            .map(|entry| {
                Ok(WatchInboxResponse {
                    change: InboxChange::Existing as i32,
                    item: Some(entry.item(now)),
                })
            })
            .collect();
        first.push(Ok(WatchInboxResponse {
            change: InboxChange::CaughtUp as i32,
            item: None,
        }));
        // The stream ends with UNAUTHENTICATED when the credential that opened it
        // expires or is revoked, so a token's life bounds what it can read.
        let end: futures::future::BoxFuture<'static, Status> =
            Box::pin(self.inner.auth.stream_end(caller));
        let live = futures::stream::unfold(
            (receiver, self.inner.shutdown.clone(), end, false),
            |(mut receiver, shutdown, mut end, ended)| async move {
                if ended {
                    return None;
                }
                let next = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    status = &mut end => {
                        return Some((Err(status), (receiver, shutdown, end, true)));
                    }
                    next = receiver.recv() => next,
                };
                match next {
                    Ok(Change { change, entry }) => {
                        let message = WatchInboxResponse {
                            change: change as i32,
                            item: Some(entry.item(OffsetDateTime::now_utc())),
                        };
                        Some((Ok(message), (receiver, shutdown, end, false)))
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Some((Err(status::watch_lagged()), (receiver, shutdown, end, true)))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        );
        Ok(Box::pin(futures::stream::iter(first).chain(live)))
    }

    /// `GetCase`: the coordination state of a case as this office may see it.
    #[tracing::instrument(skip_all, fields(case_id = %case_id))]
    pub(crate) async fn case_view(
        &self,
        caller: &Caller,
        case_id: &str,
    ) -> Result<GetCaseResponse, Status> {
        self.authorize(caller, &[Role::Clerk, Role::Reader])?;
        let case_id = CaseId::new(case_id).map_err(|e| status::invalid("case_id", e))?;
        let loaded = self.bus().load_case(&case_id).await.map_err(|error| {
            tracing::warn!(case_id = %case_id, error = %error, "loading case failed");
            status::bus_unavailable(format!("reading case {case_id}"))
        })?;
        let state = &loaded.state;
        let viewer = &self.inner.office;
        let Some(opened) = state.opened.as_ref() else {
            return Err(status::case_not_found(&case_id));
        };
        if sight(state, 1, viewer) == Sight::NotInvolved {
            return Err(status::case_not_found(&case_id));
        }
        let now = OffsetDateTime::now_utc();
        let clocks = self.inner.inbox.clocks();
        let opening_clear = sight(state, 1, viewer) == Sight::Clear;
        let tracks = state
            .tracks
            .values()
            .map(|t| TrackView {
                agency: t.agency as i32,
                office_id: if office_known(state, &t.office, viewer) {
                    t.office.to_string()
                } else {
                    String::new()
                },
                status: match t.status {
                    casebus_domain::TrackStatus::Active => WireTrackStatus::Active,
                    casebus_domain::TrackStatus::Closed => WireTrackStatus::Closed,
                } as i32,
                opened_at: Some(timestamp_from(t.opened_at)),
            })
            .collect();
        let handoffs = state
            .handoffs
            .values()
            .filter(|h| {
                let addressed = h.to_agency == viewer.agency()
                    && h.to_office.as_ref().is_none_or(|o| o == viewer);
                addressed || sight(state, h.requested_version, viewer) == Sight::Clear
            })
            .map(|h| {
                let clock = state.open_clock(&h.handoff_id, &clocks.rules, &clocks.calendar);
                HandoffView {
                    handoff_id: h.handoff_id.clone(),
                    kind: h.kind as i32,
                    from_office_id: if names_office(state, h.requested_version, viewer) {
                        h.from_office.to_string()
                    } else {
                        String::new()
                    },
                    to_agency: h.to_agency as i32,
                    to_office_id: h
                        .to_office
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    status: wire_status(h.status) as i32,
                    requested_at: Some(timestamp_from(h.requested_at)),
                    due_at: h.due_at.map(timestamp_from),
                    overdue: clock.as_ref().is_some_and(|c| c.is_overdue(now)),
                    requested_event_id: h.requested_event_id.to_string(),
                    requested_version: h.requested_version,
                    clock: clock.as_ref().map(crate::inbox::running_clock),
                }
            })
            .collect();
        // The title is content: an opening sealed for this office is read opened.
        let title = if opening_clear {
            self.opened_title(&loaded)
                .unwrap_or_else(|| opened.title.clone())
        } else {
            String::new()
        };
        let last = loaded.events.last();
        Ok(GetCaseResponse {
            case: Some(CaseView {
                case_id: case_id.to_string(),
                version: state.version,
                last_event_hash: last.map(|e| e.event.hash.0.to_vec()).unwrap_or_default(),
                last_stream_sequence: last.map_or(0, |e| e.sequence),
                case_type: if opening_clear {
                    opened.case_type as i32
                } else {
                    0
                },
                title,
                opened_by_office_id: if names_office(state, 1, viewer) {
                    opened.office.to_string()
                } else {
                    String::new()
                },
                opened_at: Some(timestamp_from(opened.at)),
                tracks,
                handoffs,
                // Recorded with PARTICIPANTS visibility, which is never narrowed; the
                // check keeps a hold hidden should an older event say otherwise.
                legal_holds: state
                    .legal_holds
                    .values()
                    .filter(|h| sight(state, h.placed_version, viewer) == Sight::Clear)
                    .map(|h| LegalHoldView {
                        hold_id: h.hold_id.clone(),
                        placed_by_office_id: h.office.to_string(),
                        placed_at: Some(timestamp_from(h.placed_at)),
                        legal_basis: h.legal_basis.clone(),
                        placed_version: h.placed_version,
                    })
                    .collect(),
            }),
        })
    }
}

impl Kit {
    /// The title of the case's sealed opening, opened with the office's keys (its own
    /// wrapped keys, or those a widening VisibilityChanged added); `None` when the
    /// opening is not sealed, or not for this office (a seal that does not open
    /// or disagrees with its readable part is logged, and its readable part shown).
    fn opened_title(&self, loaded: &casebus_bus::LoadedCase) -> Option<String> {
        let first = &loaded.events.first()?.event.event;
        first.sealed.as_ref()?;
        let opener = self.inner.opener.as_ref()?;
        match open_event_with(opener, first, loaded.state.widened_keys(1)) {
            Ok(full) => match full.kind {
                Some(Kind::CaseOpened(p)) => Some(p.title),
                _ => None,
            },
            Err(SealError::NotAReader { .. }) => None,
            Err(error) => {
                tracing::warn!(
                    case_id = %first.case_id,
                    error = %error,
                    "the case's sealed opening does not open for this office; showing its readable part"
                );
                None
            }
        }
    }
}

fn wire_status(status: casebus_domain::HandoffStatus) -> WireHandoffStatus {
    match status {
        casebus_domain::HandoffStatus::Requested => WireHandoffStatus::Requested,
        casebus_domain::HandoffStatus::Acknowledged => WireHandoffStatus::Acknowledged,
        casebus_domain::HandoffStatus::Accepted => WireHandoffStatus::Accepted,
        casebus_domain::HandoffStatus::Declined => WireHandoffStatus::Declined,
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Clerk => "clerk",
        Role::Reader => "reader",
        Role::Admin => "admin",
        Role::Operator => "operator",
    }
}

/// Turns the wire meta of a command into an append request acting for `caller`.
fn append_request(
    caller: &Caller,
    meta: Option<CommandMeta>,
    payload: Kind,
) -> Result<AppendRequest, Status> {
    let meta = required(meta, "meta")?;
    let case_id = CaseId::new(&meta.case_id).map_err(|e| status::invalid("meta.case_id", e))?;
    let request_id =
        RequestId::new(&meta.request_id).map_err(|e| status::invalid("meta.request_id", e))?;
    let occurred_at = match &meta.occurred_at {
        Some(ts) => Some(
            datetime_from(ts)
                .ok_or_else(|| status::invalid("meta.occurred_at", "is not a valid timestamp"))?,
        ),
        None => None,
    };
    let causation_id = if meta.causation_id.is_empty() {
        None
    } else {
        Some(
            EventId::new(&meta.causation_id)
                .map_err(|e| status::invalid("meta.causation_id", e))?,
        )
    };
    if meta.correlation_id.chars().count() > MAX_CORRELATION_ID {
        return Err(status::invalid(
            "meta.correlation_id",
            format!("at most {MAX_CORRELATION_ID} characters are allowed"),
        ));
    }
    Ok(AppendRequest {
        case_id,
        request_id,
        actor: caller.actor.clone(),
        occurred_at,
        causation_id,
        correlation_id: meta.correlation_id,
        visibility: meta.visibility,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use casebus_proto::Timestamp;
    use casebus_proto::event::v1::NoteAdded;
    use casebus_runtime::auth::Method;
    use tonic::Code;

    use super::*;

    fn clerk() -> Caller {
        Caller {
            office: OfficeId::new("customs:ningbo").expect("office"),
            actor: "officer-7".into(),
            roles: vec![Role::Clerk],
            method: Method::Token,
            token_id: "t".into(),
            expires_at: None,
        }
    }

    fn meta(case_id: &str, request_id: &str) -> CommandMeta {
        CommandMeta {
            case_id: case_id.into(),
            request_id: request_id.into(),
            ..Default::default()
        }
    }

    fn note() -> Kind {
        Kind::NoteAdded(NoteAdded { text: "x".into() })
    }

    fn refused(meta: Option<CommandMeta>) -> Status {
        append_request(&clerk(), meta, note()).expect_err("must be refused")
    }

    #[test]
    fn the_actor_comes_from_the_credential_and_the_ids_are_checked() {
        let request = append_request(&clerk(), Some(meta("C-1", "r:1")), note()).expect("valid");
        assert_eq!(request.actor, "officer-7");
        assert_eq!(request.case_id.as_str(), "C-1");
        assert_eq!(request.occurred_at, None);
        assert_eq!(request.causation_id, None);
    }

    #[test]
    fn malformed_meta_is_invalid_argument_naming_the_field() {
        let cases = [
            (None, "invalid meta: is required"),
            (Some(meta("a.b", "r")), "invalid meta.case_id"),
            (Some(meta("", "r")), "invalid meta.case_id"),
            (Some(meta("C", "r r")), "invalid meta.request_id"),
            (
                Some(CommandMeta {
                    causation_id: "XYZ".into(),
                    ..meta("C", "r")
                }),
                "invalid meta.causation_id",
            ),
            (
                Some(CommandMeta {
                    occurred_at: Some(Timestamp {
                        seconds: 0,
                        nanos: -5,
                    }),
                    ..meta("C", "r")
                }),
                "invalid meta.occurred_at",
            ),
            (
                Some(CommandMeta {
                    correlation_id: "c".repeat(129),
                    ..meta("C", "r")
                }),
                "invalid meta.correlation_id",
            ),
        ];
        for (meta, expected) in cases {
            let status = refused(meta);
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(
                status.message().starts_with(expected),
                "{}",
                status.message()
            );
        }
    }
}
