//! How the shared client reaches a provider: straight to it, or through an
//! egress proxy with an HTTP `CONNECT` tunnel, and within a bounded time.
//!
//! Teams that run a gateway in a locked-down network reach the providers
//! only through their egress proxy, named the way every HTTP client names
//! it: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, with curl's
//! rules (hyper-util's [`Matcher`]). The official SDKs honour these, so a
//! gateway that ignored them would fail to connect where the SDK it replaces
//! worked.
//!
//! Every destination is tunnelled, `http://` ones too: the provider's TLS
//! (and an `h2c` connection's prior knowledge) then runs end to end through
//! the proxy exactly as it does without one, and the proxy never sees a key.
//! A loopback destination (`localhost`, `127.0.0.0/8`, `::1`) is never
//! proxied, as Go's `net/http` decides too: a proxy elsewhere cannot reach
//! this host's loopback, and a sidecar or a local model server is always one.
//!
//! Connecting is bounded as a whole: TCP to the provider or the proxy, the
//! proxy's answer to `CONNECT`, and the TLS handshake together get
//! [`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT). A proxy that accepts the TCP
//! connection and then never answers would otherwise hold the attempt until
//! its own timeout, on every new connection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to a provider, or to the far end of a tunnel, before the
/// provider's own TLS: plain TCP, or TLS to an `https://` proxy.
pub(super) type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Which proxy, if any, the client tunnels through: what
/// [`HttpClientBuilder::proxy`](super::HttpClientBuilder::proxy) and the
/// environment describe.
#[derive(Clone, Default)]
pub(super) struct Proxies {
    /// `None`: every destination is reached directly.
    matcher: Option<Arc<Matcher>>,
    /// What was chosen, credentials masked (see `HttpClient::proxy_description`).
    description: Option<String>,
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // hyper-util's `Debug` leaves the credentials out.
        f.debug_struct("Proxies")
            .field("proxies", &self.description)
            .finish()
    }
}

/// A proxy setting that cannot be used; the message names the variable or
/// setting and never repeats the credentials of the URL.
///
/// ```
/// let err = modelux::provider::HttpClient::builder()
///     .proxy("socks5://user:secret@proxy.internal:1080")
///     .unwrap_err();
/// assert!(err.to_string().contains("socks5"));
/// assert!(!err.to_string().contains("secret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    setting: String,
    problem: String,
}

impl ProxyError {
    pub(super) fn new(setting: &str, problem: impl Into<String>) -> ProxyError {
        ProxyError {
            setting: setting.to_owned(),
            problem: problem.into(),
        }
    }
}

impl ProxyError {
    /// The variable or setting that names the proxy (`HTTPS_PROXY`, `proxy`).
    ///
    /// ```
    /// let err = modelux::provider::HttpClient::builder().proxy("ftp://p:21").unwrap_err();
    /// assert_eq!(err.setting(), "proxy");
    /// ```
    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// What is wrong with it.
    ///
    /// ```
    /// let err = modelux::provider::HttpClient::builder().proxy("http://p:3128/x").unwrap_err();
    /// assert!(err.problem().contains("no path"));
    /// ```
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for ProxyError {}

/// Checks a proxy URL as `setting` names it: `http://` or `https://` (a bare
/// `host:port` is `http://`), a host, nothing but `/` after it. A URL that
/// names another scheme is refused rather than silently not used.
pub(super) fn check_proxy_url(setting: &str, url: &str) -> Result<(), ProxyError> {
    let url = url.trim();
    let uri: Uri = url.parse().map_err(|_| {
        ProxyError::new(
            setting,
            "is not a URL (expected http://[user:password@]host:port)",
        )
    })?;
    match uri.scheme_str() {
        None | Some("http") | Some("https") => {}
        Some(other) => {
            return Err(ProxyError::new(
                setting,
                format!("{other}:// proxies are not supported (use an http:// or https:// proxy)"),
            ))
        }
    }
    if uri
        .authority()
        .is_some_and(|a| a.as_str().matches('@').count() > 1)
    {
        // Where the credentials end would be a guess (the proxy's `Basic`
        // and the log line's mask would disagree): a raw `@` in a password
        // must be written `%40`.
        return Err(ProxyError::new(
            setting,
            "has more than one @: write an @ inside the user name or password as %40",
        ));
    }
    let host = uri.authority().map(strip_userinfo).unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(ProxyError::new(setting, "names no proxy host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ProxyError::new(
            setting,
            "must be a proxy's address only (no path)",
        ));
    }
    Ok(())
}

