//! `casebus events list|tail`: read `CASES` in order, decode every message, verify its
//! signature when a registry is given, filter, and print text lines or JSON lines.

use std::collections::VecDeque;
use std::time::Duration;

use casebus_bus::ops::{Ops, ScanStart, Scanner, StoredMessage};
use casebus_bus::subjects::{CASES_STREAM, case_subject};
use casebus_integrity::OfficeRegistry;
use casebus_integrity::seal::Opener;
use casebus_proto::agency_name;

use crate::cli::{EventFilter, TailArgs};
use crate::context::Ctx;
use crate::decode::{Decoded, load_opener};
use crate::error::{CliError, Outcome};

/// Messages fetched per request while reading.
const SCAN_BATCH: usize = 512;
/// How far before `--since` reading starts: `recorded_at` is set by the recording
/// service, the stream time by the server, and their clocks may differ a little.
const CLOCK_MARGIN: time::Duration = time::Duration::minutes(5);
/// How long one wait for new events lasts in `--follow` before asking again.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

/// Whether a decoded message passes the filters (the case is filtered by subject).
fn matches(decoded: &Decoded, filter: &EventFilter) -> bool {
    let at = decoded
        .event
        .as_ref()
        .and_then(|e| e.recorded_at)
        .or(decoded.stored_at);
    if let (Some(since), Some(at)) = (filter.since, at)
        && at < since
    {
        return false;
    }
    if let (Some(until), Some(at)) = (filter.until, at)
        && at >= until
    {
        return false;
    }
    let Some(event) = &decoded.event else {
        // Nothing in an undecodable message can rule it out: show it.
        return true;
    };
    if let Some(agency) = filter.agency
        && event.agency != agency_name(agency)
    {
        return false;
    }
    if let Some(office) = &filter.office
        && event.office != office.as_str()
    {
        return false;
    }
    filter.types.is_empty() || filter.types.contains(&event.type_name)
}

struct Printer<'a> {
    ctx: &'a Ctx,
    registry: Option<&'a OfficeRegistry>,
    opener: Option<&'a Opener>,
    shown: u64,
}

impl Printer<'_> {
    fn decode(&self, message: &StoredMessage) -> Decoded {
        Decoded::new(
            message.sequence,
            &message.subject,
            Some(message.stored_at),
            &message.payload,
            self.registry,
        )
        .opened_with(self.opener, &[])
    }

    fn print(&mut self, decoded: &Decoded) -> Result<(), CliError> {
        self.shown += 1;
        if self.ctx.out.is_json() {
            self.ctx.out.json_line(&decoded.to_json())
        } else {
            self.ctx.out.line(decoded.to_line())
        }
    }

    fn show(&mut self, message: &StoredMessage, filter: &EventFilter) -> Result<(), CliError> {
        let decoded = self.decode(message);
        if matches(&decoded, filter) {
            self.print(&decoded)?;
        }
        Ok(())
    }
}

async fn setup(ctx: &Ctx) -> Result<(Ops, Option<std::sync::Arc<OfficeRegistry>>, u64), CliError> {
    let registry = ctx.optional_registry()?;
    if registry.is_none() {
        ctx.out
            .note("no --registry given: signatures are not verified (events show as unverified)");
    }
    let ops = ctx.ops().await?;
    let status = ops
        .stream_status(CASES_STREAM)
        .await?
        .ok_or_else(|| {
            CliError::runtime(format!(
                "stream {CASES_STREAM} not found; provision the streams first (casebus streams provision)"
            ))
        })?;
    Ok((ops, registry, status.last_sequence))
}

fn subject_filter(filter: &EventFilter) -> Option<String> {
    filter.case.as_ref().map(case_subject)
}

fn check_range(filter: &EventFilter) -> Result<(), CliError> {
    if let (Some(from), Some(to)) = (filter.from_seq, filter.to_seq)
        && from > to
    {
        return Err(CliError::usage(format!(
            "--from-seq {from} is after --to-seq {to}"
        )));
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        return Err(CliError::usage("--since must be before --until"));
    }
    Ok(())
}

fn start_of(filter: &EventFilter) -> ScanStart {
    match (filter.from_seq, filter.since) {
        (Some(from), _) => ScanStart::Sequence(from),
        (None, Some(since)) => ScanStart::Time(since - CLOCK_MARGIN),
        (None, None) => ScanStart::Sequence(1),
    }
}

/// Reads the scanner up to sequence `end`, handing each message to `each`.
async fn read_until(
    scanner: &mut Scanner,
    end: u64,
    mut each: impl FnMut(&StoredMessage) -> Result<(), CliError>,
) -> Result<(), CliError> {
    loop {
        let batch = scanner.fetch().await?;
        if batch.is_empty() {
            return Ok(());
        }
        for message in &batch {
            if message.sequence > end {
                return Ok(());
            }
            each(message)?;
            if message.sequence == end {
                return Ok(());
            }
        }
    }
}

