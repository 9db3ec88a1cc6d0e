//! Cluster node loss: a load of appends on a three-node JetStream cluster with the streams
//! at three replicas, while the `CASES` stream leader is (a) killed with `kill -9` and
//! restarted later, or (b) frozen with SIGSTOP until another leader is elected, then
//! thawed with SIGCONT. Clients know every node and retry unknown outcomes with the same
//! request id.
//!
//! Measured and reported: how long appends stall (from the fault to the first
//! acknowledgement after it) and how long the election takes. Asserted, on every server
//! generation: none is stored twice, every chain verifies, nothing is dead-lettered, the
//! killed or frozen node catches up (every replica current, no lag), and no event
//! acknowledged after the fault, or more than [`LOSS_WINDOW`] before it, is lost. On the
//! durable generation (2.10.23 or later, `sync_interval: always`) no acknowledged event
//! is lost at all. nats-server 2.9.10 once lost one event acknowledged just before the
//! leader was killed (a CI run, 1 of 2,048; not reproduced in local runs): a write a
//! majority acknowledged should survive one node's loss, so that is the 2.9 server's
//! replication, which the production guidance (2.10.23 or later) already rules out; the
//! window keeps a casebus bug (an event confirmed from a stale replica, say) visible.
//!
//! Under `CI=true` the run fails when no durable server (2.10.23 or later) is installed,
//! so CI never passes without checking zero loss on the production settings.
//!
//! `CASEBUS_FAULT_FULL=1` runs a larger load.

mod fault_common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::time::Instant;

use casebus_bus::{Appender, AppenderConfig, Bus, BusConfig};
use casebus_domain::DeadlineRules;
use casebus_test_support::{NatsCluster, wait_until};

use fault_common::audit::{audit, dead_letters, lost_only_near_kills};
use fault_common::load::{self, Ledger, LoadPlan, percentiles};
use fault_common::report::{Figures, ms};
use fault_common::{
    CUSTOMS, Generation, full, generations_with_a_durable_one_in_ci, open_bus, signer,
};

/// Ceiling for the load, faults included.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Ceiling for a new stream leader, and for a restarted node to catch up.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a node stays frozen: past this the test thaws it even if the clients
/// connected to it have not noticed yet (they detect a silent server only by pings).
const MAX_FREEZE: Duration = Duration::from_secs(20);
/// How long before the fault an acknowledged write may be lost by a 2.9 server (see the
/// file's header). A loss outside it is a casebus bug.
const LOSS_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillLeader,
    FreezeLeader,
}