fn strip_userinfo(authority: &Authority) -> &str {
    let s = authority.as_str();
    s.rsplit_once('@').map_or(s, |(_, host)| host)
}

/// A proxy URL fit for a log line: the credentials replaced by `***`.
///
/// ```
/// use modelux::provider::redact_proxy_url;
/// assert_eq!(redact_proxy_url("http://ops:hunter2@proxy.internal:3128"), "http://***@proxy.internal:3128");
/// // The builder's Debug shows it so too.
/// let b = modelux::provider::HttpClient::builder()
///     .proxy("http://ops:hunter2@proxy.internal:3128").unwrap();
/// assert!(!format!("{b:?}").contains("hunter2"));
/// ```
pub fn redact_proxy_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

impl Proxies {
    /// Reaches every destination directly.
    pub(super) fn none() -> Proxies {
        Proxies::default()
    }

    /// The rules `matcher` describes, shown as `description`.
    pub(super) fn from_matcher(matcher: Matcher, description: String) -> Proxies {
        Proxies {
            matcher: Some(Arc::new(matcher)),
            description: Some(description),
        }
    }

    /// What was chosen, credentials masked.
    pub(super) fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The proxy `dst` is reached through, if any.
    fn route(&self, dst: &Uri) -> Option<Via> {
        let matcher = self.matcher.as_ref()?;
        if is_loopback(dst.host()?) {
            return None;
        }
        let intercept = matcher.intercept(dst)?;
        Some(Via {
            proxy: intercept.uri().clone(),
            auth: intercept.basic_auth().cloned(),
        })
    }

    /// Whether any destination could be proxied.
    pub(super) fn any(&self) -> bool {
        self.matcher.is_some()
    }
}

/// Whether `host` (as a URI gives it: an IPv6 address in brackets) is this
/// machine's loopback.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        // `::ffff:127.0.0.1` too.
        return ip.to_canonical().is_loopback();
    }
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host.len() > ".localhost".len()
            && host[host.len() - ".localhost".len()..].eq_ignore_ascii_case(".localhost")
}

/// A destination's proxy: where it is, and the `Proxy-Authorization` its
/// URL's credentials make.
struct Via {
    proxy: Uri,
    auth: Option<HeaderValue>,
}

/// Why a connection to a provider could not be made.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// TCP, the tunnel and TLS together took longer than the connect timeout.
    TimedOut(Duration),
    /// The egress proxy could not be reached, or did not open the tunnel.
    Tunnel(TunnelError),
    /// Anything else: DNS, TCP, the provider's TLS.
    Other(BoxError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::TimedOut(d) => write!(f, "connecting took longer than {d:?}"),
            ConnectError::Tunnel(e) => write!(f, "egress proxy: {e}"),
            ConnectError::Other(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::TimedOut(_) => None,
            ConnectError::Tunnel(e) => Some(e),
            ConnectError::Other(e) => Some(&**e),
        }
    }
}

/// Why the egress proxy did not open a tunnel.
#[derive(Debug)]
pub(super) enum TunnelError {
    /// TCP or TLS to the proxy failed.
    Unreachable(BoxError),
    /// The proxy answered `CONNECT` with this status.
    Refused(u16),
    /// The connection broke, or the proxy's answer was not HTTP.
    Broken(&'static str),
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Unreachable(_) => f.write_str("could not connect to the egress proxy"),
            TunnelError::Refused(407) => f.write_str(
                "the egress proxy refused the tunnel: 407 proxy authentication required",
            ),
            TunnelError::Refused(code) => {
                write!(f, "the egress proxy refused the tunnel: {code}")
            }
            TunnelError::Broken(what) => write!(f, "the egress proxy {what}"),
        }
    }
}

