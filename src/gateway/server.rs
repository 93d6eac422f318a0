//! The accept loop: HTTP/1.1 and HTTP/2 (h2c) on one port, `TCP_NODELAY`
//! on every socket, a deadline for request headers, and a graceful drain.
//!
//! Why not `axum::serve`: it keeps each request's service future inline in
//! the task hyper spawns for an HTTP/2 stream, and that task lives as long as
//! the stream. The future starts out holding the whole request, and a long
//! stream carries that dead weight until its last token (≈ 0.2 KB per held
//! stream, measured). Here the future is boxed, so it is freed once the
//! response head is sent. And
//! `axum::serve` sets no timer, so a client that opens a connection and sends
//! its headers byte by byte holds it forever; here request headers must
//! arrive within `server.idle_timeout_ms` ([`HEADER_READ_TIMEOUT`] by
//! default), and an HTTP/2 connection with no request open for that long is
//! closed too. Nor does hyper bound a write: a
//! client that stops reading a stream would hold it, and the provider call
//! behind it, for as long as its socket stays open; here a connection whose
//! writes make no progress for [`SEND_TIMEOUT`] is closed (nginx's
//! `send_timeout`). The same holds for a request body that stops arriving
//! after its headers: it fails after [`BODY_READ_TIMEOUT`] without a byte
//! (nginx's `client_body_timeout`), and the client gets a 408.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The default of `server.idle_timeout_ms`: how long a client has to send a
/// request's headers (HTTP/1.1), counted from the first byte or, on a
/// kept-alive connection, from the end of the previous response, so idle
/// kept-alive connections close after this long; and how long an HTTP/2
/// connection may have no request open. Longer than the 60 s idle timeout
/// of common load balancers (AWS ALB's default), so the gateway does not
/// close a kept-alive connection the balancer may be about to reuse (which
/// the client would see as a 502); nginx's `keepalive_timeout` defaults to
/// the same 75 s.
///
/// ```
/// assert_eq!(modelux::gateway::HEADER_READ_TIMEOUT.as_secs(), 75);
/// ```
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(75);

/// How long a write to a client may make no progress before the connection
/// is closed: a client that stops reading (a hung process, a consumer that
/// paused) would otherwise hold its stream, and the provider call behind
/// it, until its socket closes. Counted only while the socket's send buffer
/// is full, so a slow but reading client is never cut; nginx's
/// `send_timeout` defaults to the same 60 s.
///
/// ```
/// assert_eq!(modelux::gateway::SEND_TIMEOUT.as_secs(), 60);
/// ```
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request body may send nothing while the gateway reads it:
/// a client that sends its headers and then trickles or withholds the body
/// would otherwise hold its connection and handler forever. A body that
/// keeps arriving, however slowly, is never cut; nginx's
/// `client_body_timeout` defaults to the same 60 s. The client gets a 408.
///
/// ```
/// assert_eq!(modelux::gateway::BODY_READ_TIMEOUT.as_secs(), 60);
/// ```
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// At most one "connection limit reached" warning per this long.
const FULL_WARN_EVERY: Duration = Duration::from_secs(10);

/// Sets `modelux_client_connections` through a handle registered once per
/// recorder.
/// How much unsent data the kernel may hold for a client connection
/// (`TCP_NOTSENT_LOWAT`): beyond it the socket stops taking writes, so a
/// client that stops reading shows as back-pressure within about its own
/// receive window plus this, instead of after the several MB an autotuned
/// send buffer takes (minutes of tokens at an LLM's rate, paid for while the
/// stream watch could not see the client had stopped).
pub(crate) const NOTSENT_LOWAT: u32 = 16 * 1024;

/// What every accepted connection gets: `TCP_NODELAY` (an SSE event or a
/// small answer must not wait ~40 ms for Nagle's algorithm) and, on Linux,
/// [`NOTSENT_LOWAT`].
pub(crate) fn tune_accepted(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
}

fn connections_gauge(open: usize) {
    static GAUGE: crate::handles::Cached<metrics::Gauge> = crate::handles::Cached::new();
    GAUGE.with(
        &[],
        || metrics::gauge!("modelux_client_connections"),
        |g| g.set(open as f64),
    );
}

