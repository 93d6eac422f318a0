//! The three wire formats: request reading, answer bodies, stream events and
//! error bodies.

use bytes::Bytes;
use serde_json::{json, Value};

use super::tools::{self, ToolAction};
use super::{ErrorFlavor, THOUGHT_SIGNATURE};
use crate::sse::{encode_data, encode_done, encode_event, encode_json};

/// Which API a request came in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Format {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }
}

/// What the mock needs from a request body.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// OpenAI: `stream_options.include_usage`.
    pub include_usage: bool,
    /// Characters of the system prompt and messages.
    pub prompt_chars: usize,
    /// The text of a trailing assistant (`model`) message.
    pub prefill: Option<String>,
    /// The output cap.
    pub max_tokens: Option<u64>,
    /// What the declared tools and the conversation's end ask for.
    pub tool: Option<ToolAction>,
}

/// A request the real API would reject: the 400 message.
pub(crate) type Invalid = String;

/// The model and stream flag of an OpenAI or Anthropic body (Gemini's come from the path).
pub(crate) fn model_and_stream(body: &Value) -> (String, bool) {
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    (model, stream)
}

/// Characters of every string in `v` except structural keys.
fn text_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "role" | "type" | "id" | "tool_call_id" | "tool_use_id" | "mimeType" | "detail"
                )
            })
            .map(|(_, v)| text_chars(v))
            .sum(),
        _ => 0,
    }
}

