//! The pooled HTTP client every adapter shares, and the few helpers that turn
//! its answers into typed outcomes.
//!
//! One client per process keeps connections to each provider warm (TLS
//! handshakes cost more than most completions' first token). `TCP_NODELAY` is
//! set on every upstream socket: an SSE chunk is a few dozen bytes, and
//! Nagle's algorithm would hold each one back waiting for an ACK.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{self, connect::HttpConnector, Client};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

use super::egress::{self, Bounded, Egress, Proxies};
use super::http2::{Hosts, Lease, MakePool};
use super::{Failure, ProviderError};
use crate::sse::{SseEvent, SseStream, SseStreamError};

/// The hyper client behind an [`HttpClient`].
pub(super) type Pool = Client<Bounded<HttpsConnector<Egress>>, Full<Bytes>>;

/// The pooled HTTP client the adapters share: a cheap handle (clones share
/// the connection pools). `https://` uses rustls and the webpki roots.
///
/// Providers are spoken to over HTTP/1.1 unless their config sets `http2`:
/// one connection per concurrent request, pooled and reused, which is also
/// what the providers' official SDKs do by default. With `http2`, `https://`
/// negotiates HTTP/2 through ALPN (falling back to HTTP/1.1) and `http://`
/// speaks HTTP/2 with prior knowledge (h2c): far fewer connections and less
/// memory per stream. One HTTP/2 connection carries at most
/// [`with_http2_max_streams`](HttpClient::with_http2_max_streams) streams
/// (default [`DEFAULT_HTTP2_MAX_STREAMS`]); past that the client opens
/// another connection to the host rather than queueing the request behind
/// streams that may last minutes (up to 256 connections per host).
///
/// ```
/// let client = modelux::provider::http_client();
/// assert!(!client.uses_http2());
/// let h2 = client.with_http2(true).with_http2_max_streams(128);
/// assert!(h2.uses_http2());
/// assert_eq!(h2.http2_max_streams(), 128);
/// ```
#[derive(Clone, Debug)]
pub struct HttpClient {
    pools: std::sync::Arc<Pools>,
    http2: bool,
    http2_max_streams: u32,
}

#[derive(Debug)]
struct Pools {
    /// HTTP/1.1 only (ALPN offers only `http/1.1`).
    http1: Pool,
    /// ALPN `h2`, then `http/1.1`: for `https://` with `http2`.
    alpn: Hosts,
    /// HTTP/2 with prior knowledge: for `http://` with `http2`.
    h2c: Hosts,
    /// Whether some destination goes through a proxy.
    proxied: bool,
    /// See [`HttpClient::proxy_description`].
    proxy_description: Option<String>,
}

/// Concurrent streams one HTTP/2 connection to a provider carries before
/// the client opens another (a provider's `http2_max_streams` by default).
/// Servers announce 100 to 256; 100 is what RFC 9113 recommends as the least
/// a server should allow.
///
/// ```
/// let c = modelux::provider::http_client();
/// assert_eq!(c.http2_max_streams(), modelux::provider::DEFAULT_HTTP2_MAX_STREAMS);
/// ```
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 100;

impl HttpClient {
    /// A handle on the same pools that speaks HTTP/2 when `on` (see the type's docs).
    ///
    /// ```
    /// let client = modelux::provider::http_client();
    /// let h2 = client.with_http2(true);
    /// assert!(h2.uses_http2());
    /// // A new handle: the one it came from still speaks HTTP/1.1.
    /// assert!(!client.uses_http2());
    /// assert!(!h2.with_http2(false).uses_http2());
    /// ```
    pub fn with_http2(&self, on: bool) -> HttpClient {
        HttpClient {
            http2: on,
            ..self.clone()
        }
    }

    /// A handle on the same pools whose HTTP/2 connections each carry at
    /// most `max` concurrent streams (at least 1) before another connection
    /// opens: set it to the provider's `SETTINGS_MAX_CONCURRENT_STREAMS` or
    /// below. Only HTTP/2 requests use it.
    ///
    /// ```
    /// let client = modelux::provider::http_client().with_http2(true);
    /// assert_eq!(client.http2_max_streams(), modelux::provider::DEFAULT_HTTP2_MAX_STREAMS);
    /// assert_eq!(client.with_http2_max_streams(0).http2_max_streams(), 1);
    /// ```
    pub fn with_http2_max_streams(&self, max: u32) -> HttpClient {
        HttpClient {
            http2_max_streams: max.max(1),
            ..self.clone()
        }
    }

    /// Whether this handle speaks HTTP/2 to providers.
    ///
    /// ```
    /// let client = modelux::provider::http_client();
    /// // HTTP/1.1 by default, as the providers' SDKs do.
    /// assert!(!client.uses_http2());
    /// assert!(client.with_http2(true).uses_http2());
    /// ```
    pub fn uses_http2(&self) -> bool {
        self.http2
    }

    /// The most concurrent streams this handle puts on one HTTP/2 connection.
    ///
    /// ```
    /// use modelux::provider::{http_client, DEFAULT_HTTP2_MAX_STREAMS};
    /// let client = http_client().with_http2(true);
    /// assert_eq!(client.http2_max_streams(), DEFAULT_HTTP2_MAX_STREAMS);
    /// assert_eq!(client.with_http2_max_streams(250).http2_max_streams(), 250);
    /// ```
    pub fn http2_max_streams(&self) -> u32 {
        self.http2_max_streams
    }

    /// Sends any request through the pools (what the adapters use; also
    /// handy for a tool that talks to the gateway itself). Over HTTP/2 the
    /// request holds its place on a connection until the response body is
    /// dropped.
    ///
    /// ```
    /// # #[cfg(feature = "mock")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::{BodyExt, Full};
    /// let mock = modelux::mock::MockProvider::start().await.unwrap();
    /// let client = modelux::provider::http_client().with_http2(true);
    /// let req = http::Request::post(format!("{}/chat/completions", mock.openai_url()))
    ///     .header("content-type", "application/json")
    ///     .body(Full::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
    ///     .unwrap();
    /// let resp = client.request(req).await.unwrap();
    /// assert_eq!(resp.version(), http::Version::HTTP_2);
    /// let body = resp.into_body().collect().await.unwrap().to_bytes();
    /// assert!(body.starts_with(b"{"));
    /// # }
    /// # #[cfg(not(feature = "mock"))]
    /// # fn main() {}
    /// ```
    pub fn request(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        let (inner, lease) = match (self.http2, req.uri().scheme() == Some(&Scheme::HTTPS)) {
            (false, _) => (self.pools.http1.request(req), None),
            (true, https) => {
                let hosts = if https {
                    &self.pools.alpn
                } else {
                    &self.pools.h2c
                };
                let authority = req.uri().authority().map_or("", |a| a.as_str());
                let lease = hosts.lease(authority, self.http2_max_streams);
                (lease.pool().request(req), Some(lease))
            }
        };
        ResponseFuture { inner, lease }
    }

