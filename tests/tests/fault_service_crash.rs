//! Service crashes: the real binaries under a load of gRPC commands that runs every case
//! through all five agencies (customs opens it, asks the IP center for an assessment and
//! refers it to the police; the police accept, file an investigation and transfer it for
//! prosecution; the procuratorate accepts, indicts and prosecutes in court; the court
//! accepts; then customs adds notes), each hand-off acknowledged automatically by the
//! receiving service, and a gateway projecting everything. Meanwhile `kill -9` hits the
//! gateway and each of the five agency services in turn, each restarted at once. The
//! clients retry every command whose outcome they do not know with the same request id
//! and follow a restarted service to its new port.
//!
//! It proves: every acknowledged command is in the stream exactly once and every chain
//! verifies; each of the four hand-offs of every case has exactly one automatic receipt
//! (a restarted service does not issue a second); the restarted gateway's projection
//! equals the projection folded independently from the stream (no gap, no duplicate,
//! position at the end); nothing is dead-lettered.

mod fault_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use casebus_bus::Bus;
use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;
use casebus_proto::EventId;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{
    AcceptHandoffRequest, AddNoteRequest, CommandReply, HandoffDetails, OpenCaseRequest,
};
use casebus_proto::customs::v1::customs_service_client::CustomsServiceClient;
use casebus_proto::customs::v1::{ReferToPublicSecurityRequest, RequestAssessmentRequest};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{
    CaseOpened, CaseType, HandoffAccepted, IndictmentFiled, InvestigationConcluded,
    InvestigationFiled, NoteAdded, Party, PartyRole,
};
use casebus_proto::procuratorate::v1::procuratorate_service_client::ProcuratorateServiceClient;
use casebus_proto::procuratorate::v1::{FileIndictmentRequest, ProsecuteInCourtRequest};
use casebus_proto::public_security::v1::public_security_service_client::PublicSecurityServiceClient;
use casebus_proto::public_security::v1::{
    ConcludeInvestigationRequest, FileInvestigationRequest, TransferForProsecutionRequest,
};
use casebus_test_support::{wait_until, wait_until_owned};
use tonic::Code;

use fault_common::audit::{audit, dead_letters, last_sequence, read_stream};
use fault_common::grpc_load::{Target, meta, retarget, target};
use fault_common::load::{Ack, Ledger, percentiles};
use fault_common::report::{Figures, ms};
use fault_common::services::{Service, Stage};
use fault_common::{COURT, CUSTOMS, IPC, POLICE, PROC, case, full, generations, open_bus};

/// Ceiling for the whole load, crashes included.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Ceiling for consumers and the gateway to catch up after the load.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
const GATEWAY: &str = "crash";
/// Ceiling for one command, retries (and waiting for a receipt) included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The offices acting at each step of a case's workflow; the notes follow.
const WORKFLOW: [&str; 12] = [
    CUSTOMS, // open
    CUSTOMS, // ask the IP center for an assessment (a1)
    CUSTOMS, // refer to the police (h1)
    POLICE,  // accept h1, once acknowledged
    POLICE,  // file an investigation
    POLICE,  // conclude it
    POLICE,  // transfer for prosecution (h3)
    PROC,    // accept h3, once acknowledged
    PROC,    // indict
    PROC,    // prosecute in court (h4)
    COURT,   // accept h4, once acknowledged
    IPC,     // accept a1, once acknowledged
];
/// The hand-offs of each case and the service that acknowledges each.
const HANDOFFS: [(&str, &str); 4] = [("a1", IPC), ("h1", POLICE), ("h3", PROC), ("h4", COURT)];

fn details(handoff_id: &str, to: &str) -> Option<HandoffDetails> {
    Some(HandoffDetails {
        handoff_id: handoff_id.into(),
        to_office_id: to.into(),
        reason: "next step of the procedure".into(),
        evidence_ids: vec![],
    })
}

fn accept(case_id: &str, request_id: &str, handoff_id: &str) -> AcceptHandoffRequest {
    AcceptHandoffRequest {
        meta: meta(case_id, request_id),
        handoff_accepted: Some(HandoffAccepted {
            handoff_id: handoff_id.into(),
            local_case_number: String::new(),
        }),
    }
}

