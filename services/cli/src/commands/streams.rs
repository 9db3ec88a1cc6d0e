//! `casebus streams status|provision`: the four casebus streams (`CHECKPOINTS` too) with their size and
//! positions, their consumers with pending, ack-pending, redelivered and waiting counts;
//! and idempotent provisioning.

use std::time::Duration;

use serde_json::json;

use casebus_bus::StreamSettings;
use casebus_bus::ops::{ConsumerStatus, StreamStatus};
use casebus_bus::subjects::{AUDIT_STREAM, CASES_STREAM, CHECKPOINTS_STREAM, DLQ_STREAM};

use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::output::table;
use crate::times::{human, short_or_dash};

const STREAMS: [&str; 4] = [CASES_STREAM, DLQ_STREAM, AUDIT_STREAM, CHECKPOINTS_STREAM];

fn stream_json(name: &str, status: Option<&StreamStatus>) -> serde_json::Value {
    match status {
        None => json!({ "name": name, "exists": false }),
        Some(s) => json!({
            "name": s.name,
            "exists": true,
            "subjects": s.subjects,
            "messages": s.messages,
            "bytes": s.bytes,
            "first_sequence": s.first_sequence,
            "last_sequence": s.last_sequence,
            "first_time": s.first_time.map(crate::times::rfc3339),
            "last_time": s.last_time.map(crate::times::rfc3339),
            "consumers": s.consumer_count,
            "replicas": s.replicas,
            "deny_delete": s.deny_delete,
            "deny_purge": s.deny_purge,
            "duplicate_window_secs": s.duplicate_window.as_secs(),
        }),
    }
}

fn consumer_json(c: &ConsumerStatus) -> serde_json::Value {
    json!({
        "stream": c.stream,
        "name": c.name,
        "durable": c.durable,
        "pull": c.pull,
        "filter_subject": c.filter_subject,
        "start": c.start.to_string(),
        "ack_policy": c.ack_policy,
        "ack_floor": c.ack_floor_sequence,
        "delivered": c.delivered_sequence,
        "pending": c.pending,
        "ack_pending": c.ack_pending,
        "redelivered": c.redelivered,
        "waiting": c.waiting,
        "max_ack_pending": c.max_ack_pending,
        "ack_wait_secs": c.ack_wait.as_secs(),
    })
}

/// `casebus streams status`.
pub async fn status(ctx: &Ctx) -> Result<Outcome, CliError> {
    let ops = ctx.ops().await?;
    let mut streams = Vec::new();
    let mut consumers = Vec::new();
    for name in STREAMS {
        let status = ops.stream_status(name).await?;
        if status.is_some() {
            // Read consumers that serve an operator: durable ones; the CLI's own
            // short-lived readers are left out.
            consumers.extend(ops.consumers(name).await?.into_iter().filter(|c| c.durable));
        }
        streams.push((name, status));
    }
    let missing: Vec<&str> = streams
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| *n)
        .collect();
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "ok": missing.is_empty(),
            "streams": streams.iter().map(|(n, s)| stream_json(n, s.as_ref())).collect::<Vec<_>>(),
            "consumers": consumers.iter().map(consumer_json).collect::<Vec<_>>(),
        }))?;
    } else {
        let mut t = table(&[
            "stream",
            "messages",
            "bytes",
            "first seq",
            "last seq",
            "last message",
            "consumers",
            "replicas",
            "protection",
        ]);
        for (name, status) in &streams {
            match status {
                None => t.add_row([
                    (*name).to_owned(),
                    "MISSING".to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]),
                Some(s) => t.add_row([
                    s.name.clone(),
                    s.messages.to_string(),
                    s.bytes.to_string(),
                    s.first_sequence.to_string(),
                    s.last_sequence.to_string(),
                    short_or_dash(s.last_time),
                    s.consumer_count.to_string(),
                    s.replicas.to_string(),
                    match (s.deny_delete, s.deny_purge) {
                        (true, true) => "no delete, no purge",
                        (true, false) => "no delete",
                        (false, true) => "no purge",
                        (false, false) => "-",
                    }
                    .to_owned(),
                ]),
            };
        }
        ctx.out.table(&t)?;
        ctx.out.line("")?;
        if consumers.is_empty() {
            ctx.out.line("no durable consumers")?;
        } else {
            let mut t = table(&[
                "stream",
                "consumer",
                "filter",
                "ack floor",
                "delivered",
                "pending",
                "ack pending",
                "redelivered",
                "waiting",
                "ack wait",
            ]);
            for c in &consumers {
                t.add_row([
                    c.stream.clone(),
                    c.name.clone(),
                    if c.filter_subject.is_empty() {
                        "*".to_owned()
                    } else {
                        c.filter_subject.clone()
                    },
                    c.ack_floor_sequence.to_string(),
                    c.delivered_sequence.to_string(),
                    c.pending.to_string(),
                    c.ack_pending.to_string(),
                    c.redelivered.to_string(),
                    c.waiting.to_string(),
                    human(c.ack_wait),
                ]);
            }
            ctx.out.table(&t)?;
        }
        for name in &missing {
            ctx.out.warn(format!(
                "stream {name} is missing; create it with `casebus streams provision`"
            ));
        }
    }
    Ok(Outcome::problems_if(!missing.is_empty()))
}

/// `casebus streams provision`.
pub async fn provision(
    ctx: &Ctx,
    replicas: usize,
    duplicate_window: Duration,
) -> Result<Outcome, CliError> {
    let settings = StreamSettings {
        replicas,
        duplicate_window,
        ..StreamSettings::default()
    };
    let ops = ctx.ops().await?;
    ops.provision(&settings).await.map_err(|e| match e {
        casebus_bus::ops::OpsError::Provision(casebus_bus::ProvisionError::InvalidSetting {
            ..
        }) => CliError::usage(e.to_string()),
        casebus_bus::ops::OpsError::Provision(casebus_bus::ProvisionError::Incompatible {
            ..
        }) => CliError::refused(e.to_string()),
        other => CliError::from(other),
    })?;
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "ok": true,
            "streams": STREAMS,
            "replicas": replicas,
            "duplicate_window_secs": duplicate_window.as_secs(),
        }))?;
    } else {
        ctx.out.line(format!(
            "streams {} provisioned (replicas {replicas}, duplicate window {})",
            STREAMS.join(", "),
            human(duplicate_window)
        ))?;
    }
    Ok(Outcome::Ok)
}
