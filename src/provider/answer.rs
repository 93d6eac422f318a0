//! What adapters answer with: stream [`Chunk`]s and whole [`Completion`]s.
//!
//! Both come in two forms. An OpenAI-compatible provider already speaks the
//! gateway's wire format, so its JSON is kept as it arrived (as [`Bytes`]),
//! next to the few fields the layers read: the text, `finish_reason`, usage,
//! whether there are choices, tool calls or a refusal. The gateway sends
//! those bytes to the client unchanged, so it neither builds nor serialises a
//! [`ChatChunk`] or [`ChatCompletion`] per chunk or answer. The other form
//! holds a parsed value: what the Anthropic and Gemini adapters translate,
//! and any chunk a layer had to rewrite (a continuation's id, a spliced
//! text, usage a client did not ask for).
//!
//! Provider JSON is kept as-is only when re-encoding it would add nothing:
//! every field the gateway's own encoding always writes is present, and the
//! data holds no line break (which would end an SSE `data:` line early).
//! Anything else is parsed into the typed value, as before.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::api::{ChatChunk, ChatCompletion, Usage};
use crate::sse::{encode_data, encode_json};

/// Why provider JSON cannot be forwarded as it is.
///
/// The adapters then parse it into the typed value instead, which fills in
/// defaults for missing fields, or reject it as before.
///
/// ```
/// use bytes::Bytes;
/// use modelux::provider::{Chunk, RawJsonError};
/// let chunk = |s: String| Chunk::from_json(Bytes::from(s));
/// let head = r#""id":"c1","object":"chat.completion.chunk","created":7,"model":"m""#;
/// assert!(matches!(chunk("{nope".into()), Err(RawJsonError::Json(_))));
/// assert!(matches!(chunk(format!("{{{head},\n\"choices\":[]}}")), Err(RawJsonError::LineBreak)));
/// let failed = format!(r#"{{{head},"choices":[{{"index":0,"delta":{{}},"finish_reason":"error"}}]}}"#);
/// let err = chunk(failed).unwrap_err();
/// assert!(matches!(err, RawJsonError::ErrorEvent));
/// assert_eq!(err.to_string(), "the chunk reports an error");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RawJsonError {
    /// Not JSON of the expected shape.
    Json(serde_json::Error),
    /// A field the gateway's own encoding always writes is missing or null.
    Incomplete,
    /// The JSON contains a line break, which cannot go on one SSE `data:` line.
    LineBreak,
    /// The bytes are not UTF-8.
    Utf8(std::str::Utf8Error),
    /// A chunk-shaped event that reports a failure: it carries a top-level
    /// `error` object, or a choice ends with `finish_reason: "error"`, as
    /// OpenRouter and other OpenAI-compatible servers send a failure in the
    /// middle of an answer. It is an error, not a chunk to forward.
    ErrorEvent,
}

impl fmt::Display for RawJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawJsonError::Json(e) => write!(f, "not forwardable JSON: {e}"),
            RawJsonError::Incomplete => {
                f.write_str("a field the OpenAI format requires is missing")
            }
            RawJsonError::LineBreak => f.write_str("the JSON contains a line break"),
            RawJsonError::Utf8(e) => write!(f, "not UTF-8: {e}"),
            RawJsonError::ErrorEvent => f.write_str("the chunk reports an error"),
        }
    }
}

impl std::error::Error for RawJsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RawJsonError::Json(e) => Some(e),
            RawJsonError::Utf8(e) => Some(e),
            _ => None,
        }
    }
}

/// One chunk of a streamed answer, in OpenAI's `chat.completion.chunk` format.
///
/// A chunk built from a [`ChatChunk`] is encoded when it is sent; a chunk
/// made by [`Chunk::from_json`] is sent as the provider's bytes, unless a
/// layer rewrote it through [`Chunk::make_mut`].
///
/// ```
/// use modelux::api::ChatChunk;
/// use modelux::provider::Chunk;
/// let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"x_new":1}"#;
/// let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
/// assert_eq!(chunk.text(), "Hel");
/// assert!(chunk.has_content());
/// // Sent exactly as the provider wrote it, unknown fields included.
/// assert_eq!(&chunk.to_sse()[..], [&b"data: "[..], raw, b"\n\n"].concat());
///
/// let built = Chunk::from(ChatChunk::content("c1", "m", 7, "Hel"));
/// assert_eq!(built.text(), "Hel");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    repr: Repr,
}

#[derive(Clone, Debug, PartialEq)]
enum Repr {
    Parsed(ChatChunk),
    Raw(RawChunk),
}

/// Provider bytes and what the layers read of them.
#[derive(Clone, Debug, PartialEq)]
struct RawChunk {
    json: Bytes,
    text: Option<Str>,
    finish_reason: Option<Str>,
    usage: Option<Usage>,
    choices: bool,
    tool_calls: bool,
    refusal: bool,
    /// Bytes of the tool calls' names and argument fragments.
    tool_call_bytes: u32,
}

