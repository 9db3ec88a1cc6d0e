//! `GatewayService`: the `casebus.gateway.v1.Gateway` gRPC service. Each read checks the
//! caller's role, validates the request (INVALID_ARGUMENT naming the field), queries the
//! projection on a reader connection, applies the visibility rules, writes the audit
//! record, and only then answers. The watch streams live in `watch`, the proof reads'
//! log access in `proofs`.
//!
//! Inside one query the rows are read before the case state, so the state is never
//! older than the rows it judges: a version the state does not know would otherwise be
//! shown as a stub.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use casebus_domain::TrackStatus;
use casebus_proto::event::v1::{Agency, CaseType};
use casebus_proto::gateway::v1 as pb;
use casebus_proto::gateway::v1::gateway_server::Gateway;
use casebus_proto::{CaseId, agency_name};
use casebus_runtime::auth::{Authenticator, Caller, caller};
use casebus_timeline::{CaseFilter, Direction, ListReader, MAX_LIMIT};

use crate::audit::{Auditor, Read, version_list};
use crate::convert::{
    agency, case_summary, instant, list_item, list_item_of_summary, timeline_event,
};
use crate::error::ReadError;
use crate::metrics::GatewayMetrics;
use crate::opening::Openers;
use crate::page_token::{PageTokens, Scope};
use crate::proofs::{ProofLog, hash_bytes, tlog_proof};
use crate::store::Store;
use crate::visibility::Viewer;
use crate::watch::{self, ResponseStream, Watches};

/// Page size when a request leaves the limit at 0.
pub const DEFAULT_LIMIT: usize = 100;

/// The longest local case number accepted (as the case rules allow).
const MAX_LOCAL_NUMBER: usize = 64;

/// Everything the reads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub auditor: Auditor,
    pub metrics: GatewayMetrics,
    pub watches: Watches,
    pub page_tokens: Arc<PageTokens>,
    /// The authenticator of the calls, asked when a stream's credential ends.
    pub auth: Authenticator,
    /// The transparency log's proofs, when the gateway keeps a log with a log key.
    pub proofs: Option<Arc<ProofLog>>,
    /// The keys sealed content is opened with for callers of their office.
    pub openers: Openers,
}

impl Shared {
    /// Writes the audit record of a read; a failure is counted and refuses the read.
    pub async fn audit(&self, caller: &Caller, read: Read) -> Result<(), ReadError> {
        self.auditor.record(caller, read).await.inspect_err(|_| {
            self.metrics.audit_failures.inc();
        })
    }

    /// Writes the audit records of one feed batch.
    pub async fn audit_all(&self, caller: &Caller, reads: Vec<Read>) -> Result<(), ReadError> {
        self.auditor
            .record_all(caller, reads)
            .await
            .inspect_err(|_| {
                self.metrics.audit_failures.inc();
            })
    }
}

/// The gateway's gRPC service.
#[derive(Debug, Clone)]
pub struct GatewayService {
    shared: Arc<Shared>,
}

/// Settings of the read service.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Watch streams open at once at most.
    pub max_watches: usize,
    /// Responses buffered per watch stream before the stream waits for its client.
    pub watch_buffer: usize,
    /// The key sealing `ListCases` page tokens.
    pub page_tokens: Arc<PageTokens>,
    /// The authenticator of the calls: a watch stream ends when the credential that
    /// opened it expires or is revoked.
    pub auth: Authenticator,
    /// The transparency log's proofs (`--tlog-file` with `--log-key`).
    pub proofs: Option<Arc<ProofLog>>,
    /// The offices' keys given with `--decryption-key` (none on a shared gateway).
    pub openers: Openers,
}