/// The text of a content value: a string, or parts/blocks with `text` fields.
pub(super) fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"].as_str().map_or(true, |t| t == "text"))
            .filter_map(|p| p["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

pub(crate) fn parse_openai(body: &Value) -> Result<Parsed, Invalid> {
    if !body["model"].is_string() {
        return Err("you must provide a model parameter".into());
    }
    let messages = body["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or("'messages' must be a non-empty array")?;
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if !matches!(
            role,
            "system" | "developer" | "user" | "assistant" | "tool" | "function"
        ) {
            return Err(format!("Invalid value for 'messages[{i}].role': '{role}'"));
        }
    }
    if !body["stream_options"].is_null() && body["stream"] != true {
        return Err(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into(),
        );
    }
    let tool = tools::openai(body, messages)?;
    let last = messages.last().unwrap_or(&Value::Null);
    Ok(Parsed {
        include_usage: body["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
        prompt_chars: text_chars(&body["messages"]),
        prefill: (last["role"] == "assistant").then(|| content_text(&last["content"])),
        max_tokens: body["max_completion_tokens"]
            .as_u64()
            .or_else(|| body["max_tokens"].as_u64()),
        tool,
    })
}

pub(crate) fn parse_anthropic(body: &Value, has_version: bool) -> Result<Parsed, Invalid> {
    if !has_version {
        return Err("anthropic-version: header is required".into());
    }
    if !body["model"].is_string() {
        return Err("model: Field required".into());
    }
    let Some(max_tokens) = body["max_tokens"].as_u64() else {
        return Err("max_tokens: Field required".into());
    };
    let messages = body["messages"]
        .as_array()
        .ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if !matches!(role, "user" | "assistant") {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
    }
    let last = messages.last().unwrap_or(&Value::Null);
    let prefill = (last["role"] == "assistant").then(|| content_text(&last["content"]));
    if prefill
        .as_deref()
        .is_some_and(|p| p.ends_with(char::is_whitespace))
    {
        return Err("messages: final assistant content cannot end with trailing whitespace".into());
    }
    let tool = tools::anthropic(body, messages)?;
    Ok(Parsed {
        include_usage: false,
        prompt_chars: text_chars(&body["system"]) + text_chars(&body["messages"]),
        prefill,
        max_tokens: Some(max_tokens),
        tool,
    })
}

/// A Gemini body for `model` (from the path).
pub(crate) fn parse_gemini(body: &Value, model: &str) -> Result<Parsed, Invalid> {
    let contents = body["contents"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    for (i, c) in contents.iter().enumerate() {
        match c.get("role").map(|r| r.as_str().unwrap_or("")) {
            None | Some("user") | Some("model") => {}
            Some(role) => {
                return Err(format!(
                    "* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model. Got '{role}'."
                ))
            }
        }
    }
    let tool = tools::gemini(body, contents, model)?;
    let last = contents.last().unwrap_or(&Value::Null);
    Ok(Parsed {
        include_usage: false,
        prompt_chars: text_chars(&body["systemInstruction"]) + text_chars(&body["contents"]),
        prefill: (last["role"] == "model").then(|| content_text(&last["parts"])),
        max_tokens: body["generationConfig"]["maxOutputTokens"].as_u64(),
        tool,
    })
}

/// Splits text into words, each with its leading whitespace, so that the
/// pieces concatenate to the text exactly.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_space = false;
    for c in text.chars() {
        let space = c.is_whitespace();
        if space && !prev_space && !cur.is_empty() && !cur.chars().all(char::is_whitespace) {
            pieces.push(std::mem::take(&mut cur));
        }
        cur.push(c);
        prev_space = space;
    }
    if !cur.is_empty() {
        match pieces.last_mut() {
            // Trailing whitespace belongs to the last word.
            Some(last) if cur.chars().all(char::is_whitespace) => last.push_str(&cur),
            _ => pieces.push(cur),
        }
    }
    pieces
}

/// One answer, ready to be rendered in any format.
#[derive(Debug)]
pub(crate) struct Answer {
    pub id: String,
    pub model: String,
    pub created: u64,
    /// The words to send, each with its leading whitespace.
    pub pieces: Vec<String>,
    /// Whether the output cap cut the answer short.
    pub truncated: bool,
    pub prompt_tokens: u64,
    pub include_usage: bool,
    /// A tool call instead of text: `pieces` are then its argument fragments.
    pub call: Option<Call>,
}

/// The one tool call of an answer.
#[derive(Debug)]
pub(crate) struct Call {
    /// OpenAI `call_mockN`, Anthropic `toolu_mockN`; Gemini calls have none.
    pub id: String,
    pub name: String,
    pub args: Value,
}

impl Answer {
    /// Builds the answer from the model's full text and the request.
    pub(crate) fn new(
        format: Format,
        request_no: u64,
        model: &str,
        full: &str,
        parsed: &Parsed,
    ) -> Answer {
        let echo;
        let full = match &parsed.tool {
            Some(ToolAction::Echo(results)) => {
                echo = tools::echo_text(results);
                echo.as_str()
            }
            _ => full,
        };
        let text = match parsed.prefill.as_deref() {
            Some(p) if !p.is_empty() && full.starts_with(p) => &full[p.len()..],
            _ => full,
        };
        let mut pieces = split_words(text);
        let mut truncated = false;
        if let Some(max) = parsed.max_tokens {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if pieces.len() > max {
                pieces.truncate(max);
                truncated = true;
            }
        }
        let id = match format {
            Format::OpenAi => format!("chatcmpl-mock{request_no}"),
            Format::Anthropic => format!("msg_mock{request_no}"),
            Format::Gemini => format!("mock{request_no}"),
        };
        let call = match &parsed.tool {
            Some(ToolAction::Call { name, args }) => {
                pieces = tools::json_fragments(&args.to_string());
                truncated = false;
                Some(Call {
                    id: match format {
                        Format::OpenAi => format!("call_mock{request_no}"),
                        Format::Anthropic => format!("toolu_mock{request_no}"),
                        Format::Gemini => String::new(),
                    },
                    name: name.clone(),
                    args: args.clone(),
                })
            }
            _ => None,
        };
        Answer {
            id,
            model: model.to_owned(),
            created: crate::api::unix_now(),
            pieces,
            truncated,
            prompt_tokens: parsed.prompt_chars.div_ceil(4) as u64,
            include_usage: parsed.include_usage,
            call,
        }
    }

    fn text(&self) -> String {
        self.pieces.concat()
    }

    fn completion_tokens(&self) -> u64 {
        self.pieces.len() as u64
    }

    fn finish(&self, format: Format) -> &'static str {
        if self.call.is_some() {
            return match format {
                Format::OpenAi => "tool_calls",
                Format::Anthropic => "tool_use",
                Format::Gemini => "STOP",
            };
        }
        match (format, self.truncated) {
            (Format::OpenAi, false) => "stop",
            (Format::OpenAi, true) => "length",
            (Format::Anthropic, false) => "end_turn",
            (Format::Anthropic, true) => "max_tokens",
            (Format::Gemini, false) => "STOP",
            (Format::Gemini, true) => "MAX_TOKENS",
        }
    }

    /// The non-stream response body.
    pub(crate) fn complete_body(&self, format: Format) -> Value {
        let (p, c) = (self.prompt_tokens, self.completion_tokens());
        match format {
            Format::OpenAi => json!({
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [{
                    "index": 0,
                    "message": match &self.call {
                        None => json!({"role": "assistant", "content": self.text(), "refusal": null}),
                        Some(call) => json!({
                            "role": "assistant",
                            "content": null,
                            "tool_calls": [{
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": self.text()},
                            }],
                            "refusal": null,
                        }),
                    },
                    "logprobs": null,
                    "finish_reason": self.finish(format),
                }],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                "system_fingerprint": "fp_mock",
            }),
            Format::Anthropic => {
                let text = self.text();
                let content = if let Some(call) = &self.call {
                    json!([{"type": "tool_use", "id": call.id, "name": call.name, "input": call.args}])
                } else if text.is_empty() {
                    json!([])
                } else {
                    json!([{"type": "text", "text": text}])
                };
                json!({
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": content,
                    "stop_reason": self.finish(format),
                    "stop_sequence": null,
                    "usage": {"input_tokens": p, "output_tokens": c},
                })
            }
            Format::Gemini => match self.call {
                Some(_) => self.gemini_call_chunk(),
                None => self.gemini_chunk(&self.text(), true),
            },
        }
    }

    /// The Gemini response object carrying the call: one `functionCall`
    /// part, signed as Gemini 3 signs the first call of a step, with the
    /// finish reason and usage.
    fn gemini_call_chunk(&self) -> Value {
        let mut v = self.gemini_chunk("", true);
        if let Some(call) = &self.call {
            v["candidates"][0]["content"]["parts"] = json!([{
                "functionCall": {"name": call.name, "args": call.args},
                "thoughtSignature": THOUGHT_SIGNATURE,
            }]);
        }
        v
    }

    /// A Gemini response object carrying `text`; the last one carries the
    /// finish reason and usage.
    fn gemini_chunk(&self, text: &str, last: bool) -> Value {
        let mut candidate = json!({
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        });
        let mut v = json!({
            "candidates": [],
            "modelVersion": self.model,
            "responseId": self.id,
        });
        if last {
            candidate["finishReason"] = json!(self.finish(Format::Gemini));
            let (p, c) = (self.prompt_tokens, self.completion_tokens());
            v["usageMetadata"] = json!({
                "promptTokenCount": p,
                "candidatesTokenCount": c,
                "totalTokenCount": p + c,
            });
        }
        v["candidates"] = json!([candidate]);
        v
    }

    /// Gemini's stream as a list of response objects (as `streamGenerateContent`
    /// without `alt=sse` returns them, in one JSON array).
    pub(crate) fn gemini_chunks(&self) -> Vec<Value> {
        if self.call.is_some() {
            // Gemini sends a function call whole, in one chunk.
            return vec![self.gemini_call_chunk()];
        }
        let n = self.pieces.len();
        if n == 0 {
            return vec![self.gemini_chunk("", true)];
        }
        self.pieces
            .iter()
            .enumerate()
            .map(|(i, p)| self.gemini_chunk(p, i + 1 == n))
            .collect()
    }

    fn openai_chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    /// The stream's events, in parts the fault injector can interleave.
    pub(crate) fn stream_plan(&self, format: Format) -> StreamPlan {
        let (p, c) = (self.prompt_tokens, self.completion_tokens());
        match format {
            Format::OpenAi => {
                let mut finish = vec![encode_json(
                    &self.openai_chunk(json!({}), Some(self.finish(format))),
                )];
                if self.include_usage {
                    finish.push(encode_json(&json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "system_fingerprint": "fp_mock",
                        "choices": [],
                        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                    })));
                }
                // A call streams its id and name first, then argument fragments.
                let (first, piece): (Value, fn(&str) -> Value) = match &self.call {
                    None => (
                        json!({"role": "assistant", "content": "", "refusal": null}),
                        |w| json!({"content": w}),
                    ),
                    Some(call) => (
                        json!({"role": "assistant", "content": null, "tool_calls": [{
                            "index": 0, "id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }], "refusal": null}),
                        |w| json!({"tool_calls": [{"index": 0, "function": {"arguments": w}}]}),
                    ),
                };
                StreamPlan {
                    preamble: vec![encode_json(&self.openai_chunk(first, None))],
                    contents: self
                        .pieces
                        .iter()
                        .map(|w| encode_json(&self.openai_chunk(piece(w), None)))
                        .collect(),
                    finish,
                    finish_has_content: false,
                    done: Some(encode_done()),
                }
            }
            Format::Anthropic => {
                let event = |name: &str, v: Value| encode_event(name, v.to_string().as_bytes());
                // A tool_use block starts with empty input, then streams its
                // JSON as `input_json_delta`s (the first one empty, as Claude's is).
                let (block, delta_kind, delta_field) = match &self.call {
                    None => (json!({"type": "text", "text": ""}), "text_delta", "text"),
                    Some(call) => (
                        json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
                        "input_json_delta",
                        "partial_json",
                    ),
                };
                let delta = |w: &str| {
                    event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                               "delta": {"type": delta_kind, delta_field: w}}),
                    )
                };
                let mut preamble = vec![
                    event(
                        "message_start",
                        json!({"type": "message_start", "message": {
                            "id": self.id, "type": "message", "role": "assistant",
                            "model": self.model, "content": [], "stop_reason": null,
                            "stop_sequence": null,
                            "usage": {"input_tokens": p, "output_tokens": 1},
                        }}),
                    ),
                    event(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": 0,
                                   "content_block": block}),
                    ),
                    event("ping", json!({"type": "ping"})),
                ];
                if self.call.is_some() {
                    preamble.push(delta(""));
                }
                StreamPlan {
                    preamble,
                    contents: self.pieces.iter().map(|w| delta(w)).collect(),
                    finish: vec![
                        event(
                            "content_block_stop",
                            json!({"type": "content_block_stop", "index": 0}),
                        ),
                        event(
                            "message_delta",
                            json!({"type": "message_delta",
                                   "delta": {"stop_reason": self.finish(format), "stop_sequence": null},
                                   "usage": {"output_tokens": c}}),
                        ),
                    ],
                    finish_has_content: false,
                    done: Some(event("message_stop", json!({"type": "message_stop"}))),
                }
            }
            Format::Gemini => {
                let mut contents: Vec<Bytes> = self
                    .gemini_chunks()
                    .iter()
                    .map(|v| gemini_data(v.to_string().as_bytes()))
                    .collect();
                let last = contents.pop().into_iter().collect();
                StreamPlan {
                    preamble: Vec::new(),
                    contents,
                    finish: last,
                    finish_has_content: !self.pieces.is_empty(),
                    done: None,
                }
            }
        }
    }
}

