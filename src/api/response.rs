use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::request::ToolCall;

/// A non-streaming `chat.completion` response.
///
/// ```
/// use modelux::api::ChatCompletion;
/// let c = ChatCompletion::text("id-1", "gpt-4o-mini", "hello", "stop");
/// assert_eq!(c.choices[0].message.content.as_deref(), Some("hello"));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletion {
    /// Completion id.
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default = "completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The answers.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields (`system_fingerprint`, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

impl ChatCompletion {
    /// A one-choice text completion.
    ///
    /// ```
    /// use modelux::api::ChatCompletion;
    /// let c = ChatCompletion::text("id-1", "m", "hello", "length");
    /// assert_eq!((c.object.as_str(), c.choices.len()), ("chat.completion", 1));
    /// assert_eq!(c.choices[0].message.role, "assistant");
    /// assert_eq!(c.choices[0].finish_reason.as_deref(), Some("length"));
    /// assert!(c.usage.is_none());
    /// ```
    pub fn text(id: &str, model: &str, text: &str, finish_reason: &str) -> Self {
        ChatCompletion {
            id: id.to_owned(),
            object: completion_object(),
            created: super::unix_now(),
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".to_owned(),
                    content: Some(text.to_owned()),
                    tool_calls: None,
                    extra: Map::new(),
                },
                finish_reason: Some(finish_reason.to_owned()),
                extra: Map::new(),
            }],
            usage: None,
            extra: Map::new(),
        }
    }
}

/// One answer of a [`ChatCompletion`].
///
/// ```
/// use modelux::api::Choice;
/// let c: Choice = serde_json::from_str(
///     r#"{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop","logprobs":null}"#,
/// ).unwrap();
/// assert_eq!(c.message.content.as_deref(), Some("hi"));
/// assert_eq!(c.finish_reason.as_deref(), Some("stop"));
/// // Unknown fields survive a round trip.
/// assert!(c.extra.contains_key("logprobs"));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Choice {
    /// Choice index.
    #[serde(default)]
    pub index: u32,
    /// The assistant message.
    pub message: ResponseMessage,
    /// Why generation stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Other fields (`logprobs`, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The assistant message of a [`Choice`].
///
/// ```
/// use modelux::api::ResponseMessage;
/// let m: ResponseMessage = serde_json::from_str(r#"{"content":"hi","refusal":null}"#).unwrap();
/// // `role` defaults to `assistant`; unknown fields are kept.
/// assert_eq!(m.role, "assistant");
/// assert_eq!(m.content.as_deref(), Some("hi"));
/// assert!(m.extra.contains_key("refusal"));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResponseMessage {
    /// Always `assistant`.
    #[serde(default = "assistant_role")]
    pub role: String,
    /// Text, absent when the model only called tools.
    #[serde(default)]
    pub content: Option<String>,
    /// Tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Other fields (`refusal`, `annotations`, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn assistant_role() -> String {
    "assistant".to_owned()
}

/// Token usage, with OpenAI's breakdowns: the prompt tokens read from a
/// prompt cache (billed at a discount by every provider) and the output
/// tokens spent on reasoning (already counted in `completion_tokens`).
///
/// ```
/// use modelux::api::Usage;
/// let u: Usage = serde_json::from_str(
///     r#"{"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
///         "prompt_tokens_details": {"cached_tokens": 1024},
///         "completion_tokens_details": {"reasoning_tokens": 64}}"#,
/// ).unwrap();
/// assert_eq!(u.cached_tokens(), 1024);
/// assert_eq!(u.reasoning_tokens(), 64);
/// assert_eq!(Usage::new(10, 5).cached_tokens(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// How the prompt tokens break down, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// How the completion tokens break down, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`.
///
/// ```
/// use modelux::api::Usage;
/// let u = Usage::new(1200, 80).with_cache(1024, 0);
/// let details = u.prompt_tokens_details.unwrap();
/// assert_eq!((details.cached_tokens, details.cache_write_tokens), (1024, 0));
/// // `cache_write_tokens` is not an OpenAI field: it is left out when 0.
/// assert_eq!(serde_json::to_string(&details).unwrap(), r#"{"cached_tokens":1024}"#);
/// ```
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Prompt tokens written to the prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, billed at a premium); not an OpenAI
    /// field, sent only when not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

