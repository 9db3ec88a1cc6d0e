//! `casebus rebuild --db <path>`: build a gateway projection offline from `CASES` into a
//! new SQLite file. Every message is verified the way the gateway's consumer verifies it
//! (a failing message is left out, as the consumer dead-letters it, and the next valid
//! event links to the last valid one), then applied in batches with
//! `casebus_timeline::Projection::apply_batch`; the position covers the left-out
//! messages too. The result equals what a gateway that consumed the stream holds
//! (`Projection::dump_for_comparison` is the same), so an operator can rebuild beside
//! the live file and swap them while the gateway is stopped.
//!
//! The file must not exist; a rebuild that fails removes what it wrote, so a half-built
//! projection is never left to be swapped in.
//!
//! How it goes fast (docs/PERFORMANCE.md has the figures): the signatures of each
//! fetched batch are checked on every core, each with `verify_strict` on its own; one
//! writer thread commits what was verified while it wrote the previous transaction (up
//! to 8,192 events at once).

use std::path::{Path, PathBuf};

use serde_json::json;
use time::OffsetDateTime;

use casebus_bus::ops::ScanStart;
use casebus_bus::subjects::CASES_STREAM;
use casebus_integrity::VerifiedEvent;
use casebus_timeline::{ProjectedInput, Projection, ProjectionCounts};

use crate::cli::RebuildArgs;
use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::output::table;
use crate::verifier::{Checked, Rule, StreamVerifier};

/// Messages fetched at a time.
const BATCH: usize = 1024;

/// The most events written in one transaction.
const MAX_TRANSACTION: usize = 8192;

/// Removes a projection file and its SQLite side files unless disarmed.
struct Cleanup {
    path: PathBuf,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut name = self.path.as_os_str().to_owned();
                name.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(name));
            }
        }
    }
}

/// Claims `path` for a new projection: creates it empty, refusing an existing file.
fn claim(path: &Path) -> Result<Cleanup, CliError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(Cleanup {
            path: path.to_owned(),
            armed: true,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(CliError::usage(format!(
            "--db {} exists already; rebuild writes a new file (remove or rename the old one, or choose another path)",
            path.display()
        ))),
        Err(e) => Err(CliError::caused(
            format!("cannot create {}", path.display()),
            e,
        )),
    }
}

fn project_error(e: casebus_timeline::ProjectError) -> CliError {
    CliError::caused("projecting failed", e)
}

/// Applies one batch of verified events and accounts for every message up to `last`.
fn apply(
    projection: &mut Projection,
    events: &[(u64, VerifiedEvent)],
    last: u64,
) -> Result<(), CliError> {
    let inputs: Vec<ProjectedInput<'_>> = events
        .iter()
        .map(|(sequence, event)| ProjectedInput::new(*sequence, event))
        .collect();
    projection.apply_batch(&inputs).map_err(project_error)?;
    projection.advance_position(last).map_err(project_error)?;
    Ok(())
}

/// The projection, either free or writing a batch on the blocking pool while the next
/// batch is read and verified.
enum Writer {
    /// Free, holding the projection.
    Idle(Box<Projection>),
    /// Writing the batch up to the sequence given.
    Busy(
        tokio::task::JoinHandle<(Box<Projection>, Result<(), CliError>)>,
        u64,
    ),
    /// Lost with a failed or panicked write.
    Gone,
}

impl Writer {
    /// Whether a batch may be handed over without waiting.
    fn is_free(&self) -> bool {
        match self {
            Self::Busy(task, _) => task.is_finished(),
            Self::Idle(_) | Self::Gone => true,
        }
    }

    /// Waits for the batch being written, if any; returns the last sequence written (0
    /// when none was being written).
    async fn wait(&mut self) -> Result<u64, CliError> {
        let Self::Busy(..) = self else {
            return Ok(0);
        };
        let Self::Busy(task, last) = std::mem::replace(self, Self::Gone) else {
            unreachable!("matched just above");
        };
        let (projection, result) = task
            .await
            .map_err(|e| CliError::caused("the projection writer stopped", e))?;
        *self = Self::Idle(projection);
        result.map(|()| last)
    }

    /// Starts writing `events` and accounting for every message up to `last`; the
    /// writer must be idle (after [`Writer::wait`]).
    fn start(&mut self, events: Vec<(u64, VerifiedEvent)>, last: u64) -> Result<(), CliError> {
        let Self::Idle(mut projection) = std::mem::replace(self, Self::Gone) else {
            return Err(CliError::runtime("the projection writer is not free"));
        };
        *self = Self::Busy(
            tokio::task::spawn_blocking(move || {
                let result = apply(&mut projection, &events, last);
                (projection, result)
            }),
            last,
        );
        Ok(())
    }

    /// The projection, when free.
    fn into_projection(self) -> Result<Projection, CliError> {
        match self {
            Self::Idle(projection) => Ok(*projection),
            Self::Busy(..) | Self::Gone => Err(CliError::runtime("the projection writer is busy")),
        }
    }
}

fn counts_json(c: &ProjectionCounts) -> serde_json::Value {
    json!({
        "position": c.position,
        "events": c.events,
        "cases": c.cases,
        "tracks": c.tracks,
        "parties": c.parties,
        "references": c.references,
        "handoffs": c.handoffs,
        "handoffs_open": c.handoffs_open,
        "handoffs_overdue": c.handoffs_overdue,
    })
}