impl std::error::Error for TunnelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TunnelError::Unreachable(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Reaches a destination directly or through its proxy, returning the
/// stream the provider's TLS then runs over.
#[derive(Clone)]
pub(super) struct Egress {
    direct: HttpConnector,
    /// TLS to an `https://` proxy: HTTP/1.1 only, `CONNECT` being an
    /// HTTP/1.1 request here.
    to_proxy: tokio_rustls::TlsConnector,
    proxies: Proxies,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

impl Egress {
    pub(super) fn new(
        direct: HttpConnector,
        tls: &rustls::ClientConfig,
        proxies: Proxies,
    ) -> Egress {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Egress {
            direct,
            to_proxy: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            proxies,
        }
    }
}

type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, ConnectError>> + Send>>;

impl Service<Uri> for Egress {
    type Response = Stream;
    type Error = ConnectError;
    type Future = Connecting<Stream>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        // Each call connects with a clone of its connector, readied there.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let direct = self.direct.clone();
        let Some(via) = self.proxies.route(&dst) else {
            return Box::pin(async move {
                let tcp = direct
                    .oneshot(dst)
                    .await
                    .map_err(|e| ConnectError::Other(e.into()))?;
                Ok(MaybeHttpsStream::Http(tcp))
            });
        };
        tracing::debug!(
            proxy = via.proxy.authority().map_or("", |a| a.as_str()),
            host = dst.host().unwrap_or(""),
            "tunnelling through the egress proxy"
        );
        let to_proxy = self.to_proxy.clone();
        Box::pin(async move {
            via.open(direct, to_proxy, &with_port(dst))
                .await
                .map_err(ConnectError::Tunnel)
        })
    }
}

impl Via {
    /// Connects to the proxy (TLS to an `https://` one) and asks it for a
    /// tunnel to `dst`.
    async fn open(
        self,
        direct: HttpConnector,
        to_proxy: tokio_rustls::TlsConnector,
        dst: &Uri,
    ) -> Result<Stream, TunnelError> {
        let proxy = with_port(self.proxy);
        let tcp = direct
            .oneshot(proxy.clone())
            .await
            .map_err(|e| TunnelError::Unreachable(e.into()))?;
        let target = dst.authority().map_or("", |a| a.as_str());
        if proxy.scheme() == Some(&Scheme::HTTPS) {
            let host = proxy
                .host()
                .unwrap_or("")
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| TunnelError::Unreachable(e.into()))?;
            let mut tls = to_proxy
                .connect(name, TokioIo::new(tcp))
                .await
                .map_err(|e| TunnelError::Unreachable(e.into()))?;
            handshake(&mut tls, target, self.auth.as_ref()).await?;
            Ok(MaybeHttpsStream::from(tls))
        } else {
            let mut tcp = tcp.into_inner();
            handshake(&mut tcp, target, self.auth.as_ref()).await?;
            Ok(MaybeHttpsStream::Http(TokioIo::new(tcp)))
        }
    }
}

/// The longest answer head a proxy may give to `CONNECT`.
const MAX_TUNNEL_HEAD: usize = 8 * 1024;

/// Sends `CONNECT target` and reads the proxy's answer head; a 2xx opens
/// the tunnel. Reads byte runs up to the head's end and no further: what
/// follows belongs to the provider's TLS or HTTP.
async fn handshake<S>(
    io: &mut S,
    target: &str,
    auth: Option<&HeaderValue>,
) -> Result<(), TunnelError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(auth) = auth {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    io.write_all(&head)
        .await
        .map_err(|_| TunnelError::Broken("closed the connection before the tunnel opened"))?;
    io.flush()
        .await
        .map_err(|_| TunnelError::Broken("closed the connection before the tunnel opened"))?;
    // One byte at a time once the head might end, so nothing past it is
    // consumed; the answer is a few dozen bytes, read once per connection.
    let mut answer = Vec::with_capacity(128);
    while !(answer.ends_with(b"\r\n\r\n") || answer.ends_with(b"\n\n")) {
        if answer.len() >= MAX_TUNNEL_HEAD {
            return Err(TunnelError::Broken("sent an answer head over 8 KiB"));
        }
        let mut byte = [0u8; 1];
        match io.read(&mut byte).await {
            Ok(1) => answer.push(byte[0]),
            _ => {
                return Err(TunnelError::Broken(
                    "closed the connection before the tunnel opened",
                ))
            }
        }
    }
    let status = answer
        .strip_prefix(b"HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(TunnelError::Broken(
            "answered CONNECT with something not HTTP",
        ))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(TunnelError::Refused(status))
    }
}

