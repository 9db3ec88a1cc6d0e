//! The witness policy: which log key signs the checkpoints, which witnesses vouch for
//! them, and how many of those must have cosigned for a checkpoint to be *witnessed*.
//!
//! The text follows the line grammar of sigsum's policy files (and the C2SP
//! `tlog-witness` ecosystem), one statement a line:
//!
//! ```text
//! # a comment; blank lines are ignored
//! log <log verifier key>              exactly once (signature type 0x01)
//! origin <origin>                     at most once; default: the log key's name
//! witness <name> <witness verifier key>   any number (signature type 0x04)
//! quorum <n>                          exactly once, 0 <= n <= the number of witnesses
//! ```
//!
//! Fields are separated by one or more spaces or tabs; a verifier key is the C2SP form
//! `<key name>+<8 hex key id>+<base64(type ‖ public key)>`. Witness names (the policy's
//! own labels, shown in messages) and witness keys are each unique.
//! A checkpoint is witnessed under a policy when the policy's log key signed it for
//! the policy's origin and the cosignatures (cosignature/v1) of at least `quorum`
//! distinct policy witnesses verify ([`Policy::witnessed`]).
//!
//! This module does not read files or know where checkpoints come from.

use crate::checkpoint::{CheckpointError, SignedCheckpoint};
use crate::note::{NoteError, NoteVerifier, TYPE_COSIGNATURE, TYPE_ED25519};

/// Why a policy text was refused: each names the line (1-based) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A line that starts with a word the grammar does not know.
    #[error("line {line}: unknown keyword {keyword:?} (expected log, origin, witness or quorum)")]
    UnknownKeyword {
        /// The line.
        line: usize,
        /// The word.
        keyword: String,
    },
    /// A statement without one of its fields.
    #[error("line {line}: {keyword} needs the field <{field}>")]
    MissingField {
        /// The line.
        line: usize,
        /// The statement.
        keyword: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A statement with more fields than it takes.
    #[error("line {line}: {keyword} takes no field after <{after}>, found {extra:?}")]
    ExtraField {
        /// The line.
        line: usize,
        /// The statement.
        keyword: &'static str,
        /// The last field it takes.
        after: &'static str,
        /// What followed.
        extra: String,
    },
    /// A verifier key field that does not parse, or is of the wrong signature type.
    #[error("line {line}: field <{field}>: {reason}")]
    BadKey {
        /// The line.
        line: usize,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A quorum that is not a decimal number.
    #[error("line {line}: field <n> of quorum: {value:?} is not a decimal number")]
    BadQuorum {
        /// The line.
        line: usize,
        /// The text found.
        value: String,
    },
    /// A quorum larger than the number of witnesses, so never reachable.
    #[error(
        "line {line}: field <n> of quorum: {quorum} exceeds the {witnesses} witness(es) listed"
    )]
    QuorumTooLarge {
        /// The line of the quorum.
        line: usize,
        /// The quorum.
        quorum: usize,
        /// The witnesses listed.
        witnesses: usize,
    },
    /// A statement that may appear once, repeated.
    #[error("line {line}: a second {keyword} statement (the first is on line {first})")]
    Repeated {
        /// The line.
        line: usize,
        /// The statement.
        keyword: &'static str,
        /// The line of the first.
        first: usize,
    },
    /// A witness name or key listed twice.
    #[error("line {line}: field <{field}> of witness: {value:?} is listed already on line {first}")]
    DuplicateWitness {
        /// The line.
        line: usize,
        /// `name` or `vkey`.
        field: &'static str,
        /// The repeated value.
        value: String,
        /// The line of the first.
        first: usize,
    },
    /// An origin with a character a checkpoint's first line may not hold.
    #[error("line {line}: field <origin>: {reason}")]
    BadOrigin {
        /// The line.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A statement the policy needs is absent.
    #[error("the policy has no {keyword} line")]
    Missing {
        /// The statement.
        keyword: &'static str,
    },
}

