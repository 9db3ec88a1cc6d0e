//! A load of gRPC commands through the real customs service, as a back-office system
//! sends them: open a case, refer it to the police (whose service issues the automatic
//! receipt), add notes. A command whose outcome is unknown (the service unreachable,
//! restarting, or the bus unavailable) is retried with the same request id; the target
//! can be switched to a restarted service's new address while the load runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;

use casebus_proto::EventId;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{
    AddNoteRequest, CommandMeta, CommandReply, HandoffDetails, OpenCaseRequest,
};
use casebus_proto::customs::v1::ReferToPublicSecurityRequest;
use casebus_proto::customs::v1::customs_service_client::CustomsServiceClient;
use casebus_proto::event::v1::{CaseOpened, CaseType, NoteAdded};

use super::load::{Ack, Ledger};
use super::services::{Authed, Service};
use super::{POLICE, case};

/// Ceiling for one command, retries included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// Commands per case: the opening, the referral, then notes.
pub const STEPS_PER_CASE: usize = 10;

/// Where the load sends customs commands; replaced when the service restarts.
pub type Target = Arc<RwLock<(Authed, String)>>;

pub fn meta(case_id: &str, request_id: &str) -> Option<CommandMeta> {
    Some(CommandMeta {
        case_id: case_id.into(),
        request_id: request_id.into(),
        ..Default::default()
    })
}

/// Sends one customs command until it is acknowledged, retrying unknown outcomes with
/// the same request id.
pub async fn command(
    target: &Target,
    ledger: &Ledger,
    case_id: &str,
    request_id: &str,
    step: usize,
) {
    let started = Instant::now();
    let mut retries = 0;
    loop {
        let channel = target.read().expect("lock").0.clone();
        let result: Result<tonic::Response<CommandReply>, tonic::Status> = match step {
            0 => {
                AgencyServiceClient::new(channel)
                    .open_case(OpenCaseRequest {
                        meta: meta(case_id, request_id),
                        case_opened: Some(CaseOpened {
                            case_type: CaseType::CounterfeitTrademark as i32,
                            title: format!("crash case {case_id}"),
                            ..Default::default()
                        }),
                    })
                    .await
            }
            1 => {
                CustomsServiceClient::new(channel)
                    .refer_to_public_security(ReferToPublicSecurityRequest {
                        meta: meta(case_id, request_id),
                        handoff: Some(HandoffDetails {
                            handoff_id: "h1".into(),
                            to_office_id: POLICE.into(),
                            reason: "suspected crime".into(),
                            evidence_ids: vec![],
                        }),
                    })
                    .await
            }
            n => {
                AgencyServiceClient::new(channel)
                    .add_note(AddNoteRequest {
                        meta: meta(case_id, request_id),
                        note_added: Some(NoteAdded {
                            text: format!("note {n} of {case_id}"),
                        }),
                    })
                    .await
            }
        };
        match result {
            Ok(reply) => {
                let reply = reply.into_inner();
                ledger.record(Ack {
                    case_id: case(case_id),
                    request_id: request_id.to_owned(),
                    event_id: EventId::new(&reply.event_id).expect("an event id"),
                    version: reply.case_version,
                    sequence: reply.stream_sequence,
                    duplicate: reply.duplicate,
                    at: Instant::now(),
                    latency: started.elapsed(),
                    retries,
                });
                return;
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Aborted
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                ) && started.elapsed() < COMMAND_TIMEOUT =>
            {
                retries += 1;
                casebus_test_support::retry_pause(retries).await;
            }
            Err(status) => {
                ledger.failures.lock().expect("lock").push(format!(
                    "{case_id} {request_id}: {:?} {}",
                    status.code(),
                    status.message()
                ));
                return;
            }
        }
    }
}

/// A target pointing at `service`.
pub fn target(service: &Service) -> Target {
    Arc::new(RwLock::new((
        service.authed(Some(&service.token)),
        service.token.clone(),
    )))
}

/// Points `target` at `service` (after a restart on a new port).
pub fn retarget(target: &Target, service: &Service) {
    *target.write().expect("lock") = (service.authed(Some(&service.token)), service.token.clone());
}

/// Sends commands at `rate` per second in total from `workers` clients until `stop` is
/// set: each client works its own cases one after another, [`STEPS_PER_CASE`] commands
/// each. Latency is measured from when a command was due, so a stall shows in it.
pub async fn run_paced(
    target: Target,
    ledger: Arc<Ledger>,
    prefix: String,
    workers: usize,
    rate: f64,
    stop: Arc<AtomicBool>,
) {
    let mut set = JoinSet::new();
    let period = Duration::from_secs_f64(workers as f64 / rate);
    for w in 0..workers {
        let (target, ledger, prefix, stop) =
            (target.clone(), ledger.clone(), prefix.clone(), stop.clone());
        set.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0usize;
            'cases: loop {
                let case_id = format!("{prefix}-{w}-{n}");
                for step in 0..STEPS_PER_CASE {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        break 'cases;
                    }
                    command(&target, &ledger, &case_id, &format!("r{step}"), step).await;
                }
                n += 1;
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("a load client panicked");
    }
}
