//! `casebus verify --case <id> | --all | --bundle <file> | --log`: chain and signatures
//! of one case, of every case in the stream (one pass, with a progress bar), or of an
//! evidence bundle offline; or the whole transparency log against its latest
//! checkpoint. Every failure is reported with case, version, sequence and reason; any
//! failure makes the exit code 1. A bundle checked with its own keys fails unless
//! `--trust-bundle-keys` accepts them, and `--expect-digest` must match its manifest.
//! A v2 bundle's proofs are checked against `--policy`, `--operator-vkey` and
//! `--known-checkpoint` (`crate::proofs`), all without network. `--case` and `--all`
//! also recompute every hand-off's recorded due times with `--deadline-rules` and
//! `--calendar-dir` (the built-in rules and shipped calendar by default).

use std::path::Path;

use serde_json::json;

use casebus_bus::ops::ScanStart;
use casebus_bus::subjects::{CASES_STREAM, case_subject};
use casebus_domain::{DueProblem, RecordedEvent, check_recorded_dues_against, recorded_in};
use casebus_integrity::{VerifiedEvent, verify_case};
use casebus_proto::CaseId;
use casebus_proto::event::v1::SignedEvent;
use casebus_runtime::clocks::Clocks;
use prost::Message as _;

use casebus_bus::subjects::{CHECKPOINTS_STREAM, checkpoint_subject, cosignatures_filter};
use casebus_runtime::tlog_keys::load_verifier;
use casebus_timeline::LogStore;
use casebus_tlog::case_heads::{self, CaseHeads};
use casebus_tlog::note::{Note, NoteVerifier, TYPE_ED25519};
use casebus_tlog::policy::Policy;

use crate::bundle::{self, Bundle, BundleFailure};
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
        (args.known_checkpoint.is_some(), "--known-checkpoint"),
        (!args.operator_vkeys.is_empty(), "--operator-vkey"),
    ] {
        if given {
            return Err(CliError::usage(format!(
                "{flag} applies to a bundle only; give --bundle"
            )));
        }
    }
    if args.log {
        return verify_log(ctx, args).await;
    }
    if args.policy.is_some() {
        return Err(CliError::usage(
            "--policy applies to --bundle and --log only",
        ));
    }
    // A bad rules file or calendar is a usage error before anything is read.
    let clocks = args
        .clocks
        .load()
        .map_err(|e| CliError::usage(e.to_string()))?;
    if let Some(case) = &args.case {
        return verify_one(ctx, case, &clocks).await;
    }
    verify_all(ctx, &clocks).await
}

/// The recorded due times of `event` that do not recompute with `clocks`
/// (`casebus_domain::check_recorded_dues`: a hand-off's, or a detention's), as failures
/// at `sequence`: a due time the rules do not give (or a clock the event does not start,
/// or one it starts and does not record) is `due_time_mismatch`; a due counted with rules and calendar of
/// another digest is `rules_digest_mismatch` (give the services' `--deadline-rules`
/// and `--calendar-dir`), and its due time is not compared. Events without recorded
/// dues (recorded before they were), and sealed events, are not checked.
fn due_failures(event: &VerifiedEvent, sequence: u64, clocks: &Clocks) -> Vec<Failure> {
    let Some(payload) = event
        .event
        .payload
        .as_ref()
        .and_then(|p| p.kind.as_ref())
        .filter(|kind| recorded_in(kind).is_some())
    else {
        return Vec::new();
    };
    let recorded = RecordedEvent {
        case_id: &event.case_id,
        version: event.version(),
        event_id: &event.event_id,
        office: &event.office,
        occurred_at: event.occurred_at,
        visibility: event.event.visibility.as_ref(),
        payload: Some(payload),
    };
    check_recorded_dues_against([recorded], &clocks.rules, &clocks.calendar, &clocks.digest)
        .into_iter()
        .map(|m| Failure {
            case_id: event.case_id.to_string(),
            sequence,
            version: Some(m.version),
            problem: Problem {
                code: match m.problem {
                    DueProblem::RulesDigest { .. } => "rules_digest_mismatch",
                    _ => "due_time_mismatch",
                }
                .into(),
                reason: m.to_string(),
            },
        })
        .collect()
}

/// The sequence of the message holding `event`, among `messages`.
fn sequence_of(event: &VerifiedEvent, messages: &[casebus_bus::ops::StoredMessage]) -> u64 {
    messages
        .iter()
        .find(|m| {
            SignedEvent::decode(m.payload.as_ref()).is_ok_and(|s| s.event == event.signed.event)
        })
        .map_or(0, |m| m.sequence)
}

/// Reads and parses `--policy`.
///
/// # Errors
/// A usage error naming the file and, for a parse error, its line and field.
fn load_policy(path: &std::path::Path) -> Result<Policy, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("--policy {}: {e}", path.display())))?;
    Policy::parse(&text).map_err(|e| CliError::usage(format!("--policy {}: {e}", path.display())))
}

