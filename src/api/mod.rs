//! The OpenAI Chat Completions wire model: the one API every provider is
//! translated to and from.
//!
//! OpenAI's format is the lingua franca of LLM clients, so Modelux speaks it on
//! the front and translates at the edge, in each provider adapter. Only the
//! fields the gateway must understand are modelled; everything else is kept in
//! `extra` maps and passed through unchanged to OpenAI-kind providers, so a
//! client using a field this crate has never heard of still works.

mod de;
mod error;
mod request;
mod response;

pub use error::{ErrorBody, ErrorDetail};
pub use request::{
    ChatRequest, Content, ContentPart, FunctionCall, ImageUrl, Message, RequestParams, Role, Stop,
    StreamOptions, Tool, ToolCall, ToolFunction,
};
pub use response::{
    ChatChunk, ChatCompletion, Choice, ChunkChoice, Delta, FunctionCallDelta, ResponseMessage,
    ToolCallDelta, Usage,
};

/// `finish_reason` values used by the translation layers.
pub mod finish_reason {
    /// The model stopped naturally or hit a stop sequence.
    pub const STOP: &str = "stop";
    /// The output hit `max_tokens`.
    pub const LENGTH: &str = "length";
    /// The model called one or more tools.
    pub const TOOL_CALLS: &str = "tool_calls";
    /// The provider's safety system withheld the output.
    pub const CONTENT_FILTER: &str = "content_filter";
}

/// Seconds since the Unix epoch, as OpenAI's `created` field wants it.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
