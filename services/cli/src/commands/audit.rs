//! `casebus audit --case <id> | --office <id> | --operator`: the records of the `AUDIT`
//! stream (one per timeline read at a gateway, on `audit.<office>`; operator actions on
//! `audit.operator`), filtered and printed. A record that does not parse is shown as
//! such, never dropped.

use serde_json::json;

use casebus_bus::ops::{AuditRecord, OPERATOR_AUDIT_OFFICE, OpsError, ScanStart};
use casebus_bus::subjects::{AUDIT_STREAM, audit_subject};

use crate::cli::AuditArgs;
use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::output::{shorten, table};
use crate::times::{rfc3339, short};

/// Messages fetched per request.
const SCAN_BATCH: usize = 512;
/// How far before `--since` reading starts (the record's `at` is the writer's clock).
const CLOCK_MARGIN: time::Duration = time::Duration::minutes(5);

fn versions_text(versions: &[u64]) -> String {
    match versions {
        [] => "-".to_owned(),
        [one] => one.to_string(),
        // Contiguous runs read better as a range.
        [first, .., last] if *last - *first + 1 == versions.len() as u64 => {
            format!("{first}..{last} ({})", versions.len())
        }
        many => shorten(
            &many
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            40,
        ),
    }
}

/// `casebus audit`.
pub async fn run(ctx: &Ctx, args: &AuditArgs) -> Result<Outcome, CliError> {
    let subject = match (&args.office, args.operator) {
        (Some(office), _) => Some(audit_subject(office.as_str())),
        (None, true) => Some(audit_subject(OPERATOR_AUDIT_OFFICE)),
        (None, false) => None,
    };
    let ops = ctx.ops().await?;
    let start = args.since.map_or(ScanStart::Sequence(1), |t| {
        ScanStart::Time(t - CLOCK_MARGIN)
    });
    let mut scanner = match ops
        .scan(AUDIT_STREAM, subject.as_deref(), start, SCAN_BATCH)
        .await
    {
        Ok(scanner) => scanner,
        Err(OpsError::StreamMissing { .. }) => {
            return Err(CliError::runtime(format!(
                "stream {AUDIT_STREAM} not found; provision the streams first (casebus streams provision)"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut rows = Vec::new();
    let read = async {
        loop {
            let batch = scanner.fetch().await?;
            if batch.is_empty() {
                return Ok::<(), CliError>(());
            }
            for message in batch {
                let record = AuditRecord::from_json(&message.payload);
                let keep = match &record {
                    Ok(r) => {
                        args.case.as_ref().is_none_or(|c| r.case_id == c.as_str())
                            && args.since.is_none_or(|since| r.at >= since)
                    }
                    // A malformed record of the selected subject is shown; one found
                    // while searching for a case cannot be attributed and is shown too.
                    Err(_) => true,
                };
                if keep {
                    rows.push((message, record));
                }
            }
        }
    }
    .await;
    scanner.close().await;
    read?;

    if ctx.out.is_json() {
        for (message, record) in &rows {
            let value = match record {
                Ok(r) => json!({
                    "sequence": message.sequence,
                    "subject": message.subject,
                    "office": r.office,
                    "actor": r.actor,
                    "case_id": r.case_id,
                    "versions": r.versions,
                    "at": rfc3339(r.at),
                    "method": r.method,
                    "detail": r.detail,
                }),
                Err(reason) => json!({
                    "sequence": message.sequence,
                    "subject": message.subject,
                    "invalid": reason,
                }),
            };
            ctx.out.json_line(&value)?;
        }
        return Ok(Outcome::Ok);
    }
    if rows.is_empty() {
        ctx.out.line("no audit records match")?;
        return Ok(Outcome::Ok);
    }
    let mut t = table(&[
        "seq", "at", "office", "actor", "case", "versions", "method", "detail",
    ]);
    for (message, record) in &rows {
        match record {
            Ok(r) => t.add_row([
                message.sequence.to_string(),
                short(r.at),
                r.office.clone(),
                r.actor.clone(),
                r.case_id.clone(),
                versions_text(&r.versions),
                r.method.clone(),
                shorten(r.detail.as_deref().unwrap_or(""), 60),
            ]),
            Err(reason) => t.add_row([
                message.sequence.to_string(),
                short(message.stored_at),
                message.subject.clone(),
                String::new(),
                String::new(),
                String::new(),
                "INVALID".to_owned(),
                shorten(reason, 60),
            ]),
        };
    }
    ctx.out.table(&t)?;
    ctx.out.note(format!("{} record(s)", rows.len()));
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_render_as_ranges_when_contiguous() {
        assert_eq!(versions_text(&[]), "-");
        assert_eq!(versions_text(&[4]), "4");
        assert_eq!(versions_text(&[1, 2, 3]), "1..3 (3)");
        assert_eq!(versions_text(&[1, 5]), "1,5");
    }
}
