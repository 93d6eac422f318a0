//! OpenAI-compatible providers: OpenAI itself, vLLM, Ollama, other gateways.
//!
//! The wire format is the gateway's own, so the request is forwarded with the
//! model name rewritten and unknown fields intact. Answers are kept as the
//! provider's bytes: stream chunks and whole completions are parsed only as
//! far as the layers need (text, tool calls, finish, usage) and reach the
//! client unchanged (see [`Chunk`] and [`Completion`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use http::{header, StatusCode};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize};

use super::answer::ERROR_FINISH;
use super::client::{self, Endpoint, HttpClient};
use super::{
    AttemptRequest, BoxFuture, Chunk, Completion, Failure, ProviderError, ProviderResponse,
};
use crate::api::{ChatChunk, ChatCompletion, Message, RequestParams, Role, StreamOptions};
use crate::sse::SseEvent;
use crate::Secret;

/// An OpenAI-compatible provider at `base_url` (which usually ends in `/v1`).
///
/// Streams always ask the provider for usage (`stream_options.include_usage`),
/// so tokens can be counted: the stream then ends with a usage-only chunk
/// (no `choices`) even when the client did not ask for one. A service that
/// forwards chunks to a client that did not ask
/// ([`ChatRequest::wants_stream_usage`](crate::api::ChatRequest::wants_stream_usage))
/// should drop chunks without choices and a content chunk's `usage`, as the
/// reference gateway does.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// use tower::ServiceExt;
/// use modelux::provider::{http_client, AttemptRequest, OpenAi, Target};
/// let openai = OpenAi::new("https://api.openai.com/v1", Some(modelux::Secret::new("sk-...")), http_client());
/// let chat = serde_json::from_str(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
/// let req = AttemptRequest::new(Arc::new(Target::new("openai", "gpt-4o-mini")), Arc::new(chat));
/// let answer = openai.oneshot(req).await;
/// # let _ = answer;
/// # }
/// ```
#[derive(Clone)]
pub struct OpenAi {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    endpoint: Endpoint,
    client: HttpClient,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
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
    /// let p = modelux::provider::OpenAi::new("https://example.com", None, modelux::provider::http_client())
    ///     .with_headers(&headers);
    /// assert!(format!("{p:?}").contains("x-title"));
    /// ```
    pub fn with_headers(self, headers: &http::HeaderMap) -> Self {
        let inner = &*self.inner;
        OpenAi {
            inner: Arc::new(Inner {
                endpoint: inner.endpoint.clone().extra(headers),
                ..inner.clone()
            }),
        }
    }

    /// A provider at `base_url`, authenticated with `Authorization: Bearer` when a key is given.
    ///
    /// ```
    /// # #[cfg(feature = "mock")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::sync::Arc;
    /// # use tower::ServiceExt;
    /// # let chat = serde_json::from_str(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    /// use modelux::provider::{http_client, AttemptRequest, OpenAi, ProviderResponse, Target};
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let openai = OpenAi::new(&mock.openai_url(), Some(modelux::Secret::new("sk-test")), http_client());
    /// let req = AttemptRequest::new(Arc::new(Target::new("mock", "gpt-4o-mini")), Arc::new(chat));
    /// let answer = openai.oneshot(req).await.unwrap();
    /// assert!(matches!(answer, ProviderResponse::Complete(_)));
    /// let seen = &mock.requests()[0];
    /// assert_eq!((seen.model.as_str(), seen.auth.as_deref()), ("gpt-4o-mini", Some("Bearer sk-test")));
    /// # }
    /// # #[cfg(not(feature = "mock"))]
    /// # fn main() {}
    /// ```
    pub fn new(base_url: &str, key: Option<Secret>, client: HttpClient) -> Self {
        OpenAi {
            inner: Arc::new(Inner {
                endpoint: endpoint(base_url, key.as_ref()),
                client,
            }),
        }
    }
}

/// `{base_url}/chat/completions`, with `Authorization: Bearer` when a key is given.
fn endpoint(base_url: &str, key: Option<&Secret>) -> Endpoint {
    let endpoint = Endpoint::new(&client::join_url(base_url, "/chat/completions"));
    match key {
        Some(key) => endpoint.secret(header::AUTHORIZATION, format!("Bearer {}", key.expose())),
        None => endpoint,
    }
}

/// The outgoing body, serialised straight from the shared request.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Messages<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    params: &'a RequestParams,
}