/// Why a checkpoint is not witnessed under a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessedError {
    /// The checkpoint does not open with the policy's log key and origin (an unknown
    /// key, a failing signature, a malformed note or another origin).
    #[error("the checkpoint is not the policy's log's")]
    Checkpoint(#[source] CheckpointError),
    /// A cosignature line of a policy witness that does not verify.
    #[error("a cosignature of a policy witness does not verify")]
    Cosignature(#[source] NoteError),
    /// Fewer distinct policy witnesses cosigned than the quorum asks.
    #[error("{got} of the policy's witnesses cosigned ({names}), the quorum is {quorum}")]
    TooFew {
        /// Distinct policy witnesses whose cosignature verified.
        got: usize,
        /// The quorum.
        quorum: usize,
        /// Their names, comma-separated (`none` for none).
        names: String,
    },
}

/// One witness of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWitness {
    /// The policy's label for it.
    pub name: String,
    /// Its cosigner key (type 0x04).
    pub key: NoteVerifier,
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    log: NoteVerifier,
    origin: String,
    witnesses: Vec<PolicyWitness>,
    quorum: usize,
}

/// A checkpoint witnessed under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    /// The checkpoint, opened with the policy's log key.
    pub checkpoint: SignedCheckpoint,
    /// The names of the policy witnesses whose cosignatures verified, in policy order.
    pub witnesses: Vec<String>,
}

fn parse_key(
    line: usize,
    field: &'static str,
    text: &str,
    want: u8,
) -> Result<NoteVerifier, PolicyError> {
    let key = NoteVerifier::from_vkey(text).map_err(|e| PolicyError::BadKey {
        line,
        field,
        reason: e.to_string(),
    })?;
    if key.signature_type() != want {
        return Err(PolicyError::BadKey {
            line,
            field,
            reason: format!(
                "a key of signature type 0x{:02x} where 0x{want:02x} is needed ({})",
                key.signature_type(),
                if want == TYPE_ED25519 {
                    "a log key, from `casebus keys generate --kind log`"
                } else {
                    "a witness key, from `casebus keys generate --kind witness`"
                }
            ),
        });
    }
    Ok(key)
}

