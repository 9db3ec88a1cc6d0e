//! The office of a sealed event stays hidden through the real gateway: a sealed
//! hand-off request shows in the receiving agency's case summary as routing and due
//! time, without the office that sent it; the sending office sees its own office.

mod gateway_common;

use casebus_proto::event::v1::{Agency, HandoffKind};
use casebus_proto::gateway::v1::GetCaseRequest;

use gateway_common::catalogue::{handoff, opened};
use gateway_common::*;

#[tokio::test]
async fn a_sealed_hand_off_does_not_name_its_office_to_the_receiver() {
    let f = Fixture::start().await;
    let id = case("SEALED-H");
    f.append(CUSTOMS, &id, opened("sealed hand-off"), None)
        .await;
    f.append(
        CUSTOMS,
        &id,
        handoff(
            "h1",
            HandoffKind::SuspectedCrimeReferral,
            Agency::PublicSecurity,
        ),
        sealed(),
    )
    .await;
    let mut gateway = f.gateway("gw-sealed").await;
    gateway.wait_projected(f.cases_last().await).await;

    let summary = |token: String| {
        let gateway = &gateway;
        async move {
            gateway
                .client(Some(&token))
                .await
                .get_case(GetCaseRequest {
                    case_id: "SEALED-H".into(),
                })
                .await
                .expect("get case")
                .into_inner()
                .case
                .expect("summary")
        }
    };
    let police = summary(f.reader(POLICE)).await;
    assert_eq!(police.handoffs.len(), 1, "the hand-off is routing, shown");
    assert_eq!(police.handoffs[0].to_agency, Agency::PublicSecurity as i32);
    assert_eq!(
        police.handoffs[0].from_office_id, "",
        "a sealed request does not name its office"
    );
    let rendered = format!("{police:?}");
    assert!(
        !rendered.contains(&format!("from_office_id: \"{CUSTOMS}\"")),
        "{rendered}"
    );
    let customs = summary(f.reader(CUSTOMS)).await;
    assert_eq!(customs.handoffs[0].from_office_id, CUSTOMS);
}