struct Messages<'a> {
    messages: &'a [Message],
    prefill: Option<&'a str>,
}

impl Serialize for Messages<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.messages.len() + 1))?;
        for m in self.messages {
            seq.serialize_element(m)?;
        }
        if let Some(p) = self.prefill {
            seq.serialize_element(&Message::text(Role::Assistant, p))?;
        }
        seq.end()
    }
}

/// Serialises the upstream body for an attempt. Streams always ask for usage,
/// so the gateway can count tokens; the usage chunk is dropped again for
/// clients that did not ask for it.
pub(crate) fn request_body(req: &AttemptRequest) -> Vec<u8> {
    let chat = &req.chat;
    let stream = chat.is_stream();
    let stream_options = stream.then(|| {
        let mut o = chat.stream_options.clone().unwrap_or_default();
        o.include_usage = Some(true);
        o
    });
    let body = Body {
        model: &req.target.upstream_model,
        messages: Messages {
            messages: &chat.messages,
            prefill: req.prefill.as_deref(),
        },
        stream: chat.stream,
        stream_options,
        params: &chat.params,
    };
    client::json_body(&body, chat)
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// Refines a status-based classification with OpenAI's error code.
fn refine(status: StatusCode, body: &[u8], mut err: ProviderError) -> ProviderError {
    if let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(body) {
        let code = env
            .error
            .code
            .as_ref()
            .and_then(|c| c.as_str())
            .unwrap_or("");
        let kind = env.error.kind.as_deref().unwrap_or("");
        if code == "insufficient_quota" || kind == "insufficient_quota" {
            // A 429 that is no rate limit: the account's quota or credits are
            // spent, and waiting does not bring them back. Retried on the same
            // target (and cooled by its Retry-After), it only spent the
            // request's budget before the fallback.
            err.failure = Failure::TargetRefused {
                status: status.as_u16(),
            };
        } else if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            if code == "context_length_exceeded" || kind == "context_length_exceeded" {
                err.failure = Failure::ContextLength;
            } else if matches!(code, "content_policy_violation" | "content_filter")
                || kind == "content_policy_violation"
            {
                err.failure = Failure::ContentPolicy;
            }
        }
        err.message = env.error.message.unwrap_or_default();
    }
    err
}

/// Classifies the `error` object of an event that arrived inside a 200
/// stream: an `{"error": ...}` event, or a chunk that carries one (as
/// OpenRouter sends a failure in the middle of an answer). The error's
/// `type` or string `code` names the failure where it can; a numeric `code`
/// is an HTTP status (OpenRouter's); anything else is a server error, which
/// fails over before the stream's commit and continues or ends the stream
/// after it.
fn in_stream_error(e: &serde_json::Value) -> ProviderError {
    let message = e["message"]
        .as_str()
        .unwrap_or("error event in stream")
        .to_owned();
    let kind = e["type"].as_str().unwrap_or("");
    let code = e["code"].as_str().unwrap_or("");
    let status = e["code"].as_u64();
    let failure = match (kind, code, status) {
        (_, "rate_limit_exceeded", _) | ("rate_limit_error", _, _) | (_, _, Some(429)) => {
            Failure::RateLimited
        }
        (_, "context_length_exceeded", _) => Failure::ContextLength,
        ("overloaded_error", _, _) | (_, "overloaded", _) | (_, _, Some(529)) => {
            Failure::Overloaded
        }
        (_, _, Some(status @ 500..=599)) => Failure::Server {
            status: status as u16,
        },
        _ => Failure::Server { status: 500 },
    };
    ProviderError::new(failure, message)
}

/// The error a chunk reports, if it reports one: its top-level `error`
/// object, or a choice ended with `finish_reason: "error"` and no object to
/// say why.
fn chunk_error(chunk: &ChatChunk) -> Option<ProviderError> {
    if let Some(e) = chunk.extra.get("error").filter(|e| !e.is_null()) {
        return Some(in_stream_error(e));
    }
    chunk
        .choices
        .iter()
        .any(|c| c.finish_reason.as_deref() == Some(ERROR_FINISH))
        .then(|| {
            ProviderError::new(
                Failure::Server { status: 500 },
                "the provider ended the answer with finish_reason \"error\"",
            )
        })
}

