//! `Import`: the bulk-ingest stream of the common `AgencyService`, for back-office
//! migrations. Each item is one common command and goes through [`Kit::execute`], the
//! one command path, so checks, idempotency, signing, metrics and error mapping are
//! exactly those of the unary RPCs; this module only owns the stream around it:
//!
//! - **order:** items of one case run one after the other in the order sent (a case
//!   with an item in flight parks the next ones in a queue); items of different cases
//!   run concurrently, so answers come in completion order, each naming its `index`;
//! - **bounded memory:** at most [`WINDOW`] items and [`WINDOW_BYTES`] of requests are
//!   taken and not yet answered; beyond that the stream is not read, and HTTP/2 flow
//!   control holds the client back. Answers go through a bounded channel, so a client
//!   that does not read them is held back the same way;
//! - **ending:** after the client closes its side, the items taken are answered and the
//!   call ends with OK; on shutdown no further item is read, the items taken are
//!   answered, and the call ends with UNAVAILABLE; a broken request stream ends the call
//!   with its status after the same.
//!
//! It does not own authorization (the handler checks the caller once when the stream
//! opens, and `execute` again per item) nor any rule about the commands themselves.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, Stream, StreamExt as _};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use casebus_proto::agency::v1::import_request::Command;
use casebus_proto::agency::v1::import_response::Outcome;
use casebus_proto::agency::v1::{CommandMeta, ImportError, ImportRequest, ImportResponse};
use casebus_proto::event::v1::payload::Kind;
use casebus_runtime::auth::Caller;
use casebus_runtime::metrics::code_name;

use crate::agencies::CommonCommand;
use crate::kit::Kit;
use crate::status::{self, REASON_METADATA, RULE_METADATA};

/// Items taken from one stream and not yet answered.
pub(crate) const WINDOW: usize = 256;
/// Encoded request bytes taken from one stream and not yet answered. With items of up
/// to 512 KiB this, not [`WINDOW`], bounds a stream of large items.
pub(crate) const WINDOW_BYTES: usize = 16 * 1024 * 1024;
/// Answers buffered for a client that reads them slower than they are produced.
const ANSWER_BUFFER: usize = 64;

/// The answer stream of an `Import` call.
pub type ImportStream = Pin<Box<dyn Stream<Item = Result<ImportResponse, Status>> + Send>>;

/// Starts serving one `Import` call for `caller` (already authorised): a task on the
/// service's tracker reads `items` and produces the answers returned.
pub(crate) fn start(kit: Kit, caller: Caller, items: Streaming<ImportRequest>) -> ImportStream {
    let (answers, receiver) = mpsc::channel(ANSWER_BUFFER);
    let driver = Driver {
        kit: kit.clone(),
        caller: Arc::new(caller),
        answers,
    };
    kit.tracker().spawn(driver.run(items));
    Box::pin(futures::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|answer| (answer, receiver)) },
    ))
}

/// One item taken from the stream, ready to run.
struct Item {
    index: u64,
    size: usize,
    meta: Option<CommandMeta>,
    payload: Kind,
}

/// What a finished item hands back to the driver.
struct Done {
    /// The case whose queue the item held, if it ran.
    case: Option<String>,
    size: usize,
    answer: ImportResponse,
}

struct Driver {
    kit: Kit,
    caller: Arc<Caller>,
    answers: mpsc::Sender<Result<ImportResponse, Status>>,
}

