//! Discovery of running casebus processes through the NATS micro-service protocol: one
//! `$SRV.INFO` and one `$SRV.STATS` request to every registered service, answers
//! collected for a short window and joined by instance id into [`ServiceInstance`]s
//! (name, version, metadata such as the office, start time, and per-endpoint counters
//! with the custom statistics a service attaches; see [`crate::service::register`]).
//!
//! Answers are parsed leniently: a field a service leaves out stays empty, and an answer
//! that is not JSON is skipped, so one odd process never hides the others.
//!
//! **Boundary:** this module only asks; it never registers anything or changes state.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use time::OffsetDateTime;

use crate::error::BusError;

/// The subject every service answers with its description.
pub const INFO_SUBJECT: &str = "$SRV.INFO";
/// The subject every service answers with its counters.
pub const STATS_SUBJECT: &str = "$SRV.STATS";

/// Counters of one endpoint of a service instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    /// Endpoint name, e.g. `status`.
    pub name: String,
    /// The subject it listens on.
    pub subject: String,
    /// Requests it handled since the instance started.
    pub requests: u64,
    /// Of those, the ones answered with an error.
    pub errors: u64,
    /// The last error, empty when none.
    pub last_error: String,
    /// Mean processing time of a request.
    pub average_processing: Duration,
    /// The custom statistics the service attaches (its own counters), if any.
    pub data: Option<serde_json::Value>,
}

/// One running instance of a service, as it describes itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceInstance {
    /// Service name, e.g. `casebus-customs`.
    pub name: String,
    /// Instance id, unique per process.
    pub id: String,
    /// Version.
    pub version: String,
    /// One sentence, from `$SRV.INFO`; empty when only the stats answered.
    pub description: String,
    /// Metadata from `$SRV.INFO` (casebus services set `office`, `agency`,
    /// `started_at`, `grpc`, `consumer` ...).
    pub metadata: BTreeMap<String, String>,
    /// When the instance started, from `$SRV.STATS`; `None` when only the info answered.
    pub started: Option<OffsetDateTime>,
    /// Per-endpoint counters, from `$SRV.STATS`.
    pub endpoints: Vec<EndpointStats>,
}

impl ServiceInstance {
    /// The custom statistics of the first endpoint that has some.
    pub fn data(&self) -> Option<&serde_json::Value> {
        self.endpoints.iter().find_map(|e| e.data.as_ref())
    }

    fn merge_info(&mut self, value: &serde_json::Value) {
        self.description = string(value, "description");
        if let Some(meta) = value.get("metadata").and_then(serde_json::Value::as_object) {
            self.metadata = meta
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect();
        }
    }

    fn merge_stats(&mut self, value: &serde_json::Value) {
        self.started = value
            .get("started")
            .and_then(serde_json::Value::as_str)
            .and_then(|s| {
                OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            });
        self.endpoints = value
            .get("endpoints")
            .and_then(serde_json::Value::as_array)
            .map(|endpoints| {
                endpoints
                    .iter()
                    .map(|e| EndpointStats {
                        name: string(e, "name"),
                        subject: string(e, "subject"),
                        requests: number(e, "num_requests"),
                        errors: number(e, "num_errors"),
                        last_error: string(e, "last_error"),
                        average_processing: Duration::from_nanos(number(
                            e,
                            "average_processing_time",
                        )),
                        data: e.get("data").filter(|d| !d.is_null()).cloned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
}

fn string(value: &serde_json::Value, key: &str) -> String {
    value
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(value: &serde_json::Value, key: &str) -> u64 {
    value
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_default()
}

/// Joins `$SRV.INFO` and `$SRV.STATS` answers (raw JSON bodies, in any order) into
/// instances, ordered by name then id. Bodies that are not answers of either kind are
/// skipped.
pub fn join_answers<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Vec<ServiceInstance> {
    let mut by_id: BTreeMap<String, ServiceInstance> = BTreeMap::new();
    for body in bodies {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            continue;
        };
        let kind = string(&value, "type");
        let id = string(&value, "id");
        if id.is_empty() {
            continue;
        }
        let entry = by_id.entry(id.clone()).or_insert_with(|| ServiceInstance {
            id,
            ..Default::default()
        });
        entry.name = string(&value, "name");
        entry.version = string(&value, "version");
        if kind.ends_with("info_response") {
            entry.merge_info(&value);
        } else if kind.ends_with("stats_response") {
            entry.merge_stats(&value);
        }
    }
    let mut out: Vec<ServiceInstance> = by_id.into_values().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    out
}

/// Asks every service for its info and stats and collects the answers that arrive
/// within `window`. Services that answer only one of the two still appear.
///
/// # Errors
/// [`BusError::Nats`] when the reply subscription or a request cannot be sent.
pub async fn discover(
    client: &async_nats::Client,
    window: Duration,
) -> Result<Vec<ServiceInstance>, BusError> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: Box<dyn std::error::Error + Send + Sync>| BusError::Nats { what, source: e }
    };
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| fail("a $SRV reply subscription")(Box::new(e)))?;
    for subject in [INFO_SUBJECT, STATS_SUBJECT] {
        client
            .publish_with_reply(subject, inbox.clone(), bytes::Bytes::new())
            .await
            .map_err(|e| fail(subject)(Box::new(e)))?;
    }
    client
        .flush()
        .await
        .map_err(|e| fail("flushing $SRV requests")(Box::new(e)))?;
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    // Nobody knows how many services will answer, so the window is the only end.
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        bodies.push(message.payload);
    }
    if let Err(e) = replies.unsubscribe().await {
        tracing::debug!(error = %e, "$SRV reply subscription not removed");
    }
    Ok(join_answers(bodies.iter().map(|b| b.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_stats_answers_join_by_instance_id() {
        let info = br#"{"type":"io.nats.micro.v1.info_response","name":"casebus-customs","id":"A1","version":"0.1.0","description":"customs","metadata":{"office":"customs:ningbo"},"endpoints":[]}"#;
        let stats = br#"{"type":"io.nats.micro.v1.stats_response","name":"casebus-customs","id":"A1","version":"0.1.0","started":"2026-03-01T08:00:00Z","endpoints":[{"name":"status","subject":"status","num_requests":3,"num_errors":1,"last_error":"500:boom","processing_time":30,"average_processing_time":10,"data":{"requests":42},"queue_group":"q"}]}"#;
        let other = br#"{"type":"io.nats.micro.v1.stats_response","name":"casebus-gateway","id":"B2","version":"0.1.0","started":"2026-03-01T09:00:00Z","endpoints":[]}"#;
        let found = join_answers([&stats[..], b"not json", &other[..], &info[..]]);
        assert_eq!(found.len(), 2);
        let customs = &found[0];
        assert_eq!(customs.name, "casebus-customs");
        assert_eq!(customs.metadata["office"], "customs:ningbo");
        assert_eq!(customs.description, "customs");
        assert_eq!(
            customs.started,
            Some(time::macros::datetime!(2026-03-01 8:00 UTC))
        );
        assert_eq!(customs.endpoints[0].requests, 3);
        assert_eq!(customs.endpoints[0].errors, 1);
        assert_eq!(customs.endpoints[0].last_error, "500:boom");
        assert_eq!(customs.data(), Some(&serde_json::json!({"requests": 42})));
        assert_eq!(found[1].name, "casebus-gateway");
        assert!(found[1].metadata.is_empty());
    }
}