impl tower::Service<AttemptRequest> for OpenAi {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = BoxFuture<Result<ProviderResponse, ProviderError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AttemptRequest) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let choices = req.chat.params.n.unwrap_or(1);
            client::exchange(
                &inner.client,
                inner.endpoint.request(),
                request_body(&req),
                req.chat.is_stream(),
                refine,
                inner.endpoint.secrets(),
                |body| chunks(body, choices, req.target.id.provider.clone()),
                completion,
            )
            .await
        })
    }
}

/// A completion body: kept as it arrived when it is a complete OpenAI
/// completion, else parsed (which fills in defaults) or rejected.
fn completion(body: bytes::Bytes) -> Result<Completion, ProviderError> {
    match Completion::try_from_json(body) {
        Ok(c) => Ok(c),
        Err((body, _)) => {
            let completion: ChatCompletion = serde_json::from_slice(&body).map_err(|e| {
                ProviderError::new(Failure::Malformed, format!("unparseable completion: {e}"))
            })?;
            Ok(Completion::from(completion))
        }
    }
}

/// One event's data, when it is not a chunk kept as the provider's bytes.
enum Parsed {
    Chunk(ChatChunk),
    Error(ProviderError),
    Skip,
}

/// Parses event data the way every event was parsed before chunks were
/// kept as bytes: into a [`ChatChunk`], or an in-stream error (an error
/// object, or a chunk that reports one).
fn parse_event(data: &str, provider: &Arc<str>) -> Parsed {
    match serde_json::from_str::<ChatChunk>(data) {
        Ok(chunk) => match chunk_error(&chunk) {
            Some(e) => Parsed::Error(e),
            None => Parsed::Chunk(chunk),
        },
        Err(err) => match serde_json::from_str::<serde_json::Value>(data) {
            Ok(v) if v.get("error").is_some() => Parsed::Error(in_stream_error(&v["error"])),
            _ => {
                client::malformed_event(provider, &err);
                Parsed::Skip
            }
        },
    }
}

/// Parses an OpenAI event stream into chunks. Ends at `[DONE]`; a stream that
/// ends without it is finished promptly if a `finish_reason` was seen, and is
/// a [`Failure::StreamCut`] otherwise. An error event, or a chunk that
/// reports an error (a top-level `error`, `finish_reason: "error"`), ends it
/// with that error, classified.
///
/// Each chunk keeps the event's bytes, which the gateway forwards unchanged;
/// only events that are not complete chunks are parsed into a [`ChatChunk`].
///
/// With `n` > 1 the answer is complete once every choice has its
/// `finish_reason` (a stream cut after the first finished choice would
/// otherwise end cleanly with the others truncated), or at `[DONE]` once one
/// has (a server that ignores `n` sends one choice).
fn chunks(
    body: client::UpstreamBody,
    n: u32,
    provider: Arc<str>,
) -> Chunks<impl Stream<Item = Result<SseEvent, ProviderError>> + Send> {
    Chunks {
        events: client::events(body),
        unfinished: Unfinished::new(n),
        finished: false,
        done: false,
        provider,
    }
}

/// The choices of an answer that have no `finish_reason` yet.
#[derive(Debug)]
enum Unfinished {
    /// One choice (`n` absent or 1): any `finish_reason` completes it.
    One,
    /// `left` of `n` choices, by index (a bit per index; OpenAI allows
    /// `n` ≤ 128).
    Many { seen: u128, left: u32 },
}

impl Unfinished {
    fn new(n: u32) -> Self {
        if n <= 1 {
            Unfinished::One
        } else {
            Unfinished::Many {
                seen: 0,
                left: n.min(128),
            }
        }
    }

    /// Whether some choice has its `finish_reason`.
    fn any_finished(&self) -> bool {
        match self {
            Unfinished::One => false,
            Unfinished::Many { seen, .. } => *seen != 0,
        }
    }

