//! Cuts streams whose client stopped taking them.
//!
//! Why this exists: hyper polls a response body only when the client can
//! take more. Over HTTP/1.1 a client that stops reading fills its socket and
//! the send timeout in `server.rs` closes the connection. Over HTTP/2 one
//! stream can stop on its own: its flow-control window stays shut while the
//! connection stays alive (pings are answered, other streams move, the
//! socket drains). Nothing polls that body again, so no timer inside it can
//! fire, and the provider's stream behind it, a paid call, was held until the
//! client reset the stream or closed the connection.
//!
//! So every open SSE body is registered here. A body notes the tick at which
//! it handed hyper a chunk and was not asked for the next one; one task per
//! gateway ticks every [`TICK`] and, for a body that has been waiting on its
//! client for [`SEND_TIMEOUT`](super::SEND_TIMEOUT) or longer, takes its
//! upstream stream away and drops it. That cancels the provider's call and
//! ends the request's trace as `client_disconnected`; if hyper ever polls the
//! body again it fails, so an HTTP/2 client gets a reset stream, never an
//! answer that looks complete. The server hears of the cut ([`CutHook`]): if
//! the client does not read the stream again within another `SEND_TIMEOUT`,
//! its connection is closed, as the stream would otherwise keep it open.
//!
//! What it costs per chunk: a relaxed atomic store and an uncontended lock.
//! Per stream: one small allocation and an entry in a map that is removed when
//! the body is dropped, so the map holds exactly the open streams.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::handlers::Admitted;
use crate::provider::ChunkStream;

/// How often the watch looks at the open streams.
const TICK: Duration = Duration::from_secs(5);

/// Ticks a body may wait on its client: one more than `SEND_TIMEOUT / TICK`,
/// so a stream is cut between 60 and 65 s after its client stopped, never
/// before.
const LIMIT_TICKS: u32 = (super::SEND_TIMEOUT.as_secs() / TICK.as_secs()) as u32 + 1;

/// The open SSE bodies of one gateway (cheap to clone).
#[derive(Clone, Default)]
pub(crate) struct StreamWatch {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    streams: Mutex<HashMap<u64, Weak<Watched>>>,
    next_key: AtomicU64,
    /// Ticks since the watch started; bodies note it, the task advances it.
    tick: AtomicU32,
    task_started: AtomicBool,
}

/// One body's upstream stream, shared with the watch so it can be dropped
/// while hyper holds the body without polling it.
struct Watched {
    /// Its key in the watch's map.
    key: u64,
    /// `tick + 1` when the body last handed hyper a chunk and was not asked
    /// for another since; 0 while it is being polled or waits on the provider.
    waiting_since: AtomicU32,
    /// `None` once the watch cut it.
    stream: Mutex<Option<Upstream>>,
    /// Run when the watch cuts the stream (see [`CutHook`]).
    on_cut: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// What a cut drops: the upstream stream, then the request's
/// `max_in_flight` slot (in that order: the stream's trace record is queued
/// before the count falls, which shutdown waits on before the traffic log's
/// last flush). Without the slot here, a cut HTTP/2 stream kept it until
/// its connection closed, 60 s later.
struct Upstream {
    stream: ChunkStream,
    _permit: Option<Admitted>,
}

/// Lets the server learn that the watch cut a stream: over HTTP/2 the
/// stream's client has shut its window, hyper will not poll the body again,
/// and only closing the connection frees it (the server marks it so).
#[derive(Clone)]
pub(crate) struct CutHook(Weak<Watched>);

impl CutHook {
    /// `f` runs once, when (if) the watch cuts the stream.
    pub(crate) fn set(&self, f: impl FnOnce() + Send + 'static) {
        if let Some(w) = self.0.upgrade() {
            *w.on_cut.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
        }
    }
}

/// The error a cut body fails with if hyper polls it again.
#[derive(Debug)]
pub(crate) struct ClientStalled;

impl fmt::Display for ClientStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the client took nothing from this stream for {} s",
            super::SEND_TIMEOUT.as_secs()
        )
    }
}

impl std::error::Error for ClientStalled {}

