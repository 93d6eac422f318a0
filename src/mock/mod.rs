//! A fault-injecting fake LLM provider, for tests, benchmarks and demos.
//!
//! One HTTP server speaks all three wire formats the crate translates to:
//!
//! | format | endpoint |
//! |---|---|
//! | OpenAI | `POST /v1/chat/completions` (stream and non-stream) |
//! | Anthropic | `POST /v1/messages` (stream and non-stream) |
//! | Gemini | `POST /v1beta/models/{model}:generateContent`, `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (also under `/v1/models/...`) |
//!
//! and a control API:
//!
//! | endpoint | what it does |
//! |---|---|
//! | `GET /_mock/requests` | the recorded requests as a JSON array (`?model=NAME` filters), each with how its answer ended (`end`: `open`, `ended`, `abandoned` when the client left first) and the content chunks a stream produced (`chunks_sent`) |
//! | `POST /_mock/faults` | `{"model": M, "behaviour": {...}}` sets `M`'s [`Behaviour`]; `{"model": M, "push": {fault}}` (or a list of faults) queues one-shot [`Fault`]s |
//! | `POST /_mock/reset` | forgets behaviours, queued faults, recorded requests and counts |
//!
//! # Answers
//!
//! Every answer is deterministic: [`Behaviour::answer`] if set, otherwise
//! `"word0 word1 … word{N-1}"` with `N` = [`Behaviour::words`] (default
//! [`DEFAULT_WORDS`]). Streams send one word per content chunk, each with its
//! leading whitespace, so the concatenated deltas are exactly the answer.
//! Usage: prompt tokens are the characters of the request's messages (and
//! system prompt) divided by four, rounded up; completion tokens are the
//! number of words sent. A request's output cap (`max_tokens`,
//! `max_completion_tokens`, `generationConfig.maxOutputTokens`) truncates the
//! answer to that many words and finishes with the provider's "length"
//! reason.
//!
//! **Prefill continuation.** When the request ends with an assistant message
//! (Gemini: a `model` content) whose text is a prefix of the answer, only the
//! remainder is answered, as a model continuing its own partial output would.
//!
//! **Tool calls.** When a request declares tools (OpenAI `tools` of type
//! `function`, Anthropic `tools` with an `input_schema`, Gemini
//! `tools[].functionDeclarations`) and ends with a user message, the answer
//! is one call of the first declared tool (or the one `tool_choice` /
//! `toolConfig` names; none when it says `none`), with arguments derived
//! from its schema: every required property, else the first, valued
//! `"Paris"` for a string, `21` for a number, the first value of an `enum`
//! (so `{"city":"Paris"}` for a weather tool). In each provider's shape:
//! OpenAI `tool_calls` (id `call_mockN`) with `finish_reason: "tool_calls"`;
//! Anthropic a `tool_use` block (id `toolu_mockN`) with `stop_reason:
//! "tool_use"`; Gemini a `functionCall` part carrying [`THOUGHT_SIGNATURE`],
//! `finishReason: "STOP"`. Streams send the arguments in token-like
//! fragments, one content chunk each (OpenAI: a first `tool_calls` delta
//! with index, id, name and empty arguments, then argument deltas;
//! Anthropic: `content_block_start` of a `tool_use` then `input_json_delta`s;
//! Gemini: the whole call in one chunk, with the finish). Such a call takes
//! the place of [`Behaviour::answer`] and `words`.
//! When the conversation ends with tool results (OpenAI `tool` messages,
//! Anthropic `tool_result` blocks, Gemini `functionResponse` parts), the
//! answer is the text `"The tool said: RESULT"` (several results joined by
//! newlines; a Gemini response `{"content": "x"}`, or any one-field object
//! holding a string, reads `x`, other responses their JSON), so a test sees
//! the result reach the provider intact.
//! The tool-use rules of the real APIs are enforced with their 400s: OpenAI
//! tool messages must answer the `tool_calls` of the assistant message
//! before them, and every call must be answered; Anthropic requests with
//! `tool_use`/`tool_result` blocks must declare tools, `tool_use` ids must
//! be unique in the request and match `^[a-zA-Z0-9_-]+$`, and each
//! `tool_use` must be answered by a `tool_result` with its id in the next
//! message;
//! Gemini function responses must be as many as the calls of the turn
//! before. Gemini 3 (every model but `gemini-1.*`, `gemini-2.*`,
//! `gemma-*`) refuses, from the last user text on, a model turn whose first
//! `functionCall` part has no `thoughtSignature` ("Function call `NAME` in
//! the `N.` content block is missing a `thought_signature`") or one that is
//! neither [`THOUGHT_SIGNATURE`] nor a placeholder Google documents
//! (`skip_thought_signature_validator`, `context_engineering_is_the_way_to_go`).
//!
//! **Validation.** The mock rejects, with each provider's own 400 error body,
//! what the real API rejects and an adapter could get wrong: Anthropic
//! requests without `anthropic-version`, `max_tokens` or `messages`, with a
//! role other than `user`/`assistant`, or ending with an assistant message
//! that ends in whitespace; OpenAI requests without `model` or `messages`,
//! or with `stream_options` on a non-stream request;
//! Gemini requests without `contents` or with a role other than
//! `user`/`model`.
//!
//! # Faults
//!
//! Each request to model `M` takes, in this order: the next one-shot fault
//! queued with [`MockProvider::push`] for `M`, else the next one queued for
//! `"*"`, else the fault of `M`'s [`Behaviour`] (or `"*"`'s), applied with
//! probability [`Behaviour::fault_rate`]. The behaviour's timings and answer
//! apply in every case.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use modelux::mock::{Behaviour, Fault, MockProvider};
//! let mock = MockProvider::start().await?;
//! mock.set("gpt-4o-mini", Behaviour { words: Some(5), chunk_interval_ms: 10, ..Behaviour::default() });
//! mock.push("gpt-4o-mini", Fault::status(429));
//! mock.push("gpt-4o-mini", Fault::CutAfter { chunks: 2 });
//! // First request: 429. Second: a stream cut after two words. Then normal answers.
//! println!("OpenAI base URL: {}", mock.openai_url());
//! # Ok(()) }
//! ```