/// A string of a [`RawChunk`]: a byte range of its JSON when the JSON
/// string had no escapes, else a copy.
#[derive(Clone, Debug, PartialEq)]
enum Str {
    Span(u32, u32),
    Owned(Box<str>),
}

impl Str {
    fn new(s: Cow<'_, str>, json: &[u8]) -> Str {
        if let Cow::Borrowed(b) = &s {
            let start = (b.as_ptr() as usize).wrapping_sub(json.as_ptr() as usize);
            if start <= json.len() && b.len() <= json.len() - start {
                if let (Ok(a), Ok(z)) = (u32::try_from(start), u32::try_from(start + b.len())) {
                    return Str::Span(a, z);
                }
            }
        }
        Str::Owned(s.into_owned().into_boxed_str())
    }

    fn get<'a>(&'a self, json: &'a [u8]) -> &'a str {
        match self {
            Str::Span(a, z) => json
                .get(*a as usize..*z as usize)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            Str::Owned(s) => s,
        }
    }
}

impl RawChunk {
    /// Reads what the layers need from `json`, which the caller then stores
    /// in the returned value's (still empty) `json`. Parsing from `&str`
    /// skips serde_json's UTF-8 check of every string.
    fn view(json: &str) -> Result<RawChunk, RawJsonError> {
        if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
            return Err(RawJsonError::LineBreak);
        }
        let v: ChunkView<'_> = serde_json::from_str(json).map_err(RawJsonError::Json)?;
        let choices = v.choices.ok_or(RawJsonError::Incomplete)?;
        if !(v.id.0 && v.object.0 && v.created.is_some() && v.model.0 && choices.complete) {
            return Err(RawJsonError::Incomplete);
        }
        if v.error.0 || choices.failed {
            return Err(RawJsonError::ErrorEvent);
        }
        Ok(RawChunk {
            json: Bytes::new(),
            text: choices.text.map(|t| Str::new(t, json.as_bytes())),
            finish_reason: choices.finish_reason.map(|t| Str::new(t, json.as_bytes())),
            usage: v.usage,
            choices: choices.count > 0,
            tool_calls: choices.tool_calls,
            refusal: choices.refusal,
            tool_call_bytes: u32::try_from(choices.tool_call_bytes).unwrap_or(u32::MAX),
        })
    }
}

impl From<ChatChunk> for Chunk {
    fn from(c: ChatChunk) -> Self {
        Chunk {
            repr: Repr::Parsed(c),
        }
    }
}

impl Chunk {
    /// A chunk that keeps `json`, an OpenAI `chat.completion.chunk` object as
    /// a provider sent it, and reads only what the layers need from it.
    ///
    /// Fails when the bytes are not such an object, lack a field the OpenAI
    /// format requires (`id`, `object`, `created`, `model`, `choices`, and
    /// each choice's `index`, `delta` and `finish_reason`), or contain a
    /// line break. Parse those into a [`ChatChunk`] instead. A chunk that
    /// reports an error (a top-level `error`, or `finish_reason: "error"`)
    /// fails with [`RawJsonError::ErrorEvent`]: it is a failure, not a chunk.
    ///
    /// ```
    /// use modelux::provider::{Chunk, RawJsonError};
    /// let e = Chunk::from_json(bytes::Bytes::from_static(br#"{"error":{"message":"x"}}"#));
    /// assert!(matches!(e, Err(RawJsonError::Incomplete)));
    /// ```
    pub fn from_json(json: Bytes) -> Result<Chunk, RawJsonError> {
        let mut raw = RawChunk::view(std::str::from_utf8(&json).map_err(RawJsonError::Utf8)?)?;
        raw.json = json;
        Ok(Chunk {
            repr: Repr::Raw(raw),
        })
    }

    /// [`Chunk::from_json`] for an SSE event's data, which is already a
    /// `String` (so UTF-8 is not checked again); hands the data back on
    /// failure so the caller can parse it without a copy.
    pub(crate) fn try_from_string(data: String) -> Result<Chunk, (String, RawJsonError)> {
        match RawChunk::view(&data) {
            Ok(mut raw) => {
                raw.json = Bytes::from(data);
                Ok(Chunk {
                    repr: Repr::Raw(raw),
                })
            }
            Err(e) => Err((data, e)),
        }
    }

    /// The provider's JSON, when the chunk is still sent as it arrived.
    ///
    /// ```
    /// use modelux::{api::ChatChunk, provider::Chunk};
    /// let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    /// let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// assert_eq!(&chunk.json().unwrap()[..], &raw[..]);
    /// assert!(Chunk::from(ChatChunk::content("c1", "m", 7, "Hi")).json().is_none());
    /// ```
    pub fn json(&self) -> Option<&Bytes> {
        match &self.repr {
            Repr::Raw(r) => Some(&r.json),
            Repr::Parsed(_) => None,
        }
    }