    /// Notes the finished choices of `chunk`; whether every choice is now finished.
    fn finish(&mut self, chunk: &Chunk) -> bool {
        match self {
            Unfinished::One => chunk.finish_reason().is_some(),
            Unfinished::Many { seen, left } => {
                if let Ok(c) = chunk.to_chat_chunk() {
                    for choice in c.choices.iter().filter(|c| c.finish_reason.is_some()) {
                        let bit = 1u128 << choice.index.min(127);
                        if *seen & bit == 0 {
                            *seen |= bit;
                            *left = left.saturating_sub(1);
                        }
                    }
                }
                *left == 0
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The stream [`chunks`] returns. Written out rather than as an
    /// `async_stream` generator: it lives as long as the response, one per
    /// open stream, and the generator kept every local of every state
    /// (≈ 1.2 KB against ≈ 0.2 KB here).
    struct Chunks<E> {
        #[pin]
        events: E,
        // The choices still to finish.
        unfinished: Unfinished,
        // Every choice has its `finish_reason`: the answer is complete.
        finished: bool,
        // The last item was returned.
        done: bool,
        // The provider's name in the config, for the malformed-event count.
        provider: Arc<str>,
    }
}

impl<E> Stream for Chunks<E>
where
    E: Stream<Item = Result<SseEvent, ProviderError>>,
{
    type Item = Result<Chunk, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            let ev = match std::task::ready!(this.events.as_mut().poll_next(cx)) {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready((!*this.finished).then_some(Err(e)));
                }
                None => {
                    *this.done = true;
                    return Poll::Ready((!*this.finished).then(|| {
                        Err(ProviderError::new(
                            Failure::StreamCut,
                            "stream ended before a finish_reason",
                        ))
                    }));
                }
            };
            let mut data = ev.data;
            let trimmed = data.trim();
            if trimmed == "[DONE]" {
                *this.done = true;
                // `[DONE]` is the server saying the answer is whole: with
                // `n` > 1 a server that ignores `n` (many OpenAI-compatible
                // ones) finished the one choice it sent. Only a connection
                // that ends without it is a cut.
                let finished = *this.finished || this.unfinished.any_finished();
                return Poll::Ready((!finished).then(|| {
                    Err(ProviderError::new(
                        Failure::StreamCut,
                        "stream ended with [DONE] before a finish_reason",
                    ))
                }));
            }
            if trimmed.is_empty() {
                continue;
            }
            if trimmed.len() != data.len() {
                data = trimmed.to_owned();
            }
            let chunk = match Chunk::try_from_string(data) {
                Ok(chunk) => chunk,
                Err((data, _)) => match parse_event(&data, this.provider) {
                    Parsed::Chunk(chunk) => Chunk::from(chunk),
                    Parsed::Error(e) => {
                        *this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Parsed::Skip => continue,
                },
            };
            if this.unfinished.finish(&chunk) {
                *this.finished = true;
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunk stream lives as long as each open stream (see [`Chunks`]):
    /// ≈ 0.2 KB, against ≈ 1.2 KB for the generator it replaced.
    #[test]
    fn the_per_stream_state_stays_small() {
        fn size<A, B, C, T>(_: fn(A, B, C) -> T) -> usize {
            std::mem::size_of::<T>()
        }
        let size = size(chunks);
        assert!(size <= 256, "the OpenAI chunk stream is {size} bytes");
    }
    use crate::provider::Target;

    /// The chunk stream over canned events, for an answer of `n` choices.
    fn canned(
        n: u32,
        events: &[&str],
    ) -> Chunks<impl Stream<Item = Result<SseEvent, ProviderError>> + Send> {
        let events: Vec<Result<SseEvent, ProviderError>> = events
            .iter()
            .map(|data| {
                Ok(SseEvent {
                    event: None,
                    data: (*data).to_owned(),
                    id: None,
                })
            })
            .collect();
        Chunks {
            events: futures_util::stream::iter(events),
            unfinished: Unfinished::new(n),
            finished: false,
            done: false,
            provider: Arc::from("openai"),
        }
    }

    fn chunk(choices: &str) -> String {
        format!(
            r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{choices}]}}"#
        )
    }

    /// With `n` = 2, a stream that ends after one choice finished is cut,
    /// not complete; once both finished, its end is clean.
    #[tokio::test]
    async fn every_choice_must_finish_before_the_stream_may_end() {
        use futures_util::StreamExt;
        let a = chunk(
            r#"{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"},"finish_reason":null}"#,
        );
        let a_done = chunk(r#"{"index":0,"delta":{},"finish_reason":"stop"}"#);
        let b_done = chunk(r#"{"index":1,"delta":{},"finish_reason":"length"}"#);

        let cut: Vec<_> = canned(2, &[&a, &a_done]).collect().await;
        assert_eq!(cut.len(), 3);
        let err = cut[2].as_ref().unwrap_err();
        assert_eq!(err.failure, Failure::StreamCut, "{err}");

        let whole: Vec<_> = canned(2, &[&a, &a_done, &b_done]).collect().await;
        assert_eq!(whole.len(), 3);
        assert!(whole.iter().all(Result::is_ok));

        // One choice (the usual case): its finish_reason completes the answer.
        let one: Vec<_> = canned(1, &[&a, &a_done]).collect().await;
        assert!(one.len() == 2 && one.iter().all(Result::is_ok));

        // A server that ignores `n` sends one choice and `[DONE]`: whole,
        // not cut. `[DONE]` before any finish is still a cut.
        let single = chunk(r#"{"index":0,"delta":{"content":"a"},"finish_reason":null}"#);
        let ignored: Vec<_> = canned(3, &[&single, &a_done, "[DONE]"]).collect().await;
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert!(ignored.iter().all(Result::is_ok), "{ignored:?}");
        let early: Vec<_> = canned(3, &[&single, "[DONE]"]).collect().await;
        assert_eq!(
            early.last().unwrap().as_ref().unwrap_err().failure,
            Failure::StreamCut
        );
    }

    /// How OpenRouter reports a failure mid-generation: a chunk like any
    /// other, with a top-level `error` and `finish_reason: "error"`.
    const OPENROUTER_ERR: &str = r#"{"id":"gen-1","object":"chat.completion.chunk","created":1,"model":"m","error":{"code":"server_error","message":"Provider disconnected unexpectedly"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;

    /// After content, a chunk that carries an error ends the stream with
    /// that error (so it continues on another target, or ends with an error
    /// event and no `[DONE]`), not with a clean finish.
    #[tokio::test]
    async fn a_chunk_carrying_an_error_after_content_ends_the_stream_with_it() {
        use futures_util::StreamExt;
        let a = chunk(r#"{"index":0,"delta":{"content":"a"},"finish_reason":null}"#);
        let out: Vec<_> = canned(1, &[&a, OPENROUTER_ERR, "[DONE]"]).collect().await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap().text(), "a");
        let err = out[1].as_ref().unwrap_err();
        assert_eq!(err.failure, Failure::Server { status: 500 }, "{err}");
        assert_eq!(err.message, "Provider disconnected unexpectedly");

        // `finish_reason: "error"` alone says the same.
        let failed = chunk(r#"{"index":0,"delta":{},"finish_reason":"error"}"#);
        let out: Vec<_> = canned(1, &[&a, &failed, "[DONE]"]).collect().await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[1].is_err(), "{out:?}");

        // The same in a chunk that lacks a field and is parsed instead.
        let bare = r#"{"id":"gen-1","model":"m","error":{"code":502,"message":"upstream down"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
        let out: Vec<_> = canned(1, &[&a, bare]).collect().await;
        let err = out[1].as_ref().unwrap_err();
        assert_eq!(err.failure, Failure::Server { status: 502 }, "{err}");
    }

    /// An in-stream error's message is kept to `MAX_MESSAGE_BYTES`: it
    /// reaches the client, the trace ring and the logs, and an event line
    /// may be megabytes long.
    #[tokio::test]
    async fn a_huge_in_stream_error_message_is_cut() {
        use futures_util::StreamExt;
        let a = chunk(r#"{"index":0,"delta":{"content":"a"},"finish_reason":null}"#);
        let huge =
            OPENROUTER_ERR.replace("Provider disconnected unexpectedly", &"é".repeat(1 << 20));
        let out: Vec<_> = canned(1, &[&a, &huge]).collect().await;
        let err = out[1].as_ref().unwrap_err();
        assert!(
            err.message.len() <= crate::provider::MAX_MESSAGE_BYTES + 3,
            "{}",
            err.message.len()
        );
        assert!(err.message.starts_with("éé") && err.message.ends_with('…'));
    }

    /// Before any content, the error fails the attempt, which the router
    /// retries or moves on from (no chunk committed the stream).
    #[tokio::test]
    async fn a_chunk_carrying_an_error_before_content_fails_the_attempt() {
        use futures_util::StreamExt;
        let role =
            chunk(r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#);
        let out: Vec<_> = canned(1, &[&role, OPENROUTER_ERR, "[DONE]"])
            .collect()
            .await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(!out[0].as_ref().unwrap().has_content());
        let err = out[1].as_ref().unwrap_err();
        assert!(
            crate::route::RetryOn::default().matches(err),
            "the default retry_on moves on from {err}"
        );
        let out: Vec<_> = canned(1, &[OPENROUTER_ERR]).collect().await;
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].is_err(), "{out:?}");
    }

    #[test]
    fn in_stream_errors_are_classified_by_type_or_code() {
        use serde_json::json;
        for (error, failure) in [
            (json!({"code": 429, "message": "m"}), Failure::RateLimited),
            (json!({"code": "rate_limit_exceeded"}), Failure::RateLimited),
            (json!({"code": 503}), Failure::Server { status: 503 }),
            (json!({"code": 529}), Failure::Overloaded),
            (json!({"type": "overloaded_error"}), Failure::Overloaded),
            (
                json!({"code": "server_error"}),
                Failure::Server { status: 500 },
            ),
            (json!({"code": 400}), Failure::Server { status: 500 }),
            (
                json!({"code": "context_length_exceeded"}),
                Failure::ContextLength,
            ),
        ] {
            assert_eq!(in_stream_error(&error).failure, failure, "{error}");
        }
        // A chunk whose `error` is null reports nothing.
        let c: ChatChunk = serde_json::from_str(
            &chunk(r#"{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}"#)
                .replace(r#""choices""#, r#""error":null,"choices""#),
        )
        .unwrap();
        assert!(chunk_error(&c).is_none());
    }

    #[test]
    fn body_rewrites_model_keeps_unknown_fields_and_asks_for_usage() {
        let chat: crate::api::ChatRequest = serde_json::from_str(
            r#"{"model":"route","messages":[{"role":"user","content":"hi"}],"stream":true,"logit_bias":{"1":2}}"#,
        )
        .unwrap();
        let mut target = Target::new("openai", "alias");
        target.upstream_model = "gpt-4o-mini".into();
        let mut req = AttemptRequest::new(Arc::new(target), Arc::new(chat));
        req.prefill = Some("Once upon".into());
        let v: serde_json::Value = serde_json::from_slice(&request_body(&req)).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["logit_bias"]["1"], 2);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["messages"][1]["role"], "assistant");
        assert_eq!(v["messages"][1]["content"], "Once upon");
    }

    /// Gemini's OpenAI-compatible endpoint puts the thought signature Gemini 3
    /// wants back in `extra_content` on the tool call: the client's next
    /// request carries it, and so must the body sent upstream.
    #[test]
    fn unknown_fields_of_tool_calls_reach_the_provider() {
        let chat: crate::api::ChatRequest = serde_json::from_str(
            r#"{"model":"route","messages":[{"role":"user","content":"hi"},
                {"role":"assistant","content":null,"tool_calls":[
                  {"id":"c1","type":"function","function":{"name":"f","arguments":"{}","x_fn":1},
                   "extra_content":{"google":{"thought_signature":"sig"}}}]},
                {"role":"tool","tool_call_id":"c1","content":"ok"}]}"#,
        )
        .unwrap();
        let req = AttemptRequest::new(Arc::new(Target::new("openai", "m")), Arc::new(chat));
        let v: serde_json::Value = serde_json::from_slice(&request_body(&req)).unwrap();
        let call = &v["messages"][1]["tool_calls"][0];
        assert_eq!(
            call["extra_content"],
            serde_json::json!({"google":{"thought_signature":"sig"}})
        );
        assert_eq!(call["function"]["x_fn"], 1);
        assert_eq!(call["id"], "c1");
        assert_eq!(call["type"], "function");
    }

    #[test]
    fn context_length_and_content_policy_are_recognised() {
        let h = http::HeaderMap::new();
        let base = ProviderError::from_status(StatusCode::BAD_REQUEST, &h, "");
        let e = refine(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
            base.clone(),
        );
        assert_eq!(e.failure, Failure::ContextLength);
        assert_eq!(e.message, "too long");
        let e = refine(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"no","type":"invalid_request_error","code":"content_policy_violation"}}"#,
            base,
        );
        assert_eq!(e.failure, Failure::ContentPolicy);
    }

    /// A spent quota comes as a 429 but is no rate limit: the target is
    /// refused (the router moves on at once), while a real rate limit stays
    /// retryable on the same target.
    #[test]
    fn a_spent_quota_is_a_refused_target_not_a_rate_limit() {
        let h = http::HeaderMap::new();
        let base = ProviderError::from_status(StatusCode::TOO_MANY_REQUESTS, &h, "");
        let e = refine(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            base.clone(),
        );
        assert_eq!(e.failure, Failure::TargetRefused { status: 429 });
        assert!(!e.failure.is_retryable_on_same_target());
        let e = refine(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            base,
        );
        assert_eq!(e.failure, Failure::RateLimited);
    }
}