mod server;
mod tools;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// How many requests [`MockProvider::requests`] keeps (the most recent ones).
///
/// ```
/// use modelux::mock::MAX_RECORDED;
/// // Enough for any test's traffic; a load test's oldest requests are dropped.
/// assert_eq!(MAX_RECORDED, 10_000);
/// ```
pub const MAX_RECORDED: usize = 10_000;

/// How many words an answer has when [`Behaviour`] sets neither `answer` nor `words`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http_body_util::{BodyExt, Full};
/// let mock = modelux::mock::MockProvider::start().await.unwrap();
/// let req = http::Request::post(format!("{}/chat/completions", mock.openai_url()))
///     .header("content-type", "application/json")
///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
///     .unwrap();
/// let resp = modelux::provider::http_client().request(req).await.unwrap();
/// let v: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
/// // One completion token per word.
/// assert_eq!(v["usage"]["completion_tokens"], modelux::mock::DEFAULT_WORDS);
/// # }
/// ```
pub const DEFAULT_WORDS: usize = 20;

/// How many distinct models behaviours, fault queues and request counts are
/// kept for; beyond it new models get the default behaviour and are not counted.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use http_body_util::Full;
/// use modelux::mock::{Behaviour, Fault, MockProvider, MAX_MODELS};
/// let mock = MockProvider::start().await.unwrap();
/// for i in 0..MAX_MODELS {
///     mock.set(&format!("m{i}"), Behaviour::default());
/// }
/// // One model too many: its behaviour is not kept, so it answers normally.
/// mock.set("late", Behaviour { fault: Some(Fault::status(503)), ..Behaviour::default() });
/// # let req = http::Request::post(format!("{}/chat/completions", mock.openai_url()))
/// #     .header("content-type", "application/json")
/// #     .body(Full::from(r#"{"model":"late","messages":[{"role":"user","content":"hi"}]}"#))
/// #     .unwrap();
/// let resp = modelux::provider::http_client().request(req).await.unwrap();
/// assert_eq!(resp.status(), 200);
/// # }
/// ```
pub const MAX_MODELS: usize = 10_000;

