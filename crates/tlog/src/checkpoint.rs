//! C2SP `tlog-checkpoint`: the note text `<origin>\n<tree size>\n<base64 root>\n`
//! followed by optional non-empty extension lines, signed as a `signed-note`.
//!
//! [`SignedCheckpoint::open`] is the one way to trust a checkpoint: the log's key must
//! have signed it, and its origin must be the one expected. Cosignatures are counted
//! against the witnesses a policy names with [`SignedCheckpoint::cosigned_by`].

use crate::merkle::Hash;
use crate::note::{Note, NoteError, NoteSigner, NoteVerifier};

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The note's text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The note around it is not a valid signed note, or its signatures fail.
    #[error("checkpoint note")]
    Note(#[from] NoteError),
    /// Signed by the log, but for another origin.
    #[error("checkpoint of origin {found:?} where {expected:?} was expected")]
    WrongOrigin {
        /// The expected origin.
        expected: String,
        /// The checkpoint's.
        found: String,
    },
}

/// A tree head as a checkpoint's text states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `casebus.example/cases`.
    pub origin: String,
    /// Leaves in the tree.
    pub size: u64,
    /// The RFC 6962 root hash at that size.
    pub root: Hash,
    /// Extension lines, each non-empty, without newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text, with its final newline.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// Parses a note text (with its final newline) as a checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError::Malformed`] naming the line at fault.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::Malformed(
            "the text does not end in a newline",
        ))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("the origin line is empty"));
        }
        let size = lines
            .next()
            .ok_or(CheckpointError::Malformed("no tree size line"))?;
        let size = parse_decimal(size).ok_or(CheckpointError::Malformed(
            "the tree size is not a decimal without leading zeroes",
        ))?;
        let root = lines
            .next()
            .ok_or(CheckpointError::Malformed("no root hash line"))?;
        let root = Hash::from_base64(root).map_err(|_| {
            CheckpointError::Malformed("the root hash is not the base64 of 32 bytes")
        })?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("an extension line is empty"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The checkpoint signed by the log's key, as a note.
    ///
    /// # Errors
    /// [`CheckpointError::Note`] when the text holds a character a note may not.
    pub fn sign(&self, signer: &NoteSigner) -> Result<Note, CheckpointError> {
        let mut note = Note::new(self.to_text())?;
        let sig = signer.sign(&note);
        note.add_signature(sig)?;
        Ok(note)
    }
}

/// ASCII decimal with no leading zeroes (except `0` itself).
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

/// A checkpoint whose log signature verified, with the note it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What it states.
    pub checkpoint: Checkpoint,
    /// The note, with every signature line it carried.
    pub note: Note,
}

impl SignedCheckpoint {
    /// Parses a signed checkpoint and checks it: the log key `log` signed it (other
    /// signature lines are kept but not checked here) and its origin is `origin`.
    ///
    /// # Errors
    /// [`CheckpointError::Note`] (malformed note, no log signature, or a log signature
    /// that fails), [`CheckpointError::Malformed`], [`CheckpointError::WrongOrigin`].
    pub fn open(bytes: &[u8], log: &NoteVerifier, origin: &str) -> Result<Self, CheckpointError> {
        let note = Note::parse(bytes)?;
        note.verify(std::slice::from_ref(log))?;
        let checkpoint = Checkpoint::parse(note.text())?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok(Self { checkpoint, note })
    }

    /// The witnesses among `witnesses` whose cosignatures on this checkpoint verify,
    /// each once, in the order of `witnesses`.
    ///
    /// # Errors
    /// [`NoteError::InvalidSignature`] when a listed witness's line fails to verify (a
    /// forged or altered cosignature refuses the whole note, as the spec advises).
    pub fn cosigned_by<'w>(
        &self,
        witnesses: &'w [NoteVerifier],
    ) -> Result<Vec<&'w NoteVerifier>, NoteError> {
        let verified = match self.note.verify(witnesses) {
            Ok(v) => v,
            Err(NoteError::NoKnownSignature) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(witnesses
            .iter()
            .filter(|w| verified.iter().any(|v| std::ptr::eq(v.verifier, *w)))
            .collect())
    }
}