    /// The parsed chunk, when it was built from one or has been rewritten.
    ///
    /// ```
    /// use modelux::{api::ChatChunk, provider::Chunk};
    /// let built = Chunk::from(ChatChunk::content("c1", "m", 7, "Hi"));
    /// assert_eq!(built.parsed().unwrap().text(), "Hi");
    /// # let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    /// # let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// // A chunk that kept the provider's JSON has no parsed form.
    /// assert!(chunk.parsed().is_none());
    /// ```
    pub fn parsed(&self) -> Option<&ChatChunk> {
        match &self.repr {
            Repr::Parsed(c) => Some(c),
            Repr::Raw(_) => None,
        }
    }

    /// Whether the chunk has any choice (the final usage chunk has none).
    ///
    /// ```
    /// use modelux::{api::{ChatChunk, Usage}, provider::Chunk};
    /// let usage = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    /// assert!(!Chunk::from_json(bytes::Bytes::from_static(usage)).unwrap().has_choices());
    /// assert!(Chunk::from(ChatChunk::content("c1", "m", 7, "Hi")).has_choices());
    /// assert!(!Chunk::from(ChatChunk::usage_only("c1", "m", 7, Usage::new(3, 1))).has_choices());
    /// ```
    pub fn has_choices(&self) -> bool {
        match &self.repr {
            Repr::Parsed(c) => !c.choices.is_empty(),
            Repr::Raw(r) => r.choices,
        }
    }

    /// Whether any choice carries text, a refusal or a tool call: the point
    /// after which a stream is committed to its provider.
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// let chunk = |s: &'static str| Chunk::from_json(bytes::Bytes::from_static(s.as_bytes())).unwrap();
    /// let role = chunk(r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#);
    /// let text = chunk(r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#);
    /// assert!(!role.has_content());
    /// assert!(text.has_content());
    /// ```
    pub fn has_content(&self) -> bool {
        match &self.repr {
            Repr::Parsed(c) => c.has_content(),
            Repr::Raw(r) => {
                r.tool_calls
                    || r.refusal
                    || r.text.as_ref().is_some_and(|t| !t.get(&r.json).is_empty())
            }
        }
    }

    /// The length in bytes of what the chunk adds to the answer: its text
    /// and its tool calls' name and argument fragments. The gateway
    /// estimates the completion tokens of a stream that reported no usage
    /// from this; a chunk that kept the provider's JSON counted its tool
    /// calls' bytes when it was first read.
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// let chunk = |s: &'static str| Chunk::from_json(bytes::Bytes::from_static(s.as_bytes())).unwrap();
    /// let text = chunk(r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#);
    /// let call = chunk(r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}]}"#);
    /// assert_eq!(text.output_len(), 2);
    /// assert_eq!(call.output_len(), "f".len() + r#"{"a""#.len());
    /// ```
    pub fn output_len(&self) -> usize {
        match &self.repr {
            Repr::Parsed(c) => {
                let calls: usize = c
                    .choices
                    .iter()
                    .flat_map(|c| c.delta.tool_calls.iter().flatten())
                    .filter_map(|t| t.function.as_ref())
                    .map(|f| {
                        f.name.as_deref().map_or(0, str::len)
                            + f.arguments.as_deref().map_or(0, str::len)
                    })
                    .sum();
                self.text().len() + calls
            }
            Repr::Raw(r) => self.text().len() + r.tool_call_bytes as usize,
        }
    }

