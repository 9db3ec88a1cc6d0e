//! One module per subcommand; `run` dispatches. Each command returns an [`Outcome`]
//! (ok, or problems found: exit 1) or a [`CliError`] (bad arguments, refusal, runtime).

mod audit;
mod case;
mod dlq;
mod events;
mod export;
mod keys;
mod rebuild;
mod replay;
mod streams;
mod token;
mod verify;
pub mod witness;

use crate::cli::{
    CaseCommand, Command, DlqCommand, EventsCommand, IssuerCommand, KeysCommand, StreamsCommand,
    TokenCommand,
};
use crate::context::Ctx;
use crate::error::{CliError, Outcome};

/// Runs one subcommand.
///
/// # Errors
/// The command's [`CliError`].
pub async fn run(ctx: &Ctx, command: Command) -> Result<Outcome, CliError> {
    match command {
        Command::Events(EventsCommand::List(filter)) => events::list(ctx, &filter).await,
        Command::Events(EventsCommand::Tail(args)) => events::tail(ctx, &args).await,
        Command::Case(CaseCommand::Show {
            case,
            clocks,
            decryption,
        }) => case::show(ctx, &case, &clocks, &decryption).await,
        Command::Verify(args) => verify::run(ctx, &args).await,
        Command::Replay(args) => replay::run(ctx, &args).await,
        Command::Rebuild(args) => rebuild::run(ctx, &args).await,
        Command::Dlq(DlqCommand::List { consumer }) => dlq::list(ctx, consumer.as_deref()).await,
        Command::Dlq(DlqCommand::Show { seq }) => dlq::show(ctx, seq).await,
        Command::Dlq(DlqCommand::Retry {
            seq,
            execute,
            force,
            actor,
        }) => dlq::retry(ctx, seq, execute, force, actor).await,
        Command::Dlq(DlqCommand::Drop {
            seq,
            execute,
            actor,
        }) => dlq::drop(ctx, seq, execute, actor).await,
        Command::Export(args) => export::run(ctx, &args).await,
        Command::Audit(args) => audit::run(ctx, &args).await,
        Command::Keys(KeysCommand::Generate {
            kind,
            office,
            label,
            name,
            out,
        }) => keys::generate_any(ctx, kind, office, label, name, &out),
        Command::Keys(KeysCommand::Register {
            office,
            public_key_from,
            valid_from,
            name,
        }) => keys::register(ctx, &office, &public_key_from, valid_from, name),
        Command::Keys(KeysCommand::Rotate {
            kind,
            office,
            label,
            out,
            valid_from,
            retire_at,
        }) => keys::rotate(ctx, kind, &office, &label, &out, valid_from, retire_at),
        Command::Keys(KeysCommand::List) => keys::list(ctx),
        Command::Token(TokenCommand::Issue {
            issuer_key,
            audience,
            office,
            actor,
            roles,
            ttl,
        }) => token::issue(ctx, &issuer_key, audience, &office, &actor, &roles, ttl),
        Command::Issuer(IssuerCommand::Generate {
            key_id,
            out,
            trust_file,
            offices,
            allow_roles,
            audiences,
            max_ttl,
        }) => {
            let limits = token::Limits {
                offices,
                roles: allow_roles,
                audiences,
                max_ttl,
            };
            token::generate_issuer(ctx, &key_id, &out, trust_file.as_deref(), limits)
        }
        Command::Streams(StreamsCommand::Status) => streams::status(ctx).await,
        Command::Streams(StreamsCommand::Provision {
            replicas,
            duplicate_window,
        }) => streams::provision(ctx, replicas, duplicate_window).await,
        Command::Witness(args) => witness::run(ctx, &args).await,
        Command::Simulate(config) => {
            let stop = casebus_simulator::CancellationToken::new();
            let trigger = stop.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    trigger.cancel();
                }
            });
            let report = casebus_simulator::run(*config, stop)
                .await
                .map_err(CliError::from_source)?;
            if ctx.out.is_json() {
                ctx.out
                    .json_document(&serde_json::to_value(&report).unwrap_or_default())?;
            } else {
                ctx.out.line(&report)?;
            }
            Ok(Outcome::problems_if(report.cases_failed > 0))
        }
    }
}
