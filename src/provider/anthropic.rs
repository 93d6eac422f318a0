//! Anthropic Messages (`POST {base}/v1/messages`).
//!
//! The request is rebuilt in Anthropic's shape straight from the shared
//! [`ChatRequest`] by reference: system and developer messages become the
//! top-level `system`, the rest become strictly alternating user/assistant
//! turns of content blocks (tool calls become `tool_use` blocks, tool results
//! `tool_result` blocks). Sampling parameters are fitted to Anthropic's
//! rules: `temperature` is clamped to 0–1 (OpenAI allows up to 2), and
//! `top_p` is dropped when a `temperature` is also given (newer Claude
//! models refuse both). Answers are translated back to OpenAI's format; a
//! stream is translated event by event by a small state machine
//! ([`StreamTranslator`]) and each chunk is forwarded as soon as its event
//! arrives.

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, StatusCode};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::client::{self, Endpoint, HttpClient};
use super::translated::{Translate, Translated};
use super::{
    AttemptRequest, BoxFuture, Chunk, Completion, Failure, ProviderError, ProviderResponse,
};
use crate::api::{
    finish_reason, ChatChunk, ChatCompletion, ChatRequest, Choice, Content, ContentPart, Delta,
    FunctionCall, FunctionCallDelta, Message, ResponseMessage, Role, Stop, Tool, ToolCall,
    ToolCallDelta, Usage,
};
use crate::sse::SseEvent;
use crate::Secret;

/// The API version every request is pinned to.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by Anthropic; this is sent when neither the
/// client nor the model's `max_output_tokens` gives one. It is small enough
/// for every Claude model (Claude 3 Haiku's limit), so a model with a larger
/// output limit should set `max_output_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// An Anthropic Messages provider at `base_url` (without `/v1`, e.g.
/// `https://api.anthropic.com`), authenticated with `x-api-key` when a key is
/// given.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// use tower::ServiceExt;
/// use modelux::provider::{http_client, Anthropic, AttemptRequest, Target};
/// let anthropic = Anthropic::new(
///     "https://api.anthropic.com",
///     Some(modelux::Secret::new("sk-ant-...")),
///     http_client(),
/// );
/// let chat = serde_json::from_str(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
/// let req = AttemptRequest::new(Arc::new(Target::new("anthropic", "claude-sonnet-4-5")), Arc::new(chat));
/// let answer = anthropic.oneshot(req).await;
/// # let _ = answer;
/// # }
/// ```
#[derive(Clone)]
pub struct Anthropic {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    endpoint: Endpoint,
    client: HttpClient,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl Anthropic {
    /// The same provider, also sending `headers` with every request:
    /// `OpenAI-Organization`, `anthropic-beta`, a gateway's own auth
    /// header. Those in [`RESERVED_HEADERS`](super::RESERVED_HEADERS),
    /// which the adapter sets itself, are skipped. A value marked sensitive
    /// is scrubbed from errors like the key, and never indexed by
    /// HTTP/2 header compression.
    ///
    /// ```
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-title", "my-app".parse().unwrap());
    /// let p = modelux::provider::Anthropic::new("https://example.com", None, modelux::provider::http_client())
    ///     .with_headers(&headers);
    /// assert!(format!("{p:?}").contains("x-title"));
    /// ```
    pub fn with_headers(self, headers: &http::HeaderMap) -> Self {
        let inner = &*self.inner;
        Anthropic {
            inner: Arc::new(Inner {
                endpoint: inner.endpoint.clone().extra(headers),
                ..inner.clone()
            }),
        }
    }

    /// A provider at `base_url` (the host root, without `/v1`); requests go
    /// to `{base_url}/v1/messages`.
    ///
    /// ```
    /// # #[cfg(feature = "mock")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::sync::Arc;
    /// # use tower::ServiceExt;
    /// # let chat = serde_json::from_str(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    /// use modelux::provider::{http_client, AttemptRequest, Anthropic, ProviderResponse, Target};
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let anthropic = Anthropic::new(&mock.url(), Some(modelux::Secret::new("sk-ant")), http_client());
    /// let req = AttemptRequest::new(Arc::new(Target::new("mock", "claude-sonnet-4-5")), Arc::new(chat));
    /// let answer = anthropic.oneshot(req).await.unwrap();
    /// assert!(matches!(answer, ProviderResponse::Complete(_)));
    /// let seen = &mock.requests()[0];
    /// assert_eq!((seen.format, seen.auth.as_deref()), ("anthropic", Some("sk-ant")));
    /// assert!(seen.headers.contains_key("anthropic-version"));
    /// # }
    /// # #[cfg(not(feature = "mock"))]
    /// # fn main() {}
    /// ```
    pub fn new(base_url: &str, key: Option<Secret>, client: HttpClient) -> Self {
        Anthropic {
            inner: Arc::new(Inner {
                endpoint: endpoint(base_url, key.as_ref()),
                client,
            }),
        }
    }
}

/// `{base_url}/v1/messages`, with `anthropic-version` and, when a key is
/// given, `x-api-key`.
fn endpoint(base_url: &str, key: Option<&Secret>) -> Endpoint {
    let endpoint = Endpoint::new(&client::join_url(base_url, "/v1/messages")).header(
        HeaderName::from_static("anthropic-version"),
        ANTHROPIC_VERSION,
    );
    match key {
        Some(key) => endpoint.secret(
            HeaderName::from_static("x-api-key"),
            key.expose().to_owned(),
        ),
        None => endpoint,
    }
}

// ---------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------

/// The outgoing body, borrowing from the shared request wherever it can.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Cow<'a, str>>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<ToolDecl<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
}

/// One message of the conversation: a role and its content blocks.
#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<AnyBlock<'a>>,
}

/// A content block this adapter builds, or a client part passed through
/// unchanged (a native Anthropic block such as `document`, or a part type
/// Anthropic will refuse with a clear 400 rather than have it dropped here).
#[derive(Serialize)]
#[serde(untagged)]
enum AnyBlock<'a> {
    Known(Block<'a>),
    Raw(&'a ContentPart),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    Document {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: ToolInput<'a>,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent<'a>>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolResultContent<'a> {
    Text(&'a str),
    Blocks(Vec<AnyBlock<'a>>),
}

/// A tool call's arguments: the client's JSON object, borrowed as is, or `{}`
/// when the arguments are not a JSON object.
struct ToolInput<'a>(Option<&'a RawValue>);

impl<'a> ToolInput<'a> {
    fn parse(arguments: &'a str) -> Self {
        ToolInput(
            serde_json::from_str::<&RawValue>(arguments)
                .ok()
                .filter(|raw| raw.get().starts_with('{')),
        )
    }
}

impl Serialize for ToolInput<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(raw) => raw.serialize(s),
            None => s.serialize_map(Some(0))?.end(),
        }
    }
}

#[derive(Serialize)]
struct ToolDecl<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

fn text_block(text: &str) -> AnyBlock<'_> {
    AnyBlock::Known(Block::Text { text })
}

/// Anthropic refuses empty and whitespace-only text blocks.
fn has_text(text: &str) -> bool {
    !text.trim().is_empty()
}

/// An image block from an OpenAI image URL: `data:` URLs become base64
/// sources, anything else a URL source.
fn image_block(url: &str) -> AnyBlock<'_> {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((header, data)) = rest.split_once(',') {
            if let Some(params) = header.strip_suffix(";base64") {
                let media_type = params.split(';').next().unwrap_or(params);
                return AnyBlock::Known(Block::Image {
                    source: ImageSource::Base64 { media_type, data },
                });
            }
        }
    }
    AnyBlock::Known(Block::Image {
        source: ImageSource::Url { url },
    })
}

/// A `document` block from an OpenAI `file` part whose `file_data` is a
/// base64 `data:` URL of a PDF (Anthropic's document input); `None` for any
/// other file, which goes as is (Anthropic refuses it with a 400).
fn document_block(part: &ContentPart) -> Option<AnyBlock<'_>> {
    let data = part.extra.get("file")?.get("file_data")?.as_str()?;
    let (header, data) = data.strip_prefix("data:")?.split_once(',')?;
    let media_type = header.strip_suffix(";base64")?;
    (media_type == "application/pdf").then_some(AnyBlock::Known(Block::Document {
        source: ImageSource::Base64 { media_type, data },
    }))
}

