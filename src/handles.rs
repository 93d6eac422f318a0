//! Metric handles (and response header values) made once and reused on
//! the request path.
//!
//! `metrics::counter!(name, labels…)` builds a `Key` and looks it up in the
//! recorder's registry on every call. For the per-request metrics that is a
//! few hundred instructions each, so the hot ones keep the handle the
//! recorder returned in a [`Cached`] slot next to the thing they describe
//! (a target, a route, a health entry).
//!
//! A handle belongs to the recorder that registered it. Tests install local
//! recorders (`metrics::with_local_recorder`) and dry-run replay runs the
//! layers under a `NoopRecorder`; a local recorder lives on a stack and the
//! next one may well get the same address, so its identity cannot be told
//! by address. Handles are therefore cached only for the *global* recorder,
//! and only once [`cache_metric_handles`] has recorded which one that is
//! (the gateway's [`prometheus`](crate::gateway::prometheus) does): a global
//! recorder is set once and never dropped. Under any other recorder, and
//! before that call, every call registers afresh, exactly as the macros do:
//! the cost is the macros' cost, never a wrong destination. A cached handle
//! is also used only for the label values it was registered with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The address of the global recorder handles may be cached for (0: none).
static CACHEABLE: AtomicUsize = AtomicUsize::new(0);

/// Identifies the current recorder (the local one if set, else the global
/// one, else the no-op one) by its address.
fn recorder_id() -> usize {
    metrics::with_recorder(|r| r as *const dyn metrics::Recorder as *const () as usize)
}

/// Lets the layers keep the metric handles they register with the global
/// `metrics` recorder, instead of looking each metric up by name and labels
/// on every request (a few hundred instructions per metric). Call it once,
/// after installing the global recorder; the reference gateway's
/// `gateway::prometheus()` does. Called before a global recorder is
/// installed, it allows caching only for the no-op fallback recorder, so
/// call it again once one is.
///
/// Handles are only reused while the global recorder is the current one:
/// under a local recorder (`metrics::with_local_recorder`) every call goes
/// to that recorder, as without this call.
///
/// ```
/// modelux::cache_metric_handles();
/// ```
pub fn cache_metric_handles() {
    // A new thread has no local recorder: what it sees is the global one.
    if let Ok(id) = std::thread::spawn(recorder_id).join() {
        CACHEABLE.store(id, Ordering::Relaxed);
    }
}

/// The current recorder's id when handles may be cached for it.
fn cacheable_recorder() -> Option<usize> {
    let id = recorder_id();
    (id == CACHEABLE.load(Ordering::Relaxed)).then_some(id)
}

/// What a handle was registered for: a recorder and up to two label values
/// (by address: labels come from the config and are shared `Arc<str>`s).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Scope {
    recorder: usize,
    labels: [usize; 2],
}

impl Scope {
    /// The scope of `labels` under the current recorder, when handles may be
    /// cached for it.
    fn current(labels: &[&Arc<str>]) -> Option<Self> {
        let recorder = cacheable_recorder()?;
        let mut l = [0usize; 2];
        for (slot, label) in l.iter_mut().zip(labels) {
            *slot = Arc::as_ptr(label) as *const u8 as usize;
        }
        Some(Scope {
            recorder,
            labels: l,
        })
    }
}

/// One metric handle (`Counter`, `Gauge` or `Histogram`), registered on first
/// use and reused while the recorder and the labels are the same.
pub(crate) struct Cached<T> {
    slot: OnceLock<(Scope, T)>,
}

impl<T> Cached<T> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        Cached {
            slot: OnceLock::new(),
        }
    }

    /// Calls `f` with the handle for `labels` under the current recorder:
    /// the cached one when it matches, else one from `register` (which is
    /// cached when the slot is still empty and the recorder is the global
    /// one [`cache_metric_handles`] allowed). `register` must use exactly
    /// `labels`, in order, plus any constant labels.
    pub(crate) fn with<R>(
        &self,
        labels: &[&Arc<str>],
        register: impl FnOnce() -> T,
        f: impl FnOnce(&T) -> R,
    ) -> R {
        let Some(scope) = Scope::current(labels) else {
            return f(&register());
        };
        match self.slot.get() {
            Some((s, h)) if *s == scope => f(h),
            Some(_) => f(&register()),
            None => {
                let h = register();
                match self.slot.set((scope, h)) {
                    Ok(()) => match self.slot.get() {
                        Some((_, h)) => f(h),
                        // `set` succeeded, so the slot holds a value.
                        None => unreachable!("a set OnceLock is never empty"),
                    },
                    // Another thread filled it first; use ours once.
                    Err((_, h)) => f(&h),
                }
            }
        }
    }
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy starts empty: its labels may be changed before it is used.
impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.slot.get().is_some() {
            "Cached(registered)"
        } else {
            "Cached(empty)"
        })
    }
}

