//! `casebus export --case <id> --out <file>`: the case's stored messages, verified the
//! way the services load them, written as an evidence bundle (see `bundle`). Refuses to
//! overwrite; a half-written file is removed.

use std::io::Write as _;
use std::path::Path;

use serde_json::json;
use time::OffsetDateTime;

use casebus_bus::ops::ScanStart;
use casebus_bus::subjects::{CASES_STREAM, case_subject};

use crate::bundle::{self, ExportMessage};
use crate::cli::ExportArgs;
use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::verifier::{Checked, Rule, StreamVerifier};

/// Messages fetched per request.
const SCAN_BATCH: usize = 512;

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
    let bundle = bundle::build(
        &args.case,
        &messages,
        last_sequence,
        &registry,
        OffsetDateTime::now_utc(),
    );
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