impl StreamWatch {
    /// Registers `stream`, starting the watch's task on first use (a body is
    /// only ever built inside the runtime that serves it).
    pub(crate) fn watch(&self, stream: ChunkStream, permit: Option<Admitted>) -> WatchedStream {
        if !self.inner.task_started.swap(true, Ordering::Relaxed) {
            tokio::spawn(run(Started(Arc::downgrade(&self.inner))));
        }
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let watched = Arc::new(Watched {
            key,
            waiting_since: AtomicU32::new(0),
            stream: Mutex::new(Some(Upstream {
                stream,
                _permit: permit,
            })),
            on_cut: Mutex::new(None),
        });
        self.inner.lock().insert(key, Arc::downgrade(&watched));
        WatchedStream {
            watched,
            watch: self.inner.clone(),
        }
    }

    /// Open streams (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().len()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Weak<Watched>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Advances the tick and cuts the streams that waited too long.
    fn sweep(&self) -> usize {
        let now = self.tick.fetch_add(1, Ordering::Relaxed) + 2;
        let mut cut = Vec::new();
        for w in self.lock().values() {
            let Some(w) = w.upgrade() else { continue };
            let since = w.waiting_since.load(Ordering::Relaxed);
            if since != 0 && now.wrapping_sub(since) >= LIMIT_TICKS {
                let mut stream = w.lock();
                // Unless its client asked for more in the meantime.
                if w.waiting_since.load(Ordering::Relaxed) == since {
                    if let Some(s) = stream.take() {
                        let hook = w
                            .on_cut
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .take();
                        cut.push((s, hook));
                    }
                }
            }
        }
        // Dropped outside the map's lock: dropping a stream ends its trace
        // and releases its provider connection.
        let n = cut.len();
        for (stream, hook) in cut {
            drop(stream);
            if let Some(hook) = hook {
                hook();
            }
        }
        n
    }
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, Option<Upstream>> {
        self.stream.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clears `task_started` when the watch's task ends or is dropped, even
/// unpolled (its runtime shut down first: a gateway shared between runtimes,
/// as tests do), so the next stream registered starts another.
struct Started(Weak<Inner>);

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.task_started.store(false, Ordering::Relaxed);
        }
    }
}

/// The watch's task: ends with the gateway and its last open stream.
async fn run(started: Started) {
    let inner = started.0.clone();
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let n = inner.sweep();
        if n > 0 {
            tracing::warn!(
                streams = n,
                "cut streams whose client took nothing for {} s",
                super::SEND_TIMEOUT.as_secs()
            );
        }
    }
}

/// A body's handle on its registered upstream stream.
pub(crate) struct WatchedStream {
    watched: Arc<Watched>,
    watch: Arc<Inner>,
}

impl WatchedStream {
    /// The upstream stream, or `Err` once the watch cut it (or after
    /// [`release`](Self::release)). Marks the body as no longer waiting on
    /// its client.
    pub(crate) fn stream(&self) -> Result<Guard<'_>, ClientStalled> {
        self.watched.waiting_since.store(0, Ordering::Relaxed);
        let g = self.watched.lock();
        if g.is_some() {
            Ok(Guard(g))
        } else {
            Err(ClientStalled)
        }
    }

    /// The hook through which the server hears of a cut.
    pub(crate) fn cut_hook(&self) -> CutHook {
        CutHook(Arc::downgrade(&self.watched))
    }

    /// The body handed hyper a chunk: from now it waits on the client.
    pub(crate) fn handed_over(&self) {
        let now = self.watch.tick.load(Ordering::Relaxed) + 1;
        self.watched.waiting_since.store(now, Ordering::Relaxed);
    }

    /// Drops the upstream stream now (it ended); the watch has nothing left
    /// to cut.
    pub(crate) fn release(&self) {
        drop(self.watched.lock().take());
        self.watch.lock().remove(&self.watched.key);
    }
}

impl Drop for WatchedStream {
    fn drop(&mut self) {
        self.watch.lock().remove(&self.watched.key);
    }
}

/// The locked upstream stream of a body that was not cut.
pub(crate) struct Guard<'a>(MutexGuard<'a, Option<Upstream>>);