    /// Whether any choice carries a tool call fragment.
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}"#;
    /// let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// assert!(chunk.has_tool_calls() && chunk.has_content());
    /// assert_eq!(chunk.text(), "");
    /// ```
    pub fn has_tool_calls(&self) -> bool {
        match &self.repr {
            Repr::Parsed(c) => c
                .choices
                .iter()
                .any(|c| c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty())),
            Repr::Raw(r) => r.tool_calls,
        }
    }

    /// The text of all choices' deltas, concatenated.
    ///
    /// ```
    /// use modelux::{api::ChatChunk, provider::Chunk};
    /// # let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    /// # let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// // Read from the provider's JSON in place.
    /// assert_eq!(chunk.text(), "Hi");
    /// assert_eq!(Chunk::from(ChatChunk::content("c1", "m", 7, "a\"b")).text(), "a\"b");
    /// ```
    pub fn text(&self) -> Cow<'_, str> {
        match &self.repr {
            Repr::Parsed(c) => {
                let mut texts = c.choices.iter().filter_map(|c| c.delta.content.as_deref());
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(t), None) => Cow::Borrowed(t),
                    (Some(_), Some(_)) => Cow::Owned(c.text()),
                }
            }
            Repr::Raw(r) => Cow::Borrowed(r.text.as_ref().map_or("", |t| t.get(&r.json))),
        }
    }

    /// The first `finish_reason` any choice carries.
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    /// let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// assert_eq!(chunk.finish_reason(), Some("stop"));
    /// ```
    pub fn finish_reason(&self) -> Option<&str> {
        match &self.repr {
            Repr::Parsed(c) => c.finish_reason(),
            Repr::Raw(r) => r.finish_reason.as_ref().map(|t| t.get(&r.json)),
        }
    }

    /// The chunk's `id`.
    ///
    /// ```
    /// use modelux::{api::ChatChunk, provider::Chunk};
    /// # let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    /// # let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// assert_eq!(chunk.id().as_deref(), Some("c1"));
    /// assert_eq!(Chunk::from(ChatChunk::empty("c2", "m", 7)).id().as_deref(), Some("c2"));
    /// ```
    pub fn id(&self) -> Option<Cow<'_, str>> {
        match &self.repr {
            Repr::Parsed(c) => Some(Cow::Borrowed(&c.id)),
            Repr::Raw(r) => serde_json::from_slice::<IdView<'_>>(&r.json)
                .ok()
                .map(|v| v.id.0),
        }
    }

    /// The usage the chunk reports, if any.
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    /// let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// assert_eq!(chunk.usage().unwrap().total_tokens, 4);
    /// ```
    pub fn usage(&self) -> Option<Usage> {
        match &self.repr {
            Repr::Parsed(c) => c.usage,
            Repr::Raw(r) => r.usage,
        }
    }

    /// The whole chunk as a [`ChatChunk`], parsing the provider's JSON if
    /// the chunk kept it.
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// # let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    /// # let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// let parsed = chunk.to_chat_chunk().unwrap();
    /// assert_eq!((parsed.id.as_str(), parsed.created), ("c1", 7));
    /// // The chunk itself still keeps the provider's JSON.
    /// assert!(chunk.json().is_some());
    /// ```
    pub fn to_chat_chunk(&self) -> Result<Cow<'_, ChatChunk>, serde_json::Error> {
        match &self.repr {
            Repr::Parsed(c) => Ok(Cow::Borrowed(c)),
            Repr::Raw(r) => serde_json::from_slice(&r.json).map(Cow::Owned),
        }
    }

    /// The chunk as a [`ChatChunk`] to rewrite. A chunk that kept the
    /// provider's JSON is parsed first and is encoded from then on.
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// let raw = br#"{"id":"b","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#;
    /// let mut chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// chunk.make_mut().unwrap().id = "a".into();
    /// assert!(chunk.json().is_none());
    /// assert_eq!(chunk.parsed().unwrap().id, "a");
    /// ```
    pub fn make_mut(&mut self) -> Result<&mut ChatChunk, serde_json::Error> {
        if let Repr::Raw(r) = &self.repr {
            let parsed: ChatChunk = serde_json::from_slice(&r.json)?;
            self.repr = Repr::Parsed(parsed);
        }
        match &mut self.repr {
            Repr::Parsed(c) => Ok(c),
            // Replaced just above; never reached.
            Repr::Raw(_) => Err(de::Error::custom("the chunk could not be parsed")),
        }
    }

    /// The whole chunk as an owned [`ChatChunk`].
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// # let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    /// # let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// let parsed = chunk.into_chat_chunk().unwrap();
    /// assert_eq!(parsed.choices[0].delta.content.as_deref(), Some("Hi"));
    /// ```
    pub fn into_chat_chunk(self) -> Result<ChatChunk, serde_json::Error> {
        match self.repr {
            Repr::Parsed(c) => Ok(c),
            Repr::Raw(r) => serde_json::from_slice(&r.json),
        }
    }

    /// The chunk as one SSE `data:` event: the provider's bytes when they
    /// were kept, else the encoded [`ChatChunk`].
    ///
    /// ```
    /// use modelux::provider::Chunk;
    /// let raw = br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    /// let chunk = Chunk::from_json(bytes::Bytes::from_static(raw)).unwrap();
    /// let event = chunk.to_sse();
    /// assert!(event.starts_with(b"data: {\"id\":\"c1\""));
    /// assert_eq!(&event[6..event.len() - 2], &raw[..]);
    /// assert!(event.ends_with(b"\n\n"));
    /// ```
    pub fn to_sse(&self) -> Bytes {
        match &self.repr {
            Repr::Parsed(c) => encode_json(c),
            Repr::Raw(r) => encode_data(&r.json),
        }
    }
}

