//! `casebus.agency.v1.AgencyService`: the commands every agency records the same way
//! (open a case, parties, evidence, notes, references, hand-offs, track, visibility,
//! the extension and suspension of a hand-off's decision clock, legal holds),
//! the inbox (`ListInbox`, `WatchInbox`), the case view (`GetCase`) and the bulk import
//! of commands (`Import`, served by `crate::import`).

use tonic::service::RoutesBuilder;
use tonic::{Request, Response, Status, Streaming};

use casebus_integrity::token::Role;
use casebus_proto::agency::v1::agency_service_server::{AgencyService, AgencyServiceServer};
use casebus_proto::agency::v1::*;
use casebus_proto::event::v1::payload::Kind;
use casebus_runtime::auth::caller;

use crate::agencies::{MAX_REQUEST_BYTES, authenticated};
use crate::import::{self, ImportStream};
use crate::kit::{Kit, WatchStream, required};

/// A request of one of the commands every agency records the same way: its meta and
/// the payload it records (`Err` naming the missing field). The one mapping of these
/// requests, used by their unary RPCs and by `Import`.
pub(crate) trait CommonCommand: Sized {
    /// The meta, and the payload or why there is none.
    fn split(self) -> (Option<CommandMeta>, Result<Kind, Status>);

    /// As [`CommonCommand::split`], failing without the payload.
    fn split_checked(self) -> Result<(Option<CommandMeta>, Kind), Status> {
        let (meta, payload) = self.split();
        Ok((meta, payload?))
    }
}

macro_rules! common_commands {
    ($($request:ident . $field:ident => $kind:ident),* $(,)?) => {
        $(impl CommonCommand for $request {
            fn split(self) -> (Option<CommandMeta>, Result<Kind, Status>) {
                (self.meta, required(self.$field, stringify!($field)).map(Kind::$kind))
            }
        })*
    };
}

common_commands! {
    OpenCaseRequest.case_opened => CaseOpened,
    AddPartyRequest.party_added => PartyAdded,
    RecordEvidenceRequest.evidence_recorded => EvidenceRecorded,
    AddNoteRequest.note_added => NoteAdded,
    LinkReferenceRequest.reference_linked => ReferenceLinked,
    RequestHandoffRequest.handoff_requested => HandoffRequested,
    AcceptHandoffRequest.handoff_accepted => HandoffAccepted,
    DeclineHandoffRequest.handoff_declined => HandoffDeclined,
    CloseTrackRequest.track_closed => TrackClosed,
    ChangeVisibilityRequest.visibility_changed => VisibilityChanged,
    ExtendClockRequest.clock_extended => ClockExtended,
    SuspendClockRequest.clock_suspended => ClockSuspended,
    ResumeClockRequest.clock_resumed => ClockResumed,
    PlaceLegalHoldRequest.legal_hold_placed => LegalHoldPlaced,
    LiftLegalHoldRequest.legal_hold_lifted => LegalHoldLifted,
}

/// The common API of one service.
#[derive(Debug, Clone)]
pub(crate) struct CommonApi {
    kit: Kit,
}

/// Adds the authenticated `AgencyService` to `routes`.
pub(crate) fn register_common(kit: &Kit, routes: &mut RoutesBuilder) {
    let service = AgencyServiceServer::new(CommonApi { kit: kit.clone() })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    routes.add_service(authenticated(kit, service));
}

#[tonic::async_trait]
impl AgencyService for CommonApi {
    async fn open_case(
        &self,
        request: Request<OpenCaseRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn add_party(
        &self,
        request: Request<AddPartyRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn record_evidence(
        &self,
        request: Request<RecordEvidenceRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn add_note(
        &self,
        request: Request<AddNoteRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn link_reference(
        &self,
        request: Request<LinkReferenceRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn request_handoff(
        &self,
        request: Request<RequestHandoffRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn accept_handoff(
        &self,
        request: Request<AcceptHandoffRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn decline_handoff(
        &self,
        request: Request<DeclineHandoffRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn close_track(
        &self,
        request: Request<CloseTrackRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn change_visibility(
        &self,
        request: Request<ChangeVisibilityRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn extend_clock(
        &self,
        request: Request<ExtendClockRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn suspend_clock(
        &self,
        request: Request<SuspendClockRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn resume_clock(
        &self,
        request: Request<ResumeClockRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn place_legal_hold(
        &self,
        request: Request<PlaceLegalHoldRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn lift_legal_hold(
        &self,
        request: Request<LiftLegalHoldRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        self.kit
            .command(request, CommonCommand::split_checked)
            .await
    }

    async fn list_inbox(
        &self,
        request: Request<ListInboxRequest>,
    ) -> Result<Response<ListInboxResponse>, Status> {
        let outcome = caller(&request).and_then(|who| {
            let r = request.get_ref();
            self.kit.list_inbox(who, &r.case_id, r.overdue_only)
        });
        self.kit.stats().count(&outcome);
        outcome.map(Response::new)
    }

    type WatchInboxStream = WatchStream;

    async fn watch_inbox(
        &self,
        request: Request<WatchInboxRequest>,
    ) -> Result<Response<Self::WatchInboxStream>, Status> {
        let outcome = caller(&request).and_then(|who| self.kit.watch_inbox(who));
        self.kit.stats().count(&outcome);
        outcome.map(Response::new)
    }

    type ImportStream = ImportStream;

    async fn import(
        &self,
        request: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        // The credential is checked once, when the stream opens, as for any call; a
        // refused caller gets the error as the call's status and no item is read.
        let authorised = caller(&request).and_then(|who| {
            self.kit.authorize(who, &[Role::Clerk])?;
            Ok(who.clone())
        });
        let who = match authorised {
            Ok(who) => who,
            Err(status) => {
                self.kit.stats().count::<(), _>(&Err(status.clone()));
                return Err(status);
            }
        };
        Ok(Response::new(import::start(
            self.kit.clone(),
            who,
            request.into_inner(),
        )))
    }

    async fn get_case(
        &self,
        request: Request<GetCaseRequest>,
    ) -> Result<Response<GetCaseResponse>, Status> {
        let outcome = match caller(&request) {
            Ok(who) => self.kit.case_view(who, &request.get_ref().case_id).await,
            Err(status) => Err(status),
        };
        self.kit.stats().count(&outcome);
        outcome.map(Response::new)
    }
}