/// `usage.completion_tokens_details`.
///
/// ```
/// use modelux::api::Usage;
/// let u: Usage = serde_json::from_str(
///     r#"{"completion_tokens": 80, "completion_tokens_details": {"reasoning_tokens": 64}}"#,
/// ).unwrap();
/// assert_eq!(u.completion_tokens_details.unwrap().reasoning_tokens, 64);
/// assert_eq!(serde_json::to_value(u.completion_tokens_details).unwrap()["reasoning_tokens"], 64);
/// ```
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompletionTokensDetails {
    /// Completion tokens the model spent thinking.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Usage from input and output counts.
    ///
    /// ```
    /// use modelux::api::Usage;
    /// let u = Usage::new(10, 5);
    /// assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (10, 5, 15));
    /// assert_eq!(
    ///     serde_json::to_string(&u).unwrap(),
    ///     r#"{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}"#,
    /// );
    /// ```
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            // A provider's counts are its word: a hostile or broken one
            // must not overflow them into a panic (debug) or a wrap.
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }

    /// Prompt tokens read from a prompt cache (0 when not reported).
    ///
    /// ```
    /// use modelux::api::Usage;
    /// assert_eq!(Usage::new(1200, 80).with_cache(1024, 0).cached_tokens(), 1024);
    /// assert_eq!(Usage::new(1200, 80).cached_tokens(), 0);
    /// ```
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }

    /// Prompt tokens written to a prompt cache (0 when not reported).
    ///
    /// ```
    /// use modelux::api::Usage;
    /// assert_eq!(Usage::new(1200, 80).with_cache(0, 1100).cache_write_tokens(), 1100);
    /// assert_eq!(Usage::new(1200, 80).cache_write_tokens(), 0);
    /// ```
    pub fn cache_write_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .map_or(0, |d| d.cache_write_tokens)
    }

    /// Completion tokens spent on reasoning (0 when not reported).
    ///
    /// ```
    /// use modelux::api::Usage;
    /// assert_eq!(Usage::new(10, 80).with_reasoning(64).reasoning_tokens(), 64);
    /// assert_eq!(Usage::new(10, 80).reasoning_tokens(), 0);
    /// ```
    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .map_or(0, |d| d.reasoning_tokens)
    }

    /// This usage with its prompt's cache reads and writes, each kept only
    /// when not 0.
    ///
    /// ```
    /// use modelux::api::Usage;
    /// let u = Usage::new(1110, 5).with_cache(1000, 100);
    /// assert_eq!((u.cached_tokens(), u.cache_write_tokens()), (1000, 100));
    /// assert_eq!(Usage::new(10, 5).with_cache(0, 0), Usage::new(10, 5));
    /// ```
    pub fn with_cache(mut self, read: u64, write: u64) -> Self {
        if read > 0 || write > 0 {
            self.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: read,
                cache_write_tokens: write,
            });
        }
        self
    }

    /// This usage with its reasoning tokens, kept only when not 0.
    ///
    /// ```
    /// use modelux::api::Usage;
    /// let u = Usage::new(10, 80).with_reasoning(64);
    /// assert_eq!(u.completion_tokens_details.unwrap().reasoning_tokens, 64);
    /// assert_eq!(Usage::new(10, 80).with_reasoning(0), Usage::new(10, 80));
    /// ```
    pub fn with_reasoning(mut self, reasoning: u64) -> Self {
        if reasoning > 0 {
            self.completion_tokens_details = Some(CompletionTokensDetails {
                reasoning_tokens: reasoning,
            });
        }
        self
    }
}

