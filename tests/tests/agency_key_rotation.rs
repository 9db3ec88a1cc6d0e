//! Key expiry and rotation over the real agency binaries: the customs office's signing
//! key reaches its `valid_until` in the middle of a load. From then on every command is
//! refused (UNAVAILABLE, reason `signing_key_not_valid`) and records nothing, so no
//! command is ever answered OK that a consumer dead-letters; after the rotation (the new
//! key added to the registry file, then a new signing key file, both picked up without
//! a restart) the same commands, retried with their request ids, go on.

mod agency_harness;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Mutex;
use tonic::Code;

use casebus_integrity::{OfficeRegistry, OfficeSigner, verify_case};
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{AddNoteRequest, CommandReply, OpenCaseRequest};
use casebus_test_support::{retry_pause, wait_until};

use agency_harness::*;

/// Ceiling for a service to pick up a changed file.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Ceiling for the load to reach each stage.
const STAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Load clients, each on its own case.
const CLIENTS: usize = 4;
/// How long the old key stays valid once the load is about to start.
const KEY_LEFT: time::Duration = time::Duration::seconds(4);

/// One answer of the load.
#[derive(Debug, Clone)]
struct Answer {
    case_id: String,
    reply: CommandReply,
    answered_at: OffsetDateTime,
}

#[derive(Default)]
struct Outcomes {
    ok: Vec<Answer>,
    /// `(code, reason)` of every refusal.
    refused: Vec<(Code, String)>,
}

/// One load client: opens its case, then adds notes, each command retried with its
/// request id until it is answered OK (as a back-office client does with UNAVAILABLE).
async fn client(
    mut api: AgencyServiceClient<Authed>,
    case_id: String,
    outcomes: Arc<Mutex<Outcomes>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let request_id = format!("{case_id}-{n}");
        let mut retries = 0;
        loop {
            let result = if n == 0 {
                api.open_case(OpenCaseRequest {
                    meta: meta_with(&case_id, &request_id),
                    case_opened: opened("rotation"),
                })
                .await
            } else {
                api.add_note(AddNoteRequest {
                    meta: meta_with(&case_id, &request_id),
                    note_added: note(&format!("note {n}")),
                })
                .await
            };
            match result {
                Ok(reply) => {
                    outcomes.lock().await.ok.push(Answer {
                        case_id: case_id.clone(),
                        reply: reply.into_inner(),
                        answered_at: OffsetDateTime::now_utc(),
                    });
                    break;
                }
                Err(status) => {
                    outcomes
                        .lock()
                        .await
                        .refused
                        .push((status.code(), reason(&status)));
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    retry_pause(retries).await;
                    retries += 1;
                }
            }
        }
        n += 1;
    }
}

/// How many times the service logged that it reloaded its keys.
fn reloads(service: &Running) -> usize {
    service.log_text().matches("keys reloaded").count()
}

async fn wait_reloaded(service: &Running, more_than: usize, what: &str) {
    wait_until(RELOAD_TIMEOUT, what, async || reloads(service) > more_than)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", service.log_text()));
}

/// Writes a key file the way an operator's tooling should: a sibling, then a rename, so
/// a service never reads half a file.
fn install_key(signer: &OfficeSigner, path: &Path) {
    let tmp = path.with_extension("key.new");
    signer.save(&tmp).expect("new key file");
    std::fs::rename(&tmp, path).expect("install key file");
}