fn part_block(part: &ContentPart) -> Option<AnyBlock<'_>> {
    match part.kind.as_str() {
        "text" => part.text.as_deref().filter(|t| has_text(t)).map(text_block),
        "refusal" => part
            .extra
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|t| has_text(t))
            .map(text_block),
        "image_url" => Some(match &part.image_url {
            Some(img) => image_block(&img.url),
            None => AnyBlock::Raw(part),
        }),
        "file" => Some(document_block(part).unwrap_or(AnyBlock::Raw(part))),
        _ => Some(AnyBlock::Raw(part)),
    }
}

fn push_content<'a>(out: &mut Vec<AnyBlock<'a>>, content: &'a Content) {
    match content {
        Content::Text(t) => {
            if has_text(t) {
                out.push(text_block(t));
            }
        }
        Content::Parts(parts) => out.extend(parts.iter().filter_map(part_block)),
    }
}

/// Appends a message's text (parts joined) to the system prompt.
fn push_system(system: &mut String, content: &Content) {
    let start = system.len();
    if !system.is_empty() {
        system.push_str("\n\n");
    }
    let body = system.len();
    match content {
        Content::Text(t) => system.push_str(t),
        Content::Parts(parts) => {
            for t in parts.iter().filter_map(|p| p.text.as_deref()) {
                system.push_str(t);
            }
        }
    }
    if system.len() == body {
        system.truncate(start);
    }
}

/// The content list of the turn a block of `role` goes into: the last turn
/// when it has the same role (Anthropic requires strict alternation, so
/// consecutive same-role messages merge), a new turn otherwise.
fn turn_for<'t, 'a>(turns: &'t mut Vec<Turn<'a>>, role: &'static str) -> &'t mut Vec<AnyBlock<'a>> {
    if turns.last().is_some_and(|t| t.content.is_empty()) {
        turns.pop();
    }
    if turns.last().map(|t| t.role) != Some(role) {
        turns.push(Turn {
            role,
            content: Vec::new(),
        });
    }
    match turns.last_mut() {
        Some(t) => &mut t.content,
        None => unreachable!("a turn was just pushed"),
    }
}

fn tool_use_block(call: &ToolCall) -> AnyBlock<'_> {
    AnyBlock::Known(Block::ToolUse {
        id: &call.id,
        name: &call.function.name,
        input: ToolInput::parse(&call.function.arguments),
    })
}

fn tool_result_block<'a>(m: &'a Message, id: &'a str) -> AnyBlock<'a> {
    let content = match &m.content {
        None => None,
        Some(Content::Text(t)) if t.is_empty() => None,
        Some(Content::Text(t)) => Some(ToolResultContent::Text(t)),
        Some(Content::Parts(parts)) => {
            let blocks: Vec<_> = parts.iter().filter_map(part_block).collect();
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    AnyBlock::Known(Block::ToolResult {
        tool_use_id: id,
        content,
    })
}

/// Splits the conversation into the system prompt and alternating turns,
/// with `prefill` (trailing whitespace trimmed) as a final assistant turn.
fn translate_messages<'a>(
    messages: &'a [Message],
    prefill: Option<&'a str>,
) -> (Option<String>, Vec<Turn<'a>>) {
    let mut system = String::new();
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(messages.len() + 1);
    for m in messages {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    push_system(&mut system, c);
                }
            }
            Role::User | Role::Function => {
                if let Some(c) = &m.content {
                    push_content(turn_for(&mut turns, "user"), c);
                }
            }
            Role::Assistant => {
                let out = turn_for(&mut turns, "assistant");
                if let Some(c) = &m.content {
                    push_content(out, c);
                }
                for call in m.tool_calls.iter().flatten() {
                    out.push(tool_use_block(call));
                }
            }
            Role::Tool => {
                let out = turn_for(&mut turns, "user");
                match m.tool_call_id.as_deref() {
                    Some(id) => out.push(tool_result_block(m, id)),
                    // Without an id there is no tool_use to answer: keep the text.
                    None => {
                        if let Some(c) = &m.content {
                            push_content(out, c);
                        }
                    }
                }
            }
        }
    }
    if let Some(p) = prefill.map(str::trim_end).filter(|p| !p.is_empty()) {
        turn_for(&mut turns, "assistant").push(text_block(p));
    }
    // Anthropic rejects a final assistant turn that ends in whitespace.
    if let Some(last) = turns.last_mut().filter(|t| t.role == "assistant") {
        if let Some(AnyBlock::Known(Block::Text { text })) = last.content.last_mut() {
            *text = text.trim_end();
            if text.is_empty() {
                last.content.pop();
            }
        }
    }
    if turns.last().is_some_and(|t| t.content.is_empty()) {
        turns.pop();
    }
    ((!system.is_empty()).then_some(system), turns)
}

/// The tool a JSON answer is asked for through: Anthropic has no
/// `response_format`, so a request for JSON (`json_object`, or
/// `json_schema` with an object schema) and no tools of its own gets this
/// one tool, forced with `tool_choice`, whose input is the answer. Its
/// `tool_use` comes back as the message's content, JSON text, and its
/// `stop_reason` as `stop`: the client sees what OpenAI would have sent.
/// A name no client tool has (the request has none).
const JSON_TOOL: &str = "modelux_json_answer";

/// The schema of the JSON answer `chat` asks for, when the JSON tool
/// applies: `{"type": "object"}` for `json_object`, the client's schema for
/// `json_schema` when it describes an object (a tool's input must be one).
fn json_answer_schema(chat: &ChatRequest) -> Option<Cow<'_, Value>> {
    if chat.params.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return None;
    }
    let format = chat.params.response_format.as_ref()?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(Cow::Owned(json!({"type": "object"}))),
        "json_schema" => {
            let schema = format.get("json_schema")?.get("schema")?;
            let object = schema.get("type").and_then(Value::as_str) == Some("object")
                || schema.get("type").is_none() && schema.get("properties").is_some();
            object.then_some(Cow::Borrowed(schema))
        }
        _ => None,
    }
}

fn translate_tools(tools: &[Tool]) -> Vec<ToolDecl<'_>> {
    tools
        .iter()
        .filter(|t| t.kind == "function")
        .map(|t| ToolDecl {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            input_schema: match &t.function.parameters {
                Some(p) => Cow::Borrowed(p),
                None => Cow::Owned(json!({"type": "object"})),
            },
        })
        .collect()
}

/// OpenAI's `tool_choice` (and `parallel_tool_calls: false`) in Anthropic's shape.
fn translate_tool_choice(chat: &ChatRequest) -> Option<Value> {
    let mut choice = match &chat.params.tool_choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            _ => None,
        },
        Some(v) => v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|name| json!({"type": "tool", "name": name})),
    };
    let serial = chat.params.extra.get("parallel_tool_calls") == Some(&Value::Bool(false));
    if serial && chat.params.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    choice
}

/// OpenAI's `temperature` (0 to 2) in Anthropic's range, 0 to 1: clamped,
/// as the providers' own SDKs do. Anthropic refuses anything above 1 with a
/// 400, so the same request would otherwise fail only when it reached this
/// target.
fn temperature(chat: &ChatRequest) -> Option<f64> {
    chat.params.temperature.map(|t| t.clamp(0.0, 1.0))
}

/// `top_p`, only when no `temperature` is given: newer Claude models
/// (Sonnet 4.5, Haiku 4.5, Opus 4.1 and later) refuse a request that sets
/// both with a 400 ("`temperature` and `top_p` cannot both be specified for
/// this model"), and Anthropic advises changing only one of them anyway.
/// The temperature is the one kept.
fn top_p(chat: &ChatRequest) -> Option<f64> {
    chat.params
        .top_p
        .filter(|_| chat.params.temperature.is_none())
}