/// One `chat.completion.chunk` of a stream.
///
/// ```
/// use modelux::api::ChatChunk;
/// let c = ChatChunk::content("id-1", "m", 7, "Hel");
/// assert_eq!(c.text(), "Hel");
/// assert!(c.has_content());
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatChunk {
    /// Completion id, the same on every chunk.
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default = "chunk_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// Deltas; empty on the final usage chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatChunk {
    /// An empty chunk with no choices.
    ///
    /// ```
    /// use modelux::api::ChatChunk;
    /// let c = ChatChunk::empty("id-1", "m", 7);
    /// assert_eq!((c.object.as_str(), c.created), ("chat.completion.chunk", 7));
    /// assert!(c.choices.is_empty() && !c.has_content());
    /// ```
    pub fn empty(id: &str, model: &str, created: u64) -> Self {
        ChatChunk {
            id: id.to_owned(),
            object: chunk_object(),
            created,
            model: model.to_owned(),
            choices: Vec::new(),
            usage: None,
            extra: Map::new(),
        }
    }

    /// A chunk carrying one delta for choice 0.
    ///
    /// ```
    /// use modelux::api::{ChatChunk, Delta};
    /// let role = Delta { role: Some("assistant".into()), content: Some(String::new()), ..Delta::default() };
    /// let c = ChatChunk::with_delta("id-1", "m", 7, role);
    /// assert_eq!(c.choices[0].delta.role.as_deref(), Some("assistant"));
    /// // An empty content string is not content yet.
    /// assert!(!c.has_content());
    /// ```
    pub fn with_delta(id: &str, model: &str, created: u64, delta: Delta) -> Self {
        let mut c = Self::empty(id, model, created);
        c.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason: None,
            extra: Map::new(),
        });
        c
    }

    /// A chunk carrying text for choice 0.
    ///
    /// ```
    /// use modelux::api::ChatChunk;
    /// let c = ChatChunk::content("id-1", "m", 7, "Hel");
    /// assert_eq!(c.choices[0].delta.content.as_deref(), Some("Hel"));
    /// assert_eq!(c.finish_reason(), None);
    /// ```
    pub fn content(id: &str, model: &str, created: u64, text: &str) -> Self {
        Self::with_delta(
            id,
            model,
            created,
            Delta {
                content: Some(text.to_owned()),
                ..Delta::default()
            },
        )
    }

    /// The final chunk of choice 0, carrying `finish_reason`.
    ///
    /// ```
    /// use modelux::api::ChatChunk;
    /// let c = ChatChunk::finish("id-1", "m", 7, "stop");
    /// assert_eq!(c.finish_reason(), Some("stop"));
    /// assert_eq!(c.text(), "");
    /// ```
    pub fn finish(id: &str, model: &str, created: u64, finish_reason: &str) -> Self {
        let mut c = Self::with_delta(id, model, created, Delta::default());
        c.choices[0].finish_reason = Some(finish_reason.to_owned());
        c
    }

    /// The usage-only chunk sent when `include_usage` was asked for.
    ///
    /// ```
    /// use modelux::api::{ChatChunk, Usage};
    /// let c = ChatChunk::usage_only("id-1", "m", 7, Usage::new(10, 5));
    /// assert!(c.choices.is_empty());
    /// assert_eq!(c.usage.unwrap().total_tokens, 15);
    /// ```
    pub fn usage_only(id: &str, model: &str, created: u64, usage: Usage) -> Self {
        let mut c = Self::empty(id, model, created);
        c.usage = Some(usage);
        c
    }

    /// Whether any choice carries text, a refusal or a tool call: the
    /// point after which a stream is committed to its provider.
    ///
    /// ```
    /// use modelux::api::ChatChunk;
    /// let parse = |s: &str| serde_json::from_str::<ChatChunk>(s).unwrap();
    /// assert!(parse(r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#).has_content());
    /// assert!(parse(r#"{"id":"c","choices":[{"index":0,"delta":{"refusal":"No."}}]}"#).has_content());
    /// assert!(!parse(r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#).has_content());
    /// ```
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.content.as_deref().is_some_and(|t| !t.is_empty())
                || c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                || c.delta.extra.get("refusal").is_some_and(|r| !r.is_null())
        })
    }

    /// The text of all choices' deltas, concatenated.
    ///
    /// ```
    /// use modelux::api::ChatChunk;
    /// let c: ChatChunk = serde_json::from_str(r#"{"id":"c","choices":[
    ///     {"index":0,"delta":{"content":"Hel"}},
    ///     {"index":1,"delta":{"content":"lo"}}
    /// ]}"#).unwrap();
    /// assert_eq!(c.text(), "Hello");
    /// ```
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.choices {
            if let Some(t) = &c.delta.content {
                s.push_str(t);
            }
        }
        s
    }

    /// The first `finish_reason` any choice carries.
    ///
    /// ```
    /// use modelux::api::ChatChunk;
    /// let c: ChatChunk = serde_json::from_str(r#"{"id":"c","choices":[
    ///     {"index":0,"delta":{},"finish_reason":null},
    ///     {"index":1,"delta":{},"finish_reason":"length"}
    /// ]}"#).unwrap();
    /// assert_eq!(c.finish_reason(), Some("length"));
    /// ```
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.iter().find_map(|c| c.finish_reason.as_deref())
    }
}