/// A stream, cut into the parts faults are injected between.
pub(crate) struct StreamPlan {
    /// Sent with the headers (OpenAI's role chunk; Anthropic's
    /// `message_start`, `content_block_start`, `ping`).
    pub preamble: Vec<Bytes>,
    /// One event per word.
    pub contents: Vec<Bytes>,
    /// The finish (and usage) events.
    pub finish: Vec<Bytes>,
    /// Whether the finish also carries a word (Gemini).
    pub finish_has_content: bool,
    /// The end marker: `[DONE]` or `message_stop`.
    pub done: Option<Bytes>,
}

/// A Gemini `data:` event: Gemini ends its lines with CRLF.
fn gemini_data(payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(payload.len() + 10);
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(payload);
    b.extend_from_slice(b"\r\n\r\n");
    Bytes::from(b)
}

/// An event whose data is not valid JSON.
pub(crate) fn malformed_event(format: Format) -> Bytes {
    match format {
        Format::OpenAi => {
            encode_data(br#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","choices":[{"#)
        }
        Format::Anthropic => encode_event(
            "content_block_delta",
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_del"#,
        ),
        Format::Gemini => gemini_data(br#"{"candidates":[{"content":{"parts":[{"text""#),
    }
}

/// The provider's in-band "overloaded" error event.
pub(crate) fn error_event(format: Format) -> Bytes {
    match format {
        Format::OpenAi => encode_json(&json!({"error": {
            "message": "The server is overloaded. Please try again later.",
            "type": "server_error",
            "param": null,
            "code": "overloaded",
        }})),
        Format::Anthropic => encode_event(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                .to_string()
                .as_bytes(),
        ),
        Format::Gemini => gemini_data(
            json!({"error": {
                "code": 503,
                "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE",
            }})
            .to_string()
            .as_bytes(),
        ),
    }
}

/// The HTTP status a provider answers "overloaded" with.
pub(crate) fn overloaded_status(format: Format) -> u16 {
    match format {
        Format::Anthropic => 529,
        Format::OpenAi | Format::Gemini => 503,
    }
}

/// Gemini's (gRPC) status name for an HTTP status.
fn gemini_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if (400..500).contains(&code) => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
}

/// Anthropic's error type for an HTTP status.
fn anthropic_type(code: u16) -> &'static str {
    match code {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ if (400..500).contains(&code) => "invalid_request_error",
        _ => "api_error",
    }
}

