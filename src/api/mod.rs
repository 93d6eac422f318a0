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
    ///
    /// ```
    /// use modelux::api::{finish_reason, ChatCompletion};
    /// assert_eq!(finish_reason::STOP, "stop");
    /// let c = ChatCompletion::text("id-1", "m", "hi", finish_reason::STOP);
    /// assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
    /// ```
    pub const STOP: &str = "stop";
    /// The output hit `max_tokens`.
    ///
    /// ```
    /// use modelux::api::{finish_reason, ChatChunk};
    /// assert_eq!(finish_reason::LENGTH, "length");
    /// let last = ChatChunk::finish("id-1", "m", 7, finish_reason::LENGTH);
    /// assert_eq!(last.finish_reason(), Some("length"));
    /// ```
    pub const LENGTH: &str = "length";
    /// The model called one or more tools.
    ///
    /// ```
    /// use modelux::api::{finish_reason, ChatCompletion};
    /// assert_eq!(finish_reason::TOOL_CALLS, "tool_calls");
    /// let c: ChatCompletion = serde_json::from_str(r#"{"id":"1","model":"m","choices":[{"message":{"content":null,
    ///     "tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
    ///     "finish_reason":"tool_calls"}]}"#).unwrap();
    /// assert_eq!(c.choices[0].finish_reason.as_deref(), Some(finish_reason::TOOL_CALLS));
    /// ```
    pub const TOOL_CALLS: &str = "tool_calls";
    /// The provider's safety system withheld the output.
    ///
    /// ```
    /// use modelux::api::finish_reason;
    /// assert_eq!(finish_reason::CONTENT_FILTER, "content_filter");
    /// let cut_short = |reason: &str| matches!(reason, finish_reason::LENGTH | finish_reason::CONTENT_FILTER);
    /// assert!(cut_short("content_filter"));
    /// assert!(!cut_short(finish_reason::STOP));
    /// ```
    pub const CONTENT_FILTER: &str = "content_filter";
}

/// Seconds since the Unix epoch, as OpenAI's `created` field wants it.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