/// A whole answer, in OpenAI's `chat.completion` format.
///
/// Like [`Chunk`], it either keeps an OpenAI-compatible provider's body as
/// it arrived, with its usage read out, or holds a [`ChatCompletion`].
///
/// ```
/// use modelux::api::ChatCompletion;
/// use modelux::provider::Completion;
/// let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4},"x_new":true}"#;
/// let c = Completion::from_json(bytes::Bytes::from_static(body)).unwrap();
/// assert_eq!(c.usage().unwrap().total_tokens, 4);
/// assert_eq!(&c.to_json()[..], &body[..]);
///
/// let built = Completion::from(ChatCompletion::text("c", "m", "hi", "stop"));
/// assert_eq!(built.to_chat_completion().unwrap().choices[0].message.content.as_deref(), Some("hi"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    repr: CompletionRepr,
}

#[derive(Clone, Debug, PartialEq)]
enum CompletionRepr {
    Parsed(Box<ChatCompletion>),
    Raw { json: Bytes, usage: Option<Usage> },
}

impl From<ChatCompletion> for Completion {
    fn from(c: ChatCompletion) -> Self {
        Completion {
            repr: CompletionRepr::Parsed(Box::new(c)),
        }
    }
}

impl From<Box<ChatCompletion>> for Completion {
    fn from(c: Box<ChatCompletion>) -> Self {
        Completion {
            repr: CompletionRepr::Parsed(c),
        }
    }
}

impl Completion {
    /// A completion that keeps `json`, an OpenAI `chat.completion` body as a
    /// provider sent it, and reads only its usage.
    ///
    /// Fails when the body is not such an object or lacks a field the OpenAI
    /// format requires (`id`, `object`, `created`, `model`, `choices`, and
    /// each choice's `index`, `message` with its `role`, and
    /// `finish_reason`). Parse those into a [`ChatCompletion`] instead.
    ///
    /// ```
    /// use modelux::provider::{Completion, RawJsonError};
    /// let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    /// assert!(Completion::from_json(bytes::Bytes::from_static(body)).is_ok());
    /// // No `created`: parse it into a `ChatCompletion` instead.
    /// let partial = br#"{"id":"c","object":"chat.completion","model":"m","choices":[]}"#;
    /// let err = Completion::from_json(bytes::Bytes::from_static(partial)).unwrap_err();
    /// assert!(matches!(err, RawJsonError::Incomplete));
    /// ```
    pub fn from_json(json: Bytes) -> Result<Completion, RawJsonError> {
        Self::try_from_json(json).map_err(|(_, e)| e)
    }

    /// [`Completion::from_json`], handing the bytes back on failure.
    pub(crate) fn try_from_json(json: Bytes) -> Result<Completion, (Bytes, RawJsonError)> {
        match Self::check(&json) {
            Ok(usage) => Ok(Completion {
                repr: CompletionRepr::Raw { json, usage },
            }),
            Err(e) => Err((json, e)),
        }
    }

    /// The usage of a complete body.
    fn check(json: &[u8]) -> Result<Option<Usage>, RawJsonError> {
        // One UTF-8 check of the body, then no check per string.
        let json = std::str::from_utf8(json).map_err(RawJsonError::Utf8)?;
        let v: CompletionView = serde_json::from_str(json).map_err(RawJsonError::Json)?;
        let complete = v.id.0
            && v.object.0
            && v.created.is_some()
            && v.model.0
            && v.choices.is_some_and(|c| c.0);
        if !complete {
            return Err(RawJsonError::Incomplete);
        }
        Ok(v.usage)
    }

    /// The provider's body, when the completion is still sent as it arrived.
    ///
    /// ```
    /// use modelux::{api::ChatCompletion, provider::Completion};
    /// # let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    /// # let completion = Completion::from_json(bytes::Bytes::from_static(body)).unwrap();
    /// assert_eq!(&completion.json().unwrap()[..], &body[..]);
    /// assert!(Completion::from(ChatCompletion::text("c", "m", "hi", "stop")).json().is_none());
    /// ```
    pub fn json(&self) -> Option<&Bytes> {
        match &self.repr {
            CompletionRepr::Raw { json, .. } => Some(json),
            CompletionRepr::Parsed(_) => None,
        }
    }

    /// The parsed completion, when it was built from one.
    ///
    /// ```
    /// use modelux::{api::ChatCompletion, provider::Completion};
    /// let built = Completion::from(ChatCompletion::text("c", "m", "hi", "stop"));
    /// assert_eq!(built.parsed().unwrap().model, "m");
    /// # let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    /// # let completion = Completion::from_json(bytes::Bytes::from_static(body)).unwrap();
    /// assert!(completion.parsed().is_none());
    /// ```
    pub fn parsed(&self) -> Option<&ChatCompletion> {
        match &self.repr {
            CompletionRepr::Parsed(c) => Some(c),
            CompletionRepr::Raw { .. } => None,
        }
    }