/// How often an idle HTTP/2 client connection is pinged, and how long the
/// answer may take before the connection is closed.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// What [`serve`] holds to, from the config the gateway started with.
pub(super) struct Limits {
    /// How long requests in flight may finish after the shutdown signal.
    pub(super) grace: Duration,
    /// Client connections served at once (`server.max_connections`).
    pub(super) max_connections: usize,
    /// How long a client connection may stay idle (`server.idle_timeout_ms`).
    pub(super) idle_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, asks every connection to finish what it has in flight, and
/// waits for them for up to `limits.grace`. With `max_connections` open, it
/// stops accepting until one closes (new ones wait in the listen backlog).
///
/// A connection idle for `idle_timeout` is closed: hyper does that for
/// HTTP/1.1 (its header timeout runs between requests), but an HTTP/2
/// connection with no stream open would otherwise be kept for as long as
/// its client answers pings, holding one of `max_connections` for nothing.
/// It gets a GOAWAY, which clients take as "open a new one next time".
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
    limits: Limits,
) {
    let Limits {
        grace,
        max_connections,
        idle_timeout,
    } = limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    let builder = Arc::new(builder);
    // Dropped at shutdown: connections still waiting for their first bytes
    // close, and the others are asked to finish what they have in flight.
    let (stop_tx, stop_rx) = watch::channel(());
    // Owns the connection tasks, so the drain can wait for them and its
    // deadline can close them.
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut full_warned: Option<tokio::time::Instant> = None;
    loop {
        let open = conns.len();
        if open >= max_connections && full_warned.map_or(true, |at| at.elapsed() >= FULL_WARN_EVERY)
        {
            tracing::warn!(
                max_connections,
                "client connection limit reached: not accepting until a connection closes (server.max_connections)"
            );
            full_warned = Some(tokio::time::Instant::now());
        }
        connections_gauge(open);
        let stream = tokio::select! {
            // Shutdown first: polled at once (a signal future may register
            // its handler only then), and it wins over a full backlog.
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept(), if open < max_connections => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        tune_accepted(&stream);
        let (router, builder, stop) = (router.clone(), builder.clone(), stop_rx.clone());
        // The connection is made inside the task, never captured by it: a
        // block that captures a connection and then awaits it keeps two
        // slots for it (3.4 KB instead of 1.7 KB per connection).
        conns.spawn(serve_connection(
            stream,
            router,
            builder,
            stop,
            idle_timeout,
        ));
    }
    drop(listener);
    drop(stop_tx);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        connections = conns.len(),
        "shutting down: draining requests in flight"
    );
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "drain deadline reached: closing the remaining connections"
        );
        conns.abort_all();
        // Cancelled tasks end at their next poll; waiting for them drops
        // every connection (and with it the requests it carried) before
        // `serve` returns.
        while conns.join_next().await.is_some() {}
    }
}

