//! The command line: global flags (each with its environment variable) and every
//! subcommand with its arguments and help text. Argument values are validated here
//! (case and office ids, sequences, times), so a bad value fails with clap's exit code 2
//! and a message naming the argument before anything is touched.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;

use casebus_proto::event::v1::Agency;
use casebus_proto::{CaseId, OfficeId, agency_from_name};

use crate::decode::event_type_arg;
use crate::times::{duration_arg, instant_arg};

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  verification failed, or something was found wrong or refused (a broken chain, a
     missing case, a replay refused while the consumer is pulling)
  2  bad arguments
  3  NATS unavailable, or another runtime error (unreadable file, server refusal)

Times are RFC 3339 (2026-03-01T08:00:00Z), a date (2026-03-01), `now`, or a duration
meaning that long ago (2h, 3days).";

/// casebus: inspect, verify, replay and repair the casebus record on NATS JetStream.
#[derive(Debug, Parser)]
#[command(
    name = "casebus",
    version,
    about = "Operate the casebus record: inspect, verify, replay and repair the streams, export evidence, manage keys and tokens",
    long_about = None,
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// Global flags.
    #[command(flatten, next_help_heading = "Global options")]
    pub global: GlobalArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        env = "CASEBUS_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,
    /// NATS credentials file (.creds) of the operator's user, if the server needs one.
    #[arg(long = "nats-creds", env = "CASEBUS_NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// NKey seed file of the operator's NATS user (the deploy/nats configs use NKeys).
    #[arg(
        long = "nats-nkey-seed",
        env = "CASEBUS_NATS_NKEY_SEED",
        global = true,
        conflicts_with = "nats_creds"
    )]
    pub nats_nkey_seed: Option<PathBuf>,
    /// CA certificate (PEM) that signed the NATS servers' TLS certificates; requires TLS.
    #[arg(long = "nats-tls-ca", env = "CASEBUS_NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// Prefix of the subjects the CLI receives its NATS replies on (`_INBOX_operator`
    /// for the operator user of deploy/nats, `_INBOX_provisioner` for the break-glass
    /// provisioner); default `_INBOX`.
    #[arg(
        long = "nats-inbox-prefix",
        env = "CASEBUS_NATS_INBOX_PREFIX",
        global = true,
        value_parser = casebus_bus::check_inbox_prefix
    )]
    pub nats_inbox_prefix: Option<String>,
    /// Office registry (TOML): the public keys events are verified with, or the file
    /// `keys register`/`keys rotate` change.
    #[arg(long, env = "CASEBUS_REGISTRY", global = true)]
    pub registry: Option<PathBuf>,
    /// Machine-readable output: JSON lines for record streams, one JSON document
    /// otherwise.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or notes on standard error; results and problems still show.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read events of the CASES stream, decoded (list, tail).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Show one case: its verified timeline and a summary.
    #[command(subcommand)]
    Case(CaseCommand),
    /// Verify chain and signatures: one case, the whole stream, or a bundle offline.
    ///
    /// --case reads one case from CASES, --all every case in one pass (with a progress
    /// bar showing rate and ETA on a terminal), --bundle an exported evidence bundle
    /// without NATS. Every failure is reported with case, version, stream sequence and
    /// reason; the exit code is 1 when anything fails.
    ///
    /// A bundle carries the public keys it was signed with, so whoever forges a bundle
    /// can forge its keys too: without --registry (a registry you trust) the check
    /// fails, saying the keys are the bundle's own, unless --trust-bundle-keys accepts
    /// them. --expect-digest compares the manifest digest with the one quoted where the
    /// bundle was referenced (which also catches a bundle cut short).
    ///
    /// A casebus.bundle.v2 (exported with --gateway) also carries the log's witnessed
    /// checkpoint, an inclusion proof per event and the case-head proof: --policy (the
    /// log key, witnesses and quorum you trust) checks them, so a bundle missing its
    /// last events fails; --operator-vkey checks the operator's seal; --known-checkpoint
    /// checks consistency with a checkpoint the court holds. --log instead checks the
    /// whole log, recomputed from CASES, against the latest checkpoint (with NATS).
    ///
    /// Example:
    ///   casebus --registry offices.toml verify --case NB-2026-0042
    ///   casebus --registry offices.toml verify --all
    ///   casebus --registry offices.toml verify --bundle NB-2026-0042.bundle.json \
    ///     --expect-digest 3f1c...e9
    ///   casebus verify --bundle NB-2026-0042.bundle.json --trust-bundle-keys
    ///   casebus --registry offices.toml verify --bundle NB-2026-0042.bundle.json \
    ///     --policy court.policy --operator-vkey ops-zhang.key.vkey --known-checkpoint known.checkpoint
    ///   casebus verify --log --policy court.policy
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),
    /// Reset a service's durable consumer to a sequence or a time (plan first).
    ///
    /// Makes a durable consumer of CASES receive events again from a stream sequence or
    /// from a time, e.g. after fixing a bug in a service. First shows the plan: the
    /// consumer, its position (ack floor), the new start, and how many messages it will
    /// receive (again). Nothing changes without --execute.
    ///
    /// NATS 2.9 has no reset API, so executing deletes the durable consumer and creates
    /// it again with the same settings (filter, ack policy, limits) delivering from the
    /// new start. Handlers are idempotent on the event id, so re-delivered events are
    /// harmless. Refused (exit 1) while a client is pulling from the consumer (stop the
    /// service first), or when the new start skips messages the consumer has not
    /// processed yet; --force overrides both.
    ///
    /// Example:
    ///   casebus replay --consumer svc-customs-ningbo --to-seq 1200
    ///   casebus replay --consumer gateway-1 --to-time 2026-03-01T00:00:00Z --execute
    #[command(verbatim_doc_comment)]
    Replay(ReplayArgs),
    /// Build a gateway projection offline from the stream into a new SQLite file.
    ///
    /// Reads CASES from the start, verifies every event as the gateway's consumer does,
    /// and projects it into a NEW SQLite file, with a progress bar; then reports the
    /// counts. Refuses to overwrite a file, so an operator can rebuild beside the live
    /// projection and swap the files while the gateway is stopped. Messages that fail
    /// verification are left out (the gateway dead-letters them) and counted. Needs
    /// --registry.
    ///
    /// Example:
    ///   casebus --registry offices.toml rebuild --db /var/lib/casebus/gateway-1.new.sqlite
    #[command(verbatim_doc_comment)]
    Rebuild(RebuildArgs),
    /// Dead letters of CASES_DLQ: list, show, retry, drop.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Export a case as an evidence bundle that verifies offline.
    ///
    /// The bundle (JSON) holds every event of the case's chain with its stored signed
    /// bytes (base64), hash, previous hash, signature and key id, and its decoded JSON;
    /// the messages of the case that failed verification, apart; the registry entries
    /// (public keys) of every office that signed; and a manifest with a SHA-256 digest
    /// over all of it. A third party verifies it with `casebus verify --bundle` against
    /// a registry it trusts (--registry) and the quoted digest (--expect-digest), without
    /// NATS; quote the manifest digest wherever the bundle is referenced. Refuses to
    /// overwrite a file. Needs --registry.
    ///
    /// With --gateway the bundle is a casebus.bundle.v2: it also carries the gateway's
    /// latest checkpoint with the witnesses' cosignatures, a tlog-proof@v1 inclusion
    /// proof for every event and the case-head proof (and, with --known-checkpoint, a
    /// consistency proof to the court's checkpoint), sealed with --operator-key. Refused
    /// while the checkpoint does not cover the case's last event yet.
    ///
    /// Example:
    ///   casebus --registry offices.toml export --case NB-2026-0042 --out NB-2026-0042.bundle.json
    ///   casebus --registry offices.toml export --case NB-2026-0042 --out NB-2026-0042.bundle.json \
    ///     --gateway https://gateway:50070 --gateway-tls-ca ca.pem --gateway-token-file reader.token \
    ///     --operator-key ops-zhang.key
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),
    /// Read the audit trail: who read which case when, and operator actions.
    ///
    /// The AUDIT stream holds one record per timeline read at a gateway (office, actor,
    /// case, versions, time, method) on `audit.<office>`, and the operators' repairs
    /// (dropped and retried dead letters) on audit.operator.
    ///
    /// Example:
    ///   casebus audit --case NB-2026-0042
    ///   casebus --json audit --office customs:ningbo --since 7days
    ///   casebus audit --operator
    #[command(verbatim_doc_comment)]
    Audit(AuditArgs),
    /// Office signing keys: generate, register, rotate, list.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Bearer tokens for gRPC callers.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Token issuer keys and trust files.
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// The streams: status (messages, consumers, backlog) and provisioning.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Drive the agency services with a realistic workload (cases from customs through the
    /// IP center, police and procuratorate to court; some hand-offs left overdue).
    ///
    /// Example: casebus simulate --target customs:ningbo=http://127.0.0.1:50051 ...
    /// --issuer-key issuer.key --rate 20 --cases 100 --seed 7
    Simulate(Box<casebus_simulator::SimConfig>),
    /// Witness the transparency log: follow one origin's checkpoints on CHECKPOINTS,
    /// check each against the last one cosigned with a consistency proof from a
    /// gateway, cosign (C2SP cosignature/v1) and publish what extends it, and refuse
    /// (error line, the forks counter of the state file, exit 1 with --once) a fork.
    ///
    /// Example:
    ///   casebus witness --origin casebus.example/cases --log-vkey log.key.vkey \
    ///     --witness-key court-witness.key --state court-witness.json \
    ///     --gateway http://gateway:50070 --gateway-token-file witness.token
    #[command(verbatim_doc_comment)]
    Witness(Box<crate::commands::witness::WitnessArgs>),
}

