//! The C2SP texts byte for byte: `signed-note` (with the Go sumdb / C2SP example key
//! and signature), `tlog-checkpoint`, `tlog-cosignature` (`cosignature/v1`), the
//! `tlog-proof@v1` text (including the spec's example) and the case-head map.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;

use casebus_tlog::case_heads::{self, CaseHead, CaseHeadError, CaseHeads};
use casebus_tlog::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use casebus_tlog::cosignature::{Cosigner, signed_message};
use casebus_tlog::merkle::{Frontier, Hash, inclusion_proof, leaf_hash};
use casebus_tlog::note::{Note, NoteError, NoteSigner, NoteVerifier, key_id};
use casebus_tlog::proof::{TlogProof, TlogProofError};

/// The example key of Go's `sumdb/note` package, which the signed-note spec codifies.
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn peter() -> NoteSigner {
    let material = STANDARD
        .decode(PETER_SKEY.splitn(5, '+').nth(4).expect("key"))
        .expect("base64");
    assert_eq!(material[0], 0x01);
    let seed: [u8; 32] = material[1..].try_into().expect("32 bytes");
    NoteSigner::new("PeterNeumann", SigningKey::from_bytes(&seed)).expect("signer")
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

#[test]
fn the_example_note_is_signed_and_verified_byte_for_byte() {
    let signer = peter();
    assert_eq!(signer.verifier().to_vkey(), PETER_VKEY);
    assert_eq!(signer.verifier().id(), 0xc74f_20a3);
    let mut note = Note::new(PETER_TEXT).expect("note");
    let sig = signer.sign(&note);
    note.add_signature(sig).expect("add");
    let want = format!("{PETER_TEXT}\n{PETER_SIG}");
    assert_eq!(note.to_text(), want);

    let verifier = NoteVerifier::from_vkey(PETER_VKEY).expect("vkey");
    let parsed = Note::parse(want.as_bytes()).expect("parse");
    assert_eq!(parsed, note);
    let verified = parsed
        .verify(std::slice::from_ref(&verifier))
        .expect("verify");
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].verifier.name(), "PeterNeumann");
}

#[test]
fn merging_takes_the_lines_a_note_lacks_from_a_copy_of_the_same_text_only() {
    let (log, a, b) = (
        NoteSigner::new("log.example", key(1)).expect("signer"),
        NoteSigner::new("witness.example/a", key(2)).expect("signer"),
        NoteSigner::new("witness.example/b", key(3)).expect("signer"),
    );
    let signed = |signers: &[&NoteSigner], text: &str| {
        let mut note = Note::new(text).expect("note");
        for s in signers {
            let line = s.sign(&note);
            note.add_signature(line).expect("add");
        }
        note
    };
    let mut note = signed(&[&log], "size 5\n");
    let from_a = signed(&[&log, &a], "size 5\n");
    let from_b = signed(&[&log, &b], "size 5\n");
    assert_eq!(
        note.merge_signatures(&from_a),
        1,
        "a's line, not the log's again"
    );
    assert_eq!(note.merge_signatures(&from_b), 1);
    assert_eq!(note.merge_signatures(&from_a), 0, "nothing twice");
    let names: Vec<&str> = note.signatures().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["log.example", "witness.example/a", "witness.example/b"]
    );
    let verifiers = [log.verifier(), a.verifier(), b.verifier()];
    assert_eq!(note.verify(&verifiers).expect("verify").len(), 3);
    // A cosignature of another checkpoint is not one of this.
    let other = signed(&[&log, &a], "size 6\n");
    let mut fresh = signed(&[&log], "size 5\n");
    assert_eq!(fresh.merge_signatures(&other), 0);
    assert_eq!(fresh.signatures().len(), 1);
}