/// One choice's delta inside a [`ChatChunk`].
///
/// ```
/// use modelux::api::{ChunkChoice, Delta};
/// let c: ChunkChoice = serde_json::from_str(
///     r#"{"index":0,"delta":{"content":"Hel"},"finish_reason":null}"#,
/// ).unwrap();
/// assert_eq!(c.delta.content.as_deref(), Some("Hel"));
/// assert!(c.finish_reason.is_none());
/// // `delta` may be left out: it defaults to an empty one.
/// let last: ChunkChoice = serde_json::from_str(r#"{"index":0,"finish_reason":"stop"}"#).unwrap();
/// assert_eq!(last.delta, Delta::default());
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkChoice {
    /// Choice index.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the last chunk of this choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Other fields (`logprobs`, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The incremental part of a chunk.
///
/// ```
/// use modelux::api::Delta;
/// let d = Delta { content: Some("Hel".into()), ..Delta::default() };
/// // Unset fields are left out of the JSON.
/// assert_eq!(serde_json::to_string(&d).unwrap(), r#"{"content":"Hel"}"#);
/// let first: Delta = serde_json::from_str(r#"{"role":"assistant","content":""}"#).unwrap();
/// assert_eq!(first.role.as_deref(), Some("assistant"));
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Delta {
    /// `assistant` on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Other fields (`refusal`, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A fragment of a tool call inside a stream.
///
/// ```
/// use modelux::api::ToolCallDelta;
/// let first: ToolCallDelta = serde_json::from_str(
///     r#"{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}"#,
/// ).unwrap();
/// assert_eq!((first.id.as_deref(), first.kind.as_deref()), (Some("call_1"), Some("function")));
/// // Later fragments carry only the index and more arguments.
/// let next: ToolCallDelta = serde_json::from_str(r#"{"index":0,"function":{"arguments":"{}"}}"#).unwrap();
/// assert!(next.id.is_none());
/// assert_eq!(serde_json::to_string(&next).unwrap(), r#"{"index":0,"function":{"arguments":"{}"}}"#);
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ToolCallDelta {
    /// Which tool call of the message this fragment extends.
    #[serde(default)]
    pub index: u32,
    /// Call id, on the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on the first fragment.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and argument fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    /// Other fields, passed through: e.g. the
    /// `extra_content.google.thought_signature` of Google's
    /// OpenAI-compatible endpoint, on the first fragment.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Name and argument fragments of a [`ToolCallDelta`].
///
/// ```
/// use modelux::api::FunctionCallDelta;
/// // Arguments arrive in pieces; joined, they are the whole JSON string.
/// let pieces: Vec<FunctionCallDelta> = serde_json::from_str(
///     r#"[{"name":"f","arguments":""},{"arguments":"{\"a\":"},{"arguments":"1}"}]"#,
/// ).unwrap();
/// assert_eq!(pieces[0].name.as_deref(), Some("f"));
/// let args: String = pieces.iter().filter_map(|p| p.arguments.as_deref()).collect();
/// assert_eq!(args, r#"{"a":1}"#);
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionCallDelta {
    /// Function name, on the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the JSON arguments string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}