fn case_id_arg(value: &str) -> Result<CaseId, String> {
    CaseId::new(value).map_err(|e| e.to_string())
}

fn office_id_arg(value: &str) -> Result<OfficeId, String> {
    OfficeId::new(value).map_err(|e| e.to_string())
}

fn agency_arg(value: &str) -> Result<Agency, String> {
    agency_from_name(&value.trim().to_ascii_lowercase()).ok_or_else(|| {
        format!(
            "{value:?} is not an agency; use court, procuratorate, public_security, customs or ip_center"
        )
    })
}

fn replicas_arg(value: &str) -> Result<usize, String> {
    match value.trim() {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!(
            "{value:?}: replicas must be 1 (single node) or 3 (cluster)"
        )),
    }
}

fn sequence_arg(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(0) => Err("stream sequences start at 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{value:?} is not a stream sequence (1, 2, 3 ...)")),
    }
}

/// Filters shared by `events list` and `events tail`.
#[derive(Debug, Clone, Args)]
pub struct EventFilter {
    /// Only this case.
    #[arg(long, value_parser = case_id_arg)]
    pub case: Option<CaseId>,
    /// Only events recorded by offices of this agency (court, procuratorate,
    /// public_security, customs, ip_center).
    #[arg(long, value_parser = agency_arg)]
    pub agency: Option<Agency>,
    /// Only events recorded by this office, e.g. customs:ningbo.
    #[arg(long, value_parser = office_id_arg)]
    pub office: Option<OfficeId>,
    /// Only these event types (catalogue names, e.g. HandoffRequested); repeat or
    /// separate with commas.
    #[arg(long = "type", value_delimiter = ',', value_parser = event_type_arg)]
    pub types: Vec<String>,
    /// Only events recorded at or after this time.
    #[arg(long, value_parser = instant_arg)]
    pub since: Option<OffsetDateTime>,
    /// Only events recorded before this time.
    #[arg(long, value_parser = instant_arg)]
    pub until: Option<OffsetDateTime>,
    /// Start at this stream sequence.
    #[arg(long, value_parser = sequence_arg)]
    pub from_seq: Option<u64>,
    /// Stop after this stream sequence.
    #[arg(long, value_parser = sequence_arg)]
    pub to_seq: Option<u64>,
    /// Keys to open sealed events with.
    #[command(flatten)]
    pub decryption: DecryptionArgs,
}