impl Policy {
    /// Parses a policy text (see the module header for the grammar).
    ///
    /// # Errors
    /// A [`PolicyError`] naming the line and field at fault, or the statement missing.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut log: Option<(usize, NoteVerifier)> = None;
        let mut origin: Option<(usize, String)> = None;
        let mut quorum: Option<(usize, usize)> = None;
        let mut witnesses: Vec<(usize, PolicyWitness)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut fields = content.split([' ', '\t']).filter(|f| !f.is_empty());
            let keyword = fields.next().unwrap_or_default();
            let mut take = |keyword: &'static str, field: &'static str| {
                fields.next().ok_or(PolicyError::MissingField {
                    line,
                    keyword,
                    field,
                })
            };
            let (keyword, last_field): (&'static str, &'static str) = match keyword {
                "log" => {
                    let key = parse_key(line, "vkey", take("log", "vkey")?, TYPE_ED25519)?;
                    if let Some((first, _)) = &log {
                        return Err(PolicyError::Repeated {
                            line,
                            keyword: "log",
                            first: *first,
                        });
                    }
                    log = Some((line, key));
                    ("log", "vkey")
                }
                "origin" => {
                    let value = take("origin", "origin")?;
                    if let Some((first, _)) = &origin {
                        return Err(PolicyError::Repeated {
                            line,
                            keyword: "origin",
                            first: *first,
                        });
                    }
                    if value.chars().any(char::is_control) {
                        return Err(PolicyError::BadOrigin {
                            line,
                            reason: "it holds a control character",
                        });
                    }
                    origin = Some((line, value.to_owned()));
                    ("origin", "origin")
                }
                "witness" => {
                    let name = take("witness", "name")?.to_owned();
                    let key = parse_key(line, "vkey", take("witness", "vkey")?, TYPE_COSIGNATURE)?;
                    for (first, w) in &witnesses {
                        if w.name == name {
                            return Err(PolicyError::DuplicateWitness {
                                line,
                                field: "name",
                                value: name,
                                first: *first,
                            });
                        }
                        if w.key.key() == key.key() {
                            return Err(PolicyError::DuplicateWitness {
                                line,
                                field: "vkey",
                                value: key.to_vkey(),
                                first: *first,
                            });
                        }
                    }
                    witnesses.push((line, PolicyWitness { name, key }));
                    ("witness", "vkey")
                }
                "quorum" => {
                    let value = take("quorum", "n")?;
                    let n = crate::checkpoint::parse_decimal(value)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| PolicyError::BadQuorum {
                            line,
                            value: value.to_owned(),
                        })?;
                    if let Some((first, _)) = &quorum {
                        return Err(PolicyError::Repeated {
                            line,
                            keyword: "quorum",
                            first: *first,
                        });
                    }
                    quorum = Some((line, n));
                    ("quorum", "n")
                }
                other => {
                    return Err(PolicyError::UnknownKeyword {
                        line,
                        keyword: other.to_owned(),
                    });
                }
            };
            if let Some(extra) = fields.next() {
                return Err(PolicyError::ExtraField {
                    line,
                    keyword,
                    after: last_field,
                    extra: extra.to_owned(),
                });
            }
        }
        let (_, log) = log.ok_or(PolicyError::Missing { keyword: "log" })?;
        let (quorum_line, quorum) = quorum.ok_or(PolicyError::Missing { keyword: "quorum" })?;
        if quorum > witnesses.len() {
            return Err(PolicyError::QuorumTooLarge {
                line: quorum_line,
                quorum,
                witnesses: witnesses.len(),
            });
        }
        let origin = origin.map_or_else(|| log.name().to_owned(), |(_, o)| o);
        Ok(Self {
            log,
            origin,
            witnesses: witnesses.into_iter().map(|(_, w)| w).collect(),
            quorum,
        })
    }

    /// The log's verifier key.
    pub fn log(&self) -> &NoteVerifier {
        &self.log
    }

    /// The origin checkpoints must state.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The witnesses, in policy order.
    pub fn witnesses(&self) -> &[PolicyWitness] {
        &self.witnesses
    }

    /// How many distinct witnesses must have cosigned.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Opens a signed checkpoint with the policy's log key and origin, without counting
    /// cosignatures.
    ///
    /// # Errors
    /// [`WitnessedError::Checkpoint`].
    pub fn open(&self, note: &[u8]) -> Result<SignedCheckpoint, WitnessedError> {
        SignedCheckpoint::open(note, &self.log, &self.origin).map_err(WitnessedError::Checkpoint)
    }

    /// Checks that the signed checkpoint `note` is witnessed under this policy: the
    /// log key signed it for the origin, and at least `quorum` distinct policy
    /// witnesses cosigned it. Cosignature lines of keys the policy does not list are
    /// ignored, as the signed-note rules say.
    ///
    /// # Errors
    /// [`WitnessedError::Checkpoint`]; [`WitnessedError::Cosignature`] when a listed
    /// witness's line fails; [`WitnessedError::TooFew`] below the quorum.
    pub fn witnessed(&self, note: &[u8]) -> Result<Witnessed, WitnessedError> {
        let checkpoint = self.open(note)?;
        let keys: Vec<NoteVerifier> = self.witnesses.iter().map(|w| w.key.clone()).collect();
        let cosigned = checkpoint
            .cosigned_by(&keys)
            .map_err(WitnessedError::Cosignature)?;
        let names: Vec<String> = self
            .witnesses
            .iter()
            .filter(|w| cosigned.iter().any(|k| **k == w.key))
            .map(|w| w.name.clone())
            .collect();
        if names.len() < self.quorum {
            return Err(WitnessedError::TooFew {
                got: names.len(),
                quorum: self.quorum,
                names: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            });
        }
        Ok(Witnessed {
            checkpoint,
            witnesses: names,
        })
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::cosignature::Cosigner;
    use crate::merkle::Hash;
    use crate::note::{Note, NoteSigner};

    const ORIGIN: &str = "casebus.test/log";

    fn log_signer(seed: u8) -> NoteSigner {
        NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[seed; 32])).expect("signer")
    }

    fn cosigner(name: &str, seed: u8) -> Cosigner {
        Cosigner::new(name, SigningKey::from_bytes(&[seed; 32])).expect("cosigner")
    }

    fn witnesses() -> Vec<Cosigner> {
        vec![
            cosigner("w.test/court", 11),
            cosigner("w.test/customs", 12),
            cosigner("w.test/police", 13),
        ]
    }

    fn policy_text(quorum: usize) -> String {
        let mut text = format!(
            "# the test log\nlog {}\n\n",
            log_signer(1).verifier().to_vkey()
        );
        for (label, w) in ["court", "customs", "police"].iter().zip(witnesses()) {
            text.push_str(&format!("witness {label}\t{}\n", w.verifier().to_vkey()));
        }
        text.push_str(&format!("quorum {quorum}\n"));
        text
    }

    /// A checkpoint signed by the log key of `seed`, cosigned by the witnesses listed.
    fn checkpoint(seed: u8, cosigners: &[Cosigner]) -> Vec<u8> {
        let note = Checkpoint {
            origin: ORIGIN.into(),
            size: 7,
            root: Hash([3; 32]),
            extensions: vec![],
        }
        .sign(&log_signer(seed))
        .expect("sign");
        let mut out = Note::parse(note.to_text().as_bytes()).expect("note");
        for (i, c) in cosigners.iter().enumerate() {
            out.add_signature(c.cosign(&note, 1_700_000_000 + i as u64).expect("cosign"))
                .expect("add");
        }
        out.to_text().into_bytes()
    }

    #[test]
    fn a_policy_parses_with_its_defaults() {
        let p = Policy::parse(&policy_text(2)).expect("policy");
        assert_eq!(
            p.origin(),
            ORIGIN,
            "the origin defaults to the log key's name"
        );
        assert_eq!(p.quorum(), 2);
        let names: Vec<&str> = p.witnesses().iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["court", "customs", "police"]);
        let with_origin = format!("origin other.test/log\n{}", policy_text(0));
        assert_eq!(
            Policy::parse(&with_origin).expect("policy").origin(),
            "other.test/log"
        );
    }

    #[test]
    fn the_quorum_counts_distinct_policy_witnesses() {
        let w = witnesses();
        // (quorum, who cosigned, the names witnessed or how many counted).
        type Case<'a> = (usize, Vec<Cosigner>, Result<Vec<&'a str>, usize>);
        let cases: [Case<'_>; 6] = [
            (
                2,
                vec![w[0].clone(), w[1].clone()],
                Ok(vec!["court", "customs"]),
            ),
            (
                2,
                vec![w[2].clone(), w[0].clone(), w[1].clone()],
                Ok(vec!["court", "customs", "police"]),
            ),
            (2, vec![w[1].clone()], Err(1)),
            // The same witness twice counts once.
            (2, vec![w[1].clone(), w[1].clone()], Err(1)),
            // A witness the policy does not list counts for nothing.
            (1, vec![cosigner("w.test/stranger", 99)], Err(0)),
            (0, vec![], Ok(vec![])),
        ];
        for (quorum, cosigners, expected) in cases {
            let p = Policy::parse(&policy_text(quorum)).expect("policy");
            let got = p.witnessed(&checkpoint(1, &cosigners));
            match expected {
                Ok(names) => assert_eq!(got.expect("witnessed").witnesses, names),
                Err(n) => match got {
                    Err(WitnessedError::TooFew { got, quorum: q, .. }) => {
                        assert_eq!((got, q), (n, quorum));
                    }
                    other => panic!("expected too few, got {other:?}"),
                },
            }
        }
    }

    #[test]
    fn a_checkpoint_of_another_log_key_is_not_witnessed() {
        let p = Policy::parse(&policy_text(1)).expect("policy");
        let got = p.witnessed(&checkpoint(2, &witnesses()));
        assert!(
            matches!(
                got,
                Err(WitnessedError::Checkpoint(CheckpointError::Note(
                    NoteError::NoKnownSignature
                )))
            ),
            "{got:?}"
        );
    }

    #[test]
    fn a_forged_cosignature_of_a_policy_witness_is_refused() {
        let p = Policy::parse(&policy_text(1)).expect("policy");
        let mut text = String::from_utf8(checkpoint(1, &witnesses()[..1])).expect("utf8");
        // Cosign another checkpoint and graft the line onto this one.
        let other = Checkpoint {
            origin: ORIGIN.into(),
            size: 8,
            root: Hash([4; 32]),
            extensions: vec![],
        }
        .sign(&log_signer(1))
        .expect("sign");
        let line = witnesses()[1].cosign(&other, 5).expect("cosign").to_line();
        text.push_str(&line);
        let got = p.witnessed(text.as_bytes());
        assert!(
            matches!(
                got,
                Err(WitnessedError::Cosignature(
                    NoteError::InvalidSignature { .. }
                ))
            ),
            "{got:?}"
        );
    }

    #[test]
    fn policy_errors_name_the_line_and_the_field() {
        let log = log_signer(1).verifier().to_vkey();
        let w = witnesses()[0].verifier().to_vkey();
        let w2 = witnesses()[1].verifier().to_vkey();
        let cases: Vec<(String, &str)> = vec![
            (
                format!("log {log}\nquorum 0\nlogs x\n"),
                "line 3: unknown keyword \"logs\"",
            ),
            ("log\n".into(), "line 1: log needs the field <vkey>"),
            (
                format!("log {log}\nwitness court\n"),
                "line 2: witness needs the field <vkey>",
            ),
            (
                format!("log {log}\nquorum\n"),
                "line 2: quorum needs the field <n>",
            ),
            (
                format!("log {log} extra\n"),
                "line 1: log takes no field after <vkey>, found \"extra\"",
            ),
            (
                "log not-a-key\n".into(),
                "line 1: field <vkey>: malformed verifier key",
            ),
            (
                format!("log {w}\n"),
                "line 1: field <vkey>: a key of signature type 0x04 where 0x01",
            ),
            (
                format!("log {log}\nwitness court {log}\n"),
                "line 2: field <vkey>: a key of signature type 0x01 where 0x04",
            ),
            (
                format!("log {log}\nquorum two\n"),
                "line 2: field <n> of quorum: \"two\" is not a decimal",
            ),
            (
                format!("log {log}\nquorum 01\n"),
                "line 2: field <n> of quorum: \"01\"",
            ),
            (
                format!("log {log}\nwitness a {w}\nquorum 2\n"),
                "line 3: field <n> of quorum: 2 exceeds the 1 witness(es)",
            ),
            (
                format!("log {log}\n\nlog {log}\n"),
                "line 3: a second log statement (the first is on line 1)",
            ),
            (
                format!("log {log}\nquorum 0\nquorum 0\n"),
                "line 3: a second quorum statement (the first is on line 2)",
            ),
            (
                format!("log {log}\nwitness a {w}\nwitness a {w2}\n"),
                "line 3: field <name> of witness: \"a\" is listed already on line 2",
            ),
            (
                format!("log {log}\nwitness a {w}\nwitness b {w}\n"),
                "line 3: field <vkey> of witness",
            ),
            ("quorum 0\n".into(), "the policy has no log line"),
            (format!("log {log}\n"), "the policy has no quorum line"),
        ];
        for (text, expected) in cases {
            let err = Policy::parse(&text).expect_err(&text).to_string();
            assert!(
                err.starts_with(expected),
                "{text:?}: {err:?} does not start with {expected:?}"
            );
        }
    }
}
