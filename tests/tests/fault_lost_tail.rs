//! A server that loses acknowledged writes (nats-server 2.9 killed right after an
//! acknowledgement, before its flusher ran) leaves the stream *behind* what an appender
//! remembers of a case. The appender must notice and rebuild the case from the stream:
//!
//! - a retry of the lost command (its client never saw the answer) is stored again, not
//!   answered "duplicate" from the appender's memory of an event that no longer exists;
//! - the next command links to the last event the stream really holds, so the case's
//!   chain has no gap (a gap would make every consumer dead-letter the event, and every
//!   later one of the case that builds on it).
//!
//! The loss is simulated deterministically: `CASES` is created here without
//! `deny_delete`, the case's last message is deleted after it was acknowledged (the
//! subject's last sequence goes back, as after a lost tail), and the server is killed
//! and restarted (its duplicate window is rebuilt from what it stored, as after a real
//! loss).

mod fault_common;

use std::sync::Arc;

use casebus_bus::ops::Ops;
use casebus_bus::provision::{audit_config, cases_config, dlq_config};
use casebus_bus::subjects::CASES_STREAM;
use casebus_bus::{Appender, AppenderConfig, Bus, BusConfig, StreamSettings};
use casebus_domain::DeadlineRules;
use casebus_integrity::verify_case;

use fault_common::chain::{note, opened};
use fault_common::load::{Ledger, command};
use fault_common::{CUSTOMS, case, connect, generations, registry, signer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appender_whose_case_lost_its_last_event_rebuilds_it_from_the_stream() {
    let generation = generations().remove(0);
    let mut server = generation.start_server().await;
    let client = connect(&[server.url()], "lost-tail").await;
    let js = Bus::context(client.clone(), &BusConfig::default());
    let settings = StreamSettings::default();
    let mut cases = cases_config(&settings);
    cases.deny_delete = false;
    js.create_stream(cases)
        .await
        .expect("CASES without deny_delete");
    js.create_stream(dlq_config(&settings))
        .await
        .expect("CASES_DLQ");
    js.create_stream(audit_config(&settings))
        .await
        .expect("AUDIT");
    let bus = Bus::open(client, Arc::new(registry()), BusConfig::default())
        .await
        .expect("open the bus");
    let appender = Appender::new(
        bus.clone(),
        signer(CUSTOMS),
        Arc::new(DeadlineRules::default()),
        AppenderConfig::default(),
    )
    .expect("appender");
    let ledger = Ledger::default();
    let id = case("tail");
    assert!(command(&appender, &ledger, &id, "r1", opened("tail")).await);
    assert!(command(&appender, &ledger, &id, "r2", note("second")).await);
    assert!(command(&appender, &ledger, &id, "r3", note("third")).await);
    let acks = ledger.acks();
    assert_eq!(acks[2].version, 3);

    // The server "loses" the third event after acknowledging it.
    let deleted = Ops::from_bus(&bus)
        .delete_message(CASES_STREAM, acks[2].sequence)
        .await
        .expect("delete");
    assert!(deleted);
    // As after a crash: the server comes back, its duplicate window rebuilt from what
    // it stored (a lost message's id is gone with it).
    server.kill_hard().await.expect("kill -9");
    server.restart().await.expect("restart");

    // Its client never saw the answer and retries: the event must be stored again.
    assert!(command(&appender, &ledger, &id, "r3", note("third")).await);
    let retried = ledger.acks()[3].clone();
    assert!(
        !retried.duplicate,
        "the retry of a lost command was answered from memory as a duplicate: {retried:?}"
    );
    assert_eq!(retried.version, 3, "stored again as version 3");
    assert!(command(&appender, &ledger, &id, "r4", note("fourth")).await);
    assert_eq!(ledger.acks()[4].version, 4);

    // The stream's chain is whole: 1, 2, 3 (stored again), 4.
    let last = bus.last_sequence(&id).await.expect("last");
    let messages = bus.read_case_messages(&id, 0, last).await.expect("read");
    let report = verify_case(
        &id,
        messages.iter().map(|m| m.payload.as_ref()),
        &bus.registry(),
    );
    assert!(report.is_intact(), "chain failures: {:?}", report.failures);
    assert_eq!(
        report
            .events
            .iter()
            .map(|e| e.version())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}
