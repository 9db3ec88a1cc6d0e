//! `casebus export --case <id> --out <file>`: the case's stored messages, verified the
//! way the services load them, written as an evidence bundle (see `bundle`). Refuses to
//! overwrite; a half-written file is removed.
//!
//! With `--gateway`, the bundle is a `casebus.bundle.v2` (see `proofs`): the gateway's
//! latest checkpoint with its cosignatures, every event's inclusion proof and the
//! case-head proof, read from the gateway's proof RPCs (the served surface), plus a
//! consistency proof to `--known-checkpoint`, sealed with `--operator-key`. Refused
//! while the checkpoint does not cover the case's last event, and when the known
//! checkpoint is of another origin, lacks the log key's signature line or is not
//! consistent with the gateway's log (a fork: the bundle could only fail), and while it
//! carries fewer cosignatures than `--min-cosignatures` (a bundle for a court whose
//! policy needs a quorum of witnesses).

use std::io::Write as _;
use std::path::Path;

use serde_json::json;
use time::OffsetDateTime;

use casebus_bus::ops::ScanStart;
use casebus_bus::subjects::{CASES_STREAM, case_subject};

use casebus_proto::CaseId;
use casebus_proto::gateway::v1::{
    GetCaseHeadProofRequest, GetCheckpointRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest,
};
use casebus_runtime::tlog_keys::load_log_key;
use casebus_tlog::checkpoint::Checkpoint;
use casebus_tlog::merkle::{Hash, verify_consistency};
use casebus_tlog::note::Note;
use casebus_tlog::proof::TlogProof;

use crate::bundle::{self, Bundle, ExportMessage};
use crate::cli::ExportArgs;
use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::gateway_client::Client;
use crate::proofs::{CaseHeadEntry, ConsistencyEntry, InclusionEntry, Proofs};
use crate::verifier::{Checked, Rule, StreamVerifier};

/// Messages fetched per request.
const SCAN_BATCH: usize = 512;

/// How often the proofs are read again when a new checkpoint was published while they
/// were being read (each proof must lead to the same checkpoint).
const PROOF_ATTEMPTS: usize = 5;

/// Writes `bytes` to a new file at `path` (never overwriting), removing it again when
/// the write fails half-way.
///
/// # Errors
/// A usage error when the file exists; a runtime error when it cannot be written.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::usage(format!(
                "{} exists already; refusing to overwrite it",
                path.display()
            )));
        }
        Err(e) => {
            return Err(CliError::caused(
                format!("cannot create {}", path.display()),
                e,
            ));
        }
    };
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(CliError::caused(
            format!("cannot write {}", path.display()),
            e,
        ));
    }
    Ok(())
}