impl Driver {
    #[tracing::instrument(skip_all, name = "import")]
    async fn run(self, mut items: Streaming<ImportRequest>) {
        let shutdown = self.kit.shutdown_token();
        let end = self.kit.authenticator().stream_end(&self.caller);
        tokio::pin!(end);
        let mut running: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
        // Cases with an item running, and the items of each waiting behind it.
        let mut queues: HashMap<String, VecDeque<Item>> = HashMap::new();
        let (mut taken, mut taken_bytes) = (0usize, 0usize);
        let mut next_index = 0u64;
        let mut reading = true;
        let mut ending: Option<Status> = None;
        let (mut recorded, mut refused) = (0u64, 0u64);
        loop {
            if !reading && taken == 0 {
                break;
            }
            let room = reading && taken < WINDOW && taken_bytes < WINDOW_BYTES;
            tokio::select! {
                // Answering first frees room before more is read.
                biased;
                Some(done) = running.next(), if !running.is_empty() => {
                    taken -= 1;
                    taken_bytes -= done.size;
                    if let Some(case) = done.case {
                        let next = queues.get_mut(&case).and_then(VecDeque::pop_front);
                        match next {
                            Some(item) => running.push(self.execute(Some(case), item)),
                            None => {
                                queues.remove(&case);
                            }
                        }
                    }
                    match &done.answer.outcome {
                        Some(Outcome::Recorded(_)) => recorded += 1,
                        _ => refused += 1,
                    }
                    if self.answers.send(Ok(done.answer)).await.is_err() {
                        // The client hung up. Appends already started finish on their
                        // own tasks; items not started were never answered, so a
                        // resuming client sends them again.
                        tracing::debug!(recorded, refused, "import client went away");
                        return;
                    }
                }
                () = shutdown.cancelled(), if reading => {
                    reading = false;
                    ending = Some(status::import_interrupted());
                }
                // The credential that opened the stream expired or was revoked: nothing
                // more is taken, the items taken are answered, and the call ends
                // UNAUTHENTICATED.
                status = &mut end, if reading => {
                    reading = false;
                    ending = Some(status);
                }
                next = items.message(), if room => match next {
                    Ok(Some(request)) => {
                        let index = next_index;
                        next_index += 1;
                        let size = request.encoded_len();
                        taken += 1;
                        taken_bytes += size;
                        match split(index, size, request) {
                            Err(answer) => {
                                // Counted like a refused unary command: a call answered
                                // with an error, by its code.
                                if let Some(Outcome::Error(error)) = &answer.outcome {
                                    count(&self.kit, tonic::Code::from_i32(error.code));
                                }
                                self.kit.stats().count::<(), _>(&Err(()));
                                running.push(async move {
                                    Done { case: None, size, answer: *answer }
                                }.boxed());
                            }
                            Ok(item) => {
                                let case = item.meta.as_ref().map(|m| m.case_id.clone());
                                match case {
                                    // An item without meta changes nothing: no order
                                    // to keep.
                                    None => running.push(self.execute(None, item)),
                                    Some(case) => match queues.get_mut(&case) {
                                        Some(queue) => queue.push_back(item),
                                        None => {
                                            queues.insert(case.clone(), VecDeque::new());
                                            running.push(self.execute(Some(case), item));
                                        }
                                    },
                                }
                            }
                        }
                    }
                    Ok(None) => reading = false,
                    Err(error) => {
                        tracing::debug!(error = %error, "import request stream failed");
                        reading = false;
                        ending = Some(error);
                    }
                },
            }
        }
        tracing::debug!(items = next_index, recorded, refused, "import finished");
        if let Some(status) = ending {
            // Nobody may be listening any more; nothing to do about that.
            let _ = self.answers.send(Err(status)).await;
        }
    }

    /// Runs `item` through the one command path; `case` is the queue it holds.
    fn execute(&self, case: Option<String>, item: Item) -> BoxFuture<'static, Done> {
        let kit = self.kit.clone();
        let caller = self.caller.clone();
        async move {
            let Item {
                index,
                size,
                meta,
                payload,
            } = item;
            let (request_id, case_id) = ids(meta.as_ref());
            let outcome = kit.execute(&caller, meta, payload).await;
            count(
                &kit,
                match &outcome {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                },
            );
            kit.stats().count(&outcome);
            let outcome = match outcome {
                Ok(reply) => Outcome::Recorded(reply),
                Err(status) => Outcome::Error(error_of(&status)),
            };
            Done {
                case,
                size,
                answer: ImportResponse {
                    index,
                    request_id,
                    case_id,
                    outcome: Some(outcome),
                },
            }
        }
        .boxed()
    }
}

/// Counts one answered item in `casebus_import_items_total`.
fn count(kit: &Kit, code: tonic::Code) {
    kit.metrics()
        .import_items
        .with_label_values(&[code_name(code)])
        .inc();
}

/// The request id and case id an item names, as sent.
fn ids(meta: Option<&CommandMeta>) -> (String, String) {
    meta.map(|m| (m.request_id.clone(), m.case_id.clone()))
        .unwrap_or_default()
}

