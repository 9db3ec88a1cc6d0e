//! The proofs of a `casebus.bundle.v2` evidence bundle and their offline check.
//!
//! A v2 bundle is a v1 bundle (`bundle`) plus:
//!
//! - `proofs.checkpoint`: the gateway's latest signed checkpoint (C2SP signed-note
//!   text: the tlog-checkpoint with its `case-heads/v1` line, the log's signature and
//!   the witnesses' cosignature/v1 lines);
//! - `proofs.inclusion`: for every event of the chain, its CASES sequence and a C2SP
//!   `tlog-proof@v1` text whose embedded checkpoint is that same note;
//! - `proofs.case_head`: the case's head at the checkpoint (version, event hash hex) and
//!   its proof in the case-head map (leaf index, case count, base64 hashes);
//! - `proofs.consistency` (when exported with `--known-checkpoint`): an RFC 9162
//!   consistency proof between the court's checkpoint size and the bundle's;
//! - `operator`: the exporting operator's verifier key (`<name>+<id>+<key>`, type
//!   0x01) and a signed note by it over [`manifest_text`]: format, case id, manifest
//!   digest. The digest covers everything above but the note itself.
//!
//! [`check`] trusts nothing in the bundle: the log key, origin and witnesses come from
//! the verifier's policy, the operator keys from the verifier, the known checkpoint
//! from the court. Each failure has its own code (`docs/PROOFS.md` lists them).
//!
//! This module reads no files and no network; `commands::export` fetches the proofs,
//! `commands::verify` reads the files.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use casebus_tlog::case_heads::{self, CaseHead, CaseHeadProof};
use casebus_tlog::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use casebus_tlog::note::{Note, NoteSigner, NoteVerifier, TYPE_ED25519};
use casebus_tlog::policy::{Policy, WitnessedError};
use casebus_tlog::proof::TlogProof;

use crate::bundle::{Bundle, BundleFailure, FORMAT, FORMAT_V2, decode_b64, put_bytes};

/// The proofs a v2 bundle carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proofs {
    /// The signed checkpoint with its cosignatures, as a signed-note text.
    pub checkpoint: String,
    /// One inclusion proof per event of the chain, in chain order.
    pub inclusion: Vec<InclusionEntry>,
    /// The case's head at the checkpoint and its proof.
    pub case_head: CaseHeadEntry,
    /// A consistency proof to or from the court's known checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyEntry>,
}

/// One event's inclusion proof.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InclusionEntry {
    /// The event's `CASES` sequence (its leaf index + 1).
    pub sequence: u64,
    /// The `tlog-proof@v1` text.
    pub tlog_proof: String,
}

/// The case's head at the checkpoint's size and its case-head map proof.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaseHeadEntry {
    /// The case's last version at the checkpoint.
    pub version: u64,
    /// The hash of that event, hex.
    pub event_hash: String,
    /// The leaf's index among the sorted cases.
    pub leaf_index: u64,
    /// The number of cases in the map.
    pub case_count: u64,
    /// The inclusion proof in the map, base64 hashes.
    pub proof: Vec<String>,
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsistencyEntry {
    /// The smaller size.
    pub first_size: u64,
    /// The larger size.
    pub second_size: u64,
    /// The RFC 9162 proof, base64 hashes.
    pub proof: Vec<String>,
}

/// The exporting operator's seal over the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperatorSeal {
    /// The operator's verifier key (type 0x01).
    pub vkey: String,
    /// A signed note by that key over [`manifest_text`].
    pub note: String,
}

/// The text the operator signs: `casebus.bundle.v2\n<case id>\n<manifest digest>\n`.
pub fn manifest_text(case_id: &str, digest: &str) -> String {
    format!("{FORMAT_V2}\n{case_id}\n{digest}\n")
}

/// Adds the proofs to a digest: each part length-prefixed, in a fixed order.
pub(crate) fn digest_proofs(h: &mut Sha256, proofs: &Proofs) {
    put_bytes(h, b"checkpoint");
    put_bytes(h, proofs.checkpoint.as_bytes());
    put_bytes(h, b"inclusion");
    h.update((proofs.inclusion.len() as u64).to_be_bytes());
    for entry in &proofs.inclusion {
        h.update(entry.sequence.to_be_bytes());
        put_bytes(h, entry.tlog_proof.as_bytes());
    }
    // Field order is fixed by the types, so the JSON is canonical.
    put_bytes(h, b"case_head");
    put_bytes(
        h,
        &serde_json::to_vec(&proofs.case_head).unwrap_or_default(),
    );
    put_bytes(h, b"consistency");
    put_bytes(
        h,
        &proofs
            .consistency
            .as_ref()
            .map(|c| serde_json::to_vec(c).unwrap_or_default())
            .unwrap_or_default(),
    );
}

