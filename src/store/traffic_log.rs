//! How both databases keep the traffic log: one row per *page*, a page
//! being every record of one writer batch that started in the same second.
//!
//! Why pages: with one row per finished request, SQLite spent more
//! instructions inserting the row and its index entry than the rest of
//! recording together, and recording has to cost under 5 % of the
//! gateway's throughput (docs/performance.md). The writer flushes every
//! second (sooner when its queue is half full); at 2,400 req/s a flush holds
//! ≈ 2,400 records that started within a second or two of each other, so it
//! becomes two or three row inserts.
//!
//! Why one-second buckets (and not "one row per flush"): a flush also holds
//! records of long streams that started minutes earlier. Keyed by the
//! second its records started in, a page never straddles a bucket
//! boundary, so every time range is a run of whole buckets plus at most two
//! partial ones at its edges. Reads and counts stay exact: whole pages are
//! counted from their `n` column, and only the pages of the two edge
//! buckets are decoded.
//!
//! The SQL is written once, with `?` placeholders; the PostgreSQL backend
//! numbers them (`$1`, `$2`, …) through [`numbered`].

use std::borrow::Cow;

use crate::traffic::{codec, EncodedRecord, TrafficRecord};

use super::StoreError;

/// The width of a page's bucket, ms.
pub(crate) const PAGE_MS: u64 = 1_000;

/// One row of `modelux_traffic_pages`.
#[derive(Debug)]
pub(crate) struct Page {
    /// The bucket's start, Unix ms (a multiple of [`PAGE_MS`]).
    pub bucket_ms: i64,
    /// How many records the page holds.
    pub n: i64,
    /// The records, a JSON array of the form of [`EncodedRecord`].
    pub records: String,
}

/// The start of the bucket `ms` falls in.
pub(crate) fn bucket_of(ms: u64) -> u64 {
    ms - ms % PAGE_MS
}

/// A traffic-log timestamp or count as the databases' signed integer.
pub(crate) fn db_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `records` grouped into pages by the second they started in, each page's
/// records in start order.
pub(crate) fn paginate(records: &[EncodedRecord]) -> Vec<Page> {
    let mut sorted: Vec<&EncodedRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.at_ms());
    sorted
        .chunk_by(|a, b| bucket_of(a.at_ms()) == bucket_of(b.at_ms()))
        .map(|group| Page {
            bucket_ms: db_i64(bucket_of(group[0].at_ms())),
            n: group.len() as i64,
            records: codec::encode_page(group),
        })
        .collect()
}

/// A page's stored form.
pub(crate) fn encode(records: &[TrafficRecord]) -> String {
    let encoded: Vec<EncodedRecord> = records.iter().map(EncodedRecord::new).collect();
    codec::encode_page(&encoded.iter().collect::<Vec<_>>())
}

/// The records of a page.
pub(crate) fn decode(json: &str) -> Result<Vec<TrafficRecord>, StoreError> {
    codec::decode_page(json)
        .map_err(|e| StoreError::Database(format!("a traffic page is not valid: {e}")))
}

