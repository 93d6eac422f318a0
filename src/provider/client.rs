//! The pooled HTTP client every adapter shares, and the few helpers that turn
//! its answers into typed outcomes.
//!
//! One client per process keeps connections to each provider warm (TLS
//! handshakes cost more than most completions' first token). `TCP_NODELAY` is
//! set on every upstream socket: an SSE chunk is a few dozen bytes, and
//! Nagle's algorithm would hold each one back waiting for an ACK.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::{Failure, ProviderError};
use crate::sse::{SseEvent, SseStream, SseStreamError};

/// The hyper client behind an [`HttpClient`].
type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The pooled HTTP client the adapters share: a cheap handle (clones share
/// the connection pools). `https://` uses rustls and the webpki roots.
///
/// Providers are spoken to over HTTP/1.1 unless their config sets `http2`.
/// Why: an HTTP/2 connection carries at most the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS` streams at once (often 100 to 256), and
/// the pool keeps one HTTP/2 connection per host, so request 257 would wait
/// in the client's queue until a stream ends. LLM streams last seconds to
/// minutes, so that wait turns into attempt timeouts under load. HTTP/1.1
/// opens a connection per concurrent request instead, which is also what the
/// providers' official SDKs do by default. With `http2` set, `https://`
/// negotiates HTTP/2 through ALPN (falling back to HTTP/1.1) and `http://`
/// speaks HTTP/2 with prior knowledge (h2c): far fewer connections and less
/// memory per stream, for providers whose stream limit is known to be high
/// enough.
///
/// ```
/// let client = modelux::provider::http_client();
/// assert!(!client.uses_http2());
/// assert!(client.with_http2(true).uses_http2());
/// ```
#[derive(Clone, Debug)]
pub struct HttpClient {
    pools: std::sync::Arc<Pools>,
    http2: bool,
}

#[derive(Debug)]
struct Pools {
    /// HTTP/1.1 only (ALPN offers only `http/1.1`).
    http1: Pool,
    /// ALPN `h2`, then `http/1.1`: for `https://` with `http2`.
    alpn: Pool,
    /// HTTP/2 with prior knowledge: for `http://` with `http2`.
    h2c: Pool,
}

impl HttpClient {
    /// A handle on the same pools that speaks HTTP/2 when `on` (see the type's docs).
    pub fn with_http2(&self, on: bool) -> HttpClient {
        HttpClient {
            pools: self.pools.clone(),
            http2: on,
        }
    }

    /// Whether this handle speaks HTTP/2 to providers.
    pub fn uses_http2(&self) -> bool {
        self.http2
    }

    /// Sends any request through the pools (what the adapters use; also
    /// handy for a tool that talks to the gateway itself).
    pub fn request(&self, req: Request<Full<Bytes>>) -> hyper_util::client::legacy::ResponseFuture {
        self.pool_for(req.uri()).request(req)
    }

    fn pool_for(&self, uri: &http::Uri) -> &Pool {
        match (self.http2, uri.scheme() == Some(&http::uri::Scheme::HTTPS)) {
            (false, _) => &self.pools.http1,
            (true, true) => &self.pools.alpn,
            (true, false) => &self.pools.h2c,
        }
    }
}

/// How long to wait for a TCP connection (and TLS handshake) to a provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest non-streaming response body read from a provider.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Builds the shared client: `TCP_NODELAY`, a 5 s connect timeout, TCP
/// keepalive, and idle pooled connections kept for 90 s; HTTP/1.1 unless a
/// handle is switched with [`HttpClient::with_http2`].
///
/// ```
/// let client = modelux::provider::http_client();
/// # let _ = client;
/// ```
pub fn http_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_keepalive(Some(Duration::from_secs(30)));
    http.enforce_http(false);
    let tls = || {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("the ring provider supports the default TLS versions")
            .https_or_http()
    };
    let pool = || {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024);
        b
    };
    HttpClient {
        pools: std::sync::Arc::new(Pools {
            http1: pool().build(tls().enable_http1().wrap_connector(http.clone())),
            alpn: pool().build(tls().enable_all_versions().wrap_connector(http.clone())),
            h2c: pool()
                .http2_only(true)
                .build(tls().enable_all_versions().wrap_connector(http)),
        }),
        http2: false,
    }
}

