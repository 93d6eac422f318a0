//! Google Gemini (Generative Language API): `generateContent` and
//! `streamGenerateContent?alt=sse`.
//!
//! The request is rebuilt from OpenAI's messages (system messages become
//! `systemInstruction`, assistant becomes `model`, tool calls and results
//! become `functionCall` / `functionResponse` parts), and every answer is
//! translated back: a whole `GenerateContentResponse` into a
//! [`ChatCompletion`], or each SSE event (a full response object holding the
//! next delta) into chunks as it arrives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::{self, Endpoint, HttpClient};
use super::translated::{Translate, Translated};
use super::{
    AttemptRequest, BoxFuture, Chunk, Completion, Failure, ProviderError, ProviderResponse,
};
use crate::api::{
    finish_reason, ChatChunk, ChatCompletion, Choice, ChunkChoice, Content, ContentPart, Delta,
    FunctionCall, FunctionCallDelta, Message, ResponseMessage, Role, ToolCall, ToolCallDelta,
    Usage,
};
use crate::sse::SseEvent;
use crate::Secret;

/// A Gemini provider at `base_url` (e.g. `https://generativelanguage.googleapis.com`).
///
/// Requests go to `{base}/v1beta/models/{model}:generateContent`, or
/// `:streamGenerateContent?alt=sse` for streams, authenticated with
/// `x-goog-api-key` when a key is given.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// use tower::ServiceExt;
/// use modelux::provider::{http_client, AttemptRequest, Gemini, Target};
/// let gemini = Gemini::new(
///     "https://generativelanguage.googleapis.com",
///     Some(modelux::Secret::new("AIza...")),
///     http_client(),
/// );
/// let chat = serde_json::from_str(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
/// let req = AttemptRequest::new(Arc::new(Target::new("gemini", "gemini-2.0-flash")), Arc::new(chat));
/// let answer = gemini.oneshot(req).await;
/// # let _ = answer;
/// # }
/// ```
#[derive(Clone)]
pub struct Gemini {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    base: String,
    /// The key's header; the URI names the model, so it is built per request.
    headers: Endpoint,
    client: HttpClient,
}

impl std::fmt::Debug for Gemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemini")
            .field("base", &self.inner.base)
            .field("headers", &self.inner.headers)
            .finish_non_exhaustive()
    }
}

impl Gemini {
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
    /// let p = modelux::provider::Gemini::new("https://example.com", None, modelux::provider::http_client())
    ///     .with_headers(&headers);
    /// assert!(format!("{p:?}").contains("x-title"));
    /// ```
    pub fn with_headers(self, headers: &http::HeaderMap) -> Self {
        let inner = &*self.inner;
        Gemini {
            inner: Arc::new(Inner {
                headers: inner.headers.clone().extra(headers),
                ..inner.clone()
            }),
        }
    }

    /// A provider at `base_url`, authenticated with `x-goog-api-key` when a key is given.
    ///
    /// ```
    /// # #[cfg(feature = "mock")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::sync::Arc;
    /// # use tower::ServiceExt;
    /// # let chat = serde_json::from_str(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    /// use modelux::provider::{http_client, AttemptRequest, Gemini, ProviderResponse, Target};
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let gemini = Gemini::new(&mock.url(), Some(modelux::Secret::new("g-key")), http_client());
    /// let req = AttemptRequest::new(Arc::new(Target::new("mock", "gemini-2.5-flash")), Arc::new(chat));
    /// let answer = gemini.oneshot(req).await.unwrap();
    /// assert!(matches!(answer, ProviderResponse::Complete(_)));
    /// let seen = &mock.requests()[0];
    /// assert_eq!((seen.format, seen.model.as_str()), ("gemini", "gemini-2.5-flash"));
    /// assert_eq!(seen.headers["x-goog-api-key"], "g-key");
    /// # }
    /// # #[cfg(not(feature = "mock"))]
    /// # fn main() {}
    /// ```
    pub fn new(base_url: &str, key: Option<Secret>, client: HttpClient) -> Self {
        Gemini {
            inner: Arc::new(Inner {
                base: base_url.to_owned(),
                headers: match key {
                    Some(key) => Endpoint::new(base_url).secret(
                        HeaderName::from_static("x-goog-api-key"),
                        key.expose().to_owned(),
                    ),
                    None => Endpoint::new(base_url),
                },
                client,
            }),
        }
    }
}

/// The endpoint for `model`; a `models/` prefix in the configured name is tolerated.
fn endpoint(base: &str, model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let path = if stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    };
    client::join_url(base, &path)
}

// ---------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------

/// Serialises the upstream `GenerateContentRequest` for an attempt.
pub(crate) fn request_body(req: &AttemptRequest) -> Vec<u8> {
    client::json_body(&request_json(req), &req.chat)
}

/// Builds the `GenerateContentRequest` as JSON.
fn request_json(req: &AttemptRequest) -> Value {
    let chat = &req.chat;
    let mut body = Map::new();

    let (system, contents) = translate_messages(
        &chat.messages,
        req.prefill.as_deref(),
        requires_signatures(&req.target.upstream_model),
    );
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }

    let declarations: Vec<Value> = chat
        .params
        .tools
        .iter()
        .flatten()
        .filter(|t| t.kind == "function")
        .map(|t| {
            let f = &t.function;
            let mut d = Map::new();
            d.insert("name".into(), Value::String(f.name.clone()));
            if let Some(desc) = &f.description {
                d.insert("description".into(), Value::String(desc.clone()));
            }
            if let Some(params) = f.parameters.as_ref().and_then(parameters_schema) {
                d.insert("parameters".into(), params);
            }
            Value::Object(d)
        })
        .collect();
    if !declarations.is_empty() {
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
        if let Some(config) = chat.params.tool_choice.as_ref().and_then(tool_config) {
            body.insert("toolConfig".into(), config);
        }
    }

    let generation = generation_config(chat, &req.target);
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Value::Object(body)
}

/// Splits OpenAI messages into `systemInstruction` parts and `contents`,
/// merging consecutive contents of the same role. `prefill` becomes a final
/// model turn for the model to continue. `sign_calls`: the model refuses a
/// step whose first function call carries no thought signature, so an
/// unsigned one gets [`SKIP_SIGNATURE`].
fn translate_messages(
    messages: &[Message],
    prefill: Option<&str>,
    sign_calls: bool,
) -> (Vec<Value>, Vec<Value>) {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                let text = m.text_content();
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
            }
            Role::User => push_turn(&mut turns, "user", content_parts(m.content.as_ref())),
            Role::Assistant => {
                let mut parts = content_parts(m.content.as_ref());
                // A signature Gemini put on the answer's text (no function
                // call) goes back on the text; Gemini does not check it.
                if let Some(sig) = signature_in(&m.extra) {
                    if let Some(Value::Object(last)) =
                        parts.iter_mut().rev().find(|p| p.get("text").is_some())
                    {
                        last.insert("thoughtSignature".into(), sig.into());
                    }
                }
                for (i, call) in m.tool_calls.iter().flatten().enumerate() {
                    let mut part = Map::new();
                    part.insert(
                        "functionCall".into(),
                        json!({
                            "name": call.function.name,
                            "args": parse_args(&call.function.arguments),
                        }),
                    );
                    // Each assistant message is one step: Gemini signs its
                    // first call only (parallel calls after it carry none),
                    // and the signature goes back on the very part it came on.
                    let sig = signature_in(&call.extra)
                        .or((i == 0 && sign_calls).then_some(SKIP_SIGNATURE));
                    if let Some(sig) = sig {
                        part.insert("thoughtSignature".into(), sig.into());
                    }
                    parts.push(Value::Object(part));
                }
                push_turn(&mut turns, "model", parts);
            }
            Role::Tool | Role::Function => {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| tool_call_name(&messages[..i], id))
                    .or(m.name.as_deref())
                    .or(m.tool_call_id.as_deref())
                    .unwrap_or("function")
                    .to_owned();
                let part = json!({
                    "functionResponse": {
                        "name": name,
                        "response": tool_response(&m.text_content()),
                    }
                });
                push_turn(&mut turns, "user", vec![part]);
            }
        }
    }
    if let Some(p) = prefill.filter(|p| !p.is_empty()) {
        push_turn(&mut turns, "model", vec![json!({ "text": p })]);
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect();
    (system, contents)
}

/// Appends parts to the last turn when it has the same role, or starts a new turn.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((r, existing)) if *r == role => existing.extend(parts),
        _ => turns.push((role, parts)),
    }
}

/// The thought signature of Google's OpenAI-compatible endpoint, which
/// carries a part's `thoughtSignature` as
/// `extra_content.google.thought_signature` on the tool call (or the message)
/// it became. The adapter uses the same shape both ways, so a client that
/// keeps unknown fields (the OpenAI SDKs do) sends it back unchanged.
fn signature_in(extra: &Map<String, Value>) -> Option<&str> {
    extra
        .get("extra_content")?
        .get("google")?
        .get("thought_signature")?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// `extra_content.google.thought_signature` for a part's signature.
fn signature_extra(signature: Option<&str>) -> Map<String, Value> {
    let mut extra = Map::new();
    if let Some(sig) = signature {
        extra.insert(
            "extra_content".into(),
            json!({ "google": { "thought_signature": sig } }),
        );
    }
    extra
}

/// The placeholder for a function call Gemini did not sign (a conversation
/// that started on another provider, or a client that dropped the
/// signature). Google documents it for exactly this case: "transferring a
/// trace from a different model that does not include thought signatures,
/// you can set the following dummy signatures of either
/// `context_engineering_is_the_way_to_go` or
/// `skip_thought_signature_validator` in the thought signature field to skip
/// validation" (ai.google.dev/gemini-api/docs/thought-signatures, FAQs).
/// The second is the one Google's own clients use (the Agent Development
/// Kit; gemini-cli, which sends this very string in the JSON field).
/// Without it, Gemini 3 answers 400 "Function call is missing a
/// thought_signature".
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Whether `model` validates thought signatures on function calls, so an
/// unsigned one needs [`SKIP_SIGNATURE`]. Gemini 3 does; the models before it
/// (1.x, 2.x, Gemma) treat signatures as optional or have none, and are left
/// as they were. Any other name (a later model, an alias such as
/// `gemini-flash-latest`) is treated as one that validates.
fn requires_signatures(model: &str) -> bool {
    let model = model.strip_prefix("models/").unwrap_or(model);
    !["gemini-1.", "gemini-2.", "gemma-"]
        .iter()
        .any(|p| model.starts_with(p))
}

/// Gemini's function calls carry no id, so the adapter makes them up: one
/// random base per response, numbered within it. Numbered alone, every
/// answer's first call was `call_0`, and a conversation that moved on to
/// Anthropic was refused ("`tool_use` ids must be unique").
fn call_id_base() -> u64 {
    crate::rng::up_to(u64::MAX)
}

/// The `n`th generated call id of the response whose base is `base`.
fn call_id(base: u64, n: usize) -> String {
    format!("call_{base:016x}_{n}")
}

/// The name of the tool call `id`, searched in the assistant messages before a tool result.
fn tool_call_name<'a>(earlier: &'a [Message], id: &str) -> Option<&'a str> {
    earlier
        .iter()
        .rev()
        .filter(|m| m.role == Role::Assistant)
        .flat_map(|m| m.tool_calls.iter().flatten())
        .find(|c| c.id == id)
        .map(|c| c.function.name.as_str())
}

