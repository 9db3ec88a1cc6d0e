//! `casebus replay --consumer <name> (--to-seq N | --to-time T) [--execute] [--force]`:
//! plan, then (only with `--execute`) reset a durable consumer of `CASES` so that it
//! receives events again from a sequence or a time. Shared with `dlq retry`, which
//! resets the consumer that dead-lettered a message to that message.

use serde_json::json;
use time::OffsetDateTime;

use casebus_bus::ops::{ConsumerStatus, Ops};
use casebus_bus::subjects::CASES_STREAM;

use crate::cli::ReplayArgs;
use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::output::kv_table;
use crate::times::rfc3339;

/// What a reset would do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The consumer as it is.
    pub consumer: ConsumerStatus,
    /// The sequence it will deliver next.
    pub new_start: u64,
    /// How the new start was chosen, for the operator.
    pub chosen_by: String,
    /// Messages it will receive from the new start on (as of now).
    pub will_receive: u64,
    /// Of those, messages it had processed already (between the new start and its
    /// [`position`]).
    pub again: u64,
    /// Messages it has not processed yet that it will never receive (a start beyond
    /// its [`position`]).
    pub skips: u64,
}

impl Plan {
    /// Why executing would be refused without `--force`, if it would.
    pub fn blockers(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.consumer.waiting > 0 {
            out.push(format!(
                "consumer {} has {} active pull request(s): a client is consuming; stop it first",
                self.consumer.name, self.consumer.waiting
            ));
        }
        if self.skips > 0 {
            out.push(format!(
                "the new start skips {} message(s) consumer {} has not processed yet",
                self.skips, self.consumer.name
            ));
        }
        out
    }

    /// The plan as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.consumer;
        json!({
            "consumer": c.name,
            "stream": c.stream,
            "filter_subject": c.filter_subject,
            "ack_policy": c.ack_policy,
            "position": position(c),
            "ack_floor": c.ack_floor_sequence,
            "delivered": c.delivered_sequence,
            "ack_pending": c.ack_pending,
            "pending": c.pending,
            "redelivered": c.redelivered,
            "waiting": c.waiting,
            "new_start": self.new_start,
            "chosen_by": self.chosen_by,
            "will_receive": self.will_receive,
            "receive_again": self.again,
            "skips": self.skips,
            "blockers": self.blockers(),
        })
    }

    /// Prints the plan as text.
    ///
    /// # Errors
    /// When standard output fails.
    pub fn print(&self, ctx: &Ctx) -> Result<(), CliError> {
        let c = &self.consumer;
        let filter = if c.filter_subject.is_empty() {
            "(whole stream)".to_owned()
        } else {
            c.filter_subject.clone()
        };
        let mut t = kv_table();
        t.add_row(["consumer".to_owned(), format!("{} on {}", c.name, c.stream)]);
        t.add_row(["filter".to_owned(), filter]);
        t.add_row([
            "position".to_owned(),
            format!(
                "processed up to sequence {} (ack floor {}, delivered up to {}, {} awaiting ack, {} not yet delivered)",
                position(c),
                c.ack_floor_sequence,
                c.delivered_sequence,
                c.ack_pending,
                c.pending
            ),
        ]);
        t.add_row(["active pulls".to_owned(), c.waiting.to_string()]);
        t.add_row([
            "new start".to_owned(),
            format!("sequence {} ({})", self.new_start, self.chosen_by),
        ]);
        let again = if self.again > 0 {
            format!(
                " ({} of them again: sequences {}..={})",
                self.again,
                self.new_start,
                position(c)
            )
        } else {
            String::new()
        };
        t.add_row([
            "will receive".to_owned(),
            format!("{} message(s){again}", self.will_receive),
        ]);
        if self.skips > 0 {
            t.add_row([
                "skips".to_owned(),
                format!("{} message(s) not processed yet", self.skips),
            ]);
        }
        ctx.out.table(&t)
    }
}

/// The stream sequence up to which the consumer has processed everything: its ack
/// floor, or, when nothing awaits an ack, what it was last delivered (a consumer created
/// to start at sequence K reports K - 1 delivered and an ack floor of 0 until it acks).
pub fn position(consumer: &ConsumerStatus) -> u64 {
    if consumer.ack_pending == 0 {
        consumer.ack_floor_sequence.max(consumer.delivered_sequence)
    } else {
        consumer.ack_floor_sequence
    }
}

