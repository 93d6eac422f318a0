use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A `POST /v1/chat/completions` request body.
///
/// The envelope fields the gateway rewrites per attempt (`model`, `messages`,
/// `stream`, `stream_options`) sit at the top; every other parameter lives in
/// [`ChatRequest::params`], which adapters serialise by reference without
/// copying the request.
///
/// ```
/// use modelux::api::ChatRequest;
/// let req: ChatRequest = serde_json::from_str(
///     r#"{"model":"default","messages":[{"role":"user","content":"hi"}],"logit_bias":{"50256":-100}}"#,
/// ).unwrap();
/// assert_eq!(req.model, "default");
/// // Unknown fields survive a round trip.
/// assert!(serde_json::to_string(&req).unwrap().contains("logit_bias"));
/// ```
///
/// It is parsed in one pass by a hand-written visitor: known fields straight
/// into their slots, unknown ones into [`RequestParams::extra`] (the derived
/// impl, with `#[serde(flatten)]`, buffered the whole object first).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatRequest {
    /// The route (or model) name the client asked for.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Whether to answer with a server-sent event stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options; `include_usage` asks for a final usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Every other parameter.
    #[serde(flatten)]
    pub params: RequestParams,
}

/// The sampling and tool parameters of a [`ChatRequest`].
///
/// ```
/// use modelux::api::{ChatRequest, RequestParams};
/// let req: ChatRequest = serde_json::from_str(
///     r#"{"model":"m","messages":[],"temperature":0.2,"max_tokens":100,"logprobs":true}"#,
/// ).unwrap();
/// assert_eq!(req.params.temperature, Some(0.2));
/// assert_eq!(req.params.max_tokens, Some(100));
/// // Parameters this crate does not model are kept in `extra`.
/// assert_eq!(req.params.extra["logprobs"], true);
/// // Unset parameters are left out of the JSON.
/// assert_eq!(serde_json::to_string(&RequestParams::default()).unwrap(), "{}");
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RequestParams {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Legacy output cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Output cap (newer name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Number of choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"auto"`, `"none"`, `"required"` or a specific function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Structured output settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fields this crate does not model, passed through unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// Whether the client asked for a stream.
    ///
    /// ```
    /// use modelux::api::ChatRequest;
    /// let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[],"stream":true}"#).unwrap();
    /// assert!(req.is_stream());
    /// // An absent `stream` means no stream.
    /// let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[]}"#).unwrap();
    /// assert!(!req.is_stream());
    /// ```
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// The length in bytes of what the model reads as its prompt: the
    /// messages' text, the tool calls earlier turns made (name and
    /// arguments), and the declared tools (as JSON). The gateway estimates
    /// the prompt tokens of a stream that reported no usage from this, at
    /// about 4 bytes a token.
    ///
    /// ```
    /// use modelux::api::ChatRequest;
    /// let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[
    ///     {"role":"user","content":"weather?"},
    ///     {"role":"assistant","tool_calls":[{"id":"c","type":"function",
    ///         "function":{"name":"get","arguments":"{\"city\":\"Paris\"}"}}]},
    ///     {"role":"tool","tool_call_id":"c","content":"sunny"}]}"#).unwrap();
    /// assert_eq!(req.prompt_len(), "weather?".len() + "get".len() + r#"{"city":"Paris"}"#.len() + "sunny".len());
    /// ```
    pub fn prompt_len(&self) -> usize {
        let messages: usize = self
            .messages
            .iter()
            .map(|m| {
                m.text_len()
                    + m.tool_calls.as_deref().map_or(0, |calls| {
                        calls
                            .iter()
                            .map(|c| c.function.name.len() + c.function.arguments.len())
                            .sum()
                    })
            })
            .sum();
        let tools: usize = self.params.tools.as_deref().map_or(0, |tools| {
            tools
                .iter()
                .map(|t| {
                    let mut n = ByteCount(0);
                    serde_json::to_writer(&mut n, &t.function).map_or(0, |()| n.0)
                })
                .sum()
        });
        messages + tools
    }

    /// Whether the client asked for a usage chunk at the end of the stream.
    ///
    /// ```
    /// use modelux::api::ChatRequest;
    /// let parse = |s: &str| serde_json::from_str::<ChatRequest>(s).unwrap();
    /// let asked = parse(r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#);
    /// assert!(asked.wants_stream_usage());
    /// assert!(!parse(r#"{"model":"m","messages":[],"stream":true,"stream_options":{}}"#).wants_stream_usage());
    /// assert!(!parse(r#"{"model":"m","messages":[],"stream":true}"#).wants_stream_usage());
    /// ```
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The output cap the client asked for, under either name.
    ///
    /// ```
    /// use modelux::api::ChatRequest;
    /// let parse = |s: &str| serde_json::from_str::<ChatRequest>(s).unwrap();
    /// assert_eq!(parse(r#"{"model":"m","messages":[],"max_tokens":50}"#).max_output_tokens(), Some(50));
    /// // The newer name wins when both are set.
    /// let both = parse(r#"{"model":"m","messages":[],"max_tokens":50,"max_completion_tokens":80}"#);
    /// assert_eq!(both.max_output_tokens(), Some(80));
    /// assert_eq!(parse(r#"{"model":"m","messages":[]}"#).max_output_tokens(), None);
    /// ```
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.params.max_completion_tokens.or(self.params.max_tokens)
    }

    /// Stop sequences as a list.
    ///
    /// ```
    /// use modelux::api::ChatRequest;
    /// let parse = |s: &str| serde_json::from_str::<ChatRequest>(s).unwrap();
    /// assert_eq!(parse(r#"{"model":"m","messages":[],"stop":"END"}"#).stop_sequences(), ["END"]);
    /// assert_eq!(parse(r#"{"model":"m","messages":[],"stop":["a","b"]}"#).stop_sequences(), ["a", "b"]);
    /// assert!(parse(r#"{"model":"m","messages":[]}"#).stop_sequences().is_empty());
    /// ```
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.params.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }
}

