//! `casebus.customs.v1.CustomsService`: detentions, rights-holder notices and
//! applications, infringement determinations, confiscations, and the two hand-offs customs sends most (assessment
//! by the IP center, referral to the police).

use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use casebus_proto::customs::v1::customs_service_server::{CustomsService, CustomsServiceServer};
use casebus_proto::customs::v1::*;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, HandoffKind};

use crate::agencies::{
    AgencyApi, Customs, MAX_REQUEST_BYTES, authenticated, command_service, handoff,
};
use crate::kit::{Kit, required};

/// The customs API of one service.
#[derive(Debug, Clone)]
pub(crate) struct CustomsApi {
    kit: Kit,
}

impl AgencyApi for Customs {
    const AGENCY: Agency = Agency::Customs;
    const SERVICE_NAME: &'static str = "casebus-customs";
    const ABOUT: &'static str = "casebus customs service: records what a customs office does in an IP case \
        (detentions, rights-holder notices, infringement determinations, confiscations, referrals) \
        as signed events on the casebus stream, acknowledges hand-offs addressed to the office \
        and keeps its inbox of pending hand-offs";
    const GRPC_SERVICE: &'static str = <CustomsServiceServer<CustomsApi> as NamedService>::NAME;

    fn register(kit: &Kit, routes: &mut RoutesBuilder) {
        let service = CustomsServiceServer::new(CustomsApi { kit: kit.clone() })
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        routes.add_service(authenticated(kit, service));
    }
}

command_service!(CustomsApi, CustomsService, {
    detain_goods(DetainGoodsRequest) =>
        |r| required(r.goods_detained, "goods_detained").map(Kind::GoodsDetained);
    release_detention(ReleaseDetentionRequest) =>
        |r| required(r.detention_released, "detention_released").map(Kind::DetentionReleased);
    notify_rights_holder(NotifyRightsHolderRequest) =>
        |r| required(r.rights_holder_notified, "rights_holder_notified").map(Kind::RightsHolderNotified);
    record_rights_holder_application(RecordRightsHolderApplicationRequest) =>
        |r| required(r.rights_holder_applied, "rights_holder_applied").map(Kind::RightsHolderApplied);
    determine_infringement(DetermineInfringementRequest) =>
        |r| required(r.infringement_determined, "infringement_determined").map(Kind::InfringementDetermined);
    confiscate_goods(ConfiscateGoodsRequest) =>
        |r| required(r.goods_confiscated, "goods_confiscated").map(Kind::GoodsConfiscated);
    request_assessment(RequestAssessmentRequest) =>
        |r| handoff(r.handoff, HandoffKind::AssistanceRequest, Agency::IpCenter);
    refer_to_public_security(ReferToPublicSecurityRequest) =>
        |r| handoff(r.handoff, HandoffKind::SuspectedCrimeReferral, Agency::PublicSecurity);
    request_reconsideration(RequestReconsiderationRequest) =>
        |r| handoff(r.handoff, HandoffKind::ReconsiderationRequest, Agency::PublicSecurity);
});