/// The keys `events`, `case show` and `export` open sealed content with.
#[derive(Debug, Clone, Default, Args)]
pub struct DecryptionArgs {
    /// An office's secret encryption key file (`casebus keys generate --kind
    /// encryption`); repeat for more keys (an office's retired ones, other offices').
    /// An event sealed for one of them is shown opened; without, a sealed event shows
    /// its readable part, marked "sealed for <offices>".
    #[arg(long = "decryption-key", value_name = "FILE")]
    pub decryption_keys: Vec<PathBuf>,
}

/// `casebus events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Every event in a range of the stream that matches the filters, then exit.
    ///
    /// Reads from --from-seq (default: the start) to --to-seq (default: the last
    /// message when the command starts). With --registry every message's signature,
    /// key and envelope are verified; without, events show as unverified. Messages
    /// that cannot be decoded or verified are shown as INVALID with the reason, never
    /// dropped; undecodable ones match every filter except --case, because nothing in
    /// them can rule them out.
    ///
    /// Example:
    ///   casebus events list --case NB-2026-0042 --type HandoffRequested,HandoffAccepted
    ///   casebus --json events list --agency customs --since 2h
    #[command(verbatim_doc_comment)]
    List(EventFilter),
    /// The last events, then (with --follow) new ones as they arrive.
    ///
    /// Shows the last --lines messages of the stream (of the case, with --case) that
    /// match the filters; --from-seq or --since choose the start instead. --follow
    /// keeps waiting for new events until interrupted (Ctrl-C).
    ///
    /// Example:
    ///   casebus events tail --follow
    ///   casebus --json events tail --case NB-2026-0042 -n 50
    #[command(verbatim_doc_comment)]
    Tail(TailArgs),
}