/// Tool-call arguments as a JSON object; anything else becomes `{}`.
fn parse_args(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// A tool result as `functionResponse.response`: the content itself when it
/// is a JSON object, `{"content": text}` otherwise.
fn tool_response(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "content": text }),
    }
}

/// Gemini parts for a message's content: text, images, audio and files.
fn content_parts(content: Option<&Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![json!({ "text": t })],
        Some(Content::Parts(parts)) => parts.iter().filter_map(content_part).collect(),
    }
}

/// One OpenAI content part as a Gemini part, when it has a Gemini equivalent.
fn content_part(p: &ContentPart) -> Option<Value> {
    match p.kind.as_str() {
        "text" => p
            .text
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| json!({ "text": t })),
        "image_url" => p.image_url.as_ref().and_then(|i| media_url(&i.url)),
        "input_audio" => {
            let audio = p.extra.get("input_audio")?;
            let data = audio.get("data")?.as_str()?;
            let format = audio.get("format").and_then(Value::as_str).unwrap_or("wav");
            Some(json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }))
        }
        "file" => {
            let data = p.extra.get("file")?.get("file_data")?.as_str()?;
            media_url(data)
        }
        _ => None,
    }
}

/// A `data:` URL as `inlineData`, an `http(s)` URL as `fileData`.
fn media_url(url: &str) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest.split_once(',')?;
        let mut fields = header.split(';');
        let mime = fields
            .next()
            .filter(|m| !m.is_empty())
            .unwrap_or("application/octet-stream");
        // Gemini wants base64; other encodings of data URLs are not carried.
        if !fields.any(|f| f.eq_ignore_ascii_case("base64")) {
            return None;
        }
        return Some(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let mut file = Map::new();
        file.insert("fileUri".into(), Value::String(url.to_owned()));
        if let Some(mime) = mime_from_extension(&lower) {
            file.insert("mimeType".into(), Value::String(mime.to_owned()));
        }
        return Some(json!({ "fileData": file }));
    }
    None
}

/// A MIME type guessed from a URL's extension.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1;
    Some(match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

/// `generationConfig` from the sampling parameters (the output cap lowered
/// to the target's `max_output_tokens`).
fn generation_config(chat: &crate::api::ChatRequest, target: &super::Target) -> Map<String, Value> {
    let p = &chat.params;
    let mut g = Map::new();
    if let Some(max) = target.output_cap(chat.max_output_tokens()) {
        g.insert("maxOutputTokens".into(), max.into());
    }
    if let Some(t) = p.temperature {
        g.insert("temperature".into(), t.into());
    }
    if let Some(t) = p.top_p {
        g.insert("topP".into(), t.into());
    }
    let stop = chat.stop_sequences();
    if !stop.is_empty() {
        g.insert("stopSequences".into(), stop.into());
    }
    if let Some(n) = p.n {
        g.insert("candidateCount".into(), n.into());
    }
    if let Some(seed) = p.seed {
        g.insert("seed".into(), seed.into());
    }
    for (openai, gemini) in [
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = p.extra.get(openai).filter(|v| v.is_number()) {
            g.insert(gemini.into(), v.clone());
        }
    }
    let format = p
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str);
    if matches!(format, Some("json_object" | "json_schema")) {
        g.insert("responseMimeType".into(), "application/json".into());
    }
    // The schema goes in `responseJsonSchema`, which takes a JSON Schema as
    // is ("The schema must be a valid JSON Schema"; unsupported keywords are
    // ignored: ai.google.dev/gemini-api/docs/structured-output). That is the
    // schema an OpenAI client sends, `additionalProperties: false`, type
    // arrays, `$defs`/`$ref` and all. `responseSchema` takes Gemini's OpenAPI
    // subset instead and refuses the request on any keyword outside it, so
    // `gemini_schema` would have to strip it first and would lose `$ref`.
    // An empty schema constrains nothing and is not sent.
    if format == Some("json_schema") {
        let schema = p
            .response_format
            .as_ref()
            .and_then(|f| f.get("json_schema"))
            .and_then(|s| s.get("schema"))
            .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()));
        if let Some(schema) = schema {
            g.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    g
}

/// `toolConfig` for an OpenAI `tool_choice`.
fn tool_config(choice: &Value) -> Option<Value> {
    let mode = |m: &str| json!({ "functionCallingConfig": { "mode": m } });
    match choice {
        Value::String(s) => match s.as_str() {
            "none" => Some(mode("NONE")),
            "auto" => Some(mode("AUTO")),
            "required" => Some(mode("ANY")),
            _ => None,
        },
        Value::Object(o) => {
            let name = o.get("function")?.get("name")?.as_str()?;
            Some(json!({
                "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": [name] }
            }))
        }
        _ => None,
    }
}

/// A function's JSON Schema as Gemini's `parameters` (an OpenAPI 3.0 subset).
/// `None` for an object schema without properties, which Gemini rejects.
fn parameters_schema(schema: &Value) -> Option<Value> {
    let budget = std::cell::Cell::new(MAX_INLINED_REFS);
    let s = gemini_schema(
        schema,
        Refs {
            root: schema,
            depth: 0,
            budget: &budget,
        },
    );
    let has_props = s
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    let is_object = s.get("type").and_then(Value::as_str) == Some("object");
    (has_props || !is_object).then_some(s)
}

/// Where a schema's local `$ref`s (`#/$defs/Item`, `#/definitions/Item`, as
/// pydantic and zod write nested types) point: Gemini's `Schema` has no
/// `$ref`, so they are inlined, up to [`MAX_REF_DEPTH`] deep and
/// [`MAX_INLINED_REFS`] in all (a recursive type is cut there to an empty
/// schema; a type that refers to several others would otherwise grow the
/// body exponentially with the depth).
#[derive(Clone, Copy)]
struct Refs<'a> {
    root: &'a Value,
    depth: u8,
    budget: &'a std::cell::Cell<u32>,
}

/// How many `$ref`s deep a schema is inlined.
const MAX_REF_DEPTH: u8 = 8;

/// How many `$ref`s one tool's schema has inlined at most.
const MAX_INLINED_REFS: u32 = 256;

impl<'a> Refs<'a> {
    /// The schema a local `$ref` names, while the depth and the budget last.
    fn resolve(self, reference: &str) -> Option<&'a Value> {
        let left = self.budget.get();
        if self.depth >= MAX_REF_DEPTH || left == 0 {
            return None;
        }
        self.budget.set(left - 1);
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer).filter(|v| v.is_object())
    }
}

