//! Contention on one case, seen on `/metrics`: two instances of the IP center's service
//! (each with its own cache of case heads, as two hosts have) add notes to the same case
//! at the same time. Every note is stored once, and the instances' metrics say what it
//! cost: publishes refused because the other instance appended first
//! (`casebus_append_conflicts_total`), the attempts after them
//! (`casebus_append_retries_total`) and the reads of the case they needed
//! (`casebus_append_rereads_total`). The head cache reports its size within the budget
//! given by `--append-cache-mib`.

mod agency_harness;

use futures::future::join_all;

use casebus_test_support::wait_until;

use agency_harness::*;

/// Notes each instance adds to the case, all at once.
const NOTES: usize = 24;

/// The value of the sample of `name` (no labels besides the constant ones) in a
/// Prometheus exposition.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_on_one_case_shows_as_conflicts_retries_and_rereads_on_metrics() {
    let f = Fixture::start().await;
    let cache = ["--append-cache-mib", "1"];
    let (a, b) = tokio::join!(f.spawn_with(IPC, &cache), f.spawn_with(IPC, &cache));
    open_case(&a, "HOT-1").await;
    // Both instances read the case once, so each has it cached before the race.
    ok(&b, "warm b", add_note(&b, "HOT-1", "warm-b", "warm").await);
    ok(&a, "warm a", add_note(&a, "HOT-1", "warm-a", "warm").await);

    let writes = [&a, &b].into_iter().enumerate().flat_map(|(i, via)| {
        (0..NOTES).map(move |n| async move {
            let r = add_note(via, "HOT-1", &format!("hot-{i}-{n}"), "contended").await;
            ok(via, "contended note", r)
        })
    });
    let replies = join_all(writes).await;
    assert!(replies.iter().all(|r| !r.duplicate));
    let loaded = f.load("HOT-1").await;
    assert_eq!(loaded.events.len(), 3 + 2 * NOTES, "every note once");

    // The sweep carries the appenders' counts into the metrics once a second.
    let totals = wait_until(
        CALL_TIMEOUT,
        "the contention to show on /metrics",
        async || {
            let mut sums = [0.0; 3];
            for instance in [&a, &b] {
                let text = http_get(instance.metrics, "/metrics").await;
                for (sum, name) in sums.iter_mut().zip([
                    "casebus_append_conflicts_total",
                    "casebus_append_retries_total",
                    "casebus_append_rereads_total",
                ]) {
                    *sum += value(&text, name)?;
                }
            }
            (sums[0] > 0.0).then_some(sums)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_text(), b.log_text()));
    let [conflicts, retries, rereads] = totals;
    assert!(retries >= conflicts, "{totals:?}");
    assert!(rereads >= conflicts, "{totals:?}");
    println!("conflicts {conflicts}, retries {retries}, re-reads {rereads}");

    // The cache holds the case, within the 1 MiB budget (the gauge follows once the
    // next sweep saw the head back in the cache).
    let (text, bytes) = wait_until(CALL_TIMEOUT, "the cache size to show", async || {
        let text = http_get(a.metrics, "/metrics").await;
        let bytes = value(&text, "casebus_append_cache_bytes")?;
        (bytes > 0.0).then_some((text, bytes))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(bytes <= 1024.0 * 1024.0, "{bytes}");
    assert_eq!(value(&text, "casebus_append_cache_cases"), Some(1.0));
    assert_eq!(
        value(&text, "casebus_append_cache_evictions_total"),
        Some(0.0)
    );
}