/// How many one-shot faults may be queued per model; further pushes are dropped.
///
/// ```
/// use modelux::mock::MAX_QUEUED_FAULTS;
/// // A test queues a handful; a runaway loop cannot grow the queue without bound.
/// assert_eq!(MAX_QUEUED_FAULTS, 10_000);
/// ```
pub const MAX_QUEUED_FAULTS: usize = 10_000;

/// The `thoughtSignature` the mock puts on the Gemini function calls it
/// makes: an opaque base64 string, as Gemini's are. A Gemini 3 model (any
/// model but `gemini-1.*`, `gemini-2.*` and `gemma-*`) wants it back on the
/// call's part: see "Tool calls" in the [module docs](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use http_body_util::{BodyExt, Full};
/// # let mock = modelux::mock::MockProvider::start().await.unwrap();
/// let body = r#"{"contents":[{"role":"user","parts":[{"text":"Weather?"}]}],
///     "tools":[{"functionDeclarations":[{"name":"get_weather",
///         "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}]}"#;
/// let url = format!("{}/v1beta/models/gemini-3-pro:generateContent", mock.url());
/// # let req = http::Request::post(url).header("content-type", "application/json").body(Full::from(body)).unwrap();
/// # let resp = modelux::provider::http_client().request(req).await.unwrap();
/// # let v: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
/// // `v`: the JSON answer to `body` POSTed to `url` (a Gemini 3 model).
/// let part = &v["candidates"][0]["content"]["parts"][0];
/// assert_eq!(part["functionCall"]["name"], "get_weather");
/// assert_eq!(part["thoughtSignature"], modelux::mock::THOUGHT_SIGNATURE);
/// # }
/// ```
pub const THOUGHT_SIGNATURE: &str =
    "bW9kZWx1eC1tb2NrIHRob3VnaHQgc2lnbmF0dXJlOiBvcGFxdWUsIHNlbmQgaXQgYmFjayBhcyBpcw==";

/// A running fake provider. Dropping it (or calling [`MockProvider::shutdown`])
/// stops the server and closes every open connection.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let mock = modelux::mock::MockProvider::start().await?;
/// assert!(mock.openai_url().ends_with("/v1"));
/// assert_eq!(mock.request_count("any"), 0);
/// # Ok(()) }
/// ```
pub struct MockProvider {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockProvider {
    /// Starts a mock on `127.0.0.1` with a free port. Must be called inside a
    /// Tokio runtime; the server runs on that runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::{BodyExt, Full};
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let req = http::Request::post(format!("{}/chat/completions", mock.openai_url()))
    ///     .header("content-type", "application/json")
    ///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// let resp = modelux::provider::http_client().request(req).await.unwrap();
    /// assert_eq!(resp.status(), 200);
    /// let body = resp.into_body().collect().await.unwrap().to_bytes();
    /// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// // The default answer: "word0 word1 … word19".
    /// let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    /// assert_eq!(answer.split(' ').count(), modelux::mock::DEFAULT_WORDS);
    /// # }
    /// ```
    pub async fn start() -> std::io::Result<MockProvider> {
        Self::start_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    /// Starts a mock listening on `addr`. Over HTTP/2 (h2c) it allows 200
    /// concurrent streams per connection, hyper's default and in the range
    /// real providers announce.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::net::{Ipv4Addr, SocketAddr};
    /// // Port 0 asks the OS for a free port; `addr()` tells which one it chose.
    /// let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    /// let mock = modelux::mock::MockProvider::start_on(addr).await.unwrap();
    /// assert_eq!(mock.addr().ip(), Ipv4Addr::LOCALHOST);
    /// assert_ne!(mock.addr().port(), 0);
    /// # }
    /// ```
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<MockProvider> {
        Self::start_with_h2_streams(addr, Some(server::DEFAULT_H2_STREAMS)).await
    }

    /// Starts a mock listening on `addr` that allows `max` concurrent
    /// HTTP/2 streams per connection (`None`: no limit).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let addr = "127.0.0.1:0".parse().unwrap();
    /// let mock = modelux::mock::MockProvider::start_with_h2_streams(addr, None).await.unwrap();
    /// assert_ne!(mock.addr().port(), 0);
    /// # }
    /// ```
    pub async fn start_with_h2_streams(
        addr: SocketAddr,
        max: Option<u32>,
    ) -> std::io::Result<MockProvider> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(server::serve(listener, shared.clone(), max));
        Ok(MockProvider { shared, addr, task })
    }

