//! Loading a window of the traffic log for a dry-run, sampled when it is
//! too large to replay whole.
//!
//! Why whole time blocks: the layers a dry-run replays are stateful over
//! time (a health window, a retry budget, a latency ring). Sampling single
//! requests would thin the traffic and change what those layers see, so a
//! sampled window keeps whole blocks of consecutive requests (5 minutes by
//! default) and drops others. Within a kept block the dynamics are exactly
//! the recorded ones; the report then gives a confidence interval from the
//! spread between blocks (see [`Report::sample`](super::Report)).

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::TrafficRecord;
use crate::store::{ConfigStore, StoreError};

/// Blocks read at once when the whole window is loaded.
const LOAD_CONCURRENCY: usize = 3;

/// How [`load_window`] reads and samples.
///
/// ```
/// let o = modelux::traffic::LoadOptions::default();
/// assert_eq!(o.max_records, 1_000_000);
/// assert_eq!(o.block_ms, 5 * 60 * 1000);
/// ```
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Above this many records in the window, whole blocks are sampled so
    /// that about this many are replayed.
    pub max_records: u64,
    /// The sampling (and loading) unit: a block of this many ms.
    pub block_ms: u64,
    /// Seed of the block choice: the same window and seed keep the same blocks.
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_records: 1_000_000,
            block_ms: 5 * 60 * 1000,
            seed: 0x6d78_626c_6f63_6b73,
        }
    }
}

/// What a sampled window kept.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SampleInfo {
    /// Records in the whole window.
    pub records_in_window: u64,
    /// Records kept (and replayed).
    pub records_sampled: u64,
    /// Blocks with traffic in the window.
    pub blocks_in_window: u64,
    /// Blocks kept.
    pub blocks_sampled: u64,
    /// Block length, ms.
    pub block_ms: u64,
    /// Where the blocks start (the first record in the window), Unix ms:
    /// block `k` is `[blocks_from + k × block_ms, … + block_ms)`.
    pub blocks_from: u64,
}

/// A loaded window: the records, oldest first, and how they were sampled.
#[derive(Debug, Clone)]
pub struct LoadedWindow {
    /// The records to replay, oldest first.
    pub records: Vec<TrafficRecord>,
    /// `None` when the whole window was loaded.
    pub sample: Option<SampleInfo>,
}