/// `stream_options`.
///
/// ```
/// use modelux::api::{ChatRequest, StreamOptions};
/// let req: ChatRequest = serde_json::from_str(
///     r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
/// ).unwrap();
/// assert_eq!(req.stream_options.as_ref().unwrap().include_usage, Some(true));
/// assert!(req.wants_stream_usage());
/// // Options this crate does not model are passed through.
/// let o: StreamOptions = serde_json::from_str(r#"{"include_obfuscation":false}"#).unwrap();
/// assert_eq!(o.include_usage, None);
/// assert_eq!(o.extra["include_obfuscation"], false);
/// ```
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamOptions {
    /// Ask for a final chunk that carries `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other stream options, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop`: one string or several.
///
/// ```
/// use modelux::api::{ChatRequest, Stop};
/// assert_eq!(serde_json::from_str::<Stop>(r#""END""#).unwrap(), Stop::One("END".into()));
/// let many: Stop = serde_json::from_str(r#"["END","STOP"]"#).unwrap();
/// assert_eq!(many, Stop::Many(vec!["END".into(), "STOP".into()]));
/// // A request's stop sequences come out as a list either way.
/// let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[],"stop":"END"}"#).unwrap();
/// assert_eq!(req.stop_sequences(), ["END"]);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

/// A message author.
///
/// ```
/// use modelux::api::Role;
/// let role: Role = serde_json::from_str(r#""assistant""#).unwrap();
/// assert_eq!(role, Role::Assistant);
/// assert_eq!(serde_json::to_string(&Role::Developer).unwrap(), r#""developer""#);
/// assert!(serde_json::from_str::<Role>(r#""robot""#).is_err());
/// ```
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System instructions.
    System,
    /// Developer instructions (newer name for system).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
    /// A legacy function result.
    Function,
}