    /// Token usage, when the provider reported it.
    ///
    /// ```
    /// use modelux::api::{ChatCompletion, Usage};
    /// use modelux::provider::Completion;
    /// let mut answer = ChatCompletion::text("c", "m", "hi", "stop");
    /// assert_eq!(Completion::from(answer.clone()).usage(), None);
    /// answer.usage = Some(Usage::new(3, 1));
    /// assert_eq!(Completion::from(answer).usage().unwrap().total_tokens, 4);
    /// ```
    pub fn usage(&self) -> Option<Usage> {
        match &self.repr {
            CompletionRepr::Parsed(c) => c.usage,
            CompletionRepr::Raw { usage, .. } => *usage,
        }
    }

    /// The whole completion as a [`ChatCompletion`], parsing the provider's
    /// body if the completion kept it.
    ///
    /// ```
    /// use modelux::provider::Completion;
    /// # let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    /// # let completion = Completion::from_json(bytes::Bytes::from_static(body)).unwrap();
    /// let parsed = completion.to_chat_completion().unwrap();
    /// assert_eq!(parsed.choices[0].message.content.as_deref(), Some("hi"));
    /// assert!(completion.json().is_some());
    /// ```
    pub fn to_chat_completion(&self) -> Result<Cow<'_, ChatCompletion>, serde_json::Error> {
        match &self.repr {
            CompletionRepr::Parsed(c) => Ok(Cow::Borrowed(c)),
            CompletionRepr::Raw { json, .. } => serde_json::from_slice(json).map(Cow::Owned),
        }
    }

    /// The whole completion as an owned [`ChatCompletion`].
    ///
    /// ```
    /// use modelux::provider::Completion;
    /// # let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    /// # let completion = Completion::from_json(bytes::Bytes::from_static(body)).unwrap();
    /// let parsed = completion.into_chat_completion().unwrap();
    /// assert_eq!((parsed.id.as_str(), parsed.choices[0].finish_reason.as_deref()), ("c", Some("stop")));
    /// ```
    pub fn into_chat_completion(self) -> Result<ChatCompletion, serde_json::Error> {
        match self.repr {
            CompletionRepr::Parsed(c) => Ok(*c),
            CompletionRepr::Raw { json, .. } => serde_json::from_slice(&json),
        }
    }

    /// The response body: the provider's bytes when they were kept, else
    /// the serialised [`ChatCompletion`].
    ///
    /// ```
    /// use modelux::{api::ChatCompletion, provider::Completion};
    /// let built = Completion::from(ChatCompletion::text("c", "m", "hi", "stop"));
    /// let v: serde_json::Value = serde_json::from_slice(&built.to_json()).unwrap();
    /// assert_eq!(v["choices"][0]["message"]["content"], "hi");
    /// assert_eq!(v["object"], "chat.completion");
    /// ```
    pub fn to_json(&self) -> Bytes {
        match &self.repr {
            CompletionRepr::Parsed(c) => {
                // Serialising the crate's own plain data types cannot fail.
                Bytes::from(serde_json::to_vec(c).unwrap_or_default())
            }
            CompletionRepr::Raw { json, .. } => json.clone(),
        }
    }
}

// ---- The views: only what the layers read, borrowed where possible. ----

/// Whether a field was present with a non-null value; its value is skipped.
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<IgnoredAny>::deserialize(d).map(|v| Present(v.is_some()))
    }
}

/// Whether a field was present at all, even as null; its value is skipped.
#[derive(Default)]
struct Key(bool);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Key(true))
    }
}

/// A string field that must be a string when present and non-null.
#[derive(Default)]
struct IsStr(bool);

impl<'de> Deserialize<'de> for IsStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Text<'de>>::deserialize(d).map(|v| IsStr(v.is_some()))
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A `finish_reason`: its presence (even as null) and its value.
#[derive(Default)]
struct Finish<'a> {
    present: bool,
    value: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Finish<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Text<'a>>::deserialize(d).map(|v| Finish {
            present: true,
            value: v.map(|t| t.0),
        })
    }
}

/// A delta's `tool_calls`: whether the list has any element, and the
/// bytes of the names and argument fragments it carries (for a usage
/// estimate), read without copying them.
struct ToolCallsView {
    any: bool,
    bytes: usize,
}