fn load_operator_keys(args: &VerifyArgs) -> Result<Vec<NoteVerifier>, CliError> {
    args.operator_vkeys
        .iter()
        .map(|text| {
            let key = load_verifier(text)
                .map_err(|e| CliError::usage(format!("--operator-vkey: {e}")))?;
            if key.signature_type() != TYPE_ED25519 {
                return Err(CliError::usage(
                    "--operator-vkey: an operator key has signature type 0x01 (casebus keys generate --kind operator)",
                ));
            }
            Ok(key)
        })
        .collect()
}

fn no_stream() -> CliError {
    CliError::runtime(format!(
        "stream {CASES_STREAM} not found; provision the streams first (casebus streams provision)"
    ))
}

async fn verify_one(ctx: &Ctx, case: &CaseId, clocks: &Clocks) -> Result<Outcome, CliError> {
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
    let mut failures: Vec<Failure> = report
        .failures
        .iter()
        .map(|f| Failure {
            case_id: case.to_string(),
            sequence: messages.get(f.position).map_or(0, |m| m.sequence),
            version: f.version,
            problem: Problem::from(&f.error),
        })
        .collect();
    for event in &report.events {
        let mut dues = due_failures(event, 0, clocks);
        if !dues.is_empty() {
            let sequence = sequence_of(event, &messages);
            for f in &mut dues {
                f.sequence = sequence;
            }
            failures.extend(dues);
        }
    }
    failures.sort_by_key(|f| f.sequence);
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

async fn verify_all(ctx: &Ctx, clocks: &Clocks) -> Result<Outcome, CliError> {
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
                        Checked::Valid(event) => {
                            valid += 1;
                            for failure in due_failures(&event, message.sequence, clocks) {
                                if !ctx.out.is_json() {
                                    let line = failure.to_line();
                                    bar.suspend(|| ctx.out.line(line))?;
                                }
                                failures.push(failure);
                            }
                        }
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
    // What the verifier brings is read first: a bad flag is a usage error whatever the
    // bundle holds.
    let policy = args.policy.as_deref().map(load_policy).transpose()?;
    let operators = load_operator_keys(args)?;
    let known =
        match &args.known_checkpoint {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                CliError::usage(format!("--known-checkpoint {}: {e}", path.display()))
            })?),
            None => None,
        };
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
    let summary = crate::proofs::check(
        &bundle,
        &crate::proofs::Trust {
            policy: policy.as_ref(),
            operators: &operators,
            trust_bundle_keys: args.trust_bundle_keys,
            known_checkpoint: known.as_deref(),
        },
        &mut report.failures,
    );
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
            "format": bundle.format,
            "checkpoint_size": summary.checkpoint_size,
            "witnesses": summary.witnesses,
            "inclusion_proofs_verified": summary.included,
            "case_head_proven": summary.head_proven,
            "consistent_with_known": summary.consistent_with_known,
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
            let proofs = match summary.checkpoint_size {
                Some(size) => format!(
                    ", each included in the checkpoint of tree size {size} witnessed by {}, the case's head proven{}",
                    if summary.witnesses.is_empty() { "none".to_owned() } else { summary.witnesses.join(", ") },
                    match summary.consistent_with_known {
                        Some(true) => ", consistent with the known checkpoint",
                        _ => "",
                    }
                ),
                None => String::new(),
            };
            format!(
                "bundle of case {}: OK, {} events verified{proofs}, manifest digest {}",
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

/// The latest checkpoint of the policy's origin with the cosignature lines its
/// witnesses published for that very checkpoint.
async fn latest_checkpoint(
    ops: &casebus_bus::ops::Ops,
    origin: &str,
) -> Result<Option<(u64, String)>, CliError> {
    let read = |e| CliError::caused("cannot read the CHECKPOINTS stream", e);
    let Some(message) = ops
        .last_on_subject(CHECKPOINTS_STREAM, &checkpoint_subject(origin))
        .await
        .map_err(read)?
    else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&message.payload).into_owned();
    let Ok(mut note) = Note::parse(&message.payload) else {
        return Ok(Some((message.sequence, text)));
    };
    let mut scanner = ops
        .scan(
            CHECKPOINTS_STREAM,
            Some(&cosignatures_filter(origin)),
            ScanStart::LastPerSubject,
            SCAN_BATCH,
        )
        .await
        .map_err(read)?;
    let cosignatures = if scanner.pending_at_start() > 0 {
        scanner.fetch().await
    } else {
        Ok(Vec::new())
    };
    scanner.close().await;
    for cosigned in cosignatures.map_err(read)? {
        let Ok(cosigned) = Note::parse(&cosigned.payload) else {
            continue;
        };
        note.merge_signatures(&cosigned);
    }
    Ok(Some((message.sequence, note.to_text())))
}

