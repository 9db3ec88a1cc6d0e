//! `casebus verify --case <id> | --all | --bundle <file>`: chain and signatures of one
//! case, of every case in the stream (one pass, with a progress bar), or of an evidence
//! bundle offline. Every failure is reported with case, version, sequence and reason;
//! any failure makes the exit code 1. A bundle checked with its own keys fails unless
//! `--trust-bundle-keys` accepts them, and `--expect-digest` must match its manifest.

use std::path::Path;

use serde_json::json;

use casebus_bus::ops::ScanStart;
use casebus_bus::subjects::{CASES_STREAM, case_subject};
use casebus_integrity::verify_case;
use casebus_proto::CaseId;

use crate::bundle::{self, Bundle};
use crate::cli::VerifyArgs;
use crate::context::{Ctx, load_registry};
use crate::decode::Problem;
use crate::error::{CliError, Outcome};
use crate::verifier::{Checked, Failure, Rule, StreamVerifier};

/// Messages fetched per request.
const SCAN_BATCH: usize = 1024;

/// `casebus verify`.
pub async fn run(ctx: &Ctx, args: &VerifyArgs) -> Result<Outcome, CliError> {
    if let Some(path) = &args.bundle {
        return verify_bundle(ctx, path, args);
    }
    for (given, flag) in [
        (args.trust_bundle_keys, "--trust-bundle-keys"),
        (args.expect_digest.is_some(), "--expect-digest"),
    ] {
        if given {
            return Err(CliError::usage(format!(
                "{flag} applies to a bundle only; give --bundle"
            )));
        }
    }
    if let Some(case) = &args.case {
        return verify_one(ctx, case).await;
    }
    verify_all(ctx).await
}

fn no_stream() -> CliError {
    CliError::runtime(format!(
        "stream {CASES_STREAM} not found; provision the streams first (casebus streams provision)"
    ))
}

async fn verify_one(ctx: &Ctx, case: &CaseId) -> Result<Outcome, CliError> {
    let registry = ctx.registry("to verify signatures")?;
    let ops = ctx.ops().await?;
    ops.stream_status(CASES_STREAM)
        .await?
        .ok_or_else(no_stream)?;
    let mut scanner = ops
        .scan(
            CASES_STREAM,
            Some(&case_subject(case)),
            ScanStart::Sequence(1),
            SCAN_BATCH,
        )
        .await?;
    let mut messages = Vec::new();
    let read = async {
        loop {
            let batch = scanner.fetch().await?;
            if batch.is_empty() {
                return Ok::<(), CliError>(());
            }
            messages.extend(batch);
        }
    }
    .await;
    scanner.close().await;
    read?;
    if messages.is_empty() {
        if ctx.out.is_json() {
            ctx.out.json_document(&json!({
                "case": case.as_str(), "ok": false, "messages": 0, "events": 0,
                "failures": [], "problem": "case not found",
            }))?;
        } else {
            ctx.out
                .line(format!("case {case}: not found in {CASES_STREAM}"))?;
        }
        return Ok(Outcome::Problems);
    }
    let report = verify_case(case, messages.iter().map(|m| m.payload.as_ref()), &registry);
    let failures: Vec<Failure> = report
        .failures
        .iter()
        .map(|f| Failure {
            case_id: case.to_string(),
            sequence: messages.get(f.position).map_or(0, |m| m.sequence),
            version: f.version,
            problem: Problem::from(&f.error),
        })
        .collect();
    let last_version = report.events.last().map(|e| e.version());
    let last_sequence = messages.last().map_or(0, |m| m.sequence);
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "case": case.as_str(),
            "ok": failures.is_empty(),
            "messages": messages.len(),
            "events": report.events.len(),
            "last_version": last_version,
            "last_sequence": last_sequence,
            "head_hash": report.events.last().map(|e| e.hash.to_hex()),
            "failures": failures.iter().map(Failure::to_json).collect::<Vec<_>>(),
        }))?;
    } else {
        for failure in &failures {
            ctx.out.line(failure.to_line())?;
        }
        let summary = if failures.is_empty() {
            format!(
                "case {case}: OK, {} events (v1..v{}), chain and signatures intact, last sequence {last_sequence}",
                report.events.len(),
                last_version.unwrap_or(0)
            )
        } else {
            format!(
                "case {case}: FAILED, {} failure(s) in {} messages ({} events verified)",
                failures.len(),
                messages.len(),
                report.events.len()
            )
        };
        ctx.out.line(summary)?;
    }
    Ok(Outcome::problems_if(!failures.is_empty()))
}