/// Keeps the JSON Schema keywords Gemini's `Schema` has a field for; its
/// parser rejects the whole request on any other (`additionalProperties`,
/// `$schema`, `strict`, ...). Local `$ref`s are inlined ([`Refs`]), and an
/// `allOf` of one schema (pydantic's way of describing a referenced type)
/// is that schema.
fn gemini_schema(schema: &Value, refs: Refs<'_>) -> Value {
    let reference = schema.get("$ref").and_then(Value::as_str);
    let single_all_of = match schema.get("allOf") {
        Some(Value::Array(all)) if all.len() == 1 => all.first(),
        _ => None,
    };
    let target = match (reference, single_all_of) {
        (Some(r), _) => Some(refs.resolve(r)),
        (None, Some(inner)) => Some(Some(inner)),
        _ => None,
    };
    if let Some(target) = target {
        let deeper = Refs {
            depth: refs.depth + 1,
            ..refs
        };
        let mut out = match target {
            Some(t) => gemini_schema(t, deeper),
            None => Value::Object(Map::new()),
        };
        // The referring schema's own description and nullability stay.
        if let (Value::Object(out), Value::Object(own)) = (&mut out, schema) {
            for k in ["description", "nullable"] {
                if let Some(v) = own.get(k) {
                    out.insert(k.into(), v.clone());
                }
            }
        }
        return out;
    }
    const KEEP: &[&str] = &[
        "description",
        "nullable",
        "required",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "propertyOrdering",
    ];
    const FORMATS: &[&str] = &["enum", "date-time", "float", "double", "int32", "int64"];
    let Value::Object(m) = schema else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    for (k, v) in m {
        match k.as_str() {
            "type" => match v {
                Value::Array(types) => {
                    let mut non_null = types.iter().filter(|t| t.as_str() != Some("null"));
                    if let Some(t) = non_null.next() {
                        out.insert("type".into(), t.clone());
                    }
                    if types.iter().any(|t| t.as_str() == Some("null")) {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                }
                _ => {
                    out.insert("type".into(), v.clone());
                }
            },
            "properties" => {
                if let Value::Object(props) = v {
                    let props = props
                        .iter()
                        .map(|(name, s)| (name.clone(), gemini_schema(s, refs)))
                        .collect();
                    out.insert("properties".into(), Value::Object(props));
                }
            }
            "items" => {
                let item = match v {
                    Value::Array(tuple) => tuple.first().map(|s| gemini_schema(s, refs)),
                    other => Some(gemini_schema(other, refs)),
                };
                if let Some(item) = item {
                    out.insert("items".into(), item);
                }
            }
            "anyOf" | "oneOf" => {
                if let Value::Array(options) = v {
                    out.insert(
                        "anyOf".into(),
                        Value::Array(options.iter().map(|s| gemini_schema(s, refs)).collect()),
                    );
                }
            }
            "enum" => {
                if let Value::Array(values) = v {
                    out.insert(
                        "enum".into(),
                        Value::Array(values.iter().map(enum_value).collect()),
                    );
                }
            }
            "const" => {
                out.entry("enum").or_insert_with(|| json!([enum_value(v)]));
            }
            "format" if v.as_str().is_some_and(|f| FORMATS.contains(&f)) => {
                out.insert("format".into(), v.clone());
            }
            k if KEEP.contains(&k) => {
                out.insert(k.to_owned(), v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// Gemini enums are strings.
fn enum_value(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        other => Value::String(other.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Response model
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    /// Set when the object is an error, e.g. inside a 200 stream.
    #[serde(default)]
    error: Option<ErrorFields>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default)]
    text: Option<String>,
    /// A thought summary, not part of the answer.
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<GeminiFunctionCall>,
    /// Gemini 3 signs the first function call of each step (and sometimes
    /// the last text part) and wants the signature back on the same part.
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Deserialize)]
struct GeminiFunctionCall {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
    #[serde(default)]
    total_token_count: Option<u64>,
    /// The part of `prompt_token_count` read from a context cache.
    #[serde(default)]
    cached_content_token_count: u64,
}

impl UsageMetadata {
    /// OpenAI usage: thinking counts as output (and as its reasoning
    /// tokens), tool-use prompts as input, cached content as cached tokens.
    fn to_usage(self) -> Usage {
        let prompt = self
            .prompt_token_count
            .saturating_add(self.tool_use_prompt_token_count);
        let completion = self
            .candidates_token_count
            .saturating_add(self.thoughts_token_count);
        Usage {
            total_tokens: self
                .total_token_count
                .unwrap_or(prompt.saturating_add(completion)),
            ..Usage::new(prompt, completion)
        }
        .with_cache(self.cached_content_token_count, 0)
        .with_reasoning(self.thoughts_token_count)
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// `google.rpc` detail messages; an `ErrorInfo` among them names the reason.
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

/// One entry of an error's `details`. A `google.rpc.ErrorInfo`, a
/// `RetryInfo` and a `QuotaFailure` are read; anything else (a
/// `LocalizedMessage`, a `Help`, a value of an unexpected shape) is skipped
/// rather than failing the whole error.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorDetail {
    Info(ErrorInfo),
    Retry(RetryInfo),
    Quota(QuotaFailure),
    Other(serde::de::IgnoredAny),
}

/// A `google.rpc.RetryInfo`: how long to wait. Gemini sends its 429's wait
/// here, not in a `Retry-After` header.
#[derive(Deserialize)]
struct RetryInfo {
    /// A protobuf `Duration` in JSON: `"37s"`, `"0.5s"`.
    #[serde(rename = "retryDelay")]
    retry_delay: String,
}

/// A `google.rpc.QuotaFailure`: which quotas the request exceeded.
#[derive(Deserialize)]
struct QuotaFailure {
    violations: Vec<QuotaViolation>,
}

/// One exceeded quota, named by its id
/// (`GenerateRequestsPerDayPerProjectPerModel-FreeTier`, ...).
#[derive(Deserialize)]
struct QuotaViolation {
    #[serde(default, rename = "quotaId")]
    quota_id: Option<String>,
}

/// A protobuf `Duration` in its JSON form (`"37s"`, `"1.5s"`), within a day.
fn proto_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// A `google.rpc.ErrorInfo`: why the request failed, as a constant.
#[derive(Deserialize)]
struct ErrorInfo {
    /// The detail's type URL. Some proxies re-encode the details without
    /// it; a detail with a `reason` is an `ErrorInfo` either way.
    #[serde(default, rename = "@type")]
    kind: Option<String>,
    reason: ErrorReason,
}

/// The `ErrorInfo` reasons (google/api/error_reason.proto) that say the
/// provider refused the target rather than the request.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum ErrorReason {
    /// The key does not exist, was deleted, or has expired (Gemini answers
    /// an expired key with this reason too, under HTTP 400).
    ApiKeyInvalid,
    /// The key has expired.
    ApiKeyExpired,
    /// The key may not call this service.
    ApiKeyServiceBlocked,
    /// The key is restricted to other HTTP referrers.
    ApiKeyHttpReferrerBlocked,
    /// The key is restricted to other IP addresses.
    ApiKeyIpAddressBlocked,
    /// The key is restricted to an Android app.
    ApiKeyAndroidAppBlocked,
    /// The key is restricted to an iOS app.
    ApiKeyIosAppBlocked,
    /// No key or token was sent.
    CredentialsMissing,
    /// The OAuth token has expired.
    AccessTokenExpired,
    /// Billing is not enabled on the key's project.
    BillingDisabled,
    /// The key's project is suspended.
    ConsumerSuspended,
    /// The API is not enabled on the key's project.
    ServiceDisabled,
    /// Any other reason: says nothing about the target.
    #[serde(other)]
    Other,
}

/// What a Gemini error says the provider refused, when it is the target
/// and not the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// The gateway's key.
    Key,
    /// The account or project behind the key: billing, suspension, a
    /// region the API does not serve.
    Account,
}

impl ErrorFields {
    /// The wait the error's `RetryInfo` asks for.
    fn retry_delay(&self) -> Option<Duration> {
        self.details.iter().find_map(|d| match d {
            ErrorDetail::Retry(r) => proto_duration(&r.retry_delay),
            _ => None,
        })
    }

    /// Whether a `RESOURCE_EXHAUSTED` is a daily quota: waiting seconds
    /// does not bring it back, so the target is refused for this request
    /// (as OpenAI's `insufficient_quota`) rather than retried.
    fn daily_quota(&self) -> bool {
        self.details.iter().any(|d| match d {
            ErrorDetail::Quota(q) => q.violations.iter().any(|v| {
                v.quota_id
                    .as_deref()
                    .is_some_and(|id| id.contains("PerDay"))
            }),
            _ => false,
        })
    }

    /// The target refusal this error describes, read from its `ErrorInfo`
    /// reason, or from `FAILED_PRECONDITION` on a 400 (Gemini's answer when
    /// billing is not enabled or the caller's location is not supported).
    fn refusal(&self, status: StatusCode) -> Option<Refusal> {
        let reason = self.details.iter().find_map(|d| match d {
            ErrorDetail::Info(info)
                if info
                    .kind
                    .as_deref()
                    .map_or(true, |k| k == "type.googleapis.com/google.rpc.ErrorInfo") =>
            {
                Some(info.reason)
            }
            _ => None,
        });
        match reason {
            Some(
                ErrorReason::ApiKeyInvalid
                | ErrorReason::ApiKeyExpired
                | ErrorReason::ApiKeyServiceBlocked
                | ErrorReason::ApiKeyHttpReferrerBlocked
                | ErrorReason::ApiKeyIpAddressBlocked
                | ErrorReason::ApiKeyAndroidAppBlocked
                | ErrorReason::ApiKeyIosAppBlocked
                | ErrorReason::CredentialsMissing
                | ErrorReason::AccessTokenExpired,
            ) => Some(Refusal::Key),
            Some(
                ErrorReason::BillingDisabled
                | ErrorReason::ConsumerSuspended
                | ErrorReason::ServiceDisabled,
            ) => Some(Refusal::Account),
            _ if status == StatusCode::BAD_REQUEST
                && self.status.as_deref() == Some("FAILED_PRECONDITION") =>
            {
                Some(Refusal::Account)
            }
            _ => None,
        }
    }
}

impl Candidate {
    /// The candidate's parts, without thoughts.
    fn parts(&self) -> impl Iterator<Item = &Part> {
        self.content
            .iter()
            .flat_map(|c| c.parts.iter())
            .filter(|p| p.thought != Some(true))
    }

    fn text(&self) -> String {
        self.parts().filter_map(|p| p.text.as_deref()).collect()
    }

    /// The function calls, each with the thought signature of its part.
    fn function_calls(&self) -> impl Iterator<Item = (&GeminiFunctionCall, Option<&str>)> {
        self.parts().filter_map(|p| {
            p.function_call
                .as_ref()
                .map(|f| (f, p.thought_signature.as_deref()))
        })
    }

    /// The thought signature on a part that is not a function call (Gemini
    /// puts it on the last part of an answer without calls, possibly an
    /// empty text part), the last one when there are several.
    fn text_signature(&self) -> Option<&str> {
        self.parts()
            .filter(|p| p.function_call.is_none())
            .filter_map(|p| p.thought_signature.as_deref())
            .last()
    }

    /// The finish reason, treating `FINISH_REASON_UNSPECIFIED` as absent.
    fn finish(&self) -> Option<&str> {
        self.finish_reason
            .as_deref()
            .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED")
    }
}

impl GeminiFunctionCall {
    /// The arguments as OpenAI's JSON string.
    fn arguments(&self) -> String {
        match &self.args {
            Some(v @ Value::Object(_)) => v.to_string(),
            _ => "{}".to_owned(),
        }
    }
}

/// Maps a Gemini `finishReason` to OpenAI's `finish_reason`.
fn map_finish(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => finish_reason::LENGTH,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => finish_reason::CONTENT_FILTER,
        _ if called_tools => finish_reason::TOOL_CALLS,
        _ => finish_reason::STOP,
    }
}

/// A fresh completion id, for responses without `responseId`.
fn generated_id() -> String {
    format!("chatcmpl-{:016x}", rand::random::<u64>())
}

/// Gemini's `finishReason`s for an answer the model itself got wrong: a
/// tool call whose arguments are not valid JSON, that names no declared
/// function or comes when tools are off, too many calls, a response it
/// could not form, a thought signature missing from the history it was
/// given. The candidate carries no usable call and no text.
const FAILED_FINISHES: [&str; 5] = [
    "MALFORMED_FUNCTION_CALL",
    "UNEXPECTED_TOOL_CALL",
    "TOO_MANY_TOOL_CALLS",
    "MALFORMED_RESPONSE",
    "MISSING_THOUGHT_SIGNATURE",
];

/// The failed finish (one of [`FAILED_FINISHES`]) of any of `candidates`.
fn failed_finish(candidates: &[Candidate]) -> Option<&str> {
    candidates
        .iter()
        .filter_map(Candidate::finish)
        .find(|f| FAILED_FINISHES.contains(f))
}

/// The error for a candidate that ended in one of [`FAILED_FINISHES`]: a
/// malformed answer, so the router moves on (translated to `stop` with an
/// empty message, the client got an answer that was no answer).
fn malformed_call(reason: &str) -> ProviderError {
    ProviderError::new(
        Failure::Malformed,
        format!("the model produced no usable answer (finishReason {reason})"),
    )
}

/// The error for a prompt Gemini blocked outright.
fn blocked(reason: &str) -> ProviderError {
    ProviderError::new(Failure::ContentPolicy, format!("prompt blocked: {reason}"))
}

/// Whether a Gemini error message is about the prompt exceeding the context window.
fn is_context_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("token count")
        || m.contains("number of tokens")
        || m.contains("too many tokens")
        || m.contains("context window")
        || m.contains("context length")
}

// ---------------------------------------------------------------------------
// Non-stream translation and errors
// ---------------------------------------------------------------------------

/// Translates a whole `GenerateContentResponse` into a completion.
fn completion(
    resp: GenerateResponse,
    upstream_model: &str,
) -> Result<ChatCompletion, ProviderError> {
    if let Some(e) = resp.error {
        return Err(error_object(e));
    }
    if resp.candidates.is_empty() {
        if let Some(reason) = resp.prompt_feedback.and_then(|f| f.block_reason) {
            return Err(blocked(&reason));
        }
        return Err(ProviderError::new(
            Failure::Malformed,
            "response without candidates",
        ));
    }
    if let Some(reason) = failed_finish(&resp.candidates) {
        return Err(malformed_call(reason));
    }
    let base = call_id_base();
    let mut next_call = 0usize;
    let choices = resp
        .candidates
        .iter()
        .enumerate()
        .map(|(pos, c)| {
            let calls: Vec<ToolCall> = c
                .function_calls()
                .map(|(f, sig)| {
                    let id = call_id(base, next_call);
                    next_call += 1;
                    ToolCall {
                        id,
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: f.name.clone(),
                            arguments: f.arguments(),
                            extra: Map::new(),
                        },
                        extra: signature_extra(sig),
                    }
                })
                .collect();
            let text = c.text();
            let finish = map_finish(c.finish().unwrap_or("STOP"), !calls.is_empty());
            Choice {
                index: c.index.unwrap_or(pos as u32),
                message: ResponseMessage {
                    role: "assistant".to_owned(),
                    content: (!text.is_empty() || calls.is_empty()).then_some(text),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    extra: signature_extra(c.text_signature()),
                },
                finish_reason: Some(finish.to_owned()),
                extra: Map::new(),
            }
        })
        .collect();
    Ok(ChatCompletion {
        id: resp.response_id.unwrap_or_else(generated_id),
        object: "chat.completion".to_owned(),
        created: crate::api::unix_now(),
        model: resp
            .model_version
            .unwrap_or_else(|| upstream_model.to_owned()),
        choices,
        usage: resp.usage_metadata.map(UsageMetadata::to_usage),
        extra: Map::new(),
    })
}