/// `dst` with its port spelled out: the tunnel asks for port 443 when the
/// URI names none, which is wrong for `http://`.
fn with_port(dst: Uri) -> Uri {
    if dst.port().is_some() {
        return dst;
    }
    let port = if dst.scheme() == Some(&Scheme::HTTP) {
        80
    } else {
        443
    };
    let Some(host) = dst.host() else { return dst };
    let authority = format!("{host}:{port}");
    let mut parts = dst.clone().into_parts();
    match authority.parse() {
        Ok(a) => {
            parts.authority = Some(a);
            Uri::from_parts(parts).unwrap_or(dst)
        }
        Err(_) => dst,
    }
}

/// Bounds a whole connect (TCP, tunnel, TLS) by `limit`.
#[derive(Clone, Debug)]
pub(super) struct Bounded<C> {
    inner: C,
    limit: Duration,
}

impl<C> Bounded<C> {
    pub(super) fn new(inner: C, limit: Duration) -> Bounded<C> {
        Bounded { inner, limit }
    }
}

impl<C> Service<Uri> for Bounded<C>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = ConnectError;
    type Future = Connecting<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| ConnectError::Other(e.into()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        // The readied connector goes with the call; its clone stays.
        let clone = self.inner.clone();
        let connecting = std::mem::replace(&mut self.inner, clone).call(dst);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => {
                    let e: BoxError = e.into();
                    // The tunnel's error, typed, whichever layer wrapped it.
                    match e.downcast::<ConnectError>() {
                        Ok(e) => Err(*e),
                        Err(e) => Err(ConnectError::Other(e)),
                    }
                }
                Err(_) => Err(ConnectError::TimedOut(limit)),
            }
        })
    }
}

/// What a failed connect tells an operator, found by walking `err`'s
/// sources: a timeout, the proxy's refusal, the provider's certificate, or
/// the generic "could not connect". Never holds a credential: the proxy's
/// URL is not part of any of these errors.
pub(super) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            match c {
                ConnectError::TimedOut(d) => {
                    return format!(
                        "could not connect to the provider within {} s",
                        d.as_secs_f64()
                    )
                }
                ConnectError::Tunnel(TunnelError::Unreachable(inner)) => {
                    if let Some(tls) = tls_error(&**inner) {
                        return format!("TLS with the egress proxy failed: {tls}");
                    }
                    return "could not connect to the egress proxy".into();
                }
                ConnectError::Tunnel(t) => return t.to_string(),
                ConnectError::Other(_) => {}
            }
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return format!("TLS with the provider failed: {tls}");
        }
        next = source(e);
    }
    "could not connect to the provider".into()
}

/// The next error in `e`'s chain. An `io::Error`'s `source()` skips the
/// error it wraps (hyper-rustls wraps rustls' own `io::Error` in another),
/// so its inner error is looked at instead.
fn source<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => e.source(),
    }
}