    #[cfg(test)]
    pub(super) fn http1_pool(&self) -> &Pool {
        &self.pools.http1
    }
}

/// The future of [`HttpClient::request`]: the response head, with a body
/// that keeps the request's place on an HTTP/2 connection.
///
/// ```
/// # #[cfg(feature = "mock")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = modelux::mock::MockProvider::start().await.unwrap();
/// let req = http::Request::get(format!("{}/_mock/requests", mock.url()))
///     .body(http_body_util::Full::default())
///     .unwrap();
/// let pending: modelux::provider::ResponseFuture = modelux::provider::http_client().request(req);
/// assert_eq!(pending.await.unwrap().status(), 200);
/// # }
/// # #[cfg(not(feature = "mock"))]
/// # fn main() {}
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: legacy::ResponseFuture,
    lease: Option<Lease>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<UpstreamBody>, legacy::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = ready!(Pin::new(&mut self.inner).poll(cx))?;
        let lease = self.lease.take();
        Poll::Ready(Ok(resp.map(|body| UpstreamBody {
            body,
            _lease: lease,
        })))
    }
}

/// A provider's response body: hyper's body, plus (over HTTP/2) the place
/// on a connection its stream holds, given back when the body is dropped.
///
/// ```
/// # #[cfg(feature = "mock")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http_body_util::BodyExt;
/// let mock = modelux::mock::MockProvider::start().await.unwrap();
/// let req = http::Request::get(format!("{}/_mock/requests", mock.url()))
///     .body(http_body_util::Full::default())
///     .unwrap();
/// let resp = modelux::provider::http_client().request(req).await.unwrap();
/// let body: modelux::provider::UpstreamBody = resp.into_body();
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "[]");
/// # }
/// # #[cfg(not(feature = "mock"))]
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct UpstreamBody {
    body: Incoming,
    _lease: Option<Lease>,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How long to wait for a TCP connection (and TLS handshake) to a provider.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(modelux::provider::CONNECT_TIMEOUT, Duration::from_secs(5));
/// ```
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest non-streaming response body read from a provider.
///
/// ```
/// assert_eq!(modelux::provider::MAX_RESPONSE_BYTES, 32 * 1024 * 1024);
/// ```
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long an HTTP/2 connection to a provider may stay silent before the
/// client sends it a PING. Requests share one HTTP/2 connection, so a
/// connection a NAT or load balancer dropped without a reset would take
/// every request put on it into its attempt timeout until the kernel gave up
/// retransmitting (about 15 minutes); TCP keepalive never fires while
/// requests keep unacknowledged data in flight.
///
/// ```
/// use modelux::provider::{HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT};
/// // A dead connection is found within half a minute of going silent.
/// assert!(HTTP2_KEEPALIVE_INTERVAL + HTTP2_KEEPALIVE_TIMEOUT <= std::time::Duration::from_secs(30));
/// ```
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// How long a PING may go unanswered before the HTTP/2 connection is closed
/// (its streams fail as connection errors) and the next request opens a new one.
///
/// ```
/// assert_eq!(modelux::provider::HTTP2_KEEPALIVE_TIMEOUT.as_secs(), 10);
/// ```
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the shared client: `TCP_NODELAY`, a 5 s connect timeout, TCP
/// keepalive, idle pooled connections kept for 90 s, and HTTP/2 connections
/// pinged after [`HTTP2_KEEPALIVE_INTERVAL`] of silence (closed when a ping
/// goes unanswered for [`HTTP2_KEEPALIVE_TIMEOUT`]); HTTP/1.1 unless a
/// handle is switched with [`HttpClient::with_http2`].
///
/// It tunnels through the proxy the environment names (`HTTPS_PROXY`,
/// `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`), as the providers' SDKs do, and
/// trusts the Mozilla roots (webpki-roots). A proxy variable it cannot use
/// (a `socks5://` URL, say) is logged as a warning and ignored; build with
/// [`HttpClient::builder`] to have it refused instead, to set a proxy or
/// extra trusted roots of one's own, or to never use a proxy.
///
/// ```
/// let client = modelux::provider::http_client();
/// # let _ = client;
/// ```
pub fn http_client() -> HttpClient {
    let lenient = HttpClientBuilder {
        lenient: true,
        ..HttpClient::builder()
    };
    lenient.build().unwrap_or_else(|e| {
        // Not reached: a lenient build leaves out what it cannot use.
        tracing::warn!(problem = %e, "ignoring the proxy environment: it cannot be used");
        HttpClient::builder()
            .direct()
            .build()
            .expect("a client without a proxy always builds")
    })
}

/// Where the client's proxy comes from.
#[derive(Clone)]
enum ProxySetting {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY` (upper or lower case).
    Env,
    /// One proxy for every scheme.
    Url(String),
    /// No proxy at all.
    Direct,
}

/// Builds an [`HttpClient`] with a proxy or trusted roots of one's own; see
/// [`http_client`] for what every client does.
///
/// ```
/// use modelux::provider::HttpClient;
/// let client = HttpClient::builder()
///     .proxy("http://egress.internal:3128")?
///     .no_proxy("llm.internal, 10.0.0.0/8")
///     .build()?;
/// assert!(client.uses_proxy());
/// assert!(!HttpClient::builder().direct().build()?.uses_proxy());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct HttpClientBuilder {
    proxy: ProxySetting,
    no_proxy: Option<String>,
    roots: Vec<CertificateDer<'static>>,
    connect_timeout: Duration,
    /// A proxy variable that cannot be used is left out with a warning
    /// instead of failing the build (what [`http_client`] does).
    lenient: bool,
}

impl std::fmt::Debug for HttpClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proxy = match &self.proxy {
            ProxySetting::Env => "from the environment".to_owned(),
            ProxySetting::Url(url) => egress::redact_proxy_url(url),
            ProxySetting::Direct => "none".to_owned(),
        };
        f.debug_struct("HttpClientBuilder")
            .field("proxy", &proxy)
            .field("no_proxy", &self.no_proxy)
            .field("extra_roots", &self.roots.len())
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// A PEM bundle of trusted roots that cannot be used.
///
/// ```
/// let err = modelux::provider::HttpClient::builder()
///     .add_root_certificates_pem(b"not a certificate")
///     .unwrap_err();
/// assert!(err.to_string().contains("no certificate"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateError(String);

impl std::fmt::Display for CertificateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertificateError {}

impl HttpClient {
    /// A builder for a client of one's own: the environment's proxy and
    /// the Mozilla roots unless told otherwise.
    ///
    /// ```
    /// let client = modelux::provider::HttpClient::builder().direct().build().unwrap();
    /// assert!(!client.uses_proxy());
    /// ```
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder {
            proxy: ProxySetting::Env,
            no_proxy: None,
            roots: Vec::new(),
            connect_timeout: CONNECT_TIMEOUT,
            lenient: false,
        }
    }

    /// What the client's proxy setting came to, for a log line: each
    /// scheme's proxy (its credentials as `***`) and the variable it came
    /// from, and `NO_PROXY`; `None` without a proxy.
    ///
    /// ```
    /// let c = modelux::provider::HttpClient::builder()
    ///     .proxy("http://ops:pw@egress:3128").unwrap()
    ///     .no_proxy("llm.internal")
    ///     .build().unwrap();
    /// let d = c.proxy_description().unwrap();
    /// assert_eq!(d, "https: http://***@egress:3128 (proxy); http: http://***@egress:3128 (proxy); no_proxy: llm.internal");
    /// ```
    pub fn proxy_description(&self) -> Option<&str> {
        self.pools.proxy_description.as_deref()
    }

    /// Whether some destination is reached through a proxy.
    ///
    /// ```
    /// let c = modelux::provider::HttpClient::builder().proxy("proxy:3128").unwrap().build().unwrap();
    /// assert!(c.uses_proxy());
    /// ```
    pub fn uses_proxy(&self) -> bool {
        self.pools.proxied
    }
}