impl GatewayService {
    /// The service over `store`, auditing through `auditor`. Watch streams are spawned
    /// on `tracker` and end when `shutdown` is cancelled.
    pub fn new(
        store: Arc<Store>,
        auditor: Auditor,
        metrics: GatewayMetrics,
        settings: &ServiceSettings,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                auditor,
                metrics,
                page_tokens: settings.page_tokens.clone(),
                auth: settings.auth.clone(),
                proofs: settings.proofs.clone(),
                openers: settings.openers.clone(),
                watches: Watches {
                    slots: Arc::new(Semaphore::new(settings.max_watches)),
                    limit: settings.max_watches,
                    buffer: settings.watch_buffer.max(1),
                    tracker,
                    shutdown,
                },
            }),
        }
    }
}

/// The authenticated caller and its viewer.
fn who<T>(request: &Request<T>) -> Result<(Caller, Viewer), ReadError> {
    let caller = caller(request)
        .map_err(|_| ReadError::Unauthenticated)?
        .clone();
    let viewer = Viewer::of(&caller)?;
    Ok((caller, viewer))
}

/// A case id from a request.
pub(crate) fn case_id(raw: &str) -> Result<CaseId, ReadError> {
    CaseId::new(raw).map_err(|e| ReadError::invalid("case_id", e.to_string()))
}

/// A page limit from a request: 0 means the default, negative or above the maximum is
/// refused.
pub(crate) fn limit(raw: i32) -> Result<usize, ReadError> {
    match usize::try_from(raw) {
        Ok(0) => Ok(DEFAULT_LIMIT),
        Ok(n) if n <= MAX_LIMIT => Ok(n),
        _ => Err(ReadError::invalid(
            "limit",
            format!("{raw} is out of range; use 1 to {MAX_LIMIT}, or 0 for {DEFAULT_LIMIT}"),
        )),
    }
}

fn direction(raw: i32) -> Result<Direction, ReadError> {
    match pb::Direction::try_from(raw) {
        Ok(pb::Direction::Unspecified | pb::Direction::Forward) => Ok(Direction::Forward),
        Ok(pb::Direction::Backward) => Ok(Direction::Backward),
        Err(_) => Err(ReadError::invalid(
            "direction",
            format!("{raw} is not a direction; use FORWARD (1) or BACKWARD (2)"),
        )),
    }
}

/// An optional agency filter: unspecified means none.
fn agency_filter(field: &'static str, raw: i32) -> Result<Option<Agency>, ReadError> {
    if raw == 0 {
        return Ok(None);
    }
    agency(raw).map(Some).ok_or_else(|| {
        ReadError::invalid(
            field,
            format!("{raw} is not an agency (1 to 5, or 0 for any)"),
        )
    })
}

fn track_status_filter(raw: i32) -> Result<Option<TrackStatus>, ReadError> {
    match pb::TrackStatus::try_from(raw) {
        Ok(pb::TrackStatus::Unspecified) => Ok(None),
        Ok(pb::TrackStatus::Active) => Ok(Some(TrackStatus::Active)),
        Ok(pb::TrackStatus::Closed) => Ok(Some(TrackStatus::Closed)),
        Err(_) => Err(ReadError::invalid(
            "track_status",
            format!("{raw} is not a track status (ACTIVE 1, CLOSED 2, or 0 for any)"),
        )),
    }
}

fn case_type_filter(raw: i32) -> Result<Option<CaseType>, ReadError> {
    match CaseType::try_from(raw) {
        Ok(CaseType::Unspecified) => Ok(None),
        Ok(t) => Ok(Some(t)),
        Err(_) => Err(ReadError::invalid(
            "case_type",
            format!("{raw} is not a case type (0 for any)"),
        )),
    }
}

fn instant_filter(
    field: &'static str,
    ts: Option<&casebus_proto::Timestamp>,
) -> Result<Option<OffsetDateTime>, ReadError> {
    ts.map(|ts| instant(ts).ok_or_else(|| ReadError::invalid(field, "is not a valid timestamp")))
        .transpose()
}