/// The rustls error in `e`'s chain, if any.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = source(e);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_never_proxied() {
        for host in [
            "localhost",
            "LOCALHOST.",
            "api.localhost",
            "127.0.0.1",
            "127.9.8.7",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "api.openai.com",
            "10.0.0.1",
            "[::2]",
            "localhost.example.com",
            "notlocalhost",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
        assert!(is_loopback("[::ffff:127.0.0.1]"));
        let proxies = Proxies::from_matcher(
            Matcher::builder().all("http://proxy:3128").build(),
            String::new(),
        );
        assert!(proxies
            .route(&Uri::from_static("http://127.0.0.1:9/v1"))
            .is_none());
        assert!(proxies
            .route(&Uri::from_static("http://localhost:9/v1"))
            .is_none());
        let via = proxies
            .route(&Uri::from_static("https://api.openai.com/v1"))
            .unwrap();
        assert_eq!(via.proxy, "http://proxy:3128/");
    }

    #[test]
    fn no_proxy_and_scheme_rules_follow_curl() {
        let proxies = Proxies::from_matcher(
            Matcher::builder()
                .https("http://u:p@proxy:3128")
                .no("internal.example, 10.0.0.0/8")
                .build(),
            String::new(),
        );
        let via = proxies
            .route(&Uri::from_static("https://api.anthropic.com/v1"))
            .unwrap();
        assert_eq!(via.auth.unwrap(), "Basic dTpw");
        assert!(proxies
            .route(&Uri::from_static("https://llm.internal.example/v1"))
            .is_none());
        assert!(proxies
            .route(&Uri::from_static("https://10.1.2.3/v1"))
            .is_none());
        // Only HTTPS_PROXY given: plain http goes direct.
        assert!(proxies
            .route(&Uri::from_static("http://vllm.example:8000/v1"))
            .is_none());
    }

    #[test]
    fn the_tunnel_is_asked_for_the_scheme_s_port() {
        assert_eq!(
            with_port(Uri::from_static("http://vllm.example/v1"))
                .authority()
                .unwrap(),
            "vllm.example:80"
        );
        assert_eq!(
            with_port(Uri::from_static("https://api.openai.com/v1"))
                .authority()
                .unwrap(),
            "api.openai.com:443"
        );
        assert_eq!(
            with_port(Uri::from_static("https://h:8443/v1"))
                .authority()
                .unwrap(),
            "h:8443"
        );
    }

    /// The answer head ends at a blank line, `\r\n` or bare `\n`; a 2xx
    /// opens the tunnel, anything else is the proxy's refusal with its status.
    #[tokio::test]
    async fn the_tunnel_answer_is_read_to_its_blank_line_and_no_further() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (answer, expect) in [
            (&b"HTTP/1.1 200 Connection established\r\n\r\nTLS"[..], None),
            (b"HTTP/1.0 200\n\nTLS", None),
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
                Some(407),
            ),
            (b"HTTP/1.1 502 Bad Gateway\r\nx: y\r\n\r\n", Some(502)),
        ] {
            let (mut client, mut proxy) = tokio::io::duplex(1024);
            proxy.write_all(answer).await.unwrap();
            let got = handshake(&mut client, "api.openai.com:443", None).await;
            match (got, expect) {
                (Ok(()), None) => {
                    // What followed the head is left for the provider's TLS.
                    let mut rest = [0u8; 3];
                    client.read_exact(&mut rest).await.unwrap();
                    assert_eq!(&rest, b"TLS");
                }
                (Err(TunnelError::Refused(code)), Some(want)) => assert_eq!(code, want),
                (got, want) => panic!("{got:?} for {want:?}"),
            }
            let mut sent = vec![0u8; 200];
            let n = proxy.read(&mut sent).await.unwrap();
            assert!(sent[..n].starts_with(
                b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
            ));
        }
    }

    #[test]
    fn proxy_urls_are_checked_and_redacted() {
        for ok in [
            "http://proxy:3128",
            "https://u:p@proxy:443/",
            "proxy.internal:3128",
        ] {
            check_proxy_url("HTTPS_PROXY", ok).unwrap();
        }
        for bad in [
            "socks5://proxy:1080",
            "http://proxy:3128/path",
            "http://",
            "not a url",
        ] {
            let e = check_proxy_url("HTTPS_PROXY", bad).unwrap_err();
            assert!(e.to_string().starts_with("HTTPS_PROXY: "), "{e}");
        }
        // A raw @ in the password: where the credentials end is a guess.
        let e = check_proxy_url("HTTPS_PROXY", "http://ops:p@ss@proxy:3128").unwrap_err();
        assert!(e.to_string().contains("%40"), "{e}");
        assert!(!e.to_string().contains("p@ss"), "{e}");
        check_proxy_url("HTTPS_PROXY", "http://ops:p%40ss@proxy:3128").unwrap();
        let e = check_proxy_url("ALL_PROXY", "socks5h://me:s3cret@p:1").unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
        assert_eq!(
            redact_proxy_url("http://me:s3cret@proxy:3128"),
            "http://***@proxy:3128"
        );
        assert_eq!(redact_proxy_url("me:s3cret@proxy:3128"), "***@proxy:3128");
        assert_eq!(redact_proxy_url("http://proxy:3128"), "http://proxy:3128");
    }
}