impl HttpClientBuilder {
    /// Tunnels every destination (but loopback and those
    /// [`no_proxy`](Self::no_proxy) lists) through the proxy at `url`:
    /// `http://[user:password@]host:port`, or `https://` for TLS to the
    /// proxy itself. The credentials are sent as `Proxy-Authorization:
    /// Basic` and never logged.
    ///
    /// ```
    /// use modelux::provider::HttpClient;
    /// assert!(HttpClient::builder().proxy("http://ops:pw@egress:3128").is_ok());
    /// assert!(HttpClient::builder().proxy("socks5://egress:1080").is_err());
    /// ```
    pub fn proxy(mut self, url: &str) -> Result<Self, egress::ProxyError> {
        egress::check_proxy_url("proxy", url)?;
        self.proxy = ProxySetting::Url(url.trim().to_owned());
        Ok(self)
    }

    /// The destinations reached directly, with curl's `NO_PROXY` rules:
    /// comma-separated domains (each with its subdomains), IP addresses and
    /// CIDR ranges, or `*` for all. Replaces the environment's `NO_PROXY`.
    ///
    /// ```
    /// let c = modelux::provider::HttpClient::builder()
    ///     .proxy("http://egress:3128")
    ///     .unwrap()
    ///     .no_proxy("llm.internal, *")
    ///     .build()
    ///     .unwrap();
    /// assert!(!c.uses_proxy(), "`*`: every destination directly, host names and IP addresses");
    /// ```
    pub fn no_proxy(mut self, list: &str) -> Self {
        self.no_proxy = Some(list.to_owned());
        self
    }

    /// Never uses a proxy, whatever the environment says.
    ///
    /// ```
    /// let c = modelux::provider::HttpClient::builder().direct().build().unwrap();
    /// assert!(!c.uses_proxy());
    /// ```
    pub fn direct(mut self) -> Self {
        self.proxy = ProxySetting::Direct;
        self
    }

