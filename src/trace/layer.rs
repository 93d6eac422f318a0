//! [`TraceLayer`]: how a stack gets its [`Traced`] service.

use std::sync::Arc;

use tower::Layer;

use super::{Trace, TraceStore, Traced};

/// Gives every request a decision trace. See the [module docs](super).
///
/// ```
/// use modelux::trace::{TraceLayer, TraceStore};
/// let store = TraceStore::new(1024);
/// let layer = TraceLayer::new(store.clone());
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct TraceLayer {
    store: TraceStore,
    sink: Option<Sink>,
}

/// A sink and whether it reads [`Trace::candidates`], which are rendered
/// from the routing notes only for a sink that does (the traffic recorder
/// does not; a trace read from the store is rendered when it is read).
#[derive(Clone, Debug)]
pub(super) struct Sink {
    pub(super) hook: TraceSink,
    pub(super) candidates: bool,
}

/// A hook called once with every finished trace (after it is stored), on
/// the task that finished the request: it must return quickly and never
/// block (hand the trace to a bounded queue, for example).
///
/// ```
/// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
/// use modelux::trace::{Outcome, Trace, TraceLayer, TraceSinkFn, TraceStore};
/// let failed = Arc::new(AtomicU64::new(0));
/// let f = failed.clone();
/// let sink: TraceSinkFn = Arc::new(move |t: &Trace| {
///     if t.outcome.as_ref().is_some_and(|o| o.status >= 500) {
///         f.fetch_add(1, Ordering::Relaxed);
///     }
/// });
/// let outcome = Outcome { status: 503, class: "5xx".into(), served_by: None, stream_end: None, message: None };
/// sink(&Trace { outcome: Some(outcome), ..Trace::default() });
/// sink(&Trace::default());
/// assert_eq!(failed.load(Ordering::Relaxed), 1);
/// let _layer = TraceLayer::with_sink(TraceStore::new(16), sink);
/// ```
pub type TraceSinkFn = Arc<dyn Fn(&Trace) + Send + Sync>;

/// A [`TraceSinkFn`] with a `Debug` impl.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use modelux::trace::{Trace, TraceSink};
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s = seen.clone();
/// let sink = TraceSink(Arc::new(move |t: &Trace| s.lock().unwrap().push(t.request_id.clone())));
/// (sink.0)(&Trace { request_id: "req-1".into(), ..Trace::default() });
/// assert_eq!(*seen.lock().unwrap(), ["req-1"]);
/// assert_eq!(format!("{sink:?}"), "TraceSink");
/// ```
#[derive(Clone)]
pub struct TraceSink(pub TraceSinkFn);

impl std::fmt::Debug for TraceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceSink")
    }
}

impl TraceLayer {
    /// A layer that keeps finished traces in `store`.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// # use std::{sync::Arc, time::Duration};
    /// # use modelux::api::{ChatCompletion, ChatRequest};
    /// # use modelux::provider::{AttemptRequest, ProviderError, ProviderResponse, Target};
    /// # use modelux::route::{Candidate, Route, RouteRequest};
    /// # let leaf = tower::service_fn(|_: AttemptRequest| async {
    /// #     Ok::<_, ProviderError>(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
    /// # });
    /// # let route = Arc::new(Route::fallback("r", vec![Candidate::new(Arc::new(Target::new("p", "m")), Duration::from_secs(1))]));
    /// # let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
    /// use modelux::fallback::Fallback;
    /// use modelux::trace::{TraceLayer, TraceStore};
    /// use tower::{Layer, ServiceExt};
    /// let store = TraceStore::new(16);
    /// let traced = TraceLayer::new(store.clone()).layer(Fallback::new(leaf));
    /// traced.oneshot(RouteRequest::new(chat, route)).await.unwrap();
    /// // The request had no id: it was given one, and its trace was kept.
    /// assert_eq!(store.len(), 1);
    /// # });
    /// ```
    pub fn new(store: TraceStore) -> Self {
        TraceLayer { store, sink: None }
    }

    /// A layer that keeps finished traces in `store` and also hands each one
    /// to `sink` when its request finishes. With a sink the trace also
    /// carries [`Trace::prompt_chars`], for token estimates.
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicUsize, Ordering}, Arc};
    /// use modelux::trace::{TraceLayer, TraceStore};
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s = seen.clone();
    /// let layer = TraceLayer::with_sink(TraceStore::new(16), Arc::new(move |_t: &modelux::trace::Trace| {
    ///     s.fetch_add(1, Ordering::Relaxed);
    /// }));
    /// # let _ = layer;
    /// ```
    pub fn with_sink(store: TraceStore, sink: TraceSinkFn) -> Self {
        TraceLayer {
            store,
            sink: Some(Sink {
                hook: TraceSink(sink),
                candidates: true,
            }),
        }
    }

    /// [`with_sink`](Self::with_sink) for a sink that never reads
    /// [`Trace::candidates`] (left empty): rendering them costs a few
    /// thousand instructions per request.
    #[cfg(feature = "gateway")]
    pub(crate) fn with_sink_without_candidates(store: TraceStore, sink: TraceSinkFn) -> Self {
        TraceLayer {
            store,
            sink: Some(Sink {
                hook: TraceSink(sink),
                candidates: false,
            }),
        }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced::new(inner, self.store.clone(), self.sink.clone())
    }
}
