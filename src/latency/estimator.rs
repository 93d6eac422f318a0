use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::LatencyConfig;
use crate::handles::Slot;
use crate::provider::TargetId;
use crate::route::{AttemptObserver, AttemptPhase, AttemptReport, RouteRequest, Strategy};
use crate::trace::{CandidateNote, Reason};

/// Targets tracked at most; the least recently updated is forgotten beyond this.
const MAX_TARGETS: usize = 4096;

/// A target's live latency.
///
/// ```
/// use std::time::Duration;
/// use modelux::latency::{LatencyConfig, LatencyRegistry};
/// use modelux::provider::TargetId;
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
///
/// let registry = LatencyRegistry::new(LatencyConfig::default());
/// let id = TargetId::new("openai", "m");
/// for ms in [100, 200, 300, 400] {
///     let latency = Duration::from_millis(ms);
///     registry.on_attempt(&AttemptReport { target: &id, result: Ok(()), latency, stream: false, phase: AttemptPhase::Whole });
/// }
/// let e = registry.estimate(&id).unwrap();
/// assert_eq!(e.samples, 4);
/// assert_eq!(e.p50, Duration::from_millis(200));
/// assert_eq!(e.p95, Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyEstimate {
    /// Median of the window.
    pub p50: Duration,
    /// 95th percentile of the window.
    pub p95: Duration,
    /// Samples in the window.
    pub samples: usize,
}

/// What a latency sample measures. A stream's time to its first content
/// token and a whole answer's time are different quantities (a model that
/// streams most of its traffic would look faster than one that does not), so
/// each target keeps one window of each, and a request is ranked by the one
/// it will experience.
///
/// ```
/// use modelux::latency::Measure;
/// assert_eq!(Measure::of(true), Measure::FirstToken);
/// assert_eq!(Measure::of(false).label(), "whole");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// A non-streaming answer, from the attempt's start to its whole body.
    Whole,
    /// A stream, from the attempt's start to its first content token.
    FirstToken,
}

impl Measure {
    /// The measure of a streaming (`true`) or a whole (`false`) attempt.
    ///
    /// ```
    /// use modelux::latency::Measure;
    /// assert_eq!(Measure::of(true), Measure::FirstToken);
    /// assert_eq!(Measure::of(false), Measure::Whole);
    /// ```
    pub fn of(stream: bool) -> Self {
        if stream {
            Measure::FirstToken
        } else {
            Measure::Whole
        }
    }

    /// The `measure` label of the p50/p95 gauges: `whole` or `first_token`.
    ///
    /// ```
    /// use modelux::latency::Measure;
    /// assert_eq!(Measure::Whole.label(), "whole");
    /// assert_eq!(Measure::FirstToken.label(), "first_token");
    /// ```
    pub fn label(self) -> &'static str {
        match self {
            Measure::Whole => "whole",
            Measure::FirstToken => "first_token",
        }
    }
}

/// The p50/p95 gauges of a target are refreshed at most this often: the
/// estimate is a selection over up to `max_samples` samples, too much work
/// for every attempt just to set two gauges nobody reads between scrapes.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Ring {
    samples: VecDeque<(Instant, u32)>,
    updated: Instant,
    /// The estimate of `samples` as they were when it was computed.
    cached: Option<LatencyEstimate>,
    /// `samples` changed since `cached` was computed.
    dirty: bool,
    /// Reused buffer for the selection.
    scratch: Vec<u32>,
    /// When the gauges were last set.
    gauges_at: Option<Instant>,
    p50_gauge: Slot<metrics::Gauge>,
    p95_gauge: Slot<metrics::Gauge>,
}

impl Ring {
    fn new(now: Instant) -> Self {
        Ring {
            samples: VecDeque::new(),
            updated: now,
            cached: None,
            dirty: false,
            scratch: Vec::new(),
            gauges_at: None,
            p50_gauge: Slot::new(),
            p95_gauge: Slot::new(),
        }
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
        {
            self.samples.pop_front();
            self.dirty = true;
        }
    }