/// `casebus events tail` arguments.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: EventFilter,
    /// How many of the last messages to show.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub lines: u64,
    /// Keep waiting for new events.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `casebus case ...`
#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// The case's timeline read straight from the stream and verified, with a summary:
    /// title, tracks, parties, hand-offs with due times and overdue flags, references.
    ///
    /// Needs --registry. Messages of the case that fail verification are listed with
    /// the reason; then the exit code is 1.
    ///
    /// Example:
    ///   casebus --registry offices.toml case show NB-2026-0042
    #[command(verbatim_doc_comment)]
    Show {
        /// The case id.
        #[arg(value_parser = case_id_arg)]
        case: CaseId,
        /// Deadline rules and holiday calendar the hand-offs' running legal clocks are
        /// counted with (give the services' own).
        #[command(flatten)]
        clocks: casebus_runtime::clocks::ClockArgs,
        /// Keys to open sealed events with.
        #[command(flatten)]
        decryption: DecryptionArgs,
    },
}

/// `casebus verify` arguments.
#[derive(Debug, Args)]
#[command(
    group = clap::ArgGroup::new("target").required(true).args(["case", "all", "bundle", "log"])
)]
pub struct VerifyArgs {
    /// Verify one case.
    #[arg(long, value_parser = case_id_arg)]
    pub case: Option<CaseId>,
    /// Verify every case in the stream.
    #[arg(long)]
    pub all: bool,
    /// Verify an evidence bundle offline, against --registry (a registry you trust),
    /// or with the public keys it carries if --trust-bundle-keys is given.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Accept the public keys inside the bundle when no --registry is given. This
    /// proves only that the bundle is consistent with itself, not who signed it.
    #[arg(long)]
    pub trust_bundle_keys: bool,
    /// The manifest digest quoted where the bundle was referenced (64 hex digits);
    /// the bundle fails unless its recomputed digest is this one.
    #[arg(long, value_name = "SHA256", value_parser = digest_arg)]
    pub expect_digest: Option<String>,
    /// Check the whole transparency log: every CASES message recomputed into the
    /// Merkle tree and the case-head map, against the latest checkpoint on
    /// CHECKPOINTS for the policy's origin (needs --policy).
    #[arg(long)]
    pub log: bool,
    /// Witness policy file (log key, witnesses, quorum; see docs/PROOFS.md): a bundle's
    /// checkpoint must be signed by its log key and cosigned by a quorum of its witnesses.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// A checkpoint the court already holds (signed-note text): the bundle's checkpoint
    /// must be consistent with it (the bundle carries the consistency proof).
    #[arg(long, value_name = "FILE")]
    pub known_checkpoint: Option<PathBuf>,
    /// The exporting operator's verifier key (`<name>+<id>+<key>`, or a file holding
    /// it) the bundle's manifest must be sealed with; repeat for several.
    #[arg(long = "operator-vkey", value_name = "VKEY|FILE")]
    pub operator_vkeys: Vec<String>,
    /// Deadline rules and holiday calendar the recorded due times of hand-offs are
    /// recomputed with (give the services' own; see docs/DEADLINES.md): a recorded due
    /// that does not recompute fails with `due_time_mismatch`, one counted with rules
    /// of another digest with `rules_digest_mismatch`.
    #[command(flatten)]
    pub clocks: casebus_runtime::clocks::ClockArgs,
}

/// Parses a quoted manifest digest: 64 hex digits, compared in lower case.
fn digest_arg(text: &str) -> Result<String, String> {
    let digest = text.trim();
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} is not a manifest digest (64 hex digits, as `casebus verify --bundle` prints it)"
        ))
    }
}

