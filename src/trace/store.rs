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
    /// Insertion order: each trace's key and the sequence number it was
    /// stored with (a key whose trace was replaced since is stale).
    order: VecDeque<(u64, u64)>,
    map: HashMap<u64, (u64, Finished)>,
    next_seq: u64,
}

impl Inner {
    /// Keyed by the client too: with client keys configured, a request id is
    /// the client's own choice (`x-request-id`), and one client must not
    /// replace or read another's trace by reusing it.
    fn key(&self, client: Option<&str>, request_id: &str) -> u64 {
        self.hasher.hash_one((client, request_id))
    }

    /// Drops the oldest places until at most `capacity` are left (so the
    /// ring stays bounded even when ids repeat); a place whose trace was
    /// replaced since drops nothing.
    fn evict(&mut self) {
        while self.order.len() > self.capacity {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|(s, _)| *s == seq) {
                self.map.remove(&key);
            }
        }
    }
}

impl TraceStore {
    /// A ring holding at most `capacity` traces (at least one).
    ///
    /// ```
    /// use modelux::trace::{Trace, TraceStore};
    /// // A capacity of 0 still keeps the latest trace.
    /// let store = TraceStore::new(0);
    /// store.insert(Trace { request_id: "a".into(), ..Trace::default() });
    /// store.insert(Trace { request_id: "b".into(), ..Trace::default() });
    /// assert_eq!(store.len(), 1);
    /// assert!(store.get("b").is_some());
    /// ```
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        TraceStore {
            inner: Arc::new(Mutex::new(Inner {
                capacity,
                hasher: RandomState::new(),
                order: VecDeque::with_capacity(capacity.min(4096)),
                map: HashMap::with_capacity(capacity.min(4096)),
                next_seq: 0,
            })),
        }
    }

    /// Stores a finished trace, replacing one with the same id.
    ///
    /// ```
    /// use modelux::trace::{Trace, TraceStore};
    /// let store = TraceStore::new(10);
    /// let trace = |route: &str| Trace { request_id: "r1".into(), route: route.into(), ..Trace::default() };
    /// store.insert(trace("chat"));
    /// store.insert(trace("cheap"));
    /// assert_eq!(store.get("r1").unwrap().route, "cheap");
    /// assert_eq!(store.len(), 1);
    /// ```
    pub fn insert(&self, trace: Trace) {
        self.insert_finished(Finished {
            trace,
            ..Finished::default()
        });
    }

    /// Stores a finished trace whose candidate notes are rendered on read.
    ///
    /// A trace that replaces one with the same id leaves the old one's place
    /// in the ring behind (finding it would scan the whole ring under the
    /// lock); that place, when it comes up for eviction, evicts nothing.
    pub(crate) fn insert_finished(&self, finished: Finished) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = i.key(finished.trace.client.as_deref(), &finished.trace.request_id);
        let seq = i.next_seq;
        i.next_seq = i.next_seq.wrapping_add(1);
        i.map.insert(key, (seq, finished));
        i.order.push_back((key, seq));
        i.evict();
    }

    /// Keeps at most `capacity` traces (at least one) from now on, dropping
    /// the oldest at once when the ring holds more: a new config version's
    /// `traces.capacity`.
    ///
    /// ```
    /// use modelux::trace::{Trace, TraceStore};
    /// let store = TraceStore::new(10);
    /// for id in ["a", "b", "c"] {
    ///     store.insert(Trace { request_id: id.into(), ..Trace::default() });
    /// }
    /// store.set_capacity(2);
    /// assert!(store.get("a").is_none());
    /// assert_eq!(store.len(), 2);
    /// ```
    pub fn set_capacity(&self, capacity: usize) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.capacity = capacity.max(1);
        i.evict();
    }

    /// The trace of `request_id` made without a client name (a gateway
    /// with no client keys), if still in the ring.
    ///
    /// ```
    /// use modelux::trace::{Trace, TraceStore};
    /// let store = TraceStore::new(10);
    /// store.insert(Trace { request_id: "r1".into(), route: "chat".into(), ..Trace::default() });
    /// assert_eq!(store.get("r1").unwrap().route, "chat");
    /// assert!(store.get("r2").is_none());
    /// ```
    pub fn get(&self, request_id: &str) -> Option<Trace> {
        self.get_for(request_id, None)
    }

    /// The trace of `request_id` made for `client`, if still in the ring:
    /// another client's trace under the same id is not found.
    ///
    /// ```
    /// use modelux::trace::{Trace, TraceStore};
    /// let store = TraceStore::new(10);
    /// let of = |client: &str| Trace {
    ///     request_id: "req-1".into(),
    ///     client: Some(client.into()),
    ///     ..Trace::default()
    /// };
    /// store.insert(of("team-a"));
    /// store.insert(of("team-b"));
    /// assert_eq!(store.get_for("req-1", Some("team-a")).unwrap().client.as_deref(), Some("team-a"));
    /// assert_eq!(store.get_for("req-1", Some("team-b")).unwrap().client.as_deref(), Some("team-b"));
    /// assert!(store.get("req-1").is_none());
    /// ```
    pub fn get_for(&self, request_id: &str, client: Option<&str>) -> Option<Trace> {
        let i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.map
            .get(&i.key(client, request_id))
            .map(|(_, f)| f)
            .filter(|f| f.trace.request_id == request_id && f.trace.client.as_deref() == client)
            .map(Finished::rendered)
    }

    /// Traces held.
    ///
    /// ```
    /// use modelux::trace::{Trace, TraceStore};
    /// let store = TraceStore::new(10);
    /// assert_eq!(store.len(), 0);
    /// store.insert(Trace { request_id: "r1".into(), ..Trace::default() });
    /// assert_eq!(store.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    /// Whether the ring is empty.
    ///
    /// ```
    /// use modelux::trace::{Trace, TraceStore};
    /// let store = TraceStore::new(10);
    /// assert!(store.is_empty());
    /// store.insert(Trace::default());
    /// assert!(!store.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(id: &str, route: &str) -> Trace {
        Trace {
            request_id: id.into(),
            route: route.into(),
            ..Trace::default()
        }
    }

    #[test]
    fn a_repeated_id_keeps_the_latest_trace_and_the_ring_bounded() {
        let store = TraceStore::new(3);
        store.insert(trace("a", "first"));
        store.insert(trace("b", "b"));
        store.insert(trace("a", "second"));
        assert_eq!(store.get("a").unwrap().route, "second");
        // "a"'s first place comes up for eviction: it must not take the
        // newer "a" with it.
        store.insert(trace("c", "c"));
        assert_eq!(store.get("a").unwrap().route, "second");
        assert!(store.get("b").is_some() && store.get("c").is_some());
        // The same id over and over: places stay at the capacity.
        for n in 0..1000 {
            store.insert(trace("same", &n.to_string()));
        }
        let i = store.inner.lock().unwrap();
        assert!(i.order.len() <= 3 && i.map.len() <= 3);
        assert_eq!(i.map.len(), 1);
        drop(i);
        assert_eq!(store.get("same").unwrap().route, "999");
    }
}
