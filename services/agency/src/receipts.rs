//! Automatic receipts: the handler of the office's durable consumer. For every verified
//! `HandoffRequested` addressed to this office (or to its agency with no office named)
//! it appends a `HandoffAcknowledged` signed by this office.
//!
//! The receipt's request id is derived from the hand-off's event id, so its event id is
//! fixed: a redelivery, a restart or a second instance handling the same hand-off finds
//! the receipt already recorded (the appender answers "duplicate") or the hand-off no
//! longer waiting for one (the rules answer `handoff_unacknowledged`: acknowledged by
//! another office of the agency, accepted or declined already). Both count as done.
//! Only bus trouble is retried; any other refusal is logged and the event passed, since
//! retrying cannot change the answer and the event itself is sound.

use casebus_bus::{AppendError, AppendRequest, EventHandler, HandlerError, StoredEvent};
use casebus_domain::Rejection;
use casebus_proto::event::v1::HandoffAcknowledged;
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::{EventId, PayloadKind, RequestId, agency_name};

use crate::inbox::addressed_to;
use crate::kit::Kit;
use crate::stats::Stats;

/// The rule the case rules name when a hand-off no longer awaits a receipt.
const ALREADY_ANSWERED_RULE: &str = "handoff_unacknowledged";

/// The request id of the receipt for the hand-off recorded as `handoff_event`.
pub(crate) fn receipt_request_id(handoff_event: &EventId) -> RequestId {
    // An event id is 32 hex digits, so this is always a valid request id.
    RequestId::new(&format!("receipt:{handoff_event}"))
        .expect("receipt:<32 hex digits> is a valid request id")
}

/// The consumer handler that issues automatic receipts.
pub(crate) struct Receipts {
    kit: Kit,
    consumer: String,
    actor: String,
}

impl Receipts {
    /// Receipts for the kit's office, counted under consumer `consumer`.
    pub fn new(kit: Kit, consumer: String) -> Self {
        let actor = format!("{} (automatic receipt)", kit.service_name());
        Self {
            kit,
            consumer,
            actor,
        }
    }
}

impl EventHandler for Receipts {
    #[tracing::instrument(
        skip_all,
        fields(case_id = %stored.event.case_id, event_id = %stored.event.event_id, consumer = %self.consumer)
    )]
    async fn handle(&self, stored: &StoredEvent) -> Result<(), HandlerError> {
        let event = &stored.event;
        let type_name = event.type_name();
        self.kit
            .metrics()
            .events_consumed
            .with_label_values(&[&self.consumer, agency_name(event.agency()), &type_name])
            .inc();
        let PayloadKind::Known(Kind::HandoffRequested(handoff)) = event.payload_kind() else {
            return Ok(());
        };
        let office = self.kit.office();
        if !addressed_to(office, handoff.to_agency(), &handoff.to_office_id) {
            return Ok(());
        }
        let request = AppendRequest {
            case_id: event.case_id.clone(),
            request_id: receipt_request_id(&event.event_id),
            actor: self.actor.clone(),
            occurred_at: None,
            causation_id: Some(event.event_id.clone()),
            correlation_id: event.event.correlation_id.clone(),
            visibility: None,
            payload: Kind::HandoffAcknowledged(HandoffAcknowledged {
                handoff_id: handoff.handoff_id.clone(),
            }),
        };
        match self.kit.appender().append(request).await {
            Ok(receipt) if receipt.duplicate => {
                tracing::debug!(handoff_id = %handoff.handoff_id, "receipt was recorded before");
                Ok(())
            }
            Ok(receipt) => {
                let metrics = self.kit.metrics();
                let agency = agency_name(office.agency());
                metrics
                    .handoffs_acknowledged
                    .with_label_values(&[agency])
                    .inc();
                metrics
                    .events_appended
                    .with_label_values(&[agency, "HandoffAcknowledged"])
                    .inc();
                Stats::bump(&self.kit.stats().receipts);
                tracing::info!(
                    handoff_id = %handoff.handoff_id,
                    receipt = %receipt.event_id,
                    version = receipt.case_version,
                    "hand-off acknowledged"
                );
                Ok(())
            }
            Err(AppendError::Rejected {
                rejection: Rejection::Precondition { rule, .. },
                ..
            }) if rule == ALREADY_ANSWERED_RULE => {
                tracing::debug!(handoff_id = %handoff.handoff_id, "hand-off no longer awaits a receipt");
                Ok(())
            }
            // A signing key that is not valid clears with a rotation: retry in place, as
            // for NATS trouble, so the hand-off still gets its receipt.
            Err(
                error @ (AppendError::Unavailable { .. }
                | AppendError::Contention { .. }
                | AppendError::SigningKeyNotValid { .. }),
            ) => Err(HandlerError::Transient(error.to_string())),
            Err(error) => {
                tracing::warn!(
                    handoff_id = %handoff.handoff_id,
                    error = %error,
                    cause = ?std::error::Error::source(&error),
                    "automatic receipt refused; passing the hand-off on"
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receipt_request_id_is_fixed_by_the_hand_off_event() {
        let id = EventId::new(&"ab".repeat(16)).expect("event id");
        assert_eq!(
            receipt_request_id(&id).as_str(),
            format!("receipt:{}", "ab".repeat(16))
        );
        assert_eq!(receipt_request_id(&id), receipt_request_id(&id));
    }
}