#[test]
fn a_note_is_refused_for_what_is_wrong_with_it() {
    let verifier = NoteVerifier::from_vkey(PETER_VKEY).expect("vkey");
    let good = format!("{PETER_TEXT}\n{PETER_SIG}");
    // A changed text: the known key's signature fails, so the whole note is refused.
    let changed = good.replacen("answer", "ANSWER", 1);
    assert_eq!(
        Note::parse(changed.as_bytes())
            .expect("parse")
            .verify(std::slice::from_ref(&verifier)),
        Err(NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            id: 0xc74f_20a3
        })
    );
    // Only an unknown key signed (same id, other name): ignored, so no known signature.
    let other_name = good.replace("— PeterNeumann", "— CarmenSandiego");
    assert_eq!(
        Note::parse(other_name.as_bytes())
            .expect("parse")
            .verify(std::slice::from_ref(&verifier)),
        Err(NoteError::NoKnownSignature)
    );
    // Layout errors.
    assert!(matches!(
        Note::parse(PETER_TEXT.as_bytes()),
        Err(NoteError::Malformed(_))
    ));
    assert!(matches!(
        Note::parse(format!("{PETER_TEXT}\n— PeterNeumann !!!\n").as_bytes()),
        Err(NoteError::BadSignatureLine { .. })
    ));
    assert!(matches!(
        Note::parse(format!("a\tb\n\n{PETER_SIG}").as_bytes()),
        Err(NoteError::BadCharacter(_))
    ));
    assert!(matches!(
        Note::parse(b"\xff\n\n"),
        Err(NoteError::BadCharacter(_))
    ));
    assert!(matches!(
        NoteSigner::new("has space", key(1)),
        Err(NoteError::BadKeyName(_))
    ));
    assert!(matches!(
        NoteSigner::new("a+b", key(1)),
        Err(NoteError::BadKeyName(_))
    ));
    // A verifier key whose id does not match its name and key.
    assert!(matches!(
        NoteVerifier::from_vkey(&PETER_VKEY.replace("c74f20a3", "c74f20a4")),
        Err(NoteError::BadVerifierKey { .. })
    ));
}

#[test]
fn key_ids_are_the_first_four_bytes_of_sha256_of_name_newline_type_and_key() {
    use sha2::{Digest, Sha256};
    let k = key(7).verifying_key();
    let mut input = b"log.example/cases\n".to_vec();
    input.push(0x01);
    input.extend_from_slice(k.as_bytes());
    let d = Sha256::digest(&input);
    assert_eq!(
        key_id("log.example/cases", 0x01, k.as_bytes()),
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    );
    // The cosignature type makes another id for the same name and key.
    assert_ne!(
        key_id("log.example/cases", 0x04, k.as_bytes()),
        key_id("log.example/cases", 0x01, k.as_bytes())
    );
}

fn checkpoint(size: u64) -> Checkpoint {
    let mut f = Frontier::new();
    for i in 0..size {
        f.push(leaf_hash(format!("{i}").as_bytes()));
    }
    Checkpoint {
        origin: "casebus.example/cases".into(),
        size,
        root: f.root(),
        extensions: vec![],
    }
}