/// One message of the conversation.
///
/// ```
/// use modelux::api::{Message, Role};
/// let m: Message = serde_json::from_str(
///     r#"{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}],"refusal":null}"#,
/// ).unwrap();
/// assert_eq!(m.role, Role::Assistant);
/// assert!(m.content.is_none());
/// assert_eq!(m.tool_calls.as_ref().unwrap()[0].id, "c1");
/// // Fields this crate does not model are kept.
/// assert!(m.extra.contains_key("refusal"));
/// ```
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Text or content parts; absent on assistant messages that only call tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional author name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls an assistant message made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Other message fields, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A plain text message.
    ///
    /// ```
    /// use modelux::api::{Message, Role};
    /// let m = Message::text(Role::User, "hi");
    /// assert_eq!(m.text_content(), "hi");
    /// assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"role":"user","content":"hi"}"#);
    /// ```
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    /// The length in bytes of [`Message::text_content`], without building it.
    ///
    /// ```
    /// use modelux::api::{Message, Role};
    /// assert_eq!(Message::text(Role::User, "héllo").text_len(), 6);
    /// ```
    pub fn text_len(&self) -> usize {
        match &self.content {
            None => 0,
            Some(Content::Text(t)) => t.len(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .map(str::len)
                .sum(),
        }
    }

    /// The message's text, with parts joined; images are skipped.
    ///
    /// ```
    /// use modelux::api::Message;
    /// let m: Message = serde_json::from_str(r#"{"role":"user","content":[
    ///     {"type":"text","text":"What is "},
    ///     {"type":"image_url","image_url":{"url":"https://example.com/a.png"}},
    ///     {"type":"text","text":"this?"}
    /// ]}"#).unwrap();
    /// assert_eq!(m.text_content(), "What is this?");
    /// ```
    pub fn text_content(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// Message content: a string, or a list of typed parts.
///
/// ```
/// use modelux::api::Content;
/// let text: Content = serde_json::from_str(r#""hi""#).unwrap();
/// assert_eq!(text, Content::Text("hi".into()));
/// let parts: Content = serde_json::from_str(r#"[{"type":"text","text":"hi"}]"#).unwrap();
/// assert!(matches!(&parts, Content::Parts(p) if p[0].text.as_deref() == Some("hi")));
/// // Each form is written back as it came.
/// assert_eq!(serde_json::to_string(&text).unwrap(), r#""hi""#);
/// assert_eq!(serde_json::to_string(&parts).unwrap(), r#"[{"type":"text","text":"hi"}]"#);
/// ```
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (text, images, ...).
    Parts(Vec<ContentPart>),
}

/// One content part, e.g. `{"type":"text","text":"..."}` or
/// `{"type":"image_url","image_url":{"url":"..."}}`.
///
/// ```
/// use modelux::api::ContentPart;
/// let part: ContentPart = serde_json::from_str(
///     r#"{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"low"}}"#,
/// ).unwrap();
/// assert_eq!(part.kind, "image_url");
/// assert!(part.text.is_none());
/// assert_eq!(part.image_url.unwrap().detail.as_deref(), Some("low"));
/// // `type` is required.
/// assert!(serde_json::from_str::<ContentPart>(r#"{"text":"hi"}"#).is_err());
/// ```
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContentPart {
    /// The part type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Text, for `text` parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Image reference, for `image_url` parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    /// Other part fields, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An image reference: an `https://` URL or a `data:` URL.
///
/// ```
/// use modelux::api::ImageUrl;
/// let img = ImageUrl { url: "data:image/png;base64,iVBORw0KGgo=".into(), detail: None };
/// // `detail` is left out when unset.
/// assert_eq!(serde_json::to_string(&img).unwrap(), r#"{"url":"data:image/png;base64,iVBORw0KGgo="}"#);
/// let back: ImageUrl = serde_json::from_str(r#"{"url":"https://example.com/a.png","detail":"high"}"#).unwrap();
/// assert_eq!(back.detail.as_deref(), Some("high"));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageUrl {
    /// The URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A tool the model may call.
///
/// ```
/// use modelux::api::Tool;
/// let t: Tool = serde_json::from_str(
///     r#"{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}"#,
/// ).unwrap();
/// assert_eq!(t.kind, "function");
/// assert_eq!(t.function.name, "get_weather");
/// assert_eq!(serde_json::to_value(&t).unwrap()["function"]["parameters"]["type"], "object");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: ToolFunction,
}

/// A callable function's declaration.
///
/// ```
/// use modelux::api::ToolFunction;
/// let f: ToolFunction = serde_json::from_str(
///     r#"{"name":"get_weather","description":"Current weather","parameters":{"type":"object"},"strict":true}"#,
/// ).unwrap();
/// assert_eq!(f.description.as_deref(), Some("Current weather"));
/// // `strict` is not modelled, but passed through.
/// assert_eq!(f.extra["strict"], true);
/// assert!(serde_json::from_str::<ToolFunction>(r#"{"description":"no name"}"#).is_err());
/// ```
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolFunction {
    /// Function name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Other fields (`strict`, ...), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool call made by the model.
///
/// ```
/// use modelux::api::ToolCall;
/// let c: ToolCall = serde_json::from_str(
///     r#"{"id":"c1","function":{"name":"f","arguments":"{}"},"extra_content":{"google":{"thought_signature":"sig"}}}"#,
/// ).unwrap();
/// assert_eq!(c.kind, "function");
/// // Unknown fields survive a round trip.
/// assert!(serde_json::to_string(&c).unwrap().contains(r#""thought_signature":"sig""#));
/// ```
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCall {
    /// Call id, echoed by the tool message that answers it.
    pub id: String,
    /// Always `function` today; `function` when absent.
    #[serde(rename = "type")]
    pub kind: String,
    /// The call.
    pub function: FunctionCall,
    /// Other fields, passed through: e.g. the
    /// `extra_content.google.thought_signature` of Google's
    /// OpenAI-compatible endpoint, which Gemini 3 wants back on the next turn.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub(super) fn function_kind() -> String {
    "function".to_owned()
}

/// The function part of a [`ToolCall`].
///
/// ```
/// use modelux::api::FunctionCall;
/// let f: FunctionCall = serde_json::from_str(
///     r#"{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}"#,
/// ).unwrap();
/// assert_eq!(f.name, "get_weather");
/// // The arguments are a JSON string, parsed by whoever runs the tool.
/// let args: serde_json::Value = serde_json::from_str(&f.arguments).unwrap();
/// assert_eq!(args["city"], "Paris");
/// ```
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON string.
    pub arguments: String,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An [`std::io::Write`] that only counts what is written to it: the
/// length of a value's JSON without building it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