    /// The address the server listens on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let addr = mock.addr();
    /// assert!(addr.ip().is_loopback());
    /// // Anything that speaks TCP can reach the mock there.
    /// tokio::net::TcpStream::connect(addr).await.unwrap();
    /// # }
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:PORT`: what Anthropic and Gemini
    /// clients take as their base URL. An unspecified listen address
    /// (`0.0.0.0`, `::`) is given as the loopback address.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use modelux::mock::MockProvider;
    /// let mock = MockProvider::start().await.unwrap();
    /// assert_eq!(mock.url(), format!("http://{}", mock.addr()));
    ///
    /// // Listening on every interface: the URL still names the loopback address.
    /// let any = MockProvider::start_on("0.0.0.0:0".parse().unwrap()).await.unwrap();
    /// assert_eq!(any.url(), format!("http://127.0.0.1:{}", any.addr().port()));
    /// # }
    /// ```
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{addr}")
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// assert_eq!(mock.openai_url(), format!("{}/v1", mock.url()));
    /// // OpenAI clients append `/chat/completions` to it.
    /// # }
    /// ```
    pub fn openai_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// Sets the default behaviour of `model`; `"*"` sets it for every model
    /// that has none of its own.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::{BodyExt, Full};
    /// use modelux::mock::{Behaviour, MockProvider};
    /// let mock = MockProvider::start().await.unwrap();
    /// mock.set("m", Behaviour { answer: Some("Hello there".into()), ..Behaviour::default() });
    /// let req = http::Request::post(format!("{}/chat/completions", mock.openai_url()))
    ///     .header("content-type", "application/json")
    ///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// let resp = modelux::provider::http_client().request(req).await.unwrap();
    /// let body = resp.into_body().collect().await.unwrap().to_bytes();
    /// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// assert_eq!(v["choices"][0]["message"]["content"], "Hello there");
    /// # }
    /// ```
    pub fn set(&self, model: &str, behaviour: Behaviour) {
        self.shared.set(model, behaviour);
    }

    /// Queues a one-shot fault for `model` (`"*"`: for any model). Queued
    /// faults are taken in order, one per request, before the behaviour's own.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::Full;
    /// use modelux::mock::{Fault, MockProvider};
    /// let mock = MockProvider::start().await.unwrap();
    /// mock.push("m", Fault::status(429));
    /// let url = format!("{}/chat/completions", mock.openai_url());
    /// let chat = || http::Request::post(&url)
    ///     .header("content-type", "application/json")
    ///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// let client = modelux::provider::http_client();
    /// // The queued fault answers the first request only.
    /// assert_eq!(client.request(chat()).await.unwrap().status(), 429);
    /// assert_eq!(client.request(chat()).await.unwrap().status(), 200);
    /// # }
    /// ```
    pub fn push(&self, model: &str, fault: Fault) {
        self.shared.push(model, fault);
    }