    /// Also trusts the certificates in `pem` (one or more `BEGIN
    /// CERTIFICATE` blocks): a company's own CA, for a TLS-inspecting proxy
    /// or a provider endpoint behind an internal load balancer. The Mozilla
    /// roots stay trusted.
    ///
    /// ```
    /// let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    /// let err = modelux::provider::HttpClient::builder().add_root_certificates_pem(pem).unwrap_err();
    /// assert!(err.to_string().starts_with("certificate 1"), "{err}");
    /// ```
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, CertificateError> {
        use rustls::pki_types::pem::PemObject;
        let mut found = 0;
        for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let cert = cert.map_err(|e| CertificateError(format!("certificate {}: {e}", i + 1)))?;
            let mut check = rustls::RootCertStore::empty();
            check
                .add(cert.clone())
                .map_err(|e| CertificateError(format!("certificate {}: {e}", i + 1)))?;
            self.roots.push(cert);
            found += 1;
        }
        if found == 0 {
            return Err(CertificateError(
                "no certificate found (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        Ok(self)
    }

    /// How long connecting may take in all: TCP, the proxy's tunnel and the
    /// TLS handshake ([`CONNECT_TIMEOUT`] by default).
    ///
    /// ```
    /// let b = modelux::provider::HttpClient::builder().connect_timeout(std::time::Duration::from_secs(2));
    /// # let _ = b;
    /// ```
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// The client. Fails only when the environment names a proxy that
    /// cannot be used (the message names the variable, never its
    /// credentials).
    ///
    /// ```
    /// let client = modelux::provider::HttpClient::builder().build();
    /// assert!(client.is_ok() || std::env::var_os("HTTPS_PROXY").is_some());
    /// ```
    pub fn build(self) -> Result<HttpClient, egress::ProxyError> {
        let proxies = self.proxies()?;
        Ok(HttpClient::from_parts(
            proxies,
            &self.roots,
            self.connect_timeout,
        ))
    }

    fn proxies(&self) -> Result<Proxies, egress::ProxyError> {
        let env = |names: [&'static str; 2]| {
            names.into_iter().find_map(|n| {
                std::env::var(n)
                    .ok()
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .map(|v| (n, v))
            })
        };
        // Once per process, not per client built.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let warn = |e: &egress::ProxyError| {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(problem = %e, "ignoring a proxy variable that cannot be used: set HTTPS_PROXY (and HTTP_PROXY) for the providers to an http:// or https:// proxy");
            }
        };
        // (the URL, where it came from) per scheme.
        let (https, http, no_proxy) = match &self.proxy {
            ProxySetting::Direct => return Ok(Proxies::none()),
            ProxySetting::Url(url) => {
                let chosen = Some((url.clone(), "proxy"));
                (chosen.clone(), chosen, None)
            }
            ProxySetting::Env => {
                let usable = |var: Option<(&'static str, String)>, strict: bool| match var {
                    Some((name, url)) => match egress::check_proxy_url(name, &url) {
                        Ok(()) => Ok(Some((url, name))),
                        // ALL_PROXY is a catch-all often set for other
                        // tools (a `socks5://` one for git, say): left out
                        // rather than stop a gateway whose HTTPS_PROXY is
                        // fine.
                        Err(e) if !strict || self.lenient => {
                            warn(&e);
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    },
                    None => Ok(None),
                };
                let https = usable(env(["HTTPS_PROXY", "https_proxy"]), true)?;
                let http = usable(env(["HTTP_PROXY", "http_proxy"]), true)?;
                let all = if https.is_none() || http.is_none() {
                    usable(env(["ALL_PROXY", "all_proxy"]), false)?
                } else {
                    None
                };
                (
                    https.or_else(|| all.clone()),
                    http.or(all),
                    env(["NO_PROXY", "no_proxy"]).map(|(_, v)| v),
                )
            }
        };
        if https.is_none() && http.is_none() {
            return Ok(Proxies::none());
        }
        let no_proxy = self.no_proxy.clone().or(no_proxy);
        // `*` reaches every destination directly (curl's rule); hyper-util's
        // matcher applies it to host names only, so a provider given by IP
        // address would still be tunnelled.
        if no_proxy
            .as_deref()
            .is_some_and(|list| list.split(',').any(|e| e.trim() == "*"))
        {
            return Ok(Proxies::none());
        }
        let mut builder = Matcher::builder();
        if let Some((url, _)) = &https {
            builder = builder.https(url.as_str());
        }
        if let Some((url, _)) = &http {
            builder = builder.http(url.as_str());
        }
        if let Some(list) = &no_proxy {
            builder = builder.no(list.as_str());
        }
        let shown = |chosen: &Option<(String, &str)>| match chosen {
            Some((url, from)) => format!("{} ({from})", egress::redact_proxy_url(url)),
            None => "direct".to_owned(),
        };
        let mut description = format!("https: {}; http: {}", shown(&https), shown(&http));
        if let Some(list) = &no_proxy {
            description.push_str("; no_proxy: ");
            description.push_str(list);
        }
        Ok(Proxies::from_matcher(builder.build(), description))
    }
}

impl HttpClient {
    fn from_parts(
        proxies: Proxies,
        extra_roots: &[CertificateDer<'static>],
        connect_timeout: Duration,
    ) -> HttpClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(30)));
        http.enforce_http(false);
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        roots.add_parsable_certificates(extra_roots.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = || {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config.clone())
                .https_or_http()
        };
        let proxied = proxies.any();
        let proxy_description = proxies.description().map(str::to_owned);
        let egress = Egress::new(http, &config, proxies);
        let connector = |https: HttpsConnector<Egress>| Bounded::new(https, connect_timeout);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(1024)
            // Drives the pool's idle reaper: without it `IDLE_TIMEOUT` is
            // only checked when a request next picks a connection, and after
            // a burst hundreds of idle sockets stayed open for as long as
            // the provider kept them.
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
            .http2_keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true);
        let http1 = builder.build(connector(
            tls().enable_http1().wrap_connector(egress.clone()),
        ));
        let all_versions = connector(tls().enable_all_versions().wrap_connector(egress));
        let alpn: MakePool = {
            let (builder, connector) = (builder.clone(), all_versions.clone());
            std::sync::Arc::new(move || builder.build(connector.clone()))
        };
        let h2c: MakePool = {
            let mut builder = builder.clone();
            builder.http2_only(true);
            std::sync::Arc::new(move || builder.build(all_versions.clone()))
        };
        HttpClient {
            pools: std::sync::Arc::new(Pools {
                http1,
                alpn: Hosts::new(alpn),
                h2c: Hosts::new(h2c),
                proxied,
                proxy_description,
            }),
            http2: false,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
        }
    }
}

/// Sends a request; a transport failure before the response head is a
/// [`Failure::Connect`].
pub(crate) async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> Result<Response<UpstreamBody>, ProviderError> {
    client.request(req).await.map_err(|e| {
        if e.is_connect() {
            ProviderError::new(Failure::Connect, egress::describe(&e))
        } else {
            ProviderError::new(
                Failure::Connect,
                "the connection closed before the provider answered",
            )
        }
    })
}

/// Headers an adapter sets itself, or that would break how the answer is
/// read: extra headers ([`Provider::with_headers`](super::Provider::with_headers),
/// a provider's `headers` in the config) never replace or repeat them.
///
/// ```
/// assert!(modelux::provider::RESERVED_HEADERS.contains(&"x-api-key"));
/// ```
pub const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "anthropic-version",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "accept",
    "accept-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "expect",
];

/// Where an adapter sends its requests: the URI and the headers every request
/// carries (the key, an API version), parsed and validated once when the
/// adapter is built instead of on every request, where parsing a URI and
/// checking a header name and value cost a few thousand instructions.
/// Secret values are marked sensitive, so HTTP/2's header compression never
/// indexes them and their `Debug` prints `Sensitive`.
///
/// A URL or a header value that cannot be sent is kept as such: every request
/// then fails with [`invalid_request`], as a per-request parse did.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    uri: Option<Uri>,
    headers: Option<Vec<(HeaderName, HeaderValue)>>,
    /// The sensitive values among `headers` (the key, a `headers_env`
    /// value): what an error from the provider is scrubbed of.
    secrets: Secrets,
}

/// The secret header values of an endpoint, shared: every request's error
/// path holds a refcount on them, not a copy.
pub(crate) type Secrets = std::sync::Arc<[HeaderValue]>;

impl Endpoint {
    /// An endpoint at `url` with no headers yet.
    pub(crate) fn new(url: &str) -> Endpoint {
        Endpoint {
            uri: Uri::try_from(url).ok(),
            headers: Some(Vec::new()),
            secrets: Secrets::from([]),
        }
    }

    /// Adds a header every request carries.
    pub(crate) fn header(self, name: HeaderName, value: &str) -> Endpoint {
        self.push(name, HeaderValue::try_from(value).ok())
    }

    /// Adds a header that carries a secret (marked sensitive).
    pub(crate) fn secret(self, name: HeaderName, value: String) -> Endpoint {
        let value = HeaderValue::try_from(value).ok().map(|mut v| {
            v.set_sensitive(true);
            v
        });
        self.push(name, value)
    }