/// The meta and payload of an item, or the answer refusing it.
fn split(index: u64, size: usize, request: ImportRequest) -> Result<Item, Box<ImportResponse>> {
    let (meta, payload) = match request.command {
        Some(Command::OpenCase(r)) => r.split(),
        Some(Command::AddParty(r)) => r.split(),
        Some(Command::RecordEvidence(r)) => r.split(),
        Some(Command::AddNote(r)) => r.split(),
        Some(Command::LinkReference(r)) => r.split(),
        Some(Command::RequestHandoff(r)) => r.split(),
        Some(Command::AcceptHandoff(r)) => r.split(),
        Some(Command::DeclineHandoff(r)) => r.split(),
        Some(Command::CloseTrack(r)) => r.split(),
        Some(Command::ChangeVisibility(r)) => r.split(),
        Some(Command::ExtendClock(r)) => r.split(),
        Some(Command::SuspendClock(r)) => r.split(),
        Some(Command::ResumeClock(r)) => r.split(),
        Some(Command::PlaceLegalHold(r)) => r.split(),
        Some(Command::LiftLegalHold(r)) => r.split(),
        None => (
            None,
            Err(status::invalid(
                "command",
                "is required: set one of open_case, add_party, record_evidence, add_note, link_reference, request_handoff, accept_handoff, decline_handoff, close_track, change_visibility, extend_clock, suspend_clock, resume_clock, place_legal_hold, lift_legal_hold",
            )),
        ),
    };
    match payload {
        Ok(payload) => Ok(Item {
            index,
            size,
            meta,
            payload,
        }),
        Err(status) => {
            let (request_id, case_id) = ids(meta.as_ref());
            Err(Box::new(ImportResponse {
                index,
                request_id,
                case_id,
                outcome: Some(Outcome::Error(error_of(&status))),
            }))
        }
    }
}

/// The per-item form of the status a unary command would have answered.
fn error_of(status: &Status) -> ImportError {
    let trailer = |key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    ImportError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reason: trailer(REASON_METADATA),
        rule: trailer(RULE_METADATA),
    }
}

#[cfg(test)]
mod tests {
    use casebus_proto::agency::v1::{AddNoteRequest, OpenCaseRequest};
    use casebus_proto::event::v1::NoteAdded;
    use tonic::Code;

    use super::*;

    fn refusal(request: ImportRequest) -> ImportError {
        match split(7, 1, request) {
            Ok(_) => panic!("the item must be refused"),
            Err(answer) => {
                assert_eq!(answer.index, 7);
                match answer.outcome {
                    Some(Outcome::Error(error)) => error,
                    other => panic!("expected an error, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn an_item_without_a_command_is_invalid_and_names_the_choices() {
        let error = refusal(ImportRequest { command: None });
        assert_eq!(error.code, Code::InvalidArgument as i32);
        assert_eq!(error.reason, "invalid");
        assert!(error.message.starts_with("invalid command: is required"));
        assert!(error.message.contains("add_note"), "{}", error.message);
    }

    #[test]
    fn an_item_without_its_payload_is_invalid_naming_the_field_and_echoes_its_ids() {
        let request = ImportRequest {
            command: Some(Command::OpenCase(OpenCaseRequest {
                meta: Some(CommandMeta {
                    case_id: "C-1".into(),
                    request_id: "r-1".into(),
                    ..Default::default()
                }),
                case_opened: None,
            })),
        };
        let answer = split(3, 1, request).err().expect("refused");
        assert_eq!(
            (answer.case_id.as_str(), answer.request_id.as_str()),
            ("C-1", "r-1")
        );
        let Some(Outcome::Error(error)) = answer.outcome else {
            panic!("expected an error")
        };
        assert_eq!(error.message, "invalid case_opened: is required");
    }

    #[test]
    fn a_complete_item_becomes_its_payload() {
        let request = ImportRequest {
            command: Some(Command::AddNote(AddNoteRequest {
                meta: None,
                note_added: Some(NoteAdded { text: "x".into() }),
            })),
        };
        let Ok(item) = split(0, 1, request) else {
            panic!("the item is complete")
        };
        assert!(matches!(item.payload, Kind::NoteAdded(_)));
    }
}
