//! Loading a window of the traffic log for a dry-run, sampled when it is
//! too large to replay whole.
//!
//! Why blocks of consecutive requests: the layers a dry-run replays are
//! stateful over time (a health window, a retry budget, a latency ring).
//! Sampling single requests would thin the traffic and change what those
//! layers see, so a sampled window keeps blocks of consecutive requests (5
//! minutes by default) and drops others. Within a kept block the dynamics
//! are exactly the recorded ones; the report then gives a confidence
//! interval from the spread between blocks (see
//! [`Report::sample`](super::Report)).
//!
//! Why the block shrinks with the traffic and every read has a limit: the
//! admin dry-run loads on a replica that serves traffic, so what it holds
//! has to be bounded by `max_records`, not by the traffic rate. At 2,000
//! req/s a 5-minute block holds 600,000 records, three times the endpoint's
//! default budget, and at 3,300 req/s the whole 1M-record log sits in one
//! block. So the blocks are first counted (a count holds no records), then
//! shortened, down to a second (the log's page), until the busiest holds at
//! most a quarter of `max_records`, which also spreads the sample over at
//! least about four blocks across the window. The choice and the number of
//! records to read from each kept block are planned from those counts before
//! anything is read, and each read is limited to its share, so the records
//! read never add up to more than `max_records`.

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::TrafficRecord;
use crate::store::{ConfigStore, StoreError};

/// Blocks read at once when the whole window is loaded.
const LOAD_CONCURRENCY: usize = 3;

/// A sampled window is cut into blocks short enough that the busiest holds
/// at most `max_records / MIN_BLOCKS`, so a sample spans at least about this
/// many blocks.
const MIN_BLOCKS: u64 = 4;

/// The shortest block, and the grid blocks are aligned to: the traffic
/// log's page (a second), so counting a block reads no page but its edges.
const SECOND_MS: u64 = 1_000;

/// The most blocks a window is cut into when blocks are shortened (each is
/// one count query); past it a block may hold more than its share, and is
/// then cut to a run when kept.
const MAX_BLOCKS: usize = 10_000;

/// How [`load_window`] reads and samples.
///
/// ```
/// let o = modelux::traffic::LoadOptions::default();
/// assert_eq!(o.max_records, 1_000_000);
/// assert_eq!(o.block_ms, 5 * 60 * 1000);
/// ```
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Above this many records in the window, blocks are sampled so that
    /// about this many are replayed; at most this many are ever read.
    pub max_records: u64,
    /// The sampling (and loading) unit: a block of this many ms, shortened
    /// (to whole seconds, at least one) when a sample needs it so that no
    /// block holds more than a quarter of `max_records`.
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
///
/// ```
/// use modelux::traffic::{load_window, LoadOptions};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), modelux::store::StoreError> {
/// # use modelux::{trace::Trace, traffic::EncodedRecord};
/// # let store = modelux::store::open("memory").await?;
/// # let rec = |at_ms| EncodedRecord::from_trace(&Trace { started_at_unix_ms: at_ms, ..Trace::default() });
/// // 100 records, one every 6 seconds.
/// let records: Vec<_> = (0..100u64).map(|i| rec(1_000_000 + i * 6_000)).collect();
/// store.append_encoded(&records).await?;
/// let opts = LoadOptions { max_records: 20, ..LoadOptions::default() };
/// let window = load_window(&*store, 0, u64::MAX, &opts, None).await?;
/// let info = window.sample.unwrap();
/// assert_eq!(info.records_in_window, 100);
/// assert_eq!(info.records_sampled, window.records.len() as u64);
/// assert!(info.records_sampled <= 20 && info.blocks_sampled < info.blocks_in_window);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SampleInfo {
    /// Records in the whole window.
    pub records_in_window: u64,
    /// Records kept (and replayed): at most `max_records`.
    pub records_sampled: u64,
    /// Blocks with traffic in the window.
    pub blocks_in_window: u64,
    /// Blocks kept.
    pub blocks_sampled: u64,
    /// Kept blocks that held more than their share of `max_records`: of
    /// each, only a run of its first requests was kept.
    pub blocks_cut: u64,
    /// Block length, ms: `LoadOptions::block_ms`, or shorter when the
    /// traffic was too dense for blocks that long.
    pub block_ms: u64,
    /// Where the blocks start (the start of the second the first record in
    /// the window started in), Unix ms: block `k` is
    /// `[blocks_from + k × block_ms, … + block_ms)`.
    pub blocks_from: u64,
}

