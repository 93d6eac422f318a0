use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::HealthConfig;
use crate::handles::Slot;
use crate::provider::{Failure, Target, TargetId};
use crate::route::{AttemptObserver, AttemptPhase, AttemptReport, Candidate, RouteRequest};
use crate::trace::{push_small, CandidateNote, Reason};

/// Targets tracked at most; the least recently used is forgotten beyond this.
const MAX_TARGETS: usize = 4096;
/// Attempts kept per target window at most, whatever the window's duration.
pub(crate) const MAX_WINDOW: usize = 1024;

/// Where a target stands.
///
/// ```
/// use std::time::Duration;
/// use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
/// use modelux::provider::{Failure, ProviderError, TargetId};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
///
/// let registry = HealthRegistry::new(HealthConfig { consecutive_failures: 1, ..HealthConfig::default() });
/// let id = TargetId::new("openai", "m");
/// assert_eq!(registry.status(&id), TargetStatus::Healthy);
/// let err = ProviderError::new(Failure::Server { status: 503 }, "down");
/// registry.on_attempt(&AttemptReport { target: &id, result: Err(&err), latency: Duration::ZERO, stream: false, phase: AttemptPhase::Whole });
/// match registry.status(&id) {
///     TargetStatus::Ejected { until } => assert!(until > tokio::time::Instant::now()),
///     other => panic!("not ejected: {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetStatus {
    /// Takes traffic in its normal place.
    Healthy,
    /// Ejected until the given instant; tried only when nothing healthy is left.
    Ejected {
        /// When the cool-down ends.
        until: Instant,
    },
    /// The cool-down is over; probe requests decide.
    Probing,
    /// The provider asked for a pause (429 with `Retry-After`) until the given instant.
    Cooling {
        /// When the pause ends.
        until: Instant,
    },
}

/// One target's health, as reported by [`HealthRegistry::snapshot`].
///
/// ```
/// use std::time::Duration;
/// use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
/// use modelux::provider::{Failure, ProviderError, TargetId};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
///
/// let registry = HealthRegistry::new(HealthConfig::default());
/// let id = TargetId::new("openai", "m");
/// let ok = AttemptReport { target: &id, result: Ok(()), latency: Duration::from_millis(50), stream: false, phase: AttemptPhase::Whole };
/// registry.on_attempt(&ok);
/// let err = ProviderError::new(Failure::Server { status: 503 }, "down");
/// registry.on_attempt(&AttemptReport { result: Err(&err), ..ok });
/// let health = &registry.snapshot()[0];
/// assert_eq!(health.target, id);
/// assert_eq!((health.samples, health.score), (2, 0.5));
/// assert_eq!((health.status, health.ejections), (TargetStatus::Healthy, 0));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    /// The target.
    pub target: TargetId,
    /// Where it stands.
    pub status: TargetStatus,
    /// `1 - failure rate` over the window (1.0 with no samples).
    pub score: f64,
    /// Attempts in the window.
    pub samples: usize,
    /// Ejections in a row so far (the cool-down doubles with each).
    pub ejections: u32,
}