/// `casebus replay` arguments.
#[derive(Debug, Args)]
#[command(
    group = clap::ArgGroup::new("target").required(true).args(["to_seq", "to_time"])
)]
pub struct ReplayArgs {
    /// The durable consumer on CASES.
    #[arg(long)]
    pub consumer: String,
    /// Deliver again from this stream sequence.
    #[arg(long, value_parser = sequence_arg)]
    pub to_seq: Option<u64>,
    /// Deliver again from the first message stored at or after this time.
    #[arg(long, value_parser = instant_arg)]
    pub to_time: Option<OffsetDateTime>,
    /// Carry out the plan.
    #[arg(long)]
    pub execute: bool,
    /// Go ahead although the consumer is pulling or messages would be skipped.
    #[arg(long)]
    pub force: bool,
}

/// `casebus rebuild` arguments.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The new projection file; must not exist.
    #[arg(long)]
    pub db: PathBuf,
    /// Record this durable consumer name in the projection (the gateway's consumer).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Stop after this stream sequence (default: the last message at the start).
    #[arg(long, value_parser = sequence_arg)]
    pub to_seq: Option<u64>,
}

/// `casebus dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters with consumer, reason code, original sequence and subject.
    ///
    /// Example:
    ///   casebus dlq list
    ///   casebus --json dlq list --consumer svc-customs-ningbo
    #[command(verbatim_doc_comment)]
    List {
        /// Only dead letters of this consumer.
        #[arg(long)]
        consumer: Option<String>,
    },
    /// One dead letter in full: headers, reason, and the original message decoded.
    ///
    /// Example:
    ///   casebus --registry offices.toml dlq show 17
    #[command(verbatim_doc_comment)]
    Show {
        /// Sequence of the dead letter in CASES_DLQ.
        #[arg(value_parser = sequence_arg)]
        seq: u64,
    },
    /// Have a dead letter processed again after the cause was fixed (plan first).
    ///
    /// The original message is still in CASES (CASES is immutable), so what retry does
    /// depends on where the message now stands in its case's chain, judged with
    /// --registry (use the registry the consumer now runs with):
    ///
    /// - it now verifies in its place (a key that was missing from the consumer's
    ///   registry, a handler bug): a copy published again would repeat a version the
    ///   chain already holds, and every consumer would dead-letter the copy as a
    ///   reorder. Instead the consumer that dead-lettered it is reset to the original
    ///   sequence (as `casebus replay`), so it receives the message again in place,
    ///   and everything after it (handlers are idempotent on the event id);
    /// - it verifies and continues the case at its end (it arrived before the event it
    ///   links to): it is published again on its original subject, conditional on the
    ///   case's last sequence; it gets a new sequence, every consumer verifies it again
    ///   and it becomes the case's next event, while the original stays in CASES as a
    ///   reported anomaly;
    /// - it still fails verification: nothing to retry; fix the cause or drop it.
    ///
    /// Nothing changes without --execute. An executed retry writes an audit record
    /// (AUDIT, audit.operator). The dead letter stays in the DLQ; drop it once the
    /// consumer has processed the message.
    ///
    /// Example:
    ///   casebus --registry offices.toml dlq retry 17
    ///   casebus --registry offices.toml dlq retry 17 --execute
    #[command(verbatim_doc_comment)]
    Retry {
        /// Sequence of the dead letter in CASES_DLQ.
        #[arg(value_parser = sequence_arg)]
        seq: u64,
        /// Carry out the plan.
        #[arg(long)]
        execute: bool,
        /// Reset the consumer although a client is pulling from it.
        #[arg(long)]
        force: bool,
        /// Who is retrying it, for the audit record (default: $USER).
        #[arg(long, env = "CASEBUS_ACTOR")]
        actor: Option<String>,
    },
    /// Delete a dead letter, after writing an audit record (AUDIT, audit.operator).
    ///
    /// Requires --execute; without it nothing changes and the exit code is 2. The
    /// original message stays in CASES: only the dead letter goes.
    ///
    /// Example:
    ///   casebus dlq drop 17 --execute --actor ops-zhang
    #[command(verbatim_doc_comment)]
    Drop {
        /// Sequence of the dead letter in CASES_DLQ.
        #[arg(value_parser = sequence_arg)]
        seq: u64,
        /// Really delete it.
        #[arg(long)]
        execute: bool,
        /// Who is dropping it, for the audit record (default: $USER).
        #[arg(long, env = "CASEBUS_ACTOR")]
        actor: Option<String>,
    },
}