/// Turns the `?` placeholders of `sql` into PostgreSQL's `$1`, `$2`, ….
/// (No statement here has a `?` inside a string literal.)
pub(crate) fn numbered(sql: &'static str) -> Cow<'static, str> {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// SQLite takes the statements as written.
pub(crate) fn as_written(sql: &'static str) -> Cow<'static, str> {
    Cow::Borrowed(sql)
}

pub(crate) const INSERT: &str =
    "INSERT INTO modelux_traffic_pages (bucket_ms, n, records) VALUES (?, ?, ?)";
pub(crate) const SELECT_RANGE: &str = "SELECT bucket_ms, records FROM modelux_traffic_pages \
     WHERE bucket_ms >= ? AND bucket_ms < ? ORDER BY bucket_ms, id";
pub(crate) const SUM_RANGE: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) \
     FROM modelux_traffic_pages WHERE bucket_ms >= ? AND bucket_ms < ?";
pub(crate) const SELECT_BUCKET: &str =
    "SELECT id, records FROM modelux_traffic_pages WHERE bucket_ms = ? ORDER BY id";
pub(crate) const DELETE_BEFORE: &str = "DELETE FROM modelux_traffic_pages WHERE bucket_ms < ?";
pub(crate) const DELETE_PAGE: &str = "DELETE FROM modelux_traffic_pages WHERE id = ?";
pub(crate) const UPDATE_PAGE: &str =
    "UPDATE modelux_traffic_pages SET n = ?, records = ? WHERE id = ?";
pub(crate) const SUM_ALL: &str =
    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM modelux_traffic_pages";
/// The oldest pages, in order, up to the first one that brings the records
/// they hold to `?`.
pub(crate) const OLDEST_PAGES: &str = "SELECT id, bucket_ms, n, upto FROM (\
     SELECT id, bucket_ms, n, CAST(SUM(n) OVER (ORDER BY bucket_ms, id) AS BIGINT) AS upto \
     FROM modelux_traffic_pages) AS t WHERE upto - n < ? ORDER BY bucket_ms, id";

/// Gathers the records of `[from, to)` from pages read in bucket order,
/// stopping after the bucket that brings it to `limit`.
pub(crate) struct Collect {
    from: u64,
    to: u64,
    limit: usize,
    bucket: Option<i64>,
    out: Vec<TrafficRecord>,
}

impl Collect {
    pub(crate) fn new(from: u64, to: u64, limit: usize) -> Self {
        Collect {
            from,
            to,
            limit,
            bucket: None,
            out: Vec::new(),
        }
    }

    /// Takes the next page; `false` when it is not needed (nor any after it).
    pub(crate) fn push(&mut self, bucket_ms: i64, json: &str) -> Result<bool, StoreError> {
        if self.bucket != Some(bucket_ms) && self.out.len() >= self.limit {
            return Ok(false);
        }
        self.bucket = Some(bucket_ms);
        let (from, to) = (self.from, self.to);
        self.out.extend(
            decode(json)?
                .into_iter()
                .filter(|r| r.at_ms >= from && r.at_ms < to),
        );
        Ok(true)
    }

    /// The records, oldest first (ties in the order they were written).
    pub(crate) fn finish(mut self) -> Vec<TrafficRecord> {
        self.out.sort_by_key(|r| r.at_ms);
        self.out.truncate(self.limit);
        self.out
    }
}

/// Drops the `n` oldest records of one bucket's pages (ties: the earlier
/// page first). Returns each page that changed with what is left of it
/// and how many records it held.
pub(crate) fn drop_oldest(
    pages: Vec<(i64, Vec<TrafficRecord>)>,
    n: usize,
) -> Vec<(i64, Vec<TrafficRecord>, usize)> {
    let mut order: Vec<(u64, usize, usize)> = pages
        .iter()
        .enumerate()
        .flat_map(|(p, (_, rs))| rs.iter().enumerate().map(move |(i, r)| (r.at_ms, p, i)))
        .collect();
    order.sort_unstable();
    let mut gone: Vec<Vec<bool>> = pages.iter().map(|(_, rs)| vec![false; rs.len()]).collect();
    for &(_, p, i) in order.iter().take(n) {
        gone[p][i] = true;
    }
    pages
        .into_iter()
        .zip(gone)
        .filter(|(_, g)| g.contains(&true))
        .map(|((id, rs), g)| {
            let before = rs.len();
            let kept = rs
                .into_iter()
                .zip(g)
                .filter(|(_, g)| !g)
                .map(|(r, _)| r)
                .collect();
            (id, kept, before)
        })
        .collect()
}

/// The buckets a count of `[from, to)` reads: whole buckets in
/// `[whole.0, whole.1)` counted from `n`, and the partial edge buckets.
pub(crate) struct CountPlan {
    pub whole: (i64, i64),
    pub partial: Vec<i64>,
}

impl CountPlan {
    pub(crate) fn new(from: u64, to: u64) -> Self {
        // A bucket b is inside [from, to) iff from <= b and b + PAGE_MS <= to.
        let lo = if from % PAGE_MS == 0 {
            from
        } else {
            bucket_of(from).saturating_add(PAGE_MS)
        };
        let hi = (to.saturating_sub(PAGE_MS)).saturating_add(1);
        let hi = if to < PAGE_MS { 0 } else { hi };
        let mut partial = Vec::new();
        if from < to {
            if from % PAGE_MS != 0 {
                partial.push(db_i64(bucket_of(from)));
            }
            let last = bucket_of(to - 1);
            if to % PAGE_MS != 0 && !partial.contains(&db_i64(last)) {
                partial.push(db_i64(last));
            }
        }
        CountPlan {
            whole: (db_i64(lo), db_i64(hi)),
            partial,
        }
    }
}

/// The four traffic-log operations over a sqlx pool `self.pool` of
/// database `$db`, with statements passed through `$sql` and sqlx errors
/// mapped by `$err`. Expands to inherent methods the backends' trait
/// methods call; each backend provides `prune_tx`, the transaction a prune
/// runs in.
macro_rules! traffic_log_ops {
    ($db:ty, $sql:path, $err:path) => {
        async fn log_append(
            &self,
            records: &[crate::traffic::EncodedRecord],
        ) -> Result<(), StoreError> {
            use super::traffic_log as tl;
            if records.is_empty() {
                return Ok(());
            }
            let pages = tl::paginate(records);
            let insert = $sql(tl::INSERT);
            let mut tx = self.pool.begin().await.map_err($err)?;
            for p in &pages {
                sqlx::query::<$db>(&insert)
                    .bind(p.bucket_ms)
                    .bind(p.n)
                    .bind(&p.records)
                    .execute(&mut *tx)
                    .await
                    .map_err($err)?;
            }
            tx.commit().await.map_err($err)
        }

        async fn log_since(
            &self,
            from: u64,
            to: u64,
            limit: usize,
        ) -> Result<Vec<crate::traffic::TrafficRecord>, StoreError> {
            use super::traffic_log as tl;
            use futures_util::TryStreamExt;
            let mut collect = tl::Collect::new(from, to, limit);
            if from >= to || limit == 0 {
                return Ok(collect.finish());
            }
            let select = $sql(tl::SELECT_RANGE);
            let mut rows = sqlx::query::<$db>(&select)
                .bind(tl::db_i64(tl::bucket_of(from)))
                .bind(tl::db_i64(to))
                .fetch(&self.pool);
            while let Some(row) = rows.try_next().await.map_err($err)? {
                let bucket: i64 = row.try_get(0).map_err($err)?;
                let json: &str = row.try_get(1).map_err($err)?;
                if !collect.push(bucket, json)? {
                    break;
                }
            }
            Ok(collect.finish())
        }

        async fn log_count(&self, from: u64, to: u64) -> Result<u64, StoreError> {
            use super::traffic_log as tl;
            if from >= to {
                return Ok(0);
            }
            let plan = tl::CountPlan::new(from, to);
            let mut n: i64 = 0;
            if plan.whole.0 < plan.whole.1 {
                n = sqlx::query_scalar::<$db, i64>(&$sql(tl::SUM_RANGE))
                    .bind(plan.whole.0)
                    .bind(plan.whole.1)
                    .fetch_one(&self.pool)
                    .await
                    .map_err($err)?;
            }
            let select = $sql(tl::SELECT_BUCKET);
            for bucket in plan.partial {
                let rows = sqlx::query::<$db>(&select)
                    .bind(bucket)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($err)?;
                for row in &rows {
                    let json: &str = row.try_get(1).map_err($err)?;
                    let inside = tl::decode(json)?
                        .iter()
                        .filter(|r| r.at_ms >= from && r.at_ms < to)
                        .count();
                    n += inside as i64;
                }
            }
            Ok(n.max(0) as u64)
        }

        async fn log_prune(&self, older: u64, cap: u64) -> Result<u64, StoreError> {
            use super::traffic_log as tl;
            // Reads then writes, so it takes the write lock up front (and,
            // on a shared database, one replica prunes at a time).
            let mut tx = self.prune_tx().await?;
            let mut deleted: i64 = 0;
            // Whole pages older than `older`.
            let cut = tl::db_i64(tl::bucket_of(older));
            deleted += sqlx::query_scalar::<$db, i64>(&$sql(tl::SUM_RANGE))
                .bind(i64::MIN)
                .bind(cut)
                .fetch_one(&mut *tx)
                .await
                .map_err($err)?;
            sqlx::query::<$db>(&$sql(tl::DELETE_BEFORE))
                .bind(cut)
                .execute(&mut *tx)
                .await
                .map_err($err)?;
            // The pages of the bucket `older` falls in keep their newer records.
            if older % tl::PAGE_MS != 0 {
                let rows = sqlx::query::<$db>(&$sql(tl::SELECT_BUCKET))
                    .bind(cut)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err($err)?;
                for row in &rows {
                    let id: i64 = row.try_get(0).map_err($err)?;
                    let json: &str = row.try_get(1).map_err($err)?;
                    let mut records = tl::decode(json)?;
                    let before = records.len();
                    records.retain(|r| r.at_ms >= older);
                    deleted += (before - records.len()) as i64;
                    self.log_rewrite(&mut tx, id, &records, before).await?;
                }
            }
            // Then the oldest records beyond the cap.
            let total: i64 = sqlx::query_scalar::<$db, i64>(&$sql(tl::SUM_ALL))
                .fetch_one(&mut *tx)
                .await
                .map_err($err)?;
            let excess = total - tl::db_i64(cap);
            if excess > 0 {
                let rows = sqlx::query::<$db>(&$sql(tl::OLDEST_PAGES))
                    .bind(excess)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err($err)?;
                // Every page before the last bucket these pages reach goes
                // whole; in that bucket the oldest records go, across its pages.
                let mut last: Option<i64> = None;
                let (mut before_last, mut rows_in_bucket): (i64, i64) = (0, 0);
                for row in &rows {
                    let bucket: i64 = row.try_get(1).map_err($err)?;
                    let n: i64 = row.try_get(2).map_err($err)?;
                    if last.is_some_and(|l| l != bucket) {
                        before_last += rows_in_bucket;
                        rows_in_bucket = 0;
                    }
                    last = Some(bucket);
                    rows_in_bucket += n;
                }
                if let Some(bucket) = last {
                    sqlx::query::<$db>(&$sql(tl::DELETE_BEFORE))
                        .bind(bucket)
                        .execute(&mut *tx)
                        .await
                        .map_err($err)?;
                    let pages = sqlx::query::<$db>(&$sql(tl::SELECT_BUCKET))
                        .bind(bucket)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err($err)?;
                    let mut decoded = Vec::with_capacity(pages.len());
                    for row in &pages {
                        let id: i64 = row.try_get(0).map_err($err)?;
                        let json: &str = row.try_get(1).map_err($err)?;
                        decoded.push((id, tl::decode(json)?));
                    }
                    let drop = usize::try_from(excess - before_last).unwrap_or(0);
                    for (id, records, before) in tl::drop_oldest(decoded, drop) {
                        self.log_rewrite(&mut tx, id, &records, before).await?;
                    }
                }
                deleted += excess;
            }
            tx.commit().await.map_err($err)?;
            Ok(deleted.max(0) as u64)
        }

        /// Stores what is left of page `id` (deleting it when nothing is).
        async fn log_rewrite(
            &self,
            tx: &mut sqlx::Transaction<'static, $db>,
            id: i64,
            records: &[crate::traffic::TrafficRecord],
            before: usize,
        ) -> Result<(), StoreError> {
            use super::traffic_log as tl;
            if records.len() == before {
                return Ok(());
            }
            if records.is_empty() {
                sqlx::query::<$db>(&$sql(tl::DELETE_PAGE))
                    .bind(id)
                    .execute(&mut **tx)
                    .await
                    .map_err($err)?;
            } else {
                let json = tl::encode(records);
                sqlx::query::<$db>(&$sql(tl::UPDATE_PAGE))
                    .bind(records.len() as i64)
                    .bind(json)
                    .bind(id)
                    .execute(&mut **tx)
                    .await
                    .map_err($err)?;
            }
            Ok(())
        }
    };
}
pub(crate) use traffic_log_ops;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::AttemptRecord;

    fn rec(at_ms: u64) -> TrafficRecord {
        TrafficRecord {
            at_ms,
            request_id: format!("r{at_ms}"),
            config_version: 1,
            route: "default".into(),
            client: None,
            stream: false,
            prompt_tokens: 1,
            completion_tokens: 1,
            tokens_estimated: false,
            max_tokens: None,
            attempts: vec![AttemptRecord::ok("p", "m", 0, 10)],
            outcome: "ok".into(),
            status: 200,
            latency_ms: 10,
            ttft_ms: None,
            served_by: None,
            cost_usd: None,
        }
    }

    #[test]
    fn records_are_paged_by_the_second_they_started_in() {
        let records: Vec<EncodedRecord> = [2_500, 1_999, 1_000, 2_000]
            .into_iter()
            .map(|at| EncodedRecord::new(&rec(at)))
            .collect();
        let pages = paginate(&records);
        let got: Vec<(i64, i64, Vec<u64>)> = pages
            .iter()
            .map(|p| {
                let at: Vec<u64> = decode(&p.records)
                    .unwrap()
                    .iter()
                    .map(|r| r.at_ms)
                    .collect();
                (p.bucket_ms, p.n, at)
            })
            .collect();
        assert_eq!(
            got,
            [
                (1_000, 2, vec![1_000, 1_999]),
                (2_000, 2, vec![2_000, 2_500])
            ]
        );
    }

    #[test]
    fn a_count_reads_whole_buckets_and_decodes_only_the_edges() {
        let p = CountPlan::new(1_500, 4_200);
        assert_eq!(p.whole, (2_000, 3_201)); // buckets 2000 and 3000
        assert_eq!(p.partial, [1_000, 4_000]);
        let p = CountPlan::new(2_000, 4_000);
        assert_eq!((p.whole, p.partial.len()), ((2_000, 3_001), 0));
        let p = CountPlan::new(1_200, 1_300);
        assert_eq!(p.partial, [1_000]);
        assert!(p.whole.0 >= p.whole.1);
        let p = CountPlan::new(0, u64::MAX);
        assert_eq!(p.whole.0, 0);
        assert_eq!(p.whole.1, i64::MAX);
    }

    #[test]
    fn collect_stops_after_the_bucket_that_reaches_the_limit() {
        let page = |at: &[u64]| {
            serde_json::to_string(&at.iter().map(|a| rec(*a)).collect::<Vec<_>>()).unwrap()
        };
        let mut c = Collect::new(1_100, 10_000, 2);
        assert!(c.push(1_000, &page(&[1_050, 1_700])).unwrap());
        assert!(c.push(2_000, &page(&[2_300])).unwrap());
        assert!(c.push(2_000, &page(&[2_100])).unwrap()); // same bucket, another page
        assert!(!c.push(3_000, &page(&[3_000])).unwrap());
        let at: Vec<u64> = c.finish().iter().map(|r| r.at_ms).collect();
        assert_eq!(at, [1_700, 2_100]);
    }

    #[test]
    fn the_oldest_records_of_a_bucket_go_across_its_pages() {
        let pages = vec![
            (7, vec![rec(1_100), rec(1_900)]),
            (8, vec![rec(1_500), rec(1_100)]),
            (9, vec![rec(1_950)]),
        ];
        let got: Vec<(i64, Vec<u64>, usize)> = drop_oldest(pages, 3)
            .into_iter()
            .map(|(id, rs, before)| (id, rs.iter().map(|r| r.at_ms).collect(), before))
            .collect();
        // 1_100 (page 7), 1_100 (page 8), 1_500 (page 8) go; page 9 is untouched.
        assert_eq!(got, [(7, vec![1_900], 2), (8, vec![], 2)]);
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered("a = ? AND (b = ? OR c <= ?)"),
            "a = $1 AND (b = $2 OR c <= $3)"
        );
    }
}