/// Whether `case_id` holds the automatic receipt of `handoff_id`.
async fn receipt_seen(bus: &Bus, case_id: &casebus_proto::CaseId, handoff_id: &str) -> bool {
    bus.load_case(case_id).await.is_ok_and(|c| {
        c.events.iter().any(|e| {
            matches!(
                e.event.event.payload.as_ref().and_then(|p| p.kind.as_ref()),
                Some(Kind::HandoffAcknowledged(a)) if a.handoff_id == handoff_id
            )
        })
    })
}

/// Sends step `step` of `case_id`'s workflow to the office acting at it, until it is
/// acknowledged: unknown outcomes are retried with the same request id, and an accept
/// that comes before the automatic receipt (FAILED_PRECONDITION) is retried until the
/// receipt is there.
async fn workflow_step(
    bus: &Bus,
    targets: &HashMap<&'static str, Target>,
    ledger: &Ledger,
    case_id: &str,
    step: usize,
) {
    let office = WORKFLOW.get(step).copied().unwrap_or(CUSTOMS);
    let request_id = format!("s{step}");
    let r = request_id.as_str();
    let started = Instant::now();
    let mut retries = 0;
    // A clerk accepts a hand-off once it shows in the inbox acknowledged: wait for the
    // receiving service's automatic receipt (it may be restarting).
    let awaited = match step {
        3 => Some("h1"),
        7 => Some("h3"),
        10 => Some("h4"),
        11 => Some("a1"),
        _ => None,
    };
    if let Some(handoff_id) = awaited {
        let id = case(case_id);
        let seen = wait_until_owned(
            COMMAND_TIMEOUT,
            &format!("the receipt of {handoff_id} in {case_id}"),
            || {
                let (bus, id) = (bus.clone(), id.clone());
                async move { receipt_seen(&bus, &id, handoff_id).await }
            },
        )
        .await;
        if let Err(e) = seen {
            ledger.failures.lock().expect("lock").push(e.to_string());
            return;
        }
    }
    loop {
        let channel = targets[office].read().expect("lock").0.clone();
        let result: Result<tonic::Response<CommandReply>, tonic::Status> = match step {
            0 => {
                AgencyServiceClient::new(channel)
                    .open_case(OpenCaseRequest {
                        meta: meta(case_id, r),
                        case_opened: Some(CaseOpened {
                            case_type: CaseType::CounterfeitTrademark as i32,
                            title: format!("crash case {case_id}"),
                            parties: vec![Party {
                                party_id: "s1".into(),
                                role: PartyRole::Suspect as i32,
                                name: "a suspect".into(),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                    })
                    .await
            }
            1 => {
                CustomsServiceClient::new(channel)
                    .request_assessment(RequestAssessmentRequest {
                        meta: meta(case_id, r),
                        handoff: details("a1", ""),
                    })
                    .await
            }
            2 => {
                CustomsServiceClient::new(channel)
                    .refer_to_public_security(ReferToPublicSecurityRequest {
                        meta: meta(case_id, r),
                        handoff: details("h1", POLICE),
                    })
                    .await
            }
            3 => {
                AgencyServiceClient::new(channel)
                    .accept_handoff(accept(case_id, r, "h1"))
                    .await
            }
            4 => {
                PublicSecurityServiceClient::new(channel)
                    .file_investigation(FileInvestigationRequest {
                        meta: meta(case_id, r),
                        investigation_filed: Some(InvestigationFiled {
                            police_case_number: format!("PS-{case_id}"),
                            suspected_offence: "Criminal Law art. 213".into(),
                            basis: "referral by customs".into(),
                        }),
                    })
                    .await
            }
            5 => {
                PublicSecurityServiceClient::new(channel)
                    .conclude_investigation(ConcludeInvestigationRequest {
                        meta: meta(case_id, r),
                        investigation_concluded: Some(InvestigationConcluded {
                            findings: "sold through three shops".into(),
                            recommend_prosecution: true,
                        }),
                    })
                    .await
            }
            6 => {
                PublicSecurityServiceClient::new(channel)
                    .transfer_for_prosecution(TransferForProsecutionRequest {
                        meta: meta(case_id, r),
                        handoff: details("h3", PROC),
                    })
                    .await
            }
            7 => {
                AgencyServiceClient::new(channel)
                    .accept_handoff(accept(case_id, r, "h3"))
                    .await
            }
            8 => {
                ProcuratorateServiceClient::new(channel)
                    .file_indictment(FileIndictmentRequest {
                        meta: meta(case_id, r),
                        indictment_filed: Some(IndictmentFiled {
                            handoff_id: "h3".into(),
                            indictment_number: format!("IND-{case_id}"),
                            charges: "Criminal Law art. 213".into(),
                            defendant_party_ids: vec!["s1".into()],
                        }),
                    })
                    .await
            }
            9 => {
                ProcuratorateServiceClient::new(channel)
                    .prosecute_in_court(ProsecuteInCourtRequest {
                        meta: meta(case_id, r),
                        handoff: details("h4", COURT),
                    })
                    .await
            }
            10 => {
                AgencyServiceClient::new(channel)
                    .accept_handoff(accept(case_id, r, "h4"))
                    .await
            }
            11 => {
                AgencyServiceClient::new(channel)
                    .accept_handoff(accept(case_id, r, "a1"))
                    .await
            }
            n => {
                AgencyServiceClient::new(channel)
                    .add_note(AddNoteRequest {
                        meta: meta(case_id, r),
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
                    request_id: request_id.clone(),
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
                if (matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Aborted
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                )) && started.elapsed() < COMMAND_TIMEOUT =>
            {
                retries += 1;
                casebus_test_support::retry_pause(retries).await;
            }
            Err(status) => {
                ledger.failures.lock().expect("lock").push(format!(
                    "{case_id} step {step} by {office}: {:?} {}",
                    status.code(),
                    status.message()
                ));
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_gateway_and_each_agency_service_mid_load_leaves_no_gap_duplicate_or_second_receipt()
 {
    let generation = generations().remove(0);
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "service-crash", 1).await;
    let stage = Stage::new(urls.clone());
    let mut gateway = stage.gateway(GATEWAY).await;
    let mut services: Vec<(&'static str, Service)> = Vec::new();
    for office in [CUSTOMS, IPC, POLICE, PROC, COURT] {
        services.push((office, stage.agency(office).await));
    }
    let targets: HashMap<&'static str, Target> =
        services.iter().map(|(o, s)| (*o, target(s))).collect();
    let targets = Arc::new(targets);

    let (cases, notes, workers) = if full() { (120, 10, 24) } else { (40, 4, 16) };
    let steps = WORKFLOW.len() + notes;
    let total = cases * steps;
    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();
    let mut load = JoinSet::new();
    for w in 0..workers {
        let (targets, ledger, bus) = (targets.clone(), ledger.clone(), bus.clone());
        load.spawn(async move {
            let mine: Vec<usize> = (w..cases).step_by(workers).collect();
            for step in 0..steps {
                for &n in &mine {
                    let case_id = format!("svc-{n}");
                    workflow_step(&bus, &targets, &ledger, &case_id, step).await;
                }
            }
        });
    }

    // Kill each process in turn, spread over the load.
    let mut crashes = Vec::new();
    let victims = ["gateway", CUSTOMS, IPC, POLICE, PROC, COURT];
    for (k, who) in victims.into_iter().enumerate() {
        let threshold = (total * (k + 1) / (victims.len() + 1)) as u64;
        wait_until(
            LOAD_TIMEOUT,
            &format!("{threshold} acknowledgements"),
            async || ledger.count() >= threshold || load.is_empty(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; failures: {:?}", ledger.failures()));
        let at = Instant::now();
        let service: &mut Service = if who == "gateway" {
            &mut gateway
        } else {
            &mut services
                .iter_mut()
                .find(|(o, _)| *o == who)
                .expect("a service")
                .1
        };
        service.kill_hard().await;
        service.restart().await;
        let restarted = at.elapsed();
        if who != "gateway" {
            retarget(&targets[who], service);
        }
        crashes.push((who, at, restarted));
    }
    tokio::time::timeout(LOAD_TIMEOUT, async {
        while let Some(joined) = load.join_next().await {
            joined.expect("a load worker panicked");
        }
    })
    .await
    .expect("the load finishes");
    let load_time = started.elapsed();

    // Every consumer (police receipts, the gateway) works through the stream. Receipts
    // append events, so wait until the stream stops growing and everyone is at its end.
    let ops = Ops::from_bus(&bus);
    wait_until(
        CATCH_UP_TIMEOUT,
        "every hand-off to have its receipt",
        async || {
            let messages = read_stream(&bus, CASES_STREAM).await;
            let receipts = messages
                .iter()
                .filter(|m| m.header("Casebus-Event-Type") == Some("HandoffAcknowledged"))
                .count();
            receipts >= cases * HANDOFFS.len()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let settled = wait_until(
        CATCH_UP_TIMEOUT,
        "every consumer at the end of the stream",
        async || {
            let last = last_sequence(&bus, CASES_STREAM).await;
            let Ok(consumers) = ops.consumers(CASES_STREAM).await else {
                return None;
            };
            let all = consumers
                .iter()
                .all(|c| c.ack_floor_sequence >= last && c.ack_pending == 0 && c.pending == 0);
            (all && gateway.position() >= last).then_some(last)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gateway.all_logs()));

    let audit = audit(&bus, &ledger).await;
    let letters = dead_letters(&bus).await;
    // Receipts per hand-off, from the verified events.
    let mut receipts: HashMap<(String, String), usize> = HashMap::new();
    for m in read_stream(&bus, CASES_STREAM).await {
        if let Ok(e) = casebus_integrity::verify_signed(&m.payload, &bus.registry())
            && let Some(Kind::HandoffAcknowledged(a)) =
                e.event.payload.as_ref().and_then(|p| p.kind.as_ref())
        {
            *receipts
                .entry((e.case_id.to_string(), a.handoff_id.clone()))
                .or_default() += 1;
        }
    }
    let second_receipts = receipts.values().filter(|n| **n > 1).count();
    let (projection_diffs, last) = gateway
        .projection_diffs(&bus, &format!("gw-{GATEWAY}"))
        .await;
    let (p50, p99, max) = percentiles(ledger.acks().iter().map(|a| a.latency).collect());

    let mut figures = Figures::new(
        "service kill -9 (gateway and the five agency services)",
        &generation.label,
    );
    figures
        .row("commands acknowledged", audit.acknowledged)
        .row("retries after an unknown outcome", ledger.retries())
        .row("acknowledged but lost", audit.lost.len())
        .row("duplicated in the stream", audit.duplicated.len())
        .row("chain or signature failures", audit.chain_failures.len())
        .row("dead letters", letters.len())
        .row(
            "hand-offs / automatic receipts",
            format!(
                "{} / {}",
                cases * HANDOFFS.len(),
                receipts.values().sum::<usize>()
            ),
        )
        .row("hand-offs with a second receipt", second_receipts)
        .row(
            "gateway projection equals the fold of the stream",
            projection_diffs.is_empty(),
        )
        .row(
            "gateway position / stream end",
            format!("{} / {last}", gateway.position()),
        )
        .row(
            "restart to ready (gateway, customs, IP center, police, procuratorate, court)",
            crashes
                .iter()
                .map(|(_, _, d)| ms(*d))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .row(
            "first acknowledgement after each kill",
            crashes
                .iter()
                .map(|(_, at, _)| {
                    ledger
                        .first_ack_after(*at)
                        .map_or("none".into(), |t| ms(t - *at))
                })
                .collect::<Vec<_>>()
                .join(", "),
        )
        .row(
            "command latency p50 / p99 / max (retries included)",
            format!("{p50:.1} / {p99:.1} / {max:.1} ms"),
        )
        .row("load took", ms(load_time))
        .row("stream end when settled", settled);
    figures.write();

    assert!(
        ledger.failures().is_empty(),
        "commands failed: {:?}",
        ledger.failures()
    );
    assert_eq!(
        ledger.count(),
        total as u64,
        "every command was acknowledged"
    );
    assert!(
        audit.lost.is_empty(),
        "acknowledged events lost: {}",
        audit.summary()
    );
    assert!(
        audit.duplicated.is_empty(),
        "events stored twice: {:?}",
        audit.duplicated
    );
    assert!(
        audit.chain_failures.is_empty(),
        "chains broken: {:?}",
        audit.chain_failures
    );
    assert!(letters.is_empty(), "dead letters: {letters:?}");
    assert_eq!(
        receipts.len(),
        cases * HANDOFFS.len(),
        "every hand-off has a receipt"
    );
    assert_eq!(
        second_receipts, 0,
        "second automatic receipts: {receipts:?}"
    );
    assert_eq!(gateway.position(), last);
    assert!(
        projection_diffs.is_empty(),
        "the gateway's projection differs from the fold of the stream:\n{}",
        projection_diffs.join("\n")
    );
    assert!(gateway.is_running(), "the gateway died");
    for (office, service) in &mut services {
        assert!(service.is_running(), "the {office} service died");
    }
}
