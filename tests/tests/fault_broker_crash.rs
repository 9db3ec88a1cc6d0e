//! Broker crash: `kill -9` of nats-server three times in the middle of a load of appends
//! over many cases, each time restarted on the same port and store. Clients retry every
//! command whose outcome they do not know with the same request id; a verifying durable
//! consumer runs throughout on its own connection.
//!
//! Run against every server generation the suite finds (see `fault_common::generations`):
//!
//! - on every generation: every command is eventually acknowledged, no event is stored
//!   twice, every case's chain and signatures verify, nothing is dead-lettered, and any
//!   acknowledged event missing from the stream was acknowledged in the instant before a
//!   kill (the window in which a server that acknowledges before writing can lose it);
//! - on a server that promises durability (2.10.23 or later with `sync_interval: always`,
//!   the production settings): zero acknowledged events lost, and the consumer has
//!   handled every stored event and nothing else.
//!
//! Under `CI=true` the run fails when no durable server (2.10.23 or later) is installed,
//! so CI never passes without checking zero loss on the production settings.
//!
//! nats-server 2.9 acknowledges a publish before its flusher writes it to the block file,
//! so a kill right after an ack can lose it. The test measures and reports that loss
//! rather than hiding it: see `docs/RELIABILITY.md`.
//!
//! `CASEBUS_FAULT_FULL=1` runs a larger load.

mod fault_common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use casebus_bus::ops::Ops;
use casebus_bus::subjects::CASES_STREAM;
use casebus_bus::{Appender, AppenderConfig};
use casebus_domain::DeadlineRules;
use casebus_test_support::wait_until;

use fault_common::audit::{audit, dead_letters, last_sequence, lost_only_near_kills};
use fault_common::grpc_load::{run_paced, target};
use fault_common::load::{self, Ledger, LoadPlan, percentiles};
use fault_common::procs::RecordingConsumer;
use fault_common::report::{Figures, ms};
use fault_common::services::Stage;
use fault_common::{
    CUSTOMS, Generation, POLICE, full, generations_with_a_durable_one_in_ci, open_bus, reopen_bus,
    signer,
};

/// The durable consumer that stands in for a gateway.
const RECORDER: &str = "fault-broker-recorder";
/// Kills per run.
const KILLS: usize = 3;
/// Ceiling for the whole load, outages included.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Ceiling for the consumer to catch up after the load.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long before a kill an acknowledged write may still be lost by a server that
/// acknowledges before writing: its flusher runs within milliseconds, so two seconds is
/// generous; a loss outside it would be a casebus bug, not the server's window.
const LOSS_WINDOW: Duration = Duration::from_secs(2);

/// The scenarios of this file run one at a time: each loads the two cores on its own,
/// and the outage figures would measure their contention otherwise.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_three_times_under_load_loses_nothing_acknowledged_on_a_durable_server() {
    let _serial = SERIAL.lock().await;
    for generation in generations_with_a_durable_one_in_ci() {
        scenario(&generation).await;
    }
}