impl<'de> Deserialize<'de> for ToolCallsView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ToolCallsView;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ToolCallsView, A::Error> {
                let mut out = ToolCallsView {
                    any: false,
                    bytes: 0,
                };
                while let Some(call) = seq.next_element::<ToolCallView>()? {
                    out.any = true;
                    if let Some(f) = call.function {
                        out.bytes += f.name.map_or(0, |n| n.0) + f.arguments.map_or(0, |a| a.0);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct ToolCallView {
    #[serde(default)]
    function: Option<FunctionView>,
}

#[derive(Deserialize)]
struct FunctionView {
    #[serde(default)]
    name: Option<StrLen>,
    #[serde(default)]
    arguments: Option<StrLen>,
}

/// The length of a JSON string once unescaped; the string itself is not
/// kept (serde_json hands an escaped one over in its scratch buffer).
struct StrLen(usize);

impl<'de> Deserialize<'de> for StrLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrLen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StrLen, E> {
                Ok(StrLen(v.len()))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize)]
struct IdView<'a> {
    #[serde(borrow)]
    id: Text<'a>,
}

/// The `finish_reason` with which OpenRouter (and other OpenAI-compatible
/// servers) end a choice that failed mid-generation.
pub(crate) const ERROR_FINISH: &str = "error";

#[derive(Deserialize)]
struct ChunkView<'a> {
    /// A top-level `error` object (not null): the event reports a failure.
    #[serde(default)]
    error: Present,
    #[serde(default)]
    id: IsStr,
    #[serde(default)]
    object: IsStr,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    model: IsStr,
    #[serde(default, borrow)]
    choices: Option<ChunkChoices<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ChunkChoiceView<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(default, borrow)]
    finish_reason: Finish<'a>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<Text<'a>>,
    #[serde(default)]
    tool_calls: Option<ToolCallsView>,
    #[serde(default)]
    refusal: Present,
}