/// A loaded window: the records, oldest first, and how they were sampled.
///
/// ```
/// use modelux::traffic::{load_window, LoadOptions};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), modelux::store::StoreError> {
/// # use modelux::{trace::Trace, traffic::EncodedRecord};
/// # let store = modelux::store::open("memory").await?;
/// # let rec = |at_ms| EncodedRecord::from_trace(&Trace { started_at_unix_ms: at_ms, ..Trace::default() });
/// store.append_encoded(&[rec(30), rec(10), rec(20)]).await?;
/// let window = load_window(&*store, 0, u64::MAX, &LoadOptions::default(), None).await?;
/// let at: Vec<_> = window.records.iter().map(|r| r.at_ms).collect();
/// assert_eq!(at, [10, 20, 30]);
/// assert!(window.sample.is_none()); // small enough to load whole
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LoadedWindow {
    /// The records to replay, oldest first.
    pub records: Vec<TrafficRecord>,
    /// `None` when the whole window was loaded.
    pub sample: Option<SampleInfo>,
}

/// Reports progress as `(records loaded, records to load)`.
///
/// ```
/// use std::sync::Mutex;
/// use modelux::traffic::{load_window, LoadOptions, LoadProgress};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), modelux::store::StoreError> {
/// # use modelux::{trace::Trace, traffic::EncodedRecord};
/// # let store = modelux::store::open("memory").await?;
/// # let rec = |at_ms| EncodedRecord::from_trace(&Trace { started_at_unix_ms: at_ms, ..Trace::default() });
/// store.append_encoded(&[rec(10), rec(20), rec(30)]).await?;
/// let seen = Mutex::new(Vec::new());
/// let progress = |done, total| seen.lock().unwrap().push((done, total));
/// let progress: LoadProgress<'_> = &progress;
/// load_window(&*store, 0, u64::MAX, &LoadOptions::default(), Some(progress)).await?;
/// assert_eq!(seen.lock().unwrap().last(), Some(&(3, 3)));
/// # Ok(()) }
/// ```
pub type LoadProgress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Reads the records that started in `[from_unix_ms, to_unix_ms)`, block
/// by block, sampling blocks when the window holds more than
/// `opts.max_records`.
///
/// A sampled window never reads more than `opts.max_records` records (and
/// the first one, to place the blocks): blocks are counted first, shortened
/// until the busiest holds at most a quarter of `max_records`, chosen
/// systematically from a seeded start, and read whole, unless together they
/// would exceed `max_records`: then the largest are cut to runs of their
/// first requests, all of the same length, so that they fit. The same
/// window and seed give the same sample.
///
/// `to_unix_ms` is capped at the present; `progress` is called after each
/// block read.
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
/// // At most 300: whole 5-minute blocks (50 records each) are kept or dropped.
/// let opts = LoadOptions { max_records: 300, ..LoadOptions::default() };
/// let some = load_window(&*store, 0, u64::MAX, &opts, None).await?;
/// let info = some.sample.unwrap();
/// assert_eq!(info.records_in_window, 1000);
/// assert_eq!(info.records_sampled, some.records.len() as u64);
/// assert_eq!(info.records_sampled, 50 * info.blocks_sampled);
/// assert!(info.records_sampled <= 300);
/// assert!(some.records.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
///
/// // At most 40: 5-minute blocks would hold more than 10 each, so they
/// // shrink to 1 minute (10 records each), still spread over the window.
/// let opts = LoadOptions { max_records: 40, ..LoadOptions::default() };
/// let few = load_window(&*store, 0, u64::MAX, &opts, None).await?;
/// let info = few.sample.unwrap();
/// assert_eq!((info.block_ms, info.blocks_in_window), (60_000, 100));
/// assert!(few.records.len() <= 40);
/// assert!(few.records.last().unwrap().at_ms >= 1_000_000 + 75 * 60_000);
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
    // The first record bounds the blocks (a window may start long before it).
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
    let budget = opts.max_records.max(1);
    if total > budget {
        return load_sample(store, (from_unix_ms, to), first, total, opts, progress).await;
    }
    // Everything: read blocks a few at a time (each backend has a pool of
    // connections), in order, until every counted record is in.
    let mut records = Vec::with_capacity(total as usize);
    let mut seen = 0u64;
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
    Ok(LoadedWindow {
        records,
        sample: None,
    })
}

