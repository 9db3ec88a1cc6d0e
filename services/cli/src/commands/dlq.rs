//! `casebus dlq list|show|retry|drop`: the dead letters of `CASES_DLQ`.
//!
//! Retry and the chain: `CASES` is immutable, so the original of a dead letter is still
//! in it. Publishing the same bytes again gives them a new sequence, and every consumer
//! verifies them again at that new place. If the original already verifies in its place
//! (the consumer's registry lacked a key, a handler failed), the copy would repeat a
//! version the chain holds and be dead-lettered by every consumer as a reorder; so for
//! that case retry resets the dead-lettering consumer to the original's sequence instead
//! (it receives the original again, in place, and everything after it, which handlers
//! absorb because they are idempotent on the event id). Only a message that continues
//! the case's chain at its end (it had arrived before the event it links to) is
//! published again, conditional on the case's last sequence so it cannot race an
//! append. A message that still fails is not retried.

use serde_json::json;
use time::OffsetDateTime;

use casebus_bus::ops::{
    AuditRecord, DeadLetter, OPERATOR_AUDIT_OFFICE, Ops, OpsError, PublishOptions, ScanStart,
};
use casebus_bus::subjects::{CASES_STREAM, DLQ_STREAM, case_of_subject, dlq_subject, headers};
use casebus_integrity::{ChainTip, OfficeRegistry, verify_signed};
use casebus_proto::CaseId;

use crate::context::Ctx;
use crate::decode::{Decoded, Problem};
use crate::error::{CliError, Outcome};
use crate::output::{kv_table, shorten, table};
use crate::times::{rfc3339, short};
use crate::verifier::{Checked, Rule, StreamVerifier};

use super::replay::{self, Plan, Target};

/// Messages fetched per request.
const SCAN_BATCH: usize = 512;

fn dead_letter_json(dl: &DeadLetter) -> serde_json::Value {
    json!({
        "sequence": dl.message.sequence,
        "stored_at": rfc3339(dl.message.stored_at),
        "consumer": dl.consumer,
        "code": dl.code,
        "reason": dl.reason,
        "original_stream": dl.original_stream,
        "original_sequence": dl.original_sequence,
        "original_subject": dl.original_subject,
        "case": case_of_subject(&dl.original_subject).map(|c| c.to_string()),
        "size": dl.message.payload.len(),
    })
}