/// One client connection, from its first bytes to its close: closed early
/// when it sends nothing, or (HTTP/2) when it has had no request open for
/// `idle_timeout`; asked to finish what it has in flight when `stop` fires.
async fn serve_connection(
    mut stream: TcpStream,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<()>,
    idle_timeout: Duration,
) {
    let (first, h2) = tokio::select! {
        shown = tokio::time::timeout(idle_timeout, protocol_shown(&mut stream)) => match shown {
            Ok(Some(shown)) => shown,
            // Closed (or failed) before it showed a protocol.
            Ok(None) => return,
            Err(_) => {
                tracing::debug!("client connection closed: it sent no request within the idle timeout");
                return;
            }
        },
        _ = stop.changed() => return,
    };
    // Only HTTP/2 needs its requests counted: hyper closes an idle HTTP/1.1
    // connection itself.
    let idle = h2.then(|| Arc::new(Idle::new()));
    let counter = idle.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let req = req.map(|b| Body::new(ReadTimeoutBody::new(b, BODY_READ_TIMEOUT)));
        let open = counter.as_ref().map(OpenRequest::new);
        Box::pin(Counting {
            inner: router.clone().oneshot(req),
            open,
        }) as ResponseFuture
    });
    let io = TokioIo::new(SendTimeout::new(Replayed::new(first, stream), SEND_TIMEOUT));
    let mut conn = std::pin::pin!(builder.serve_connection(io, service));
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = Idle::stalled(idle.as_deref(), SEND_TIMEOUT), if idle.is_some() => {
                tracing::debug!(
                    limit_s = SEND_TIMEOUT.as_secs(),
                    "client connection closed: a complete answer waited the send timeout for its HTTP/2 flow-control window"
                );
                break Ok(());
            }
            () = Idle::expired(idle.as_deref(), idle_timeout), if !closing && idle.is_some() => {
                tracing::debug!(
                    idle_ms = idle_timeout.as_millis() as u64,
                    "closing an HTTP/2 client connection: no request for the idle timeout"
                );
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Counted>, Infallible>> + Send>>;

/// How many requests an HTTP/2 connection has open, and since when it has
/// had none; and which complete answers wait for their client to take them.
struct Idle(std::sync::Mutex<IdleState>);

struct IdleState {
    open: usize,
    since: tokio::time::Instant,
    /// Complete answers not yet taken by the client (id, since when), at
    /// most one per open request.
    unsent: Vec<(u64, tokio::time::Instant)>,
    next_id: u64,
}

impl Idle {
    fn new() -> Self {
        Idle(std::sync::Mutex::new(IdleState {
            open: 0,
            since: tokio::time::Instant::now(),
            unsent: Vec::new(),
            next_id: 0,
        }))
    }

    /// Resolves once a complete answer has not been sent whole within
    /// `limit` of being ready: an HTTP/2 client that never opens its
    /// flow-control window never takes its answer, no write to the socket
    /// waits (so [`SendTimeout`] never starts), and the open request would
    /// keep the connection (and the answer in memory) forever. Never
    /// without a connection to watch.
    async fn stalled(idle: Option<&Idle>, limit: Duration) {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let oldest = idle.lock().unsent.iter().map(|(_, at)| *at).min();
            match oldest.map(|at| at + limit) {
                Some(at) if at <= tokio::time::Instant::now() => return,
                Some(at) => tokio::time::sleep_until(at).await,
                // Nothing waits: look again no sooner than it could stall.
                None => tokio::time::sleep(limit).await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once the connection has had no request open for `limit`;
    /// never without a connection to watch.
    async fn expired(idle: Option<&Idle>, limit: Duration) {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let deadline = {
                let s = idle.lock();
                (s.open == 0).then_some(s.since + limit)
            };
            match deadline {
                Some(at) if at <= tokio::time::Instant::now() => return,
                Some(at) => tokio::time::sleep_until(at).await,
                // Busy: look again no sooner than it could expire.
                None => tokio::time::sleep(limit).await,
            }
        }
    }
}

/// One request open on an HTTP/2 connection, until its response body is
/// dropped (for a stream, after its last byte).
struct OpenRequest(Arc<Idle>, Option<u64>);

impl OpenRequest {
    fn new(idle: &Arc<Idle>) -> Self {
        idle.lock().open += 1;
        OpenRequest(idle.clone(), None)
    }

    /// Its answer is complete and waits for the client from now on.
    fn answered(&mut self) {
        let (_, id) = self.reserve();
        self.0.lock().unsent.push((id, tokio::time::Instant::now()));
    }

    /// An id for this request's entry in `unsent`, removed when the request
    /// ends, whoever adds the entry.
    fn reserve(&mut self) -> (Arc<Idle>, u64) {
        let mut s = self.0.lock();
        let id = s.next_id;
        s.next_id += 1;
        self.1 = Some(id);
        (self.0.clone(), id)
    }

    /// The answer was sent whole (its body is dropped). Not when hyper
    /// first polls the body: it does so before it has a window to send in,
    /// and keeps the data until the client opens one.
    fn taken(&mut self) {
        if let Some(id) = self.1.take() {
            self.0.lock().unsent.retain(|(i, _)| *i != id);
        }
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.taken();
        let mut s = self.0.lock();
        s.open -= 1;
        if s.open == 0 {
            s.since = tokio::time::Instant::now();
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's response future, its answer's body carrying the
    /// request's [`OpenRequest`].
    struct Counting<F> {
        #[pin]
        inner: F,
        open: Option<OpenRequest>,
    }
}

impl<F> Future for Counting<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response<Counted>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        let mut open = this.open.take();
        let hook = resp
            .extensions_mut()
            .remove::<super::stream_watch::CutHook>();
        if let (Some(hook), Some(o)) = (hook, &mut open) {
            // Cut by the stream watch, the stream is one its client shut its
            // window on: hyper will not poll it again, so its connection is
            // closed as for a complete answer that waited too long.
            let (idle, id) = o.reserve();
            hook.set(move || {
                let since = tokio::time::Instant::now()
                    .checked_sub(SEND_TIMEOUT)
                    .unwrap_or_else(tokio::time::Instant::now);
                idle.lock().unsent.push((id, since));
            });
        }
        // A body of known length is a complete answer (a stream's is not):
        // from now on only the client's window keeps it from being sent.
        if http_body::Body::size_hint(resp.body()).exact().is_some() {
            if let Some(o) = &mut open {
                o.answered();
            }
        }
        Poll::Ready(Ok(resp.map(|inner| Counted { inner, _open: open })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as open while it lives.
    struct Counted {
        #[pin]
        inner: Body,
        _open: Option<OpenRequest>,
    }
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The bytes [`protocol_shown`] read, which the connection reads again.
struct FirstBytes {
    buf: [u8; PREFACE.len()],
    len: u8,
}

/// HTTP/2's connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a new connection until it has sent enough to tell HTTP/1.1 from
/// HTTP/2 (hyper's protocol detection has no deadline of its own, and its
/// HTTP/1.1 header timeout starts only after it): the first bytes of a
/// request line or the whole 24-byte HTTP/2 preface. The bytes read, and
/// whether they are HTTP/2's; `None` when the client closed first.
///
/// Read rather than peeked: a peek cannot see the end of the stream behind
/// bytes not yet read, so a client that sent one byte of the preface and
/// closed held its connection until the idle timeout.
async fn protocol_shown(stream: &mut TcpStream) -> Option<(FirstBytes, bool)> {
    use tokio::io::AsyncReadExt;
    let mut first = FirstBytes {
        buf: [0; PREFACE.len()],
        len: 0,
    };
    loop {
        let n = first.len as usize;
        match stream.read(&mut first.buf[n..]).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => first.len += k as u8,
        }
        let seen = &first.buf[..first.len as usize];
        if seen != &PREFACE[..seen.len()] {
            return Some((first, false));
        }
        if seen.len() == PREFACE.len() {
            return Some((first, true));
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection whose first bytes were read to detect its protocol:
    /// reads return them first, then the socket's.
    struct Replayed<S> {
        first: FirstBytes,
        at: u8,
        #[pin]
        inner: S,
    }
}

impl<S> Replayed<S> {
    fn new(first: FirstBytes, inner: S) -> Self {
        Replayed {
            first,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead> AsyncRead for Replayed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let rest = &this.first.buf[*this.at as usize..this.first.len as usize];
        if rest.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        *this.at += n as u8;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for Replayed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Times how long an I/O keeps returning `Pending`: armed when a poll first
/// finds nothing to do, disarmed by any progress. The timer is allocated
/// once, the first time it is needed, so a peer that never makes the
/// gateway wait never costs one.
struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        Stall {
            limit,
            timer: None,
            waiting: false,
        }
    }

    /// The I/O made progress.
    fn progress(&mut self) {
        self.waiting = false;
    }

    /// The I/O is pending: `Ready` once it has been for the whole limit
    /// without progress (the waker is registered otherwise).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            timer.as_mut().reset(deadline);
            self.waiting = true;
        }
        timer.as_mut().poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// A client socket whose writes fail with `TimedOut` once they have made
    /// no progress for the limit. The clock runs only while a write finds the
    /// send buffer full (a healthy client never starts it).
    struct SendTimeout<S> {
        #[pin]
        inner: S,
        stall: Stall,
    }
}

impl<S> SendTimeout<S> {
    fn new(inner: S, limit: Duration) -> Self {
        SendTimeout {
            inner,
            stall: Stall::new(limit),
        }
    }

    /// Passes `poll` through, timing how long it keeps returning `Pending`.
    fn timed<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        match poll(this.inner, cx) {
            Poll::Ready(r) => {
                this.stall.progress();
                Poll::Ready(r)
            }
            Poll::Pending => {
                ready!(this.stall.poll_expired(cx));
                tracing::debug!(
                    limit_s = this.stall.limit.as_secs(),
                    "client connection closed: it read nothing within the send timeout"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client read nothing within the send timeout",
                )))
            }
        }
    }
}

impl<S: AsyncRead> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, |s, cx| s.poll_shutdown(cx))
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyReadTimedOut`] once the client
    /// has sent nothing for the limit while it is being read.
    struct ReadTimeoutBody<B> {
        #[pin]
        inner: B,
        stall: Stall,
    }
}

impl<B> ReadTimeoutBody<B> {
    fn new(inner: B, limit: Duration) -> Self {
        ReadTimeoutBody {
            inner,
            stall: Stall::new(limit),
        }
    }
}

impl<B> http_body::Body for ReadTimeoutBody<B>
where
    B: http_body::Body,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, axum::BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall.progress();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                ready!(this.stall.poll_expired(cx));
                Poll::Ready(Some(Err(Box::new(BodyReadTimedOut(this.stall.limit)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client sent nothing of its request body for [`BODY_READ_TIMEOUT`]
/// while the gateway was reading it.
#[derive(Debug)]
pub(crate) struct BodyReadTimedOut(Duration);

impl std::fmt::Display for BodyReadTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body stopped arriving: nothing received for {} s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyReadTimedOut {}

/// The size from which glibc's `malloc` maps each allocation on its own and
/// unmaps it when freed, as set by [`return_large_buffers`]: 256 KiB, the
/// size of a long prompt's body.
pub const LARGE_BUFFER_BYTES: usize = 256 * 1024;

/// Makes glibc's allocator give every buffer of [`LARGE_BUFFER_BYTES`] or
/// more back to the system when it is freed. Returns whether the setting
/// took (`false` on platforms without glibc, where there is nothing to do).
///
/// Why: glibc maps large allocations on their own, but raises that
/// threshold to the largest buffer freed so far (up to 32 MiB), after which
/// large request bodies come from the heap and their pages stay with the
/// process. Measured with the release gateway, three rounds of 100
/// concurrent 4 MiB requests: 221 MB resident afterwards, for good, against
/// 39 MB with the threshold fixed (the glibc tunable
/// `MALLOC_MMAP_THRESHOLD_=262144` does the same). Small allocations, all of
/// the hot path's, are not affected.
///
/// ```
/// let fixed = modelux::gateway::return_large_buffers();
/// assert_eq!(fixed, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn return_large_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes the allocator's parameters; it
        // takes the main arena's lock.
        let set =
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES as libc::c_int) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// File descriptors kept for everything but client and provider sockets
/// (the listener, the store, logs, the metrics exporter).
const RESERVED_FDS: u64 = 64;

/// Raises this process's soft limit on open files to its hard limit, and
/// returns the limit now in force. Logs a warning when it leaves fewer than
/// two file descriptors per allowed client connection: an open HTTP/1.1
/// stream holds two sockets (the client's and the provider's).
///
/// Why: many systems start services with a soft limit of 1,024 (systemd's
/// default, and most shells'), far below the hard limit. That caps a
/// gateway at about 500 open streams, past which `accept` fails with
/// `EMFILE` while memory and CPU are to spare. Go's runtime raises the soft
/// limit the same way at start. Where the platform has no such limit,
/// returns `u64::MAX`.
///
/// ```
/// let limit = modelux::gateway::raise_open_files_limit(100);
/// assert!(limit > 0);
/// ```
pub fn raise_open_files_limit(max_connections: usize) -> u64 {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .ok();
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open files limit");
            before.unwrap_or(u64::MAX)
        }
    };
    if let Some(before) = before.filter(|b| *b < limit) {
        tracing::info!(from = before, to = limit, "raised the open files limit");
    }
    let needed = 2 * max_connections as u64 + RESERVED_FDS;
    if limit < needed {
        tracing::warn!(
            open_files_limit = limit,
            max_connections,
            streams = limit.saturating_sub(RESERVED_FDS) / 2,
            "the open files limit allows fewer streams than server.max_connections: raise the hard limit (ulimit -Hn, LimitNOFILE=) to at least {needed}"
        );
    }
    limit
}