    fn push(mut self, name: HeaderName, value: Option<HeaderValue>) -> Endpoint {
        if let Some(v) = value
            .as_ref()
            .filter(|v| v.is_sensitive() && !self.secrets.contains(v))
        {
            self.secrets = self.secrets.iter().chain([v]).cloned().collect();
        }
        self.headers = match (self.headers, value) {
            (Some(mut headers), Some(value)) => {
                // One value per name: headers given again replace.
                headers.retain(|(n, _)| *n != name);
                headers.push((name, value));
                Some(headers)
            }
            _ => None,
        };
        self
    }

    /// Adds `extra`'s headers but those in [`RESERVED_HEADERS`], which the
    /// adapter sets itself.
    pub(crate) fn extra(mut self, extra: &http::HeaderMap) -> Endpoint {
        for (name, value) in extra {
            if !RESERVED_HEADERS.contains(&name.as_str()) {
                self = self.push(name.clone(), Some(value.clone()));
            }
        }
        self
    }

    /// The values of the headers that carry secrets (the key, a
    /// `headers_env` value): what an error from the provider is scrubbed
    /// of ([`Scrubbed`], [`scrub_error`]). A refcount, not a copy.
    pub(crate) fn secrets(&self) -> Secrets {
        self.secrets.clone()
    }

    /// A request to this endpoint's URI with its headers.
    pub(crate) fn request(&self) -> Result<http::request::Builder, ProviderError> {
        let uri = self.uri.clone().ok_or_else(invalid_request)?;
        self.request_to(uri)
    }

    /// A request to `uri` (for a provider whose path names the model) with
    /// this endpoint's headers.
    pub(crate) fn request_to<U>(&self, uri: U) -> Result<http::request::Builder, ProviderError>
    where
        Uri: TryFrom<U>,
    {
        let headers = self.headers.as_ref().ok_or_else(invalid_request)?;
        let uri = Uri::try_from(uri).map_err(|_| invalid_request())?;
        let mut http = Request::builder().uri(uri);
        if let Some(h) = http.headers_mut() {
            h.extend(headers.iter().map(|(n, v)| (n.clone(), v.clone())));
        }
        Ok(http)
    }
}

/// `value` serialised into a buffer sized for `chat` up front: the body of
/// an upstream request is mostly the client's messages, and
/// `serde_json::to_vec` would start at 128 bytes and grow (two or three
/// reallocations for a typical request).
pub(crate) fn json_body<T: serde::Serialize>(value: &T, chat: &crate::api::ChatRequest) -> Vec<u8> {
    let text: usize = chat
        .messages
        .iter()
        .map(|m| match &m.content {
            Some(crate::api::Content::Text(t)) => t.len(),
            Some(crate::api::Content::Parts(p)) => 128 * p.len(),
            None => 0,
        })
        .sum();
    let mut out = Vec::with_capacity(256 + 64 * chat.messages.len() + text + text / 8);
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// The error of a request that cannot be built from the provider's URL, the
/// model name or the key: the gateway's own configuration, not the client's
/// request, so the target is refused and the next candidate tried (a 502
/// when none is left), instead of a 400 blaming the client.
pub(crate) fn invalid_request() -> ProviderError {
    ProviderError::new(
        Failure::TargetRefused { status: 400 },
        "the gateway cannot build a request to this provider: invalid provider URL, model name or key",
    )
}

/// POSTs a JSON body and returns a successful response: sets the content
/// type (and `accept: text/event-stream` for streams), classifies a
/// non-success answer through the adapter's `refine`, and refuses a "stream"
/// that is not an event stream. `http` carries the URI and auth headers
/// (from an [`Endpoint`]).
pub(crate) async fn post_json(
    client: &HttpClient,
    http: http::request::Builder,
    body: Vec<u8>,
    stream: bool,
    refine: impl FnOnce(StatusCode, &[u8], ProviderError) -> ProviderError,
    secrets: &[HeaderValue],
) -> Result<Response<UpstreamBody>, ProviderError> {
    let mut http = http
        .method(http::Method::POST)
        .header(http::header::CONTENT_TYPE, "application/json");
    if stream {
        http = http.header(http::header::ACCEPT, "text/event-stream");
    }
    let req = http
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| invalid_request())?;
    let resp = send(client, req).await?;
    if !resp.status().is_success() {
        return Err(error_response(resp, refine, secrets).await);
    }
    if stream && !is_event_stream(&resp) {
        return Err(ProviderError::new(
            Failure::Malformed,
            "asked for a stream, got a response that is not text/event-stream",
        ));
    }
    Ok(resp)
}

/// One attempt of an adapter, from its request to its answer: POSTs `body`
/// (see [`post_json`]), then reads the answer as a stream with `stream_of`
/// or whole with `whole`. Every error, those inside the stream and those a
/// 200 carries too, is scrubbed of the endpoint's `secrets`: the provider's
/// words, or a proxy's in front of it, may quote the request's credentials.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn exchange<S>(
    client: &HttpClient,
    http: Result<http::request::Builder, ProviderError>,
    body: Vec<u8>,
    stream: bool,
    refine: impl FnOnce(StatusCode, &[u8], ProviderError) -> ProviderError,
    secrets: Secrets,
    stream_of: impl FnOnce(UpstreamBody) -> S,
    whole: impl FnOnce(Bytes) -> Result<super::Completion, ProviderError>,
) -> Result<super::ProviderResponse, ProviderError>
where
    S: Stream<Item = Result<super::Chunk, ProviderError>> + Send + 'static,
{
    let answer = async {
        let resp = post_json(client, http?, body, stream, refine, &secrets).await?;
        if stream {
            Ok(super::ProviderResponse::Stream(Box::pin(Scrubbed::new(
                stream_of(resp.into_body()),
                secrets.clone(),
            ))))
        } else {
            whole(read_body(resp.into_body()).await?).map(super::ProviderResponse::Complete)
        }
    };
    answer.await.map_err(|e| scrub_error(e, &secrets))
}

/// Reads a whole response body, bounded by [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_body(body: UpstreamBody) -> Result<Bytes, ProviderError> {
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
    resp: Response<UpstreamBody>,
    refine: impl FnOnce(StatusCode, &[u8], ProviderError) -> ProviderError,
    secrets: &[HeaderValue],
) -> ProviderError {
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    classify_error(&parts, &body, refine, secrets)
}