/// Sends a request; a transport failure before the response head is a
/// [`Failure::Connect`].
pub(crate) async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, ProviderError> {
    client.request(req).await.map_err(|e| {
        let what = if e.is_connect() {
            "could not connect to the provider"
        } else {
            "the connection closed before the provider answered"
        };
        ProviderError::new(Failure::Connect, what)
    })
}

/// POSTs a JSON body and returns a successful response: sets the content
/// type (and `accept: text/event-stream` for streams), classifies a
/// non-success answer through the adapter's `refine`, and refuses a "stream"
/// that is not an event stream. `http` carries the URI and auth headers.
pub(crate) async fn post_json(
    client: &HttpClient,
    http: http::request::Builder,
    body: Vec<u8>,
    stream: bool,
    refine: impl FnOnce(StatusCode, &[u8], ProviderError) -> ProviderError,
) -> Result<Response<Incoming>, ProviderError> {
    let mut http = http
        .method(http::Method::POST)
        .header(http::header::CONTENT_TYPE, "application/json");
    if stream {
        http = http.header(http::header::ACCEPT, "text/event-stream");
    }
    let req = http.body(Full::new(Bytes::from(body))).map_err(|_| {
        ProviderError::new(
            Failure::Client { status: 400 },
            "invalid provider URL, model name or key",
        )
    })?;
    let resp = send(client, req).await?;
    if !resp.status().is_success() {
        return Err(error_response(resp, refine).await);
    }
    if stream && !is_event_stream(&resp) {
        return Err(ProviderError::new(
            Failure::Malformed,
            "asked for a stream, got a response that is not text/event-stream",
        ));
    }
    Ok(resp)
}

/// Reads a whole response body, bounded by [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ProviderError> {
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ProviderError::new(
            Failure::Malformed,
            "provider response larger than the limit",
        )),
        Err(_) => Err(ProviderError::new(
            Failure::Connect,
            "the connection closed while reading the response",
        )),
    }
}

/// Reads an error response and classifies it: `parse` pulls the provider's
/// message and error type out of its own error JSON and may refine the
/// failure (context length, content policy, overload).
pub(crate) async fn error_response(
    resp: Response<Incoming>,
    refine: impl FnOnce(StatusCode, &[u8], ProviderError) -> ProviderError,
) -> ProviderError {
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let base = ProviderError::from_status(parts.status, &parts.headers, String::new());
    let mut err = refine(parts.status, &body, base);
    if err.message.is_empty() {
        err.message = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    }
    if err.failure == (Failure::Client { status: 400 }) && rejects_prefill(&err.message) {
        err.failure = Failure::PrefillUnsupported;
    }
    err
}

/// Whether a 400's message says the model does not accept a trailing
/// assistant message (Anthropic's newer models say "does not support
/// assistant message prefill"; other servers word it alike).
fn rejects_prefill(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prefill")
        && (m.contains("not support") || m.contains("unsupported") || m.contains("must end with"))
}

/// Whether a response is an event stream.
pub(crate) fn is_event_stream(resp: &Response<Incoming>) -> bool {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The events of a streaming response body. A body that fails mid-way is a
/// [`Failure::StreamCut`]; broken framing is [`Failure::Malformed`].
pub(crate) fn events(body: Incoming) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send {
    SseStream::new(body).map(|r| {
        r.map_err(|e| match e {
            SseStreamError::Body(_) => {
                ProviderError::new(Failure::StreamCut, "the connection closed mid-stream")
            }
            SseStreamError::Framing(e) => ProviderError::new(Failure::Malformed, e.to_string()),
        })
    })
}

/// Counts and logs a stream event that could not be parsed; the stream goes on.
pub(crate) fn malformed_event(provider: &'static str, err: &serde_json::Error) {
    metrics::counter!("modelux_stream_malformed_events_total", "provider" => provider).increment(1);
    tracing::warn!(provider, error = %err, "skipped a malformed stream event");
}

/// Joins a base URL and a path without doubling or dropping the slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    let mut s = String::with_capacity(base.len() + path.len() + 1);
    s.push_str(base.trim_end_matches('/'));
    if !path.starts_with('/') {
        s.push('/');
    }
    s.push_str(path);
    s
}
