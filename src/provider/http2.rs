//! HTTP/2 to a provider: another connection opens when the open ones are full.
//!
//! Why: one HTTP/2 connection carries at most the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` streams at once (often 100 to 256), and
//! hyper-util's pool keeps exactly one HTTP/2 connection per host (RFC 9113
//! §9.1 says a client SHOULD NOT open more; hyperium/hyper#2197 and #3623), so
//! the request after the limit waits inside the client until some stream
//! ends. LLM streams last seconds to minutes: under load that wait turns into
//! attempt timeouts for requests the provider would have served at once.
//!
//! So each host gets up to [`MAX_CONNECTIONS`] *slots*. A slot is its own
//! hyper-util pool (hence at most one HTTP/2 connection, reconnected by
//! hyper-util when it dies) and a count of the streams open on it. A request
//! takes the first slot carrying fewer than the provider's
//! `http2_max_streams` and holds it (a [`Lease`]) until its response body is
//! dropped. Connections therefore fill in order, and the spare ones close
//! after the pool's idle timeout once traffic falls. Go's `net/http` client
//! does the same by default (`StrictMaxConcurrentStreams: false`). When every
//! slot is full, the request takes the least loaded one and waits there for a
//! stream to end, which bounds the connections to a host.
//!
//! The slot is chosen per request (never reserved ahead), and its count is a
//! single atomic: no lock is held while a request is in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::client::Pool;

/// The most HTTP/2 connections kept to one host (25,600 streams at the
/// default of 100 per connection). Past it, requests wait on the least
/// loaded connection for a stream to end.
///
/// ```
/// use modelux::provider::{DEFAULT_HTTP2_MAX_STREAMS, MAX_HTTP2_CONNECTIONS};
/// assert_eq!(MAX_HTTP2_CONNECTIONS * DEFAULT_HTTP2_MAX_STREAMS as usize, 25_600);
/// ```
pub const MAX_CONNECTIONS: usize = 256;

/// Hosts whose entries are dropped once idle when the table grows past this
/// (a table entry is a host named by a provider's `base_url`, so the table
/// grows with configs, not with traffic).
const PRUNE_ABOVE: usize = 64;

/// Makes a slot's pool: the same builder and connector for every slot of a host.
pub(super) type MakePool = Arc<dyn Fn() -> Pool + Send + Sync>;

/// The HTTP/2 slots of every host, for one scheme.
pub(super) struct Hosts {
    make: MakePool,
    hosts: Mutex<HashMap<Box<str>, Arc<Host>>>,
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts = self.hosts.lock().map(|h| h.len()).unwrap_or(0);
        f.debug_struct("Hosts").field("hosts", &hosts).finish()
    }
}

struct Host {
    authority: Box<str>,
    make: MakePool,
    slots: Box<[Slot]>,
    /// When "every connection is full" was last logged (ms since `born`):
    /// at most once per [`FULL_WARN_EVERY`], not once per request.
    warned_ms: AtomicU64,
    born: std::time::Instant,
}

/// How often a host whose connections are all full is logged.
const FULL_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Default)]
struct Slot {
    pool: OnceLock<Box<Pool>>,
    streams: AtomicU32,
}

/// A stream's place on one HTTP/2 connection: released when dropped.
pub(super) struct Lease {
    host: Arc<Host>,
    slot: usize,
}