/// Per-connection failures (the client reset before `accept` returned) are
/// skipped; anything else, such as running out of file descriptors, is
/// logged and waited out rather than retried in a busy loop.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client that stops reading pushes back within a few hundred KB:
    /// without `TCP_NOTSENT_LOWAT` the kernel took about 4 MB first, which
    /// at an LLM's rate is minutes of tokens streamed to nobody before the
    /// stream watch could see the client had stopped.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn a_client_that_stops_reading_pushes_back_within_a_few_hundred_kb() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client.connect(&addr.into()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        tune_accepted(&server);
        assert!(server.nodelay().unwrap());
        let chunk = vec![b'x'; 16 * 1024];
        let mut written = 0usize;
        // Write until the socket has not become writable for 300 ms.
        while let Ok(ready) =
            tokio::time::timeout(Duration::from_millis(300), server.writable()).await
        {
            ready.unwrap();
            match server.try_write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            assert!(written < 64 << 20, "never pushed back");
        }
        assert!(
            written < 512 * 1024,
            "{written} bytes taken for a client that reads nothing"
        );
        drop(client);
    }

    /// Writes wait while the peer reads slowly, and fail once it has read
    /// nothing for the whole limit.
    #[tokio::test(start_paused = true)]
    async fn writes_fail_only_after_no_progress_for_the_limit() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut ours = SendTimeout::new(ours, Duration::from_secs(60));
        let block = [7u8; 1024];
        // Fill the pipe; then the peer reads a block every 50 s, each read
        // letting one more write through: slow, but never cut.
        ours.write_all(&block).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                peer.read_exact(&mut buf).await.unwrap();
            }
            peer // kept open, never read again
        });
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            ours.write_all(&block).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_secs(250));
        let _peer = reader.await.unwrap();
        // Now the peer stops reading: the write fails 60 s later, not before.
        let start = tokio::time::Instant::now();
        let err = ours.write_all(&block).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