/// The provider's error body for `status`, describing `flavor`.
pub(crate) fn error_body(
    format: Format,
    status: u16,
    flavor: ErrorFlavor,
    prompt_tokens: u64,
) -> Value {
    let prefill_msg = "This model does not support assistant message prefill. The conversation must end with a user message.";
    match format {
        Format::OpenAi => {
            let (message, kind, param, code): (String, &str, Option<&str>, Option<&str>) =
                match flavor {
                    ErrorFlavor::ContextLength => (
                        format!("This model's maximum context length is 128000 tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.", prompt_tokens.max(128_001)),
                        "invalid_request_error",
                        Some("messages"),
                        Some("context_length_exceeded"),
                    ),
                    ErrorFlavor::ContentPolicy => (
                        "Your request was rejected as a result of our safety system.".into(),
                        "invalid_request_error",
                        None,
                        Some("content_policy_violation"),
                    ),
                    ErrorFlavor::Overloaded => (
                        "The server is overloaded. Please try again later.".into(),
                        "server_error",
                        None,
                        Some("overloaded"),
                    ),
                    ErrorFlavor::PrefillUnsupported => {
                        (prefill_msg.into(), "invalid_request_error", Some("messages"), None)
                    }
                    ErrorFlavor::AccountRefused => (
                        "You exceeded your current quota, please check your plan and billing details.".into(),
                        "insufficient_quota",
                        None,
                        Some("insufficient_quota"),
                    ),
                    ErrorFlavor::Plain => match status {
                        401 => (
                            "Incorrect API key provided.".into(),
                            "invalid_request_error",
                            None,
                            Some("invalid_api_key"),
                        ),
                        404 => (
                            "The model does not exist or you do not have access to it.".into(),
                            "invalid_request_error",
                            None,
                            Some("model_not_found"),
                        ),
                        429 => (
                            "Rate limit reached. Please try again later.".into(),
                            "requests",
                            None,
                            Some("rate_limit_exceeded"),
                        ),
                        500..=599 => (
                            "The server had an error while processing your request.".into(),
                            "server_error",
                            None,
                            None,
                        ),
                        _ => (
                            format!("Mock error {status}."),
                            "invalid_request_error",
                            None,
                            None,
                        ),
                    },
                };
            json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
        }
        Format::Anthropic => {
            let (kind, message): (&str, String) = match flavor {
                ErrorFlavor::ContextLength => (
                    "invalid_request_error",
                    format!(
                        "prompt is too long: {} tokens > 200000 maximum",
                        prompt_tokens.max(200_001)
                    ),
                ),
                ErrorFlavor::ContentPolicy => (
                    "invalid_request_error",
                    "Output blocked by content filtering policy".into(),
                ),
                ErrorFlavor::Overloaded => ("overloaded_error", "Overloaded".into()),
                ErrorFlavor::PrefillUnsupported => ("invalid_request_error", prefill_msg.into()),
                ErrorFlavor::AccountRefused => (
                    "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.".into(),
                ),
                ErrorFlavor::Plain => {
                    let kind = anthropic_type(status);
                    let message = match kind {
                        "rate_limit_error" => "Number of requests has exceeded your rate limit.",
                        "overloaded_error" => "Overloaded",
                        "authentication_error" => "invalid x-api-key",
                        "not_found_error" => "model not found",
                        "api_error" => "Internal server error",
                        _ => "mock error",
                    };
                    (kind, message.into())
                }
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Format::Gemini => {
            let message: String = match flavor {
                ErrorFlavor::ContextLength => format!(
                    "The input token count ({}) exceeds the maximum number of tokens allowed (1048576).",
                    prompt_tokens.max(1_048_577)
                ),
                ErrorFlavor::ContentPolicy => {
                    "The request was blocked because it violates the safety policy.".into()
                }
                ErrorFlavor::Overloaded => "The model is overloaded. Please try again later.".into(),
                ErrorFlavor::PrefillUnsupported => {
                    "Please ensure that multiturn requests end with a user role or a function response.".into()
                }
                ErrorFlavor::AccountRefused => {
                    let message = "API key not valid. Please pass a valid API key.";
                    return json!({"error": {
                        "code": status,
                        "message": message,
                        "status": "INVALID_ARGUMENT",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "API_KEY_INVALID",
                                "domain": "googleapis.com",
                                "metadata": {"service": "generativelanguage.googleapis.com"},
                            },
                            {
                                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                                "locale": "en-US",
                                "message": message,
                            },
                        ],
                    }});
                }
                ErrorFlavor::Plain => match status {
                    429 => "Resource has been exhausted (e.g. check quota).".into(),
                    503 => "The service is currently unavailable.".into(),
                    500..=599 => "An internal error has occurred.".into(),
                    _ => format!("Mock error {status}."),
                },
            };
            json!({"error": {"code": status, "message": message, "status": gemini_status(status)}})
        }
    }
}