/// `casebus export`.
pub async fn run(ctx: &Ctx, args: &ExportArgs) -> Result<Outcome, CliError> {
    if args.out.exists() {
        return Err(CliError::usage(format!(
            "{} exists already; refusing to overwrite it",
            args.out.display()
        )));
    }
    let registry = ctx.registry("to verify the case before exporting it")?;
    let opener = crate::decode::load_opener(&args.decryption)?;
    // Everything that can be wrong with the flags is found before NATS is touched.
    let sealing = match (&args.gateway, &args.gateway_token_file, &args.operator_key) {
        (Some(gateway), Some(token), Some(key)) => {
            let operator =
                load_log_key(key).map_err(|e| CliError::usage(format!("--operator-key: {e}")))?;
            let client =
                crate::gateway_client::connect(gateway, token, args.gateway_tls_ca.as_deref())?;
            let known = match &args.known_checkpoint {
                Some(path) => Some(read_known(path)?),
                None => None,
            };
            Some((client, operator, known))
        }
        _ => None,
    };
    let ops = ctx.ops().await?;
    ops.stream_status(CASES_STREAM).await?.ok_or_else(|| {
        CliError::runtime(format!(
            "stream {CASES_STREAM} not found; provision the streams first (casebus streams provision)"
        ))
    })?;
    let subject = case_subject(&args.case);
    let mut scanner = ops
        .scan(
            CASES_STREAM,
            Some(&subject),
            ScanStart::Sequence(1),
            SCAN_BATCH,
        )
        .await?;
    let mut verifier = StreamVerifier::new(&registry, Rule::Consumer);
    let mut messages = Vec::new();
    let read = async {
        loop {
            let batch = scanner.fetch().await?;
            if batch.is_empty() {
                return Ok::<(), CliError>(());
            }
            for m in batch {
                let outcome = match verifier.check(m.sequence, &m.subject, &m.payload) {
                    Checked::Valid(event) => Ok(*event),
                    Checked::Failed(f) => Err(f.problem),
                };
                messages.push(ExportMessage {
                    sequence: m.sequence,
                    raw: m.payload.to_vec(),
                    outcome,
                });
            }
        }
    }
    .await;
    scanner.close().await;
    read?;
    if messages.is_empty() {
        return Err(CliError::refused(format!(
            "case {} not found in {CASES_STREAM}; nothing exported",
            args.case
        )));
    }
    let last_sequence = messages.last().map_or(0, |m| m.sequence);
    let mut bundle = bundle::build(
        &args.case,
        &messages,
        last_sequence,
        &registry,
        OffsetDateTime::now_utc(),
        opener.as_ref(),
    );
    if let Some((mut client, operator, known)) = sealing {
        let proofs = read_proofs(
            &mut client,
            &args.case,
            &bundle,
            known.as_ref(),
            args.min_cosignatures,
        )
        .await?;
        crate::proofs::seal(&mut bundle, proofs, &operator)
            .map_err(|e| CliError::runtime(format!("cannot seal the bundle: {e}")))?;
    } else {
        ctx.out.note(format!(
            "no --gateway: the bundle is a {} without checkpoint or proofs, so it cannot show it is complete",
            bundle::FORMAT
        ));
    }
    let text = serde_json::to_vec_pretty(&bundle)
        .map_err(|e| CliError::caused("rendering the bundle failed", e))?;
    write_new(&args.out, &text)?;
    for rejected in &bundle.rejected {
        ctx.out.warn(format!(
            "case {} sequence {} failed verification ({}: {}); it is in the bundle's rejected list, not in its chain",
            args.case, rejected.sequence, rejected.code, rejected.reason
        ));
    }
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "case": args.case.as_str(),
            "out": args.out.display().to_string(),
            "events": bundle.events.len(),
            "rejected": bundle.rejected.len(),
            "offices": bundle.offices.iter().map(|o| o.id.to_string()).collect::<Vec<_>>(),
            "head_hash": bundle.manifest.head_hash,
            "digest": bundle.manifest.digest,
            "format": bundle.format,
            "checkpoint_size": bundle.proofs.as_ref().and_then(|p| {
                Note::parse(p.checkpoint.as_bytes()).ok()
                    .and_then(|n| Checkpoint::parse(n.text()).ok())
                    .map(|c| c.size)
            }),
            "operator": bundle.operator.as_ref().map(|o| o.vkey.clone()),
        }))?;
    } else {
        ctx.out.line(format!(
            "exported case {} to {}: {} events, {} office key set(s), manifest digest {}",
            args.case,
            args.out.display(),
            bundle.events.len(),
            bundle.offices.len(),
            bundle.manifest.digest
        ))?;
    }
    Ok(Outcome::Ok)
}

/// The court's checkpoint (`--known-checkpoint`): a signed note whose text is a
/// checkpoint (its signature is the verifier's to check, with the policy).
struct Known {
    path: std::path::PathBuf,
    note: Note,
    checkpoint: Checkpoint,
}