    /// The recorded requests, oldest first (at most [`MAX_RECORDED`], the most recent).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::Full;
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let req = http::Request::post(format!("{}/chat/completions", mock.openai_url()))
    ///     .header("content-type", "application/json")
    ///     .header("authorization", "Bearer sk-test")
    ///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// modelux::provider::http_client().request(req).await.unwrap();
    /// let recorded = mock.requests();
    /// assert_eq!(recorded.len(), 1);
    /// assert_eq!((recorded[0].format, recorded[0].model.as_str()), ("openai", "m"));
    /// assert_eq!(recorded[0].auth.as_deref(), Some("Bearer sk-test"));
    /// # }
    /// ```
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// The recorded requests for `model`, oldest first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// assert!(mock.requests_for("gpt-test").is_empty());
    /// # }
    /// ```
    pub fn requests_for(&self, model: &str) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.model == model)
            .cloned()
            .collect()
    }

    /// How many requests were received for `model` since start or the last reset.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::Full;
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let url = format!("{}/chat/completions", mock.openai_url());
    /// let client = modelux::provider::http_client();
    /// for _ in 0..2 {
    ///     let req = http::Request::post(&url)
    ///         .header("content-type", "application/json")
    ///         .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
    ///         .unwrap();
    ///     client.request(req).await.unwrap();
    /// }
    /// assert_eq!(mock.request_count("m"), 2);
    /// assert_eq!(mock.request_count("other"), 0);
    /// # }
    /// ```
    pub fn request_count(&self, model: &str) -> usize {
        self.shared.lock().counts.get(model).copied().unwrap_or(0)
    }

    /// Forgets behaviours, queued faults, recorded requests and counts.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::Full;
    /// use modelux::mock::{Fault, MockProvider};
    /// let mock = MockProvider::start().await.unwrap();
    /// let url = format!("{}/chat/completions", mock.openai_url());
    /// let chat = || http::Request::post(&url)
    ///     .header("content-type", "application/json")
    ///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// let client = modelux::provider::http_client();
    /// client.request(chat()).await.unwrap();
    /// mock.push("m", Fault::status(503));
    /// mock.reset();
    /// assert_eq!(mock.request_count("m"), 0);
    /// assert!(mock.requests().is_empty());
    /// // The queued 503 is gone too.
    /// assert_eq!(client.request(chat()).await.unwrap().status(), 200);
    /// # }
    /// ```
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops the server and closes its connections (as dropping it does).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let url = format!("{}/_mock/requests", mock.url());
    /// let get = || http::Request::get(&url).body(http_body_util::Full::default()).unwrap();
    /// let client = modelux::provider::http_client();
    /// assert_eq!(client.request(get()).await.unwrap().status(), 200);
    /// mock.shutdown();
    /// // Nothing answers there any more.
    /// assert!(client.request(get()).await.is_err());
    /// # }
    /// ```
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        // The accept loop owns every connection task, so aborting it closes them all.
        self.task.abort();
    }
}

/// How the mock answers one model. Every field is optional in JSON.
///
/// ```
/// let b: modelux::mock::Behaviour = serde_json::from_str(
///     r#"{"words": 5, "chunk_interval_ms": 20, "fault": {"kind": "status", "status": 503}, "fault_rate": 0.1}"#,
/// ).unwrap();
/// assert_eq!(b.words, Some(5));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// The full answer text; streamed one whitespace-separated word per chunk.
    pub answer: Option<String>,
    /// When `answer` is unset: answer `"word0 word1 …"` with this many words
    /// (default [`DEFAULT_WORDS`]).
    pub words: Option<usize>,
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// Streams: delay between the headers and the first content chunk.
    pub first_chunk_delay_ms: u64,
    /// Streams: delay between content chunks.
    pub chunk_interval_ms: u64,
    /// A fault applied to requests with probability `fault_rate`.
    pub fault: Option<Fault>,
    /// Probability of `fault`, from 0 to 1 (1 when absent).
    pub fault_rate: Option<f64>,
}