/// A block length for people: `5 min`, `12 s`, `1500 ms`.
pub(super) fn block_length(ms: u64) -> String {
    if ms >= 60_000 && ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else if ms >= SECOND_MS && ms % SECOND_MS == 0 {
        format!("{} s", ms / SECOND_MS)
    } else {
        format!("{ms} ms")
    }
}

/// A block with traffic: `[start, end)` within the window, and how many
/// records started in it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    start: u64,
    end: u64,
    n: u64,
}

/// Samples a window of `total` records, more than `opts.max_records`,
/// whose first record started at `first` (see [`load_window`]).
async fn load_sample(
    store: &dyn ConfigStore,
    (from, to): (u64, u64),
    first: u64,
    total: u64,
    opts: &LoadOptions,
    progress: Option<LoadProgress<'_>>,
) -> Result<LoadedWindow, StoreError> {
    let budget = opts.max_records.max(1);
    let per_block = (budget / MIN_BLOCKS).max(1);
    let origin = first - first % SECOND_MS;
    let mut unit = opts.block_ms.max(1);
    let mut blocks = count_blocks(store, (from, to), origin, unit, &[(origin, to)], total).await?;
    // Shorter blocks while the busiest holds more than its share: at the
    // busiest block's rate, `unit / d` holds about `per_block`. Only the
    // blocks with traffic are counted again.
    loop {
        let busiest = blocks.iter().map(|b| b.n).max().unwrap_or(0);
        if busiest <= per_block || unit <= SECOND_MS {
            break;
        }
        let most = (MAX_BLOCKS / blocks.len().max(1)).max(1) as u64;
        let d = busiest.div_ceil(per_block).min(most);
        let next = (unit / d / SECOND_MS * SECOND_MS).max(SECOND_MS);
        if next >= unit {
            break;
        }
        let within: Vec<(u64, u64)> = blocks.iter().map(|b| (b.start, b.end)).collect();
        blocks = count_blocks(store, (from, to), origin, next, &within, u64::MAX).await?;
        unit = next;
    }
    let counted: u64 = blocks.iter().map(|b| b.n).sum();
    // Systematic sampling over blocks with a random start: every block has
    // the same chance `keep`, and the number kept stays close to
    // `keep` × blocks (Bernoulli choices would let it swing, even to 0).
    let keep = budget as f64 / counted.max(1) as f64;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut credit = rng.random::<f64>();
    let mut chosen: Vec<Block> = Vec::new();
    for b in &blocks {
        credit += keep;
        if credit >= 1.0 {
            credit -= 1.0;
            chosen.push(*b);
        }
    }
    if chosen.is_empty() {
        // Few blocks at a small rate kept none: keep the one holding a
        // seeded record (a busy block is the likelier, as it should be).
        let at = (rng.random::<f64>() * counted as f64) as u64;
        let mut before = 0u64;
        if let Some(b) = blocks.iter().find(|b| {
            before += b.n;
            before > at
        }) {
            chosen.push(*b);
        } else if let Some(b) = blocks.last() {
            chosen.push(*b);
        }
    }
    let takes = shares(&chosen.iter().map(|b| b.n).collect::<Vec<_>>(), budget);
    let planned: u64 = takes.iter().sum();
    let mut records = Vec::with_capacity(planned as usize);
    let (mut kept_blocks, mut cut) = (0u64, 0u64);
    for (b, take) in chosen.iter().zip(takes) {
        if take == 0 {
            continue;
        }
        let mut got = store
            .traffic_since(b.start, b.end, usize::try_from(take).unwrap_or(usize::MAX))
            .await?;
        got.truncate(take as usize);
        if !got.is_empty() {
            kept_blocks += 1;
            cut += u64::from(take < b.n);
        }
        records.extend(got);
        if let Some(p) = progress {
            p(records.len() as u64, planned);
        }
    }
    let sample = Some(SampleInfo {
        records_in_window: total,
        records_sampled: records.len() as u64,
        blocks_in_window: blocks.len() as u64,
        blocks_sampled: kept_blocks,
        blocks_cut: cut,
        block_ms: unit,
        blocks_from: origin,
    });
    Ok(LoadedWindow { records, sample })
}

