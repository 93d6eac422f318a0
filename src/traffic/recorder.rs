//! The background writer of the traffic log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::EncodedRecord;
use crate::config::TrafficSettings;
use crate::store::ConfigStore;
use crate::trace::{Trace, TraceSinkFn};

/// How often queued records are written, at the latest: the writer also
/// wakes as soon as the queue is half full, and on [`TrafficRecorder::flush`].
///
/// Why a second: each write is a transaction (on SQLite an fsync), and at
/// 100 ms those fixed costs were over half of what recording cost a
/// request at 1,000 req/s (docs/performance.md). A crash loses at most the
/// last second of records; nothing else waits for them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
/// # let store = modelux::store::open("memory").await.unwrap();
/// use modelux::traffic::FLUSH_INTERVAL;
/// use std::time::Duration;
/// let rec = TrafficRecorder::start(store, &TrafficSettings::default());
/// tokio::time::sleep(Duration::from_millis(1)).await; // the writer's first, immediate tick
/// rec.record(&Trace::default());
/// tokio::time::sleep(FLUSH_INTERVAL / 2).await;
/// assert_eq!(rec.written(), 0);
/// tokio::time::sleep(FLUSH_INTERVAL / 2).await;
/// assert_eq!(rec.written(), 1);
/// # }
/// ```
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How often old records are pruned.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
/// # let store = modelux::store::open("memory").await.unwrap();
/// use modelux::traffic::PRUNE_INTERVAL;
/// let rec = TrafficRecorder::start(store.clone(), &TrafficSettings::default());
/// // A record far older than the retention (24 hours by default).
/// rec.record(&Trace { started_at_unix_ms: 5, ..Trace::default() });
/// rec.flush().await;
/// assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 1);
/// tokio::time::sleep(PRUNE_INTERVAL * 2).await;
/// assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 0);
/// # }
/// ```
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The most records written in one batch.
///
/// ```
/// use modelux::{config::TrafficSettings, traffic::MAX_BATCH};
/// assert_eq!(MAX_BATCH, 2_000);
/// // A full default queue is written in several batches.
/// assert_eq!(TrafficSettings::default().queue.div_ceil(MAX_BATCH), 5);
/// ```
pub const MAX_BATCH: usize = 2_000;

/// Hands finished requests to a background task that appends them to the
/// store in batches every [`FLUSH_INTERVAL`] (sooner when the queue is half
/// full) and prunes old records every [`PRUNE_INTERVAL`].
///
/// The queue is bounded: [`record`](Self::record) never waits. When the
/// queue is full (the store is slow or down) the record is dropped and
/// counted in `modelux_traffic_records_dropped_total` and
/// [`dropped`](Self::dropped). A failed write is logged and its batch
/// dropped (counted the same way). The writer stops when every handle is
/// gone, after writing what is queued.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use modelux::config::TrafficSettings;
/// use modelux::traffic::TrafficRecorder;
/// let store = modelux::store::open("memory").await.unwrap();
/// let rec = TrafficRecorder::start(store.clone(), &TrafficSettings::default());
/// rec.record(&modelux::trace::Trace { request_id: "r".into(), started_at_unix_ms: 5, ..Default::default() });
/// rec.flush().await;
/// assert_eq!(store.traffic_since(0, u64::MAX, 10).await.unwrap().len(), 1);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TrafficRecorder {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    /// Free queue slots at or below which a record wakes the writer early.
    wake_at: usize,
}

#[derive(Debug)]
struct Shared {
    enabled: AtomicBool,
    dropped: AtomicU64,
    written: AtomicU64,
    retention_ms: AtomicU64,
    max_records: AtomicU64,
    /// Wakes the writer before its tick (queue half full, or a flush).
    wake: tokio::sync::Notify,
    /// The last write's error, `None` once a write succeeds again.
    write_error: std::sync::Mutex<Option<String>>,
}