/// Classifies an `{"error": ...}` object that arrived with a 200 (in a stream).
fn error_object(e: ErrorFields) -> ProviderError {
    let retry_after = e.retry_delay();
    let daily_quota = e.daily_quota();
    let message = e
        .message
        .unwrap_or_else(|| "error event in stream".to_owned());
    // Without a status, the numeric code stands in for it.
    let status =
        e.status
            .as_deref()
            .unwrap_or_else(|| match e.code.as_ref().and_then(Value::as_u64) {
                Some(400) => "INVALID_ARGUMENT",
                Some(403) => "PERMISSION_DENIED",
                Some(429) => "RESOURCE_EXHAUSTED",
                Some(503) => "UNAVAILABLE",
                Some(504) => "DEADLINE_EXCEEDED",
                _ => "",
            });
    let failure = match status {
        "RESOURCE_EXHAUSTED" if daily_quota => Failure::TargetRefused { status: 429 },
        "RESOURCE_EXHAUSTED" => Failure::RateLimited,
        "UNAVAILABLE" => Failure::Server { status: 503 },
        "INTERNAL" => Failure::Server { status: 500 },
        "DEADLINE_EXCEEDED" => Failure::Timeout,
        "INVALID_ARGUMENT" if is_context_message(&message) => Failure::ContextLength,
        // The request itself, as the same status would say before the
        // stream began: retrying it on the same target gets the same answer.
        "INVALID_ARGUMENT" => Failure::Client { status: 400 },
        "PERMISSION_DENIED" => Failure::TargetRefused { status: 403 },
        "UNAUTHENTICATED" => Failure::TargetRefused { status: 401 },
        "NOT_FOUND" => Failure::TargetRefused { status: 404 },
        "FAILED_PRECONDITION" => Failure::TargetRefused { status: 400 },
        _ => Failure::Server { status: 500 },
    };
    ProviderError::new(failure, message).with_retry_after(retry_after)
}

/// Gemini's error body: an object, or (on some stream endpoints) a one-element array.
fn parse_error(body: &[u8]) -> Option<ErrorFields> {
    // Checked first: serde would also read a struct from an array.
    if body.trim_ascii_start().starts_with(b"[") {
        return serde_json::from_slice::<Vec<ErrorEnvelope>>(body)
            .ok()?
            .into_iter()
            .next()
            .map(|e| e.error);
    }
    serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error)
}

/// Refines a status-based classification with Gemini's error status,
/// details and message.
///
/// Gemini refuses a bad or expired key with a 400 `INVALID_ARGUMENT`, not a
/// 401: its `ErrorInfo` reason (`API_KEY_INVALID`, ...) makes that
/// [`Failure::TargetRefused`] with status 401, so the router moves on, health
/// counts it, and the provider's text is replaced as for any refused key.
/// A refused account (billing, a region it does not serve) is
/// `TargetRefused` with the status as sent.
fn refine(status: StatusCode, body: &[u8], mut err: ProviderError) -> ProviderError {
    if let Some(e) = parse_error(body) {
        let refusal = matches!(err.failure, Failure::Client { .. })
            .then(|| e.refusal(status))
            .flatten();
        let daily_quota = e.daily_quota();
        let retry_delay = e.retry_delay();
        let message = e.message.unwrap_or_default();
        match (refusal, e.status.as_deref()) {
            (Some(Refusal::Key), _) => err.failure = Failure::TargetRefused { status: 401 },
            (Some(Refusal::Account), _) => {
                err.failure = Failure::TargetRefused {
                    status: status.as_u16(),
                }
            }
            (None, Some("RESOURCE_EXHAUSTED")) if daily_quota => {
                err.failure = Failure::TargetRefused {
                    status: status.as_u16(),
                }
            }
            (None, Some("RESOURCE_EXHAUSTED")) => err.failure = Failure::RateLimited,
            (None, Some("INVALID_ARGUMENT")) if is_context_message(&message) => {
                err.failure = Failure::ContextLength
            }
            (None, None) if status == StatusCode::BAD_REQUEST && is_context_message(&message) => {
                err.failure = Failure::ContextLength
            }
            _ => {}
        }
        if err.retry_after.is_none() {
            err.retry_after = retry_delay;
        }
        err.message = message;
    }
    err
}

// ---------------------------------------------------------------------------
// Stream translation
// ---------------------------------------------------------------------------

/// What the translator knows about one candidate of a stream.
#[derive(Default)]
struct CandidateState {
    /// Whether the role chunk was sent.
    started: bool,
    /// Whether it called a tool (so `STOP` means `tool_calls`).
    called_tools: bool,
    /// Tool calls sent so far, the index of the next one.
    tool_calls: u32,
    /// Whether its `finish_reason` was sent.
    finished: bool,
}

/// Turns Gemini stream events into OpenAI chunks, one event at a time.
///
/// Pure: the async stream feeds it each event's `data` and forwards what it
/// returns at once, then calls [`StreamTranslator::finish`] at EOF.
struct StreamTranslator {
    upstream_model: String,
    created: u64,
    /// Fixed by the first event: `responseId` or a generated id.
    id: Option<String>,
    /// Fixed by the first event: `modelVersion` or the upstream model.
    model: Option<String>,
    candidates: BTreeMap<u32, CandidateState>,
    /// What makes this response's generated tool call ids its own.
    call_base: u64,
    /// Counter for generated tool call ids, unique within the response.
    next_call: usize,
    usage: Option<Usage>,
    /// The provider's name in the config, for the malformed-event count.
    provider: Arc<str>,
}

impl StreamTranslator {
    fn new(upstream_model: &str, created: u64, provider: Arc<str>) -> Self {
        StreamTranslator {
            provider,
            upstream_model: upstream_model.to_owned(),
            created,
            id: None,
            model: None,
            candidates: BTreeMap::new(),
            call_base: call_id_base(),
            next_call: 0,
            usage: None,
        }
    }

    /// Whether every candidate seen so far has finished (and at least one was seen).
    fn is_finished(&self) -> bool {
        !self.candidates.is_empty() && self.candidates.values().all(|c| c.finished)
    }

    fn chunk(&self, index: u32, delta: Delta, finish: Option<&str>) -> ChatChunk {
        let mut c = ChatChunk::empty(
            self.id.as_deref().unwrap_or(""),
            self.model.as_deref().unwrap_or(""),
            self.created,
        );
        c.choices.push(ChunkChoice {
            index,
            delta,
            finish_reason: finish.map(str::to_owned),
            extra: Map::new(),
        });
        c
    }