/// A fault to inject into one answer.
///
/// Stream faults count *content chunks* (one word each); a count at or past
/// the end of the answer fires just before the finish. Gemini's finish rides
/// on its last text chunk, so there it fires before that chunk. On a
/// non-stream request the stream faults act as their closest equivalent:
/// `SlowFirstChunk` and `StallAfter` delay the headers by `ms`, `CutAfter`
/// cuts the body half-way, `MalformedEventAfter` sends a 200 whose body is not
/// valid JSON, `ErrorEventAfter` answers the provider's overloaded error
/// status, and `NoDone` changes nothing.
///
/// ```
/// use modelux::mock::Fault;
/// let f: Fault = serde_json::from_str(r#"{"kind":"cut_after","chunks":3}"#).unwrap();
/// assert_eq!(f, Fault::CutAfter { chunks: 3 });
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer this HTTP status with the provider's error body.
    Status {
        /// The HTTP status.
        status: u16,
        /// Sets a `retry-after` header (seconds).
        #[serde(default)]
        retry_after_s: Option<u64>,
        /// Sets a `retry-after-ms` header (OpenAI's).
        #[serde(default)]
        retry_after_ms: Option<u64>,
        /// Which error the body describes (default: derived from the status).
        #[serde(default)]
        error: Option<ErrorFlavor>,
    },
    /// Sleep, then answer normally.
    DelayHeaders {
        /// How long to sleep before the headers.
        ms: u64,
    },
    /// Never answer; the request stays open until the client goes away.
    Hang,
    /// Close the TCP connection without sending a response. On HTTP/2 this
    /// closes the whole connection, other streams included.
    ResetBeforeHeaders,
    /// Streams: wait `ms` before the first content chunk.
    SlowFirstChunk {
        /// The extra delay.
        ms: u64,
    },
    /// Streams: after `chunks` content chunks, drop the connection abruptly
    /// (no finish, no `[DONE]` / `message_stop`, no chunked-encoding end).
    CutAfter {
        /// Content chunks sent before the cut.
        chunks: usize,
    },
    /// Streams: after `chunks` content chunks, send nothing for `ms`, then continue.
    StallAfter {
        /// Content chunks sent before the stall.
        chunks: usize,
        /// How long the stall lasts.
        ms: u64,
    },
    /// Streams: after `chunks` content chunks, send one event whose data is
    /// not valid JSON, then continue normally.
    MalformedEventAfter {
        /// Content chunks sent before the bad event.
        chunks: usize,
    },
    /// Streams: after `chunks` content chunks, send the provider's in-band
    /// error (OpenAI `data: {"error":…}`, Anthropic `event: error` with
    /// `overloaded_error`, Gemini `data: {"error":{"code":503,…}}`) and end
    /// the stream.
    ErrorEventAfter {
        /// Content chunks sent before the error.
        chunks: usize,
    },
    /// Streams: finish normally (finish reason, usage) but end without
    /// OpenAI's `[DONE]` or Anthropic's `message_stop`. Gemini streams have
    /// no end marker, so they are unaffected.
    NoDone,
}

impl Fault {
    /// A [`Fault::Status`] with no retry hint and the status's default error body.
    ///
    /// ```
    /// use modelux::mock::Fault;
    /// assert_eq!(
    ///     Fault::status(429),
    ///     Fault::Status { status: 429, retry_after_s: None, retry_after_ms: None, error: None },
    /// );
    /// // The same fault in the control API's JSON (`POST /_mock/faults`).
    /// let f: Fault = serde_json::from_str(r#"{"kind": "status", "status": 429}"#).unwrap();
    /// assert_eq!(f, Fault::status(429));
    /// ```
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after_s: None,
            retry_after_ms: None,
            error: None,
        }
    }
}