fn read_known(path: &Path) -> Result<Known, CliError> {
    let bad = |reason: String| {
        CliError::usage(format!("--known-checkpoint {}: {reason}", path.display()))
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let note = Note::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    let checkpoint = Checkpoint::parse(note.text()).map_err(|e| bad(e.to_string()))?;
    Ok(Known {
        path: path.to_owned(),
        note,
        checkpoint,
    })
}

impl Known {
    fn refuse(&self, reason: String) -> CliError {
        CliError::refused(format!(
            "--known-checkpoint {}: {reason}; nothing exported",
            self.path.display()
        ))
    }

    /// Checks that this checkpoint and the gateway's `latest` (its note `latest_note`)
    /// are of one log: the same origin, and a signature line of the key that signed
    /// the gateway's checkpoint (its name and key id: the key itself is checked offline
    /// against the policy by `casebus verify`). Checked before any proof is read.
    fn check_same_log(&self, latest_note: &Note, latest: &Checkpoint) -> Result<(), CliError> {
        if self.checkpoint.origin != latest.origin {
            return Err(self.refuse(format!(
                "it is a checkpoint of origin {:?}, the gateway's log is {:?}",
                self.checkpoint.origin, latest.origin
            )));
        }
        let Some(log) = latest_note.signatures().first() else {
            return Err(CliError::runtime(
                "the gateway's checkpoint carries no signature",
            ));
        };
        if self
            .note
            .signatures()
            .iter()
            .any(|s| s.name == log.name && s.id == log.id)
        {
            Ok(())
        } else {
            Err(self.refuse(format!(
                "it carries no signature of the log key {} (key id {:08x}) that signs the gateway's checkpoints",
                log.name, log.id
            )))
        }
    }

    /// Checks that `proof` leads between this checkpoint's root and the gateway's
    /// `latest` (RFC 9162 2.1.4.2; equal roots when the sizes are equal). Export refuses
    /// a bundle that could only fail, and says why: a log that contradicts a checkpoint
    /// the court holds is a fork.
    fn check_consistent(&self, latest: &Checkpoint, proof: &[Hash]) -> Result<(), CliError> {
        let known = &self.checkpoint;
        let (old, new) = if known.size <= latest.size {
            (known, latest)
        } else {
            (latest, known)
        };
        let consistent = if old.size == new.size {
            old.root == new.root
        } else {
            verify_consistency(old.size, new.size, &old.root, &new.root, proof).is_ok()
        };
        if consistent {
            return Ok(());
        }
        Err(self.refuse(format!(
            "the gateway's log (tree size {}, root {}) is not consistent with it (tree size {}, root {}): the log the gateway serves is not the one the court's checkpoint commits to (a fork); report it, do not export",
            latest.size,
            latest.root.to_base64(),
            known.size,
            known.root.to_base64()
        )))
    }
}

fn rpc_error(what: &str, status: &tonic::Status) -> CliError {
    CliError::runtime(format!(
        "the gateway gave no {what}: {:?} {}",
        status.code(),
        status.message()
    ))
}

fn hashes(list: &[Vec<u8>], what: &str) -> Result<Vec<Hash>, CliError> {
    list.iter()
        .map(|h| {
            Hash::from_slice(h).ok_or_else(|| {
                CliError::runtime(format!(
                    "the gateway's {what} holds a hash that is not 32 bytes"
                ))
            })
        })
        .collect()
}

fn hash_list(list: &[Vec<u8>], what: &str) -> Result<Vec<String>, CliError> {
    Ok(hashes(list, what)?.iter().map(Hash::to_base64).collect())
}

/// Whether a signed note `text` states the same checkpoint as `expected` (the note
/// text, whatever cosignatures either carries).
fn same_checkpoint(text: &str, expected: &Note) -> bool {
    Note::parse(text.as_bytes()).is_ok_and(|n| n.text() == expected.text())
}

/// Reads the proofs of `bundle` from the gateway, all under one checkpoint.
async fn read_proofs(
    client: &mut Client,
    case: &CaseId,
    bundle: &Bundle,
    known: Option<&Known>,
    min_cosignatures: usize,
) -> Result<Proofs, CliError> {
    for _ in 0..PROOF_ATTEMPTS {
        if let Some(proofs) =
            read_proofs_once(client, case, bundle, known, min_cosignatures).await?
        {
            return Ok(proofs);
        }
    }
    Err(CliError::runtime(format!(
        "the gateway published a new checkpoint while the proofs were read, {PROOF_ATTEMPTS} times; export again"
    )))
}

/// One attempt; `None` when a proof led to another checkpoint than the first read.
async fn read_proofs_once(
    client: &mut Client,
    case: &CaseId,
    bundle: &Bundle,
    known: Option<&Known>,
    min_cosignatures: usize,
) -> Result<Option<Proofs>, CliError> {
    let latest = client
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(|s| rpc_error("checkpoint", &s))?
        .into_inner();
    let note = Note::parse(latest.checkpoint.as_bytes()).map_err(|e| {
        CliError::runtime(format!(
            "the gateway's checkpoint is not a signed note: {e}"
        ))
    })?;
    let checkpoint = Checkpoint::parse(note.text())
        .map_err(|e| CliError::runtime(format!("the gateway's checkpoint does not parse: {e}")))?;
    if let Some(known) = known {
        known.check_same_log(&note, &checkpoint)?;
    }
    let size = checkpoint.size;
    // Every signature line but the log's own is a witness's cosignature; the verifier
    // checks them against its policy, this only waits for enough of them.
    let cosignatures = note
        .signatures()
        .iter()
        .filter(|s| s.name != checkpoint.origin)
        .count();
    if cosignatures < min_cosignatures {
        return Err(CliError::refused(format!(
            "the gateway's latest checkpoint (tree size {size}) carries {cosignatures} cosignatures, fewer than --min-cosignatures {min_cosignatures}; wait for the witnesses to cosign it and export again"
        )));
    }
    if size < bundle.source.last_sequence {
        return Err(CliError::refused(format!(
            "the gateway's latest checkpoint (tree size {size}) does not cover the last event of case {case} (CASES sequence {}) yet; wait for the next checkpoint (the gateway signs one every --checkpoint-every entries or --checkpoint-interval) and export again",
            bundle.source.last_sequence
        )));
    }
    let mut inclusion = Vec::with_capacity(bundle.events.len());
    for event in &bundle.events {
        let proof = client
            .get_inclusion_proof(GetInclusionProofRequest {
                case_id: case.to_string(),
                case_version: event.version,
            })
            .await
            .map_err(|s| rpc_error(&format!("inclusion proof of v{}", event.version), &s))?
            .into_inner();
        if !same_checkpoint(&proof.checkpoint, &note) {
            return Ok(None);
        }
        if proof.leaf_index + 1 != event.sequence {
            return Err(CliError::runtime(format!(
                "the gateway's inclusion proof of v{} is of leaf {}, the event is at CASES sequence {}",
                event.version, proof.leaf_index, event.sequence
            )));
        }
        // The proof is written with the checkpoint as the bundle carries it (with
        // every cosignature), so all proofs and the bundle share one note.
        let mut text = TlogProof::parse(&proof.tlog_proof).map_err(|e| {
            CliError::runtime(format!(
                "the gateway's tlog-proof of v{} does not parse: {e}",
                event.version
            ))
        })?;
        text.checkpoint = latest.checkpoint.clone();
        inclusion.push(InclusionEntry {
            sequence: event.sequence,
            tlog_proof: text.to_text(),
        });
    }
    let head = client
        .get_case_head_proof(GetCaseHeadProofRequest {
            case_id: case.to_string(),
        })
        .await
        .map_err(|s| rpc_error("case-head proof", &s))?
        .into_inner();
    if !same_checkpoint(&head.checkpoint, &note) {
        return Ok(None);
    }
    let last_version = bundle.events.last().map_or(0, |e| e.version);
    if head.case_version != last_version {
        return Err(CliError::refused(format!(
            "case {case} has grown to v{} at the gateway's checkpoint while v{last_version} was read; export again",
            head.case_version
        )));
    }
    let case_head = CaseHeadEntry {
        version: head.case_version,
        event_hash: hex::encode(&head.event_hash),
        leaf_index: head.leaf_index,
        case_count: head.case_count,
        proof: hash_list(&head.proof, "case-head proof")?,
    };
    let consistency = match known {
        Some(known) if known.checkpoint.size != size => {
            let known_size = known.checkpoint.size;
            let (first, second) = (known_size.min(size), known_size.max(size));
            let proof = client
                .get_consistency_proof(GetConsistencyProofRequest {
                    first_size: first,
                    second_size: second,
                })
                .await
                .map_err(|s| rpc_error(&format!("consistency proof from {first} to {second}"), &s))?
                .into_inner();
            let proof = hashes(&proof.proof, "consistency proof")?;
            known.check_consistent(&checkpoint, &proof)?;
            Some(ConsistencyEntry {
                first_size: first,
                second_size: second,
                proof: proof.iter().map(Hash::to_base64).collect(),
            })
        }
        Some(known) => {
            known.check_consistent(&checkpoint, &[])?;
            None
        }
        None => None,
    };
    Ok(Some(Proofs {
        checkpoint: latest.checkpoint,
        inclusion,
        case_head,
        consistency,
    }))
}