/// The scenarios of this file run one at a time: each loads the two cores on its own,
/// and the outage figures would measure their contention otherwise.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_load_loses_nothing_acked_on_a_durable_server_and_it_catches_up() {
    let _serial = SERIAL.lock().await;
    for generation in generations_with_a_durable_one_in_ci() {
        scenario(&generation, Fault::KillLeader).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezing_the_stream_leader_past_the_election_loses_nothing_and_it_catches_up() {
    let _serial = SERIAL.lock().await;
    for generation in generations_with_a_durable_one_in_ci() {
        scenario(&generation, Fault::FreezeLeader).await;
    }
}

fn plan() -> LoadPlan {
    if full() {
        LoadPlan {
            prefix: "node".into(),
            cases: 256,
            events_per_case: 40,
            workers: 64,
            note_bytes: 300,
        }
    } else {
        LoadPlan {
            prefix: "node".into(),
            cases: 128,
            events_per_case: 16,
            workers: 32,
            note_bytes: 300,
        }
    }
}

/// The name of the `CASES` stream leader, as `bus` sees it.
async fn leader(bus: &Bus) -> Option<String> {
    bus.cases().get_info().await.ok()?.cluster?.leader
}

/// Whether every replica of `CASES` is current with no lag.
async fn replicas_current(bus: &Bus) -> bool {
    let Ok(info) = bus.cases().get_info().await else {
        return false;
    };
    info.cluster.is_some_and(|c| {
        c.leader.is_some()
            && c.replicas.len() == 2
            && c.replicas
                .iter()
                .all(|p| p.current && !p.offline && p.lag.unwrap_or(0) == 0)
    })
}

async fn scenario(generation: &Generation, fault: Fault) {
    let mut cluster: NatsCluster = generation.start_cluster().await;
    let urls = cluster.urls();
    let bus = open_bus(&urls, "cluster-load", 3).await;
    let plan = plan();
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
    let started = Instant::now();
    let load_task = tokio::spawn(load::run(
        appender,
        plan.clone(),
        ledger.clone(),
        Arc::new(AtomicBool::new(false)),
    ));

    wait_until(
        LOAD_TIMEOUT,
        "a third of the load acknowledged",
        async || ledger.count() >= plan.total() / 3 || load_task.is_finished(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let old_leader = wait_until(ELECTION_TIMEOUT, "a stream leader", async || {
        leader(&bus).await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let index = cluster
        .nodes()
        .iter()
        .position(|n| n.name() == old_leader)
        .expect("the leader is a node of the cluster");
    let client_node = bus.client().server_info().server_name;
    // An observer on a node that stays up, asking with a short timeout so the election
    // is timed to a fraction of a second.
    let other = (index + 1) % 3;
    let observer = Bus::open(
        fault_common::connect(&[cluster.node(other).url()], "cluster-observer").await,
        Arc::new(fault_common::registry()),
        BusConfig {
            request_timeout: Duration::from_millis(250),
            ..BusConfig::default()
        },
    )
    .await
    .expect("observer bus");

    let fault_at = Instant::now();
    match fault {
        Fault::KillLeader => cluster
            .node_mut(index)
            .kill_hard()
            .await
            .expect("kill -9 the leader"),
        Fault::FreezeLeader => cluster.node_mut(index).pause().expect("SIGSTOP the leader"),
    }
    let new_leader = wait_until(ELECTION_TIMEOUT, "another stream leader", async || {
        leader(&observer).await.filter(|l| *l != old_leader)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let elected_after = fault_at.elapsed();
    // Keep the node down (or frozen) while the load goes on: until a good number of
    // commands were acknowledged by the survivors, or the longest freeze is reached (a
    // client connected to the frozen node notices only by its pings).
    let acked_at_election = ledger.count();
    let survivors_took_over = wait_until(
        MAX_FREEZE,
        "the survivors to acknowledge commands",
        async || ledger.count() >= acked_at_election + 100 || load_task.is_finished(),
    )
    .await
    .is_ok();
    let acked_while_down = ledger.count() - acked_at_election;
    let thaw_at = Instant::now();
    match fault {
        Fault::KillLeader => cluster
            .node_mut(index)
            .restart()
            .await
            .expect("restart the old leader"),
        Fault::FreezeLeader => cluster
            .node_mut(index)
            .resume()
            .expect("SIGCONT the old leader"),
    }
    let rejoined = wait_until(
        ELECTION_TIMEOUT,
        "the old leader to rejoin as a current replica",
        async || {
            let Ok(info) = observer.cases().get_info().await else {
                return false;
            };
            info.cluster.is_some_and(|c| {
                c.replicas
                    .iter()
                    .any(|p| p.name == old_leader && p.current && !p.offline)
            })
        },
    )
    .await
    .is_ok();
    let rejoined_after = thaw_at.elapsed();

    tokio::time::timeout(LOAD_TIMEOUT, load_task)
        .await
        .unwrap_or_else(|_| panic!("the load did not finish within {LOAD_TIMEOUT:?}"))
        .expect("the load finishes");
    let load_time = started.elapsed();
    let caught_up = wait_until(
        ELECTION_TIMEOUT,
        "every replica to be current again",
        async || replicas_current(&observer).await,
    )
    .await
    .is_ok();

    let audit = audit(&bus, &ledger).await;
    let letters = dead_letters(&bus).await;
    let acks = ledger.acks();
    let (p50, p99, max) = percentiles(acks.iter().map(|a| a.latency).collect());
    // The longest silence between two acknowledgements from the fault on: how long
    // appends stalled.
    let mut times: Vec<Instant> = acks
        .iter()
        .map(|a| a.at)
        .filter(|t| *t >= fault_at)
        .collect();
    times.sort();
    let stall = std::iter::once(fault_at)
        .chain(times.iter().copied())
        .zip(times.iter().copied())
        .map(|(a, b)| b - a)
        .max()
        .unwrap_or_default();
    let what = match fault {
        Fault::KillLeader => "cluster R3: kill -9 the stream leader",
        Fault::FreezeLeader => "cluster R3: SIGSTOP the stream leader past the election",
    };
    let mut figures = Figures::new(what, &generation.label);
    figures
        .row(
            "server settings",
            if generation.extra_config.is_empty() {
                "defaults"
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
            "old leader / new leader / load client's node",
            format!("{old_leader} / {new_leader} / {client_node}"),
        )
        .row("new stream leader elected after", ms(elected_after))
        .row(
            "longest stall of acknowledgements from the fault on",
            ms(stall),
        )
        .row(
            "commands acknowledged while the old leader was down",
            acked_while_down,
        )
        .row("old leader caught up (every replica current)", caught_up)
        .row(
            "restart or thaw to the old leader current again",
            if rejoined {
                ms(rejoined_after)
            } else {
                "not within 60 s".into()
            },
        )
        .row(
            "command latency p50 / p99 / max (retries included)",
            format!("{p50:.1} / {p99:.1} / {max:.1} ms"),
        )
        .row("load took", ms(load_time));
    if !audit.lost.is_empty() {
        figures.notes += &format!(
            "Lost acknowledged events (case, request, sequence, acknowledged how long before the fault):\n{}\n\n",
            audit
                .lost
                .iter()
                .take(20)
                .map(|a| {
                    let before = if a.at <= fault_at {
                        ms(fault_at - a.at)
                    } else {
                        format!("after the fault by {}", ms(a.at - fault_at))
                    };
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
        lost_only_near_kills(&audit.lost, &[fault_at], LOSS_WINDOW),
        "acknowledged events lost outside the fault's window: {}",
        audit.summary()
    );
    if generation.durable() {
        assert!(
            audit.lost.is_empty(),
            "{} with sync_interval: always lost acknowledged events: {}",
            generation.label,
            audit.summary()
        );
    }
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
    assert!(rejoined && caught_up, "the old leader did not catch up");
    if !survivors_took_over {
        eprintln!(
            "note: no acknowledgements while the old leader was down (the load client was on it: {client_node})"
        );
    }
}
