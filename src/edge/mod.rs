//! The HTTP edge: what a server sends a client for a routed request, in
//! OpenAI's format, so an app serving the layers from its own axum, hyper or
//! tonic-side HTTP server answers exactly as the reference gateway does.
//!
//! Why a module of its own: the layers end in a [`RouteResponse`] or a
//! [`RouteError`], and getting from there to the bytes an OpenAI SDK accepts
//! has rules that are easy to get subtly wrong, and costly when wrong:
//!
//! * A stream ends with `data: [DONE]` only when it is whole. One that broke
//!   ends with an in-band error event and no `[DONE]`: an SDK that saw
//!   `[DONE]` would hand a truncated answer to its caller as complete.
//! * A usage chunk the client did not ask for is dropped (adapters always ask
//!   providers for usage, to count tokens), and usage riding on a content
//!   chunk is taken off it.
//! * Errors carry OpenAI's `{"error": {...}}` body, the status an SDK can act
//!   on, and `x-should-retry: false` on a 502 or 504: the router already
//!   tried every target, and an SDK retrying would run the whole chain again.
//!
//! The reference gateway uses [`ErrorAnswer`] and [`for_client`] itself; its
//! stream body adds what only a server with its own connection bookkeeping
//! can do (cutting a stream whose client stopped reading, estimating usage a
//! provider never sent).

mod error;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};

pub use error::ErrorAnswer;

use crate::api::ErrorBody;
use crate::provider::{Chunk, ChunkStream, ProviderError, ProviderResponse};
use crate::route::{RouteError, RouteResponse};
use crate::sse::{encode_done, encode_json};

static X_MODELUX_PROVIDER: HeaderName = HeaderName::from_static("x-modelux-provider");
static X_MODELUX_MODEL: HeaderName = HeaderName::from_static("x-modelux-model");
static X_MODELUX_ATTEMPTS: HeaderName = HeaderName::from_static("x-modelux-attempts");
static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The HTTP answer to a routed request: a completion as JSON, a stream as
/// server-sent events, a failure as OpenAI's error body with its status.
/// `wants_usage` is the request's
/// [`wants_stream_usage`](crate::api::ChatRequest::wants_stream_usage), read
/// before the request moved into its `RouteRequest` (see [`for_client`]).
/// The served target and the attempts it took are in `x-modelux-provider`,
/// `x-modelux-model` and `x-modelux-attempts`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::{sync::Arc, time::Duration};
/// use http_body_util::BodyExt;
/// use modelux::api::{ChatCompletion, ChatRequest};
/// use modelux::fallback::Fallback;
/// use modelux::provider::{AttemptRequest, Completion, ProviderResponse, Target};
/// use modelux::route::{Candidate, Route, RouteRequest};
/// use tower::{service_fn, ServiceExt};
///
/// let leaf = service_fn(|req: AttemptRequest| async move {
///     let c = ChatCompletion::text("id-1", &req.target.id.model, "hello", "stop");
///     Ok::<_, modelux::provider::ProviderError>(ProviderResponse::Complete(Completion::from(c)))
/// });
/// let route = Arc::new(Route::fallback("default", vec![
///     Candidate::new(Arc::new(Target::new("p", "m")), Duration::from_secs(5)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"default","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
/// let wants_usage = chat.wants_stream_usage();
/// let result = Fallback::new(leaf).oneshot(RouteRequest::new(chat, route)).await;
///
/// let resp = modelux::edge::into_response(result, wants_usage);
/// assert_eq!(resp.status(), 200);
/// assert_eq!(resp.headers()["x-modelux-provider"], "p");
/// let body = resp.into_body().collect().await.unwrap().to_bytes();
/// let answer: ChatCompletion = serde_json::from_slice(&body).unwrap();
/// assert_eq!(answer.choices[0].message.content.as_deref(), Some("hello"));
/// # }
/// ```
pub fn into_response(
    result: Result<RouteResponse, RouteError>,
    wants_usage: bool,
) -> Response<AnswerBody> {
    let answer = match result {
        Ok(answer) => answer,
        Err(e) => return error_response(ErrorAnswer::from_route(&e)),
    };
    let mut resp = match answer.body {
        ProviderResponse::Complete(c) => {
            let mut r = Response::new(AnswerBody::whole(c.to_json()));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        ProviderResponse::Stream(s) => {
            let mut r = Response::new(AnswerBody::stream(s, wants_usage));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // nginx in front of the app would buffer the stream otherwise.
            h.insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
            r
        }
    };
    let h = resp.headers_mut();
    let id = &answer.served_by.id;
    if let Ok(v) = HeaderValue::from_str(&id.provider) {
        h.insert(X_MODELUX_PROVIDER.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&id.model) {
        h.insert(X_MODELUX_MODEL.clone(), v);
    }
    h.insert(
        X_MODELUX_ATTEMPTS.clone(),
        HeaderValue::from(answer.attempts),
    );
    resp
}

/// An [`ErrorAnswer`] as a response: its status, headers and JSON body.
///
/// ```
/// let e = modelux::edge::ErrorAnswer::new(http::StatusCode::BAD_REQUEST, "invalid_request_error", None, "`messages` is empty");
/// let resp = modelux::edge::error_response(e);
/// assert_eq!(resp.status(), 400);
/// assert_eq!(resp.headers()["content-type"], "application/json");
/// ```
pub fn error_response(e: ErrorAnswer) -> Response<AnswerBody> {
    let mut resp = Response::new(AnswerBody::whole(Bytes::from(
        serde_json::to_vec(&e.body).unwrap_or_default(),
    )));
    *resp.status_mut() = e.status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.extend(e.headers);
    resp
}

/// A chunk as the client gets it, or `None` for a usage-only chunk it did
/// not ask for. Usage riding on a content chunk is taken off when the
/// client did not ask for it (sent as it came if the chunk cannot be
/// parsed: its content matters more).
///
/// ```
/// use modelux::api::{ChatChunk, Usage};
/// use modelux::provider::Chunk;
/// let usage_only = Chunk::from(ChatChunk::usage_only("id", "m", 1, Usage::new(3, 5)));
/// assert!(modelux::edge::for_client(usage_only.clone(), false).is_none());
/// assert!(modelux::edge::for_client(usage_only, true).is_some());
/// ```
pub fn for_client(mut chunk: Chunk, wants_usage: bool) -> Option<Chunk> {
    if wants_usage || chunk.usage().is_none() {
        return Some(chunk);
    }
    if !chunk.has_choices() {
        return None;
    }
    if let Err(e) = chunk.make_mut().map(|c| c.usage = None) {
        tracing::debug!(error = %e, "a chunk's usage could not be removed");
    }
    Some(chunk)
}

/// The last event of a stream that broke: OpenAI's error body, in band,
/// with the failure's class as its code (`stream_cut`, `stream_stall`, ...).
///
/// ```
/// use modelux::provider::{Failure, ProviderError};
/// let e = ProviderError::new(Failure::StreamCut, "connection reset");
/// let event = modelux::edge::stream_error_event(&e);
/// assert!(event.starts_with(b"data: {\"error\""));
/// assert!(std::str::from_utf8(&event).unwrap().contains("\"code\":\"stream_cut\""));
/// ```
pub fn stream_error_event(e: &ProviderError) -> Bytes {
    let message = match e.failure {
        crate::provider::Failure::StreamTimeLimit => format!("The gateway ended the stream: {e}"),
        _ => format!("The upstream stream failed and could not be recovered: {e}"),
    };
    encode_json(&ErrorBody::new(
        message,
        "upstream_error",
        Some(e.failure.class()),
    ))
}

/// The body [`into_response`] answers with: the whole JSON answer, or the
/// stream's events as they arrive (ending with `[DONE]`, or with an error
/// event and no `[DONE]` when the stream broke). Dropping it drops the
/// upstream stream, and with it the provider's connection: a client that
/// goes away stops the generation it would have paid for.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http_body_util::BodyExt;
/// let body = modelux::edge::AnswerBody::whole(bytes::Bytes::from_static(b"{}"));
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
/// # }
/// ```
pub struct AnswerBody {
    state: State,
}

enum State {
    Whole(Option<Bytes>),
    Stream {
        stream: ChunkStream,
        wants_usage: bool,
    },
    Done,
    End,
}

impl std::fmt::Debug for AnswerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Whole(_) => "whole",
            State::Stream { .. } => "stream",
            State::Done => "done",
            State::End => "end",
        };
        f.debug_struct("AnswerBody").field("state", &state).finish()
    }
}

