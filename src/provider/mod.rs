//! Provider adapters: one module per wire format, each a
//! `tower::Service<AttemptRequest>` that speaks OpenAI's format to the layers
//! above and its provider's own format on the wire.
//!
//! An adapter does three things and nothing else: translate the request,
//! translate the answer (a whole completion, or a stream of chunks forwarded
//! as each one arrives), and classify every failure into a [`Failure`]. All
//! routing decisions live in the layers; an adapter never retries.

mod answer;
mod anthropic;
mod client;
mod egress;
mod error;
mod gemini;
mod http2;
mod openai;
mod translated;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::{Deserialize, Serialize};

pub use answer::{Chunk, Completion, RawJsonError};
pub use anthropic::Anthropic;
pub use client::{
    http_client, CertificateError, HttpClient, HttpClientBuilder, ResponseFuture, UpstreamBody,
    CONNECT_TIMEOUT, DEFAULT_HTTP2_MAX_STREAMS, HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT,
    MAX_RESPONSE_BYTES, RESERVED_HEADERS,
};
pub use egress::{redact_proxy_url, ProxyError};
pub use error::{retry_after, Failure, ProviderError, MAX_MESSAGE_BYTES};
pub use gemini::Gemini;
pub use http2::MAX_CONNECTIONS as MAX_HTTP2_CONNECTIONS;
pub use openai::OpenAi;

use crate::api::ChatRequest;

/// A boxed stream of OpenAI chunks, as every adapter returns for streams.
///
/// Adapters end it with `None` after the chunk that carries `finish_reason`
/// (and a usage-only chunk when the provider reported usage). A stream that
/// breaks before that yields an `Err` and then ends; it never ends silently as
/// if it had succeeded.
///
/// An OpenAI-kind provider's chunks keep its bytes, which the gateway sends
/// on unchanged (see [`Chunk`]).
///
/// ```
/// # tokio_test::block_on(async {
/// use futures_util::{stream, StreamExt};
/// use modelux::api::ChatChunk;
/// use modelux::provider::{Chunk, ChunkStream, ProviderError};
/// let chunks: Vec<Result<Chunk, ProviderError>> = vec![
///     Ok(ChatChunk::content("c1", "m", 7, "Hel").into()),
///     Ok(ChatChunk::content("c1", "m", 7, "lo").into()),
///     Ok(ChatChunk::finish("c1", "m", 7, "stop").into()),
/// ];
/// let s: ChunkStream = Box::pin(stream::iter(chunks));
/// let text: Vec<String> = s.map(|c| c.unwrap().text().into_owned()).collect().await;
/// assert_eq!(text.concat(), "Hello");
/// # });
/// ```
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// A boxed future, as adapters return.
///
/// ```
/// use modelux::provider::BoxFuture;
/// fn answer() -> BoxFuture<u32> {
///     Box::pin(async { 42 })
/// }
/// assert_eq!(tokio_test::block_on(answer()), 42);
/// ```
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Which wire format a provider speaks.
///
/// It is the `kind` of a provider in config, in lowercase:
///
/// ```
/// use modelux::provider::ProviderKind;
/// let kind: ProviderKind = serde_json::from_str(r#""anthropic""#).unwrap();
/// assert_eq!(kind, ProviderKind::Anthropic);
/// assert_eq!(serde_json::to_string(&ProviderKind::OpenAi).unwrap(), r#""openai""#);
/// assert!(serde_json::from_str::<ProviderKind>(r#""OpenAI""#).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions (OpenAI, vLLM, Ollama, other gateways).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
}

impl ProviderKind {
    /// The kind's name as it appears in config and metrics.
    ///
    /// ```
    /// use modelux::provider::ProviderKind;
    /// assert_eq!(ProviderKind::Gemini.as_str(), "gemini");
    /// for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::Gemini] {
    ///     // The same name config is written with.
    ///     let json = serde_json::to_string(&kind).unwrap();
    ///     assert_eq!(json, format!("\"{}\"", kind.as_str()));
    /// }
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

/// A (provider, model) pair: the unit health, latency and traces are kept by.
///
/// ```
/// use modelux::provider::TargetId;
/// let t = TargetId::new("openai", "gpt-4o-mini");
/// assert_eq!(t.to_string(), "openai/gpt-4o-mini");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId {
    /// The provider's name in config.
    pub provider: Arc<str>,
    /// The model's name in config.
    pub model: Arc<str>,
}