/// [`error_response`] once its body (the first 64 KiB) is read.
fn classify_error(
    parts: &http::response::Parts,
    body: &[u8],
    refine: impl FnOnce(StatusCode, &[u8], ProviderError) -> ProviderError,
    secrets: &[HeaderValue],
) -> ProviderError {
    let base = ProviderError::from_status(parts.status, &parts.headers, String::new());
    let mut err = refine(parts.status, body, base);
    if let Failure::TargetRefused { status: 401 | 403 } = err.failure {
        // The provider's text may quote the key it refused (OpenAI's "Incorrect
        // API key provided: sk-proj-****abcd"): it goes nowhere, not to the
        // client, a trace or a log. The status named is the one the provider
        // sent (Gemini refuses a key with a 400).
        let status = parts.status.as_u16();
        err.message =
            format!("{REFUSED_CREDENTIALS} (HTTP {status}): check this provider's api_key");
    }
    // A body that is not the provider's error JSON is the message, cut to
    // 512 bytes, but only after the key is scrubbed from all of it: a cut
    // through the key would leave all but its last characters unmatched.
    let raw = err.message.is_empty();
    if raw {
        err.message = String::from_utf8_lossy(body).into_owned();
    }
    if err.failure == (Failure::Client { status: 400 }) && rejects_prefill(&err.message) {
        err.failure = Failure::PrefillUnsupported;
    }
    for secret in secrets {
        err.message = scrub_key(err.message, secret);
    }
    if raw {
        let mut end = err.message.len().min(512);
        while !err.message.is_char_boundary(end) {
            end -= 1;
        }
        err.message.truncate(end);
    }
    err.message = super::error::capped(err.message);
    err
}

/// `err` with the gateway's key (the value of `key`, the endpoint's
/// sensitive header) replaced by `***` in its message, and a refused key's
/// text replaced as [`error_response`] does. Every adapter passes every
/// error through this, those that arrive inside a 200 (an in-stream error
/// event, Gemini's error body with a 200) too: the provider's words, or a
/// proxy's in front of it, may quote the request's credentials, and the
/// message reaches the client, the trace and the logs.
pub(crate) fn scrub_error(mut err: ProviderError, secrets: &[HeaderValue]) -> ProviderError {
    if let Failure::TargetRefused {
        status: status @ (401 | 403),
    } = err.failure
    {
        if !err.message.starts_with(REFUSED_CREDENTIALS) {
            err.message =
                format!("{REFUSED_CREDENTIALS} (HTTP {status}): check this provider's api_key");
        }
    }
    for secret in secrets {
        err.message = scrub_key(err.message, secret);
    }
    err
}

/// How a refused key's error begins, whatever the provider said.
const REFUSED_CREDENTIALS: &str = "the provider refused the gateway's credentials";

pin_project_lite::pin_project! {
    /// An adapter's chunk stream whose errors are passed through
    /// [`scrub_error`]; chunks pass untouched.
    pub(crate) struct Scrubbed<S> {
        #[pin]
        inner: S,
        secrets: Secrets,
    }
}

impl<S> Scrubbed<S> {
    /// `inner`, its errors scrubbed of `secrets`.
    pub(crate) fn new(inner: S, secrets: Secrets) -> Self {
        Scrubbed { inner, secrets }
    }
}

impl<S, T> Stream for Scrubbed<S>
where
    S: Stream<Item = Result<T, ProviderError>>,
{
    type Item = Result<T, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        match ready!(this.inner.poll_next(cx)) {
            Some(Err(e)) => Poll::Ready(Some(Err(scrub_error(e, this.secrets)))),
            other => Poll::Ready(other),
        }
    }
}

