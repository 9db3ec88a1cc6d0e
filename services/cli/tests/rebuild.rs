//! `casebus rebuild` against a real nats-server: the projection it builds offline is
//! equal, table by table, to the one a gateway-like consumer builds live from the same
//! stream (poison message included); it refuses to overwrite a file.

mod common;

use std::sync::{Arc, Mutex};

use casebus_bus::{
    Bus, BusConfig, CancellationToken, ConsumerConfig, ConsumerRunner, EventHandler, HandlerError,
    StoredEvent,
};
use casebus_test_support::wait_until;
use casebus_timeline::{ProjectedInput, Projection};

use common::catalogue::{declined_case, dropped_case, main_case, note, supervised_case};
use common::*;

/// Projects every event it is handed, as the gateway does.
#[derive(Clone)]
struct Projector {
    projection: Arc<Mutex<Projection>>,
}

impl EventHandler for Projector {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        let mut projection = self.projection.lock().expect("lock");
        projection
            .apply_batch(&[ProjectedInput::new(event.sequence, &event.event)])
            .map(|_| ())
            .map_err(|e| HandlerError::Transient(e.to_string()))
    }
}

#[tokio::test]
async fn a_rebuilt_projection_equals_the_one_built_live() {
    let f = Fixture::start().await;
    let mut appenders = std::collections::HashMap::new();
    let mut valid = 0_u64;
    for (id, history) in [
        ("REB-MAIN", main_case()),
        ("REB-DECLINED", declined_case()),
        ("REB-DROPPED", dropped_case()),
        ("REB-SUPERVISED", supervised_case()),
    ] {
        let c = case(id);
        for (office_id, payload) in history {
            let appender = appenders
                .entry(office_id)
                .or_insert_with(|| f.appender(office_id));
            append(appender, &c, payload).await;
            valid += 1;
        }
    }
    f.publish_raw("case.REB-DECLINED", b"poison".to_vec()).await;
    let customs = appenders.get(CUSTOMS).expect("customs appender");
    let last = append(customs, &case("REB-DECLINED"), note("after the poison"))
        .await
        .stream_sequence;
    valid += 1;

    // The live projection, fed by a durable consumer as the gateway would.
    let live = Arc::new(Mutex::new(
        Projection::open_in_memory().expect("projection"),
    ));
    let client = f.server.client().await.expect("connect");
    let bus = Bus::open(client, Arc::new(registry()), BusConfig::default())
        .await
        .expect("bus");
    let runner = ConsumerRunner::new(bus, ConsumerConfig::named("gateway-test"));
    let counters = runner.counters();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(
        Projector {
            projection: live.clone(),
        },
        shutdown.clone(),
    ));
    wait_until(
        DELIVERY_TIMEOUT,
        "the live projection to catch up",
        async || counters.handled.load(std::sync::atomic::Ordering::Relaxed) == valid,
    )
    .await
    .expect("caught up");
    shutdown.cancel();
    task.await.expect("join").expect("consumer ran");
    let expected = live
        .lock()
        .expect("lock")
        .dump_for_comparison()
        .expect("dump");
    assert!(expected.contains("REB-MAIN"));

    let db = f.path("gateway.rebuilt.sqlite");
    let run = f
        .cli(&["--json", "rebuild", "--db", db.to_str().expect("utf-8")])
        .await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["messages"], valid + 1);
    assert_eq!(report["left_out"][0]["code"], "undecodable");
    assert_eq!(report["counts"]["events"], valid);
    assert_eq!(report["counts"]["cases"], 4);
    assert_eq!(report["counts"]["position"], last);

    let rebuilt = Projection::open(&db).expect("open rebuilt");
    let got = rebuilt.dump_for_comparison().expect("dump");
    assert_eq!(got, expected, "the rebuilt projection equals the live one");
    drop(rebuilt);

    // Never over an existing file.
    let before = std::fs::read(&db).expect("read");
    let again = f
        .cli(&["rebuild", "--db", db.to_str().expect("utf-8")])
        .await;
    again.expect_code(2);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert_eq!(std::fs::read(&db).expect("read"), before);

    // Text output reports the counts.
    let text_db = f.path("text.sqlite");
    let text = f
        .cli(&["rebuild", "--db", text_db.to_str().expect("utf-8")])
        .await;
    text.expect_code(0);
    assert!(text.stdout.contains("| events"), "{}", text.stdout);
    assert!(text.stderr.contains("left out"), "{}", text.stderr);
}