async fn get(ops: &Ops, seq: u64) -> Result<DeadLetter, CliError> {
    match ops.get_message(DLQ_STREAM, seq).await {
        Ok(Some(message)) => Ok(DeadLetter::from(message)),
        Ok(None) => Err(CliError::refused(format!(
            "dead letter {seq} not found in {DLQ_STREAM}"
        ))),
        Err(OpsError::StreamMissing { .. }) => Err(CliError::runtime(format!(
            "stream {DLQ_STREAM} not found; provision the streams first (casebus streams provision)"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn actor_or_user(actor: Option<String>) -> String {
    actor
        .filter(|a| !a.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `casebus dlq list`.
pub async fn list(ctx: &Ctx, consumer: Option<&str>) -> Result<Outcome, CliError> {
    let ops = ctx.ops().await?;
    let subject = consumer.map(dlq_subject);
    let mut scanner = match ops
        .scan(
            DLQ_STREAM,
            subject.as_deref(),
            ScanStart::Sequence(1),
            SCAN_BATCH,
        )
        .await
    {
        Ok(scanner) => scanner,
        Err(OpsError::StreamMissing { .. }) => {
            return Err(CliError::runtime(format!(
                "stream {DLQ_STREAM} not found; provision the streams first (casebus streams provision)"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut letters = Vec::new();
    let read = async {
        loop {
            let batch = scanner.fetch().await?;
            if batch.is_empty() {
                return Ok::<(), CliError>(());
            }
            letters.extend(batch.into_iter().map(DeadLetter::from));
        }
    }
    .await;
    scanner.close().await;
    read?;
    if ctx.out.is_json() {
        for dl in &letters {
            ctx.out.json_line(&dead_letter_json(dl))?;
        }
    } else if letters.is_empty() {
        ctx.out.line("no dead letters")?;
    } else {
        let mut t = table(&[
            "seq", "stored", "consumer", "code", "case", "orig seq", "reason",
        ]);
        for dl in &letters {
            t.add_row([
                dl.message.sequence.to_string(),
                short(dl.message.stored_at),
                dl.consumer.clone(),
                dl.code.clone(),
                case_of_subject(&dl.original_subject)
                    .map_or_else(|| dl.original_subject.clone(), |c| c.to_string()),
                dl.original_sequence
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                shorten(&dl.reason, 80),
            ]);
        }
        ctx.out.table(&t)?;
        ctx.out.note(format!("{} dead letter(s)", letters.len()));
    }
    Ok(Outcome::Ok)
}

/// `casebus dlq show`.
pub async fn show(ctx: &Ctx, seq: u64) -> Result<Outcome, CliError> {
    let registry = ctx.optional_registry()?;
    let ops = ctx.ops().await?;
    let dl = get(&ops, seq).await?;
    let decoded = Decoded::new(
        dl.original_sequence.unwrap_or(0),
        &dl.original_subject,
        None,
        &dl.message.payload,
        registry.as_deref(),
    );
    if ctx.out.is_json() {
        let mut value = dead_letter_json(&dl);
        if let Some(object) = value.as_object_mut() {
            object.insert("headers".into(), json!(dl.message.headers));
            object.insert("original".into(), decoded.to_json());
        }
        ctx.out.json_document(&value)?;
        return Ok(Outcome::Ok);
    }
    let mut t = kv_table();
    t.add_row(["dead letter".to_owned(), seq.to_string()]);
    t.add_row(["stored".to_owned(), short(dl.message.stored_at)]);
    t.add_row(["consumer".to_owned(), dl.consumer.clone()]);
    t.add_row(["code".to_owned(), dl.code.clone()]);
    t.add_row(["reason".to_owned(), dl.reason.clone()]);
    t.add_row([
        "original".to_owned(),
        format!(
            "{} sequence {} subject {}",
            dl.original_stream,
            dl.original_sequence
                .map_or_else(|| "?".to_owned(), |s| s.to_string()),
            dl.original_subject
        ),
    ]);
    t.add_row([
        "size".to_owned(),
        format!("{} bytes", dl.message.payload.len()),
    ]);
    ctx.out.table(&t)?;
    ctx.out.line("")?;
    ctx.out.line(decoded.to_line())?;
    if let Some(payload) = decoded.to_json().get("payload") {
        let text = serde_json::to_string_pretty(payload).unwrap_or_default();
        ctx.out.line(text)?;
    }
    Ok(Outcome::Ok)
}

/// What a retry will do.
#[derive(Debug)]
enum Action {
    /// Reset the consumer to the original's sequence.
    Redeliver(Box<Plan>),
    /// Publish the bytes again on the case's subject, expecting its last sequence.
    Republish {
        subject: String,
        expected_last: u64,
        version: u64,
    },
    /// A copy of the message is in the case's chain already (an earlier retry).
    AlreadyChained { sequence: u64 },
}

/// Judges the dead letter's original against its case's chain as stored now.
async fn judge(
    ops: &Ops,
    registry: &OfficeRegistry,
    dl: &DeadLetter,
    case: &CaseId,
    original_sequence: u64,
) -> Result<Result<Action, Problem>, CliError> {
    let mut scanner = ops
        .scan(
            CASES_STREAM,
            Some(&dl.original_subject),
            ScanStart::Sequence(1),
            SCAN_BATCH,
        )
        .await?;
    let mut verifier = StreamVerifier::new(registry, Rule::Consumer);
    let mut in_place: Option<Result<(), Problem>> = None;
    let mut tip = ChainTip::empty(case.clone());
    let mut chained = std::collections::HashMap::new();
    let mut last_sequence = 0;
    let read = async {
        loop {
            let batch = scanner.fetch().await?;
            if batch.is_empty() {
                return Ok::<(), CliError>(());
            }
            for message in &batch {
                last_sequence = message.sequence;
                let checked = verifier.check(message.sequence, &message.subject, &message.payload);
                if let Checked::Valid(event) = &checked {
                    tip.advance(event);
                    chained.insert(event.hash, message.sequence);
                }
                if message.sequence == original_sequence {
                    in_place = Some(match checked {
                        Checked::Valid(_) => Ok(()),
                        Checked::Failed(f) => Err(f.problem),
                    });
                }
            }
        }
    }
    .await;
    scanner.close().await;
    read?;
    match in_place {
        Some(Ok(())) => {
            let plan = replay::plan(ops, &dl.consumer, Target::Sequence(original_sequence)).await?;
            return Ok(Ok(Action::Redeliver(Box::new(plan))));
        }
        None => {
            return Err(CliError::refused(format!(
                "the original of dead letter {} ({CASES_STREAM} sequence {original_sequence}) is not on {}",
                dl.message.sequence, dl.original_subject
            )));
        }
        Some(Err(_)) => {}
    }
    let event = match verify_signed(&dl.message.payload, registry) {
        Ok(event) => event,
        Err(e) => return Ok(Err(Problem::from(&e))),
    };
    if let Some(&sequence) = chained.get(&event.hash) {
        return Ok(Ok(Action::AlreadyChained { sequence }));
    }
    match tip.check(&event) {
        Ok(()) => Ok(Ok(Action::Republish {
            subject: dl.original_subject.clone(),
            expected_last: last_sequence,
            version: event.version(),
        })),
        Err(e) => Ok(Err(Problem::from(&casebus_integrity::VerifyError::from(e)))),
    }
}

/// `casebus dlq retry`.
pub async fn retry(
    ctx: &Ctx,
    seq: u64,
    execute: bool,
    force: bool,
    actor: Option<String>,
) -> Result<Outcome, CliError> {
    let registry =
        ctx.registry("to judge the message against its case (use the consumer's registry)")?;
    let ops = ctx.ops().await?;
    let dl = get(&ops, seq).await?;
    if dl.original_stream != CASES_STREAM {
        return Err(CliError::refused(format!(
            "dead letter {seq} came from stream {:?}, not {CASES_STREAM}; nothing to retry",
            dl.original_stream
        )));
    }
    let (Some(case), Some(original_sequence)) =
        (case_of_subject(&dl.original_subject), dl.original_sequence)
    else {
        return Err(CliError::refused(format!(
            "dead letter {seq} does not name its original case subject and sequence; nothing to retry"
        )));
    };
    if let Ok(Some(original)) = ops.get_message(CASES_STREAM, original_sequence).await
        && original.payload != dl.message.payload
    {
        ctx.out.warn(format!(
            "dead letter {seq} differs from {CASES_STREAM} sequence {original_sequence}; judging the dead letter's bytes"
        ));
    }
    let action = match judge(&ops, &registry, &dl, &case, original_sequence).await? {
        Ok(action) => action,
        Err(problem) => {
            let message = format!(
                "dead letter {seq} still fails verification ({}: {}); nothing to retry: fix the cause, or drop it with `casebus dlq drop {seq} --execute`",
                problem.code, problem.reason
            );
            if ctx.out.is_json() {
                ctx.out.json_document(&json!({
                    "dead_letter": seq, "action": "none", "executed": false,
                    "problem": { "code": problem.code, "reason": problem.reason },
                }))?;
            }
            return Err(CliError::refused(message));
        }
    };
    let actor = actor_or_user(actor);
    match action {
        Action::Redeliver(plan) => {
            let blockers = plan.blockers();
            // Skipping is impossible here (the start is the message the consumer
            // dead-lettered, so at or before its ack floor); only an active client
            // blocks.
            let refused = execute && !force && plan.consumer.waiting > 0;
            let executed = execute && !refused;
            if ctx.out.is_json() {
                if executed {
                    redeliver(&ops, &plan, &actor, &dl, &case, original_sequence).await?;
                }
                ctx.out.json_document(&json!({
                    "dead_letter": seq,
                    "action": "redeliver",
                    "executed": executed,
                    "plan": plan.to_json(),
                }))?;
            } else {
                ctx.out.line(format!(
                    "dead letter {seq}: the original ({CASES_STREAM} sequence {original_sequence}) now verifies in its place;\n\
                     retry resets consumer {} to it, so it receives the message again where it is (not a copy):",
                    plan.consumer.name
                ))?;
                plan.print(ctx)?;
                for blocker in &blockers {
                    ctx.out.warn(blocker);
                }
            }
            if refused {
                return Err(CliError::refused(format!(
                    "retry refused, nothing changed: {}; use --force to override",
                    blockers.join("; ")
                )));
            }
            if !execute {
                ctx.out
                    .note("plan only: nothing changed; add --execute to carry it out");
                return Ok(Outcome::Ok);
            }
            if !ctx.out.is_json() {
                redeliver(&ops, &plan, &actor, &dl, &case, original_sequence).await?;
                ctx.out.line(format!(
                    "done: consumer {} will receive sequence {original_sequence} again (and {} message(s) in all); \
                     drop the dead letter once it is processed: casebus dlq drop {seq} --execute",
                    plan.consumer.name, plan.will_receive
                ))?;
            }
            Ok(Outcome::Ok)
        }
        Action::AlreadyChained { sequence } => {
            let message = format!(
                "dead letter {seq}: a copy of it is in case {case}'s chain already ({CASES_STREAM} sequence {sequence}, an earlier retry); \
                 nothing to retry; drop the dead letter: casebus dlq drop {seq} --execute"
            );
            if ctx.out.is_json() {
                ctx.out.json_document(&json!({
                    "dead_letter": seq, "action": "none", "executed": false,
                    "chained_at": sequence,
                }))?;
            } else {
                ctx.out.line(message)?;
            }
            Ok(Outcome::Ok)
        }
        Action::Republish {
            subject,
            expected_last,
            version,
        } => {
            if !ctx.out.is_json() {
                ctx.out.line(format!(
                    "dead letter {seq}: the original ({CASES_STREAM} sequence {original_sequence}) does not verify in its place, \
                     but its bytes continue case {case} at its end as version {version};\n\
                     retry publishes them again on {subject} (expecting the case's last sequence {expected_last}): \
                     they get a new sequence and every consumer verifies them there; the original stays in {CASES_STREAM}"
                ))?;
            }
            if !execute {
                if ctx.out.is_json() {
                    ctx.out.json_document(&json!({
                        "dead_letter": seq, "action": "republish", "executed": false,
                        "subject": subject, "expected_last_sequence": expected_last, "version": version,
                    }))?;
                }
                ctx.out
                    .note("plan only: nothing changed; add --execute to carry it out");
                return Ok(Outcome::Ok);
            }
            let mut message_headers =
                vec![("Casebus-Retry-Of".to_owned(), format!("{DLQ_STREAM}:{seq}"))];
            if let Some(event) = Decoded::new(0, &subject, None, &dl.message.payload, None).event {
                message_headers.push((headers::EVENT_TYPE.to_owned(), event.type_name));
                message_headers.push((headers::OFFICE.to_owned(), event.office));
                message_headers.push((headers::CASE_VERSION.to_owned(), event.version.to_string()));
            }
            let published = ops
                .publish(
                    &subject,
                    dl.message.payload.clone(),
                    &message_headers,
                    &PublishOptions {
                        message_id: Some(format!("dlq-retry:{seq}")),
                        expected_last_subject_sequence: Some(expected_last),
                    },
                )
                .await
                .map_err(|e| match e {
                    OpsError::WrongLastSequence { .. } => CliError::refused(format!(
                        "case {case} changed while retrying; nothing was written; run the retry again"
                    )),
                    other => CliError::from(other),
                })?;
            if !published.duplicate {
                audit(
                    &ops,
                    &actor,
                    &dl,
                    &case,
                    "dlq.retry",
                    format!(
                        "dead letter {seq}: republished on {subject} as {CASES_STREAM} sequence {}",
                        published.sequence
                    ),
                )
                .await?;
            }
            if ctx.out.is_json() {
                ctx.out.json_document(&json!({
                    "dead_letter": seq, "action": "republish", "executed": true,
                    "subject": subject, "version": version,
                    "sequence": published.sequence, "duplicate": published.duplicate,
                }))?;
            } else if published.duplicate {
                ctx.out.line(format!(
                    "already retried: {CASES_STREAM} sequence {} holds it; nothing new was written",
                    published.sequence
                ))?;
            } else {
                ctx.out.line(format!(
                    "done: republished as {CASES_STREAM} sequence {}; drop the dead letter once it is processed: \
                     casebus dlq drop {seq} --execute",
                    published.sequence
                ))?;
            }
            Ok(Outcome::Ok)
        }
    }
}

async fn redeliver(
    ops: &Ops,
    plan: &Plan,
    actor: &str,
    dl: &DeadLetter,
    case: &CaseId,
    original_sequence: u64,
) -> Result<(), CliError> {
    replay::execute(ops, plan).await?;
    audit(
        ops,
        actor,
        dl,
        case,
        "dlq.retry",
        format!(
            "dead letter {}: consumer {} reset to {CASES_STREAM} sequence {original_sequence}",
            dl.message.sequence, plan.consumer.name
        ),
    )
    .await?;
    Ok(())
}

async fn audit(
    ops: &Ops,
    actor: &str,
    dl: &DeadLetter,
    case: &CaseId,
    method: &str,
    detail: String,
) -> Result<u64, CliError> {
    let version = Decoded::new(0, &dl.original_subject, None, &dl.message.payload, None)
        .event
        .map(|e| e.version);
    let record = AuditRecord {
        office: OPERATOR_AUDIT_OFFICE.to_owned(),
        actor: actor.to_owned(),
        case_id: case.to_string(),
        versions: version.into_iter().collect(),
        at: OffsetDateTime::now_utc(),
        method: method.to_owned(),
        detail: Some(detail),
    };
    let id = format!(
        "{method}:{}:{}",
        dl.message.sequence,
        record.at.unix_timestamp()
    );
    let published = ops
        .publish_audit(&record, Some(&id))
        .await
        .map_err(|e| match e {
            OpsError::Invalid { .. } => CliError::usage(e.to_string()),
            other => CliError::caused(
                "writing the audit record failed; nothing was changed",
                other,
            ),
        })?;
    Ok(published.sequence)
}

/// `casebus dlq drop`.
pub async fn drop(
    ctx: &Ctx,
    seq: u64,
    execute: bool,
    actor: Option<String>,
) -> Result<Outcome, CliError> {
    let ops = ctx.ops().await?;
    let dl = get(&ops, seq).await?;
    let what = format!(
        "dead letter {seq}: consumer {}, {} ({}), original {} sequence {} on {}",
        dl.consumer,
        dl.code,
        shorten(&dl.reason, 80),
        dl.original_stream,
        dl.original_sequence
            .map_or_else(|| "?".to_owned(), |s| s.to_string()),
        dl.original_subject
    );
    if !execute {
        ctx.out.line(format!("would drop {what}"))?;
        return Err(CliError::usage(format!(
            "dlq drop deletes a dead letter: add --execute to drop dead letter {seq}; nothing was changed"
        )));
    }
    let case = case_of_subject(&dl.original_subject);
    let actor = actor_or_user(actor);
    let version = Decoded::new(0, &dl.original_subject, None, &dl.message.payload, None)
        .event
        .map(|e| e.version);
    let record = AuditRecord {
        office: OPERATOR_AUDIT_OFFICE.to_owned(),
        actor,
        case_id: case.map(|c| c.to_string()).unwrap_or_default(),
        versions: version.into_iter().collect(),
        at: OffsetDateTime::now_utc(),
        method: "dlq.drop".to_owned(),
        detail: Some(what.clone()),
    };
    // The record is written first: a drop that cannot be audited does not happen. Its
    // message id makes a repeated drop within the duplicate window record once.
    let audited = ops
        .publish_audit(&record, Some(&format!("dlq.drop:{seq}")))
        .await
        .map_err(|e| CliError::caused("writing the audit record failed; nothing was dropped", e))?;
    let deleted = ops.delete_message(DLQ_STREAM, seq).await?;
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "dead_letter": seq, "dropped": deleted, "audit_sequence": audited.sequence,
        }))?;
    } else if deleted {
        ctx.out.line(format!(
            "dropped {what}; audit record at AUDIT sequence {}",
            audited.sequence
        ))?;
    } else {
        ctx.out.line(format!(
            "dead letter {seq} was already gone; audit record at AUDIT sequence {}",
            audited.sequence
        ))?;
    }
    Ok(Outcome::Ok)
}