fn local_number(raw: &str) -> Result<String, ReadError> {
    let len = raw.chars().count();
    if raw.trim().is_empty() {
        return Err(ReadError::invalid("local_number", "is required"));
    }
    if len > MAX_LOCAL_NUMBER {
        return Err(ReadError::invalid(
            "local_number",
            format!("is {len} characters long; at most {MAX_LOCAL_NUMBER} are allowed"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(ReadError::invalid(
            "local_number",
            "contains control characters",
        ));
    }
    Ok(raw.to_owned())
}

/// The scope page tokens of a listing are bound to: the caller and every filter, so a
/// token continues only the listing that handed it out.
fn list_scope(viewer: &Viewer, req: &pb::ListCasesRequest) -> Scope {
    let instant = |ts: Option<&casebus_proto::Timestamp>| {
        ts.map(|ts| format!("{}.{}", ts.seconds, ts.nanos))
            .unwrap_or_default()
    };
    let (from, to) = (
        instant(req.opened_from.as_ref()),
        instant(req.opened_to.as_ref()),
    );
    Scope::of(&[
        viewer.office.as_str().as_bytes(),
        &[
            u8::from(viewer.admin),
            u8::from(req.has_overdue_handoffs),
            u8::from(req.has_overdue_clocks),
        ],
        &req.agency.to_be_bytes(),
        &req.track_status.to_be_bytes(),
        &req.case_type.to_be_bytes(),
        from.as_bytes(),
        to.as_bytes(),
        req.text.as_bytes(),
    ])
}

/// The audit detail naming redacted versions, if any.
pub(crate) fn redaction_detail(events: &[pb::TimelineEvent]) -> Option<String> {
    let redacted: Vec<u64> = events
        .iter()
        .filter(|e| e.redacted)
        .map(|e| e.case_version)
        .collect();
    (!redacted.is_empty()).then(|| format!("redacted {}", version_list(&redacted)))
}

impl GatewayService {
    #[tracing::instrument(skip_all, fields(case_id = %request.get_ref().case_id))]
    async fn get_timeline(
        &self,
        request: Request<pb::GetTimelineRequest>,
    ) -> Result<pb::GetTimelineResponse, ReadError> {
        let (caller, viewer) = who(&request)?;
        let req = request.into_inner();
        let case = case_id(&req.case_id)?;
        let direction = direction(req.direction)?;
        let limit = limit(req.limit)?;
        let from = match (direction, req.from_version) {
            (Direction::Backward, 0) => u64::MAX,
            (_, version) => version,
        };
        let (query_case, query_viewer) = (case.clone(), viewer.clone());
        let openers = self.shared.openers.clone();
        let page = self
            .shared
            .store
            .read(move |p| {
                let rows = p.timeline(&query_case, from, direction, limit)?;
                let Some(state) = p
                    .case_state(&query_case)?
                    .filter(|s| query_viewer.may_see_case(s))
                else {
                    return Ok(None);
                };
                let events = rows
                    .iter()
                    .map(|row| {
                        timeline_event(
                            row,
                            query_viewer.sight(&state, row.version),
                            &query_viewer,
                            &openers,
                            state.widened_keys(row.version),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some((events, state.version)))
            })
            .await?;
        let Some((events, case_version)) = page else {
            return self.not_found(&caller, "GetTimeline", &case).await;
        };
        let last = events.last().map(|e| e.case_version);
        let (has_more, next_from_version) = match (direction, last) {
            (Direction::Forward, Some(v)) if v < case_version => (true, v + 1),
            (Direction::Backward, Some(v)) if v > 1 => (true, v - 1),
            _ => (false, 0),
        };
        self.shared
            .audit(
                &caller,
                Read {
                    method: "GetTimeline",
                    case_id: case.to_string(),
                    versions: events.iter().map(|e| e.case_version).collect(),
                    detail: redaction_detail(&events),
                },
            )
            .await?;
        Ok(pb::GetTimelineResponse {
            events,
            case_version,
            has_more,
            next_from_version,
        })
    }

    /// The proof log, or FAILED_PRECONDITION.
    fn proofs(&self) -> Result<&Arc<ProofLog>, ReadError> {
        self.shared.proofs.as_ref().ok_or(ReadError::NoLog)
    }

    /// Whether the caller may see `case` (as GetTimeline decides), and its latest
    /// projected version.
    async fn visible_version(
        &self,
        viewer: &Viewer,
        case: &CaseId,
    ) -> Result<Option<u64>, ReadError> {
        let (query_case, query_viewer) = (case.clone(), viewer.clone());
        self.shared
            .store
            .read(move |p| {
                Ok(p.case_state(&query_case)?
                    .filter(|s| query_viewer.may_see_case(s))
                    .map(|s| s.version))
            })
            .await
    }

    async fn audit_proof(
        &self,
        caller: &Caller,
        method: &'static str,
        case_id: String,
        versions: Vec<u64>,
        size: u64,
    ) -> Result<(), ReadError> {
        self.shared
            .audit(
                caller,
                Read {
                    method,
                    case_id,
                    versions,
                    detail: Some(format!("checkpoint size {size}")),
                },
            )
            .await
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<pb::GetCheckpointResponse, ReadError> {
        let (caller, _viewer) = who(&request)?;
        let proofs = self.proofs()?;
        let latest = proofs.latest().await?;
        let size = latest.signed.checkpoint.size;
        self.audit_proof(&caller, "GetCheckpoint", String::new(), Vec::new(), size)
            .await?;
        Ok(pb::GetCheckpointResponse {
            checkpoint: latest.text,
            origin: proofs.origin().to_owned(),
            size: latest.signed.checkpoint.size,
        })
    }

    #[tracing::instrument(skip_all, fields(case_id = %request.get_ref().case_id))]
    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<pb::GetInclusionProofResponse, ReadError> {
        let (caller, viewer) = who(&request)?;
        let req = request.into_inner();
        let case = case_id(&req.case_id)?;
        if req.case_version == 0 {
            return Err(ReadError::invalid("case_version", "must be 1 or more"));
        }
        let proofs = self.proofs()?.clone();
        let latest = proofs.latest().await?;
        // The projection and the log are read at once (two blocking reads); nothing of
        // the log's answer is used before the visibility check has passed.
        let (projected, inclusion) = tokio::join!(
            self.visible_version(&viewer, &case),
            proofs.inclusion_of(case.to_string(), req.case_version, &latest)
        );
        let Some(projected) = projected? else {
            return self.not_found(&caller, "GetInclusionProof", &case).await;
        };
        let inclusion = match inclusion? {
            Some(inclusion) => inclusion,
            // A version the projection knows but the log does not yet.
            None if req.case_version <= projected => return Err(ReadError::NotYetCheckpointed),
            None => {
                return Err(ReadError::NotFound {
                    what: format!("version {} of case {case}", req.case_version),
                });
            }
        };
        self.audit_proof(
            &caller,
            "GetInclusionProof",
            case.to_string(),
            vec![req.case_version],
            latest.signed.checkpoint.size,
        )
        .await?;
        let index = inclusion.sequence - 1;
        Ok(pb::GetInclusionProofResponse {
            leaf_index: index,
            entry: inclusion.entry.to_vec(),
            tlog_proof: tlog_proof(index, &inclusion.proof, &latest),
            proof: hash_bytes(&inclusion.proof),
            checkpoint: latest.text,
        })
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<pb::GetConsistencyProofResponse, ReadError> {
        let (caller, _viewer) = who(&request)?;
        let req = request.into_inner();
        let proofs = self.proofs()?.clone();
        // An explicit size needs no checkpoint: a witness checks a checkpoint it was
        // shown against the one it cosigned, whatever the stream's last one says.
        let second = match req.second_size {
            0 => proofs.latest().await?.signed.checkpoint.size,
            n => n,
        };
        let proof = proofs.consistency(req.first_size, second).await?;
        self.audit_proof(
            &caller,
            "GetConsistencyProof",
            String::new(),
            Vec::new(),
            second,
        )
        .await?;
        Ok(pb::GetConsistencyProofResponse {
            first_size: req.first_size,
            second_size: second,
            proof: hash_bytes(&proof),
        })
    }

    #[tracing::instrument(skip_all, fields(case_id = %request.get_ref().case_id))]
    async fn get_case_head_proof(
        &self,
        request: Request<pb::GetCaseHeadProofRequest>,
    ) -> Result<pb::GetCaseHeadProofResponse, ReadError> {
        let (caller, viewer) = who(&request)?;
        let case = case_id(&request.get_ref().case_id)?;
        let proofs = self.proofs()?.clone();
        if self.visible_version(&viewer, &case).await?.is_none() {
            return self.not_found(&caller, "GetCaseHeadProof", &case).await;
        }
        let latest = proofs.latest().await?;
        let heads = proofs.heads(latest.signed.checkpoint.size).await?;
        // A case the projection shows but the checkpoint does not cover yet.
        let (head, proof) = heads
            .prove(case.as_str())
            .ok_or(ReadError::NotYetCheckpointed)?;
        self.audit_proof(
            &caller,
            "GetCaseHeadProof",
            case.to_string(),
            vec![head.version],
            latest.signed.checkpoint.size,
        )
        .await?;
        Ok(pb::GetCaseHeadProofResponse {
            case_version: head.version,
            event_hash: head.event_hash.to_vec(),
            leaf_index: proof.index,
            case_count: proof.count,
            proof: hash_bytes(&proof.proof),
            checkpoint: latest.text,
        })
    }

    /// Records a read of a case that does not exist for the caller, then answers
    /// NOT_FOUND: attempts on other agencies' cases belong in the audit trail too.
    async fn not_found<T>(
        &self,
        caller: &Caller,
        method: &'static str,
        case: &CaseId,
    ) -> Result<T, ReadError> {
        self.shared
            .audit(
                caller,
                Read {
                    method,
                    case_id: case.to_string(),
                    versions: Vec::new(),
                    detail: Some("not found".into()),
                },
            )
            .await?;
        Err(ReadError::case_not_found(case.as_str()))
    }

    #[tracing::instrument(skip_all, fields(case_id = %request.get_ref().case_id))]
    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<pb::GetCaseResponse, ReadError> {
        let (caller, viewer) = who(&request)?;
        let case = case_id(&request.get_ref().case_id)?;
        let now = OffsetDateTime::now_utc();
        let (query_case, query_viewer) = (case.clone(), viewer.clone());
        let summary = self
            .shared
            .store
            .read(move |p| {
                let Some(summary) = p.case_summary(&query_case, now)? else {
                    return Ok(None);
                };
                let Some(state) = p
                    .case_state(&query_case)?
                    .filter(|s| query_viewer.may_see_case(s))
                else {
                    return Ok(None);
                };
                Ok(Some(case_summary(&summary, &state, &query_viewer)))
            })
            .await?;
        let Some(summary) = summary else {
            return self.not_found(&caller, "GetCase", &case).await;
        };
        self.shared
            .audit(
                &caller,
                Read {
                    method: "GetCase",
                    case_id: case.to_string(),
                    versions: Vec::new(),
                    detail: Some(format!(
                        "version {}{}",
                        summary.version,
                        if summary.redacted { ", redacted" } else { "" }
                    )),
                },
            )
            .await?;
        Ok(pb::GetCaseResponse {
            case: Some(summary),
        })
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Result<pb::ListCasesResponse, ReadError> {
        let (caller, viewer) = who(&request)?;
        let req = request.into_inner();
        let asked_agency = agency_filter("agency", req.agency)?;
        let now = OffsetDateTime::now_utc();
        let filter = CaseFilter {
            agency: asked_agency,
            track_status: track_status_filter(req.track_status)?,
            case_type: case_type_filter(req.case_type)?,
            opened_from: instant_filter("opened_from", req.opened_from.as_ref())?,
            opened_to: instant_filter("opened_to", req.opened_to.as_ref())?,
            overdue_at: req.has_overdue_handoffs.then_some(now),
            any_clock_overdue_at: req.has_overdue_clocks.then_some(now),
            text: (!req.text.is_empty()).then(|| req.text.clone()),
            // The projection lists only what the caller may see and matches filters only
            // on what it may read, inside the query: a page is filled from visible rows,
            // and nothing hidden can decide whether a row is listed.
            reader: Some(ListReader {
                office: viewer.office.clone(),
                all_cases: viewer.admin,
            }),
        };
        let limit = limit(req.limit)?;
        let scope = list_scope(&viewer, &req);
        let cursor = if req.page_token.is_empty() {
            None
        } else {
            Some(self.shared.page_tokens.open(&scope, &req.page_token)?)
        };
        let query_viewer = viewer.clone();
        let (cases, next) = self
            .shared
            .store
            .read(move |p| {
                let page = p.list_cases(&filter, cursor.as_deref(), limit)?;
                let mut cases = Vec::with_capacity(page.cases.len());
                for item in &page.cases {
                    let state = p.case_state(&item.case_id)?;
                    match state.filter(|s| query_viewer.may_see_case(s)) {
                        Some(state) => cases.push(list_item(item, &state, &query_viewer)),
                        // The query and `sight` are the same rule; should they ever
                        // disagree, nothing the caller may not see leaves the gateway.
                        None => tracing::error!(
                            case_id = %item.case_id,
                            "listing returned a case its reader may not see"
                        ),
                    }
                }
                Ok((cases, page.next_cursor))
            })
            .await?;
        // The token continues after the last case returned, sealed for this listing.
        let next = next
            .map(|cursor| self.shared.page_tokens.seal(&scope, &cursor))
            .transpose()?;
        let ids: Vec<&str> = cases.iter().map(|c| c.case_id.as_str()).collect();
        self.shared
            .audit(
                &caller,
                Read {
                    method: "ListCases",
                    case_id: String::new(),
                    versions: Vec::new(),
                    detail: Some(format!("{} cases: {}", ids.len(), ids.join(","))),
                },
            )
            .await?;
        Ok(pb::ListCasesResponse {
            cases,
            next_page_token: next.unwrap_or_default(),
        })
    }

    async fn find_case_by_reference(
        &self,
        request: Request<pb::FindCaseByReferenceRequest>,
    ) -> Result<pb::FindCaseByReferenceResponse, ReadError> {
        let (caller, viewer) = who(&request)?;
        let req = request.into_inner();
        let agency = agency(req.agency).ok_or_else(|| {
            ReadError::invalid(
                "agency",
                format!("{} is not an agency (1 to 5)", req.agency),
            )
        })?;
        let number = local_number(&req.local_number)?;
        let now = OffsetDateTime::now_utc();
        let (query_viewer, query_number) = (viewer.clone(), number.clone());
        let cases = self
            .shared
            .store
            .read(move |p| {
                let mut cases = Vec::new();
                for id in p.find_by_reference(agency, &query_number)? {
                    let Some(summary) = p.case_summary(&id, now)? else {
                        continue;
                    };
                    let Some(state) = p.case_state(&id)?.filter(|s| query_viewer.may_see_case(s))
                    else {
                        continue;
                    };
                    // The link itself is content: only a viewer who may read the event
                    // that made it finds the case by it.
                    let linked = summary.references.iter().any(|r| {
                        r.reference.agency == agency
                            && r.reference.number == query_number
                            && query_viewer.reads(&state, r.source_version)
                    });
                    if linked {
                        cases.push(list_item_of_summary(&summary, &state, &query_viewer));
                    }
                }
                Ok(cases)
            })
            .await?;
        let reference = format!("{}:{number}", agency_name(agency));
        let ids: Vec<&str> = cases.iter().map(|c| c.case_id.as_str()).collect();
        self.shared
            .audit(
                &caller,
                Read {
                    method: "FindCaseByReference",
                    case_id: if ids.len() == 1 {
                        ids[0].to_owned()
                    } else {
                        String::new()
                    },
                    versions: Vec::new(),
                    detail: Some(format!(
                        "reference {reference}: {} found {}",
                        ids.len(),
                        ids.join(",")
                    )),
                },
            )
            .await?;
        if cases.is_empty() {
            return Err(ReadError::NotFound {
                what: format!("reference {reference}"),
            });
        }
        Ok(pb::FindCaseByReferenceResponse { cases })
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn get_timeline(
        &self,
        request: Request<pb::GetTimelineRequest>,
    ) -> Result<Response<pb::GetTimelineResponse>, Status> {
        Ok(Response::new(
            GatewayService::get_timeline(self, request).await?,
        ))
    }

    type WatchTimelineStream = ResponseStream<pb::WatchTimelineResponse>;

    async fn watch_timeline(
        &self,
        request: Request<pb::WatchTimelineRequest>,
    ) -> Result<Response<Self::WatchTimelineStream>, Status> {
        let (caller, viewer) = who(&request)?;
        let req = request.into_inner();
        let case = case_id(&req.case_id)?;
        Ok(Response::new(
            watch::timeline(self.shared.clone(), caller, viewer, case, req.from_version).await?,
        ))
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::GetCaseResponse>, Status> {
        Ok(Response::new(
            GatewayService::get_case(self, request).await?,
        ))
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        Ok(Response::new(
            GatewayService::list_cases(self, request).await?,
        ))
    }

    async fn find_case_by_reference(
        &self,
        request: Request<pb::FindCaseByReferenceRequest>,
    ) -> Result<Response<pb::FindCaseByReferenceResponse>, Status> {
        Ok(Response::new(
            GatewayService::find_case_by_reference(self, request).await?,
        ))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        Ok(Response::new(
            GatewayService::get_checkpoint(self, request).await?,
        ))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        Ok(Response::new(
            GatewayService::get_inclusion_proof(self, request).await?,
        ))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        Ok(Response::new(
            GatewayService::get_consistency_proof(self, request).await?,
        ))
    }

    async fn get_case_head_proof(
        &self,
        request: Request<pb::GetCaseHeadProofRequest>,
    ) -> Result<Response<pb::GetCaseHeadProofResponse>, Status> {
        Ok(Response::new(
            GatewayService::get_case_head_proof(self, request).await?,
        ))
    }

    type WatchFeedStream = ResponseStream<pb::WatchFeedResponse>;

    async fn watch_feed(
        &self,
        request: Request<pb::WatchFeedRequest>,
    ) -> Result<Response<Self::WatchFeedStream>, Status> {
        let (caller, viewer) = who(&request)?;
        let from = request.get_ref().from_position;
        Ok(Response::new(watch::feed(
            self.shared.clone(),
            caller,
            viewer,
            from,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_refuse_out_of_range_values() {
        assert_eq!(limit(0).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(limit(1).ok(), Some(1));
        assert_eq!(limit(1000).ok(), Some(1000));
        for bad in [-1, 1001, i32::MIN, i32::MAX] {
            let err = limit(bad).expect_err("out of range");
            assert!(err.to_string().starts_with("invalid limit"), "{err}");
        }
    }

    #[test]
    fn unknown_enum_values_are_refused_naming_the_field() {
        assert!(matches!(direction(0), Ok(Direction::Forward)));
        assert!(matches!(direction(2), Ok(Direction::Backward)));
        assert!(
            direction(3)
                .expect_err("unknown")
                .to_string()
                .contains("direction")
        );
        assert!(track_status_filter(9).is_err());
        assert!(case_type_filter(99).is_err());
        assert!(agency_filter("agency", 6).is_err());
        assert_eq!(agency_filter("agency", 0).ok(), Some(None));
    }

    #[test]
    fn case_ids_and_local_numbers_are_checked() {
        assert!(case_id("NB-2026_1").is_ok());
        for bad in ["", "a b", "a.b", &"x".repeat(65)] {
            assert!(case_id(bad).is_err(), "{bad:?}");
        }
        assert!(local_number("(2026)Zhe01XingChu5").is_ok());
        assert!(local_number(" ").is_err());
        assert!(local_number("a\u{7}").is_err());
        assert!(local_number(&"9".repeat(65)).is_err());
    }
}
