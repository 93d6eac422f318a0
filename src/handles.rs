//! Metric handles registered once and reused on the request path.
//!
//! `metrics::counter!(name, labels…)` builds a `Key` and looks it up in the
//! recorder's registry on every call. For the per-request metrics that is a
//! few hundred instructions each, so the hot ones keep the handle the
//! recorder returned in a [`Cached`] slot next to the thing they describe
//! (a target, a route, a health entry).
//!
//! A handle belongs to the recorder that registered it. Tests install local
//! recorders (`metrics::with_local_recorder`) and dry-run replay runs the
//! layers under a `NoopRecorder`, so a cached handle is used only while the
//! current recorder is the one it came from, and only for the labels it was
//! registered with; otherwise the call registers afresh, exactly as the
//! macros do. The slot is filled once, by the first recorder that uses it:
//! under another recorder the cost is the macros' cost, never a wrong
//! destination.

use std::sync::{Arc, OnceLock};

/// Identifies the current recorder (the local one if set, else the global
/// one, else the no-op one) by its address.
fn recorder_id() -> usize {
    metrics::with_recorder(|r| r as *const dyn metrics::Recorder as *const () as usize)
}

/// What a handle was registered for: a recorder and up to two label values
/// (by address: labels come from the config and are shared `Arc<str>`s).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Scope {
    recorder: usize,
    labels: [usize; 2],
}

impl Scope {
    fn current(labels: &[&Arc<str>]) -> Self {
        let mut l = [0usize; 2];
        for (slot, label) in l.iter_mut().zip(labels) {
            *slot = Arc::as_ptr(label) as *const u8 as usize;
        }
        Scope {
            recorder: recorder_id(),
            labels: l,
        }
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
    /// cached when the slot is still empty). `register` must use exactly
    /// `labels`, in order, plus any constant labels.
    pub(crate) fn with<R>(
        &self,
        labels: &[&Arc<str>],
        register: impl FnOnce() -> T,
        f: impl FnOnce(&T) -> R,
    ) -> R {
        let scope = Scope::current(labels);
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
    /// registering it with `register` (and keeping it) when the one held
    /// does not match. `register` must use exactly `labels`, in order, plus
    /// any constant labels.
    pub(crate) fn with<R>(
        &mut self,
        labels: &[&Arc<str>],
        register: impl FnOnce() -> T,
        f: impl FnOnce(&T) -> R,
    ) -> R {
        let scope = Scope::current(labels);
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
    /// `modelux_cost_usd_micros_total`.
    pub(crate) cost: Cached<metrics::Counter>,
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

    #[test]
    fn a_handle_is_registered_once_per_recorder_and_never_crosses_recorders() {
        let cache = Cached::new();
        let route: Arc<str> = "r".into();
        let (a, b) = (Rec::default(), Rec::default());
        metrics::with_local_recorder(&a, || {
            for _ in 0..3 {
                count(&cache, &route);
            }
        });
        assert_eq!(
            a.registered.load(Ordering::Relaxed),
            1,
            "cached after the first call"
        );
        assert_eq!(a.total(), 3);
        // Another recorder gets its own handles, not the cached ones.
        metrics::with_local_recorder(&b, || {
            for _ in 0..2 {
                count(&cache, &route);
            }
        });
        assert_eq!(a.total(), 3, "nothing leaked into the first recorder");
        assert_eq!(b.total(), 2);
        // The first recorder still uses the cached handle.
        metrics::with_local_recorder(&a, || count(&cache, &route));
        assert_eq!(a.total(), 4);
        assert_eq!(a.registered.load(Ordering::Relaxed), 1);
        // Under no recorder at all, nothing is recorded anywhere.
        count(&cache, &route);
        assert_eq!((a.total(), b.total()), (4, 2));
    }

    #[test]
    fn changed_labels_are_registered_afresh() {
        let cache = Cached::new();
        let rec = Rec::default();
        let (one, two): (Arc<str>, Arc<str>) = ("one".into(), "two".into());
        metrics::with_local_recorder(&rec, || {
            count(&cache, &one);
            count(&cache, &two);
        });
        let mut labels = rec.labels();
        labels.sort();
        assert_eq!(labels, ["one", "two"]);
        assert_eq!(rec.total(), 2);
    }
}
