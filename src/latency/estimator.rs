use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::LatencyConfig;
use crate::provider::TargetId;
use crate::route::{AttemptObserver, AttemptReport, RouteRequest, Strategy};
use crate::trace::CandidateTrace;

/// Targets tracked at most; the least recently updated is forgotten beyond this.
const MAX_TARGETS: usize = 4096;

/// A target's live latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyEstimate {
    /// Median of the window.
    pub p50: Duration,
    /// 95th percentile of the window.
    pub p95: Duration,
    /// Samples in the window.
    pub samples: usize,
}

#[derive(Debug)]
struct Ring {
    samples: VecDeque<(Instant, u32)>,
    updated: Instant,
}

impl Ring {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
        {
            self.samples.pop_front();
        }
    }

    /// p50 and p95 by selection on a copy: the ring is small (hundreds of
    /// samples), so this is a few microseconds and needs no sketch.
    fn estimate(&self) -> Option<LatencyEstimate> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v: Vec<u32> = self.samples.iter().map(|(_, us)| *us).collect();
        let n = v.len();
        let i50 = (n - 1) / 2;
        let p50 = *v.select_nth_unstable(i50).1;
        let i95 = ((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1;
        let p95 = *v.select_nth_unstable(i95).1;
        Some(LatencyEstimate {
            p50: Duration::from_micros(p50 as u64),
            p95: Duration::from_micros(p95 as u64),
            samples: n,
        })
    }
}

#[derive(Debug)]
struct Shared {
    config: LatencyConfig,
    targets: Mutex<HashMap<TargetId, Ring>>,
}

/// Live latency per target, shared by every clone of the layer.
#[derive(Clone, Debug)]
pub struct LatencyRegistry {
    shared: Arc<Shared>,
}

impl LatencyRegistry {
    /// An empty registry.
    pub fn new(config: LatencyConfig) -> Self {
        LatencyRegistry {
            shared: Arc::new(Shared {
                config,
                targets: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TargetId, Ring>> {
        self.shared
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The estimate for `target`, if it has samples in the window.
    pub fn estimate(&self, target: &TargetId) -> Option<LatencyEstimate> {
        let now = Instant::now();
        let mut map = self.lock();
        let ring = map.get_mut(target)?;
        ring.prune(now, self.shared.config.window);
        ring.estimate()
    }

    /// Orders a `latency` route's candidates: trusted estimates by p50, then
    /// the untrusted ones in their current order; with probability `explore`
    /// the least-measured other candidate goes first.
    pub(crate) fn order(&self, req: &mut RouteRequest) {
        if req.route.strategy != Strategy::Latency || req.candidates.len() < 2 {
            return;
        }
        let cfg = self.shared.config;
        let now = Instant::now();
        let estimates: Vec<Option<LatencyEstimate>> = {
            let mut map = self.lock();
            req.candidates
                .iter()
                .map(|c| {
                    map.get_mut(&c.target.id).and_then(|r| {
                        r.prune(now, cfg.window);
                        r.estimate()
                    })
                })
                .collect()
        };
        let mut idx: Vec<usize> = (0..req.candidates.len()).collect();
        let key = |i: &usize| match estimates[*i] {
            Some(e) if e.samples >= cfg.min_samples => (0u8, e.p50),
            _ => (1u8, Duration::ZERO),
        };
        idx.sort_by_key(key);
        let mut explored = false;
        if cfg.explore > 0.0 && crate::rng::chance(cfg.explore) {
            // The least-measured candidate other than the current first.
            if let Some(pos) =
                (1..idx.len()).min_by_key(|p| estimates[idx[*p]].map_or(0, |e| e.samples))
            {
                let chosen = idx.remove(pos);
                idx.insert(0, chosen);
                explored = true;
            }
        }
        let mut old: Vec<Option<_>> = req.candidates.drain(..).map(Some).collect();
        let mut notes = Vec::with_capacity(idx.len());
        for (rank, i) in idx.iter().enumerate() {
            let cand = old[*i].take().expect("each index once");
            let reason = match estimates[*i] {
                Some(e) if e.samples >= cfg.min_samples => format!(
                    "p50 {} ms, p95 {} ms over {} samples",
                    e.p50.as_millis(),
                    e.p95.as_millis(),
                    e.samples
                ),
                Some(e) => format!(
                    "{} samples, fewer than {}: unranked",
                    e.samples, cfg.min_samples
                ),
                None => "no samples: unranked".to_owned(),
            };
            let reason = if explored && rank == 0 {
                format!("exploration; {reason}")
            } else {
                reason
            };
            notes.push(CandidateTrace {
                target: cand.target.id.to_string(),
                reason,
            });
            req.candidates.push(cand);
        }
        tracing::debug!(route = %req.route.name, explored, first = %req.candidates[0].target.id, "latency ranking");
        req.ctx.trace.decision(
            "reorder",
            format!(
                "latency: {} first{}",
                req.candidates[0].target.id,
                if explored { " (exploration)" } else { "" }
            ),
        );
        req.ctx.trace.with(|t| t.candidates = notes);
    }
}

impl AttemptObserver for LatencyRegistry {
    fn on_attempt(&self, report: &AttemptReport<'_>) {
        if report.result.is_err() {
            return;
        }
        let now = Instant::now();
        let cfg = self.shared.config;
        let us = report.latency.as_micros().min(u32::MAX as u128) as u32;
        let mut map = self.lock();
        if !map.contains_key(report.target) && map.len() >= MAX_TARGETS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, r)| r.updated)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let ring = map.entry(report.target.clone()).or_insert_with(|| Ring {
            samples: VecDeque::new(),
            updated: now,
        });
        ring.updated = now;
        ring.prune(now, cfg.window);
        if ring.samples.len() >= cfg.max_samples.max(1) {
            ring.samples.pop_front();
        }
        ring.samples.push_back((now, us));
        if let Some(e) = ring.estimate() {
            let (p, m) = (report.target.provider.clone(), report.target.model.clone());
            metrics::gauge!("modelux_latency_p50_seconds", "provider" => p.clone(), "model" => m.clone())
                .set(e.p50.as_secs_f64());
            metrics::gauge!("modelux_latency_p95_seconds", "provider" => p, "model" => m)
                .set(e.p95.as_secs_f64());
        }
    }
}