fn build_body(req: &AttemptRequest) -> Body<'_> {
    let chat = &*req.chat;
    let (system, messages) = translate_messages(&chat.messages, req.prefill.as_deref());
    // Anthropic refuses a stop sequence of whitespace alone (a 400), which
    // OpenAI and Gemini accept and completion-style clients send ("\n").
    let stop_sequences = match &chat.params.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.as_str()],
        Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
    }
    .into_iter()
    .filter(|s| !s.trim().is_empty())
    .collect();
    let target = &req.target;
    let json_answer = json_answer_schema(chat).map(|schema| {
        let tool = ToolDecl {
            name: JSON_TOOL,
            description: Some("Give your whole answer as this tool's input."),
            input_schema: schema,
        };
        (vec![tool], json!({"type": "tool", "name": JSON_TOOL}))
    });
    let (tools, tool_choice) = match json_answer {
        Some((tools, choice)) => (Some(tools), Some(choice)),
        None => (
            chat.params
                .tools
                .as_deref()
                .map(translate_tools)
                .filter(|t| !t.is_empty()),
            translate_tool_choice(chat),
        ),
    };
    Body {
        model: &target.upstream_model,
        max_tokens: target
            .output_cap(chat.max_output_tokens())
            .or(target.max_output_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS),
        system: system.map(Cow::Owned),
        messages,
        stop_sequences,
        temperature: temperature(chat),
        top_p: top_p(chat),
        tools,
        tool_choice,
        metadata: chat
            .params
            .user
            .as_deref()
            .map(|user_id| Metadata { user_id }),
        stream: chat.is_stream().then_some(true),
    }
}

/// Serialises the upstream body for an attempt.
fn request_body(req: &AttemptRequest) -> Vec<u8> {
    client::json_body(&build_body(req), &req.chat)
}

// ---------------------------------------------------------------------------
// Response translation
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct MessageResponse {
    id: String,
    model: String,
    #[serde(default)]
    content: Vec<ResponseBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

/// Anthropic's usage. `input_tokens` excludes prompt-cache reads and writes,
/// which OpenAI's `prompt_tokens` counts, so they are added back.
#[derive(Deserialize, Default, Clone, Copy)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// OpenAI usage: cache reads and writes are prompt tokens, broken down
    /// in `prompt_tokens_details`.
    fn to_usage(self) -> Usage {
        Usage::new(self.prompt().unwrap_or(0), self.output_tokens.unwrap_or(0)).with_cache(
            self.cache_read_input_tokens.unwrap_or(0),
            self.cache_creation_input_tokens.unwrap_or(0),
        )
    }

    /// The prompt tokens, when this usage reports any input count.
    fn prompt(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b))
        })
    }
}

/// Drops from the start of a continuation's `text` the whitespace that
/// repeats `absorb`, the whitespace cut from the end of its prefill, and
/// consumes `absorb` as it goes: the delivered `"Hello "` is sent as the
/// prefill `"Hello"`, and the model's `" world"` must reach the client as
/// `"world"`. Done once the continuation shows anything else.
fn absorb_leading(absorb: &mut String, text: &mut String) {
    let same = absorb
        .chars()
        .zip(text.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum::<usize>();
    text.drain(..same);
    if text.is_empty() {
        absorb.drain(..same);
    } else {
        absorb.clear();
    }
}

/// Maps Anthropic's `stop_reason` to OpenAI's `finish_reason`.
fn map_stop_reason(reason: &str) -> &'static str {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => finish_reason::LENGTH,
        "tool_use" => finish_reason::TOOL_CALLS,
        "refusal" => finish_reason::CONTENT_FILTER,
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => finish_reason::STOP,
    }
}

fn translate_response(body: &[u8]) -> Result<ChatCompletion, ProviderError> {
    let msg: MessageResponse = serde_json::from_slice(body)
        .map_err(|e| ProviderError::new(Failure::Malformed, format!("unparseable message: {e}")))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    // The answer came as the JSON tool's input (see `JSON_TOOL`).
    let mut json_answer = false;
    for block in msg.content {
        match block {
            ResponseBlock::Text { text: t } => text.push_str(&t),
            ResponseBlock::ToolUse { input, name, .. } if name == JSON_TOOL => {
                json_answer = true;
                text.push_str(&if input.is_null() {
                    "{}".to_owned()
                } else {
                    input.to_string()
                });
            }
            ResponseBlock::ToolUse { id, name, input } => {
                let input = if input.is_null() {
                    Value::Object(Map::new())
                } else {
                    input
                };
                tool_calls.push(ToolCall {
                    id,
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name,
                        arguments: input.to_string(),
                        extra: Map::new(),
                    },
                    extra: Map::new(),
                });
            }
            ResponseBlock::Other => {}
        }
    }
    let usage = msg.usage.map(|u| u.to_usage());
    let finish = msg.stop_reason.as_deref().map(|r| match r {
        "tool_use" if json_answer && tool_calls.is_empty() => finish_reason::STOP.to_owned(),
        r => map_stop_reason(r).to_owned(),
    });
    Ok(ChatCompletion {
        id: msg.id,
        object: "chat.completion".to_owned(),
        created: crate::api::unix_now(),
        model: msg.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".to_owned(),
                content: (!text.is_empty()).then_some(text),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                extra: Map::new(),
            },
            finish_reason: finish,
            extra: Map::new(),
        }],
        usage,
        extra: Map::new(),
    })
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Whether an `invalid_request_error` message says the prompt does not fit.
fn is_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long")
        || m.contains("context window")
        || m.contains("context limit")
        || m.contains("context length")
        || (m.contains("prompt") && m.contains("too long"))
}

/// Whether an `invalid_request_error` message says the account behind the
/// key cannot be used: its credits ran out ("Your credit balance is too low
/// to access the Anthropic API. Please go to Plans & Billing to upgrade or
/// purchase credits.") or it was disabled ("This organization has been
/// disabled."). Anthropic sends both as a 400 with no type of their own.
fn is_account_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("credit balance")
        || m.contains("billing")
        || m.contains("purchase credits")
        || m.contains("organization has been disabled")
}

/// The failure an Anthropic error type names, if it names a specific one.
/// A refused account is `TargetRefused` with status 402 for a
/// `billing_error`, 400 for an `invalid_request_error` (what each is sent
/// with); [`refine`] puts the status actually received instead.
fn failure_for(kind: &str, message: &str) -> Option<Failure> {
    match kind {
        "overloaded_error" => Some(Failure::Overloaded),
        "rate_limit_error" => Some(Failure::RateLimited),
        "billing_error" => Some(Failure::TargetRefused { status: 402 }),
        "invalid_request_error" if is_context_length(message) => Some(Failure::ContextLength),
        "invalid_request_error" if is_account_refusal(message) => {
            Some(Failure::TargetRefused { status: 400 })
        }
        _ => None,
    }
}

/// Refines a status-based classification with Anthropic's error type.
fn refine(status: StatusCode, body: &[u8], mut err: ProviderError) -> ProviderError {
    if let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(body) {
        let kind = env.error.kind.as_deref().unwrap_or("");
        let message = env.error.message.unwrap_or_default();
        match failure_for(kind, &message) {
            // Both verdicts only make sense on a 4xx answer; a refused
            // account keeps the status it came with (400 or 402), except a
            // 401 or 403, which already says credentials.
            Some(Failure::ContextLength) if !status.is_client_error() => {}
            Some(Failure::TargetRefused { .. }) => {
                if matches!(err.failure, Failure::Client { .. }) {
                    err.failure = Failure::TargetRefused {
                        status: status.as_u16(),
                    };
                }
            }
            Some(f) => err.failure = f,
            None => {}
        }
        err.message = message;
    }
    err
}

/// Classifies an `error` event that arrived inside a 200 stream.
fn stream_error(e: &ErrorFields) -> ProviderError {
    let kind = e.kind.as_deref().unwrap_or("");
    let message = e
        .message
        .clone()
        .unwrap_or_else(|| "error event in stream".to_owned());
    let failure = failure_for(kind, &message).unwrap_or(match kind {
        "invalid_request_error" => Failure::Client { status: 400 },
        "authentication_error" => Failure::TargetRefused { status: 401 },
        "permission_error" => Failure::TargetRefused { status: 403 },
        "not_found_error" => Failure::TargetRefused { status: 404 },
        "request_too_large" => Failure::Client { status: 413 },
        "timeout_error" => Failure::Server { status: 504 },
        _ => Failure::Server { status: 500 },
    });
    ProviderError::new(failure, message)
}