impl AnswerBody {
    /// A body of `bytes`, sent at once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body::Body;
    /// use http_body_util::BodyExt;
    /// let body = modelux::edge::AnswerBody::whole(bytes::Bytes::from_static(br#"{"ok":true}"#));
    /// // Its length is known up front: sent with `content-length`, not chunked.
    /// assert_eq!(body.size_hint().exact(), Some(11));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), r#"{"ok":true}"#);
    /// # }
    /// ```
    pub fn whole(bytes: Bytes) -> AnswerBody {
        AnswerBody {
            state: State::Whole(Some(bytes)),
        }
    }

    /// The events of `stream` (see [`for_client`] for `wants_usage`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::BodyExt;
    /// use modelux::api::ChatChunk;
    /// use modelux::provider::{Chunk, ChunkStream};
    /// let chunks: ChunkStream = Box::pin(futures_util::stream::iter(vec![
    ///     Ok(Chunk::from(ChatChunk::content("id", "m", 1, "hi"))),
    /// ]));
    /// let body = modelux::edge::AnswerBody::stream(chunks, false);
    /// let text = body.collect().await.unwrap().to_bytes();
    /// assert!(text.ends_with(b"data: [DONE]\n\n"));
    /// # }
    /// ```
    pub fn stream(stream: ChunkStream, wants_usage: bool) -> AnswerBody {
        AnswerBody {
            state: State::Stream {
                stream,
                wants_usage,
            },
        }
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let data = loop {
            match &mut this.state {
                State::Whole(bytes) => {
                    let bytes = bytes.take();
                    this.state = State::End;
                    match bytes {
                        Some(b) => break b,
                        None => return Poll::Ready(None),
                    }
                }
                State::Stream {
                    stream,
                    wants_usage,
                } => match std::task::ready!(stream.poll_next_unpin(cx)) {
                    Some(Ok(chunk)) => {
                        if let Some(chunk) = for_client(chunk, *wants_usage) {
                            break chunk.to_sse();
                        }
                    }
                    Some(Err(e)) => {
                        // No `[DONE]` after an error: the answer is not whole.
                        this.state = State::End;
                        break stream_error_event(&e);
                    }
                    None => this.state = State::Done,
                },
                State::Done => {
                    this.state = State::End;
                    break encode_done();
                }
                State::End => return Poll::Ready(None),
            }
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Whole(b) => b.is_none(),
            State::End => true,
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Whole(Some(b)) => SizeHint::with_exact(b.len() as u64),
            State::Whole(None) | State::End => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::api::{ChatChunk, ChatRequest, Usage};
    use crate::fallback::Fallback;
    use crate::provider::{AttemptRequest, Failure, Target};
    use crate::route::{Candidate, Route, RouteRequest};

    fn chat(stream_usage: bool) -> ChatRequest {
        let mut v = serde_json::json!({"model": "r", "messages": [{"role": "user", "content": "hi"}], "stream": true});
        if stream_usage {
            v["stream_options"] = serde_json::json!({"include_usage": true});
        }
        serde_json::from_value(v).unwrap()
    }

    async fn route_once(
        chunks: Vec<Result<Chunk, ProviderError>>,
    ) -> Result<RouteResponse, RouteError> {
        let chunks = std::sync::Mutex::new(Some(chunks));
        let chunks = Arc::new(chunks);
        let leaf = service_fn(move |_: AttemptRequest| {
            let chunks = chunks.lock().unwrap().take().unwrap_or_default();
            async move {
                let s: ChunkStream = Box::pin(futures_util::stream::iter(chunks));
                Ok::<_, ProviderError>(ProviderResponse::Stream(s))
            }
        });
        let route = Arc::new(Route::fallback(
            "r",
            vec![Candidate::new(
                Arc::new(Target::new("p", "m")),
                Duration::from_secs(5),
            )],
        ));
        Fallback::new(leaf)
            .oneshot(RouteRequest::new(chat(false), route))
            .await
    }

    fn events(body: &[u8]) -> Vec<String> {
        std::str::from_utf8(body)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }

    /// A whole stream ends with `[DONE]`, without the usage chunk the
    /// client did not ask for, and usage is taken off a content chunk.
    #[tokio::test]
    async fn a_whole_stream_ends_with_done_and_only_asked_for_usage() {
        let mut with_usage = ChatChunk::content("id", "m", 1, "b");
        with_usage.usage = Some(Usage::new(1, 2));
        let chunks = || {
            vec![
                Ok(Chunk::from(ChatChunk::content("id", "m", 1, "a"))),
                Ok(Chunk::from(with_usage.clone())),
                Ok(Chunk::from(ChatChunk::usage_only(
                    "id",
                    "m",
                    1,
                    Usage::new(1, 2),
                ))),
            ]
        };
        let resp = into_response(route_once(chunks()).await, false);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        assert_eq!(resp.headers()["x-modelux-attempts"], "1");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let ev = events(&body);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(!ev[1].contains("usage"), "{}", ev[1]);
        assert_eq!(ev[2], "[DONE]");

        let resp = into_response(route_once(chunks()).await, true);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let ev = events(&body);
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert!(ev[2].contains("\"usage\""), "{}", ev[2]);
    }

    /// A stream that breaks ends with an error event and no `[DONE]`.
    #[tokio::test]
    async fn a_broken_stream_ends_with_an_error_event_and_no_done() {
        let result = route_once(vec![
            Ok(Chunk::from(ChatChunk::content("id", "m", 1, "a"))),
            Err(ProviderError::new(Failure::StreamCut, "reset")),
        ])
        .await;
        let body = into_response(result, false)
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let ev = events(&body);
        assert_eq!(ev.len(), 2, "{ev:?}");
        let last: serde_json::Value = serde_json::from_str(&ev[1]).unwrap();
        assert_eq!(last["error"]["code"], "stream_cut");
        assert!(!ev.iter().any(|e| e == "[DONE]"));
    }

    /// A failed route answers OpenAI's error body with its status, and
    /// tells SDKs not to retry what the router already retried.
    #[tokio::test]
    async fn a_failed_route_is_an_openai_error_with_its_status() {
        let leaf = service_fn(|_: AttemptRequest| async {
            Err::<ProviderResponse, _>(ProviderError::new(Failure::Server { status: 503 }, "down"))
        });
        let route = Arc::new(Route::fallback(
            "r",
            vec![Candidate::new(
                Arc::new(Target::new("p", "m")),
                Duration::from_secs(5),
            )],
        ));
        let result = Fallback::new(leaf)
            .oneshot(RouteRequest::new(chat(false), route))
            .await;
        let resp = into_response(result, false);
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()["x-should-retry"], "false");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "all_attempts_failed");
        assert_eq!(v["error"]["type"], "upstream_error");
    }
}
