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

/// Messages fetched, and events applied in one transaction, at a time.
const BATCH: usize = 1024;

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
    // SQLite is synchronous; keep the runtime's other work (the NATS connection) going.
    tokio::task::block_in_place(|| {
        projection.apply_batch(&inputs).map_err(project_error)?;
        projection.advance_position(last).map_err(project_error)?;
        Ok(())
    })
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
            'read: loop {
                let batch = scanner.fetch().await?;
                if batch.is_empty() {
                    break;
                }
                let mut events = Vec::with_capacity(batch.len());
                let mut last = 0;
                let mut done = false;
                for message in &batch {
                    if message.sequence > end {
                        done = true;
                        break;
                    }
                    last = message.sequence;
                    read += 1;
                    match verifier.check(message.sequence, &message.subject, &message.payload) {
                        Checked::Valid(event) => events.push((message.sequence, *event)),
                        Checked::Failed(f) => left_out.push((f.sequence, f.problem.code)),
                    }
                    if message.sequence == end {
                        done = true;
                        break;
                    }
                }
                if last > 0 {
                    apply(&mut projection, &events, last)?;
                    bar.set_position(last - status.first_sequence + 1);
                }
                if done {
                    break 'read;
                }
            }
            Ok::<(), CliError>(())
        }
        .await;
        scanner.close().await;
        bar.finish_and_clear();
        result?;
    }
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