impl TargetId {
    /// A target id.
    ///
    /// Takes anything that converts into `Arc<str>`; an `Arc<str>` is shared,
    /// not copied.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use modelux::provider::TargetId;
    /// let provider: Arc<str> = Arc::from("openai");
    /// let a = TargetId::new(provider.clone(), "gpt-4o-mini");
    /// let b = TargetId::new("openai", String::from("gpt-4o-mini"));
    /// assert_eq!(a, b);
    /// assert!(Arc::ptr_eq(&a.provider, &provider));
    /// assert_eq!(&*a.model, "gpt-4o-mini");
    /// ```
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        TargetId {
            provider: provider.into(),
            model: model.into(),
        }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// USD per million tokens.
///
/// Both prices default to 0 when left out of config; prompt-cache reads and
/// writes cost the input price unless their own is given.
///
/// ```
/// use modelux::provider::Price;
/// let price: Price = serde_json::from_str(r#"{"input_per_mtok": 2.5}"#).unwrap();
/// assert_eq!(price, Price { input_per_mtok: 2.5, ..Price::default() });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Price {
    /// Input (prompt) tokens.
    #[serde(default)]
    pub input_per_mtok: f64,
    /// Output (completion) tokens.
    #[serde(default)]
    pub output_per_mtok: f64,
    /// Prompt tokens read from a prompt cache (Anthropic: 0.1× input,
    /// OpenAI and Gemini: 0.25×–0.5×, depending on the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
    /// Prompt tokens written to a prompt cache (Anthropic: 1.25× input for
    /// the 5-minute cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

impl Price {
    /// The cost of a usage in USD.
    ///
    /// ```
    /// use modelux::api::Usage;
    /// use modelux::provider::Price;
    /// let price = Price { input_per_mtok: 2.5, output_per_mtok: 10.0, ..Price::default() };
    /// // 1,000 prompt tokens at $2.50/M plus 200 completion tokens at $10/M.
    /// let cost = price.cost(&Usage::new(1_000, 200));
    /// assert!((cost - 0.0045).abs() < 1e-12);
    /// assert_eq!(Price::default().cost(&Usage::new(1_000, 200)), 0.0);
    ///
    /// // Claude Sonnet with a prompt cache: 10 fresh input tokens, 100
    /// // written to the cache, 1,000 read from it, 5 out.
    /// let sonnet = Price {
    ///     input_per_mtok: 3.0,
    ///     output_per_mtok: 15.0,
    ///     cached_input_per_mtok: Some(0.3),
    ///     cache_write_per_mtok: Some(3.75),
    /// };
    /// let cost = sonnet.cost(&Usage::new(1_110, 5).with_cache(1_000, 100));
    /// // 10 × 3 + 1,000 × 0.3 + 100 × 3.75 + 5 × 15 = 780 per million.
    /// assert!((cost - 0.00078).abs() < 1e-12);
    /// ```
    pub fn cost(&self, usage: &crate::api::Usage) -> f64 {
        let read = usage.cached_tokens().min(usage.prompt_tokens);
        let write = usage.cache_write_tokens().min(usage.prompt_tokens - read);
        let fresh = usage.prompt_tokens - read - write;
        (fresh as f64 * self.input_per_mtok
            + read as f64 * self.cached_input_per_mtok.unwrap_or(self.input_per_mtok)
            + write as f64 * self.cache_write_per_mtok.unwrap_or(self.input_per_mtok)
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// Everything the layers and adapters know about one model on one provider.
///
/// ```
/// use modelux::provider::Target;
/// let t = Target::new("openai", "fast");
/// assert_eq!(&*t.upstream_model, "fast");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Provider and model names.
    pub id: TargetId,
    /// The model name sent to the provider.
    pub upstream_model: Arc<str>,
    /// Whether the model continues a trailing assistant message (prefill).
    pub prefill: bool,
    /// Whether the provider returns several choices for `n` > 1 (OpenAI's
    /// `n`, Gemini's `candidateCount`; Anthropic returns one). A request
    /// asking for several skips a target that cannot, rather than getting
    /// fewer than it asked for.
    pub multiple_choices: bool,
    /// Prices, when configured.
    pub price: Option<Price>,
    /// The most output tokens the model produces per answer, when
    /// configured: Anthropic's `max_tokens` when the client gives none, and
    /// the cap a larger client cap is lowered to (Anthropic, Gemini).
    pub max_output_tokens: Option<u32>,
    /// This target's metric handles, registered on first use.
    pub(crate) handles: crate::handles::TargetHandles,
}

impl Target {
    /// A target whose upstream model is its config name, without prefill or price.
    ///
    /// ```
    /// use modelux::provider::{Price, Target, TargetId};
    /// let mut t = Target::new("anthropic", "claude");
    /// assert_eq!(t.id, TargetId::new("anthropic", "claude"));
    /// assert_eq!(&*t.upstream_model, "claude");
    /// assert!(!t.prefill && t.multiple_choices && t.price.is_none());
    /// // The fields are public: send another model name, set prices.
    /// t.upstream_model = "claude-sonnet-4-5".into();
    /// t.price = Some(Price { input_per_mtok: 3.0, output_per_mtok: 15.0, ..Price::default() });
    /// assert_eq!(t.id.to_string(), "anthropic/claude");
    /// ```
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        let model: Arc<str> = model.into();
        Target {
            id: TargetId::new(provider, model.clone()),
            upstream_model: model,
            prefill: false,
            multiple_choices: true,
            price: None,
            max_output_tokens: None,
            handles: Default::default(),
        }
    }
}

impl Target {
    /// The output cap to send for `client_cap`: the client's, lowered to
    /// [`max_output_tokens`](Target::max_output_tokens) when that is set.
    ///
    /// ```
    /// use modelux::provider::Target;
    /// let mut t = Target::new("anthropic", "claude");
    /// assert_eq!(t.output_cap(Some(100_000)), Some(100_000));
    /// t.max_output_tokens = Some(64_000);
    /// assert_eq!(t.output_cap(Some(100_000)), Some(64_000));
    /// assert_eq!(t.output_cap(Some(500)), Some(500));
    /// assert_eq!(t.output_cap(None), None);
    /// ```
    pub fn output_cap(&self, client_cap: Option<u32>) -> Option<u32> {
        match (client_cap, self.max_output_tokens) {
            (Some(c), Some(max)) => Some(c.min(max)),
            (c, _) => c,
        }
    }
}

/// One attempt: a request for one target.
///
/// Every attempt of one client request (a retry, a fallback to another
/// target) shares the same [`ChatRequest`]:
///
/// ```
/// use std::sync::Arc;
/// use modelux::api::ChatRequest;
/// use modelux::provider::{AttemptRequest, Target};
/// let chat: Arc<ChatRequest> = Arc::new(
///     serde_json::from_str(r#"{"model":"default","messages":[{"role":"user","content":"hi"}]}"#).unwrap(),
/// );
/// let first = AttemptRequest::new(Arc::new(Target::new("openai", "gpt-4o-mini")), chat.clone());
/// let mut fallback = AttemptRequest::new(Arc::new(Target::new("anthropic", "claude")), chat.clone());
/// // Continue a stream the first target broke off mid-answer.
/// fallback.prefill = Some("Once upon a".into());
/// assert!(Arc::ptr_eq(&first.chat, &fallback.chat));
/// assert_eq!(fallback.target.id.to_string(), "anthropic/claude");
/// ```
#[derive(Debug, Clone)]
pub struct AttemptRequest {
    /// Where to send it.
    pub target: Arc<Target>,
    /// The client's request, shared by every attempt.
    pub chat: Arc<ChatRequest>,
    /// Text already delivered to the client, sent as a trailing assistant
    /// message for the model to continue (mid-stream continuation).
    pub prefill: Option<Arc<str>>,
}

impl AttemptRequest {
    /// A plain attempt with no prefill.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use modelux::provider::{AttemptRequest, Target};
    /// let chat = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    /// let req = AttemptRequest::new(Arc::new(Target::new("openai", "gpt-4o-mini")), Arc::new(chat));
    /// assert!(req.prefill.is_none());
    /// assert_eq!(req.chat.model, "m");
    /// assert_eq!(&*req.target.upstream_model, "gpt-4o-mini");
    /// ```
    pub fn new(target: Arc<Target>, chat: Arc<ChatRequest>) -> Self {
        AttemptRequest {
            target,
            chat,
            prefill: None,
        }
    }
}

/// An adapter's answer.
///
/// A caller handles both shapes; here, collecting the answer's text:
///
/// ```
/// use futures_util::StreamExt;
/// use modelux::api::{ChatChunk, ChatCompletion};
/// use modelux::provider::{Chunk, ProviderError, ProviderResponse};
/// async fn text(resp: ProviderResponse) -> String {
///     match resp {
///         ProviderResponse::Complete(c) => {
///             let c = c.to_chat_completion().unwrap();
///             c.choices[0].message.content.clone().unwrap_or_default()
///         }
///         ProviderResponse::Stream(mut chunks) => {
///             let mut text = String::new();
///             while let Some(chunk) = chunks.next().await {
///                 text.push_str(&chunk.unwrap().text());
///             }
///             text
///         }
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let whole = ProviderResponse::Complete(ChatCompletion::text("c1", "m", "Hello", "stop").into());
/// let chunks = [ChatChunk::content("c1", "m", 7, "Hel"), ChatChunk::content("c1", "m", 7, "lo")]
///     .map(|c| Ok::<_, ProviderError>(Chunk::from(c)));
/// let streamed = ProviderResponse::Stream(Box::pin(futures_util::stream::iter(chunks)));
/// assert_eq!(format!("{streamed:?}"), "Stream(..)");
/// assert_eq!(text(whole).await, "Hello");
/// assert_eq!(text(streamed).await, "Hello");
/// # }
/// ```
pub enum ProviderResponse {
    /// A whole completion (the provider's body for OpenAI-kind providers,
    /// see [`Completion`]).
    Complete(Completion),
    /// A stream of chunks, forwarded as they arrive.
    Stream(ChunkStream),
}

impl fmt::Debug for ProviderResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderResponse::Complete(c) => f.debug_tuple("Complete").field(c).finish(),
            ProviderResponse::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// A configured provider of any kind.
///
/// The variant follows the [`ProviderKind`] chosen at run time, and every
/// variant is a `tower::Service<AttemptRequest>`, always ready (requests
/// queue on the connection pool). Building one sends nothing.
///
/// ```
/// use tower::ServiceExt;
/// use modelux::provider::{http_client, Provider, ProviderKind};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let kind: ProviderKind = serde_json::from_str(r#""gemini""#).unwrap();
/// let mut provider = Provider::new(kind, "https://generativelanguage.googleapis.com", None, http_client());
/// assert!(matches!(provider, Provider::Gemini(_)));
/// provider.ready().await.unwrap();
/// # }
/// ```
#[derive(Clone, Debug)]
pub enum Provider {
    /// OpenAI-compatible.
    OpenAi(OpenAi),
    /// Anthropic Messages.
    Anthropic(Anthropic),
    /// Google Gemini.
    Gemini(Gemini),
}

impl Provider {
    /// Builds a provider of `kind`.
    ///
    /// `base_url` is what the kind's adapter takes (see [`OpenAi`],
    /// [`Anthropic`], [`Gemini`]); the key never shows in `Debug`.
    ///
    /// ```
    /// use modelux::provider::{http_client, Provider, ProviderKind};
    /// use modelux::Secret;
    /// let p = Provider::new(
    ///     ProviderKind::Anthropic,
    ///     "https://api.anthropic.com",
    ///     Some(Secret::new("sk-ant-placeholder")),
    ///     http_client(),
    /// );
    /// assert!(matches!(p, Provider::Anthropic(_)));
    /// assert!(!format!("{p:?}").contains("sk-ant-placeholder"));
    /// ```
    pub fn new(
        kind: ProviderKind,
        base_url: &str,
        api_key: Option<crate::Secret>,
        client: HttpClient,
    ) -> Self {
        match kind {
            ProviderKind::OpenAi => Provider::OpenAi(OpenAi::new(base_url, api_key, client)),
            ProviderKind::Anthropic => {
                Provider::Anthropic(Anthropic::new(base_url, api_key, client))
            }
            ProviderKind::Gemini => Provider::Gemini(Gemini::new(base_url, api_key, client)),
        }
    }
}

impl Provider {
    /// The same provider, also sending `headers` with every request (after
    /// the adapter's own, which they cannot replace: see the adapters'
    /// `with_headers`). A value marked sensitive is never indexed by HTTP/2
    /// header compression and is scrubbed from errors like the key.
    ///
    /// ```
    /// use modelux::provider::{http_client, Provider, ProviderKind};
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("openai-organization", "org-123".parse().unwrap());
    /// let p = Provider::new(ProviderKind::OpenAi, "https://api.openai.com/v1", None, http_client())
    ///     .with_headers(&headers);
    /// assert!(format!("{p:?}").contains("openai-organization"));
    /// ```
    pub fn with_headers(self, headers: &http::HeaderMap) -> Self {
        match self {
            Provider::OpenAi(p) => Provider::OpenAi(p.with_headers(headers)),
            Provider::Anthropic(p) => Provider::Anthropic(p.with_headers(headers)),
            Provider::Gemini(p) => Provider::Gemini(p.with_headers(headers)),
        }
    }
}

impl tower::Service<AttemptRequest> for Provider {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = BoxFuture<Result<ProviderResponse, ProviderError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pooled client has no readiness of its own: it queues on the pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AttemptRequest) -> Self::Future {
        match self {
            Provider::OpenAi(p) => p.call(req),
            Provider::Anthropic(p) => p.call(req),
            Provider::Gemini(p) => p.call(req),
        }
    }
}

/// The leaf service of the stack: sends each attempt to the provider its
/// target names.
///
/// ```
/// use modelux::provider::{http_client, Provider, ProviderKind, Providers};
/// let client = http_client();
/// let providers = Providers::new([(
///     "local".into(),
///     Provider::new(ProviderKind::OpenAi, "http://127.0.0.1:9/v1", None, client),
/// )]);
/// assert!(providers.get("local").is_some());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Providers {
    map: Arc<HashMap<Arc<str>, Provider>>,
}