/// `casebus export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The case to export.
    #[arg(long, value_parser = case_id_arg)]
    pub case: CaseId,
    /// The bundle file to write; must not exist.
    #[arg(long)]
    pub out: PathBuf,
    /// The gateway whose proof RPCs give the checkpoint and proofs (`http://` or
    /// `https://`); with it the bundle is a casebus.bundle.v2 with proofs, without it a
    /// casebus.bundle.v1 without.
    #[arg(long, requires_all = ["gateway_token_file", "operator_key"])]
    pub gateway: Option<String>,
    /// A file holding the bearer token for the gateway (audience gateway, reader role).
    #[arg(long = "gateway-token-file", requires = "gateway")]
    pub gateway_token_file: Option<PathBuf>,
    /// The CA of an https gateway's certificate.
    #[arg(long = "gateway-tls-ca", requires = "gateway")]
    pub gateway_tls_ca: Option<PathBuf>,
    /// The exporting operator's key (`casebus keys generate --kind operator`, mode
    /// 0600): it signs the bundle's manifest; give its `.vkey` to whoever verifies.
    #[arg(long = "operator-key", requires = "gateway")]
    pub operator_key: Option<PathBuf>,
    /// A checkpoint the court already holds (signed-note text): the bundle then also
    /// carries the consistency proof between its size and the bundle's.
    #[arg(long = "known-checkpoint", requires = "gateway")]
    pub known_checkpoint: Option<PathBuf>,
    /// Refuse (writing nothing) while the gateway's latest checkpoint carries fewer
    /// witness cosignatures than this: set it to the quorum of the policy the bundle
    /// will be verified with, and export again once the witnesses cosigned.
    #[arg(long = "min-cosignatures", requires = "gateway", default_value_t = 0)]
    pub min_cosignatures: usize,
    /// Keys to open sealed events with: each event opened is written beside its signed
    /// bytes (`sealed.opened`), which stay as stored.
    #[command(flatten)]
    pub decryption: DecryptionArgs,
}

/// `casebus audit` arguments.
#[derive(Debug, Args)]
#[command(
    group = clap::ArgGroup::new("target").required(true).args(["case", "office", "operator"])
)]
pub struct AuditArgs {
    /// Records about this case.
    #[arg(long, value_parser = case_id_arg)]
    pub case: Option<CaseId>,
    /// Records of reads by this office.
    #[arg(long, value_parser = office_id_arg)]
    pub office: Option<OfficeId>,
    /// Records of operator actions.
    #[arg(long)]
    pub operator: bool,
    /// Only records at or after this time.
    #[arg(long, value_parser = instant_arg)]
    pub since: Option<OffsetDateTime>,
}

/// The kind of an office key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyKind {
    /// Ed25519: the office signs its events with it.
    Signing,
    /// X25519: content sealed for the office is wrapped for it.
    Encryption,
}

/// What `casebus keys generate` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenerateKind {
    /// An office's Ed25519 signing key.
    Signing,
    /// An office's X25519 encryption key.
    Encryption,
    /// The transparency log's checkpoint key (Ed25519 note key, not an office key).
    Log,
    /// A witness's cosigning key (Ed25519, C2SP cosignature/v1).
    Witness,
    /// An operator's key that seals exported bundles (Ed25519 note key, type 0x01).
    Operator,
}

