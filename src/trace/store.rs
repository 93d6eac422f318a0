use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::Trace;

/// A bounded in-memory ring of finished traces, looked up by request id.
/// The oldest trace is dropped when the ring is full.
///
/// ```
/// use modelux::trace::{Trace, TraceStore};
/// let store = TraceStore::new(2);
/// for id in ["a", "b", "c"] {
///     store.insert(Trace { request_id: id.into(), ..Trace::default() });
/// }
/// assert!(store.get("a").is_none());
/// assert_eq!(store.get("c").unwrap().request_id, "c");
/// assert_eq!(store.len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct TraceStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    order: VecDeque<Arc<str>>,
    map: HashMap<Arc<str>, Trace>,
}

impl TraceStore {
    /// A ring holding at most `capacity` traces (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        TraceStore {
            inner: Arc::new(Mutex::new(Inner {
                capacity,
                order: VecDeque::with_capacity(capacity.min(4096)),
                map: HashMap::with_capacity(capacity.min(4096)),
            })),
        }
    }

    /// Stores a finished trace, replacing one with the same id.
    pub fn insert(&self, trace: Trace) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id: Arc<str> = Arc::from(trace.request_id.as_str());
        if i.map.insert(id.clone(), trace).is_some() {
            i.order.retain(|k| *k != id);
        }
        i.order.push_back(id);
        while i.order.len() > i.capacity {
            if let Some(old) = i.order.pop_front() {
                i.map.remove(&old);
            }
        }
    }

    /// The trace of `request_id`, if still in the ring.
    pub fn get(&self, request_id: &str) -> Option<Trace> {
        let i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.map.get(request_id).cloned()
    }

    /// Traces held.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