impl Providers {
    /// A set of named providers.
    ///
    /// A target naming a provider that is not in the set fails with a 404
    /// client failure, without a request:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tower::ServiceExt;
    /// use modelux::provider::{http_client, AttemptRequest, Failure, Provider, ProviderKind, Providers, Target};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let client = http_client();
    /// let providers = Providers::new([
    ///     ("openai".into(), Provider::new(ProviderKind::OpenAi, "https://api.openai.com/v1", None, client.clone())),
    ///     ("anthropic".into(), Provider::new(ProviderKind::Anthropic, "https://api.anthropic.com", None, client)),
    /// ]);
    /// let chat = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    /// let req = AttemptRequest::new(Arc::new(Target::new("gemini", "gemini-2.0-flash")), Arc::new(chat));
    /// let err = providers.oneshot(req).await.unwrap_err();
    /// assert_eq!(err.failure, Failure::TargetRefused { status: 404 });
    /// assert_eq!(err.message, "no provider named 'gemini'");
    /// # }
    /// ```
    pub fn new(providers: impl IntoIterator<Item = (Arc<str>, Provider)>) -> Self {
        Providers {
            map: Arc::new(providers.into_iter().collect()),
        }
    }

    /// The provider named `name`.
    ///
    /// ```
    /// use modelux::provider::{http_client, Provider, ProviderKind, Providers};
    /// let providers = Providers::new([(
    ///     "local".into(),
    ///     Provider::new(ProviderKind::OpenAi, "http://127.0.0.1:8000/v1", None, http_client()),
    /// )]);
    /// assert!(matches!(providers.get("local"), Some(Provider::OpenAi(_))));
    /// assert!(providers.get("LOCAL").is_none()); // names are case-sensitive
    /// ```
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.map.get(name)
    }
}

impl tower::Service<AttemptRequest> for Providers {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = BoxFuture<Result<ProviderResponse, ProviderError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AttemptRequest) -> Self::Future {
        match self.map.get(&req.target.id.provider) {
            // An adapter is always ready (`Provider::poll_ready`: no
            // back-pressure of its own; its connection pool queues), so
            // the clone is called without readying it. An adapter that
            // gains a real `poll_ready` needs the `mem::replace` idiom here.
            Some(p) => p.clone().call(req),
            None => {
                let msg = format!("no provider named '{}'", req.target.id.provider);
                Box::pin(async move {
                    Err(ProviderError::new(
                        Failure::TargetRefused { status: 404 },
                        msg,
                    ))
                })
            }
        }
    }
}