/// A chunk's choices, folded into what the layers read without a `Vec`.
#[derive(Default)]
struct ChunkChoices<'a> {
    count: usize,
    /// Every choice has `index`, `delta` and `finish_reason`.
    complete: bool,
    text: Option<Cow<'a, str>>,
    finish_reason: Option<Cow<'a, str>>,
    tool_calls: bool,
    tool_call_bytes: usize,
    refusal: bool,
    /// A choice ended with `finish_reason: "error"`.
    failed: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for ChunkChoices<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ChunkChoices<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = ChunkChoices {
                    complete: true,
                    ..ChunkChoices::default()
                };
                while let Some(c) = seq.next_element::<ChunkChoiceView<'a>>()? {
                    out.count += 1;
                    out.complete &=
                        c.index.is_some() && c.delta.is_some() && c.finish_reason.present;
                    out.failed |= c.finish_reason.value.as_deref() == Some(ERROR_FINISH);
                    if out.finish_reason.is_none() {
                        out.finish_reason = c.finish_reason.value;
                    }
                    let Some(delta) = c.delta else { continue };
                    if let Some(t) = delta.content {
                        out.text = Some(match out.text.take() {
                            None => t.0,
                            Some(prev) => Cow::Owned(prev.into_owned() + &t.0),
                        });
                    }
                    if let Some(t) = delta.tool_calls {
                        out.tool_calls |= t.any;
                        out.tool_call_bytes += t.bytes;
                    }
                    out.refusal |= delta.refusal.0;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct CompletionView {
    #[serde(default)]
    id: IsStr,
    #[serde(default)]
    object: IsStr,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    model: IsStr,
    #[serde(default)]
    choices: Option<CompletionChoices>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct CompletionChoiceView {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    message: Option<MessageView>,
    #[serde(default)]
    finish_reason: Key,
}

#[derive(Deserialize)]
struct MessageView {
    #[serde(default)]
    role: IsStr,
}

/// Whether every choice of a completion has the fields the format requires.
struct CompletionChoices(bool);

impl<'de> Deserialize<'de> for CompletionChoices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CompletionChoices;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut complete = true;
                while let Some(c) = seq.next_element::<CompletionChoiceView>()? {
                    complete &= c.index.is_some()
                        && c.message.is_some_and(|m| m.role.0)
                        && c.finish_reason.0;
                }
                Ok(CompletionChoices(complete))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#""id":"c1","object":"chat.completion.chunk","created":7,"model":"m""#;

    fn raw(s: &str) -> Result<Chunk, RawJsonError> {
        Chunk::from_json(Bytes::from(s.to_owned()))
    }

    #[test]
    fn raw_chunk_reads_what_the_layers_need() {
        let c = raw(&format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"content":"a\"b"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ))
        .unwrap();
        assert_eq!(c.text(), "a\"b");
        assert!(c.has_content() && c.has_choices() && !c.has_tool_calls());
        assert_eq!(c.finish_reason(), None);
        assert_eq!(c.usage(), None);

        let c = raw(&format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#
        ))
        .unwrap();
        assert_eq!(c.finish_reason(), Some("stop"));
        assert!(!c.has_content());

        let c = raw(&format!(
            r#"{{{HEAD},"choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{{"cached_tokens":0}}}}}}"#
        ))
        .unwrap();
        assert!(!c.has_choices());
        let u = c.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (3, 2, 5)
        );
        assert_eq!(u.cached_tokens(), 0);

        let c = raw(&format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{{"}}}}]}},"finish_reason":null}}]}}"#
        ))
        .unwrap();
        assert!(c.has_tool_calls() && c.has_content());
        let c = raw(&format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"","refusal":null}},"finish_reason":null}}]}}"#
        ))
        .unwrap();
        assert!(!c.has_content());
        let c = raw(&format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"refusal":"no"}},"finish_reason":null}}]}}"#
        ))
        .unwrap();
        assert!(c.has_content());
    }

    #[test]
    fn several_choices_concatenate_like_the_typed_chunk() {
        let s = format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"content":"a"}},"finish_reason":null}},{{"index":1,"delta":{{"content":"b"}},"finish_reason":"length"}}]}}"#
        );
        let c = raw(&s).unwrap();
        let typed: ChatChunk = serde_json::from_str(&s).unwrap();
        assert_eq!(c.text(), typed.text());
        assert_eq!(c.finish_reason(), typed.finish_reason());
        assert_eq!(c.has_content(), typed.has_content());
    }

    #[test]
    fn incomplete_or_multiline_json_is_not_kept() {
        for s in [
            r#"{"error":{"message":"boom"}}"#.to_owned(),
            r#"{"id":"c1","choices":[]}"#.to_owned(),
            format!(r#"{{{HEAD}}}"#),
            format!(r#"{{{HEAD},"choices":[{{"delta":{{}},"finish_reason":null}}]}}"#),
            format!(r#"{{{HEAD},"choices":[{{"index":0,"delta":{{}}}}]}}"#),
            format!(r#"{{{HEAD},"choices":[{{"index":0,"delta":null,"finish_reason":null}}]}}"#),
            r#"{"id":null,"object":"chat.completion.chunk","created":7,"model":"m","choices":[]}"#
                .to_owned(),
        ] {
            assert!(
                matches!(raw(&s), Err(RawJsonError::Incomplete)),
                "{s} was kept"
            );
        }
        assert!(matches!(
            raw(&format!("{{{HEAD},\n\"choices\":[]}}")),
            Err(RawJsonError::LineBreak)
        ));
        assert!(matches!(raw("{nope"), Err(RawJsonError::Json(_))));
        assert!(matches!(
            Chunk::from_json(Bytes::from_static(b"{\"id\":\"\xff\"}")),
            Err(RawJsonError::Utf8(_))
        ));
    }

    /// A chunk that reports a failure (OpenRouter's mid-stream error) is
    /// not kept as a chunk to forward; a null `error` is no error.
    #[test]
    fn a_chunk_that_reports_an_error_is_not_kept() {
        for s in [
            format!(
                r#"{{{HEAD},"error":{{"code":502,"message":"x"}},"choices":[{{"index":0,"delta":{{"content":""}},"finish_reason":"error"}}]}}"#
            ),
            format!(
                r#"{{{HEAD},"error":{{"message":"x"}},"choices":[{{"index":0,"delta":{{"content":"a"}},"finish_reason":null}}]}}"#
            ),
            format!(
                r#"{{{HEAD},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}},{{"index":1,"delta":{{}},"finish_reason":"error"}}]}}"#
            ),
        ] {
            assert!(matches!(raw(&s), Err(RawJsonError::ErrorEvent)), "{s}");
        }
        let s = format!(
            r#"{{{HEAD},"error":null,"choices":[{{"index":0,"delta":{{"content":"a"}},"finish_reason":null}}]}}"#
        );
        assert_eq!(raw(&s).unwrap().text(), "a");
    }

    #[test]
    fn rewriting_switches_to_the_encoded_form() {
        let s = format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"x"}},"finish_reason":null}}],"x_new":[1]}}"#
        );
        let mut c = raw(&s).unwrap();
        assert_eq!(&c.to_sse()[..], format!("data: {s}\n\n").as_bytes());
        c.make_mut().unwrap().choices[0].delta.role = None;
        let v: serde_json::Value =
            serde_json::from_slice(&c.to_sse()[6..]).expect("still one JSON event");
        assert!(v["choices"][0]["delta"].get("role").is_none());
        assert_eq!(v["x_new"][0], 1, "unknown fields survive a rewrite");
        assert_eq!(c.text(), "x");
    }

    #[test]
    fn completion_keeps_the_body_or_refuses() {
        let ok = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[]},"logprobs":null,"finish_reason":"tool_calls"}]}"#;
        let c = Completion::from_json(Bytes::from_static(ok.as_bytes())).unwrap();
        assert_eq!(&c.to_json()[..], ok.as_bytes());
        assert_eq!(c.usage(), None);
        for bad in [
            r#"{"id":"c","model":"m","choices":[]}"#,
            r#"{"id":"c","object":"chat.completion","created":1,"model":"m"}"#,
            r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}]}"#,
            r#"{"error":{"message":"x"}}"#,
        ] {
            assert!(
                Completion::from_json(Bytes::from_static(bad.as_bytes())).is_err(),
                "{bad} was kept"
            );
        }
    }
}
