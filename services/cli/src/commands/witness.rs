//! `casebus witness`: an agency's witness of the transparency log. It follows the
//! checkpoints of one origin on `CHECKPOINTS`, checks each against the last one it
//! cosigned with a consistency proof read from a gateway (GetConsistencyProof), and
//! cosigns (C2SP `tlog-cosignature`, cosignature/v1) and publishes on
//! `cosignature.<origin token>.<witness token>` every checkpoint that extends it.
//!
//! **Invariant:** the witness never cosigns two checkpoints that contradict each other.
//! A fork (a checkpoint of the size last cosigned with another root, a smaller tree that
//! is not a prefix of it, or a larger one whose consistency proof fails) is refused:
//! an error line on standard error (and in the log at error level), the `forks` counter
//! in the state file goes up, nothing is cosigned, and `--once` exits 1. A checkpoint not
//! signed by the log key for the origin is refused and counted alike (`refused`).
//!
//! The state file (JSON, rewritten atomically) holds the last checkpoint cosigned, the
//! last stream sequence read and the counters; the first checkpoint a witness sees with
//! no state is cosigned as it is (trust on first use: start a witness before the log
//! grows, or give it a state file holding a checkpoint checked otherwise).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use casebus_bus::ops::{Ops, PublishOptions, ScanStart, Scanner, StoredMessage};
use casebus_bus::subjects::{
    CHECKPOINTS_STREAM, checkpoint_subject, cosignature_subject, name_token,
};
use casebus_proto::gateway::v1::GetConsistencyProofRequest;
use casebus_runtime::metrics::{WitnessMetrics, bind, serve_http};
use casebus_runtime::shutdown::on_signal;
use casebus_runtime::tlog_keys::{load_verifier, load_witness_key};
use casebus_tlog::checkpoint::SignedCheckpoint;
use casebus_tlog::cosignature::Cosigner;
use casebus_tlog::merkle::{Hash, verify_consistency};
use casebus_tlog::note::{Note, NoteVerifier};

use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::gateway_client::Client;

/// Longest wait for the next checkpoint before looking at the stop signal again.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// `casebus witness`.
#[derive(Debug, Clone, clap::Args)]
pub struct WitnessArgs {
    /// The log's origin, the first line of its checkpoints.
    #[arg(long)]
    pub origin: String,
    /// The log's verifier key (`<name>+<id>+<key>`), or a file holding it (the `.vkey`
    /// written by `casebus keys generate --kind log`).
    #[arg(long = "log-vkey")]
    pub log_vkey: String,
    /// This witness's key (`casebus keys generate --kind witness`, mode 0600).
    #[arg(long = "witness-key")]
    pub witness_key: PathBuf,
    /// The witness's state file (created when missing).
    #[arg(long)]
    pub state: PathBuf,
    /// The gateway the consistency proofs are read from (`http://` or `https://`).
    #[arg(long)]
    pub gateway: String,
    /// A file holding the bearer token for the gateway (audience gateway, reader role).
    #[arg(long = "gateway-token-file")]
    pub gateway_token_file: PathBuf,
    /// The CA of an https gateway's certificate.
    #[arg(long = "gateway-tls-ca")]
    pub gateway_tls_ca: Option<PathBuf>,
    /// Handle the checkpoints stored now, then stop; exit 1 when one was refused.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics (`/metrics`, `/healthz`, `/readyz`) on this address, e.g.
    /// `127.0.0.1:9470` (port 0 picks a free one; see --ready-file).
    #[arg(long = "metrics-listen")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Once following, write `{"metrics": "<address>"}` to this file (atomically).
    #[arg(long = "ready-file")]
    pub ready_file: Option<PathBuf>,
}

/// What the witness remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    /// The origin this state is of.
    origin: String,
    /// The last checkpoint cosigned: its size, base64 root and note text.
    size: Option<u64>,
    root: Option<String>,
    checkpoint: Option<String>,
    /// The last `CHECKPOINTS` sequence handled.
    stream_sequence: u64,
    /// Checkpoints cosigned, forks seen, checkpoints refused for their signature.
    cosigned: u64,
    forks: u64,
    refused: u64,
}

