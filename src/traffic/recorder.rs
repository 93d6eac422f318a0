//! The background writer of the traffic log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::EncodedRecord;
use crate::config::TrafficSettings;
use crate::store::ConfigStore;
use crate::trace::{Trace, TraceSinkFn};

/// How often queued records are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// How often old records are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The most records written in one batch.
pub const MAX_BATCH: usize = 2_000;

/// Hands finished requests to a background task that appends them to the
/// store in batches every [`FLUSH_INTERVAL`] and prunes old records every
/// [`PRUNE_INTERVAL`].
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
}

#[derive(Debug)]
struct Shared {
    enabled: AtomicBool,
    dropped: AtomicU64,
    written: AtomicU64,
    retention_ms: AtomicU64,
    max_records: AtomicU64,
}

#[derive(Debug)]
enum Msg {
    Record(EncodedRecord),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl TrafficRecorder {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(store: Arc<dyn ConfigStore>, settings: &TrafficSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let shared = Arc::new(Shared {
            enabled: AtomicBool::new(settings.enabled),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            retention_ms: AtomicU64::new(settings.retention_hours.saturating_mul(3_600_000)),
            max_records: AtomicU64::new(settings.max_records),
        });
        tokio::spawn(writer(rx, store, shared.clone()));
        TrafficRecorder { tx, shared }
    }

    /// Applies new settings (from a new config version): switching
    /// recording on or off, retention and size cap. The queue keeps its size.
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
    pub fn record(&self, trace: &Trace) {
        if !self.shared.enabled.load(Ordering::Relaxed) {
            return;
        }
        let rec = EncodedRecord::from_trace(trace);
        if self.tx.try_send(Msg::Record(rec)).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("modelux_traffic_records_dropped_total").increment(1);
        }
    }

    /// The finish hook for [`TraceLayer::with_sink`](crate::trace::TraceLayer::with_sink).
    pub fn sink(&self) -> TraceSinkFn {
        let me = self.clone();
        Arc::new(move |t: &Trace| me.record(t))
    }

    /// Records dropped so far (queue full or failed writes).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Waits until everything queued before this call is written (or
    /// dropped). Waits for room in the queue, so do not call it on a
    /// request path.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
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
        // more than the write itself. (So a queue of `traffic.queue` records
        // absorbs up to ten times that many requests per second.)
        tick.tick().await;
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
        }
        Err(e) => {
            tracing::warn!(error = %e, records = n, "traffic log write failed; records dropped");
            shared.dropped.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("modelux_traffic_records_dropped_total").increment(n);
        }
    }
    batch.clear();
}