/// Counts the blocks of `unit` ms on the grid from `origin` that overlap
/// the ranges `within` (in order), and returns those with traffic in the
/// window `[from, to)`. Stops once `stop_at` records are counted.
async fn count_blocks(
    store: &dyn ConfigStore,
    (from, to): (u64, u64),
    origin: u64,
    unit: u64,
    within: &[(u64, u64)],
    stop_at: u64,
) -> Result<Vec<Block>, StoreError> {
    let mut out = Vec::new();
    let (mut seen, mut next) = (0u64, 0u64);
    for &(a, b) in within {
        let last = (b.saturating_sub(1).max(origin) - origin) / unit;
        let mut k = ((a.max(origin) - origin) / unit).max(next);
        while k <= last {
            let start = origin.saturating_add(k.saturating_mul(unit));
            if start >= to {
                return Ok(out);
            }
            let (s, e) = (start.max(from), start.saturating_add(unit).min(to));
            let n = store.traffic_count(s, e).await?;
            if n > 0 {
                out.push(Block {
                    start: s,
                    end: e,
                    n,
                });
                seen += n;
                if seen >= stop_at {
                    return Ok(out);
                }
            }
            k += 1;
        }
        next = k;
    }
    Ok(out)
}

/// How many records each kept block (of `sizes` records) may give so that
/// together they give at most `budget`: every block whole when they fit,
/// else the same run length for every block longer than it, the longest
/// that fits (water-filling: short blocks stay whole).
fn shares(sizes: &[u64], budget: u64) -> Vec<u64> {
    if sizes.iter().sum::<u64>() <= budget {
        return sizes.to_vec();
    }
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let (mut left, mut level) = (budget, 0);
    for (i, &n) in sorted.iter().enumerate() {
        let fair = left / (sorted.len() - i) as u64;
        if n > fair {
            level = fair;
            break;
        }
        left -= n;
    }
    sizes.iter().map(|&n| n.min(level)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lengths_read_in_the_largest_whole_unit() {
        assert_eq!(block_length(300_000), "5 min");
        assert_eq!(block_length(12_000), "12 s");
        assert_eq!(block_length(90_000), "90 s");
        assert_eq!(block_length(1_500), "1500 ms");
    }

    #[test]
    fn shares_keep_blocks_whole_when_they_fit() {
        assert_eq!(shares(&[10, 20, 30], 60), [10, 20, 30]);
        assert_eq!(shares(&[10, 20, 30], 100), [10, 20, 30]);
        assert_eq!(shares(&[], 5), Vec::<u64>::new());
    }

    #[test]
    fn shares_cut_the_largest_blocks_to_one_run_length() {
        // 10 stays whole; 50 left for two blocks: 25 each.
        assert_eq!(shares(&[40, 10, 30], 60), [25, 10, 25]);
        assert_eq!(shares(&[1_000_000], 200_000), [200_000]);
        assert_eq!(shares(&[7, 7, 7, 7], 20), [5, 5, 5, 5]);
        for (sizes, budget) in [(vec![3u64, 900, 12, 55, 1], 100u64), (vec![5; 9], 9)] {
            let got = shares(&sizes, budget);
            assert!(got.iter().sum::<u64>() <= budget, "{got:?}");
            assert!(got.iter().zip(&sizes).all(|(g, n)| g <= n && *g >= 1));
        }
    }
}