async fn scenario(generation: &Generation) {
    let mut server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "fault-broker-load", 1).await;
    let consumer_bus = reopen_bus(&urls, "fault-broker-consumer").await;
    let consumer = RecordingConsumer::start(&consumer_bus, RECORDER);

    let plan = if full() {
        LoadPlan {
            prefix: "crash".into(),
            cases: 512,
            events_per_case: 40,
            workers: 128,
            note_bytes: 300,
        }
    } else {
        LoadPlan {
            prefix: "crash".into(),
            cases: 256,
            events_per_case: 12,
            workers: 64,
            note_bytes: 300,
        }
    };
    let appender = Arc::new(
        Appender::new(
            bus.clone(),
            signer(CUSTOMS),
            Arc::new(DeadlineRules::default()),
            AppenderConfig::default(),
        )
        .expect("appender"),
    );
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load_task = tokio::spawn(load::run(
        appender,
        plan.clone(),
        ledger.clone(),
        stop.clone(),
    ));

    // Kill at 20 %, 45 % and 70 % of the acknowledgements, restarting at once.
    let mut kills = Vec::new();
    let mut restarts = Vec::new();
    let mut rewinds = Vec::new();
    for k in 0..KILLS {
        let threshold = plan.total() * (20 + 25 * k as u64) / 100;
        wait_until(
            LOAD_TIMEOUT,
            &format!("{threshold} acknowledgements before kill {}", k + 1),
            async || ledger.count() >= threshold || load_task.is_finished(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let consumer_before = consumer.last_sequence();
        let at = Instant::now();
        server.kill_hard().await.expect("kill -9 nats-server");
        kills.push(at);
        server.restart().await.expect("restart nats-server");
        restarts.push(at.elapsed());
        let acked_before = ledger
            .acks()
            .iter()
            .filter(|a| a.at <= at)
            .map(|a| a.sequence)
            .max()
            .unwrap_or(0);
        let after = last_sequence(&bus, CASES_STREAM).await;
        rewinds.push(format!(
            "kill {}: highest sequence acknowledged before {acked_before}, consumer had acked up to {consumer_before}, stream's last sequence after restart {after}",
            k + 1
        ));
    }
    tokio::time::timeout(LOAD_TIMEOUT, load_task)
        .await
        .unwrap_or_else(|_| {
            stop.store(true, Ordering::Relaxed);
            panic!("the load did not finish within {LOAD_TIMEOUT:?}")
        })
        .expect("the load finishes");
    let load_time = started.elapsed();

    // What clients were told against what the stream holds.
    let audit = audit(&bus, &ledger).await;
    let letters = dead_letters(&bus).await;
    let last = last_sequence(&bus, CASES_STREAM).await;
    let ops = Ops::from_bus(&bus);
    let catch_up_started = Instant::now();
    let caught_up = wait_until(
        CATCH_UP_TIMEOUT,
        "the consumer to acknowledge the whole stream",
        async || {
            ops.consumer(CASES_STREAM, RECORDER)
                .await
                .is_ok_and(|c| c.ack_floor_sequence >= last && c.ack_pending == 0 && c.pending == 0)
        },
    )
    .await
    .is_ok();
    let catch_up_time = catch_up_started.elapsed();
    if !caught_up {
        eprintln!(
            "consumer state: {:?}",
            ops.consumer(CASES_STREAM, RECORDER).await
        );
    }
    let out_of_order = consumer.recorded.out_of_order();
    let handed: HashSet<_> = consumer.recorded.ids().into_iter().collect();
    let stored: HashSet<_> = audit.positions.keys().cloned().collect();
    let never_handed_ids: Vec<_> = stored.difference(&handed).cloned().collect();
    let never_handed = never_handed_ids.len();
    let phantoms = handed.difference(&stored).count();

    // From the end of each restart to the first command acknowledged after it: how long
    // clients wait once the broker is back (their in-flight publishes time out first).
    let resumed: Vec<Duration> = kills
        .iter()
        .zip(&restarts)
        .map(|(k, r)| {
            let back = *k + *r;
            ledger
                .first_ack_after(back)
                .map_or(Duration::MAX, |a| a - back)
        })
        .collect();
    let acks = ledger.acks();
    let (p50, p99, max) = percentiles(acks.iter().map(|a| a.latency).collect());
    let mut figures = Figures::new("broker kill -9 x3 (single server)", &generation.label);
    figures
        .row(
            "server settings",
            if generation.extra_config.is_empty() {
                "defaults (no sync_interval)".to_owned()
            } else {
                "sync_interval: always".to_owned()
            },
        )
        .row("commands acknowledged", audit.acknowledged)
        .row("retries after an unknown outcome", ledger.retries())
        .row("acknowledged but lost", audit.lost.len())
        .row("duplicated in the stream", audit.duplicated.len())
        .row("chain or signature failures", audit.chain_failures.len())
        .row("dead letters", letters.len())
        .row(
            "stored without an acknowledgement seen",
            audit.unacknowledged_in_stream,
        )
        .row("consumer caught up", caught_up)
        .row("consumer caught up after the load ended", ms(catch_up_time))
        .row("stored events the consumer never got", never_handed)
        .row("events the consumer got that the stream lost", phantoms)
        .row(
            "server restart took (each kill)",
            restarts
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .row(
            "restart to first acknowledgement after it",
            resumed
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .row(
            "cases handed to the consumer out of order",
            out_of_order.len(),
        )
        .row(
            "command latency p50 / p99 / max (retries included)",
            format!("{p50:.1} / {p99:.1} / {max:.1} ms"),
        )
        .row("load took", ms(load_time));
    figures.notes = rewinds.join("\n\n") + "\n\n";
    if never_handed > 0 {
        let mut seqs: Vec<u64> = never_handed_ids
            .iter()
            .map(|id| audit.positions[id])
            .collect();
        seqs.sort_unstable();
        figures.notes +=
            &format!("Stored events the consumer never got, by sequence: {seqs:?}\n\n");
    }
    if !audit.lost.is_empty() {
        figures.notes += &format!(
            "Lost acknowledged events (case, request, sequence, acknowledged before the kill):\n{}",
            audit
                .lost
                .iter()
                .take(20)
                .map(|a| {
                    let before = kills
                        .iter()
                        .filter(|k| **k >= a.at)
                        .map(|k| *k - a.at)
                        .min()
                        .map_or("after every kill".to_owned(), ms);
                    format!(
                        "- {} {} seq {} ({before})",
                        a.case_id, a.request_id, a.sequence
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    figures.write();

    assert!(
        ledger.failures().is_empty(),
        "commands failed: {:?}",
        ledger.failures()
    );
    assert_eq!(
        ledger.count(),
        plan.total(),
        "every command was acknowledged"
    );
    assert!(
        audit.duplicated.is_empty(),
        "events stored twice: {:?}",
        audit.duplicated
    );
    assert!(
        audit.chain_failures.is_empty(),
        "chains broken after the crashes: {:?}",
        &audit.chain_failures[..audit.chain_failures.len().min(10)]
    );
    assert!(
        letters.is_empty(),
        "dead letters after the crashes: {letters:?}"
    );
    assert!(
        out_of_order.is_empty(),
        "cases handed over out of order: {out_of_order:?}"
    );
    assert!(
        lost_only_near_kills(&audit.lost, &kills, LOSS_WINDOW),
        "acknowledged events lost outside the crash windows: {}",
        audit.summary()
    );
    if generation.durable() {
        assert!(
            audit.lost.is_empty(),
            "{} with sync_interval: always lost acknowledged events: {}",
            generation.label,
            audit.summary()
        );
        assert!(caught_up, "the consumer did not catch up");
        assert_eq!(never_handed, 0, "stored events the consumer never handled");
        assert_eq!(phantoms, 0, "events handled that the stream does not hold");
    }
    consumer.stop().await;
}

/// Pipelined publishes acknowledged per kill in [`acknowledged_writes_lost_by_a_kill_right_after_the_ack_are_counted`].
const RAW_ACKED_BEFORE_KILL: usize = 600;
/// Publishes in flight when the kill comes.
const RAW_IN_FLIGHT: usize = 1000;
/// Kill rounds of that test (25 with `CASEBUS_FAULT_FULL=1`).
fn raw_rounds() -> usize {
    if full() { 25 } else { 5 }
}

/// The server's own guarantee, measured without casebus in the way: publish 1,000
/// messages pipelined, `kill -9` the server the instant the 600th acknowledgement
/// arrives, restart it, and count acknowledged messages it no longer has. Five rounds
/// (25 with `CASEBUS_FAULT_FULL=1`).
/// A durable server (2.10.23+ with `sync_interval: always`) must lose none; 2.9's loss
/// is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_lost_by_a_kill_right_after_the_ack_are_counted() {
    let _serial = SERIAL.lock().await;
    for generation in generations_with_a_durable_one_in_ci() {
        let mut server = generation.start_server().await;
        let urls = vec![server.url()];
        let bus = open_bus(&urls, "fault-raw", 1).await;
        let mut acked_total = 0;
        let mut lost_total = 0;
        let mut per_round = Vec::new();
        for round in 0..raw_rounds() {
            let js = bus.jetstream();
            let mut futures = Vec::with_capacity(RAW_IN_FLIGHT);
            for i in 0..RAW_IN_FLIGHT {
                let subject = format!("case.raw-{round}-{}", i % 50);
                match js.publish(subject, vec![b'x'; 300].into()).await {
                    Ok(ack) => futures.push(ack),
                    Err(e) => panic!("publish {i} of round {round}: {e}"),
                }
            }
            let mut acked = Vec::new();
            for ack in futures {
                if let Ok(ack) = ack.await {
                    acked.push(ack.sequence);
                }
                if acked.len() == RAW_ACKED_BEFORE_KILL {
                    server.kill_hard().await.expect("kill -9");
                    break;
                }
            }
            server.restart().await.expect("restart");
            let last = last_sequence(&bus, CASES_STREAM).await;
            let lost = acked.iter().filter(|s| **s > last).count();
            acked_total += acked.len();
            lost_total += lost;
            per_round.push(lost.to_string());
        }
        let mut figures = Figures::new(
            &format!(
                "raw publish, kill -9 right after the 600th ack (x{})",
                raw_rounds()
            ),
            &generation.label,
        );
        figures
            .row(
                "server settings",
                if generation.extra_config.is_empty() {
                    "defaults (no sync_interval)"
                } else {
                    "sync_interval: always"
                },
            )
            .row("messages acknowledged before the kills", acked_total)
            .row("acknowledged but lost", lost_total)
            .row("lost per round", per_round.join(", "));
        figures.write();
        if generation.durable() {
            assert_eq!(
                lost_total, 0,
                "{} lost acknowledged writes",
                generation.label
            );
        }
    }
}

/// The same crash through the real binaries: a paced load of gRPC commands through the
/// customs service (open, refer to the police, notes), the police service issuing the
/// automatic receipts, a gateway projecting everything, while nats-server is killed
/// three times. Every service reconnects by itself; clients retry unknown outcomes with
/// the same request id.
///
/// Asserted on every generation: every command acknowledged, no duplicate, chains
/// intact, nothing dead-lettered, at most one receipt per hand-off and one for every
/// acknowledged referral; and, when nothing acknowledged was lost (always on a durable
/// server, which must lose nothing), the gateway's projection equals the fold of the
/// stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_three_times_under_the_real_services_leaves_the_gateway_exact() {
    let _serial = SERIAL.lock().await;
    for generation in generations_with_a_durable_one_in_ci() {
        services_scenario(&generation).await;
    }
}

async fn services_scenario(generation: &Generation) {
    let mut server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "broker-services", 1).await;
    let stage = Stage::new(urls.clone());
    let mut gateway = stage.gateway("broker").await;
    let mut police = stage.agency(POLICE).await;
    let mut customs = stage.agency(CUSTOMS).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (rate, step) = if full() { (200.0, 1000) } else { (100.0, 300) };
    let started = Instant::now();
    let load = tokio::spawn(run_paced(
        target(&customs),
        ledger.clone(),
        "bs".into(),
        16,
        rate,
        stop.clone(),
    ));
    let mut kills = Vec::new();
    let mut restarts = Vec::new();
    for k in 0..KILLS {
        let threshold = step * (k as u64 + 1);
        wait_until(
            LOAD_TIMEOUT,
            &format!("{threshold} acknowledgements"),
            async || ledger.count() >= threshold,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; failures: {:?}", ledger.failures()));
        let at = Instant::now();
        server.kill_hard().await.expect("kill -9 nats-server");
        kills.push(at);
        server.restart().await.expect("restart nats-server");
        restarts.push(at.elapsed());
    }
    // Go on for a while after the last crash, then stop.
    let target_count = step * (KILLS as u64 + 1);
    wait_until(
        LOAD_TIMEOUT,
        "the load to go on after the last crash",
        async || ledger.count() >= target_count,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; failures: {:?}", ledger.failures()));
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load stops");
    let load_time = started.elapsed();

    // Every referral acknowledged must get its receipt; then everyone settles.
    let referrals: HashSet<String> = ledger
        .acks()
        .iter()
        .filter(|a| a.request_id == "r1")
        .map(|a| a.case_id.to_string())
        .collect();
    let ops = Ops::from_bus(&bus);
    let settled = wait_until(
        CATCH_UP_TIMEOUT,
        "receipts, consumers and the gateway to settle",
        async || {
            let messages = fault_common::audit::read_stream(&bus, CASES_STREAM).await;
            let receipts = messages
                .iter()
                .filter(|m| m.header("Casebus-Event-Type") == Some("HandoffAcknowledged"))
                .count();
            let last = messages.last().map_or(0, |m| m.sequence);
            let consumers = ops.consumers(CASES_STREAM).await.ok()?;
            let all = consumers
                .iter()
                .all(|c| c.ack_floor_sequence >= last && c.ack_pending == 0 && c.pending == 0);
            (receipts >= referrals.len() && all && gateway.position() >= last).then_some(last)
        },
    )
    .await;
    let settle_time = started.elapsed() - load_time;
    let audit = audit(&bus, &ledger).await;
    let letters = dead_letters(&bus).await;
    let mut receipts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for m in fault_common::audit::read_stream(&bus, CASES_STREAM).await {
        if m.header("Casebus-Event-Type") == Some("HandoffAcknowledged")
            && let Ok(e) = casebus_integrity::verify_signed(&m.payload, &bus.registry())
        {
            *receipts.entry(e.case_id.to_string()).or_default() += 1;
        }
    }
    let second_receipts = receipts.values().filter(|n| **n > 1).count();
    let missing_receipts = referrals
        .iter()
        .filter(|c| !receipts.contains_key(*c))
        .count();
    let (projection_diffs, last) = gateway.projection_diffs(&bus, "gw-broker").await;
    let projection_equal = projection_diffs.is_empty();
    let (p50, p99, max) = percentiles(ledger.acks().iter().map(|a| a.latency).collect());

    let mut figures = Figures::new(
        "broker kill -9 x3 under the real services and gateway",
        &generation.label,
    );
    figures
        .row(
            "server settings",
            if generation.extra_config.is_empty() {
                "defaults (no sync_interval)"
            } else {
                "sync_interval: always"
            },
        )
        .row("commands acknowledged", audit.acknowledged)
        .row("retries after an unknown outcome", ledger.retries())
        .row("acknowledged but lost", audit.lost.len())
        .row("duplicated in the stream", audit.duplicated.len())
        .row("chain or signature failures", audit.chain_failures.len())
        .row("dead letters", letters.len())
        .row(
            "referrals acknowledged / receipts / second receipts / missing",
            format!(
                "{} / {} / {second_receipts} / {missing_receipts}",
                referrals.len(),
                receipts.values().sum::<usize>()
            ),
        )
        .row(
            "gateway projection equals the fold of the stream",
            projection_equal,
        )
        .row(
            "gateway position / stream end",
            format!("{} / {last}", gateway.position()),
        )
        .row(
            "server restart took (each kill)",
            restarts
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .row(
            "first acknowledgement after each kill",
            kills
                .iter()
                .map(|k| {
                    ledger
                        .first_ack_after(*k)
                        .map_or("none".into(), |t| ms(t - *k))
                })
                .collect::<Vec<_>>()
                .join(", "),
        )
        .row(
            "command latency p50 / p99 / max (retries included)",
            format!("{p50:.1} / {p99:.1} / {max:.1} ms"),
        )
        .row(
            "load took / settled after it",
            format!("{} / {}", ms(load_time), ms(settle_time)),
        );
    figures.write();

    assert!(
        ledger.failures().is_empty(),
        "commands failed: {:?}",
        ledger.failures()
    );
    assert!(
        audit.duplicated.is_empty(),
        "events stored twice: {:?}",
        audit.duplicated
    );
    assert!(
        audit.chain_failures.is_empty(),
        "chains broken: {:?}",
        &audit.chain_failures[..audit.chain_failures.len().min(10)]
    );
    assert!(letters.is_empty(), "dead letters: {letters:?}");
    assert!(
        lost_only_near_kills(&audit.lost, &kills, LOSS_WINDOW),
        "acknowledged events lost outside the crash windows: {}",
        audit.summary()
    );
    assert_eq!(
        second_receipts, 0,
        "second automatic receipts: {receipts:?}"
    );
    if generation.durable() {
        assert!(
            audit.lost.is_empty(),
            "{}: {}",
            generation.label,
            audit.summary()
        );
    }
    if audit.lost.is_empty() {
        settled.unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gateway.all_logs()));
        assert_eq!(
            missing_receipts, 0,
            "acknowledged referrals without a receipt"
        );
        assert!(
            projection_equal,
            "the gateway's projection differs from the fold of the stream:\n{}",
            projection_diffs.join("\n")
        );
    }
    assert!(gateway.is_running() && police.is_running() && customs.is_running());
}