#[derive(Debug)]
struct Entry {
    window: VecDeque<(Instant, bool)>,
    /// Failures in `window`, kept in step with it.
    failures: usize,
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    /// When the target was last ejected: a success of an attempt that
    /// started before it says nothing about its recovery.
    ejected_at: Option<Instant>,
    probing: bool,
    /// Since its last ejection, a request tried the target anyway during
    /// its cool-down, every candidate of its route being unavailable: that
    /// request's answer may restore it (see `on_attempt`).
    tried_anyway: bool,
    probes_in_flight: u32,
    /// When a probe restored the target: its share of traffic ramps up
    /// from then over the slow start (see [`HealthConfig::slow_start`]).
    restored_at: Option<Instant>,
    cooling_until: Option<Instant>,
    last_used: Instant,
    /// `modelux_health_score` for this target.
    score_gauge: Slot<metrics::Gauge>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            window: VecDeque::new(),
            failures: 0,
            consecutive: 0,
            ejections: 0,
            ejected_until: None,
            ejected_at: None,
            probing: false,
            tried_anyway: false,
            probes_in_flight: 0,
            restored_at: None,
            cooling_until: None,
            last_used: now,
            score_gauge: Slot::new(),
        }
    }

    /// The share of requests a target restored within `slow_start` is put
    /// first for: ≈ 10 % at its restoration, rising linearly to all.
    /// `None` once the slow start is over (its run of ejections ends then).
    fn slow_start_share(&mut self, now: Instant, slow_start: Duration) -> Option<f64> {
        let at = self.restored_at?;
        let elapsed = now.saturating_duration_since(at);
        if elapsed >= slow_start {
            self.restored_at = None;
            self.ejections = 0;
            return None;
        }
        let progress = elapsed.as_secs_f64() / slow_start.as_secs_f64();
        Some(0.1 + 0.9 * progress)
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some((t, ok)) = self.window.front() {
            if now.saturating_duration_since(*t) > window || self.window.len() > MAX_WINDOW {
                if !ok {
                    self.failures -= 1;
                }
                self.window.pop_front();
            } else {
                break;
            }
        }
    }

    fn push(&mut self, now: Instant, ok: bool) {
        if !ok {
            self.failures += 1;
        }
        self.window.push_back((now, ok));
    }

    fn clear(&mut self) {
        self.window.clear();
        self.failures = 0;
    }

    /// O(1): the failure count is kept up to date by `push`, `prune` and `clear`.
    fn failure_rate(&self) -> f64 {
        if self.window.is_empty() {
            return 0.0;
        }
        self.failures as f64 / self.window.len() as f64
    }
}

#[derive(Debug)]
struct Shared {
    config: HealthConfig,
    /// Shared with the registries [`HealthRegistry::with_config`] makes.
    targets: Arc<Mutex<HashMap<TargetId, Entry>>>,
}

/// The health of every target, shared by all clones of the layer and by the
/// observers it hands to requests.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
/// use modelux::provider::{Failure, ProviderError, TargetId};
/// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
/// let registry = HealthRegistry::new(HealthConfig { consecutive_failures: 2, ..HealthConfig::default() });
/// let id = TargetId::new("openai", "m");
/// let err = ProviderError::new(Failure::Server { status: 503 }, "down");
/// let failed = AttemptReport { target: &id, result: Err(&err), latency: Duration::ZERO, stream: false, phase: AttemptPhase::Whole };
/// registry.on_attempt(&failed);
/// registry.clone().on_attempt(&failed); // clones share the targets' health
/// assert!(matches!(registry.status(&id), TargetStatus::Ejected { .. }));
/// // Once the cool-down (`cooldown_base`, 5 s) is over, a probe decides.
/// tokio::time::sleep(Duration::from_secs(5)).await;
/// assert_eq!(registry.status(&id), TargetStatus::Probing);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HealthRegistry {
    shared: Arc<Shared>,
}

/// Keeps a probe slot taken until the request that probes ends.
struct ProbePermit {
    shared: Arc<Shared>,
    target: TargetId,
}

impl Drop for ProbePermit {
    fn drop(&mut self) {
        if let Ok(mut map) = self.shared.targets.lock() {
            if let Some(e) = map.get_mut(&self.target) {
                e.probes_in_flight = e.probes_in_flight.saturating_sub(1);
            }
        }
    }
}

impl HealthRegistry {
    /// An empty registry.
    ///
    /// ```
    /// use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
    /// let registry = HealthRegistry::new(HealthConfig::default());
    /// assert!(registry.snapshot().is_empty());
    /// // A target it has never seen is healthy.
    /// let id = modelux::provider::TargetId::new("openai", "m");
    /// assert_eq!(registry.status(&id), TargetStatus::Healthy);
    /// ```
    pub fn new(config: HealthConfig) -> Self {
        HealthRegistry {
            shared: Arc::new(Shared {
                config,
                targets: Arc::new(Mutex::new(HashMap::new())),
            }),
        }
    }

    /// A registry with new settings over the same targets' health: what a
    /// new config version uses, so a target ejected under the old settings
    /// stays ejected, and the new thresholds apply from the next attempt.
    ///
    /// ```
    /// use modelux::health::{HealthConfig, HealthRegistry};
    /// let old = HealthRegistry::new(HealthConfig::default());
    /// let new = old.with_config(HealthConfig { consecutive_failures: 9, ..HealthConfig::default() });
    /// assert_eq!(new.config().consecutive_failures, 9);
    /// assert_eq!(old.config().consecutive_failures, HealthConfig::default().consecutive_failures);
    /// ```
    pub fn with_config(&self, config: HealthConfig) -> Self {
        HealthRegistry {
            shared: Arc::new(Shared {
                config,
                targets: self.shared.targets.clone(),
            }),
        }
    }