impl std::ops::Deref for Guard<'_> {
    type Target = ChunkStream;
    fn deref(&self) -> &ChunkStream {
        &self
            .0
            .as_ref()
            .expect("checked when the guard was made")
            .stream
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut ChunkStream {
        &mut self
            .0
            .as_mut()
            .expect("checked when the guard was made")
            .stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn endless() -> ChunkStream {
        Box::pin(futures_util::stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waiting_on_its_client_is_cut_after_the_send_timeout_not_before() {
        let watch = StreamWatch::default();
        let stalled = watch.watch(endless(), None);
        let reading = watch.watch(endless(), None);
        let provider = watch.watch(endless(), None);
        assert_eq!(watch.len(), 3);
        tokio::task::yield_now().await; // the watch's task starts: it looks every 5 s
                                        // `provider` waits on its provider: polled, never handed over.
        drop(provider.stream().unwrap());
        // The worst case for "never before": the client stops just before
        // the watch looks.
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        stalled.handed_over();
        // `reading`'s client asks for the next chunk every 10 s or less.
        let limit = super::super::SEND_TIMEOUT.as_millis() as u64;
        let mut t = 0;
        for step in [10_000, 10_000, 10_000, 10_000, 10_000, 9_900, 6_100, 30_000] {
            tokio::time::sleep(Duration::from_millis(step)).await;
            t += step;
            drop(reading.stream().expect("a client that reads is never cut"));
            reading.handed_over();
            let cut = stalled.watched.lock().is_none();
            if t < limit {
                assert!(!cut, "cut after {t} ms, before the send timeout");
            } else if t >= limit + TICK.as_millis() as u64 + 1_000 {
                assert!(cut, "still held {t} ms after its client stopped");
            }
        }
        assert!(stalled.stream().is_err());
        assert!(provider.stream().is_ok());
        assert_eq!(
            watch.len(),
            3,
            "a cut stream stays registered until its body is dropped"
        );
    }

    /// A cut frees the request's `max_in_flight` slot with the upstream
    /// stream, not when hyper drops the body (over HTTP/2, with the
    /// connection, 60 s later); so does the stream's end.
    #[tokio::test(start_paused = true)]
    async fn a_cut_or_ended_stream_frees_its_in_flight_slot_at_once() {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watch = StreamWatch::default();
        let stalled = watch.watch(endless(), Admitted::try_new(&count, 10));
        let ended = watch.watch(endless(), Admitted::try_new(&count, 10));
        assert_eq!(count.load(Ordering::Relaxed), 2);
        tokio::task::yield_now().await;
        stalled.handed_over();
        ended.release();
        assert_eq!(
            count.load(Ordering::Relaxed),
            1,
            "freed when the stream ended"
        );
        tokio::time::sleep(super::super::SEND_TIMEOUT + 2 * TICK).await;
        assert!(stalled.stream().is_err(), "cut");
        assert_eq!(count.load(Ordering::Relaxed), 0, "freed at the cut");
        drop((stalled, ended));
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_watch_outliving_its_runtime_starts_again_on_the_next() {
        let watch = StreamWatch::default();
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let first = rt();
        let kept = first.block_on(async { watch.watch(endless(), None) });
        drop(first);
        rt().block_on(async {
            let stalled = watch.watch(endless(), None);
            tokio::task::yield_now().await;
            stalled.handed_over();
            tokio::time::sleep(super::super::SEND_TIMEOUT + TICK + Duration::from_secs(1)).await;
            assert!(stalled.stream().is_err(), "no watch on the second runtime");
        });
        drop(kept);
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_holds_only_open_streams() {
        let watch = StreamWatch::default();
        let a = watch.watch(endless(), None);
        let b = watch.watch(Box::pin(futures_util::stream::empty()), None);
        assert_eq!(watch.len(), 2);
        assert!(b.stream().unwrap().next().await.is_none());
        b.release();
        assert_eq!(watch.len(), 1);
        drop(b);
        assert_eq!(watch.len(), 1);
        drop(a);
        assert_eq!(watch.len(), 0);
    }
}