    /// The chunks for one event's `data`. An error event or a blocked prompt
    /// is an `Err`, after which the stream ends; an unparseable event is
    /// counted, logged and skipped.
    fn on_data(&mut self, data: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        let resp: GenerateResponse = match serde_json::from_str(data) {
            Ok(r) => r,
            Err(err) => {
                client::malformed_event(&self.provider, &err);
                return Ok(Vec::new());
            }
        };
        if let Some(e) = resp.error {
            return Err(error_object(e));
        }
        if resp.candidates.is_empty() {
            if let Some(reason) = resp
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_deref())
            {
                return Err(blocked(reason));
            }
        }
        if self.id.is_none() {
            self.id = Some(resp.response_id.clone().unwrap_or_else(generated_id));
            self.model = Some(
                resp.model_version
                    .clone()
                    .unwrap_or_else(|| self.upstream_model.clone()),
            );
        }
        if let Some(u) = resp.usage_metadata {
            self.usage = Some(u.to_usage());
        }

        if let Some(reason) = failed_finish(&resp.candidates) {
            return Err(malformed_call(reason));
        }
        let mut out = Vec::new();
        for (pos, cand) in resp.candidates.iter().enumerate() {
            let index = cand.index.unwrap_or(pos as u32);
            let state = self.candidates.entry(index).or_default();
            if state.finished {
                continue;
            }
            let first = !state.started;
            state.started = true;

            let mut calls = Vec::new();
            for (f, sig) in cand.function_calls() {
                calls.push(ToolCallDelta {
                    index: state.tool_calls,
                    id: Some(call_id(self.call_base, self.next_call)),
                    kind: Some("function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: Some(f.name.clone()),
                        arguments: Some(f.arguments()),
                    }),
                    extra: signature_extra(sig),
                });
                state.tool_calls += 1;
                self.next_call += 1;
            }
            if !calls.is_empty() {
                state.called_tools = true;
            }
            let finish = cand.finish().map(|r| map_finish(r, state.called_tools));
            if finish.is_some() {
                state.finished = true;
            }

            if first {
                let role = Delta {
                    role: Some("assistant".to_owned()),
                    ..Delta::default()
                };
                out.push(self.chunk(index, role, None));
            }
            let text = cand.text();
            // A signature may come alone, on an empty text part.
            let signature = cand.text_signature();
            if !text.is_empty() || !calls.is_empty() || signature.is_some() {
                let delta = Delta {
                    content: (!text.is_empty()).then_some(text),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    extra: signature_extra(signature),
                    ..Delta::default()
                };
                out.push(self.chunk(index, delta, None));
            }
            if let Some(reason) = finish {
                out.push(self.chunk(index, Delta::default(), Some(reason)));
            }
        }
        Ok(out)
    }

    /// Called at EOF: the usage-only chunk (when usage was reported) if the
    /// stream finished, [`Failure::StreamCut`] if it did not.
    fn finish(&self) -> Result<Option<ChatChunk>, ProviderError> {
        if !self.is_finished() {
            return Err(ProviderError::new(
                Failure::StreamCut,
                "stream ended before a finishReason",
            ));
        }
        Ok(self.usage.map(|u| {
            ChatChunk::usage_only(
                self.id.as_deref().unwrap_or(""),
                self.model.as_deref().unwrap_or(""),
                self.created,
                u,
            )
        }))
    }
}

/// Parses a Gemini event stream into chunks, forwarding each as it arrives.
fn chunks(
    body: client::UpstreamBody,
    upstream_model: String,
    provider: Arc<str>,
) -> impl futures_util::Stream<Item = Result<Chunk, ProviderError>> + Send {
    let translator = StreamTranslator::new(&upstream_model, crate::api::unix_now(), provider);
    Translated::new(client::events(body), translator)
}

impl StreamTranslator {
    /// The end of a finished answer: its usage chunk, when usage was
    /// reported; [`Failure::StreamCut`] if it did not finish.
    fn finish_into(&self, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        out.extend(self.finish()?);
        Ok(())
    }
}

impl Translate for StreamTranslator {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<ChatChunk>) -> Result<bool, ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        match self.on_data(data) {
            Ok(chunks) => {
                out.extend(chunks);
                Ok(false)
            }
            // An error after every candidate finished: the answer is whole.
            Err(_) if self.is_finished() => self.finish_into(out).map(|()| true),
            Err(e) => Err(e),
        }
    }

    fn on_end(
        &mut self,
        cut: Option<ProviderError>,
        out: &mut Vec<ChatChunk>,
    ) -> Result<(), ProviderError> {
        match cut {
            Some(e) if !self.is_finished() => Err(e),
            _ => self.finish_into(out),
        }
    }
}