/// `casebus keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate an office key: a secret key file (mode 0600) and, beside it,
    /// `<out>.pub` with the public key to register. A signing key by default; an
    /// encryption key (what is sealed for the office) with --kind encryption.
    ///
    /// With --kind log or --kind witness, a transparency-log key instead (no office):
    /// the key a gateway signs checkpoints with (--log-key), or a witness's cosigning
    /// key; --kind operator makes the key an operator seals exported bundles with
    /// (`casebus export --operator-key`), of the log key's form; the secret file holds `PRIVATE+KEY+<name>+<id>+<key>` (mode 0600) and
    /// `<out>.vkey` the C2SP verifier key `<name>+<id>+<key>` to hand to verifiers.
    ///
    /// Example:
    ///   casebus keys generate --office customs:ningbo --label 2026 --out customs-ningbo-2026.key
    ///   casebus keys generate --kind encryption --office customs:ningbo --label enc-2026 \
    ///     --out customs-ningbo-enc-2026.key
    ///   casebus keys generate --kind log --name casebus.example/cases --out log.key
    #[command(verbatim_doc_comment)]
    Generate {
        /// Which key: signing (Ed25519) or encryption (X25519) for an office; log or
        /// witness for the transparency log; operator to seal exported bundles.
        #[arg(long, value_enum, default_value_t = GenerateKind::Signing)]
        kind: GenerateKind,
        /// The office the key signs for (signing and encryption keys).
        #[arg(long, value_parser = office_id_arg, required_if_eq_any([("kind", "signing"), ("kind", "encryption")]))]
        office: Option<OfficeId>,
        /// Key label; the key id is `<office>#<label>` (signing and encryption keys).
        #[arg(long, required_if_eq_any([("kind", "signing"), ("kind", "encryption")]))]
        label: Option<String>,
        /// The key's name (log and witness keys), e.g. the log's origin
        /// `casebus.example/cases` or `witness.example/court`: no spaces, no `+`.
        #[arg(long, required_if_eq_any([("kind", "log"), ("kind", "witness"), ("kind", "operator")]))]
        name: Option<String>,
        /// Secret key file to write; must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add an office's public key to the registry file given with --registry (created
    /// when missing; the office is added when new).
    ///
    /// Roll a key out by registering it everywhere first and signing with it afterwards:
    /// a consumer whose registry lacks the key dead-letters the events signed with it.
    ///
    /// Example:
    ///   casebus keys register --registry offices.toml --office customs:ningbo \
    ///     --public-key-from customs-ningbo-2026.key.pub --name "Ningbo Customs"
    #[command(verbatim_doc_comment)]
    Register {
        /// The office.
        #[arg(long, value_parser = office_id_arg)]
        office: OfficeId,
        /// A public key file written by `keys generate` (`.pub`), or the secret key
        /// file itself.
        #[arg(long)]
        public_key_from: PathBuf,
        /// First instant the key may sign at (default: now).
        #[arg(long, value_parser = instant_arg)]
        valid_from: Option<OffsetDateTime>,
        /// Human name of the office, when it is new to the registry.
        #[arg(long)]
        name: Option<String>,
    },
    /// Rotate an office's keys of one kind: generate a new key, add it to the registry,
    /// and retire the office's current keys of that kind at a given time (events they
    /// signed before stay valid; content sealed for an old encryption key stays
    /// readable with its secret key file).
    ///
    /// Example:
    ///   casebus keys rotate --registry offices.toml --office customs:ningbo \
    ///     --label 2027 --out customs-ningbo-2027.key --retire-at 2027-01-01T00:00:00Z
    #[command(verbatim_doc_comment)]
    Rotate {
        /// Which keys: signing (Ed25519) or encryption (X25519).
        #[arg(long, value_enum, default_value_t = KeyKind::Signing)]
        kind: KeyKind,
        /// The office.
        #[arg(long, value_parser = office_id_arg)]
        office: OfficeId,
        /// Label of the new key.
        #[arg(long)]
        label: String,
        /// Secret key file for the new key; must not exist.
        #[arg(long)]
        out: PathBuf,
        /// First instant the new key may sign at (default: now).
        #[arg(long, value_parser = instant_arg)]
        valid_from: Option<OffsetDateTime>,
        /// When the old keys stop being valid (default: 24 hours after the new key's
        /// start, time to roll the registry out everywhere).
        #[arg(long, value_parser = instant_arg)]
        retire_at: Option<OffsetDateTime>,
    },
    /// Every office of the registry with its keys and their validity.
    ///
    /// Example:
    ///   casebus --registry offices.toml keys list
    #[command(verbatim_doc_comment)]
    List,
}

fn audience_arg(value: &str) -> Result<casebus_integrity::token::Audience, String> {
    casebus_integrity::token::Audience::parse(value.trim())
        .ok_or_else(|| format!("{value:?} is not an audience; use agency, gateway or monitor"))
}

fn ttl_arg(value: &str) -> Result<time::Duration, String> {
    casebus_integrity::token::parse_ttl(value)
}

fn office_pattern_arg(value: &str) -> Result<casebus_integrity::token::OfficePattern, String> {
    casebus_integrity::token::OfficePattern::parse(value.trim()).map_err(|e| e.to_string())
}