// ---------------------------------------------------------------------------
// Stream translation
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorFields,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// What the stream should do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Keep reading events.
    Continue,
    /// The message is complete: end the stream.
    Done,
}

/// A tool_use block of the message being streamed.
struct ToolBlock {
    /// Anthropic's content block index.
    block: usize,
    /// The OpenAI tool call index.
    index: u32,
    /// Whether any argument text was sent for it.
    has_args: bool,
}

/// Turns Anthropic stream events into OpenAI chunks, one event at a time.
///
/// A pure state machine (no I/O), so the async stream that drives it stays a
/// thin loop and the translation can be tested with recorded events.
struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    // Of the prompt tokens: read from and written to the prompt cache.
    cache_read: u64,
    cache_write: u64,
    tools: Vec<ToolBlock>,
    /// The content block of the JSON tool (see `JSON_TOOL`), whose input is
    /// streamed as the message's text, and whether any of it was sent.
    json_block: Option<(usize, bool)>,
    /// A `stop_reason` (and so a `finish_reason` chunk) has been sent.
    finished: bool,
    /// The provider's name in the config, for the malformed-event count.
    provider: Arc<str>,
    /// Whitespace the client already has that the continuation may repeat
    /// at its start: see [`absorb_leading`].
    absorb: String,
}

impl StreamTranslator {
    fn new(provider: Arc<str>) -> Self {
        StreamTranslator {
            provider,
            absorb: String::new(),
            id: String::new(),
            model: String::new(),
            created: crate::api::unix_now(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cache_read: 0,
            cache_write: 0,
            tools: Vec::new(),
            json_block: None,
            finished: false,
        }
    }

    fn chunk(&self, delta: Delta) -> ChatChunk {
        ChatChunk::with_delta(&self.id, &self.model, self.created, delta)
    }

    fn tool_chunk(&self, tc: ToolCallDelta) -> ChatChunk {
        self.chunk(Delta {
            tool_calls: Some(vec![tc]),
            ..Delta::default()
        })
    }

    fn usage_chunk(&self) -> ChatChunk {
        ChatChunk::usage_only(
            &self.id,
            &self.model,
            self.created,
            Usage::new(self.prompt_tokens, self.completion_tokens)
                .with_cache(self.cache_read, self.cache_write),
        )
    }

    fn record_usage(&mut self, u: &AnthropicUsage) {
        if let Some(p) = u.prompt() {
            self.prompt_tokens = p;
            self.cache_read = u.cache_read_input_tokens.unwrap_or(0);
            self.cache_write = u.cache_creation_input_tokens.unwrap_or(0);
        }
        if let Some(o) = u.output_tokens {
            self.completion_tokens = o;
        }
    }

    /// Translates one event, appending the chunks it produces to `out`. An
    /// `Err` (an error event) ends the stream.
    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let event = match serde_json::from_str::<StreamEvent>(data) {
            Ok(e) => e,
            Err(err) => {
                client::malformed_event(&self.provider, &err);
                return Ok(Flow::Continue);
            }
        };
        match event {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                if let Some(u) = &message.usage {
                    self.record_usage(u);
                }
                out.push(self.chunk(Delta {
                    role: Some("assistant".to_owned()),
                    content: Some(String::new()),
                    ..Delta::default()
                }));
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block: StartBlock::ToolUse { name, .. },
            } if name == JSON_TOOL => self.json_block = Some((index, false)),
            StreamEvent::ContentBlockStart {
                index,
                content_block: StartBlock::ToolUse { id, name },
            } => {
                let tool = self.tools.len() as u32;
                self.tools.push(ToolBlock {
                    block: index,
                    index: tool,
                    has_args: false,
                });
                out.push(self.tool_chunk(ToolCallDelta {
                    index: tool,
                    id: Some(id),
                    kind: Some("function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: Some(name),
                        arguments: Some(String::new()),
                    }),
                    extra: Map::new(),
                }));
            }
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { mut text } => {
                    if !self.absorb.is_empty() {
                        absorb_leading(&mut self.absorb, &mut text);
                    }
                    if !text.is_empty() {
                        out.push(self.chunk(Delta {
                            content: Some(text),
                            ..Delta::default()
                        }));
                    }
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    if partial_json.is_empty() {
                        return Ok(Flow::Continue);
                    }
                    if let Some((block, sent)) = &mut self.json_block {
                        if *block == index {
                            *sent = true;
                            out.push(self.chunk(Delta {
                                content: Some(partial_json),
                                ..Delta::default()
                            }));
                            return Ok(Flow::Continue);
                        }
                    }
                    let Some(tool) = self.tools.iter_mut().rev().find(|t| t.block == index) else {
                        return Ok(Flow::Continue);
                    };
                    tool.has_args = true;
                    let tool = tool.index;
                    out.push(self.tool_chunk(arguments_delta(tool, partial_json)));
                }
                BlockDelta::Other => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                if let Some((block, sent)) = &mut self.json_block {
                    if *block == index && !*sent {
                        *sent = true;
                        out.push(self.chunk(Delta {
                            content: Some("{}".to_owned()),
                            ..Delta::default()
                        }));
                    }
                }
                // A tool called without arguments streams no JSON at all;
                // OpenAI clients expect an object.
                if let Some(tool) = self
                    .tools
                    .iter_mut()
                    .rev()
                    .find(|t| t.block == index && !t.has_args)
                {
                    tool.has_args = true;
                    let tool = tool.index;
                    out.push(self.tool_chunk(arguments_delta(tool, "{}".to_owned())));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.record_usage(u);
                }
                if let Some(reason) = delta.stop_reason.as_deref() {
                    if !self.finished {
                        self.finished = true;
                        // The JSON tool's call is the answer, not a call.
                        let reason = match reason {
                            "tool_use" if self.json_block.is_some() && self.tools.is_empty() => {
                                finish_reason::STOP
                            }
                            r => map_stop_reason(r),
                        };
                        out.push(ChatChunk::finish(
                            &self.id,
                            &self.model,
                            self.created,
                            reason,
                        ));
                    }
                }
            }
            StreamEvent::MessageStop => {
                if !self.finished {
                    self.finished = true;
                    out.push(ChatChunk::finish(
                        &self.id,
                        &self.model,
                        self.created,
                        finish_reason::STOP,
                    ));
                }
                out.push(self.usage_chunk());
                return Ok(Flow::Done);
            }
            StreamEvent::Error { error } => return Err(stream_error(&error)),
            StreamEvent::ContentBlockStart { .. } | StreamEvent::Ping | StreamEvent::Other => {}
        }
        Ok(Flow::Continue)
    }

    /// The stream ended without `message_stop`: complete if a `stop_reason`
    /// was seen, cut otherwise.
    fn on_eof(&mut self, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        if self.finished {
            out.push(self.usage_chunk());
            Ok(())
        } else {
            Err(ProviderError::new(
                Failure::StreamCut,
                "stream ended before message_stop",
            ))
        }
    }
}

fn arguments_delta(index: u32, arguments: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: Some(FunctionCallDelta {
            name: None,
            arguments: Some(arguments),
        }),
        extra: Map::new(),
    }
}

/// Translates an Anthropic event stream into chunks, each forwarded as soon
/// as its event arrives.
fn chunks(
    body: client::UpstreamBody,
    provider: Arc<str>,
    prefill: Option<&str>,
) -> impl futures_util::Stream<Item = Result<Chunk, ProviderError>> + Send {
    let mut translator = StreamTranslator::new(provider);
    // Anthropic refuses a prefill that ends in whitespace, so that is cut
    // from it (see `to_messages`); the model then tends to start its
    // continuation with it again, which the client already has.
    if let Some(p) = prefill {
        translator.absorb = p[p.trim_end().len()..].to_owned();
    }
    Translated::new(client::events(body), translator)
}