/// Which error a [`Fault::Status`] body describes, in each provider's terms.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http_body_util::{BodyExt, Full};
/// use modelux::mock::{ErrorFlavor, Fault, MockProvider};
/// let mock = MockProvider::start().await.unwrap();
/// mock.push("m", Fault::Status {
///     status: 400, retry_after_s: None, retry_after_ms: None,
///     error: Some(ErrorFlavor::ContextLength),
/// });
/// let req = http::Request::post(format!("{}/chat/completions", mock.openai_url()))
///     .header("content-type", "application/json")
///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
///     .unwrap();
/// let resp = modelux::provider::http_client().request(req).await.unwrap();
/// assert_eq!(resp.status(), 400);
/// let body = resp.into_body().collect().await.unwrap().to_bytes();
/// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(v["error"]["code"], "context_length_exceeded");
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorFlavor {
    /// The prompt is too long (OpenAI code `context_length_exceeded`,
    /// Anthropic "prompt is too long", Gemini "input token count exceeds").
    ContextLength,
    /// The safety system rejected the request (OpenAI code `content_policy_violation`).
    ContentPolicy,
    /// The provider is overloaded (Anthropic `overloaded_error`, Gemini `UNAVAILABLE`).
    Overloaded,
    /// The model does not support a trailing assistant message.
    PrefillUnsupported,
    /// The provider refuses the gateway's key or account, in the shape each
    /// sends it with any status (a test usually asks for 400): Gemini's
    /// `INVALID_ARGUMENT` "API key not valid" with an `ErrorInfo` reason
    /// `API_KEY_INVALID`, Anthropic's `invalid_request_error` "Your credit
    /// balance is too low", OpenAI's `insufficient_quota`.
    AccountRefused,
    /// The usual error for the status (rate limit for 429, server error for 5xx, …).
    #[default]
    Plain,
}

/// One request the mock received.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http_body_util::Full;
/// use modelux::mock::{AnswerEnd, MockProvider};
/// let mock = MockProvider::start().await.unwrap();
/// let req = http::Request::post(format!("{}/chat/completions", mock.openai_url()))
///     .header("content-type", "application/json")
///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
///     .unwrap();
/// modelux::provider::http_client().request(req).await.unwrap();
/// let r = &mock.requests()[0];
/// assert_eq!((r.format, r.model.as_str(), r.stream), ("openai", "m", false));
/// assert_eq!(r.body["messages"][0]["content"], "hi");
/// assert_eq!((r.id, r.connection, r.version), (1, 1, http::Version::HTTP_11));
/// assert_eq!((r.end, r.chunks_sent), (AnswerEnd::Ended, 0));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// `"openai"`, `"anthropic"` or `"gemini"`.
    pub format: &'static str,
    /// The model asked for (Gemini: from the path); empty if the body had none.
    pub model: String,
    /// Whether a stream was asked for.
    pub stream: bool,
    /// The JSON body (a JSON string holding the raw text if it was not JSON).
    pub body: serde_json::Value,
    /// The raw value of the format's auth header: OpenAI `authorization`
    /// (`"Bearer KEY"`), Anthropic `x-api-key` (or `authorization`,
    /// `"Bearer KEY"`, as the official SDKs send it since 2.x), Gemini
    /// `x-goog-api-key` (or the `key` query parameter).
    pub auth: Option<String>,
    /// When it arrived.
    pub at: SystemTime,
    /// The HTTP version it came over.
    pub version: http::Version,
    /// The connection it came over: connections are numbered from 1 in the
    /// order the mock accepted them.
    pub connection: u64,
    /// The request's number, from 1 in the order the mock received requests
    /// (the `N` of its `req_mockN` request id).
    pub id: u64,
    /// How the answer ended, as the provider saw it.
    pub end: AnswerEnd,
    /// Streams: the content chunks (one word each) the mock produced before
    /// the answer ended, which is what a real provider would bill. Set when
    /// the answer ends; 0 for non-stream answers.
    pub chunks_sent: usize,
    /// Every request header, as received.
    pub headers: http::HeaderMap,
}

/// How the mock's answer to one request ended, as the provider saw it:
/// whether it produced the whole answer, or stopped because the client went
/// away (a provider stops generating, and billing, when its client leaves).
///
/// ```
/// use modelux::mock::AnswerEnd;
/// assert_eq!(serde_json::to_string(&AnswerEnd::Abandoned).unwrap(), "\"abandoned\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerEnd {
    /// Still answering: waiting out its latency, or streaming.
    Open,
    /// The mock produced every content chunk of its answer, or ended the
    /// answer itself as its behaviour's fault says (an error status, a cut,
    /// an error event).
    Ended,
    /// The client closed the connection or reset the stream before the mock
    /// ended its answer.
    Abandoned,
}