/// `casebus events list`.
pub async fn list(ctx: &Ctx, filter: &EventFilter) -> Result<Outcome, CliError> {
    check_range(filter)?;
    let opener = load_opener(&filter.decryption)?;
    let (ops, registry, last) = setup(ctx).await?;
    let end = filter.to_seq.map_or(last, |to| to.min(last));
    let mut printer = Printer {
        ctx,
        registry: registry.as_deref(),
        opener: opener.as_ref(),
        shown: 0,
    };
    if end == 0 || filter.from_seq.is_some_and(|from| from > end) {
        ctx.out.note("no events");
        return Ok(Outcome::Ok);
    }
    let subject = subject_filter(filter);
    let mut scanner = ops
        .scan(
            CASES_STREAM,
            subject.as_deref(),
            start_of(filter),
            SCAN_BATCH,
        )
        .await?;
    let result = read_until(&mut scanner, end, |m| printer.show(m, filter)).await;
    scanner.close().await;
    result?;
    if printer.shown == 0 {
        ctx.out.note("no events match");
    }
    Ok(Outcome::Ok)
}

/// `casebus events tail`.
pub async fn tail(ctx: &Ctx, args: &TailArgs) -> Result<Outcome, CliError> {
    let filter = &args.filter;
    check_range(filter)?;
    if args.lines == 0 && !args.follow {
        return Err(CliError::usage("--lines 0 shows nothing without --follow"));
    }
    let opener = load_opener(&filter.decryption)?;
    let (ops, registry, last) = setup(ctx).await?;
    let end = filter.to_seq.map_or(last, |to| to.min(last));
    let mut printer = Printer {
        ctx,
        registry: registry.as_deref(),
        opener: opener.as_ref(),
        shown: 0,
    };
    let subject = subject_filter(filter);
    let explicit_start = filter.from_seq.is_some() || filter.since.is_some();
    let start = if explicit_start {
        start_of(filter)
    } else if subject.is_some() {
        // The last N of one case: read the case (cases are short) and keep the tail.
        ScanStart::Sequence(1)
    } else {
        ScanStart::Sequence(last.saturating_sub(args.lines.saturating_sub(1)).max(1))
    };
    let mut scanner = ops
        .scan(CASES_STREAM, subject.as_deref(), start, SCAN_BATCH)
        .await?;
    let result = async {
        if explicit_start {
            read_until(&mut scanner, end, |m| printer.show(m, filter)).await?;
        } else if end > 0 {
            let keep = usize::try_from(args.lines).unwrap_or(usize::MAX);
            let mut window: VecDeque<StoredMessage> = VecDeque::new();
            read_until(&mut scanner, end, |m| {
                if keep > 0 {
                    if window.len() == keep {
                        window.pop_front();
                    }
                    window.push_back(m.clone());
                }
                Ok(())
            })
            .await?;
            for message in &window {
                printer.show(message, filter)?;
            }
        }
        if args.follow && filter.to_seq.is_none() {
            follow(&mut scanner, &mut printer, filter).await?;
        }
        Ok::<(), CliError>(())
    }
    .await;
    scanner.close().await;
    result?;
    Ok(Outcome::Ok)
}

/// Prints new events as they arrive until Ctrl-C or SIGTERM.
async fn follow(
    scanner: &mut Scanner,
    printer: &mut Printer<'_>,
    filter: &EventFilter,
) -> Result<(), CliError> {
    printer.ctx.out.note("following; Ctrl-C to stop");
    let stop = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    tokio::pin!(stop);
    loop {
        let batch = tokio::select! {
            () = &mut stop => return Ok(()),
            batch = scanner.wait(FOLLOW_WAIT) => batch?,
        };
        for message in &batch {
            printer.show(message, filter)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn filter() -> EventFilter {
        EventFilter {
            case: None,
            agency: None,
            office: None,
            types: Vec::new(),
            since: None,
            until: None,
            from_seq: None,
            to_seq: None,
            decryption: crate::cli::DecryptionArgs::default(),
        }
    }

    #[test]
    fn an_undecodable_message_passes_content_filters_but_not_time_filters() {
        let decoded = Decoded::new(
            3,
            "case.C1",
            Some(datetime!(2026-03-01 8:00 UTC)),
            b"\xff",
            None,
        );
        let mut f = filter();
        f.types = vec!["NoteAdded".into()];
        f.agency = Some(casebus_proto::event::v1::Agency::Court);
        assert!(matches(&decoded, &f));
        f.since = Some(datetime!(2026-03-02 0:00 UTC));
        assert!(!matches(&decoded, &f));
    }

    #[test]
    fn an_inverted_range_is_a_usage_error() {
        let mut f = filter();
        f.from_seq = Some(9);
        f.to_seq = Some(3);
        let err = check_range(&f).expect_err("inverted");
        assert_eq!(err.exit_code(), 2);
    }
}