/// `message` with the gateway's key in it replaced by `***`: a provider (or
/// a proxy in front of it) that echoes the request's auth header in its
/// error would otherwise put the key in the client's error and the trace.
/// Both the header's value and, for `Bearer <key>`, the key alone.
/// Any run of [`KEY_PREFIX_SHOWN`] or more consecutive characters of the
/// key is masked too, as far as it goes on matching: a proxy that quotes
/// `sk-live-abcdef0123...`, or the key's middle or end. The key is also
/// found JSON-escaped (`sk\u002dlive...`, `sk\/...`), as a raw error body
/// may carry it.
fn scrub_key(message: String, key: &HeaderValue) -> String {
    let Ok(value) = key.to_str() else {
        return message;
    };
    let bare = value.split_once(' ').map_or(value, |(_, k)| k).trim();
    if bare.len() < 8 {
        return message;
    }
    // Only the start of an error's text is kept (2 KiB at most): scanning
    // the rest, a 64 KiB HTML page per failed attempt during an outage,
    // would cost for nothing. The margin covers a key, escaped, that
    // straddles the cut.
    let mut message = message;
    let scan = SCRUB_SCAN_BYTES + 6 * bare.len();
    if message.len() > scan {
        let mut end = scan;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let message = if message.contains(bare) {
        message.replace(value, "***").replace(bare, "***")
    } else {
        message
    };
    mask_key_runs(message, bare.as_bytes())
}

/// `message` with every run of at least [`KEY_PREFIX_SHOWN`] consecutive
/// bytes of `key` (all of it when shorter) replaced by `***`, runs written
/// with JSON escapes included.
///
/// Cost: a run of 12 or more bytes of the key holds one of the key's
/// 6-byte pieces that start at a multiple of 6, so the text is searched for
/// those `key.len() / 6` pieces only, and each hit is extended both ways
/// once per alignment. Callers bound the text (see [`SCRUB_SCAN_BYTES`]).
fn mask_key_runs(message: String, key: &[u8]) -> String {
    let min_run = KEY_PREFIX_SHOWN.min(key.len());
    let piece = (min_run / 2).max(1);
    let (text, raw_at) = unescaped(&message);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    // (text start - key start) of each run found: a later piece of the same
    // run lies on the same diagonal and is not extended again.
    let mut diagonals: Vec<(isize, usize, usize)> = Vec::new();
    let mut from = 0;
    while from + piece <= key.len() {
        for hit in memchr::memmem::find_iter(&text, &key[from..from + piece]) {
            let diagonal = hit as isize - from as isize;
            if diagonals
                .iter()
                .any(|&(d, s, e)| d == diagonal && (s..e).contains(&hit))
            {
                continue;
            }
            let back = text[..hit]
                .iter()
                .rev()
                .zip(key[..from].iter().rev())
                .take_while(|(t, k)| t == k)
                .count();
            let ahead = text[hit..]
                .iter()
                .zip(&key[from..])
                .take_while(|(t, k)| t == k)
                .count();
            let (start, end) = (hit - back, hit + ahead);
            diagonals.push((diagonal, start, end));
            if end - start >= min_run {
                runs.push((start, end));
            }
        }
        from += piece;
    }
    if runs.is_empty() {
        return message;
    }
    runs.sort_unstable();
    let raw = |i: usize| raw_at.as_ref().map_or(i, |at| at[i]);
    let mut out = String::with_capacity(message.len());
    let mut copied = 0;
    for (start, end) in runs {
        let (start, end) = (raw(start), raw(end));
        if end <= copied {
            continue;
        }
        // A run's ends fall on ASCII bytes or escapes: char boundaries.
        if start >= copied {
            out.push_str(&message[copied..start]);
            out.push_str("***");
        }
        copied = end;
    }
    out.push_str(&message[copied..]);
    out
}

/// `message`'s bytes with the JSON escapes a key's characters can take
/// (`\uXXXX` for printable ASCII, `\/`, `\\`, `\"`) decoded and, when
/// there was a backslash, where each decoded byte starts in `message`
/// (with one more entry for the end).
fn unescaped(message: &str) -> (std::borrow::Cow<'_, [u8]>, Option<Vec<usize>>) {
    let raw = message.as_bytes();
    if memchr::memchr(b'\\', raw).is_none() {
        return (raw.into(), None);
    }
    let mut text = Vec::with_capacity(raw.len());
    let mut at = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    while i < raw.len() {
        let (byte, len) = match raw[i..] {
            [b'\\', c @ (b'/' | b'\\' | b'"'), ..] => (c, 2),
            [b'\\', b'u', ref hex @ ..] if hex.len() >= 4 => {
                match std::str::from_utf8(&hex[..4])
                    .ok()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
                {
                    Some(c @ 0x21..=0x7e) => (c as u8, 6),
                    _ => (raw[i], 1),
                }
            }
            _ => (raw[i], 1),
        };
        text.push(byte);
        at.push(i);
        i += len;
    }
    at.push(raw.len());
    (text.into(), Some(at))
}

/// How much of an error's text [`scrub_key`] reads (and keeps): four times
/// what an error's message may keep ([`MAX_MESSAGE_BYTES`](super::error::MAX_MESSAGE_BYTES)).
const SCRUB_SCAN_BYTES: usize = 4 * super::error::MAX_MESSAGE_BYTES;

/// How many consecutive characters of a key may show in an error before
/// they are masked (`sk-proj-` and a few more: what OpenAI's own "Incorrect
/// API key" shows, a prefix and the last four, is less).
const KEY_PREFIX_SHOWN: usize = 12;

/// Whether a 400's message says the model does not accept a trailing
/// assistant message (Anthropic's newer models say "does not support
/// assistant message prefill"; other servers word it alike).
fn rejects_prefill(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prefill")
        && (m.contains("not support") || m.contains("unsupported") || m.contains("must end with"))
}

/// Whether a response is an event stream.
pub(crate) fn is_event_stream(resp: &Response<UpstreamBody>) -> bool {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The events of a streaming response body. A body that fails mid-way is a
/// [`Failure::StreamCut`]; broken framing is [`Failure::Malformed`].
pub(crate) fn events(
    body: UpstreamBody,
) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send {
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
/// `provider` is the provider's name in the config, as on every other metric.
pub(crate) fn malformed_event(provider: &std::sync::Arc<str>, err: &serde_json::Error) {
    metrics::counter!("modelux_stream_malformed_events_total", "provider" => provider.clone())
        .increment(1);
    tracing::warn!(provider = %provider, error = %err, "skipped a malformed stream event");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle pooled connection is closed once `IDLE_TIMEOUT` has passed,
    /// even when no request comes to notice it: after a burst, hundreds of
    /// idle sockets stayed open for as long as the provider kept them.
    #[tokio::test(start_paused = true)]
    async fn an_idle_pooled_connection_is_closed_after_the_idle_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            // Kept alive: read until the client closes it.
            while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            let _ = closed_tx.send(tokio::time::Instant::now());
        });
        let client = HttpClient::builder().direct().build().unwrap();
        let req = Request::get(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send(&client, req).await.unwrap();
        assert_eq!(read_body(resp.into_body()).await.unwrap(), "ok");
        let idle_from = tokio::time::Instant::now();
        let closed = tokio::time::timeout(IDLE_TIMEOUT * 3, closed_rx)
            .await
            .expect("the idle connection was never closed")
            .unwrap();
        let idle = closed - idle_from;
        assert!(
            idle >= IDLE_TIMEOUT && idle <= IDLE_TIMEOUT * 2 + Duration::from_secs(1),
            "closed after {idle:?} idle"
        );
        drop(client);
    }

    #[test]
    fn an_endpoint_carries_its_headers_and_marks_secrets_sensitive() {
        let endpoint = Endpoint::new("http://127.0.0.1:9/v1/chat/completions")
            .header(HeaderName::from_static("anthropic-version"), "2023-06-01")
            .secret(http::header::AUTHORIZATION, "Bearer sk-live-123".to_owned());
        let req = endpoint.request().unwrap().body(()).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
        let auth = &req.headers()[http::header::AUTHORIZATION];
        assert_eq!(auth, "Bearer sk-live-123");
        assert!(auth.is_sensitive());
        assert!(!req.headers()["anthropic-version"].is_sensitive());
        let debug = format!("{endpoint:?}");
        assert!(!debug.contains("sk-live-123"), "{debug}");

        let other = endpoint.request_to("http://127.0.0.1:9/v1beta/models/m:generateContent");
        let other = other.unwrap().body(()).unwrap();
        assert_eq!(other.uri().path(), "/v1beta/models/m:generateContent");
        assert!(other.headers()[http::header::AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn an_endpoint_that_cannot_be_sent_fails_every_request_the_same_way() {
        let bad_url = Endpoint::new("http://exa mple.com/v1");
        let bad_key = Endpoint::new("http://127.0.0.1:9/v1")
            .secret(http::header::AUTHORIZATION, "Bearer sk\nlive".to_owned());
        for err in [
            bad_url.request().unwrap_err(),
            bad_key.request().unwrap_err(),
            bad_key.request_to("http://127.0.0.1:9/other").unwrap_err(),
            Endpoint::new("http://127.0.0.1:9/v1")
                .request_to("http://127.0.0.1:9/models/a b")
                .unwrap_err(),
        ] {
            // The gateway's configuration, not the client's request: the
            // router moves on to the next candidate.
            assert_eq!(err.failure, Failure::TargetRefused { status: 400 });
            assert!(err
                .message
                .contains("invalid provider URL, model name or key"));
        }
    }

    /// Every secret header is scrubbed, not only the key: a `headers_env`
    /// value (a gateway's own auth header in front of the provider) too,
    /// and a header given again replaces the earlier one.
    #[test]
    fn every_secret_header_is_scrubbed_and_headers_are_not_repeated() {
        let mut extra = http::HeaderMap::new();
        let mut token = HeaderValue::from_static("Bearer cf-LEAK-token-0002");
        token.set_sensitive(true);
        extra.insert("cf-aig-authorization", token);
        extra.insert("x-title", HeaderValue::from_static("app"));
        let endpoint = Endpoint::new("http://127.0.0.1:9/v1")
            .secret(
                http::header::AUTHORIZATION,
                "Bearer sk-LEAK-canary-0001".to_owned(),
            )
            .extra(&extra)
            .extra(&extra);
        let secrets = endpoint.secrets();
        let echo = ProviderError::new(
            Failure::Server { status: 502 },
            "echo: authorization=Bearer sk-LEAK-canary-0001 cf-aig-authorization=Bearer cf-LEAK-token-0002",
        );
        let e = scrub_error(echo, &secrets);
        assert!(!e.message.contains("LEAK"), "{}", e.message);
        let req = endpoint.request().unwrap().body(()).unwrap();
        assert_eq!(req.headers().get_all("x-title").iter().count(), 1);
        assert_eq!(
            req.headers().get_all("cf-aig-authorization").iter().count(),
            1
        );
    }

    /// The key is scrubbed from an error that arrives inside a 200 (an
    /// in-stream error event) as from an error response, and from all of a
    /// raw error body before it is cut to 512 bytes (a cut through the key
    /// left all but its last characters unmatched).
    #[tokio::test]
    async fn the_key_is_scrubbed_from_stream_errors_and_from_long_raw_bodies() {
        let key = Endpoint::new("http://127.0.0.1:9/v1")
            .secret(
                http::header::AUTHORIZATION,
                "Bearer sk-LEAK-canary-0001".to_owned(),
            )
            .secrets();
        assert_eq!(key.len(), 1);
        let echo = ProviderError::new(
            Failure::Server { status: 500 },
            "echo: authorization=Bearer sk-LEAK-canary-0001",
        );
        let chunks = futures_util::stream::iter([Ok(1u8), Err(echo.clone())]);
        let out: Vec<_> = Scrubbed::new(chunks, key.clone()).collect().await;
        assert_eq!(out[0].as_ref().unwrap(), &1);
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.message, "echo: authorization=***");
        assert_eq!(e.failure, Failure::Server { status: 500 });
        // A refused key inside a stream gets the generic text, as outside.
        let refused = ProviderError::new(
            Failure::TargetRefused { status: 401 },
            "invalid x-api-key sk-LEAK-canary-0001",
        );
        let e = scrub_error(refused, &key);
        assert!(e.message.starts_with(REFUSED_CREDENTIALS), "{e}");

        // A 400 whose raw body puts the key across byte 512.
        let body = format!("{}Bearer sk-LEAK-canary-0001 rest", "x".repeat(500));
        let (parts, ()) = Response::builder()
            .status(400)
            .body(())
            .unwrap()
            .into_parts();
        let e = classify_error(&parts, body.as_bytes(), |_, _, e| e, &key);
        assert!(!e.message.contains("sk-LEAK"), "{}", e.message);
        assert!(e.message.ends_with("x*** rest"), "{}", e.message);

        // A quoted start of the key goes as far as it matches; a short
        // prefix (`sk-LEAK`, as OpenAI's own messages show) stays.
        let partial = ProviderError::new(
            Failure::Client { status: 400 },
            "key sk-LEAK-canary-0... is wrong; sk-LEAK is a prefix",
        );
        assert_eq!(
            scrub_error(partial, &key).message,
            "key ***... is wrong; sk-LEAK is a prefix"
        );

        // The key's middle or end, and the key JSON-escaped in a raw body.
        let quoted = ProviderError::new(
            Failure::Client { status: 400 },
            "key ...K-canary-0001 and ...EAK-canary-00... are wrong",
        );
        assert_eq!(
            scrub_error(quoted, &key).message,
            "key ...*** and ...***... are wrong"
        );
        for escaped in [
            r#"{"error":"bad header \"Bearer sk\u002dLEAK\u002Dcanary-0001\""}"#,
            r#"{"error":"sk\u002dLEAK-canary-0001"}"#,
            r#"{"error":"sk-LEAK-c\u0061nary-00\/x"}"#,
        ] {
            let e = ProviderError::new(Failure::Client { status: 400 }, escaped);
            let e = scrub_error(e, &key);
            assert!(
                !e.message.contains("canary") && !e.message.contains("c\\u0061nary"),
                "{escaped} -> {}",
                e.message
            );
            assert!(e.message.contains("***"), "{}", e.message);
        }
        let e = ProviderError::new(
            Failure::Client { status: 400 },
            r#"{"error":"key \"sk\u002dLEAK\u002dcanary\u002d0001\" is wrong; caf\u00e9"}"#,
        );
        assert_eq!(
            scrub_error(e, &key).message,
            r#"{"error":"key \"***\" is wrong; caf\u00e9"}"#
        );

        // A long token: runs from anywhere in it, at any alignment, are
        // masked; 11 characters are not; the text past what is kept is cut.
        let token: String = (0..2000u32)
            .map(|i| char::from(b'A' + ((i * 7 + i / 26) % 26) as u8))
            .collect();
        let mut long = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        long.set_sensitive(true);
        for (from, len) in [(0, 12), (501, 13), (1987, 13), (37, 400)] {
            let quoted = &token[from..from + len];
            let e = ProviderError::new(
                Failure::Client { status: 400 },
                format!("é {quoted} ü {}", "x".repeat(100_000)),
            );
            let m = scrub_error(e, std::slice::from_ref(&long)).message;
            assert!(m.starts_with("é *** ü x"), "{from}+{len}: {}", &m[..40]);
            assert!(m.len() < SCRUB_SCAN_BYTES + 6 * token.len() + 8);
        }
        let short = &token[900..911];
        let e = ProviderError::new(Failure::Client { status: 400 }, format!("[{short}]"));
        assert_eq!(
            scrub_error(e, std::slice::from_ref(&long)).message,
            format!("[{short}]")
        );
    }
}