impl tower::Service<AttemptRequest> for Gemini {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = BoxFuture<Result<ProviderResponse, ProviderError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AttemptRequest) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let stream = req.chat.is_stream();
            let model = req.target.upstream_model.to_string();
            let http = inner
                .headers
                .request_to(endpoint(&inner.base, &model, stream));
            client::exchange(
                &inner.client,
                http,
                request_body(&req),
                stream,
                refine,
                inner.headers.secrets(),
                |body| chunks(body, model.clone(), req.target.id.provider.clone()),
                |body| {
                    let parsed: GenerateResponse = serde_json::from_slice(&body).map_err(|e| {
                        ProviderError::new(Failure::Malformed, format!("unparseable response: {e}"))
                    })?;
                    completion(parsed, &model).map(Completion::from)
                },
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChatRequest;
    use crate::provider::Target;
    use futures_util::StreamExt;

    fn attempt(chat: &str, prefill: Option<&str>) -> AttemptRequest {
        let mut req = attempt_on("gemini-2.0-flash", chat);
        req.prefill = prefill.map(Into::into);
        req
    }

    fn attempt_on(model: &str, chat: &str) -> AttemptRequest {
        let chat: ChatRequest = serde_json::from_str(chat).unwrap();
        let mut target = Target::new("gemini", "alias");
        target.upstream_model = model.into();
        AttemptRequest::new(Arc::new(target), Arc::new(chat))
    }

    fn body(chat: &str, prefill: Option<&str>) -> Value {
        serde_json::from_slice(&request_body(&attempt(chat, prefill))).unwrap()
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("https://g.example/", "gemini-2.0-flash", false),
            "https://g.example/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            endpoint("https://g.example", "models/gemini-2.0-flash", true),
            "https://g.example/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn system_roles_and_merging() {
        let v = body(
            r#"{"model":"m","messages":[
                {"role":"system","content":"Be brief."},
                {"role":"developer","content":[{"type":"text","text":"Use French."}]},
                {"role":"user","content":"Hi"},
                {"role":"user","content":[{"type":"text","text":"there"},
                    {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}},
                    {"type":"image_url","image_url":{"url":"https://x.example/cat.JPG?s=1"}}]},
                {"role":"assistant","content":"Bonjour"},
                {"role":"assistant","content":""},
                {"role":"user","content":"Again"}
            ]}"#,
            None,
        );
        assert_eq!(
            v["systemInstruction"],
            json!({"parts":[{"text":"Be brief."},{"text":"Use French."}]})
        );
        let contents = v["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3);
        assert_eq!(contents[0]["role"], "user");
        assert_eq!(contents[0]["parts"][0]["text"], "Hi");
        assert_eq!(contents[0]["parts"][1]["text"], "there");
        assert_eq!(
            contents[0]["parts"][2]["inlineData"],
            json!({"mimeType":"image/png","data":"iVBOR"})
        );
        assert_eq!(
            contents[0]["parts"][3]["fileData"],
            json!({"fileUri":"https://x.example/cat.JPG?s=1","mimeType":"image/jpeg"})
        );
        assert_eq!(
            contents[1],
            json!({"role":"model","parts":[{"text":"Bonjour"}]})
        );
        assert_eq!(
            contents[2],
            json!({"role":"user","parts":[{"text":"Again"}]})
        );
        assert!(v.get("generationConfig").is_none());
        assert!(v.get("tools").is_none());
    }

    #[test]
    fn tools_tool_calls_and_tool_results() {
        let v = body(
            r#"{"model":"m","messages":[
                {"role":"user","content":"Weather in Paris and Rome?"},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"c1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                    {"id":"c2","type":"function","function":{"name":"forecast","arguments":"not json"}}]},
                {"role":"tool","tool_call_id":"c1","content":"{\"temp\":21}"},
                {"role":"tool","tool_call_id":"c2","content":"sunny"},
                {"role":"tool","tool_call_id":"zz","content":"[1,2]"}
            ],
            "tools":[{"type":"function","function":{"name":"weather","description":"Current weather",
                "parameters":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
                  "additionalProperties":false,
                  "properties":{"city":{"type":"string","format":"city-name"},
                                "unit":{"type":["string","null"],"enum":["c","f"]},
                                "days":{"type":"integer","const":3}},
                  "required":["city"]},"strict":true}},
              {"type":"function","function":{"name":"now","parameters":{"type":"object","properties":{}}}}],
            "tool_choice":"required"}"#,
            None,
        );
        let contents = v["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3);
        assert_eq!(
            contents[1],
            json!({"role":"model","parts":[
                {"functionCall":{"name":"weather","args":{"city":"Paris"}}},
                {"functionCall":{"name":"forecast","args":{}}}]})
        );
        assert_eq!(
            contents[2],
            json!({"role":"user","parts":[
                {"functionResponse":{"name":"weather","response":{"temp":21}}},
                {"functionResponse":{"name":"forecast","response":{"content":"sunny"}}},
                {"functionResponse":{"name":"zz","response":{"content":"[1,2]"}}}]})
        );
        let decls = &v["tools"][0]["functionDeclarations"];
        assert_eq!(decls[0]["name"], "weather");
        assert_eq!(decls[0]["description"], "Current weather");
        assert_eq!(
            decls[0]["parameters"],
            json!({"type":"object","required":["city"],"properties":{
                "city":{"type":"string"},
                "unit":{"type":"string","nullable":true,"enum":["c","f"]},
                "days":{"type":"integer","enum":["3"]}}})
        );
        assert_eq!(decls[1], json!({"name":"now"}));
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig":{"mode":"ANY"}})
        );
    }

    /// Gemini's `Schema` has no `$ref`: the nested types pydantic and zod
    /// write under `$defs` are inlined (they were dropped, so the model was
    /// told "an array of anything"); a recursive type is cut off.
    #[test]
    fn tool_schemas_have_their_refs_inlined() {
        let schema = json!({
            "type": "object",
            "$defs": {
                "Item": {"type": "object", "properties": {
                    "sku": {"type": "string"}, "qty": {"type": "integer"}}, "required": ["sku"]},
                "Node": {"type": "object", "properties": {
                    "name": {"type": "string"}, "child": {"$ref": "#/$defs/Node"}}}
            },
            "definitions": {"Unit": {"type": "string", "enum": ["kg", "lb"]}},
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                "unit": {"allOf": [{"$ref": "#/definitions/Unit"}], "description": "mass unit"},
                "tree": {"$ref": "#/$defs/Node"},
                "gone": {"$ref": "#/$defs/Missing"},
                "remote": {"$ref": "https://example.com/schema.json"}
            }
        });
        let s = parameters_schema(&schema).unwrap();
        assert_eq!(
            s["properties"]["items"],
            json!({"type": "array", "items": {"type": "object", "required": ["sku"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}})
        );
        assert_eq!(
            s["properties"]["unit"],
            json!({"type": "string", "enum": ["kg", "lb"], "description": "mass unit"})
        );
        let mut depth = 0;
        let mut node = &s["properties"]["tree"];
        while node.get("properties").is_some() {
            assert_eq!(node["properties"]["name"], json!({"type": "string"}));
            node = &node["properties"]["child"];
            depth += 1;
        }
        assert_eq!(depth, usize::from(MAX_REF_DEPTH), "cut off, not endless");
        assert_eq!(s["properties"]["gone"], json!({}));
        assert_eq!(s["properties"]["remote"], json!({}));
        assert!(s.get("$defs").is_none() && s.get("definitions").is_none());

        // A type referring to itself ten times would be 10^8 copies deep.
        let props: Map<String, Value> = (0..10)
            .map(|k| (format!("c{k}"), json!({"$ref": "#/$defs/T"})))
            .collect();
        let schema = json!({"$defs": {"T": {"type": "object", "properties": props}},
                            "type": "object", "properties": {"root": {"$ref": "#/$defs/T"}}});
        let s = parameters_schema(&schema).unwrap().to_string();
        assert!(s.len() < 64 * 1024, "{} bytes", s.len());
    }

    #[test]
    fn tool_choice_modes() {
        assert_eq!(
            tool_config(&json!("none")).unwrap()["functionCallingConfig"]["mode"],
            "NONE"
        );
        assert_eq!(
            tool_config(&json!("auto")).unwrap()["functionCallingConfig"]["mode"],
            "AUTO"
        );
        assert_eq!(
            tool_config(&json!({"type":"function","function":{"name":"f"}})).unwrap(),
            json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["f"]}})
        );
        assert!(tool_config(&json!("bogus")).is_none());
    }

    #[test]
    fn generation_config_maps_sampling_parameters() {
        let v = body(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                "max_tokens":100,"max_completion_tokens":50,"temperature":0.5,"top_p":0.9,
                "stop":["END"],"n":2,"seed":7,"presence_penalty":0.1,
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}}"#,
            None,
        );
        assert_eq!(
            v["generationConfig"],
            json!({"maxOutputTokens":50,"temperature":0.5,"topP":0.9,"stopSequences":["END"],
                   "candidateCount":2,"seed":7,"presencePenalty":0.1,
                   "responseMimeType":"application/json"})
        );
        // The schema goes as the client sent it, keywords that Gemini's
        // own `Schema` would refuse included.
        let v = body(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"invoice","strict":true,
                  "schema":{"type":"object","properties":{"a":{"type":["string","null"]}},
                            "required":["a"],"additionalProperties":false}}}}"#,
            None,
        );
        assert_eq!(
            v["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert_eq!(
            v["generationConfig"]["responseJsonSchema"],
            json!({"type":"object","properties":{"a":{"type":["string","null"]}},
                   "required":["a"],"additionalProperties":false})
        );
        assert!(v["generationConfig"].get("responseSchema").is_none());
        // JSON mode has no schema.
        let v = body(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                "response_format":{"type":"json_object"}}"#,
            None,
        );
        assert_eq!(
            v["generationConfig"],
            json!({"responseMimeType":"application/json"})
        );
        let v = body(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"X","max_tokens":9,
                "response_format":{"type":"text"}}"#,
            None,
        );
        assert_eq!(
            v["generationConfig"],
            json!({"maxOutputTokens":9,"stopSequences":["X"]})
        );
    }

    #[test]
    fn prefill_is_a_final_model_turn() {
        let v = body(
            r#"{"model":"m","messages":[{"role":"user","content":"Tell a story"}]}"#,
            Some("Once upon"),
        );
        let contents = v["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 2);
        assert_eq!(
            contents[1],
            json!({"role":"model","parts":[{"text":"Once upon"}]})
        );
        // Merged into a trailing assistant turn.
        let v = body(
            r#"{"model":"m","messages":[{"role":"user","content":"Go"},{"role":"assistant","content":"A"}]}"#,
            Some("B"),
        );
        assert_eq!(
            v["contents"][1],
            json!({"role":"model","parts":[{"text":"A"},{"text":"B"}]})
        );
    }

    fn parse(s: &str) -> GenerateResponse {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn completion_text_and_usage() {
        let c = completion(
            parse(
                r#"{"candidates":[{"content":{"role":"model","parts":[
                        {"text":"thinking...","thought":true},{"text":"Hello"},{"text":", world"}]},
                    "finishReason":"STOP","index":0}],
                  "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":3,"totalTokenCount":18},
                  "modelVersion":"gemini-2.0-flash-001","responseId":"resp-1"}"#,
            ),
            "gemini-2.0-flash",
        )
        .unwrap();
        assert_eq!(c.id, "resp-1");
        assert_eq!(c.model, "gemini-2.0-flash-001");
        assert_eq!(c.object, "chat.completion");
        assert!(c.created > 0);
        assert_eq!(c.choices.len(), 1);
        assert_eq!(
            c.choices[0].message.content.as_deref(),
            Some("Hello, world")
        );
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
        assert!(c.choices[0].message.tool_calls.is_none());
        assert_eq!(c.usage, Some(Usage::new(10, 8).with_reasoning(3)));
    }

    #[test]
    fn completion_function_calls_and_finish_reasons() {
        let c = completion(
            parse(
                r#"{"candidates":[
                    {"content":{"parts":[{"functionCall":{"name":"weather","args":{"city":"Paris"}}},
                                         {"functionCall":{"name":"now"}}]},"finishReason":"STOP"},
                    {"content":{"parts":[{"text":"cut"}]},"finishReason":"MAX_TOKENS","index":1},
                    {"content":{"parts":[]},"finishReason":"SAFETY","index":2},
                    {"content":{"parts":[{"text":"x"}]},"finishReason":"OTHER","index":3}]}"#,
            ),
            "gemini-2.0-flash",
        )
        .unwrap();
        assert!(c.id.starts_with("chatcmpl-"));
        assert_eq!(c.model, "gemini-2.0-flash");
        assert!(c.usage.is_none());
        let first = &c.choices[0];
        assert_eq!(first.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(first.message.content, None);
        let calls = first.message.tool_calls.as_ref().unwrap();
        assert!(calls[0].id.starts_with("call_") && calls[0].id.ends_with("_0"));
        assert_eq!(calls[0].kind, "function");
        assert_eq!(calls[0].function.name, "weather");
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
        let base = calls[0].id.strip_suffix("_0").unwrap();
        assert_eq!(calls[1].id, format!("{base}_1"));
        assert_eq!(calls[1].function.arguments, "{}");
        assert_eq!(c.choices[1].index, 1);
        assert_eq!(c.choices[1].finish_reason.as_deref(), Some("length"));
        assert_eq!(
            c.choices[2].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(c.choices[2].message.content.as_deref(), Some(""));
        assert_eq!(c.choices[3].finish_reason.as_deref(), Some("stop"));
    }

    /// Gemini 3 signs the first function call of a step and refuses the
    /// next request without the signature: it reaches the client as Google's
    /// OpenAI-compatible endpoint sends it.
    #[test]
    fn completion_carries_thought_signatures() {
        let c = completion(
            parse(
                r#"{"candidates":[{"content":{"role":"model","parts":[
                        {"functionCall":{"name":"f","args":{"x":1}},"thoughtSignature":"sig-A"},
                        {"functionCall":{"name":"g","args":{}}}]},"finishReason":"STOP"}]}"#,
            ),
            "gemini-3-pro-preview",
        )
        .unwrap();
        let v = serde_json::to_value(&c).unwrap();
        let calls = &v["choices"][0]["message"]["tool_calls"];
        assert_eq!(
            calls[0]["extra_content"],
            json!({"google":{"thought_signature":"sig-A"}})
        );
        assert_eq!(calls[0]["function"]["name"], "f");
        assert!(calls[1].get("extra_content").is_none(), "{calls}");
        assert!(v["choices"][0]["message"].get("extra_content").is_none());

        // An answer without calls: the signature on its last part.
        let c = completion(
            parse(
                r#"{"candidates":[{"content":{"parts":[{"text":"Hi"},{"text":"!","thoughtSignature":"sig-T"}]},
                    "finishReason":"STOP"}]}"#,
            ),
            "gemini-3-pro-preview",
        )
        .unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi!");
        assert_eq!(
            v["choices"][0]["message"]["extra_content"]["google"]["thought_signature"],
            "sig-T"
        );
    }

    /// The second turn of a tool loop: the tool call as the client got it
    /// (through the gateway's JSON) goes back with its signature on the
    /// `functionCall` part it came on.
    #[test]
    fn thought_signatures_go_back_on_their_parts() {
        let first = completion(
            parse(
                r#"{"candidates":[{"content":{"parts":[
                    {"functionCall":{"name":"f","args":{}},"thoughtSignature":"sig"},
                    {"functionCall":{"name":"g","args":{}}}]},"finishReason":"STOP"}]}"#,
            ),
            "gemini-3-pro-preview",
        )
        .unwrap();
        let message = serde_json::to_value(&first.choices[0].message).unwrap();
        let ids: Vec<&str> = first.choices[0]
            .message
            .tool_calls
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        let chat = json!({"model":"m","messages":[
            {"role":"user","content":"go"},
            message,
            {"role":"tool","tool_call_id":ids[0],"content":"1"},
            {"role":"tool","tool_call_id":ids[1],"content":"2"}]});
        let v: Value = serde_json::from_slice(&request_body(&attempt_on(
            "gemini-3-pro-preview",
            &chat.to_string(),
        )))
        .unwrap();
        assert_eq!(
            v["contents"][1],
            json!({"role":"model","parts":[
                {"functionCall":{"name":"f","args":{}},"thoughtSignature":"sig"},
                {"functionCall":{"name":"g","args":{}}}]})
        );

        // A text signature goes back on the text.
        let v = serde_json::from_slice::<Value>(&request_body(&attempt_on(
            "gemini-3-pro-preview",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},
                {"role":"assistant","content":"Hi!","extra_content":{"google":{"thought_signature":"sig-T"}}},
                {"role":"user","content":"more"}]}"#,
        )))
        .unwrap();
        assert_eq!(
            v["contents"][1],
            json!({"role":"model","parts":[{"text":"Hi!","thoughtSignature":"sig-T"}]})
        );
    }

    /// A tool loop that started on another provider has no signatures:
    /// Gemini 3 gets Google's documented placeholder on the first call of
    /// each step, older models get nothing.
    #[test]
    fn unsigned_calls_get_the_placeholder_on_models_that_check() {
        let chat = r#"{"model":"m","messages":[
            {"role":"user","content":"go"},
            {"role":"assistant","tool_calls":[
                {"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},
                {"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"a","content":"1"},
            {"role":"tool","tool_call_id":"b","content":"2"},
            {"role":"assistant","tool_calls":[
                {"id":"c","type":"function","function":{"name":"h","arguments":"{}"},
                 "extra_content":{"google":{"thought_signature":"real"}}}]},
            {"role":"tool","tool_call_id":"c","content":"3"}]}"#;
        for model in [
            "gemini-3-pro-preview",
            "models/gemini-3.1-flash",
            "gemini-flash-latest",
        ] {
            let v: Value = serde_json::from_slice(&request_body(&attempt_on(model, chat))).unwrap();
            let parts = &v["contents"][1]["parts"];
            assert_eq!(parts[0]["thoughtSignature"], SKIP_SIGNATURE, "{model}");
            assert!(parts[1].get("thoughtSignature").is_none(), "{model}");
            assert_eq!(
                v["contents"][3]["parts"][0]["thoughtSignature"], "real",
                "a real signature is never replaced"
            );
        }
        for model in ["gemini-2.5-flash", "gemini-2.0-flash", "gemini-1.5-pro"] {
            let v: Value = serde_json::from_slice(&request_body(&attempt_on(model, chat))).unwrap();
            assert!(
                v["contents"][1]["parts"][0]
                    .get("thoughtSignature")
                    .is_none(),
                "{model}"
            );
            assert_eq!(v["contents"][3]["parts"][0]["thoughtSignature"], "real");
        }
    }

    #[test]
    fn blocked_prompt_is_content_policy() {
        let e = completion(
            parse(r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4}}"#),
            "m",
        )
        .unwrap_err();
        assert_eq!(e.failure, Failure::ContentPolicy);
        assert_eq!(e.message, "prompt blocked: SAFETY");
        let e = completion(parse(r#"{"candidates":[]}"#), "m").unwrap_err();
        assert_eq!(e.failure, Failure::Malformed);
    }

    #[test]
    fn http_errors_are_refined() {
        let h = http::HeaderMap::new();
        let base = ProviderError::from_status(StatusCode::BAD_REQUEST, &h, "");
        let e = refine(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
            base.clone(),
        );
        assert_eq!(e.failure, Failure::ContextLength);
        assert!(e.message.starts_with("The input token count"));
        // A plain 400 stays the client's.
        let e = refine(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[]}]}}"#,
            base.clone(),
        );
        assert_eq!(e.failure, Failure::Client { status: 400 });
        assert_eq!(e.message, "Invalid JSON payload received.");
        let e = refine(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}"#,
            base.clone(),
        );
        assert_eq!(e.failure, Failure::Client { status: 400 }, "no ErrorInfo");
        assert_eq!(e.status, Some(400));
        let e = refine(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":400,"message":"Unknown name \"foo\".","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SOMETHING_ELSE","domain":"googleapis.com"}]}}"#,
            base.clone(),
        );
        assert_eq!(e.failure, Failure::Client { status: 400 }, "another reason");
        let e = refine(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":{"code":422,"message":"nope","status":"FAILED_PRECONDITION"}}"#,
            ProviderError::from_status(StatusCode::UNPROCESSABLE_ENTITY, &h, ""),
        );
        assert_eq!(e.failure, Failure::Client { status: 422 }, "only a 400");
        let e = refine(
            StatusCode::FORBIDDEN,
            br#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]"#,
            ProviderError::from_status(StatusCode::FORBIDDEN, &h, ""),
        );
        assert_eq!(e.failure, Failure::RateLimited);
        assert_eq!(e.message, "Quota exceeded");
        assert_eq!(e.retry_after, None);
    }

    /// Gemini sends a 429's wait in the body's `RetryInfo`, not in a
    /// `Retry-After` header; a daily quota is no rate limit: waiting seconds
    /// does not bring it back, so the target is refused for this request.
    #[test]
    fn a_429_s_retry_info_is_its_wait_and_a_daily_quota_refuses_the_target() {
        let h = http::HeaderMap::new();
        let base = || ProviderError::from_status(StatusCode::TOO_MANY_REQUESTS, &h, "");
        let body = |quota_id: &str, delay: &str| {
            format!(
                r#"{{"error":{{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[
                {{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"{quota_id}","quotaDimensions":{{"model":"gemini-2.5-pro"}},"quotaValue":"50"}}]}},
                {{"@type":"type.googleapis.com/google.rpc.Help","links":[{{"description":"Learn more","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}}]}},
                {{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]}}}}"#
            )
        };
        let e = refine(
            StatusCode::TOO_MANY_REQUESTS,
            body(
                "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "37s",
            )
            .as_bytes(),
            base(),
        );
        assert_eq!(e.failure, Failure::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(37)));
        let e = refine(
            StatusCode::TOO_MANY_REQUESTS,
            body("GenerateRequestsPerMinutePerProjectPerModel", "0.5s").as_bytes(),
            base(),
        );
        assert_eq!(e.retry_after, Some(Duration::from_millis(500)));
        let e = refine(
            StatusCode::TOO_MANY_REQUESTS,
            body("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "39s").as_bytes(),
            base(),
        );
        assert_eq!(e.failure, Failure::TargetRefused { status: 429 });
        assert!(!e.failure.is_retryable_on_same_target());
        // A header's wait wins over the body's; a nonsense delay is none.
        let mut with_header = http::HeaderMap::new();
        with_header.insert("retry-after", http::HeaderValue::from_static("2"));
        let e = refine(
            StatusCode::TOO_MANY_REQUESTS,
            body("PerMinute", "37s").as_bytes(),
            ProviderError::from_status(StatusCode::TOO_MANY_REQUESTS, &with_header, ""),
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        for bad in ["-1s", "37", "NaNs", "1e9s"] {
            let e = refine(
                StatusCode::TOO_MANY_REQUESTS,
                body("PerMinute", bad).as_bytes(),
                base(),
            );
            assert_eq!(e.retry_after, None, "{bad}");
        }
        // The same details on an in-stream error.
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0}]}"#,
            &body("GenerateRequestsPerMinutePerProjectPerModel", "3s").replace('\n', ""),
        ]);
        let e = out.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.failure, Failure::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        let e = refine(
            StatusCode::SERVICE_UNAVAILABLE,
            b"not json",
            ProviderError::from_status(StatusCode::SERVICE_UNAVAILABLE, &h, ""),
        );
        assert_eq!(e.failure, Failure::Server { status: 503 });
    }

    /// Gemini refuses a bad or expired key with a 400, not a 401: its
    /// `ErrorInfo` reason makes that a refused target, like a 401.
    #[test]
    fn key_and_account_refusals_sent_as_400_are_target_refusals() {
        let h = http::HeaderMap::new();
        let base = ProviderError::from_status(StatusCode::BAD_REQUEST, &h, "");
        for (body, failure) in [
            (
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}},{"@type":"type.googleapis.com/google.rpc.LocalizedMessage","locale":"en-US","message":"API key not valid. Please pass a valid API key."}]}}"#,
                Failure::TargetRefused { status: 401 },
            ),
            (
                r#"{"error":{"code":400,"message":"API key expired. Please renew the API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_EXPIRED","domain":"googleapis.com"}]}}"#,
                Failure::TargetRefused { status: 401 },
            ),
            // Re-encoded by a proxy without the type URL.
            (
                r#"{"error":{"code":400,"message":"API Key not found. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
                Failure::TargetRefused { status: 401 },
            ),
            (
                r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#,
                Failure::TargetRefused { status: 400 },
            ),
            (
                r#"{"error":{"code":400,"message":"Billing is not enabled.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"BILLING_DISABLED"}]}}"#,
                Failure::TargetRefused { status: 400 },
            ),
        ] {
            let e = refine(StatusCode::BAD_REQUEST, body.as_bytes(), base.clone());
            assert_eq!(e.failure, failure, "{body}");
            assert!(e.failure.counts_against_target());
            assert_eq!(e.status, Some(400), "the status the provider sent");
        }
    }

    /// Runs a recorded event sequence through the translator, as the async
    /// stream does, and returns what the client would see.
    fn run(events: &[&str]) -> Vec<Result<ChatChunk, ProviderError>> {
        let mut t = StreamTranslator::new("gemini-2.0-flash", 42, Arc::from("gemini"));
        let mut out = Vec::new();
        for data in events {
            match t.on_data(data) {
                Ok(chunks) => out.extend(chunks.into_iter().map(Ok)),
                Err(_) if t.is_finished() => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
        match t.finish() {
            Ok(Some(u)) => out.push(Ok(u)),
            Ok(None) => {}
            Err(e) => out.push(Err(e)),
        }
        out
    }

    #[test]
    fn stream_text_finish_and_usage() {
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7},"modelVersion":"gemini-2.0-flash-001","responseId":"r1"}"#,
            "{not json",
            r#"{"candidates":[{"content":{"parts":[{"text":"lo"}],"role":"model"},"index":0}],"modelVersion":"gemini-2.0-flash-001","responseId":"r1"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"!"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":3,"totalTokenCount":10},"modelVersion":"gemini-2.0-flash-001","responseId":"r1"}"#,
        ]);
        let chunks: Vec<ChatChunk> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(chunks.len(), 6);
        for c in &chunks {
            assert_eq!(c.id, "r1");
            assert_eq!(c.model, "gemini-2.0-flash-001");
            assert_eq!(c.created, 42);
            assert_eq!(c.object, "chat.completion.chunk");
        }
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        assert!(!chunks[0].has_content());
        let text: String = chunks.iter().map(ChatChunk::text).collect();
        assert_eq!(text, "Hello!");
        assert_eq!(chunks[4].finish_reason(), Some("stop"));
        assert!(chunks[5].choices.is_empty());
        assert_eq!(chunks[5].usage, Some(Usage::new(7, 3)));
    }

    #[test]
    fn stream_function_call_is_one_fragment() {
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"weather","args":{"city":"Rome"}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7}}"#,
        ]);
        let chunks: Vec<ChatChunk> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(chunks.len(), 4);
        assert!(chunks[0].id.starts_with("chatcmpl-"));
        assert_eq!(chunks[0].model, "gemini-2.0-flash");
        let call = &chunks[1].choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.index, 0);
        assert!(call
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with("call_") && id.ends_with("_0")));
        assert_eq!(call.kind.as_deref(), Some("function"));
        let f = call.function.as_ref().unwrap();
        assert_eq!(f.name.as_deref(), Some("weather"));
        assert_eq!(f.arguments.as_deref(), Some(r#"{"city":"Rome"}"#));
        assert!(chunks[1].has_content());
        assert_eq!(chunks[2].finish_reason(), Some("tool_calls"));
        assert_eq!(chunks[3].usage, Some(Usage::new(5, 2)));
        assert!(chunks.iter().all(|c| c.id == chunks[0].id));
    }

    #[test]
    fn stream_function_call_carries_its_signature() {
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"sig-S"},{"functionCall":{"name":"g","args":{}}}],"role":"model"},"index":0}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"","thoughtSignature":"sig-E"}],"role":"model"},"finishReason":"STOP","index":0}]}"#,
        ]);
        let chunks: Vec<ChatChunk> = out.into_iter().map(Result::unwrap).collect();
        let v = serde_json::to_value(&chunks[1]).unwrap();
        let calls = &v["choices"][0]["delta"]["tool_calls"];
        assert_eq!(
            calls[0]["extra_content"],
            json!({"google":{"thought_signature":"sig-S"}})
        );
        assert!(calls[1].get("extra_content").is_none());
        // A signature alone on an empty text part is a delta of its own.
        let v = serde_json::to_value(&chunks[2]).unwrap();
        assert_eq!(
            v["choices"][0]["delta"],
            json!({"extra_content":{"google":{"thought_signature":"sig-E"}}})
        );
        assert!(!chunks[2].has_content());
        assert_eq!(chunks[3].finish_reason(), Some("tool_calls"));
    }

    #[test]
    fn stream_without_finish_is_cut() {
        let out =
            run(&[r#"{"candidates":[{"content":{"parts":[{"text":"partial"}]},"index":0}]}"#]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].as_ref().unwrap().text(), "partial");
        assert_eq!(out[2].as_ref().unwrap_err().failure, Failure::StreamCut);
        // Nothing at all is a cut too.
        let out = run(&[]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap_err().failure, Failure::StreamCut);
    }

    #[test]
    fn stream_error_events_are_classified() {
        for (status, failure) in [
            ("RESOURCE_EXHAUSTED", Failure::RateLimited),
            ("UNAVAILABLE", Failure::Server { status: 503 }),
            ("INTERNAL", Failure::Server { status: 500 }),
            ("DEADLINE_EXCEEDED", Failure::Timeout),
            // The request or the target, as the same status would say
            // before the stream began: not retried on the same target.
            ("INVALID_ARGUMENT", Failure::Client { status: 400 }),
            ("PERMISSION_DENIED", Failure::TargetRefused { status: 403 }),
            (
                "FAILED_PRECONDITION",
                Failure::TargetRefused { status: 400 },
            ),
            ("ABORTED", Failure::Server { status: 500 }),
        ] {
            let err = format!(r#"{{"error":{{"code":500,"message":"boom","status":"{status}"}}}}"#);
            let out = run(&[
                r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0}]}"#,
                &err,
                r#"{"candidates":[{"content":{"parts":[{"text":"never"}]},"index":0}]}"#,
            ]);
            assert_eq!(out.len(), 3, "{status}");
            let e = out[2].as_ref().unwrap_err();
            assert_eq!(e.failure, failure, "{status}");
            assert_eq!(e.message, "boom");
        }
    }

    #[test]
    fn stream_blocked_prompt_and_safety_finish() {
        let out = run(&[r#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}"#]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap_err().failure, Failure::ContentPolicy);

        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"Sure"}]},"index":0}]}"#,
            r#"{"candidates":[{"finishReason":"SAFETY","index":0}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}"#,
        ]);
        let chunks: Vec<ChatChunk> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(chunks[2].finish_reason(), Some("content_filter"));
        assert_eq!(chunks[3].usage, Some(Usage::new(1, 1)));
    }

    /// A malformed function call (or another answer the model got wrong)
    /// is a malformed answer (the router moves on), not a `stop` with an
    /// empty message; the image and model-armor filters are a
    /// `content_filter`.
    #[test]
    fn a_malformed_function_call_is_a_malformed_answer() {
        for reason in FAILED_FINISHES {
            let body = format!(
                r#"{{"candidates":[{{"content":{{"parts":[]}},"finishReason":"{reason}","index":0}}],"usageMetadata":{{"promptTokenCount":3}}}}"#
            );
            let e = completion(parse(&body), "gemini-2.5-pro").unwrap_err();
            assert_eq!(e.failure, Failure::Malformed, "{reason}");
            assert!(e.message.contains(reason), "{e}");

            let out = run(&[&body]);
            assert_eq!(
                out.last().unwrap().as_ref().unwrap_err().failure,
                Failure::Malformed,
                "{out:?}"
            );
            assert!(out.iter().all(|c| c
                .as_ref()
                .map_or(true, |c| c.finish_reason() != Some("stop"))));
        }
        for reason in ["IMAGE_PROHIBITED_CONTENT", "MODEL_ARMOR", "LANGUAGE"] {
            assert_eq!(map_finish(reason, false), "content_filter", "{reason}");
        }
    }

    #[test]
    fn stream_multiple_candidates_finish_when_all_do() {
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0},{"content":{"parts":[{"text":"b"}]},"index":1}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP","index":0}]}"#,
        ]);
        // Candidate 1 never finished.
        assert_eq!(
            out.last().unwrap().as_ref().unwrap_err().failure,
            Failure::StreamCut
        );
        let out = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"STOP","index":0},{"content":{"parts":[{"text":"b"}]},"finishReason":"MAX_TOKENS","index":1}]}"#,
        ]);
        let chunks: Vec<ChatChunk> = out.into_iter().map(Result::unwrap).collect();
        let finishes: Vec<(u32, &str)> = chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .filter_map(|c| c.finish_reason.as_deref().map(|r| (c.index, r)))
            .collect();
        assert_eq!(finishes, vec![(0, "stop"), (1, "length")]);
    }

    /// Serves one canned HTTP response on a local port and returns what the
    /// client sent (head and body).
    async fn serve_once(response: String) -> (String, tokio::task::JoinHandle<(String, String)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let (head, body) = loop {
                let n = sock.read(&mut tmp).await.unwrap();
                buf.extend_from_slice(&tmp[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_owned(), body.to_owned());
                    }
                }
            };
            sock.write_all(response.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
            (head, body)
        });
        (base, task)
    }

    #[tokio::test]
    async fn service_streams_over_http() {
        use tower::ServiceExt;
        let events = [
            r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"index":0}],"responseId":"r9"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":" there"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5},"responseId":"r9"}"#,
        ];
        let sse: String = events
            .iter()
            .map(|e| format!("data: {e}\r\n\r\n"))
            .collect();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{sse}"
        );
        let (base, server) = serve_once(response).await;
        let gemini = Gemini::new(&base, Some(Secret::new("k-123")), client::http_client());
        let req = attempt(
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            None,
        );
        let ProviderResponse::Stream(stream) = gemini.oneshot(req).await.unwrap() else {
            panic!("expected a stream");
        };
        let chunks: Vec<ChatChunk> = stream
            .map(|c| c.unwrap().into_chat_chunk().unwrap())
            .collect()
            .await;
        let (head, body) = server.await.unwrap();
        assert!(head.starts_with(
            "POST /v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse HTTP/1.1"
        ));
        let head = head.to_ascii_lowercase();
        assert!(head.contains("x-goog-api-key: k-123"));
        assert!(head.contains("content-type: application/json"));
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["contents"][0]["parts"][0]["text"], "hi");
        let text: String = chunks.iter().map(ChatChunk::text).collect();
        assert_eq!(text, "Hi there");
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[3].finish_reason(), Some("stop"));
        assert_eq!(chunks[4].usage, Some(Usage::new(3, 2)));
        assert!(chunks.iter().all(|c| c.id == "r9"));
    }

    #[tokio::test]
    async fn service_classifies_http_errors() {
        use tower::ServiceExt;
        let body = r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
        let response = format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 3\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (base, server) = serve_once(response).await;
        let gemini = Gemini::new(&base, None, client::http_client());
        let req = attempt(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            None,
        );
        let err = gemini.oneshot(req).await.unwrap_err();
        let (head, _) = server.await.unwrap();
        assert!(head.starts_with("POST /v1beta/models/gemini-2.0-flash:generateContent HTTP/1.1"));
        assert!(!head.to_ascii_lowercase().contains("x-goog-api-key"));
        assert_eq!(err.failure, Failure::RateLimited);
        assert_eq!(err.message, "Resource has been exhausted");
        assert_eq!(err.retry_after, Some(std::time::Duration::from_secs(3)));
    }
}