/// Turns a v1 bundle into a v2 one: adds `proofs`, recomputes the manifest digest over
/// them and the operator's key, and signs it with `operator`.
///
/// # Errors
/// The text of a note that cannot be signed (a case id with a control character,
/// which a valid bundle never holds).
pub fn seal(bundle: &mut Bundle, proofs: Proofs, operator: &NoteSigner) -> Result<(), String> {
    let vkey = operator.verifier().to_vkey();
    let raw = |list: Vec<(u64, &str)>| -> Vec<(u64, Vec<u8>)> {
        list.into_iter()
            .map(|(s, b)| (s, decode_b64(b).unwrap_or_default()))
            .collect()
    };
    let events = raw(bundle
        .events
        .iter()
        .map(|e| (e.sequence, e.signed_event.as_str()))
        .collect());
    let rejected = raw(bundle
        .rejected
        .iter()
        .map(|r| (r.sequence, r.signed_event.as_str()))
        .collect());
    bundle.format = FORMAT_V2.into();
    bundle.manifest.digest = crate::bundle::digest(
        FORMAT_V2,
        &bundle.case_id,
        &events,
        &rejected,
        &bundle.offices,
        Some((&proofs, &bundle.source, &vkey)),
    );
    let mut note = Note::new(manifest_text(&bundle.case_id, &bundle.manifest.digest))
        .map_err(|e| e.to_string())?;
    let signature = operator.sign(&note);
    note.add_signature(signature).map_err(|e| e.to_string())?;
    bundle.proofs = Some(proofs);
    bundle.operator = Some(OperatorSeal {
        vkey,
        note: note.to_text(),
    });
    Ok(())
}

/// What the verifier brings: nothing here comes from the bundle.
#[derive(Debug, Default)]
pub struct Trust<'a> {
    /// The witness policy (`--policy`).
    pub policy: Option<&'a Policy>,
    /// Operator keys the verifier accepts (`--operator-vkey`).
    pub operators: &'a [NoteVerifier],
    /// Accept the bundle's own operator key (`--trust-bundle-keys`).
    pub trust_bundle_keys: bool,
    /// A checkpoint the court holds (`--known-checkpoint`), as its file's bytes.
    pub known_checkpoint: Option<&'a [u8]>,
}

/// What the proofs established, for the report.
#[derive(Debug, Default, Clone)]
pub struct ProofSummary {
    /// The checkpoint's tree size, when it opened with the policy's log key.
    pub checkpoint_size: Option<u64>,
    /// The policy witnesses whose cosignatures verified.
    pub witnesses: Vec<String>,
    /// Inclusion proofs that verified.
    pub included: usize,
    /// Whether the case-head proof verified and matches the bundle's last event.
    pub head_proven: bool,
    /// Whether consistency with the known checkpoint was shown.
    pub consistent_with_known: Option<bool>,
}

fn fail(code: &str, reason: impl Into<String>) -> BundleFailure {
    BundleFailure::new(None, None, code, reason)
}

fn hashes(list: &[String]) -> Option<Vec<Hash>> {
    list.iter().map(|h| Hash::from_base64(h).ok()).collect()
}