    /// The settings in force.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::health::{HealthConfig, HealthRegistry};
    /// let config = HealthConfig { cooldown_base: Duration::from_secs(1), ..HealthConfig::default() };
    /// let registry = HealthRegistry::new(config);
    /// assert_eq!(registry.config().cooldown_base, Duration::from_secs(1));
    /// assert_eq!(*registry.clone().config(), config);
    /// ```
    pub fn config(&self) -> &HealthConfig {
        &self.shared.config
    }

    /// Forgets every target `keep` refuses: what a new config version does
    /// with the targets it no longer has. Their `modelux_health_ejected`
    /// goes back to 0, so an alert on an ejected target that was removed
    /// (the usual answer to a provider outage) clears instead of firing
    /// until the next restart; a target added back starts healthy.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
    /// use modelux::provider::{Failure, ProviderError, TargetId};
    /// use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// let registry = HealthRegistry::new(HealthConfig { consecutive_failures: 1, ..HealthConfig::default() });
    /// let gone = TargetId::new("old", "m");
    /// let failure = ProviderError::new(Failure::Server { status: 503 }, "down");
    /// registry.on_attempt(&AttemptReport {
    ///     target: &gone,
    ///     result: Err(&failure),
    ///     latency: Duration::from_millis(5),
    ///     stream: false,
    ///     phase: AttemptPhase::Whole,
    /// });
    /// assert!(matches!(registry.status(&gone), TargetStatus::Ejected { .. }));
    /// registry.retain(|id| id.provider.as_ref() != "old");
    /// assert_eq!(registry.status(&gone), TargetStatus::Healthy);
    /// assert!(registry.snapshot().is_empty());
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&TargetId) -> bool) {
        self.lock().retain(|id, e| {
            if keep(id) {
                return true;
            }
            if e.ejected_until.is_some() {
                metrics::gauge!("modelux_health_ejected", "provider" => id.provider.clone(), "model" => id.model.clone())
                    .set(0.0);
            }
            tracing::info!(target = %id, "health of a target the config no longer has forgotten");
            false
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TargetId, Entry>> {
        // A panic while holding the lock cannot leave an entry half-updated
        // in a way that matters more than losing health data.
        self.shared
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Where `target` stands now.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use modelux::health::{HealthConfig, HealthRegistry, TargetStatus};
    /// # use modelux::provider::{Failure, ProviderError, TargetId};
    /// # use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// let registry = HealthRegistry::new(HealthConfig::default());
    /// let id = TargetId::new("openai", "m");
    /// // A 429 with `Retry-After` pauses the target for that long.
    /// let err = ProviderError::new(Failure::RateLimited, "slow down")
    ///     .with_retry_after(Some(Duration::from_secs(2)));
    /// registry.on_attempt(&AttemptReport { target: &id, result: Err(&err), latency: Duration::ZERO, stream: false, phase: AttemptPhase::Whole });
    /// assert!(matches!(registry.status(&id), TargetStatus::Cooling { .. }));
    /// ```
    pub fn status(&self, target: &TargetId) -> TargetStatus {
        let now = Instant::now();
        let map = self.lock();
        map.get(target)
            .map(|e| status_of(e, now))
            .unwrap_or(TargetStatus::Healthy)
    }

    /// Every tracked target's health.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use modelux::health::{HealthConfig, HealthRegistry};
    /// # use modelux::provider::TargetId;
    /// # use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// let registry = HealthRegistry::new(HealthConfig::default());
    /// for id in [TargetId::new("b", "m"), TargetId::new("a", "m")] {
    ///     registry.on_attempt(&AttemptReport { target: &id, result: Ok(()), latency: Duration::ZERO, stream: false, phase: AttemptPhase::Whole });
    /// }
    /// let snapshot = registry.snapshot();
    /// // Sorted by target, each with its score over the window.
    /// let ids: Vec<String> = snapshot.iter().map(|h| h.target.to_string()).collect();
    /// assert_eq!(ids, ["a/m", "b/m"]);
    /// assert!(snapshot.iter().all(|h| h.score == 1.0 && h.samples == 1));
    /// ```
    pub fn snapshot(&self) -> Vec<TargetHealth> {
        let now = Instant::now();
        let window = self.shared.config.window;
        let mut map = self.lock();
        let mut out: Vec<_> = map
            .iter_mut()
            .map(|(id, e)| {
                e.prune(now, window);
                TargetHealth {
                    target: id.clone(),
                    status: status_of(e, now),
                    score: 1.0 - e.failure_rate(),
                    samples: e.window.len(),
                    ejections: e.ejections,
                }
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    /// Reorders a request's candidates: healthy (and admitted probes) first
    /// in their current order, then the unavailable ones by when they become
    /// available again. Records the order and the reasons in the trace.
    pub(crate) fn order(&self, req: &mut RouteRequest) {
        let now = Instant::now();
        let mut map = self.lock();
        let mut ranked: Vec<(u8, Instant, Candidate, Reason)> =
            Vec::with_capacity(req.candidates.len());
        // Whether a candidate already stands first: healthy ones keep their
        // order and unavailable ones go behind them, so the first one ranked
        // available is the one the request tries first.
        let mut first_taken = false;
        let slow_start = self.shared.config.slow_start;
        // A healthy candidate neither probed, cooling nor in its slow start
        // is on the route: only for one of those is a target in its slow
        // start passed over (decided after the loop, which finds out).
        let mut any_settled = false;
        // Candidates in their slow start: where they were ranked, and the
        // share of requests they go first for.
        let mut slow: Vec<(usize, f64)> = Vec::new();
        for cand in req.candidates.drain(..) {
            let Some(e) = map.get_mut(&cand.target.id) else {
                first_taken = true;
                any_settled = true;
                ranked.push((0, now, cand, Reason::Healthy));
                continue;
            };
            e.last_used = now;
            if let Some(until) = e.ejected_until {
                if now < until {
                    let reason = Reason::Ejected {
                        ms_left: (until - now).as_millis() as u64,
                        ejections: e.ejections,
                    };
                    ranked.push((2, until, cand, reason));
                    continue;
                }
                e.ejected_until = None;
                e.probing = true;
            }
            if e.probing {
                // The probe slot goes to a request that tries the target
                // first: one that puts it behind a candidate that answers
                // never calls it, and holding the slot for that request (a
                // long stream on another target, say) kept the target from
                // its real probe and counted probes that never happened.
                let free = e.probes_in_flight < self.shared.config.probes;
                if first_taken && free {
                    // Behind the healthy ones and those in their slow start:
                    // a restored target before one not yet probed.
                    ranked.push((1, now, cand, Reason::ProbeIfReached));
                } else if free {
                    first_taken = true;
                    e.probes_in_flight += 1;
                    metrics::counter!(
                        "modelux_health_probes_total",
                        "provider" => cand.target.id.provider.clone(),
                        "model" => cand.target.id.model.clone(),
                    )
                    .increment(1);
                    tracing::debug!(target = %cand.target.id, "health probe admitted");
                    req.ctx.guards.push(Box::new(ProbePermit {
                        shared: self.shared.clone(),
                        target: cand.target.id.clone(),
                    }));
                    ranked.push((0, now, cand, Reason::Probe));
                } else {
                    ranked.push((2, now, cand, Reason::ProbeInFlight));
                }
                continue;
            }
            if let Some(until) = e.cooling_until.filter(|u| *u > now) {
                let reason = Reason::Cooling {
                    ms_left: (until - now).as_millis() as u64,
                };
                ranked.push((2, until, cand, reason));
                continue;
            }
            e.prune(now, self.shared.config.window);
            match e.slow_start_share(now, slow_start) {
                Some(share) => slow.push((ranked.len(), share)),
                None => any_settled = true,
            }
            first_taken = true;
            let reason = Reason::HealthyRate {
                failure_rate: e.failure_rate(),
                attempts: e.window.len(),
            };
            ranked.push((0, now, cand, reason));
        }
        if !first_taken {
            // Every candidate is unavailable: they are tried anyway, the
            // one back soonest first, and an answer may restore its target.
            // (Marked under this lock: a restore and a new ejection in
            // between would otherwise have the mark set on the new one.)
            for (_, _, cand, reason) in &ranked {
                if let (Reason::Ejected { .. }, Some(e)) = (reason, map.get_mut(&cand.target.id)) {
                    e.tried_anyway = true;
                }
            }
        }
        drop(map);
        // Restored a moment ago: first for a growing share of requests,
        // behind the settled healthy candidates for the rest, rather than
        // all of the route's traffic at once on a provider that may have
        // come back half-way.
        if any_settled {
            for (i, share) in slow {
                if !crate::rng::chance(share) {
                    ranked[i].0 = 1;
                    ranked[i].3 = Reason::SlowStart {
                        share_pct: (share * 100.0) as u8,
                    };
                }
            }
        }
        // A candidate passed over in its slow start that stood before one
        // going first moved (still in config order here).
        let slow_moved = ranked
            .iter()
            .position(|(_, _, _, r)| matches!(r, Reason::SlowStart { .. }))
            .is_some_and(|i| ranked[i..].iter().any(|(class, ..)| *class == 0));
        // Stable: healthy keep the order the layers above produced, then
        // those in a slow start left out of this request's share, then the
        // unavailable ones by when they come back.
        ranked.sort_by_key(|(class, at, _, _)| (*class, if *class < 2 { now } else { *at }));
        let moved = ranked.iter().any(|(class, ..)| *class == 2);
        if slow_moved {
            tracing::debug!(route = %req.route.name, "a target in its slow start moved behind the healthy ones");
            req.ctx.trace.decision(
                "reorder",
                "health: a target in its slow start moved behind the healthy ones".into(),
            );
        }
        let traced = req.ctx.trace.is_enabled();
        let mut notes = Vec::with_capacity(if traced { ranked.len() } else { 0 });
        for (_, _, cand, reason) in ranked {
            if traced {
                notes.push((cand.target.clone(), reason));
            }
            req.candidates.push(cand);
        }
        if moved {
            tracing::debug!(route = %req.route.name, "unhealthy targets moved behind healthy ones");
            req.ctx.trace.decision(
                "reorder",
                "health: unavailable targets moved behind healthy ones".into(),
            );
        }
        if traced {
            req.ctx
                .trace
                .with_notes(|existing, _| merge_reasons(existing, notes));
        }
    }

    fn eject(&self, id: &TargetId, e: &mut Entry, now: Instant, why: &str) {
        let c = &self.shared.config;
        // A slow start that ended unnoticed (no request ordered the target
        // since) ended its run of ejections: this one starts a new run.
        if e.restored_at
            .is_some_and(|at| now.saturating_duration_since(at) >= c.slow_start)
        {
            e.ejections = 0;
        }
        e.ejections = e.ejections.saturating_add(1);
        let factor = 1u32.checked_shl(e.ejections - 1).unwrap_or(u32::MAX);
        let cooldown = c.cooldown_base.saturating_mul(factor).min(c.cooldown_max);
        e.ejected_until = Some(crate::route::later(now, cooldown));
        e.ejected_at = Some(now);
        e.restored_at = None;
        e.probing = false;
        e.tried_anyway = false;
        e.consecutive = 0;
        e.clear();
        metrics::counter!(
            "modelux_health_ejections_total",
            "provider" => id.provider.clone(),
            "model" => id.model.clone(),
        )
        .increment(1);
        metrics::gauge!("modelux_health_ejected", "provider" => id.provider.clone(), "model" => id.model.clone())
            .set(1.0);
        tracing::warn!(target = %id, cooldown_ms = cooldown.as_millis() as u64, ejections = e.ejections, "target ejected: {why}");
    }
}

/// Health reasons are written after latency's; keep both for a reader, in
/// health's order.
fn merge_reasons(existing: &mut Vec<CandidateNote>, notes: Vec<(Arc<Target>, Reason)>) {
    let mut old = std::mem::take(existing);
    for (target, reason) in notes {
        match old.iter_mut().find(|o| o.target == target.id) {
            Some(prev) => {
                let mut reasons = std::mem::take(&mut prev.reasons);
                reasons.push(reason);
                push_small(
                    existing,
                    CandidateNote {
                        target: target.id.clone(),
                        reasons,
                    },
                );
            }
            None => push_small(existing, CandidateNote::new(&target.id, reason)),
        }
    }
}

fn status_of(e: &Entry, now: Instant) -> TargetStatus {
    if let Some(until) = e.ejected_until {
        if now < until {
            return TargetStatus::Ejected { until };
        }
        return TargetStatus::Probing;
    }
    if e.probing {
        return TargetStatus::Probing;
    }
    match e.cooling_until {
        Some(until) if until > now => TargetStatus::Cooling { until },
        _ => TargetStatus::Healthy,
    }
}

impl AttemptObserver for HealthRegistry {
    fn on_attempt(&self, report: &AttemptReport<'_>) {
        // A failure that is the request's fault (a 400, context length,
        // content policy) says nothing about the target either way: counted as
        // a success, one malformed request restored a probed target that
        // still answered everything else with 503s and reset its run of
        // consecutive failures.
        if report
            .result
            .is_err_and(|e| !e.failure.counts_against_target())
        {
            return;
        }
        // A stream is judged when it ends: a success at its first token
        // would reset the run of failures of a target that cuts every
        // stream, and restore a probed target before its stream broke.
        if report.phase == AttemptPhase::FirstToken {
            return;
        }
        let now = Instant::now();
        let id = report.target;
        let mut map = self.lock();
        if !map.contains_key(id) && map.len() >= MAX_TARGETS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let e = map.entry(id.clone()).or_insert_with(|| Entry::new(now));
        e.last_used = now;
        let c = self.shared.config;
        e.prune(now, c.window);
        // An attempt that started before the target's ejection was in
        // flight then, and says nothing about the target since. Its success
        // says the target was answering, not that it recovered: counted, at
        // the load of a busy route, such successes restored a target that
        // failed 60 % of requests as fast as it was ejected, and its
        // cool-down never grew. Its failure (a long stream, a stall that
        // began before) would fail the probe under way and double the
        // cool-down of a target that may have recovered. (One started after
        // it, a probe or one tried anyway while every target is ejected,
        // counts.)
        let started = now.checked_sub(report.latency).unwrap_or(now);
        if e.ejected_at.is_some_and(|at| started < at) {
            return;
        }
        if report.result.is_ok() {
            // During the cool-down only a request that chose the target
            // anyway restores it. A same-target retry of a request that
            // ordered it before the ejection, started a few ms after it,
            // restored a target failing a third of its requests 25 ms after
            // its ejection, again and again, and was never a probe.
            if e.ejected_until.is_some_and(|until| now < until) && !e.tried_anyway {
                return;
            }
            e.push(now, true);
            e.consecutive = 0;
            e.cooling_until = None;
            if e.probing || e.ejected_until.is_some() {
                tracing::info!(target = %id, slow_start_ms = c.slow_start.as_millis() as u64, "target restored after a successful probe");
                e.probing = false;
                e.ejected_until = None;
                // Ejected again during its slow start, the target is still
                // in the same run of ejections: a target that answers one
                // probe and fails under load must not come back every
                // `cooldown_base` for ever.
                if c.slow_start.is_zero() {
                    e.ejections = 0;
                } else {
                    e.restored_at = Some(now);
                }
                e.clear();
                e.push(now, true);
                metrics::gauge!("modelux_health_ejected", "provider" => id.provider.clone(), "model" => id.model.clone())
                    .set(0.0);
            }
        } else {
            let err = report.result.err();
            e.push(now, false);
            e.consecutive += 1;
            if let Some(ra) = err
                .filter(|e| e.failure == Failure::RateLimited)
                .and_then(|e| e.retry_after)
            {
                e.cooling_until = Some(crate::route::later(now, ra));
            }
            if e.probing {
                self.eject(id, e, now, "probe failed");
            } else if e.ejected_until.is_none() {
                let rate = e.failure_rate();
                if e.consecutive >= c.consecutive_failures {
                    let why = format!("{} consecutive failures", e.consecutive);
                    self.eject(id, e, now, &why);
                } else if e.window.len() >= c.min_requests as usize && rate >= c.failure_rate {
                    let why = format!("failure rate {rate:.2} over {} attempts", e.window.len());
                    self.eject(id, e, now, &why);
                }
            }
        }
        let score = 1.0 - e.failure_rate();
        e.score_gauge.with(
            &[&id.provider, &id.model],
            || metrics::gauge!("modelux_health_score", "provider" => id.provider.clone(), "model" => id.model.clone()),
            |g| g.set(score),
        );
    }
}
