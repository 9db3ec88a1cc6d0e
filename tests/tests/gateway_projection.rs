//! The gateway's projection, with the real binary against a real nats-server: it equals
//! a fold of the stream after a run of mixed events (poison included); a kill -9 in the
//! middle of projecting loses nothing and duplicates nothing; deleting or emptying the
//! database rebuilds it identically; several gateways run side by side, each with its
//! own consumer and file; a projection from another stream is refused. Operators see
//! the position in `/metrics` and in the `$SRV.STATS` answer.

mod gateway_common;

use std::time::Duration;

use casebus_bus::ops::{Ops, PublishOptions};
use casebus_bus::subjects::{CASES_STREAM, DLQ_STREAM};
use casebus_proto::event::v1::Agency;
use casebus_proto::gateway::v1::GetTimelineRequest;
use casebus_test_support::wait_until;
use casebus_tests::oracle::{expected_projection, projection_file_diffs};
use casebus_timeline::Projection;

use gateway_common::catalogue::{declined_case, dropped_case, main_case, note, opened};
use gateway_common::*;

/// Copies a stopped gateway's projection file (and any journal beside it) to `to`.
fn copy_projection(from: &std::path::Path, to: &std::path::Path) {
    delete_projection(to);
    for suffix in ["", "-wal", "-shm"] {
        let with = |p: &std::path::Path| {
            let mut name = p.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        };
        if with(from).is_file() {
            std::fs::copy(with(from), with(to)).expect("copy the projection");
        }
    }
}

/// Ceiling for the concurrent writers of the kill test.
const WRITERS_TIMEOUT: Duration = Duration::from_secs(120);

/// A dump with the consumer name taken out, to compare two gateways' projections.
fn without_consumer(dump: &str, consumer: &str) -> String {
    dump.replace(&format!("consumer={consumer:?}"), "consumer=*")
}

async fn publish_poison(f: &Fixture, case_id: &str) -> u64 {
    Ops::from_bus(&f.bus)
        .publish(
            &format!("case.{case_id}"),
            b"\xde\xad not a signed event".to_vec().into(),
            &[],
            &PublishOptions::default(),
        )
        .await
        .expect("publish poison")
        .sequence
}