impl Translate for StreamTranslator {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<ChatChunk>) -> Result<bool, ProviderError> {
        StreamTranslator::on_event(self, &ev, out).map(|flow| flow == Flow::Done)
    }

    fn on_end(
        &mut self,
        cut: Option<ProviderError>,
        out: &mut Vec<ChatChunk>,
    ) -> Result<(), ProviderError> {
        match cut {
            None => self.on_eof(out),
            // Cut after the finish: the answer is whole.
            Some(_) if self.finished => {
                if self.on_eof(out).is_err() {
                    out.clear();
                }
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

impl tower::Service<AttemptRequest> for Anthropic {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = BoxFuture<Result<ProviderResponse, ProviderError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pooled client has no readiness of its own: it queues on the pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AttemptRequest) -> Self::Future {
        if req.prefill.is_some() && json_answer_schema(&req.chat).is_some() {
            // A JSON answer comes as a forced tool call, which starts the
            // answer afresh: a prefill would be answered from scratch and
            // spliced after the delivered part. Refused like a model that
            // takes no prefill, so a continuation tries `regenerate`.
            return Box::pin(async {
                Err(ProviderError::new(
                    Failure::PrefillUnsupported,
                    "a JSON answer (response_format) is not continued from a prefill on Anthropic",
                ))
            });
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            client::exchange(
                &inner.client,
                inner.endpoint.request(),
                request_body(&req),
                req.chat.is_stream(),
                refine,
                inner.endpoint.secrets(),
                |body| chunks(body, req.target.id.provider.clone(), req.prefill.as_deref()),
                |body| translate_response(&body).map(Completion::from),
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Target;
    use crate::sse::SseDecoder;
    use futures_util::StreamExt;

    fn attempt(chat_json: &str) -> AttemptRequest {
        let chat: ChatRequest = serde_json::from_str(chat_json).unwrap();
        let mut target = Target::new("anthropic", "alias");
        target.upstream_model = "claude-test".into();
        AttemptRequest::new(Arc::new(target), Arc::new(chat))
    }

    fn body_json(req: &AttemptRequest) -> Value {
        serde_json::from_slice(&request_body(req)).unwrap()
    }

    #[test]
    fn system_and_developer_are_lifted_and_joined() {
        let req = attempt(
            r#"{"model":"r","messages":[
                {"role":"system","content":"Be brief."},
                {"role":"user","content":"hi"},
                {"role":"developer","content":[{"type":"text","text":"Use French."}]},
                {"role":"system","content":""}
            ]}"#,
        );
        let v = body_json(&req);
        assert_eq!(v["model"], "claude-test");
        assert_eq!(v["system"], "Be brief.\n\nUse French.");
        assert_eq!(v["messages"].as_array().unwrap().len(), 1);
        assert_eq!(v["messages"][0]["role"], "user");
        assert_eq!(
            v["messages"][0]["content"][0],
            json!({"type":"text","text":"hi"})
        );
        assert!(v.get("stream").is_none());
    }

    /// An OpenAI `file` part holding a base64 PDF is Anthropic's
    /// `document` block; any other file goes as is (Anthropic refuses it).
    #[test]
    fn pdf_file_parts_become_document_blocks() {
        let req = attempt(
            r#"{"model":"r","messages":[{"role":"user","content":[
                {"type":"text","text":"Summarise"},
                {"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0x"}},
                {"type":"file","file":{"file_id":"file-abc"}}]}]}"#,
        );
        let v = body_json(&req);
        let c = v["messages"][0]["content"].as_array().unwrap();
        assert_eq!(
            c[1],
            json!({"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}})
        );
        assert_eq!(c[2], json!({"type":"file","file":{"file_id":"file-abc"}}));
    }

    #[test]
    fn consecutive_same_role_messages_merge_and_empty_ones_vanish() {
        let req = attempt(
            r#"{"model":"r","messages":[
                {"role":"user","content":"one"},
                {"role":"user","content":"two"},
                {"role":"assistant","content":""},
                {"role":"user","content":[{"type":"text","text":"three"},
                    {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},
                    {"type":"image_url","image_url":{"url":"https://x.test/a.jpg"}}]},
                {"role":"assistant","content":"ok"},
                {"role":"assistant","content":"more"}
            ]}"#,
        );
        let v = body_json(&req);
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2, "{v}");
        assert_eq!(msgs[0]["role"], "user");
        let c = msgs[0]["content"].as_array().unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(c[0]["text"], "one");
        assert_eq!(c[1]["text"], "two");
        assert_eq!(c[2]["text"], "three");
        assert_eq!(
            c[3],
            json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}})
        );
        assert_eq!(
            c[4],
            json!({"type":"image","source":{"type":"url","url":"https://x.test/a.jpg"}})
        );
        assert_eq!(msgs[1]["role"], "assistant");
        assert_eq!(msgs[1]["content"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn tools_tool_calls_and_tool_results_translate() {
        let req = attempt(
            r#"{"model":"r","messages":[
                {"role":"user","content":"weather?"},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"city\":\"Paris\"}"}},
                    {"id":"call_2","type":"function","function":{"name":"get","arguments":"not json"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"sunny"},
                {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"rain"}]},
                {"role":"user","content":"thanks"}
            ],
            "tools":[
                {"type":"function","function":{"name":"get","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
                {"type":"function","function":{"name":"noargs"}}],
            "tool_choice":{"type":"function","function":{"name":"get"}},
            "parallel_tool_calls":false}"#,
        );
        let v = body_json(&req);
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "{v}");
        assert_eq!(
            msgs[1]["content"][0],
            json!({"type":"tool_use","id":"call_1","name":"get","input":{"city":"Paris"}})
        );
        assert_eq!(msgs[1]["content"][1]["input"], json!({}));
        assert_eq!(
            serde_json::to_value(ToolInput::parse(" {\"x\": [1]} \n")).unwrap(),
            json!({"x": [1]})
        );
        assert_eq!(
            serde_json::to_value(ToolInput::parse("[1]")).unwrap(),
            json!({})
        );
        assert_eq!(
            serde_json::to_value(ToolInput::parse("")).unwrap(),
            json!({})
        );
        assert_eq!(msgs[2]["role"], "user");
        let c = msgs[2]["content"].as_array().unwrap();
        assert_eq!(
            c[0],
            json!({"type":"tool_result","tool_use_id":"call_1","content":"sunny"})
        );
        assert_eq!(
            c[1],
            json!({"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"rain"}]})
        );
        assert_eq!(c[2], json!({"type":"text","text":"thanks"}));
        assert_eq!(v["tools"][0]["name"], "get");
        assert_eq!(v["tools"][0]["description"], "Weather");
        assert_eq!(
            v["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            v["tools"][1],
            json!({"name":"noargs","input_schema":{"type":"object"}})
        );
        assert_eq!(
            v["tool_choice"],
            json!({"type":"tool","name":"get","disable_parallel_tool_use":true})
        );
    }

    #[test]
    fn tool_choice_strings_map() {
        for (openai, anthropic) in [("auto", "auto"), ("required", "any"), ("none", "none")] {
            let req = attempt(&format!(
                r#"{{"model":"r","messages":[{{"role":"user","content":"x"}}],"tool_choice":"{openai}"}}"#
            ));
            assert_eq!(body_json(&req)["tool_choice"], json!({"type": anthropic}));
        }
    }

    #[test]
    fn params_max_tokens_stop_user_and_stream() {
        let req = attempt(r#"{"model":"r","messages":[{"role":"user","content":"x"}]}"#);
        let v = body_json(&req);
        assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(v.get("stop_sequences").is_none());
        assert!(v.get("metadata").is_none());

        let req = attempt(
            r#"{"model":"r","messages":[{"role":"user","content":"x"}],"max_tokens":10,
                "max_completion_tokens":20,"stop":"END","temperature":0.5,"top_p":0.9,
                "user":"u-1","stream":true,"seed":3}"#,
        );
        let v = body_json(&req);
        assert_eq!(v["max_tokens"], 20);
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["temperature"], 0.5);
        assert!(
            v.get("top_p").is_none(),
            "only temperature when both are set"
        );
        assert_eq!(v["metadata"], json!({"user_id":"u-1"}));
        assert_eq!(v["stream"], true);
        assert!(v.get("seed").is_none());

        let req = attempt(
            r#"{"model":"r","messages":[{"role":"user","content":"x"}],"max_tokens":10,"stop":["a","b"]}"#,
        );
        let v = body_json(&req);
        assert_eq!(v["max_tokens"], 10);
        assert_eq!(v["stop_sequences"], json!(["a", "b"]));

        // Anthropic refuses a stop sequence of whitespace alone.
        let req = attempt(
            r#"{"model":"r","messages":[{"role":"user","content":"x"}],"stop":["\n"," \t","\n\nHuman:"]}"#,
        );
        assert_eq!(body_json(&req)["stop_sequences"], json!(["\n\nHuman:"]));
        let req =
            attempt(r#"{"model":"r","messages":[{"role":"user","content":"x"}],"stop":"\n"}"#);
        assert!(body_json(&req).get("stop_sequences").is_none());
    }

    /// The model's `max_output_tokens` is the cap sent when the client gives
    /// none, and lowers a larger one (a 400 otherwise).
    #[test]
    fn the_model_s_output_limit_is_the_default_and_the_ceiling() {
        let with_limit = |chat: &str| {
            let mut req = attempt(chat);
            let mut t = (*req.target).clone();
            t.max_output_tokens = Some(64_000);
            req.target = Arc::new(t);
            body_json(&req)["max_tokens"].clone()
        };
        assert_eq!(
            with_limit(r#"{"model":"r","messages":[{"role":"user","content":"x"}]}"#),
            64_000
        );
        assert_eq!(
            with_limit(
                r#"{"model":"r","messages":[{"role":"user","content":"x"}],"max_tokens":100000}"#
            ),
            64_000
        );
        assert_eq!(
            with_limit(
                r#"{"model":"r","messages":[{"role":"user","content":"x"}],"max_completion_tokens":500}"#
            ),
            500
        );
    }

    /// OpenAI's temperature runs to 2, Anthropic's to 1; newer Claude
    /// models refuse `temperature` and `top_p` together.
    #[test]
    fn sampling_parameters_fit_anthropic() {
        let sampling = |params: &str| {
            let v = body_json(&attempt(&format!(
                r#"{{"model":"r","messages":[{{"role":"user","content":"x"}}]{params}}}"#
            )));
            (v.get("temperature").cloned(), v.get("top_p").cloned())
        };
        assert_eq!(sampling(r#","temperature":1.5"#), (Some(json!(1.0)), None));
        assert_eq!(sampling(r#","temperature":2"#), (Some(json!(1.0)), None));
        assert_eq!(sampling(r#","temperature":1"#), (Some(json!(1.0)), None));
        assert_eq!(sampling(r#","temperature":0.7"#), (Some(json!(0.7)), None));
        assert_eq!(sampling(r#","temperature":0"#), (Some(json!(0.0)), None));
        assert_eq!(
            sampling(r#","temperature":1.3,"top_p":0.9"#),
            (Some(json!(1.0)), None)
        );
        assert_eq!(sampling(r#","top_p":0.9"#), (None, Some(json!(0.9))));
        assert_eq!(sampling(""), (None, None));
    }

    #[test]
    fn prefill_is_a_final_assistant_turn_without_trailing_whitespace() {
        let mut req = attempt(r#"{"model":"r","messages":[{"role":"user","content":"story"}]}"#);
        req.prefill = Some("Once upon a \n".into());
        let v = body_json(&req);
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1]["role"], "assistant");
        assert_eq!(
            msgs[1]["content"],
            json!([{"type":"text","text":"Once upon a"}])
        );

        // Whitespace-only prefill adds nothing.
        req.prefill = Some("  ".into());
        let v = body_json(&req);
        assert_eq!(v["messages"].as_array().unwrap().len(), 1);

        // A client's own trailing assistant message is continued by the prefill.
        let mut req = attempt(
            r#"{"model":"r","messages":[{"role":"user","content":"story"},{"role":"assistant","content":"Once "}]}"#,
        );
        let v = body_json(&req);
        assert_eq!(
            v["messages"][1]["content"],
            json!([{"type":"text","text":"Once"}])
        );
        req.prefill = Some("upon ".into());
        let v = body_json(&req);
        assert_eq!(
            v["messages"][1]["content"],
            json!([{"type":"text","text":"Once "},{"type":"text","text":"upon"}])
        );
    }

    #[test]
    fn response_translates_text_tools_finish_and_usage() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
            "content":[{"type":"thinking","thinking":"hmm","signature":"s"},
                {"type":"text","text":"Let me "},{"type":"text","text":"check."},
                {"type":"tool_use","id":"toolu_1","name":"get","input":{"city":"Paris"}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":2}}"#;
        let c = translate_response(body).unwrap();
        assert_eq!(c.id, "msg_1");
        assert_eq!(c.object, "chat.completion");
        assert_eq!(c.model, "claude-x");
        assert!(c.created > 0);
        let m = &c.choices[0].message;
        assert_eq!(m.role, "assistant");
        assert_eq!(m.content.as_deref(), Some("Let me check."));
        let calls = m.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].id, "toolu_1");
        assert_eq!(calls[0].kind, "function");
        assert_eq!(calls[0].function.name, "get");
        let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
        assert_eq!(args, json!({"city":"Paris"}));
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(c.usage, Some(Usage::new(12, 5).with_cache(2, 0)));

        let body = br#"{"id":"m","model":"c","content":[],"stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let c = translate_response(body).unwrap();
        assert_eq!(c.choices[0].message.content, None);
        assert_eq!(c.choices[0].message.tool_calls, None);
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("length"));

        assert!(translate_response(b"{}").is_err());
    }

    #[test]
    fn stop_reasons_map() {
        assert_eq!(map_stop_reason("end_turn"), "stop");
        assert_eq!(map_stop_reason("stop_sequence"), "stop");
        assert_eq!(map_stop_reason("pause_turn"), "stop");
        assert_eq!(map_stop_reason("max_tokens"), "length");
        assert_eq!(map_stop_reason("tool_use"), "tool_calls");
        assert_eq!(map_stop_reason("refusal"), "content_filter");
    }

    #[test]
    fn errors_are_classified() {
        let h = http::HeaderMap::new();
        let base = |s: StatusCode| ProviderError::from_status(s, &h, "");
        let e = refine(
            StatusCode::BAD_REQUEST,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
            base(StatusCode::BAD_REQUEST),
        );
        assert_eq!(e.failure, Failure::ContextLength);
        assert!(e.message.starts_with("prompt is too long"));

        let e = refine(
            StatusCode::BAD_REQUEST,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."}}"#,
            base(StatusCode::BAD_REQUEST),
        );
        assert_eq!(e.failure, Failure::Client { status: 400 });
        assert!(e.message.contains("prefill"));

        let e = refine(
            StatusCode::from_u16(529).unwrap(),
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            base(StatusCode::from_u16(529).unwrap()),
        );
        assert_eq!(e.failure, Failure::Overloaded);
        assert_eq!(e.message, "Overloaded");

        let e = refine(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            base(StatusCode::INTERNAL_SERVER_ERROR),
        );
        assert_eq!(e.failure, Failure::Overloaded);

        let e = refine(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
            base(StatusCode::TOO_MANY_REQUESTS),
        );
        assert_eq!(e.failure, Failure::RateLimited);

        let e = refine(
            StatusCode::UNAUTHORIZED,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            base(StatusCode::UNAUTHORIZED),
        );
        assert_eq!(e.failure, Failure::TargetRefused { status: 401 });
        assert_eq!(e.message, "invalid x-api-key");

        // The account behind the key: credits run out, billing, a disabled
        // organization. Anthropic sends these as a 400 (or a 402): the target
        // is refused, not the request.
        for (status, body) in [
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"This organization has been disabled."}}"#,
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"billing_error","message":"billing issue"}}"#,
            ),
            (
                402,
                r#"{"type":"error","error":{"type":"billing_error","message":"billing issue"}}"#,
            ),
            (402, "<html>"),
        ] {
            let code = StatusCode::from_u16(status).unwrap();
            let e = refine(code, body.as_bytes(), base(code));
            assert_eq!(e.failure, Failure::TargetRefused { status }, "{body}");
            assert_eq!(e.status, Some(status));
            assert!(e.failure.counts_against_target());
        }
        let e = stream_error(&ErrorFields {
            kind: Some("billing_error".into()),
            message: Some("billing issue".into()),
        });
        assert_eq!(e.failure, Failure::TargetRefused { status: 402 });

        let e = refine(
            StatusCode::BAD_GATEWAY,
            b"<html>",
            base(StatusCode::BAD_GATEWAY),
        );
        assert_eq!(e.failure, Failure::Server { status: 502 });
    }

    /// A request for JSON (and no tools) asks Anthropic for it through one
    /// forced tool whose input schema is the client's; the tool's input
    /// comes back as the message's JSON text with `stop`, whole or
    /// streamed. With tools of its own, or a schema that is not an object,
    /// the request goes as before.
    #[test]
    fn a_json_answer_is_asked_for_through_a_forced_tool_and_given_back_as_text() {
        let schema =
            json!({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]});
        let req = attempt(
            &json!({"model":"r","messages":[{"role":"user","content":"where?"}],
                    "response_format":{"type":"json_schema","json_schema":{"name":"place","schema":schema}}})
            .to_string(),
        );
        let v = body_json(&req);
        assert_eq!(v["tools"][0]["name"], JSON_TOOL);
        assert_eq!(v["tools"][0]["input_schema"], schema);
        assert_eq!(v["tool_choice"], json!({"type":"tool","name":JSON_TOOL}));
        let v = body_json(&attempt(
            r#"{"model":"r","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
        ));
        assert_eq!(v["tools"][0]["input_schema"], json!({"type":"object"}));
        // Not for a request with tools, an array schema, or plain text.
        for other in [
            r#"{"model":"r","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},
                "tools":[{"type":"function","function":{"name":"get","parameters":{"type":"object"}}}]}"#,
            r#"{"model":"r","messages":[{"role":"user","content":"x"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"l","schema":{"type":"array"}}}}"#,
            r#"{"model":"r","messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"}}"#,
        ] {
            let v = body_json(&attempt(other));
            assert!(
                v["tools"]
                    .as_array()
                    .is_none_or(|t| t.iter().all(|t| t["name"] != JSON_TOOL)),
                "{other}: {v}"
            );
        }

        // Whole.
        let body = json!({"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
            "content":[{"type":"tool_use","id":"toolu_1","name":JSON_TOOL,"input":{"city":"Paris"}}],
            "stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":7}});
        let c = translate_response(body.to_string().as_bytes()).unwrap();
        let m = &c.choices[0];
        assert_eq!(m.message.content.as_deref(), Some(r#"{"city":"Paris"}"#));
        assert!(m.message.tool_calls.is_none());
        assert_eq!(m.finish_reason.as_deref(), Some("stop"));

        // Streamed.
        let raw = format!("\
event: message_start
data: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_2\",\"model\":\"claude-x\",\"usage\":{{\"input_tokens\":5,\"output_tokens\":1}}}}}}

event: content_block_start
data: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"{JSON_TOOL}\",\"input\":{{}}}}}}

event: content_block_delta
data: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{{\\\"city\\\": \"}}}}

event: content_block_delta
data: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}}\"}}}}

event: content_block_stop
data: {{\"type\":\"content_block_stop\",\"index\":0}}

event: message_delta
data: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"tool_use\"}},\"usage\":{{\"output_tokens\":7}}}}

event: message_stop
data: {{\"type\":\"message_stop\"}}

");
        let (chunks, end) = run(&events(&raw));
        assert!(end.unwrap());
        let text: String = chunks.iter().map(ChatChunk::text).collect();
        assert_eq!(text, r#"{"city": "Paris"}"#);
        assert!(chunks
            .iter()
            .all(|c| c.choices.iter().all(|ch| ch.delta.tool_calls.is_none())));
        let finish: Vec<_> = chunks.iter().filter_map(|c| c.finish_reason()).collect();
        assert_eq!(finish, ["stop"]);
    }

    /// A JSON answer is not continued from a prefill (it would start over):
    /// refused like a model that takes none, before anything is sent.
    #[tokio::test]
    async fn a_json_answer_refuses_a_prefill() {
        use tower::ServiceExt;
        let svc = Anthropic::new("http://127.0.0.1:9", None, client::http_client());
        let mut req = attempt(
            r#"{"model":"r","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
        );
        req.prefill = Some("{\"ci".into());
        let e = svc.oneshot(req).await.unwrap_err();
        assert_eq!(e.failure, Failure::PrefillUnsupported);
    }

    /// Decodes a recorded SSE transcript into events.
    fn events(raw: &str) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        d.push(raw.as_bytes());
        let mut out = Vec::new();
        while let Some(ev) = d.next_event().unwrap() {
            out.push(ev);
        }
        out.extend(d.finish());
        out
    }

    /// Runs the translator over events: the chunks, and how it ended
    /// (`Ok(true)` at message_stop, `Ok(false)` at the end of the events).
    fn run(events: &[SseEvent]) -> (Vec<ChatChunk>, Result<bool, ProviderError>) {
        let mut tr = StreamTranslator::new(Arc::from("anthropic"));
        let mut out = Vec::new();
        for ev in events {
            match tr.on_event(ev, &mut out) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) => return (out, Ok(true)),
                Err(e) => return (out, Err(e)),
            }
        }
        let end = tr.on_eof(&mut out).map(|()| false);
        (out, end)
    }

    const TEXT_AND_TOOL: &str = "\
event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking\"}}

event: content_block_delta
data: {not json

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" now.\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":1}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"now\",\"input\":{}}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":2}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

    #[test]
    fn stream_translates_text_tools_finish_and_usage() {
        let (chunks, end) = run(&events(TEXT_AND_TOOL));
        assert_eq!(end, Ok(true));
        assert!(chunks
            .iter()
            .all(|c| c.id == "msg_1" && c.model == "claude-x" && c.created == chunks[0].created));
        assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"));
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        assert!(!chunks[0].has_content());
        let text: String = chunks.iter().map(ChatChunk::text).collect();
        assert_eq!(text, "Checking now.");

        let tool_deltas: Vec<&ToolCallDelta> = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .flat_map(|c| c.delta.tool_calls.iter().flatten())
            .collect();
        let start = tool_deltas[0];
        assert_eq!(start.index, 0);
        assert_eq!(start.id.as_deref(), Some("toolu_1"));
        assert_eq!(start.kind.as_deref(), Some("function"));
        let f = start.function.as_ref().unwrap();
        assert_eq!(
            (f.name.as_deref(), f.arguments.as_deref()),
            (Some("get"), Some(""))
        );
        let args = |index: u32| -> String {
            tool_deltas
                .iter()
                .filter(|t| t.index == index)
                .filter_map(|t| t.function.as_ref()?.arguments.clone())
                .collect()
        };
        assert_eq!(
            serde_json::from_str::<Value>(&args(0)).unwrap(),
            json!({"city":"Paris"})
        );
        // The second tool call has its own index, and no-argument calls get `{}`.
        assert_eq!(tool_deltas.iter().filter(|t| t.id.is_some()).count(), 2);
        assert_eq!(args(1), "{}");

        let finish: Vec<_> = chunks.iter().filter_map(ChatChunk::finish_reason).collect();
        assert_eq!(finish, ["tool_calls"]);
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        assert_eq!(last.usage, Some(Usage::new(25, 42)));
        assert_eq!(chunks[chunks.len() - 2].finish_reason(), Some("tool_calls"));
    }

    #[test]
    fn stream_error_event_ends_with_a_classified_error() {
        let raw = "\
event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}

event: error
data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}

event: message_stop
data: {\"type\":\"message_stop\"}

";
        let (chunks, end) = run(&events(raw));
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].text(), "Hi");
        let err = end.unwrap_err();
        assert_eq!(err.failure, Failure::Overloaded);
        assert_eq!(err.message, "Overloaded");

        for (kind, failure) in [
            ("api_error", Failure::Server { status: 500 }),
            ("rate_limit_error", Failure::RateLimited),
            ("mystery_error", Failure::Server { status: 500 }),
        ] {
            let ev = SseEvent {
                event: Some("error".into()),
                data: format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"m"}}}}"#),
                id: None,
            };
            let (_, end) = run(&[ev]);
            assert_eq!(end.unwrap_err().failure, failure, "{kind}");
        }
    }

    #[test]
    fn stream_cut_before_stop_reason_is_stream_cut() {
        let raw = TEXT_AND_TOOL
            .split("event: content_block_stop")
            .next()
            .unwrap();
        let (chunks, end) = run(&events(raw));
        assert!(chunks.iter().all(|c| c.finish_reason().is_none()));
        assert_eq!(end.unwrap_err().failure, Failure::StreamCut);
    }

    #[test]
    fn stream_cut_after_stop_reason_finishes_with_usage() {
        let raw = TEXT_AND_TOOL.split("event: message_stop").next().unwrap();
        let (chunks, end) = run(&events(raw));
        assert_eq!(end, Ok(false));
        let last = chunks.last().unwrap();
        assert_eq!(last.usage, Some(Usage::new(25, 42)));
        assert_eq!(chunks[chunks.len() - 2].finish_reason(), Some("tool_calls"));
    }

    /// Prompt-cache reads and writes are prompt tokens, broken down as
    /// OpenAI does (`cached_tokens`), in a stream's usage as in a whole
    /// answer's: the cost of a cached prompt is a tenth of a fresh one's.
    #[test]
    fn prompt_cache_tokens_reach_the_usage_breakdown() {
        let cached = TEXT_AND_TOOL.replace(
            r#""usage":{"input_tokens":25,"output_tokens":1}"#,
            r#""usage":{"input_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000,"output_tokens":1}"#,
        );
        assert_ne!(cached, TEXT_AND_TOOL);
        let (chunks, _) = run(&events(&cached));
        let usage = chunks.last().unwrap().usage.unwrap();
        assert_eq!(usage.prompt_tokens, 1105);
        assert_eq!(
            (usage.cached_tokens(), usage.cache_write_tokens()),
            (1000, 100)
        );
        let json = serde_json::to_value(usage).unwrap();
        assert_eq!(json["prompt_tokens_details"]["cached_tokens"], 1000);

        let body = br#"{"id":"m","model":"c","content":[],"stop_reason":"end_turn",
            "usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000}}"#;
        let usage = translate_response(body).unwrap().usage.unwrap();
        assert_eq!(usage, Usage::new(1110, 5).with_cache(1000, 100));
    }

    /// A prefill's trailing whitespace is cut (Anthropic refuses it); the
    /// model's continuation often starts with it again, which the client
    /// already has: it is dropped, across deltas, and only while it repeats.
    #[test]
    fn a_continuation_does_not_repeat_the_whitespace_cut_from_its_prefill() {
        let cases: [(&str, &[&str], &str); 6] = [
            (" ", &[" world"], "world"),
            ("\n\n", &["\n", "\nNext", " line"], "Next line"),
            ("\n\n", &["\nNext"], "Next"),
            (" ", &["world"], "world"),
            (" ", &["\nfoo"], "\nfoo"),
            ("", &["  x"], "  x"),
        ];
        for (cut, deltas, want) in cases {
            let mut absorb = cut.to_owned();
            let mut got = String::new();
            for d in deltas {
                let mut text = (*d).to_owned();
                if !absorb.is_empty() {
                    absorb_leading(&mut absorb, &mut text);
                }
                got.push_str(&text);
            }
            assert_eq!(got, want, "cut {cut:?}, deltas {deltas:?}");
        }
        // Through the stream: the prefill "Hello " was sent as "Hello".
        let raw = "\
event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":5}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" \"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"world \"}}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}

event: message_stop
data: {\"type\":\"message_stop\"}

";
        let mut tr = StreamTranslator::new(Arc::from("anthropic"));
        tr.absorb = " ".to_owned();
        let mut out = Vec::new();
        for ev in &events(raw) {
            if tr.on_event(ev, &mut out).unwrap() == Flow::Done {
                break;
            }
        }
        let text: String = out
            .iter()
            .filter_map(|c| c.choices.first()?.delta.content.clone())
            .collect();
        assert_eq!(
            text, "world ",
            "the repeated space is dropped, the rest kept"
        );
    }

    /// Counts near `u64::MAX` (a broken or hostile provider) saturate
    /// instead of overflowing: a panic in a debug build, a wrap in release.
    #[test]
    fn huge_usage_counts_saturate() {
        let body = br#"{"id":"m","model":"c","content":[],"stop_reason":"end_turn",
            "usage":{"input_tokens":18446744073709551615,"output_tokens":18446744073709551615,"cache_read_input_tokens":7}}"#;
        let usage = translate_response(body).unwrap().usage.unwrap();
        assert_eq!(usage.prompt_tokens, u64::MAX);
        assert_eq!(usage.total_tokens, u64::MAX);
    }

    /// A one-shot HTTP/1.1 server: returns the address and a handle that
    /// yields the raw request it received.
    async fn serve_once(
        status: &'static str,
        content_type: &'static str,
        body: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            loop {
                let n = sock.read(&mut tmp).await.unwrap();
                buf.extend_from_slice(&tmp[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= head_end + 4 + len || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
            String::from_utf8_lossy(&buf).into_owned()
        });
        (format!("http://{addr}"), handle)
    }

    /// An upstream (or a proxy in front of it) that echoes the request's key
    /// in its error: the key reaches neither the client nor the trace.
    #[tokio::test]
    async fn an_error_that_echoes_the_key_does_not_carry_it_on() {
        use tower::ServiceExt;
        let key = "sk-ant-api03-ECHOED-SECRET-42";
        let body = format!(
            r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"bad request from x-api-key {key}"}}}}"#
        );
        let (base, server) = serve_once("400 Bad Request", "application/json", body).await;
        let svc = Anthropic::new(&base, Some(Secret::new(key)), client::http_client());
        let req = attempt(r#"{"model":"r","messages":[{"role":"user","content":"x"}]}"#);
        let err = svc.oneshot(req).await.unwrap_err();
        assert!(!err.message.contains("ECHOED-SECRET"), "{}", err.message);
        assert!(err.message.contains("x-api-key ***"), "{}", err.message);
        assert!(server.await.unwrap().contains(key), "the key was sent");
    }

    #[tokio::test]
    async fn service_sends_headers_and_streams() {
        use tower::ServiceExt;
        let (base, server) =
            serve_once("200 OK", "text/event-stream", TEXT_AND_TOOL.to_owned()).await;
        let svc = Anthropic::new(
            &format!("{base}/"),
            Some(Secret::new("sk-test")),
            client::http_client(),
        );
        let req =
            attempt(r#"{"model":"r","messages":[{"role":"user","content":"x"}],"stream":true}"#);
        let resp = svc.oneshot(req).await.unwrap();
        let ProviderResponse::Stream(stream) = resp else {
            panic!("expected a stream");
        };
        let items: Vec<_> = stream.collect().await;
        assert!(items.iter().all(Result::is_ok));
        let last = items.last().unwrap().as_ref().unwrap();
        assert_eq!(last.usage(), Some(Usage::new(25, 42)));

        let raw = server.await.unwrap().to_ascii_lowercase();
        assert!(raw.starts_with("post /v1/messages http/1.1"), "{raw}");
        assert!(raw.contains("x-api-key: sk-test"));
        assert!(raw.contains("anthropic-version: 2023-06-01"));
        assert!(raw.contains("content-type: application/json"));
        assert!(raw.contains("\"stream\":true"));
    }

    #[tokio::test]
    async fn service_classifies_error_responses_and_completes() {
        use tower::ServiceExt;
        let (base, server) = serve_once(
            "529 Overloaded",
            "application/json",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                .to_owned(),
        )
        .await;
        let svc = Anthropic::new(&base, None, client::http_client());
        let req = attempt(r#"{"model":"r","messages":[{"role":"user","content":"x"}]}"#);
        let err = svc.oneshot(req).await.unwrap_err();
        assert_eq!(err.failure, Failure::Overloaded);
        assert_eq!(err.message, "Overloaded");
        let raw = server.await.unwrap().to_ascii_lowercase();
        assert!(!raw.contains("x-api-key"));

        let (base, _server) = serve_once(
            "200 OK",
            "application/json",
            r#"{"id":"msg_9","model":"claude-x","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#.to_owned(),
        )
        .await;
        let svc = Anthropic::new(&base, None, client::http_client());
        let req = attempt(r#"{"model":"r","messages":[{"role":"user","content":"x"}]}"#);
        let ProviderResponse::Complete(c) = svc.oneshot(req).await.unwrap() else {
            panic!("expected a completion");
        };
        let c = c.parsed().expect("a translated completion");
        assert_eq!(c.choices[0].message.content.as_deref(), Some("hello"));
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
    }
}
