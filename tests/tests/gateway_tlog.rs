//! The gateway keeps the transparency log (`--tlog-file`) over the real binary: every
//! message of `CASES` (signed events and a malformed message alike) becomes an entry,
//! the SHA-256 of the message as stored, in stream order, while the gateway serves; its
//! size is on `/metrics`; and a log file deleted while the gateway is down is rebuilt
//! from the stream at the next start into exactly the same log.

mod gateway_common;

use std::path::Path;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use casebus_bus::ops::{Ops, PublishOptions};
use casebus_bus::subjects::CASES_STREAM;
use casebus_test_support::wait_until;
use casebus_timeline::LogStore;

use gateway_common::catalogue::{declined_case, note};
use gateway_common::*;

/// The gateway's `casebus_gateway_tlog_entries`, once it reports it.
async fn tlog_entries(gateway: &Gateway) -> Option<u64> {
    http_get(gateway.metrics, "/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with("casebus_gateway_tlog_entries"))
        .find_map(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

async fn wait_logged(gateway: &Gateway, size: u64) {
    wait_until(
        PROJECTION_TIMEOUT,
        &format!("the transparency log to reach {size} entries"),
        async || (tlog_entries(gateway).await == Some(size)).then_some(()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the gateway's log:\n{}", gateway.log_text()));
}

fn remove_log(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

#[tokio::test]
async fn the_gateway_logs_every_stored_message_and_rebuilds_a_deleted_log_identically() {
    let f = Fixture::start().await;
    let id = case("TLOG-GW-1");
    f.script(&id, declined_case()).await;
    let ops = Ops::from_bus(&f.bus);
    ops.publish(
        "case.TLOG-GW-2",
        Bytes::from_static(b"not a signed event, logged all the same"),
        &[],
        &PublishOptions::default(),
    )
    .await
    .expect("publish a malformed message");

    let log_path = f.path("gateway.tlog");
    let db = f.db("gw-tlog");
    let args = [
        "--tlog-file".to_owned(),
        log_path.display().to_string(),
        "--tlog-interval".to_owned(),
        "200ms".to_owned(),
    ];
    let mut gateway = f.gateway_with("gw-tlog", &db, &args).await;
    wait_logged(&gateway, f.cases_last().await).await;
    // Followed while serving: what is appended later is logged too.
    f.append(CUSTOMS, &id, note("logged later"), None).await;
    let last = f.cases_last().await;
    wait_logged(&gateway, last).await;
    gateway.stop().await;

    let kept = LogStore::open(&log_path).expect("the kept log");
    assert_eq!(kept.size(), last);
    for sequence in 1..=last {
        let stored = ops
            .get_message(CASES_STREAM, sequence)
            .await
            .expect("read")
            .expect("stored");
        let expected: [u8; 32] = Sha256::digest(&stored.payload).into();
        assert_eq!(
            kept.entry(sequence).expect("entry"),
            Some(expected),
            "entry {sequence} is the SHA-256 of the stored message"
        );
    }
    let kept_dump = kept.dump_for_comparison().expect("dump");
    drop(kept);

    remove_log(&log_path);
    let mut rebuilt_by = f.gateway_with("gw-tlog", &db, &args).await;
    wait_logged(&rebuilt_by, last).await;
    rebuilt_by.stop().await;
    let rebuilt = LogStore::open(&log_path).expect("the rebuilt log");
    assert_eq!(
        rebuilt.dump_for_comparison().expect("dump"),
        kept_dump,
        "the rebuilt log is the kept log"
    );
}

#[tokio::test]
async fn a_tlog_file_that_is_not_a_log_stops_the_start_naming_the_flag() {
    let f = Fixture::start().await;
    let not_a_log = f.path("not-a-log.tlog");
    std::fs::write(&not_a_log, "this is a text file, not SQLite").expect("write");
    let output = std::process::Command::new(gateway_binary())
        .args(f.gateway_args("gw-bad-tlog", &f.db("gw-bad-tlog"), &f.path("bad.ready")))
        .args(["--tlog-file", not_a_log.to_str().expect("utf-8")])
        .output()
        .expect("run the gateway");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tlog-file"), "{stderr}");
}
