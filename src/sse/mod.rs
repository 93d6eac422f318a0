//! Server-sent events: an incremental decoder for provider streams and an
//! encoder for the gateway's own.
//!
//! Providers stream over `text/event-stream`, and a network read can end
//! anywhere: inside a line, between `\r` and `\n`, in the middle of a UTF-8
//! character. The decoder keeps the unfinished tail and only yields complete
//! events, so the adapters above it never see a split event. Nothing is
//! buffered beyond the event being assembled: each event is yielded as soon as
//! its blank line arrives, which is what keeps streams unbuffered end to end.

mod decoder;
mod encoder;
mod stream;

pub use decoder::{SseDecoder, SseError, SseEvent, MAX_EVENT_BYTES};
pub use encoder::{encode_data, encode_done, encode_event, encode_json};
pub use stream::{SseStream, SseStreamError};