/// Reports progress as `(records loaded, records to load)`.
pub type LoadProgress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Reads the records that started in `[from_unix_ms, to_unix_ms)`, block
/// by block, sampling whole blocks when the window holds more than
/// `opts.max_records`.
///
/// `to_unix_ms` is capped at the present; `progress` is called after each
/// block.
///
/// ```
/// use modelux::traffic::{load_window, AttemptRecord, LoadOptions, TrafficRecord};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), modelux::store::StoreError> {
/// let store = modelux::store::open("memory").await?;
/// let rec = |at_ms: u64| TrafficRecord {
///     at_ms, request_id: format!("r{at_ms}"), config_version: 1, route: "default".into(),
///     client: None, stream: false, prompt_tokens: 1, completion_tokens: 1,
///     tokens_estimated: false, max_tokens: None,
///     attempts: vec![AttemptRecord::ok("p", "m", 0, 10)], outcome: "ok".into(),
///     status: 200, latency_ms: 10, ttft_ms: None, served_by: Some("p/m".into()), cost_usd: None,
/// };
/// // 10 records a minute for 100 minutes.
/// let records: Vec<_> = (0..1000u64).map(|i| rec(1_000_000 + i * 6_000)).collect();
/// store.append_traffic(&records).await?;
///
/// let all = load_window(&*store, 0, u64::MAX, &LoadOptions::default(), None).await?;
/// assert_eq!(all.records.len(), 1000);
/// assert!(all.sample.is_none());
///
/// // At most ~300: whole 5-minute blocks (50 records each) are kept or dropped.
/// let opts = LoadOptions { max_records: 300, ..LoadOptions::default() };
/// let some = load_window(&*store, 0, u64::MAX, &opts, None).await?;
/// let info = some.sample.unwrap();
/// assert_eq!(info.records_in_window, 1000);
/// assert_eq!(info.records_sampled, some.records.len() as u64);
/// assert_eq!(info.records_sampled, 50 * info.blocks_sampled);
/// assert!(some.records.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
/// # Ok(()) }
/// ```
pub async fn load_window(
    store: &dyn ConfigStore,
    from_unix_ms: u64,
    to_unix_ms: u64,
    opts: &LoadOptions,
    progress: Option<LoadProgress<'_>>,
) -> Result<LoadedWindow, StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(u64::MAX);
    let to = to_unix_ms.min(now.saturating_add(1));
    let total = store.traffic_count(from_unix_ms, to).await?;
    if total == 0 {
        return Ok(LoadedWindow {
            records: Vec::new(),
            sample: None,
        });
    }
    // The first and last record bound the blocks (a window may start long
    // before the first record).
    let first = match store.traffic_since(from_unix_ms, to, 1).await?.first() {
        Some(r) => r.at_ms,
        None => {
            return Ok(LoadedWindow {
                records: Vec::new(),
                sample: None,
            })
        }
    };
    let block = opts.block_ms.max(1);
    let sampling = total > opts.max_records.max(1);
    let keep = opts.max_records.max(1) as f64 / total as f64;
    // Systematic sampling over blocks with a random start: every block has
    // the same chance `keep`, and the number kept stays close to
    // `keep` × blocks (Bernoulli choices would let it swing, even to 0).
    let mut credit = StdRng::seed_from_u64(opts.seed).random::<f64>();
    let mut records = Vec::with_capacity(total.min(opts.max_records.saturating_mul(2)) as usize);
    let (mut seen, mut blocks, mut kept_blocks) = (0u64, 0u64, 0u64);
    if !sampling {
        // Everything: read blocks a few at a time (each backend has a pool
        // of connections), in order, until every counted record is in.
        let starts = (0u64..)
            .map(|k| first.saturating_add(k.saturating_mul(block)))
            .take_while(|s| *s < to);
        let mut blocks_read = futures_util::stream::iter(starts)
            .map(|s| store.traffic_since(s, s.saturating_add(block).min(to), usize::MAX))
            .buffered(LOAD_CONCURRENCY);
        while let Some(got) = blocks_read.next().await {
            let got = got?;
            seen += got.len() as u64;
            records.extend(got);
            if let Some(p) = progress {
                p(seen.min(total), total);
            }
            if seen >= total {
                break;
            }
        }
        return Ok(LoadedWindow {
            records,
            sample: None,
        });
    }
    let mut start = first;
    while start < to && seen < total {
        let end = start.saturating_add(block).min(to);
        let n = store.traffic_count(start, end).await?;
        if n > 0 {
            credit += keep;
            let take = credit >= 1.0;
            if take {
                credit -= 1.0;
            }
            if take {
                let got = store.traffic_since(start, end, usize::MAX).await?;
                seen += got.len() as u64;
                if !got.is_empty() {
                    blocks += 1;
                    kept_blocks += 1;
                }
                records.extend(got);
            } else {
                seen += n;
                blocks += 1;
            }
            if let Some(p) = progress {
                p(seen.min(total), total);
            }
        }
        start = end;
    }
    if records.is_empty() {
        // A tiny sampling rate over few blocks kept none: keep the first.
        let end = first.saturating_add(block).min(to);
        records = store.traffic_since(first, end, usize::MAX).await?;
        kept_blocks = u64::from(!records.is_empty());
    }
    let sample = Some(SampleInfo {
        records_in_window: total,
        records_sampled: records.len() as u64,
        blocks_in_window: blocks,
        blocks_sampled: kept_blocks,
        block_ms: block,
        blocks_from: first,
    });
    Ok(LoadedWindow { records, sample })
}