impl State {
    fn load(path: &Path, origin: &str) -> Result<Self, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    origin: origin.to_owned(),
                    ..Self::default()
                });
            }
            Err(e) => {
                return Err(CliError::caused(
                    format!("cannot read the state file {}", path.display()),
                    e,
                ));
            }
        };
        let state: Self = serde_json::from_str(&text).map_err(|e| {
            CliError::runtime(format!(
                "the state file {} is not a witness state: {e}",
                path.display()
            ))
        })?;
        if state.origin != origin {
            return Err(CliError::usage(format!(
                "the state file {} is of origin {:?}, not {origin:?}",
                path.display(),
                state.origin
            )));
        }
        Ok(state)
    }

    fn save(&self, path: &Path) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        write_atomically(path, &text).map_err(|e| {
            CliError::caused(format!("cannot write the state file {}", path.display()), e)
        })
    }

    fn last(&self) -> Option<(u64, Hash)> {
        let root = Hash::from_base64(self.root.as_deref()?).ok()?;
        Some((self.size?, root))
    }
}

/// Writes `text` to a temporary file beside `path` and renames it into place, so a
/// reader sees the old file or the new one, never a part.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path))
}

/// What to do with one checkpoint.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Cosign,
    /// Older than, or the same as, the last cosigned, and consistent with it.
    Skip,
    Fork(String),
}

fn gateway_client(args: &WitnessArgs) -> Result<Client, CliError> {
    crate::gateway_client::connect(
        &args.gateway,
        &args.gateway_token_file,
        args.gateway_tls_ca.as_deref(),
    )
}

/// The witness at work: its key, the log's, its state and its connections.
struct Witness {
    args: WitnessArgs,
    log: NoteVerifier,
    cosigner: Cosigner,
    state: State,
    ops: Ops,
    gateway: Client,
    metrics: WitnessMetrics,
}

impl Witness {
    async fn consistency(&mut self, first: u64, second: u64) -> Result<Vec<Hash>, CliError> {
        let proof = self
            .gateway
            .get_consistency_proof(GetConsistencyProofRequest {
                first_size: first,
                second_size: second,
            })
            .await
            .map_err(|s| {
                CliError::runtime(format!(
                    "the gateway {} gave no consistency proof from {first} to {second}: {} {}",
                    self.args.gateway,
                    s.code(),
                    s.message()
                ))
            })?
            .into_inner();
        proof
            .proof
            .iter()
            .map(|h| {
                Hash::from_slice(h).ok_or_else(|| {
                    CliError::runtime(
                        "the gateway's consistency proof holds a hash that is not 32 bytes",
                    )
                })
            })
            .collect()
    }

    /// Judges one checkpoint against the last cosigned; a failed proof read is an
    /// error (tried again at the next run), not a verdict.
    async fn judge(&mut self, signed: &SignedCheckpoint) -> Result<Verdict, CliError> {
        let (size, root) = (signed.checkpoint.size, signed.checkpoint.root);
        let Some((last_size, last_root)) = self.state.last() else {
            return Ok(Verdict::Cosign);
        };
        if size == last_size {
            return Ok(if root == last_root {
                Verdict::Skip
            } else {
                Verdict::Fork(format!(
                    "two checkpoints of size {size} with different roots ({} cosigned, {} now)",
                    last_root.to_base64(),
                    root.to_base64()
                ))
            });
        }
        let (first, first_root, second, second_root) = if size < last_size {
            (size, root, last_size, last_root)
        } else {
            (last_size, last_root, size, root)
        };
        let proof = self.consistency(first, second).await?;
        match verify_consistency(first, second, &first_root, &second_root, &proof) {
            Ok(()) if size < last_size => Ok(Verdict::Skip),
            Ok(()) => Ok(Verdict::Cosign),
            Err(e) if size < last_size => Ok(Verdict::Fork(format!(
                "a tree of size {size} that is not a prefix of the tree of size {last_size} cosigned: {e}"
            ))),
            Err(e) => Ok(Verdict::Fork(format!(
                "a tree of size {size} that does not extend the tree of size {last_size} cosigned: {e}"
            ))),
        }
    }