fn roles_arg(value: &str) -> Result<casebus_integrity::token::Role, String> {
    casebus_integrity::token::Role::parse(value.trim())
        .ok_or_else(|| format!("{value:?} is not a role; use clerk, reader, admin or operator"))
}

/// `casebus token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a bearer token for an office's caller, signed with an issuer key, for one
    /// kind of service (its audience): agency services, the gateway or the monitor.
    ///
    /// Prints the token; with --json also its claims. Services refuse a token for
    /// another audience, and one beyond its issuer's limits in their trust file.
    ///
    /// Example:
    ///   casebus token issue --issuer-key issuer.key --audience agency \
    ///     --office customs:ningbo --actor clerk-wang --roles clerk,reader --ttl 8h
    #[command(verbatim_doc_comment)]
    Issue {
        /// The issuer's secret key file (from `casebus issuer generate`).
        #[arg(long)]
        issuer_key: PathBuf,
        /// The kind of service the token is for: agency, gateway or monitor.
        #[arg(long, value_parser = audience_arg)]
        audience: casebus_integrity::token::Audience,
        /// The office the caller acts for.
        #[arg(long, value_parser = office_id_arg)]
        office: OfficeId,
        /// The person or system.
        #[arg(long)]
        actor: String,
        /// Roles: clerk, reader, admin, operator (comma-separated).
        #[arg(long, value_delimiter = ',', required = true, value_parser = roles_arg)]
        roles: Vec<casebus_integrity::token::Role>,
        /// How long the token is valid (at most 366 days; the trust file may cap it lower).
        #[arg(long, value_parser = ttl_arg, default_value = "8h")]
        ttl: time::Duration,
    },
}

/// `casebus issuer ...`
#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Generate a token issuer key (mode 0600) and add its public key to a trust file
    /// (created when missing), which services load with --trusted-issuers.
    ///
    /// Example:
    ///   casebus issuer generate --key-id ops-2026 --out issuer.key --trust-file trusted-issuers.toml
    #[command(verbatim_doc_comment)]
    Generate {
        /// Issuer key id (1-64 chars of [A-Za-z0-9_:#.-]).
        #[arg(long)]
        key_id: String,
        /// Secret key file to write; must not exist.
        #[arg(long)]
        out: PathBuf,
        /// Trust file to add the public key to.
        #[arg(long)]
        trust_file: Option<PathBuf>,
        /// With --trust-file (required there): the offices the issuer may sign for,
        /// comma-separated patterns (`*`, `<agency>:*` or an office id).
        #[arg(long, value_delimiter = ',', value_parser = office_pattern_arg)]
        offices: Vec<casebus_integrity::token::OfficePattern>,
        /// With --trust-file: the roles the issuer may grant (default all).
        #[arg(long = "allow-roles", value_delimiter = ',', value_parser = roles_arg)]
        allow_roles: Vec<casebus_integrity::token::Role>,
        /// With --trust-file: the audiences the issuer may sign for (default all).
        #[arg(long, value_delimiter = ',', value_parser = audience_arg)]
        audiences: Vec<casebus_integrity::token::Audience>,
        /// With --trust-file: the longest lifetime of the issuer's tokens.
        #[arg(long, value_parser = ttl_arg, default_value = "30days")]
        max_ttl: time::Duration,
    },
}

/// `casebus streams ...`
#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// Streams (messages, bytes, first/last sequence) and their consumers (pending, ack
    /// pending, redelivered, waiting pulls), in tables.
    ///
    /// Exit code 1 when a casebus stream is missing.
    ///
    /// Example:
    ///   casebus streams status
    #[command(verbatim_doc_comment)]
    Status,
    /// Create the CASES, CASES_DLQ, AUDIT and CHECKPOINTS streams, or check and update them. Safe to
    /// run again; a setting that cannot change in place is reported, never forced.
    ///
    /// Example:
    ///   casebus streams provision --replicas 3 --duplicate-window 2m
    #[command(verbatim_doc_comment)]
    Provision {
        /// Replicas of every stream: 1 or 3.
        #[arg(long, default_value_t = 1, value_parser = replicas_arg)]
        replicas: usize,
        /// How long JetStream remembers message ids to drop duplicate publishes.
        #[arg(long, value_parser = duration_arg, default_value = "2m")]
        duplicate_window: Duration,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sequences_start_at_one() {
        assert_eq!(sequence_arg("3"), Ok(3));
        assert!(sequence_arg("0").is_err());
        assert!(sequence_arg("-1").is_err());
    }
}