#[derive(Debug)]
enum Msg {
    Record(EncodedRecord),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl TrafficRecorder {
    /// Starts the writer task on the current Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
    /// # let store = modelux::store::open("memory").await.unwrap();
    /// let rec = TrafficRecorder::start(store.clone(), &TrafficSettings::default());
    /// rec.record(&Trace { request_id: "r1".into(), started_at_unix_ms: 5, ..Trace::default() });
    /// rec.flush().await;
    /// assert_eq!(store.traffic_since(0, 10, 10).await.unwrap()[0].request_id, "r1");
    /// # }
    /// ```
    pub fn start(store: Arc<dyn ConfigStore>, settings: &TrafficSettings) -> Self {
        let queue = settings.queue.max(1);
        let (tx, rx) = mpsc::channel(queue);
        let shared = Arc::new(Shared {
            enabled: AtomicBool::new(settings.enabled),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            retention_ms: AtomicU64::new(settings.retention_hours.saturating_mul(3_600_000)),
            max_records: AtomicU64::new(settings.max_records),
            wake: tokio::sync::Notify::new(),
            write_error: std::sync::Mutex::new(None),
        });
        tokio::spawn(writer(rx, store, shared.clone()));
        TrafficRecorder {
            tx,
            shared,
            wake_at: queue / 2,
        }
    }

    /// Applies new settings (from a new config version): switching
    /// recording on or off, retention and size cap. The queue keeps its size.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
    /// # let store = modelux::store::open("memory").await.unwrap();
    /// let rec = TrafficRecorder::start(store.clone(), &TrafficSettings::default());
    /// rec.update(&TrafficSettings { enabled: false, ..TrafficSettings::default() });
    /// rec.record(&Trace::default());
    /// rec.flush().await;
    /// // Switched off: the record was neither written nor counted as dropped.
    /// assert_eq!((rec.written(), rec.dropped()), (0, 0));
    /// assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 0);
    /// # }
    /// ```
    pub fn update(&self, settings: &TrafficSettings) {
        let s = &self.shared;
        s.enabled.store(settings.enabled, Ordering::Relaxed);
        s.retention_ms.store(
            settings.retention_hours.saturating_mul(3_600_000),
            Ordering::Relaxed,
        );
        s.max_records.store(settings.max_records, Ordering::Relaxed);
    }

    /// Queues the record of a finished request; never waits. The record is
    /// encoded here, into one allocation, so the writer only concatenates.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
    /// # let store = modelux::store::open("memory").await.unwrap();
    /// let rec = TrafficRecorder::start(store.clone(), &TrafficSettings::default());
    /// for (id, at) in [("a", 10), ("b", 20)] {
    ///     rec.record(&Trace { request_id: id.into(), started_at_unix_ms: at, ..Trace::default() });
    /// }
    /// rec.flush().await;
    /// let ids: Vec<_> = store.traffic_since(0, 100, 10).await.unwrap().into_iter().map(|r| r.request_id).collect();
    /// assert_eq!(ids, ["a", "b"]);
    /// # }
    /// ```
    pub fn record(&self, trace: &Trace) {
        if !self.shared.enabled.load(Ordering::Relaxed) {
            return;
        }
        let rec = EncodedRecord::from_trace(trace);
        if self.tx.try_send(Msg::Record(rec)).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("modelux_traffic_records_dropped_total").increment(1);
        } else if self.tx.capacity() <= self.wake_at {
            // A burst: write now rather than drop what the next ones bring.
            self.shared.wake.notify_one();
        }
    }

    /// The finish hook for [`TraceLayer::with_sink`](crate::trace::TraceLayer::with_sink).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
    /// # let store = modelux::store::open("memory").await.unwrap();
    /// let rec = TrafficRecorder::start(store, &TrafficSettings::default());
    /// let sink = rec.sink();
    /// sink(&Trace { request_id: "r1".into(), ..Trace::default() });
    /// rec.flush().await;
    /// assert_eq!(rec.written(), 1);
    /// # }
    /// ```
    pub fn sink(&self) -> TraceSinkFn {
        let me = self.clone();
        Arc::new(move |t: &Trace| me.record(t))
    }