    async fn cosign(&mut self, signed: &SignedCheckpoint) -> Result<(), CliError> {
        let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
        let line = self
            .cosigner
            .cosign(&signed.note, now)
            .map_err(CliError::from_source)?;
        let mut note = Note::new(signed.note.text()).map_err(CliError::from_source)?;
        note.add_signature(line).map_err(CliError::from_source)?;
        let c = &signed.checkpoint;
        self.ops
            .publish(
                &cosignature_subject(&self.args.origin, self.cosigner.name()),
                note.to_text().into_bytes().into(),
                &[],
                &PublishOptions {
                    message_id: Some(format!(
                        "cosignature-{}-{}-{}",
                        name_token(self.cosigner.name()),
                        c.size,
                        &c.root.to_hex()[..16]
                    )),
                    expected_last_subject_sequence: None,
                },
            )
            .await
            .map_err(|e| CliError::caused("cannot publish the cosignature", e))?;
        self.state.size = Some(c.size);
        self.state.root = Some(c.root.to_base64());
        self.state.checkpoint = Some(signed.note.text().to_owned());
        self.state.cosigned += 1;
        self.metrics.cosigned_size.set(gauge_value(c.size));
        self.metrics.cosignatures.inc();
        self.metrics.last_cosignature.set(gauge_value(now));
        Ok(())
    }

    /// Handles one stored checkpoint; returns whether it was refused.
    async fn handle(&mut self, message: &StoredMessage) -> Result<bool, CliError> {
        let refused = match SignedCheckpoint::open(&message.payload, &self.log, &self.args.origin) {
            Err(e) => {
                self.state.refused += 1;
                self.metrics.refused.inc();
                alert(
                    message.sequence,
                    &format!("not a checkpoint of this log: {e}"),
                );
                true
            }
            Ok(signed) => {
                let size = signed.checkpoint.size;
                self.metrics.checkpoint_size.set(gauge_value(size));
                match self.judge(&signed).await? {
                    Verdict::Cosign => {
                        self.cosign(&signed).await?;
                        tracing::info!(size, sequence = message.sequence, "checkpoint cosigned");
                        false
                    }
                    Verdict::Skip => false,
                    Verdict::Fork(reason) => {
                        self.state.forks += 1;
                        self.metrics.forks.inc();
                        alert(message.sequence, &format!("fork: {reason}"));
                        true
                    }
                }
            }
        };
        self.state.stream_sequence = message.sequence;
        self.state.save(&self.args.state)?;
        Ok(refused)
    }
}

/// A size or time as a gauge value (they stay far below `i64::MAX`).
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The witness's metrics, with the counters of its state file.
fn witness_metrics(cosigner: &Cosigner, state: &State) -> Result<WitnessMetrics, CliError> {
    let metrics = WitnessMetrics::new(cosigner.name(), &state.origin)
        .map_err(|e| CliError::usage(format!("the witness's metric labels: {e}")))?;
    metrics.cosignatures.inc_by(state.cosigned);
    metrics.forks.inc_by(state.forks);
    metrics.refused.inc_by(state.refused);
    if let Some(size) = state.size {
        metrics.cosigned_size.set(gauge_value(size));
        metrics.checkpoint_size.set(gauge_value(size));
    }
    Ok(metrics)
}