/// Where the consumer should start again.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// At this sequence.
    Sequence(u64),
    /// At the first message stored at or after this time.
    Time(OffsetDateTime),
}

/// Works out the plan for resetting `name` to `target`.
///
/// # Errors
/// A refusal when the consumer does not exist; a usage error for a sequence beyond the
/// stream; a runtime error when NATS fails.
pub async fn plan(ops: &Ops, name: &str, target: Target) -> Result<Plan, CliError> {
    let status = ops.stream_status(CASES_STREAM).await?.ok_or_else(|| {
        CliError::runtime(format!(
            "stream {CASES_STREAM} not found; provision the streams first (casebus streams provision)"
        ))
    })?;
    let consumer = ops.consumer(CASES_STREAM, name).await?;
    let filter = (!consumer.filter_subject.is_empty()).then_some(consumer.filter_subject.as_str());
    let after_last = status.last_sequence + 1;
    let (new_start, chosen_by) = match target {
        Target::Sequence(seq) if seq > after_last => {
            return Err(CliError::usage(format!(
                "--to-seq {seq} is beyond the stream (its last sequence is {})",
                status.last_sequence
            )));
        }
        Target::Sequence(seq) => (seq, format!("--to-seq {seq}")),
        Target::Time(at) => match ops.first_sequence_at(CASES_STREAM, filter, at).await? {
            Some(seq) => (
                seq,
                format!("first message stored at or after {}", rfc3339(at)),
            ),
            None => (
                after_last,
                format!(
                    "nothing stored at or after {}: only new messages",
                    rfc3339(at)
                ),
            ),
        },
    };
    let position = position(&consumer);
    let will_receive = ops.count_from(CASES_STREAM, filter, new_start).await?;
    let unprocessed = ops.count_from(CASES_STREAM, filter, position + 1).await?;
    let (again, skips) = if new_start <= position {
        (will_receive.saturating_sub(unprocessed), 0)
    } else {
        (0, unprocessed.saturating_sub(will_receive))
    };
    Ok(Plan {
        consumer,
        new_start,
        chosen_by,
        will_receive,
        again,
        skips,
    })
}

/// Carries out a plan (after the caller checked the blockers).
///
/// # Errors
/// A runtime error when the reset fails (the error says whether the consumer was
/// restored).
pub async fn execute(ops: &Ops, plan: &Plan) -> Result<ConsumerStatus, CliError> {
    ops.reset_consumer(CASES_STREAM, &plan.consumer.name, plan.new_start)
        .await
        .map_err(CliError::from)
}

/// `casebus replay`.
pub async fn run(ctx: &Ctx, args: &ReplayArgs) -> Result<Outcome, CliError> {
    let target = match (args.to_seq, args.to_time) {
        (Some(seq), None) => Target::Sequence(seq),
        (None, Some(at)) => Target::Time(at),
        // clap's argument group makes exactly one of them present.
        _ => {
            return Err(CliError::usage(
                "give exactly one of --to-seq and --to-time",
            ));
        }
    };
    let ops = ctx.ops().await?;
    let plan = plan(&ops, &args.consumer, target).await?;
    let blockers = plan.blockers();
    let refused = args.execute && !args.force && !blockers.is_empty();
    if ctx.out.is_json() {
        let mut value = plan.to_json();
        let executed = args.execute && !refused;
        if let Some(object) = value.as_object_mut() {
            object.insert("executed".into(), executed.into());
        }
        if !executed {
            ctx.out.json_document(&value)?;
        } else {
            let after = execute(&ops, &plan).await?;
            if let Some(object) = value.as_object_mut() {
                object.insert("pending_after".into(), after.pending.into());
            }
            ctx.out.json_document(&value)?;
            return Ok(Outcome::Ok);
        }
    } else {
        plan.print(ctx)?;
        for blocker in &blockers {
            ctx.out.warn(blocker);
        }
    }
    if refused {
        return Err(CliError::refused(format!(
            "replay refused, nothing changed: {}; use --force to override",
            blockers.join("; ")
        )));
    }
    if !args.execute {
        ctx.out
            .note("plan only: nothing changed; add --execute to reset the consumer");
        return Ok(Outcome::Ok);
    }
    if !ctx.out.is_json() {
        let after = execute(&ops, &plan).await?;
        ctx.out.line(format!(
            "done: consumer {} now delivers from sequence {} ({} message(s) pending)",
            after.name, plan.new_start, after.pending
        ))?;
    }
    Ok(Outcome::Ok)
}