    /// Records dropped so far (queue full or failed writes).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
    /// # let store = modelux::store::open("memory").await.unwrap();
    /// let rec = TrafficRecorder::start(store, &TrafficSettings { queue: 1, ..TrafficSettings::default() });
    /// // The writer has not run yet: the second record finds the queue full.
    /// rec.record(&Trace::default());
    /// rec.record(&Trace::default());
    /// assert_eq!(rec.dropped(), 1);
    /// rec.flush().await;
    /// assert_eq!(rec.written(), 1);
    /// # }
    /// ```
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records written so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
    /// # let store = modelux::store::open("memory").await.unwrap();
    /// let rec = TrafficRecorder::start(store, &TrafficSettings::default());
    /// assert_eq!(rec.written(), 0);
    /// for _ in 0..3 {
    ///     rec.record(&Trace::default());
    /// }
    /// rec.flush().await;
    /// assert_eq!(rec.written(), 3);
    /// # }
    /// ```
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Why the last write to the store failed, until one succeeds again: a
    /// store that answers reads but refuses writes (a locked SQLite file, a
    /// PostgreSQL standby after a failover) shows here, not in reads.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
    /// # use sqlx::Connection;
    /// // `url` names a SQLite file in a temporary directory.
    /// # let dir = std::env::temp_dir().join(format!("modelux-doc-write-error-{}", std::process::id()));
    /// # let url = format!("sqlite:{}", dir.join("config.db").display());
    /// let rec = TrafficRecorder::start(modelux::store::open(&url).await.unwrap(), &TrafficSettings::default());
    /// rec.record(&Trace::default());
    /// rec.flush().await;
    /// assert_eq!(rec.write_error(), None);
    /// // Another process breaks the database under the gateway.
    /// let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    /// sqlx::query("DROP TABLE modelux_traffic_pages").execute(&mut other).await.unwrap();
    /// rec.record(&Trace::default());
    /// rec.flush().await;
    /// assert!(rec.write_error().unwrap().contains("modelux_traffic_pages"));
    /// assert_eq!(rec.dropped(), 1);
    /// # drop((rec, other));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub fn write_error(&self) -> Option<String> {
        self.shared
            .write_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until everything queued before this call is written (or
    /// dropped). Waits for room in the queue, so do not call it on a
    /// request path.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use modelux::{config::TrafficSettings, trace::Trace, traffic::TrafficRecorder};
    /// # let store = modelux::store::open("memory").await.unwrap();
    /// let rec = TrafficRecorder::start(store.clone(), &TrafficSettings::default());
    /// rec.record(&Trace::default());
    /// // Written now, not at the next `FLUSH_INTERVAL` tick.
    /// rec.flush().await;
    /// assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 1);
    /// # }
    /// ```
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            self.shared.wake.notify_one();
            let _ = rx.await;
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn writer(mut rx: mpsc::Receiver<Msg>, store: Arc<dyn ConfigStore>, shared: Arc<Shared>) {
    let mut batch: Vec<EncodedRecord> = Vec::new();
    let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    let mut open = true;
    while open {
        // The writer wakes on its tick and drains the queue then, rather
        // than waking for every record: a wake-up per finished request cost
        // more than the write itself. A queue half full (or a flush) wakes
        // it early, so a burst is written rather than dropped.
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.wake.notified() => {}
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Record(r)) => {
                    batch.push(r);
                    if batch.len() >= MAX_BATCH {
                        write(&*store, &shared, &mut batch).await;
                    }
                }
                Ok(Msg::Flush(done)) => waiting.push(done),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        write(&*store, &shared, &mut batch).await;
        for w in waiting.drain(..) {
            let _ = w.send(());
        }
        if last_prune.elapsed() >= PRUNE_INTERVAL {
            last_prune = tokio::time::Instant::now();
            let older = now_ms().saturating_sub(shared.retention_ms.load(Ordering::Relaxed));
            let cap = shared.max_records.load(Ordering::Relaxed);
            if let Err(e) = store.prune_traffic(older, cap).await {
                tracing::warn!(error = %e, "traffic log prune failed");
            }
        }
    }
}

/// Appends `batch` (emptying it); a failed write drops the records and counts them.
async fn write(store: &dyn ConfigStore, shared: &Shared, batch: &mut Vec<EncodedRecord>) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match store.append_encoded(batch).await {
        Ok(()) => {
            shared.written.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("modelux_traffic_records_written_total").increment(n);
            set_write_error(shared, None);
        }
        Err(e) => {
            tracing::warn!(error = %e, records = n, "traffic log write failed; records dropped");
            shared.dropped.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("modelux_traffic_records_dropped_total").increment(n);
            set_write_error(shared, Some(e.to_string()));
        }
    }
    batch.clear();
}

fn set_write_error(shared: &Shared, e: Option<String>) {
    metrics::gauge!("modelux_store_writable").set(if e.is_none() { 1.0 } else { 0.0 });
    *shared
        .write_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = e;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(i: u64) -> Trace {
        Trace {
            request_id: format!("r{i}"),
            started_at_unix_ms: 1_000 + i,
            ..Trace::default()
        }
    }

    async fn recorder(queue: usize) -> TrafficRecorder {
        let store = crate::store::open("memory").await.unwrap();
        let settings = TrafficSettings {
            queue,
            ..TrafficSettings::default()
        };
        let rec = TrafficRecorder::start(store, &settings);
        // Let the writer take its first (immediate) tick.
        tokio::time::sleep(Duration::from_millis(1)).await;
        rec
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_written_on_the_next_tick() {
        let rec = recorder(100).await;
        for i in 0..3 {
            rec.record(&trace(i));
        }
        tokio::time::sleep(FLUSH_INTERVAL / 2).await;
        assert_eq!(rec.written(), 0, "written before the tick");
        tokio::time::sleep(FLUSH_INTERVAL / 2 + Duration::from_millis(10)).await;
        assert_eq!(rec.written(), 3);
        assert_eq!(rec.dropped(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_full_queue_wakes_the_writer_before_its_tick() {
        let rec = recorder(10).await;
        for i in 0..4 {
            rec.record(&trace(i));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(rec.written(), 0, "4 of 10 queued: wait for the tick");
        rec.record(&trace(4));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(rec.written(), 5, "5 of 10 queued: written at once");
        // A burst of twice the queue within one tick loses nothing.
        for i in 5..25 {
            rec.record(&trace(i));
            tokio::task::yield_now().await;
        }
        rec.flush().await;
        assert_eq!((rec.written(), rec.dropped()), (25, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn flush_does_not_wait_for_the_tick() {
        let rec = recorder(100).await;
        rec.record(&trace(0));
        let t = tokio::time::Instant::now();
        rec.flush().await;
        assert_eq!(rec.written(), 1);
        assert!(t.elapsed() < FLUSH_INTERVAL / 10, "{:?}", t.elapsed());
    }
}