/// Serves the metrics on `--metrics-listen` until `stop`, and writes `--ready-file`.
async fn serve_metrics(
    args: &WitnessArgs,
    metrics: &WitnessMetrics,
    stop: &CancellationToken,
) -> Result<(), CliError> {
    let mut bound = None;
    if let Some(addr) = args.metrics_listen {
        let listener = bind("--metrics-listen", addr)
            .await
            .map_err(|e| CliError::usage(e.to_string()))?;
        bound = listener.local_addr().ok();
        let (registry, ready, stop) = (
            metrics.registry.clone(),
            Arc::new(AtomicBool::new(true)),
            stop.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = serve_http(listener, registry, ready, stop).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    if let Some(path) = &args.ready_file {
        let text = json!({ "metrics": bound.map(|a| a.to_string()) }).to_string();
        write_atomically(path, &text).map_err(|e| {
            CliError::caused(format!("cannot write --ready-file {}", path.display()), e)
        })?;
    }
    Ok(())
}

fn alert(sequence: u64, reason: &str) {
    tracing::error!(sequence, reason, "checkpoint refused; not cosigned");
    eprintln!(
        "error: checkpoint at CHECKPOINTS sequence {sequence} refused, not cosigned: {reason}"
    );
}

/// `casebus witness`.
pub async fn run(ctx: &Ctx, args: &WitnessArgs) -> Result<Outcome, CliError> {
    let log =
        load_verifier(&args.log_vkey).map_err(|e| CliError::usage(format!("--log-vkey: {e}")))?;
    if !matches!(log, NoteVerifier::Ed25519 { .. }) {
        return Err(CliError::usage(
            "--log-vkey: a log key has signature type 0x01",
        ));
    }
    let cosigner = load_witness_key(&args.witness_key)
        .map_err(|e| CliError::usage(format!("--witness-key: {e}")))?;
    let state = State::load(&args.state, &args.origin)?;
    let metrics = witness_metrics(&cosigner, &state)?;
    let gateway = gateway_client(args)?;
    let ops = ctx.ops().await?;
    let mut witness = Witness {
        args: args.clone(),
        log,
        cosigner,
        state,
        ops,
        gateway,
        metrics,
    };
    let mut scanner: Scanner = witness
        .ops
        .scan(
            CHECKPOINTS_STREAM,
            Some(&checkpoint_subject(&args.origin)),
            ScanStart::Sequence(witness.state.stream_sequence + 1),
            100,
        )
        .await
        .map_err(|e| CliError::caused("cannot read the CHECKPOINTS stream", e))?;
    let stop = if args.once {
        CancellationToken::new()
    } else {
        on_signal()
    };
    let mut refusals = 0u64;
    let result: Result<(), CliError> = async {
        if !args.once {
            serve_metrics(args, &witness.metrics, &stop).await?;
            witness.metrics.up.set(1);
        }
        loop {
            let batch = if args.once {
                scanner.fetch().await
            } else {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    batch = scanner.wait(FOLLOW_WAIT) => batch,
                }
            }
            .map_err(|e| CliError::caused("cannot read the CHECKPOINTS stream", e))?;
            if batch.is_empty() && args.once {
                return Ok(());
            }
            for message in &batch {
                if witness.handle(message).await? {
                    refusals += 1;
                }
            }
        }
    }
    .await;
    witness.metrics.up.set(0);
    stop.cancel();
    scanner.close().await;
    result?;
    let s = &witness.state;
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "origin": s.origin,
            "witness": witness.cosigner.verifier().to_vkey(),
            "size": s.size,
            "root": s.root,
            "stream_sequence": s.stream_sequence,
            "cosigned": s.cosigned,
            "forks": s.forks,
            "refused": s.refused,
            "refused_this_run": refusals,
        }))?;
    } else {
        ctx.out.line(format!(
            "witness {}: last cosigned size {}, {} cosigned, {} forks, {} refused ({} this run)",
            witness.cosigner.name(),
            s.size.map_or_else(|| "none".into(), |n| n.to_string()),
            s.cosigned,
            s.forks,
            s.refused,
            refusals
        ))?;
    }
    Ok(Outcome::problems_if(refusals > 0))
}