/// `casebus verify --log`: the whole log recomputed from `CASES` against the latest
/// checkpoint.
async fn verify_log(ctx: &Ctx, args: &VerifyArgs) -> Result<Outcome, CliError> {
    let Some(path) = &args.policy else {
        return Err(CliError::usage(
            "--log needs --policy (the log key and origin the checkpoints are signed with)",
        ));
    };
    let policy = load_policy(path)?;
    let ops = ctx.ops().await?;
    let status = ops
        .stream_status(CASES_STREAM)
        .await?
        .ok_or_else(no_stream)?;
    let Some((checkpoint_sequence, note)) = latest_checkpoint(&ops, policy.origin()).await? else {
        return Err(CliError::refused(format!(
            "no checkpoint of origin {} on {CHECKPOINTS_STREAM} yet",
            policy.origin()
        )));
    };
    let mut failures: Vec<BundleFailure> = Vec::new();
    let fail = |code: &str, reason: String| BundleFailure::new(None, None, code, reason);
    let mut witnesses = Vec::new();
    let signed = match policy.witnessed(note.as_bytes()) {
        Ok(w) => {
            witnesses = w.witnesses;
            Some(w.checkpoint)
        }
        Err(e) => {
            let code = match &e {
                casebus_tlog::policy::WitnessedError::Checkpoint(_) => "checkpoint_signature",
                casebus_tlog::policy::WitnessedError::Cosignature(_) => "cosignature_invalid",
                _ => "cosignature_quorum",
            };
            failures.push(fail(code, error_chain(&e)));
            policy.open(note.as_bytes()).ok()
        }
    };
    let mut checked = 0u64;
    if let Some(signed) = &signed {
        let size = signed.checkpoint.size;
        let mut store = LogStore::open_in_memory().map_err(CliError::from_source)?;
        let bar = ctx.out.progress(size, "messages");
        if size > 0 {
            let mut scanner = ops
                .scan(CASES_STREAM, None, ScanStart::Sequence(1), SCAN_BATCH)
                .await?;
            let read = async {
                while checked < size {
                    let batch = scanner.fetch().await?;
                    if batch.is_empty() {
                        break;
                    }
                    let batch: Vec<_> = batch.into_iter().filter(|m| m.sequence <= size).collect();
                    for (i, m) in batch.iter().enumerate() {
                        let want = checked + 1 + i as u64;
                        if m.sequence != want {
                            return Err(CliError::refused(format!(
                                "{CASES_STREAM} holds no message at sequence {want} (the next stored is {}): the stream is not the log",
                                m.sequence
                            )));
                        }
                    }
                    store
                        .append(batch.iter().map(|m| (m.sequence, m.payload.as_ref())))
                        .map_err(CliError::from_source)?;
                    checked += batch.len() as u64;
                    bar.inc(batch.len() as u64);
                }
                Ok::<(), CliError>(())
            }
            .await;
            scanner.close().await;
            bar.finish_and_clear();
            if let Err(e) = read {
                failures.push(fail("log_gap", e.to_string()));
            }
        }
        if failures.iter().all(|f| f.problem.code != "log_gap") {
            if checked < size {
                failures.push(fail(
                    "log_short",
                    format!(
                        "{CASES_STREAM} holds {checked} messages, the checkpoint states {size}"
                    ),
                ));
            } else {
                let root = store.tree_hash(size).map_err(CliError::from_source)?;
                if root != signed.checkpoint.root {
                    failures.push(fail(
                        "log_root",
                        format!(
                            "the tree of the first {size} messages of {CASES_STREAM} has root {}, the checkpoint states {}",
                            root.to_base64(),
                            signed.checkpoint.root.to_base64()
                        ),
                    ));
                }
                let heads = store.heads_at(size).map_err(CliError::from_source)?;
                match CaseHeads::new(heads) {
                    Ok(map) => {
                        let line = map.extension_line();
                        let stated = signed
                            .checkpoint
                            .extensions
                            .iter()
                            .find(|l| l.starts_with(case_heads::EXTENSION_PREFIX));
                        if stated != Some(&line) {
                            failures.push(fail(
                                "log_case_heads",
                                format!(
                                    "the case heads of the stream give {line:?}, the checkpoint states {stated:?}"
                                ),
                            ));
                        }
                    }
                    Err(e) => failures.push(fail("log_case_heads", error_chain(&e))),
                }
            }
        }
    }
    let ok = failures.is_empty();
    let size = signed.as_ref().map(|s| s.checkpoint.size);
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "ok": ok,
            "origin": policy.origin(),
            "checkpoint_sequence": checkpoint_sequence,
            "checkpoint_size": size,
            "messages_checked": checked,
            "stream_last_sequence": status.last_sequence,
            "witnesses": witnesses,
            "failures": failures.iter().map(|f| json!({
                "code": f.problem.code, "reason": f.problem.reason,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for f in &failures {
            ctx.out.line(format!(
                "FAIL log: {} ({})",
                f.problem.reason, f.problem.code
            ))?;
        }
        ctx.out.line(if ok {
            format!(
                "log {}: OK, the {checked} first messages of {CASES_STREAM} give the root and case heads of the latest checkpoint (tree size {}), witnessed by {}",
                policy.origin(),
                size.unwrap_or(0),
                if witnesses.is_empty() { "none".to_owned() } else { witnesses.join(", ") }
            )
        } else {
            format!("log {}: FAILED, {} failure(s)", policy.origin(), failures.len())
        })?;
    }
    Ok(Outcome::problems_if(!ok))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