/// `casebus rebuild`.
pub async fn run(ctx: &Ctx, args: &RebuildArgs) -> Result<Outcome, CliError> {
    let registry = ctx.registry("to verify events as the gateway does")?;
    if args.db.exists() {
        return Err(CliError::usage(format!(
            "--db {} exists already; rebuild writes a new file (remove or rename the old one, or choose another path)",
            args.db.display()
        )));
    }
    let ops = ctx.ops().await?;
    let status = ops.stream_status(CASES_STREAM).await?.ok_or_else(|| {
        CliError::runtime(format!(
            "stream {CASES_STREAM} not found; provision the streams first (casebus streams provision)"
        ))
    })?;
    let end = args
        .to_seq
        .map_or(status.last_sequence, |to| to.min(status.last_sequence));

    let mut cleanup = claim(&args.db)?;
    let mut projection = Projection::open(&args.db).map_err(project_error)?;
    if let Some(consumer) = &args.consumer {
        projection.set_consumer(consumer).map_err(project_error)?;
    }
    let total = if end >= status.first_sequence && status.messages > 0 {
        end - status.first_sequence + 1
    } else {
        0
    };
    let bar = ctx.out.progress(total, "messages");
    let mut verifier = StreamVerifier::new(&registry, Rule::Consumer);
    let mut left_out: Vec<(u64, String)> = Vec::new();
    let mut read: u64 = 0;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut writer = Writer::Idle(Box::new(projection));
    if total > 0 {
        let mut scanner = ops
            .scan(
                CASES_STREAM,
                None,
                ScanStart::Sequence(status.first_sequence),
                BATCH,
            )
            .await?;
        let result = async {
            // Verified events not yet handed to the writer, and the last sequence they
            // account for (failed messages included).
            let mut events: Vec<(u64, VerifiedEvent)> = Vec::new();
            let mut last = 0;
            // The last sequence handed to the writer.
            let mut handed = 0;
            'read: loop {
                let batch = scanner.fetch().await?;
                if batch.is_empty() {
                    break;
                }
                let mut done = false;
                let take = batch
                    .iter()
                    .position(|m| m.sequence >= end)
                    .map_or(batch.len(), |i| {
                        done = true;
                        i + usize::from(batch[i].sequence == end)
                    });
                let batch = &batch[..take];
                // Signatures on every core; SQLite meanwhile writes the batch before.
                let checked = tokio::task::block_in_place(|| verifier.check_all(batch, threads));
                for (message, checked) in batch.iter().zip(checked) {
                    read += 1;
                    last = message.sequence;
                    match checked {
                        Checked::Valid(event) => events.push((message.sequence, *event)),
                        Checked::Failed(f) => left_out.push((f.sequence, f.problem.code)),
                    }
                }
                // A batch is what was verified while the one before was written, up to
                // MAX_TRANSACTION events: the fewer commits, the fewer times the same
                // index pages are written.
                if last > handed && (writer.is_free() || events.len() >= MAX_TRANSACTION || done) {
                    let written = writer.wait().await?;
                    if written > 0 {
                        bar.set_position(written - status.first_sequence + 1);
                    }
                    writer.start(std::mem::take(&mut events), last)?;
                    handed = last;
                }
                if done {
                    break 'read;
                }
            }
            if last > handed {
                writer.wait().await?;
                writer.start(std::mem::take(&mut events), last)?;
            }
            writer.wait().await?;
            Ok::<(), CliError>(())
        }
        .await;
        scanner.close().await;
        // A batch may still be being written when reading failed: let it end before
        // the file is removed.
        if result.is_err() {
            let _ = writer.wait().await;
        }
        bar.finish_and_clear();
        result?;
    }
    let projection = writer.into_projection()?;
    let counts = tokio::task::block_in_place(|| projection.counts(OffsetDateTime::now_utc()))
        .map_err(|e| CliError::caused("counting the projection failed", e))?;
    drop(projection);
    cleanup.armed = false;

    for (sequence, code) in &left_out {
        ctx.out.warn(format!(
            "{CASES_STREAM} sequence {sequence} failed verification ({code}) and was left out, as the gateway's consumer dead-letters it"
        ));
    }
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "db": args.db.display().to_string(),
            "messages": read,
            "left_out": left_out.iter().map(|(s, c)| json!({ "sequence": s, "code": c })).collect::<Vec<_>>(),
            "counts": counts_json(&counts),
        }))?;
    } else {
        ctx.out.line(format!(
            "rebuilt {} from {read} message(s) of {CASES_STREAM} up to sequence {} ({} left out)",
            args.db.display(),
            counts.position,
            left_out.len()
        ))?;
        let mut t = table(&["", "count"]);
        for (name, value) in [
            ("events", counts.events),
            ("cases", counts.cases),
            ("tracks", counts.tracks),
            ("parties", counts.parties),
            ("references", counts.references),
            ("hand-offs", counts.handoffs),
            ("hand-offs open", counts.handoffs_open),
            ("hand-offs overdue", counts.handoffs_overdue),
        ] {
            t.add_row([name.to_owned(), value.to_string()]);
        }
        ctx.out.table(&t)?;
    }
    Ok(Outcome::Ok)
}