/// Opens `n` cases with `notes` notes each, written concurrently.
async fn backlog(f: &Fixture, prefix: &str, n: usize, notes: usize) {
    let mut writers = Vec::new();
    for i in 0..n {
        let appender = f.appender(CUSTOMS);
        let id = case(&format!("{prefix}-{i}"));
        writers.push(tokio::spawn(async move {
            appender
                .append(request(&id, opened(&format!("backlog {i}")), None))
                .await
                .expect("open");
            for k in 0..notes {
                appender
                    .append(request(&id, note(&format!("note {k}")), None))
                    .await
                    .expect("note");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
}

#[tokio::test]
async fn the_projection_equals_a_fold_of_the_stream_after_mixed_events() {
    let f = Fixture::start().await;
    f.script(&case("MAIN-1"), main_case()).await;
    f.script(&case("DECL-1"), declined_case()).await;
    let poison = publish_poison(&f, "DROP-1").await;
    f.script(&case("DROP-1"), dropped_case()).await;
    let sealed_case = case("SEALED-1");
    f.append(CUSTOMS, &sealed_case, opened("sealed"), None)
        .await;
    f.append(CUSTOMS, &sealed_case, note("informant"), sealed())
        .await;
    f.append(
        CUSTOMS,
        &sealed_case,
        note("for the police"),
        listed(&[Agency::PublicSecurity]),
    )
    .await;
    let last = f.cases_last().await;
    assert!(last > poison, "events follow the poison");

    let mut gateway = f.gateway("gw-fold").await;
    gateway.wait_projected(last).await;

    // Operators see it: metrics, readiness, and the $SRV discovery with its counters.
    let metrics_addr = gateway.metrics;
    wait_until(
        CALL_TIMEOUT,
        "the position metric to reach the end",
        async || {
            http_get(metrics_addr, "/metrics")
                .await
                .lines()
                .find(|l| l.starts_with("casebus_gateway_projection_position{"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                == Some(last)
        },
    )
    .await
    .expect("metrics");
    assert!(http_get(metrics_addr, "/readyz").await.ends_with("ready"));
    let client = f.server.client().await.expect("connect");
    wait_until(
        CALL_TIMEOUT,
        "$SRV.STATS to report the position",
        async || {
            let Ok(stats) = client
                .request("$SRV.STATS.casebus-gateway", "".into())
                .await
            else {
                return false;
            };
            let stats = String::from_utf8_lossy(&stats.payload);
            stats.contains("\"consumer\":\"gw-fold\"")
                && stats.contains(&format!("\"position\":{last}"))
        },
    )
    .await
    .expect("$SRV.STATS");
    gateway.stop().await;

    f.assert_projection_right("gw-fold", &gateway.db).await;
    let projected = dump(&gateway.db);
    assert!(projected.contains(&format!("last_sequence={last}")));
    let dlq = Ops::from_bus(&f.bus)
        .stream_status(DLQ_STREAM)
        .await
        .expect("status")
        .expect("DLQ exists");
    assert_eq!(dlq.messages, 1, "the poison message was dead-lettered");
    let consumer = Ops::from_bus(&f.bus)
        .consumer(CASES_STREAM, "gw-fold")
        .await
        .expect("consumer");
    assert_eq!(consumer.ack_floor_sequence, last, "every message acked");
}

#[tokio::test]
async fn killing_the_gateway_mid_projection_loses_nothing_and_duplicates_nothing() {
    let f = Fixture::start().await;
    backlog(&f, "KILL", 20, 25).await;

    // Small batches, so projecting the backlog takes a while.
    let db = f.db("gw-kill");
    let mut gateway = f
        .gateway_with("gw-kill", &db, &["--batch".into(), "5".into()])
        .await;
    // Writers keep appending while the gateway projects, is killed, and restarts.
    let mut writers = Vec::new();
    for i in 0..4 {
        let appender = f.appender(CUSTOMS);
        let id = case(&format!("KILL-{i}"));
        writers.push(tokio::spawn(async move {
            for k in 0..60 {
                appender
                    .append(request(&id, note(&format!("live {k}")), None))
                    .await
                    .expect("live note");
            }
        }));
    }
    wait_until(
        PROJECTION_TIMEOUT,
        "the projection to be under way",
        async || position(&db) >= 100,
    )
    .await
    .expect("projecting");
    gateway.kill_hard().await;
    let at_kill = position(&db);
    assert!(at_kill >= 100);

    let mut gateway = f.gateway_with("gw-kill", &db, &[]).await;
    for writer in writers {
        tokio::time::timeout(WRITERS_TIMEOUT, writer)
            .await
            .expect("writers finish")
            .expect("writer");
    }
    let last = f.cases_last().await;
    assert!(
        at_kill < last,
        "the kill came in the middle of projecting ({at_kill} of {last})"
    );
    gateway.wait_projected(last).await;
    gateway.stop().await;
    f.assert_projection_right("gw-kill", &db).await;
}

/// The oracle can fail: a projection the real gateway built right has no differences,
/// and each single damage done to a copy of it with raw SQL (a hand-off status, a
/// missing event, a track status, a title, the version that set a party, a lost
/// reference, a case row, the position) is named with its case and field.
#[tokio::test]
async fn the_oracle_names_every_damage_done_to_a_right_projection() {
    let f = Fixture::start().await;
    f.script(&case("ORACLE-1"), declined_case()).await;
    f.script(&case("ORACLE-2"), declined_case()).await;
    let last = f.cases_last().await;
    let mut gateway = f.gateway("gw-oracle").await;
    gateway.wait_projected(last).await;
    gateway.stop().await;

    let expected = expected_projection(&f.bus, "gw-oracle").await;
    assert_eq!(expected.position, last);
    assert_eq!(expected.cases.len(), 2);
    assert_eq!(
        projection_file_diffs(&expected, &gateway.db),
        Vec::<String>::new(),
        "the gateway's own projection is right"
    );

    // Each damage, the SQL doing it, and what the differences must name.
    let damages: &[(&str, &str, &[&str])] = &[
        (
            "hand-off status",
            "UPDATE handoffs SET status = 'declined' WHERE case_id = 'ORACLE-1' AND handoff_id = 'h1'",
            &[
                "case ORACLE-1: hand-off h1 status: projection has Some(Declined), the fold of the stream Some(Accepted)",
            ],
        ),
        (
            "running clock of a decided hand-off",
            "UPDATE handoffs SET clock = 'filing_decision', clock_started_at = requested_at,
                 clock_due_at = requested_at + 1, clock_basis = 'forged'
             WHERE case_id = 'ORACLE-1' AND handoff_id = 'h1'",
            &[
                "case ORACLE-1: hand-off h1 running clock",
                "case ORACLE-1: hand-off h1 overdue at",
                "count of hand-offs whose running clock is past due",
            ],
        ),
        (
            "missing event",
            "DELETE FROM events WHERE case_id = 'ORACLE-2' AND case_version = 3",
            &[
                "case ORACLE-2: events (version, event id)",
                "count of events",
            ],
        ),
        (
            "track status",
            "UPDATE tracks SET status = 'closed' WHERE case_id = 'ORACLE-1' AND agency = 'public_security'",
            &[
                "case ORACLE-1: track of PublicSecurity status: projection has Some(Closed), the fold of the stream Some(Active)",
            ],
        ),
        (
            "title",
            "UPDATE cases SET title = 'Renamed' WHERE case_id = 'ORACLE-2'",
            &["case ORACLE-2: title", "case ORACLE-2: listed as"],
        ),
        (
            "version that set a party",
            "UPDATE parties SET source_version = 2 WHERE case_id = 'ORACLE-1' AND party_id = 's1'",
            &["case ORACLE-1: party s1"],
        ),
        (
            "lost reference",
            "DELETE FROM case_references WHERE case_id = 'ORACLE-2'",
            &[
                "case ORACLE-2: references",
                "count of references",
                "case ORACLE-2: reference",
            ],
        ),
        (
            "case row",
            "DELETE FROM cases WHERE case_id = 'ORACLE-1'",
            &[
                "case ORACLE-1: no summary in the projection",
                "count of cases",
            ],
        ),
        (
            "position",
            "UPDATE position SET last_sequence = last_sequence - 1",
            &["position: projection has"],
        ),
    ];
    let damaged = f.path("damaged.sqlite");
    for (what, sql, named) in damages {
        copy_projection(&gateway.db, &damaged);
        {
            let conn = rusqlite::Connection::open(&damaged).expect("open the copy");
            conn.pragma_update(None, "foreign_keys", "ON")
                .expect("foreign keys");
            let changed = conn.execute(sql, []).expect(what);
            assert_eq!(changed, 1, "the damage to {what} changed one row");
        }
        let diffs = projection_file_diffs(&expected, &damaged);
        for name in *named {
            assert!(
                diffs.iter().any(|d| d.contains(name)),
                "damage to {what}: no difference names {name:?}; differences:\n{}",
                diffs.join("\n")
            );
        }
    }
}

#[tokio::test]
async fn deleting_or_emptying_the_database_rebuilds_it_identically() {
    let f = Fixture::start().await;
    f.script(&case("REBUILD-1"), main_case()).await;
    f.script(&case("REBUILD-2"), declined_case()).await;
    let last = f.cases_last().await;

    let db = f.db("gw-a");
    let mut gateway = f.gateway("gw-a").await;
    gateway.wait_projected(last).await;
    gateway.stop().await;
    f.assert_projection_right("gw-a", &db).await;
    let original = dump(&db);

    // Deleted: the consumer's ack floor is at the end of the stream, the new file at 0.
    delete_projection(&db);
    let mut gateway = f.gateway("gw-a").await;
    gateway.wait_projected(last).await;
    gateway.stop().await;
    assert_eq!(dump(&db), original, "rebuilt after deletion");

    // Emptied to zero bytes.
    std::fs::write(&db, b"").expect("truncate");
    let mut gateway = f.gateway("gw-a").await;
    gateway.wait_projected(last).await;
    // And it goes on live after the rebuild.
    f.append(CUSTOMS, &case("REBUILD-2"), note("after the rebuild"), None)
        .await;
    let last = f.cases_last().await;
    gateway.wait_projected(last).await;
    gateway.stop().await;
    f.assert_projection_right("gw-a", &db).await;
}

#[tokio::test]
async fn several_gateways_run_side_by_side_each_with_its_own_projection() {
    let f = Fixture::start().await;
    f.script(&case("SIDE-1"), main_case()).await;
    let mut east = f.gateway("gw-east").await;
    let mut west = f.gateway("gw-west").await;
    // Events appended while both run reach both.
    f.script(&case("SIDE-2"), dropped_case()).await;
    let last = f.cases_last().await;
    east.wait_projected(last).await;
    west.wait_projected(last).await;

    let request = || GetTimelineRequest {
        case_id: "SIDE-2".into(),
        limit: 100,
        ..Default::default()
    };
    let token = f.reader(POLICE);
    let from_east = east
        .client(Some(&token))
        .await
        .get_timeline(request())
        .await
        .expect("east answers")
        .into_inner();
    let from_west = west
        .client(Some(&token))
        .await
        .get_timeline(request())
        .await
        .expect("west answers")
        .into_inner();
    assert_eq!(from_east, from_west);
    assert_eq!(from_east.events.len(), dropped_case().len());

    east.stop().await;
    west.stop().await;
    assert_eq!(
        without_consumer(&dump(&east.db), "gw-east"),
        without_consumer(&dump(&west.db), "gw-west")
    );
    f.assert_projection_right("gw-west", &west.db).await;
    f.assert_projection_right("gw-east", &east.db).await;
    let ops = Ops::from_bus(&f.bus);
    for name in ["gw-east", "gw-west"] {
        let consumer = ops.consumer(CASES_STREAM, name).await.expect(name);
        assert_eq!(consumer.ack_floor_sequence, last, "{name} acked everything");
    }
}

#[tokio::test]
async fn a_projection_ahead_of_the_stream_is_refused_at_start() {
    let f = Fixture::start().await;
    f.script(&case("AHEAD-1"), declined_case()).await;
    let db = f.db("gw-ahead");
    {
        // A projection of some other, longer stream.
        let mut projection = Projection::open(&db).expect("create");
        projection.advance_position(10_000).expect("position");
    }
    let ready_file = f.path("gw-ahead.ready");
    let output = tokio::process::Command::new(gateway_binary())
        .args(f.gateway_args("gw-ahead", &db, &ready_file))
        .output();
    let output = tokio::time::timeout(EXIT_TIMEOUT, output)
        .await
        .expect("exits")
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stream CASES ends at") && stderr.contains("delete it to rebuild"),
        "{stderr}"
    );
    assert!(!ready_file.exists());
}