/// The 400 body for a request the real API would reject.
pub(crate) fn invalid_body(format: Format, message: &str) -> Value {
    match format {
        Format::OpenAi => json!({"error": {
            "message": message, "type": "invalid_request_error", "param": null, "code": null,
        }}),
        Format::Anthropic => {
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        }
        Format::Gemini => {
            json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}})
        }
    }
}

/// A body for a status the mock itself answers (404, 413): in the format's shape.
pub(crate) fn status_body(format: Format, status: u16, message: &str) -> Value {
    match format {
        Format::OpenAi => json!({"error": {
            "message": message, "type": "invalid_request_error", "param": null, "code": null,
        }}),
        Format::Anthropic => {
            json!({"type": "error", "error": {"type": anthropic_type(status), "message": message}})
        }
        Format::Gemini => {
            json!({"error": {"code": status, "message": message, "status": gemini_status(status)}})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_their_leading_whitespace() {
        assert_eq!(split_words("a b  c"), vec!["a", " b", "  c"]);
        assert_eq!(split_words(" a b "), vec![" a", " b "]);
        assert_eq!(split_words("a\nb"), vec!["a", "\nb"]);
        assert!(split_words("").is_empty());
        for t in ["x", "  ", "a  b\n\nc ", "word0 word1"] {
            assert_eq!(split_words(t).concat(), t);
        }
    }

    #[test]
    fn prefill_answers_the_remainder() {
        let parsed = Parsed {
            prefill: Some("word0 word1".into()),
            ..Parsed::default()
        };
        let a = Answer::new(Format::OpenAi, 1, "m", "word0 word1 word2 word3", &parsed);
        assert_eq!(a.pieces, vec![" word2", " word3"]);
        let parsed = Parsed {
            prefill: Some("other".into()),
            ..Parsed::default()
        };
        let a = Answer::new(Format::OpenAi, 1, "m", "word0 word1", &parsed);
        assert_eq!(a.pieces.len(), 2);
    }
}