    fn push(&mut self, now: Instant, us: u32, max_samples: usize) {
        if self.samples.len() >= max_samples.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back((now, us));
        self.dirty = true;
    }

    /// p50 and p95 by selection on a copy (the ring is small: hundreds of
    /// samples, so no sketch is needed), computed again only after the
    /// samples changed.
    fn estimate(&mut self) -> Option<LatencyEstimate> {
        if !self.dirty {
            return self.cached;
        }
        self.dirty = false;
        self.cached = None;
        if self.samples.is_empty() {
            return None;
        }
        let v = &mut self.scratch;
        v.clear();
        v.extend(self.samples.iter().map(|(_, us)| *us));
        let n = v.len();
        let i50 = (n - 1) / 2;
        let p50 = *v.select_nth_unstable(i50).1;
        let i95 = ((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1;
        let p95 = *v.select_nth_unstable(i95).1;
        self.cached = Some(LatencyEstimate {
            p50: Duration::from_micros(p50 as u64),
            p95: Duration::from_micros(p95 as u64),
            samples: n,
        });
        self.cached
    }
}

/// A target's two windows, one per [`Measure`].
#[derive(Debug)]
struct Windows {
    whole: Ring,
    first_token: Ring,
}

impl Windows {
    fn new(now: Instant) -> Self {
        Windows {
            whole: Ring::new(now),
            first_token: Ring::new(now),
        }
    }

    fn get(&mut self, measure: Measure) -> &mut Ring {
        match measure {
            Measure::Whole => &mut self.whole,
            Measure::FirstToken => &mut self.first_token,
        }
    }

    fn updated(&self) -> Instant {
        self.whole.updated.max(self.first_token.updated)
    }
}

#[derive(Debug)]
struct Shared {
    config: LatencyConfig,
    /// Shared with the registries [`LatencyRegistry::with_config`] makes.
    targets: Arc<Mutex<HashMap<TargetId, Windows>>>,
}

/// Live latency per target, shared by every clone of the layer.
///
/// ```
/// use std::time::Duration;
/// use modelux::latency::{LatencyConfig, LatencyRegistry};
/// use modelux::provider::TargetId;
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
/// let registry = LatencyRegistry::new(LatencyConfig::default());
/// let clone = registry.clone();
/// let id = TargetId::new("p", "m");
/// clone.on_attempt(&AttemptReport { target: &id, result: Ok(()), latency: Duration::from_millis(80), stream: false, phase: AttemptPhase::Whole });
/// // A sample recorded through a clone is seen by every clone.
/// assert_eq!(registry.estimate(&id).unwrap().samples, 1);
/// ```
#[derive(Clone, Debug)]
pub struct LatencyRegistry {
    shared: Arc<Shared>,
}

impl LatencyRegistry {
    /// An empty registry.
    ///
    /// ```
    /// use modelux::latency::{LatencyConfig, LatencyRegistry};
    /// use modelux::provider::TargetId;
    /// let config = LatencyConfig { min_samples: 3, ..LatencyConfig::default() };
    /// let registry = LatencyRegistry::new(config);
    /// assert_eq!(registry.config().min_samples, 3);
    /// assert!(registry.estimate(&TargetId::new("p", "m")).is_none());
    /// ```
    pub fn new(config: LatencyConfig) -> Self {
        LatencyRegistry {
            shared: Arc::new(Shared {
                config,
                targets: Arc::new(Mutex::new(HashMap::new())),
            }),
        }
    }

    /// A registry with new settings over the same samples: what a new config
    /// version uses, so the estimates survive the swap and the new window
    /// and thresholds apply from the next read.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::latency::{LatencyConfig, LatencyRegistry};
    /// let old = LatencyRegistry::new(LatencyConfig::default());
    /// let wider = LatencyConfig { window: Duration::from_secs(600), ..LatencyConfig::default() };
    /// assert_eq!(old.with_config(wider).config().window, Duration::from_secs(600));
    /// ```
    pub fn with_config(&self, config: LatencyConfig) -> Self {
        LatencyRegistry {
            shared: Arc::new(Shared {
                config,
                targets: self.shared.targets.clone(),
            }),
        }
    }

    /// The settings in force.
    ///
    /// ```
    /// use modelux::latency::{LatencyConfig, LatencyRegistry};
    /// let r = LatencyRegistry::new(LatencyConfig::default());
    /// assert_eq!(*r.config(), LatencyConfig::default());
    /// ```
    pub fn config(&self) -> &LatencyConfig {
        &self.shared.config
    }

    /// Forgets the samples of every target `keep` refuses: what a new
    /// config version does with the targets it no longer has.
    ///
    /// ```
    /// use modelux::latency::{LatencyConfig, LatencyRegistry};
    /// use modelux::provider::TargetId;
    /// let r = LatencyRegistry::new(LatencyConfig::default());
    /// r.retain(|_| false);
    /// assert!(r.estimate(&TargetId::new("p", "m")).is_none());
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&TargetId) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TargetId, Windows>> {
        self.shared
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The estimate of `target`'s whole (non-streaming) answers, if it has
    /// samples in the window.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use modelux::latency::{LatencyConfig, LatencyRegistry};
    /// use modelux::provider::TargetId;
    /// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// let config = LatencyConfig { window: Duration::from_secs(60), ..LatencyConfig::default() };
    /// let registry = LatencyRegistry::new(config);
    /// let id = TargetId::new("p", "m");
    /// registry.on_attempt(&AttemptReport { target: &id, result: Ok(()), latency: Duration::from_millis(120), stream: false, phase: AttemptPhase::Whole });
    /// assert_eq!(registry.estimate(&id).unwrap().p50, Duration::from_millis(120));
    /// // Once the sample leaves the window there is no estimate.
    /// tokio::time::advance(Duration::from_secs(61)).await;
    /// assert!(registry.estimate(&id).is_none());
    /// # }
    /// ```
    pub fn estimate(&self, target: &TargetId) -> Option<LatencyEstimate> {
        self.estimate_of(target, Measure::Whole)
    }

    /// The estimate of `target` by `measure`: [`Measure::FirstToken`] for its
    /// streams' time to first token.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::latency::{LatencyConfig, LatencyRegistry, Measure};
    /// use modelux::provider::TargetId;
    /// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// let registry = LatencyRegistry::new(LatencyConfig::default());
    /// let id = TargetId::new("p", "m");
    /// let first = AttemptReport { target: &id, result: Ok(()), latency: Duration::from_millis(200), stream: true, phase: AttemptPhase::FirstToken };
    /// registry.on_attempt(&first);
    /// assert_eq!(registry.estimate_of(&id, Measure::FirstToken).unwrap().p50, Duration::from_millis(200));
    /// assert!(registry.estimate(&id).is_none(), "no whole answer measured");
    /// ```
    pub fn estimate_of(&self, target: &TargetId, measure: Measure) -> Option<LatencyEstimate> {
        let now = Instant::now();
        let mut map = self.lock();
        let ring = map.get_mut(target)?.get(measure);
        ring.prune(now, self.shared.config.window);
        ring.estimate()
    }

    /// Orders a `latency` route's candidates: trusted estimates by p50, then
    /// the untrusted ones in their current order; with probability `explore`
    /// the least recently measured other candidate goes first (never
    /// measured first of all).
    pub(crate) fn order(&self, req: &mut RouteRequest) {
        if req.route.strategy != Strategy::Latency || req.candidates.len() < 2 {
            return;
        }
        let cfg = self.shared.config;
        let now = Instant::now();
        let measure = Measure::of(req.chat.is_stream());
        let (estimates, last): (Vec<Option<LatencyEstimate>>, Vec<Option<Instant>>) = {
            let mut map = self.lock();
            req.candidates
                .iter()
                .map(|c| match map.get_mut(&c.target.id) {
                    Some(w) => {
                        let r = w.get(measure);
                        r.prune(now, cfg.window);
                        (r.estimate(), r.samples.back().map(|(at, _)| *at))
                    }
                    None => (None, None),
                })
                .unzip()
        };
        let mut idx: Vec<usize> = (0..req.candidates.len()).collect();
        let key = |i: &usize| match estimates[*i] {
            Some(e) if e.samples >= cfg.min_samples => (0u8, e.p50),
            _ => (1u8, Duration::ZERO),
        };
        idx.sort_by_key(key);
        let mut explored = false;
        if cfg.explore > 0.0 && crate::rng::chance(cfg.explore) {
            // The candidate other than the current first whose last sample
            // is oldest: by sample count, a recovered target whose window
            // was full of slow samples lost every exploration to a target
            // with fewer, and kept no traffic until they aged out.
            if let Some(pos) = (1..idx.len()).min_by_key(|p| last[idx[*p]]) {
                let chosen = idx.remove(pos);
                idx.insert(0, chosen);
                explored = true;
            }
        }
        let mut old: Vec<Option<_>> = req.candidates.drain(..).map(Some).collect();
        let mut notes = Vec::with_capacity(idx.len());
        for (rank, i) in idx.iter().enumerate() {
            let Some(cand) = old[*i].take() else {
                continue; // each index is in `idx` once
            };
            let reason = match estimates[*i] {
                Some(e) if e.samples >= cfg.min_samples => Reason::Ranked {
                    p50_ms: e.p50.as_millis(),
                    p95_ms: e.p95.as_millis(),
                    samples: e.samples,
                },
                Some(e) => Reason::FewSamples {
                    samples: e.samples,
                    min: cfg.min_samples,
                },
                None => Reason::NoSamples,
            };
            let mut note = CandidateNote::new(&cand.target.id, Reason::Exploration);
            if explored && rank == 0 {
                note.reasons.push(reason);
            } else {
                note.reasons[0] = reason;
            }
            notes.push(note);
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
        req.ctx.trace.with_notes(|n, _| *n = notes);
    }
}

impl AttemptObserver for LatencyRegistry {
    fn on_attempt(&self, report: &AttemptReport<'_>) {
        // Measured once per attempt: a stream at its first token, not again
        // at its end.
        if report.result.is_err() || report.phase == AttemptPhase::StreamEnd {
            return;
        }
        let now = Instant::now();
        let cfg = self.shared.config;
        let us = report.latency.as_micros().min(u32::MAX as u128) as u32;
        let measure = Measure::of(report.stream);
        let mut map = self.lock();
        if !map.contains_key(report.target) && map.len() >= MAX_TARGETS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, w)| w.updated())
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let ring = map
            .entry(report.target.clone())
            .or_insert_with(|| Windows::new(now))
            .get(measure);
        ring.updated = now;
        ring.prune(now, cfg.window);
        ring.push(now, us, cfg.max_samples);
        if ring
            .gauges_at
            .is_some_and(|at| now.saturating_duration_since(at) < GAUGE_REFRESH)
        {
            return;
        }
        ring.gauges_at = Some(now);
        if let Some(e) = ring.estimate() {
            let (p, m) = (&report.target.provider, &report.target.model);
            let kind = measure.label();
            ring.p50_gauge.with(
                &[p, m],
                || metrics::gauge!("modelux_latency_p50_seconds", "provider" => p.clone(), "model" => m.clone(), "measure" => kind),
                |g| g.set(e.p50.as_secs_f64()),
            );
            ring.p95_gauge.with(
                &[p, m],
                || metrics::gauge!("modelux_latency_p95_seconds", "provider" => p.clone(), "model" => m.clone(), "measure" => kind),
                |g| g.set(e.p95.as_secs_f64()),
            );
        }
    }
}