/// Equal whatever they cache: a cache is not part of a value's identity.
impl<T> PartialEq for Cached<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A metric handle kept in state the caller already holds mutably (under a
/// lock): like [`Cached`], but replaced when the recorder or the labels
/// change, e.g. after a config swap gave the target new label values.
pub(crate) struct Slot<T> {
    slot: Option<(Scope, T)>,
}

impl<T> Slot<T> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        Slot { slot: None }
    }

    /// Calls `f` with the handle for `labels` under the current recorder,
    /// registering it with `register` when the one held does not match (and
    /// keeping it if the recorder is the global one [`cache_metric_handles`]
    /// allowed). `register` must use exactly `labels`, in order, plus any
    /// constant labels.
    pub(crate) fn with<R>(
        &mut self,
        labels: &[&Arc<str>],
        register: impl FnOnce() -> T,
        f: impl FnOnce(&T) -> R,
    ) -> R {
        let Some(scope) = Scope::current(labels) else {
            return f(&register());
        };
        match &mut self.slot {
            Some((s, h)) if *s == scope => f(h),
            other => f(&other.insert((scope, register())).1),
        }
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.slot.is_some() {
            "Slot(registered)"
        } else {
            "Slot(empty)"
        })
    }
}

/// A name rendered once as an HTTP header value (the gateway's
/// `x-modelux-route`, `-model` and `-provider` response headers), so an
/// answer does not validate and copy the same names on every request.
///
/// The slot keeps the `Arc<str>` it rendered, so the address it compares
/// cannot be freed and reused by another name; a different `Arc` (a field
/// replaced after the first use) gets a fresh rendering every time.
pub(crate) struct NameHeader {
    slot: OnceLock<(Arc<str>, http::HeaderValue)>,
}

impl NameHeader {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        NameHeader {
            slot: OnceLock::new(),
        }
    }

    /// `name` as a header value; one that cannot be sent in a header
    /// (a control character) is `-`.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn get(&self, name: &Arc<str>) -> http::HeaderValue {
        let render = || {
            http::HeaderValue::from_str(name)
                .unwrap_or_else(|_| http::HeaderValue::from_static("-"))
        };
        let (held, value) = self.slot.get_or_init(|| (name.clone(), render()));
        if Arc::ptr_eq(held, name) {
            value.clone()
        } else {
            render()
        }
    }
}

impl Default for NameHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy starts empty: its name may be changed before it is used.
impl Clone for NameHeader {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for NameHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.slot.get().is_some() {
            "NameHeader(rendered)"
        } else {
            "NameHeader(empty)"
        })
    }
}