impl Hosts {
    pub(super) fn new(make: MakePool) -> Hosts {
        Hosts {
            make,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a stream slot on a connection to `authority` that carries fewer
    /// than `max_streams` streams, or on the least loaded one if all are full.
    pub(super) fn lease(&self, authority: &str, max_streams: u32) -> Lease {
        let host = self.host(authority);
        let slot = host.pick(max_streams.max(1));
        Lease { host, slot }
    }

    fn host(&self, authority: &str) -> Arc<Host> {
        // A poisoned lock only means another request panicked while holding
        // it; the map itself is still consistent.
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = hosts.get(authority) {
            return h.clone();
        }
        if hosts.len() >= PRUNE_ABOVE {
            // Only the table and no lease hold it: no stream in flight.
            hosts.retain(|_, h| Arc::strong_count(h) > 1);
        }
        let host = Arc::new(Host {
            authority: authority.into(),
            make: self.make.clone(),
            slots: (0..MAX_CONNECTIONS).map(|_| Slot::default()).collect(),
            warned_ms: AtomicU64::new(u64::MAX),
            born: std::time::Instant::now(),
        });
        hosts.insert(authority.into(), host.clone());
        host
    }

    #[cfg(test)]
    fn streams(&self, authority: &str) -> Vec<u32> {
        let h = self.host(authority);
        let n: Vec<u32> = h
            .slots
            .iter()
            .map(|s| s.streams.load(Ordering::Acquire))
            .collect();
        let used = n.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
        n[..used].to_vec()
    }
}

impl Host {
    fn pick(&self, max_streams: u32) -> usize {
        let mut least = (u32::MAX, 0);
        for (i, slot) in self.slots.iter().enumerate() {
            match slot
                .streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max_streams).then_some(n + 1)
                }) {
                Ok(_) => return i,
                Err(n) if n < least.0 => least = (n, i),
                Err(_) => {}
            }
        }
        let (open, i) = least;
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.warned_ms.load(Ordering::Relaxed);
        if (last == u64::MAX || now.saturating_sub(last) >= FULL_WARN_EVERY.as_millis() as u64)
            && self
                .warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                host = %self.authority,
                connections = MAX_CONNECTIONS,
                streams = open,
                "every HTTP/2 connection to the provider is full: requests wait for a stream to end"
            );
        }
        self.slots[i].streams.fetch_add(1, Ordering::AcqRel);
        i
    }
}

impl Lease {
    /// The pool (one HTTP/2 connection) this lease's stream goes through.
    pub(super) fn pool(&self) -> &Pool {
        let host = &*self.host;
        host.slots[self.slot].pool.get_or_init(|| {
            if self.slot > 0 {
                tracing::debug!(
                    host = %host.authority,
                    connection = self.slot + 1,
                    "the open HTTP/2 connections to the provider are full: opening another"
                );
            }
            Box::new((host.make)())
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.host.slots[self.slot]
            .streams
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("host", &self.host.authority)
            .field("connection", &self.slot)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Hosts {
        let client = super::super::client::http_client();
        Hosts::new(Arc::new(move || client.http1_pool().clone()))
    }

    #[test]
    fn streams_fill_one_connection_before_the_next() {
        let h = hosts();
        let a: Vec<Lease> = (0..5).map(|_| h.lease("p:1", 2)).collect();
        assert_eq!(h.streams("p:1"), [2, 2, 1]);
        // Another host has its own connections.
        let b = h.lease("q:1", 2);
        assert_eq!(h.streams("q:1"), [1]);
        // A freed place is taken before a new connection is opened.
        let mut a = a;
        a.remove(1);
        assert_eq!(h.streams("p:1"), [1, 2, 1]);
        a.push(h.lease("p:1", 2));
        assert_eq!(h.streams("p:1"), [2, 2, 1]);
        drop(a);
        drop(b);
        assert_eq!(h.streams("p:1"), [0u32; 0]);
        assert_eq!(h.streams("q:1"), [0u32; 0]);
    }

    #[test]
    fn when_every_connection_is_full_the_least_loaded_one_queues() {
        let h = hosts();
        let mut held: Vec<Lease> = (0..MAX_CONNECTIONS).map(|_| h.lease("p:1", 1)).collect();
        held.swap_remove(7);
        let extra: Vec<Lease> = (0..3).map(|_| h.lease("p:1", 1)).collect();
        let n = h.streams("p:1");
        assert_eq!(n.len(), MAX_CONNECTIONS);
        // The first goes to the free place; then the least loaded, in order.
        assert_eq!(&n[..9], [2, 2, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(n.iter().sum::<u32>(), MAX_CONNECTIONS as u32 + 2);
        drop(extra);
        drop(held);
        assert!(h.streams("p:1").is_empty());
    }

    #[test]
    fn idle_hosts_are_pruned_when_the_table_grows() {
        let h = hosts();
        let busy = h.lease("busy:1", 10);
        for i in 0..PRUNE_ABOVE * 2 {
            drop(h.lease(&format!("h{i}:1"), 10));
        }
        let len = h.hosts.lock().unwrap().len();
        assert!(len <= PRUNE_ABOVE + 1, "{len}");
        assert!(h.hosts.lock().unwrap().contains_key("busy:1"));
        drop(busy);
    }
}
