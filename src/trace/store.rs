use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use super::{Finished, Trace};

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

/// Traces are keyed by a keyed hash of their request id (no copy of the id
/// per insert); a lookup checks the id itself, so a collision can only make
/// a trace unreachable, never return another request's trace.
#[derive(Debug)]
struct Inner {
    capacity: usize,
    hasher: RandomState,
    order: VecDeque<u64>,
    map: HashMap<u64, Finished>,
}

impl Inner {
    fn key(&self, request_id: &str) -> u64 {
        self.hasher.hash_one(request_id)
    }
}

impl TraceStore {
    /// A ring holding at most `capacity` traces (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        TraceStore {
            inner: Arc::new(Mutex::new(Inner {
                capacity,
                hasher: RandomState::new(),
                order: VecDeque::with_capacity(capacity.min(4096)),
                map: HashMap::with_capacity(capacity.min(4096)),
            })),
        }
    }

    /// Stores a finished trace, replacing one with the same id.
    pub fn insert(&self, trace: Trace) {
        self.insert_finished(Finished {
            trace,
            notes: Vec::new(),
        });
    }

    /// Stores a finished trace whose candidate notes are rendered on read.
    pub(crate) fn insert_finished(&self, finished: Finished) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = i.key(&finished.trace.request_id);
        if i.map.insert(key, finished).is_some() {
            i.order.retain(|k| *k != key);
        }
        i.order.push_back(key);
        while i.order.len() > i.capacity {
            if let Some(old) = i.order.pop_front() {
                i.map.remove(&old);
            }
        }
    }

    /// The trace of `request_id`, if still in the ring.
    pub fn get(&self, request_id: &str) -> Option<Trace> {
        let i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.map
            .get(&i.key(request_id))
            .filter(|f| f.trace.request_id == request_id)
            .map(Finished::rendered)
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