/// State shared by the handle and the server.
#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    behaviours: HashMap<String, Behaviour>,
    queues: HashMap<String, VecDeque<Fault>>,
    requests: VecDeque<RecordedRequest>,
    counts: HashMap<String, usize>,
    next_id: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent
        // in a way that matters to a mock, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, model: &str, behaviour: Behaviour) {
        let mut s = self.lock();
        if s.behaviours.len() < MAX_MODELS || s.behaviours.contains_key(model) {
            s.behaviours.insert(model.to_owned(), behaviour);
        }
    }

    fn push(&self, model: &str, fault: Fault) {
        let mut s = self.lock();
        if s.queues.len() >= MAX_MODELS && !s.queues.contains_key(model) {
            return;
        }
        let q = s.queues.entry(model.to_owned()).or_default();
        if q.len() < MAX_QUEUED_FAULTS {
            q.push_back(fault);
        }
    }

    fn reset(&self) {
        let mut s = self.lock();
        s.behaviours.clear();
        s.queues.clear();
        s.requests.clear();
        s.counts.clear();
    }

    /// Records a request and decides how to answer it: returns the behaviour,
    /// the fault to inject (if any) and a request number for ids.
    fn admit(&self, req: RecordedRequest) -> (Behaviour, Option<Fault>, u64) {
        let mut s = self.lock();
        let model = req.model.clone();
        if s.counts.len() < MAX_MODELS || s.counts.contains_key(&model) {
            *s.counts.entry(model.clone()).or_insert(0) += 1;
        }
        if s.requests.len() >= MAX_RECORDED {
            s.requests.pop_front();
        }
        s.next_id += 1;
        let id = s.next_id;
        let mut req = req;
        req.id = id;
        s.requests.push_back(req);

        let behaviour = s
            .behaviours
            .get(&model)
            .or_else(|| s.behaviours.get("*"))
            .cloned()
            .unwrap_or_default();
        let queued = pop_fault(&mut s.queues, &model).or_else(|| pop_fault(&mut s.queues, "*"));
        let fault = queued.or_else(|| {
            let fault = behaviour.fault.clone()?;
            let rate = behaviour.fault_rate.unwrap_or(1.0);
            let hit = if rate >= 1.0 {
                true
            } else if rate > 0.0 {
                rand::random::<f64>() < rate
            } else {
                false
            };
            hit.then_some(fault)
        });
        (behaviour, fault, id)
    }

    /// Records how request `id`'s answer ended (a no-op once the record was
    /// reset or pushed out: records are kept in `id` order).
    fn close(&self, id: u64, end: AnswerEnd, chunks_sent: usize) {
        let mut s = self.lock();
        if let Ok(i) = s.requests.binary_search_by_key(&id, |r| r.id) {
            let r = &mut s.requests[i];
            r.end = end;
            r.chunks_sent = chunks_sent;
        }
    }
}

/// Owned by the future or stream answering one request: records the answer
/// as [`AnswerEnd::Abandoned`] if it is dropped before [`AnswerGuard::ended`].
pub(crate) struct AnswerGuard {
    shared: Arc<Shared>,
    id: u64,
    /// Content chunks produced so far.
    pub(crate) chunks: usize,
    ended: bool,
}

impl AnswerGuard {
    pub(crate) fn new(shared: Arc<Shared>, id: u64) -> Self {
        AnswerGuard {
            shared,
            id,
            chunks: 0,
            ended: false,
        }
    }

    /// The mock has ended the answer itself.
    pub(crate) fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        let end = if self.ended {
            AnswerEnd::Ended
        } else {
            AnswerEnd::Abandoned
        };
        self.shared.close(self.id, end, self.chunks);
    }
}

fn pop_fault(queues: &mut HashMap<String, VecDeque<Fault>>, model: &str) -> Option<Fault> {
    let q = queues.get_mut(model)?;
    let fault = q.pop_front();
    if q.is_empty() {
        queues.remove(model);
    }
    fault
}