#[tokio::test]
async fn a_key_that_expires_during_a_load_loses_no_acknowledged_command_and_rotation_resumes_appends()
 {
    let f = Fixture::start().await;
    let registry_path = f.dir.path().join("registry.toml");
    let key_path = f
        .dir
        .path()
        .join(format!("{}.key", CUSTOMS.replace(':', "_")));
    let reload = ["--key-reload-interval", "200ms"];
    let (customs, ipc) = tokio::join!(f.spawn_with(CUSTOMS, &reload), f.spawn_with(IPC, &reload));

    // The old key gets an end a few seconds ahead, while the services run.
    let expiry = OffsetDateTime::now_utc() + KEY_LEFT;
    let old_key = signer(CUSTOMS);
    let mut retiring = registry();
    retiring
        .retire_key(old_key.key_id(), expiry)
        .expect("retire the old key");
    let (c0, i0) = (reloads(&customs), reloads(&ipc));
    retiring.save(&registry_path).expect("registry file");
    wait_reloaded(&customs, c0, "customs to read the retiring registry").await;
    wait_reloaded(&ipc, i0, "the ip centre to read the retiring registry").await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client(
                customs.common(),
                format!("C-ROT-{i}"),
                outcomes.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // The key expires under load: commands are refused from then on.
    wait_until(
        STAGE_TIMEOUT,
        "a command refused because the signing key expired",
        async || {
            outcomes
                .lock()
                .await
                .refused
                .iter()
                .any(|(_, r)| r == "signing_key_not_valid")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", customs.log_text()));

    // Rotation in the documented order: the new key into every registry first ...
    let new_key = OfficeSigner::from_seed(office(CUSTOMS), "k2", [77; 32]).expect("new key");
    let mut rotated = retiring.clone();
    rotated
        .add_key(
            &office(CUSTOMS),
            new_key.key_entry(OffsetDateTime::now_utc()),
        )
        .expect("add the new key");
    let (c1, i1) = (reloads(&customs), reloads(&ipc));
    rotated.save(&registry_path).expect("registry file");
    wait_reloaded(&customs, c1, "customs to read the rotated registry").await;
    wait_reloaded(&ipc, i1, "the ip centre to read the rotated registry").await;
    // ... then the signing key file, picked up by its change and, for good measure, a
    // SIGHUP (both reload; neither restarts the process).
    let c2 = reloads(&customs);
    install_key(&new_key, &key_path);
    let pid = customs.child.id().expect("customs runs");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success(), "SIGHUP delivered");
    wait_reloaded(&customs, c2, "customs to install the new signing key").await;
    assert!(
        customs
            .log_text()
            .contains(&format!("signing_key={}", new_key.key_id())),
        "customs signs with the new key:\n{}",
        customs.log_text()
    );

    // Appends go on: every client gets more commands through.
    let rotated_at = OffsetDateTime::now_utc();
    wait_until(STAGE_TIMEOUT, "appends after the rotation", async || {
        let o = outcomes.lock().await;
        let after = |case: &str| {
            o.ok.iter()
                .filter(|a| a.case_id == case && a.answered_at > rotated_at)
                .count()
        };
        (0..CLIENTS).all(|i| after(&format!("C-ROT-{i}")) >= 3)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", customs.log_text()));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("load client");
    }

    let outcomes = outcomes.lock().await;
    let ok_before = outcomes
        .ok
        .iter()
        .filter(|a| a.answered_at < expiry)
        .count();
    assert!(ok_before > 0, "commands were answered OK before the expiry");
    for (code, why) in &outcomes.refused {
        assert_eq!(
            (code, why.as_str()),
            (&Code::Unavailable, "signing_key_not_valid"),
            "the only refusal is the expired key"
        );
    }

    // Everything answered OK is stored and verifies with the final registry; nothing
    // signed with the old key was recorded after its end.
    let final_registry = OfficeRegistry::load(&registry_path).expect("final registry");
    let mut signed_with_new = 0;
    for i in 0..CLIENTS {
        let case_id = format!("C-ROT-{i}");
        let id = case(&case_id);
        let last = f.bus.last_sequence(&id).await.expect("last sequence");
        let messages = f
            .bus
            .read_case_messages(&id, 0, last)
            .await
            .expect("read case");
        let report = verify_case(
            &id,
            messages.iter().map(|m| m.payload.as_ref()),
            &final_registry,
        );
        assert!(report.is_intact(), "{case_id}: {:?}", report.failures);
        for event in &report.events {
            if event.signed.key_id == old_key.key_id() {
                assert!(event.recorded_at < expiry, "old key used after its end");
            } else {
                assert_eq!(event.signed.key_id, new_key.key_id());
                signed_with_new += 1;
            }
        }
        for answer in outcomes.ok.iter().filter(|a| a.case_id == case_id) {
            let stored = report
                .events
                .iter()
                .find(|e| e.event_id.as_str() == answer.reply.event_id)
                .unwrap_or_else(|| panic!("acknowledged {} is not stored", answer.reply.event_id));
            assert_eq!(stored.hash.0.to_vec(), answer.reply.event_hash);
        }
    }
    assert!(
        signed_with_new >= 3 * CLIENTS,
        "the new key signs the new events"
    );

    // No consumer refused anything: both services' receipts consumers saw every event.
    f.wait_consumer_caught_up("svc-customs-ningbo").await;
    f.wait_consumer_caught_up("svc-ip_center-zhejiang").await;
    f.assert_no_dead_letters().await;
    assert_eq!(
        customs.child.id(),
        Some(pid),
        "the service was never restarted"
    );
}