/// Describes an error with its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Checks a bundle's proofs and operator seal against what the verifier trusts,
/// appending each failure to `failures`. A v1 bundle has neither: it passes unless a
/// policy is given (then it fails with `no_proofs`).
pub fn check(
    bundle: &Bundle,
    trust: &Trust<'_>,
    failures: &mut Vec<BundleFailure>,
) -> ProofSummary {
    let mut summary = ProofSummary::default();
    if bundle.format == FORMAT {
        if trust.policy.is_some() || trust.known_checkpoint.is_some() {
            failures.push(fail(
                "no_proofs",
                format!(
                    "a {FORMAT} bundle carries no checkpoint or proofs, so it cannot show it is complete; export it again with --gateway"
                ),
            ));
        }
        return summary;
    }
    if bundle.format != FORMAT_V2 {
        return summary;
    }
    check_operator(bundle, trust, failures);
    let Some(proofs) = &bundle.proofs else {
        failures.push(fail("no_proofs", "the v2 bundle has no proofs member"));
        return summary;
    };
    let Some(policy) = trust.policy else {
        failures.push(fail(
            "no_policy",
            "the checkpoint and proofs are checked against a witness policy you trust; give --policy",
        ));
        return summary;
    };

    // The checkpoint: the policy's log key, then the quorum.
    let signed = match policy.witnessed(proofs.checkpoint.as_bytes()) {
        Ok(w) => {
            summary.witnesses = w.witnesses;
            w.checkpoint
        }
        Err(e) => {
            let code = match &e {
                WitnessedError::Checkpoint(_) => "checkpoint_signature",
                WitnessedError::Cosignature(_) => "cosignature_invalid",
                _ => "cosignature_quorum",
            };
            failures.push(fail(code, chain(&e)));
            match policy.open(proofs.checkpoint.as_bytes()) {
                Ok(signed) => signed,
                // Without the log's signature nothing below it means anything.
                Err(_) => return summary,
            }
        }
    };
    let size = signed.checkpoint.size;
    let root = signed.checkpoint.root;
    summary.checkpoint_size = Some(size);
    if bundle.source.last_sequence > size {
        failures.push(fail(
            "not_covered",
            format!(
                "the checkpoint (tree size {size}) does not cover the case's last sequence {}",
                bundle.source.last_sequence
            ),
        ));
    }

    // Every event is in the tree at its sequence.
    for event in &bundle.events {
        let at = |code: &str, reason: String| {
            BundleFailure::new(Some(event.sequence), Some(event.version), code, reason)
        };
        let Some(entry) = proofs
            .inclusion
            .iter()
            .find(|p| p.sequence == event.sequence)
        else {
            failures.push(at(
                "inclusion_missing",
                "no inclusion proof for this event".into(),
            ));
            continue;
        };
        let proof = match TlogProof::parse(&entry.tlog_proof) {
            Ok(p) => p,
            Err(e) => {
                failures.push(at("inclusion", chain(&e)));
                continue;
            }
        };
        let same_checkpoint =
            Note::parse(proof.checkpoint.as_bytes()).is_ok_and(|n| n.text() == signed.note.text());
        if !same_checkpoint {
            failures.push(at(
                "inclusion",
                "the proof's checkpoint is not the bundle's checkpoint".into(),
            ));
            continue;
        }
        if proof.index.checked_add(1) != Some(event.sequence) {
            failures.push(at(
                "inclusion",
                format!(
                    "the proof is of leaf {}, the event's sequence is {}",
                    proof.index, event.sequence
                ),
            ));
            continue;
        }
        let entry_hash: [u8; 32] = match decode_b64(&event.signed_event) {
            Some(raw) => Sha256::digest(&raw).into(),
            None => continue, // reported by the chain check
        };
        match verify_inclusion(
            proof.index,
            size,
            &leaf_hash(&entry_hash),
            &proof.proof,
            &root,
        ) {
            Ok(()) => summary.included += 1,
            Err(e) => failures.push(at(
                "inclusion",
                format!(
                    "the stored message is not leaf {} of the checkpoint's tree: {e}",
                    proof.index
                ),
            )),
        }
    }

    check_case_head(
        bundle,
        proofs,
        &signed.checkpoint.extensions,
        failures,
        &mut summary,
    );

    if let Some(known) = trust.known_checkpoint {
        summary.consistent_with_known =
            Some(check_known(policy, known, proofs, size, &root, failures));
    }
    summary
}

fn check_operator(bundle: &Bundle, trust: &Trust<'_>, failures: &mut Vec<BundleFailure>) {
    let Some(seal) = &bundle.operator else {
        failures.push(fail(
            "operator_signature",
            "the v2 bundle has no operator seal",
        ));
        return;
    };
    let key = match NoteVerifier::from_vkey(seal.vkey.trim()) {
        Ok(k) if k.signature_type() == TYPE_ED25519 => k,
        Ok(_) => {
            failures.push(fail(
                "operator_signature",
                "the operator key is not an Ed25519 note key (type 0x01)",
            ));
            return;
        }
        Err(e) => {
            failures.push(fail("operator_signature", chain(&e)));
            return;
        }
    };
    let verified = Note::parse(seal.note.as_bytes())
        .map_err(|e| chain(&e))
        .and_then(|note| {
            note.verify(std::slice::from_ref(&key))
                .map(|_| note)
                .map_err(|e| chain(&e))
        });
    match verified {
        Err(reason) => failures.push(fail(
            "operator_signature",
            format!("the operator's signature over the manifest does not verify: {reason}"),
        )),
        Ok(note) => {
            let expected = manifest_text(&bundle.case_id, &bundle.manifest.digest);
            if note.text() != expected {
                failures.push(fail(
                    "operator_signature",
                    "the operator signed another manifest than this bundle's",
                ));
            }
        }
    }
    if trust.operators.is_empty() {
        if !trust.trust_bundle_keys {
            failures.push(fail(
                "operator_key_own",
                format!(
                    "the operator key {} is the bundle's own: give --operator-vkey with the exporting operator's key you trust, or --trust-bundle-keys to accept it",
                    key.to_vkey()
                ),
            ));
        }
    } else if !trust.operators.contains(&key) {
        failures.push(fail(
            "operator_key_untrusted",
            format!(
                "the bundle was sealed by operator key {}, which is not among the --operator-vkey keys",
                key.to_vkey()
            ),
        ));
    }
}