#[test]
fn a_checkpoint_is_written_and_read_exactly_as_the_spec_states() {
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let c = Checkpoint::parse(text).expect("the spec's example");
    assert_eq!(c.origin, "example.com/behind-the-sofa");
    assert_eq!(c.size, 20_852_163);
    assert_eq!(c.to_text(), text);
    let with_ext = format!("{text}case-heads/v1 2 {}\n", Hash([3; 32]).to_base64());
    let c = Checkpoint::parse(&with_ext).expect("extension");
    assert_eq!(c.extensions.len(), 1);
    assert_eq!(c.to_text(), with_ext);
    for bad in [
        "o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n1\nAAAA\n",
        "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n1\n",
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
    ] {
        assert!(
            matches!(Checkpoint::parse(bad), Err(CheckpointError::Malformed(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        Checkpoint::parse("o\n0\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n").map(|c| c.size),
        Ok(0)
    );
}

#[test]
fn a_signed_checkpoint_opens_only_under_the_log_key_and_its_origin() {
    let log = NoteSigner::new("casebus.example/cases", key(1)).expect("signer");
    let note = checkpoint(10).sign(&log).expect("sign");
    let bytes = note.to_text();
    let opened = SignedCheckpoint::open(bytes.as_bytes(), &log.verifier(), "casebus.example/cases")
        .expect("open");
    assert_eq!(opened.checkpoint, checkpoint(10));
    // Signed by an unknown key.
    let other = NoteSigner::new("casebus.example/cases", key(2)).expect("signer");
    assert!(matches!(
        SignedCheckpoint::open(bytes.as_bytes(), &other.verifier(), "casebus.example/cases"),
        Err(CheckpointError::Note(NoteError::NoKnownSignature))
    ));
    // Another origin.
    assert!(matches!(
        SignedCheckpoint::open(bytes.as_bytes(), &log.verifier(), "elsewhere"),
        Err(CheckpointError::WrongOrigin { .. })
    ));
    // A changed size under the original signature.
    let forged = bytes.replacen("\n10\n", "\n11\n", 1);
    assert!(matches!(
        SignedCheckpoint::open(forged.as_bytes(), &log.verifier(), "casebus.example/cases"),
        Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
    ));
}

#[test]
fn a_cosignature_signs_the_header_the_time_and_the_whole_checkpoint() {
    let log = NoteSigner::new("casebus.example/cases", key(1)).expect("signer");
    let mut note = Checkpoint {
        extensions: vec!["case-heads/v1 0 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into()],
        ..checkpoint(5)
    }
    .sign(&log)
    .expect("sign");
    let w1 = Cosigner::new("witness.example/customs", key(11)).expect("cosigner");
    let w2 = Cosigner::new("witness.example/court", key(12)).expect("cosigner");
    let w3 = Cosigner::new("witness.example/police", key(13)).expect("cosigner");
    let line = w1.cosign(&note, 1_679_315_147).expect("cosign");
    // The line carries the 8-byte big-endian timestamp, then the 64-byte signature.
    assert_eq!(line.signature.len(), 72);
    assert_eq!(&line.signature[..8], &1_679_315_147u64.to_be_bytes());
    assert_eq!(
        line.id,
        key_id(
            "witness.example/customs",
            0x04,
            w1.verifier().key().as_bytes()
        )
    );
    // The signed message, byte for byte.
    let msg = signed_message(1_679_315_147, note.text());
    assert_eq!(
        msg,
        format!("cosignature/v1\ntime 1679315147\n{}", note.text())
    );
    let sig = ed25519_dalek::Signature::from_slice(&line.signature[8..]).expect("sig");
    w1.verifier()
        .key()
        .verify_strict(msg.as_bytes(), &sig)
        .expect("the signature is over that message");
    note.add_signature(line).expect("add");
    note.add_signature(w2.cosign(&note, 1_679_315_200).expect("cosign"))
        .expect("add");

    let text = note.to_text();
    let opened = SignedCheckpoint::open(text.as_bytes(), &log.verifier(), "casebus.example/cases")
        .expect("open");
    let witnesses = [w1.verifier(), w2.verifier(), w3.verifier()];
    let by = opened.cosigned_by(&witnesses).expect("cosignatures");
    assert_eq!(
        by.iter().map(|v| v.name()).collect::<Vec<_>>(),
        ["witness.example/customs", "witness.example/court"]
    );
    let verified = opened.note.verify(&witnesses).expect("verify");
    assert_eq!(verified[0].timestamp, Some(1_679_315_147));

    // A cosignature whose timestamp was changed fails and refuses the note.
    let mut tampered = opened.note.clone();
    let mut sigs = tampered.signatures().to_vec();
    sigs[1].signature[7] ^= 1;
    tampered = {
        let mut n = Note::new(tampered.text()).expect("note");
        for s in sigs {
            n.add_signature(s).expect("add");
        }
        n
    };
    assert!(matches!(
        tampered.verify(&witnesses),
        Err(NoteError::InvalidSignature { .. })
    ));
}

#[test]
fn the_spec_example_tlog_proof_parses_and_a_proof_round_trips_and_verifies() {
    let example = "c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\nindex 73894\ngSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\nB95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\nEKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\nRoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\nAHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n\nexample.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n— example.com/fancylog hI2DJw==\n";
    let p = TlogProof::parse(example).expect("the spec's example");
    assert_eq!(p.index, 73894);
    assert_eq!(p.proof.len(), 5);
    assert!(p.extra.is_some());
    assert_eq!(p.to_text(), example);

    let log = NoteSigner::new("casebus.example/cases", key(1)).expect("signer");
    let mut f = Frontier::new();
    let mut stored = Vec::new();
    let leaves: Vec<Hash> = (0..13)
        .map(|i| leaf_hash(format!("e{i}").as_bytes()))
        .collect();
    for l in &leaves {
        stored.extend(f.push(*l));
    }
    let cp = Checkpoint {
        origin: "casebus.example/cases".into(),
        size: 13,
        root: f.root(),
        extensions: vec![],
    };
    let note = cp.sign(&log).expect("sign").to_text();
    let proof = TlogProof {
        extra: None,
        index: 6,
        proof: inclusion_proof(6, 13, &stored).expect("proof"),
        checkpoint: note,
    };
    let text = proof.to_text();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex 6\n"));
    let back = TlogProof::parse(&text).expect("parse");
    assert_eq!(back, proof);
    assert_eq!(
        back.verify(&leaves[6], &log.verifier(), "casebus.example/cases")
            .map(|s| s.checkpoint),
        Ok(cp)
    );
    assert!(matches!(
        back.verify(&leaves[7], &log.verifier(), "casebus.example/cases"),
        Err(TlogProofError::Inclusion { index: 6, .. })
    ));
    assert!(matches!(
        TlogProof::parse("c2sp.org/tlog-proof@v1\nindex 01\n\nx\n"),
        Err(TlogProofError::Malformed(_))
    ));
    assert!(matches!(
        TlogProof::parse("tlog-proof\nindex 1\n\nx\n"),
        Err(TlogProofError::Malformed(_))
    ));
}

fn head(id: &str, version: u64) -> CaseHead {
    CaseHead {
        case_id: id.into(),
        version,
        event_hash: [version as u8; 32],
    }
}

#[test]
fn every_case_head_is_proven_against_the_map_root_and_a_changed_head_is_not() {
    let heads: Vec<CaseHead> = (0..37)
        .rev()
        .map(|i| head(&format!("CASE-{i:03}"), i + 1))
        .collect();
    let map = CaseHeads::new(heads).expect("map");
    let ids: Vec<&str> = map.heads().iter().map(|h| h.case_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "leaves are sorted by case id");
    let (count, root) = case_heads::parse_extension_line(&map.extension_line()).expect("line");
    assert_eq!((count, root), (37, map.root()));
    for i in 0..37u64 {
        let id = format!("CASE-{i:03}");
        let (h, proof) = map.prove(&id).expect("present");
        assert_eq!(case_heads::verify(h, &proof, count, &root), Ok(()));
        // A head with its last events removed (an older version) does not verify.
        let older = CaseHead {
            version: h.version - 1,
            ..h.clone()
        };
        assert!(case_heads::verify(&older, &proof, count, &root).is_err());
    }
    // The leaf entry, byte for byte.
    let h = head("C1", 2);
    let mut want = vec![2u8, b'C', b'1'];
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&[2u8; 32]);
    assert_eq!(h.entry(), want);
    assert!(map.prove("CASE-999").is_none());
    assert!(matches!(
        CaseHeads::new(vec![head("A", 1), head("A", 2)]),
        Err(CaseHeadError::Duplicate(_))
    ));
    assert!(matches!(
        CaseHeads::new(vec![head("bad id", 1)]),
        Err(CaseHeadError::BadCaseId(_))
    ));
    assert!(case_heads::parse_extension_line("case-heads/v1 01 x").is_err());
}