async fn verify_all(ctx: &Ctx) -> Result<Outcome, CliError> {
    let registry = ctx.registry("to verify signatures")?;
    let ops = ctx.ops().await?;
    let status = ops
        .stream_status(CASES_STREAM)
        .await?
        .ok_or_else(no_stream)?;
    let end = status.last_sequence;
    let total = status.messages;
    let bar = ctx.out.progress(total, "messages");
    let mut verifier = StreamVerifier::new(&registry, Rule::Audit);
    let mut failures: Vec<Failure> = Vec::new();
    let mut checked: u64 = 0;
    let mut valid: u64 = 0;
    if total > 0 {
        let mut scanner = ops
            .scan(
                CASES_STREAM,
                None,
                ScanStart::Sequence(status.first_sequence),
                SCAN_BATCH,
            )
            .await?;
        let read = async {
            'read: loop {
                let batch = scanner.fetch().await?;
                if batch.is_empty() {
                    break;
                }
                for message in &batch {
                    if message.sequence > end {
                        break 'read;
                    }
                    checked += 1;
                    bar.inc(1);
                    match verifier.check(message.sequence, &message.subject, &message.payload) {
                        Checked::Valid(_) => valid += 1,
                        Checked::Failed(failure) => {
                            if !ctx.out.is_json() {
                                let line = failure.to_line();
                                bar.suspend(|| ctx.out.line(line))?;
                            }
                            failures.push(failure);
                        }
                    }
                    if message.sequence == end {
                        break 'read;
                    }
                }
            }
            Ok::<(), CliError>(())
        }
        .await;
        scanner.close().await;
        bar.finish_and_clear();
        read?;
    }
    let cases = verifier.cases();
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "ok": failures.is_empty(),
            "messages": checked,
            "events": valid,
            "cases": cases,
            "last_sequence": end,
            "failures": failures.iter().map(Failure::to_json).collect::<Vec<_>>(),
        }))?;
    } else {
        let cases_failed: std::collections::BTreeSet<&str> =
            failures.iter().map(|f| f.case_id.as_str()).collect();
        let summary = if failures.is_empty() {
            format!(
                "OK: {checked} messages of {cases} cases verified up to sequence {end}, every chain and signature intact"
            )
        } else {
            format!(
                "FAILED: {} failure(s) in {} of {cases} cases ({checked} messages checked up to sequence {end}, {valid} events verified)",
                failures.len(),
                cases_failed.len()
            )
        };
        ctx.out.line(summary)?;
    }
    Ok(Outcome::problems_if(!failures.is_empty()))
}

fn verify_bundle(ctx: &Ctx, path: &Path, args: &VerifyArgs) -> Result<Outcome, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::caused(format!("cannot read bundle {}", path.display()), e))?;
    let bundle: Bundle = match serde_json::from_str(&text) {
        Ok(bundle) => bundle,
        Err(e) => {
            // A file that is not a bundle at all fails verification; it is not a
            // runtime error.
            let reason = format!("{} is not a casebus bundle: {e}", path.display());
            if ctx.out.is_json() {
                ctx.out.json_document(&json!({ "ok": false, "failures": [{
                    "code": "format", "reason": reason }] }))?;
            } else {
                ctx.out.line(format!("FAIL {reason}"))?;
            }
            return Ok(Outcome::Problems);
        }
    };
    let trusted = match &ctx.global.registry {
        Some(path) => Some(load_registry(path)?),
        None => None,
    };
    if trusted.is_none() && args.trust_bundle_keys {
        ctx.out.note(
            "verifying with the keys inside the bundle, as --trust-bundle-keys asks; this shows the bundle agrees with itself, not who signed it",
        );
    }
    let mut report = bundle::verify(&bundle, trusted.as_ref());
    if trusted.is_none() && !args.trust_bundle_keys {
        report.failures.push(bundle::own_keys_failure());
    }
    if let Some(expected) = &args.expect_digest {
        report
            .failures
            .extend(bundle::digest_failure(&report, expected));
    }
    let ok = report.failures.is_empty();
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "case": report.case_id,
            "ok": ok,
            "events": report.events,
            "verified": report.verified,
            "rejected_at_export": bundle.rejected.len(),
            "digest": report.digest,
            "keys": if trusted.is_some() { "trusted registry" } else { "bundle" },
            "expected_digest": args.expect_digest,
            "failures": report.failures.iter().map(|f| json!({
                "sequence": f.sequence, "version": f.version,
                "code": f.problem.code, "reason": f.problem.reason,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for f in &report.failures {
            let at = match (f.version, f.sequence) {
                (Some(v), Some(s)) => format!(" v{v} seq {s}"),
                (Some(v), None) => format!(" v{v}"),
                (None, Some(s)) => format!(" seq {s}"),
                (None, None) => String::new(),
            };
            ctx.out.line(format!(
                "FAIL case {}{at}: {} ({})",
                report.case_id, f.problem.reason, f.problem.code
            ))?;
        }
        if !bundle.rejected.is_empty() {
            ctx.out.line(format!(
                "note: {} message(s) of the case failed verification at export and are listed apart",
                bundle.rejected.len()
            ))?;
        }
        ctx.out.line(if ok {
            format!(
                "bundle of case {}: OK, {} events verified, manifest digest {}",
                report.case_id, report.verified, report.digest
            )
        } else {
            format!(
                "bundle of case {}: FAILED, {} failure(s)",
                report.case_id,
                report.failures.len()
            )
        })?;
    }
    Ok(Outcome::problems_if(!ok))
}