fn check_case_head(
    bundle: &Bundle,
    proofs: &Proofs,
    extensions: &[String],
    failures: &mut Vec<BundleFailure>,
    summary: &mut ProofSummary,
) {
    let Some(line) = extensions
        .iter()
        .find(|l| l.starts_with(case_heads::EXTENSION_PREFIX))
    else {
        failures.push(fail(
            "case_head",
            "the checkpoint has no case-heads/v1 line",
        ));
        return;
    };
    let (count, map_root) = match case_heads::parse_extension_line(line) {
        Ok(v) => v,
        Err(e) => {
            failures.push(fail("case_head", chain(&e)));
            return;
        }
    };
    let entry = &proofs.case_head;
    let (Some(path), Some(hash)) = (
        hashes(&entry.proof),
        hex::decode(&entry.event_hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok()),
    ) else {
        failures.push(fail(
            "case_head",
            "the case-head proof holds a hash that does not decode",
        ));
        return;
    };
    let committed = CaseHead {
        case_id: bundle.case_id.clone(),
        version: entry.version,
        event_hash: hash,
    };
    let proof = CaseHeadProof {
        index: entry.leaf_index,
        count: entry.case_count,
        proof: path,
    };
    if let Err(e) = case_heads::verify(&committed, &proof, count, &map_root) {
        failures.push(fail(
            "case_head",
            format!(
                "the case-head proof does not lead to the checkpoint's map: {}",
                chain(&e)
            ),
        ));
        return;
    }
    let last = bundle.events.last();
    let (last_version, last_hash) = last.map_or((0, ""), |e| (e.version, e.hash.as_str()));
    if entry.version != last_version || !entry.event_hash.eq_ignore_ascii_case(last_hash) {
        let reason = if entry.version > last_version {
            format!(
                "the checkpoint's head of case {} is v{}, the bundle ends at v{last_version}: it is missing the case's last event(s)",
                bundle.case_id, entry.version
            )
        } else {
            format!(
                "the checkpoint's head of case {} is v{} ({}), the bundle's last event is v{last_version} ({last_hash})",
                bundle.case_id, entry.version, entry.event_hash
            )
        };
        failures.push(fail("case_head", reason));
        return;
    }
    summary.head_proven = true;
}

fn check_known(
    policy: &Policy,
    known: &[u8],
    proofs: &Proofs,
    size: u64,
    root: &Hash,
    failures: &mut Vec<BundleFailure>,
) -> bool {
    let known = match policy.open(known) {
        Ok(k) => k.checkpoint,
        Err(e) => {
            failures.push(fail(
                "known_checkpoint",
                format!(
                    "the known checkpoint does not open with the policy's log key: {}",
                    chain(&e)
                ),
            ));
            return false;
        }
    };
    if known.size == size {
        if known.root != *root {
            failures.push(fail(
                "consistency",
                format!(
                    "the known checkpoint and the bundle's are both of size {size} with different roots: the log forked"
                ),
            ));
            return false;
        }
        return true;
    }
    let (first, first_root, second, second_root) = if known.size < size {
        (known.size, known.root, size, *root)
    } else {
        (size, *root, known.size, known.root)
    };
    let Some(entry) = proofs
        .consistency
        .as_ref()
        .filter(|c| c.first_size == first && c.second_size == second)
    else {
        failures.push(fail(
            "consistency_missing",
            format!(
                "the bundle carries no consistency proof between sizes {first} and {second}; export it again with --known-checkpoint"
            ),
        ));
        return false;
    };
    let Some(path) = hashes(&entry.proof) else {
        failures.push(fail(
            "consistency",
            "the consistency proof holds a hash that does not decode",
        ));
        return false;
    };
    match verify_consistency(first, second, &first_root, &second_root, &path) {
        Ok(()) => true,
        Err(e) => {
            failures.push(fail(
                "consistency",
                format!(
                    "the bundle's checkpoint (size {size}) is not consistent with the known checkpoint (size {}): {e}",
                    known.size
                ),
            ));
            false
        }
    }
}