/// Equal whatever they cache: a cache is not part of a value's identity.
impl PartialEq for NameHeader {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The hot metrics of one target, `{provider, model}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TargetHandles {
    /// `modelux_attempts_total{outcome="ok"}`.
    pub(crate) attempts_ok: Cached<metrics::Counter>,
    /// `modelux_attempt_duration_seconds`.
    pub(crate) attempt_duration: Cached<metrics::Histogram>,
    /// `modelux_tokens_total{kind="prompt"}`.
    pub(crate) prompt_tokens: Cached<metrics::Counter>,
    /// `modelux_tokens_total{kind="completion"}`.
    pub(crate) completion_tokens: Cached<metrics::Counter>,
    /// `modelux_tokens_total{kind="cached_prompt"}`.
    pub(crate) cached_tokens: Cached<metrics::Counter>,
    /// `modelux_cost_usd_micros_total`.
    pub(crate) cost: Cached<metrics::Counter>,
    /// The model's name as a response header value.
    pub(crate) model_header: NameHeader,
    /// The provider's name as a response header value.
    pub(crate) provider_header: NameHeader,
}

/// The hot metrics of one route, `{route}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RouteHandles {
    /// `modelux_requests_total{outcome="ok"}`.
    pub(crate) requests_ok: Cached<metrics::Counter>,
    /// `modelux_request_duration_seconds`.
    pub(crate) duration: Cached<metrics::Histogram>,
    /// `modelux_time_to_first_token_seconds`.
    pub(crate) ttft: Cached<metrics::Histogram>,
    /// The route's name as a response header value.
    pub(crate) name_header: NameHeader,
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Counter, CounterFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// Counts increments per key name, so a test can tell recorders apart.
    #[derive(Default)]
    struct Rec {
        registered: AtomicU64,
        counters: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    }

    struct C(Arc<AtomicU64>);
    impl CounterFn for C {
        fn increment(&self, v: u64) {
            self.0.fetch_add(v, Ordering::Relaxed);
        }
        fn absolute(&self, v: u64) {
            self.0.store(v, Ordering::Relaxed);
        }
    }

    impl Rec {
        fn total(&self) -> u64 {
            let c = self.counters.lock().unwrap();
            c.iter().map(|(_, v)| v.load(Ordering::Relaxed)).sum()
        }
        fn labels(&self) -> Vec<String> {
            let c = self.counters.lock().unwrap();
            c.iter().map(|(k, _)| k.clone()).collect()
        }
    }

    impl Recorder for Rec {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.registered.fetch_add(1, Ordering::Relaxed);
            let v = Arc::new(AtomicU64::new(0));
            let labels: Vec<_> = key.labels().map(|l| l.value().to_owned()).collect();
            self.counters
                .lock()
                .unwrap()
                .push((labels.join(","), v.clone()));
            Counter::from_arc(Arc::new(C(v)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    fn count(cache: &Cached<Counter>, route: &Arc<str>) {
        cache.with(
            &[route],
            || metrics::counter!("c", "route" => route.clone()),
            |c| c.increment(1),
        );
    }

    fn count_slot(slot: &mut Slot<Counter>, route: &Arc<str>) {
        slot.with(
            &[route],
            || metrics::counter!("c", "route" => route.clone()),
            |c| c.increment(1),
        );
    }

    /// One test owns the process's global recorder (it can be set once).
    #[test]
    fn handles_are_cached_for_the_global_recorder_only() {
        let global: &'static Rec = Box::leak(Box::default());
        metrics::set_global_recorder(Global(global)).expect("no other global recorder");
        let cache = Cached::new();
        let mut slot = Slot::new();
        let route: Arc<str> = "r".into();
        // Not allowed yet: registered on every call.
        count(&cache, &route);
        assert_eq!(global.registered.load(Ordering::Relaxed), 1);
        cache_metric_handles();
        for _ in 0..3 {
            count(&cache, &route);
            count_slot(&mut slot, &route);
        }
        // One for the cache, one for the slot.
        assert_eq!(global.registered.load(Ordering::Relaxed), 3);
        assert_eq!(global.total(), 7);
        // A local recorder gets every call, at whatever address it lives,
        // and nothing of it goes to the global one.
        for _ in 0..2 {
            let local = Rec::default();
            metrics::with_local_recorder(&local, || {
                count(&cache, &route);
                count_slot(&mut slot, &route);
            });
            assert_eq!(local.total(), 2);
            assert_eq!(local.registered.load(Ordering::Relaxed), 2);
        }
        assert_eq!(global.total(), 7);
        // Back under the global recorder the cached handles are still used.
        count(&cache, &route);
        count_slot(&mut slot, &route);
        assert_eq!(global.total(), 9);
        assert_eq!(
            global.registered.load(Ordering::Relaxed),
            3,
            "nothing registered again"
        );
        // New label values (a config swap) are registered afresh.
        let other: Arc<str> = "r2".into();
        count(&cache, &other);
        count_slot(&mut slot, &other);
        let mut labels = global.labels();
        labels.sort();
        labels.dedup();
        assert_eq!(labels, ["r", "r2"]);
    }

    /// Forwards to a leaked [`Rec`] so the test can read it after install.
    struct Global(&'static Rec);

    impl Recorder for Global {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, m: &Metadata<'_>) -> Counter {
            self.0.register_counter(key, m)
        }
        fn register_gauge(&self, key: &Key, m: &Metadata<'_>) -> metrics::Gauge {
            self.0.register_gauge(key, m)
        }
        fn register_histogram(&self, key: &Key, m: &Metadata<'_>) -> metrics::Histogram {
            self.0.register_histogram(key, m)
        }
    }

    #[test]
    fn a_name_header_is_rendered_once_per_name_and_never_stale() {
        let slot = NameHeader::new();
        let a: Arc<str> = Arc::from("openai");
        let first = slot.get(&a);
        assert_eq!(first, "openai");
        // The same name again: the rendered value, not a new copy.
        assert_eq!(slot.get(&a).as_bytes().as_ptr(), first.as_bytes().as_ptr());
        // Another name in the same slot (a field replaced after first use).
        let b: Arc<str> = Arc::from("anthropic");
        assert_eq!(slot.get(&b), "anthropic");
        assert_eq!(slot.get(&a), "openai");
        // A name no header can carry.
        assert_eq!(NameHeader::new().get(&Arc::from("a\nb")), "-");
        // A copy starts empty and renders its own name.
        assert_eq!(slot.clone().get(&b), "anthropic");
    }
}
