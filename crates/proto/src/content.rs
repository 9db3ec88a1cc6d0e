//! The split between what every participant reads and what is content, as the `.proto`
//! files declare it with `(casebus.event.v1.content)` (proto/casebus/event/v1/options.proto).
//!
//! The code is generated from those marks by `build.rs`, so the split is declared once:
//! a mark added to a field is honoured everywhere at the next build.

/// Clearing every content field of a message (and of the messages inside it), leaving
/// what the case rules fold.
pub trait ClearContent {
    /// Clears every field marked content, here and in nested messages.
    fn clear_content(&mut self);
}

include!(concat!(env!("OUT_DIR"), "/casebus_content.rs"));

/// The readable part of `payload`: a copy with every content field cleared.
pub fn readable(payload: &super::event::v1::Payload) -> super::event::v1::Payload {
    let mut out = payload.clone();
    out.clear_content();
    out
}
