//! Counterfactual replay: recorded traffic through the real layers, twice.
//!
//! For each config (baseline and candidate) a dedicated thread runs a
//! current-thread Tokio runtime with paused time. Every recorded request is
//! spawned at its recorded offset from the first one, through the same
//! latency ranking, health, retry budget and fallback layers the gateway
//! uses, over a simulated provider that answers each attempt from what its
//! target was observed doing: the request's own recorded attempt on that
//! target when there is one, else an observation of the target drawn (with
//! a seeded RNG) from a window around the request's time, else nothing
//! (the attempt fails as *unknown*, never as a success).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::{SampleInfo, TrafficRecord};
use crate::api::{ChatChunk, ChatCompletion, ChatRequest, RequestParams};
use crate::config::{Compiled, Config, ConfigError};
use crate::fallback::FallbackLayer;
use crate::health::HealthScoreLayer;
use crate::latency::LatencyRankLayer;
use crate::provider::{
    AttemptRequest, Completion, Failure, ProviderError, ProviderResponse, Target, TargetId,
};
use crate::retry_budget::RetryBudgetLayer;
use crate::route::{Route, RouteRequest};

/// How a dry-run samples and decides.
///
/// ```
/// let o = modelux::traffic::DryRunOptions::default();
/// assert_eq!(o.window_ms, 15 * 60 * 1000);
/// ```
#[derive(Clone)]
pub struct DryRunOptions {
    /// The RNG seed: the same records, configs and seed give the same report.
    pub seed: u64,
    /// An attempt with no recorded counterpart in its own request is drawn
    /// from the target's observations within this many ms of the request.
    pub window_ms: u64,
    /// How the records were sampled ([`load_window`](super::load_window)):
    /// the report then carries confidence intervals.
    pub sample: Option<SampleInfo>,
    /// Called now and then with `(requests replayed, requests to replay)`,
    /// counting both configs.
    pub progress: Option<ReplayProgress>,
    /// Set to `true` to stop the replay early: [`dry_run`] then returns
    /// [`DryRunError::Cancelled`] within a few hundred replayed requests.
    /// The admin endpoint sets it when its caller goes away, so a replay
    /// nobody will read does not keep a serving replica's CPU busy.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// A progress callback: `(done, total)`.
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// use std::sync::{Arc, Mutex};
/// let calls = Arc::new(Mutex::new(Vec::new()));
/// let seen = calls.clone();
/// let progress: ReplayProgress = Arc::new(move |done, total| seen.lock().unwrap().push((done, total)));
/// run_with(["b", "a"], &DryRunOptions { progress: Some(progress), ..DryRunOptions::default() }).unwrap();
/// // Both configs count: 2 × 50 requests.
/// assert_eq!(calls.lock().unwrap().last(), Some(&(100, 100)));
/// ```
pub type ReplayProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

impl std::fmt::Debug for DryRunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DryRunOptions")
            .field("seed", &self.seed)
            .field("window_ms", &self.window_ms)
            .field("sample", &self.sample)
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

impl Default for DryRunOptions {
    fn default() -> Self {
        DryRunOptions {
            seed: 0x006d_6f64_656c_7578,
            window_ms: 15 * 60 * 1000,
            sample: None,
            progress: None,
            cancel: None,
        }
    }
}

/// Why a dry-run could not be made.
#[derive(Debug)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// use std::sync::{atomic::AtomicBool, Arc};
/// let none = dry_run(&[], &config(["a", "b"]), &config(["b", "a"]), &DryRunOptions::default());
/// assert!(matches!(none, Err(DryRunError::Empty)));
/// let cancel = Some(Arc::new(AtomicBool::new(true)));
/// let err = run_with(["b", "a"], &DryRunOptions { cancel, ..DryRunOptions::default() }).unwrap_err();
/// assert_eq!(err.to_string(), "the dry-run was cancelled");
/// ```
pub enum DryRunError {
    /// No recorded request in the window.
    Empty,
    /// A config does not compile.
    Config(ConfigError),
    /// [`DryRunOptions::cancel`] was set before the replay ended.
    Cancelled,
}

impl std::fmt::Display for DryRunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DryRunError::Empty => f.write_str(
                "no recorded traffic in the window: nothing to replay (is traffic recording on?)",
            ),
            DryRunError::Config(e) => write!(f, "{e}"),
            DryRunError::Cancelled => f.write_str("the dry-run was cancelled"),
        }
    }
}

impl std::error::Error for DryRunError {}

/// What one config did (or would have done) to the replayed requests.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let actual = run(["b", "a"]).actual;
/// assert_eq!((actual.requests, actual.success_rate), (50, 1.0));
/// assert_eq!((actual.attempts_per_request, actual.fallback_rate), (2.0, 1.0));
/// assert_eq!(actual.by_target["p/b"], 1.0);
/// ```
pub struct Outcomes {
    /// Requests counted.
    pub requests: u64,
    /// Share of requests that got a full answer, 0..1.
    pub success_rate: f64,
    /// End-to-end latency percentiles of all requests, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Median time to first token of successful streams, ms (null: no streams).
    pub ttft_p50_ms: Option<f64>,
    /// Recorded token counts × the serving model's configured price, USD.
    pub cost_usd: f64,
    /// Upstream attempts per request.
    pub attempts_per_request: f64,
    /// Share of requests that tried more than one target.
    pub fallback_rate: f64,
    /// Target (`provider/model`) → share of served requests.
    pub by_target: BTreeMap<String, f64>,
    /// Route → its own figures.
    pub by_route: BTreeMap<String, RouteOutcomes>,
}

/// One route's figures.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let route = &run(["b", "a"]).candidate.by_route["default"];
/// assert_eq!((route.requests, route.success_rate, route.p50_ms), (50, 1.0, 20.0));
/// ```
pub struct RouteOutcomes {
    /// Requests on the route.
    pub requests: u64,
    /// Share answered.
    pub success_rate: f64,
    /// Median end-to-end latency, ms.
    pub p50_ms: f64,
}

/// Candidate minus baseline.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let report = run(["b", "a"]);
/// assert_eq!(report.diff.p50_ms, report.candidate.p50_ms - report.baseline.p50_ms);
/// // Trying `b` first saves the failed attempts on `a`.
/// assert!(report.diff.attempts_per_request < 0.0);
/// assert_eq!(report.diff.success_rate, 0.0);
/// ```
pub struct Diff {
    /// Success rate difference (points are × 100).
    pub success_rate: f64,
    /// p50 difference, ms.
    pub p50_ms: f64,
    /// p95 difference, ms.
    pub p95_ms: f64,
    /// p99 difference, ms.
    pub p99_ms: f64,
    /// Time-to-first-token difference, ms.
    pub ttft_p50_ms: Option<f64>,
    /// Cost difference, USD.
    pub cost_usd: f64,
    /// Attempts-per-request difference.
    pub attempts_per_request: f64,
    /// Fallback-rate difference.
    pub fallback_rate: f64,
}

/// The window replayed.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let window = run(["b", "a"]).window;
/// assert_eq!((window.from, window.to), (1_000_000, 1_049_000));
/// ```
pub struct Window {
    /// First request, Unix ms.
    pub from: u64,
    /// Last request, Unix ms.
    pub to: u64,
}

/// Targets a config uses that were never observed in the window.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// assert!(run(["b", "a"]).unobserved.targets.is_empty());
/// // `c` was never tried in the window: what it would do is unknown.
/// let unobserved = run(["c", "b"]).unobserved;
/// assert_eq!(unobserved.targets[0].target, "p/c");
/// assert!(unobserved.share_of_requests > 0.0);
/// ```
pub struct Unobserved {
    /// Each unobserved target of the candidate.
    pub targets: Vec<UnobservedTarget>,
    /// Share of requests whose simulated attempts reached any unobserved target.
    pub share_of_requests: f64,
    /// Share of requests with a recorded attempt that timed out on a target
    /// the candidate gives more time (on the request's route) than that
    /// attempt had: whether it would have answered in the extra time was
    /// never observed (replayed, it never answers).
    pub longer_timeout_share: f64,
    /// Share of requests that were streams continued on another target
    /// after a cut (an attempt answered, then another followed), on a route
    /// whose candidate recovers cut streams differently (`continuation`,
    /// `stream_idle_timeout_ms`): the recording keeps no cut, so replayed,
    /// such a stream never breaks.
    pub changed_recovery_share: f64,
    /// Share of requests that were streams lasting longer after their first
    /// token than the candidate's `stream_max_ms` on their route allows (and
    /// the baseline's allowed): the candidate would have ended them there,
    /// which the replay does not play out.
    pub stream_limit_share: f64,
}

/// One unobserved target.
#[derive(Debug, Clone, Serialize)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let report = run(["c", "b"]);
/// let c = &report.unobserved.targets[0];
/// assert_eq!((c.target.as_str(), c.routed_share), ("p/c", 1.0));
/// assert!(c.attempted_share > 0.0 && c.attempted_share <= 1.0);
/// ```
pub struct UnobservedTarget {
    /// `provider/model`.
    pub target: String,
    /// Share of requests whose candidate route lists it.
    pub routed_share: f64,
    /// Share of requests whose simulated attempts reached it.
    pub attempted_share: f64,
}

/// Where simulated attempts got their answers.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let report = run(["b", "a"]);
/// // Every request recorded its own attempt on `b`, which now answers first.
/// let candidate = &report.coverage["candidate"];
/// assert_eq!((candidate.attempts, candidate.own_record, candidate.none), (50, 1.0, 0.0));
/// ```
pub struct Coverage {
    /// Simulated attempts.
    pub attempts: u64,
    /// Share answered from the request's own recorded attempt on that target.
    pub own_record: f64,
    /// Share drawn from the target's records near the request's time.
    pub nearby: f64,
    /// Share with nothing to go on (counted as unknown failures).
    pub none: f64,
}

/// A target the candidate would load harder than it was ever seen loaded.
#[derive(Debug, Clone, Serialize)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let report = run(["c", "b"]);
/// let flag = report.rate_flags.iter().find(|f| f.target == "p/c").unwrap();
/// assert_eq!(flag.observed_peak_per_s, 0);
/// assert!(flag.simulated_peak_per_s >= 1);
/// ```
pub struct RateFlag {
    /// `provider/model`.
    pub target: String,
    /// The candidate's busiest second, attempts.
    pub simulated_peak_per_s: u64,
    /// The busiest second actually recorded, attempts.
    pub observed_peak_per_s: u64,
}

/// A dry-run report. See `docs/dry-run.md`.
#[derive(Debug, Clone, Serialize)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let report = run(["b", "a"]);
/// assert_eq!((report.requests, report.config_versions.as_slice()), (50, &[1][..]));
/// assert_eq!(report.seed, DryRunOptions::default().seed);
/// assert!(report.sample.is_none() && !report.notes.is_empty());
/// ```
pub struct Report {
    /// Requests replayed.
    pub requests: u64,
    /// The recorded window.
    pub window: Window,
    /// The baseline config, simulated.
    pub baseline: Outcomes,
    /// The candidate config, simulated.
    pub candidate: Outcomes,
    /// What really happened, from the log.
    pub actual: Outcomes,
    /// Candidate minus baseline.
    pub diff: Diff,
    /// Targets of the candidate never observed in the window.
    pub unobserved: Unobserved,
    /// Where simulated attempts got their answers, per side.
    pub coverage: BTreeMap<String, Coverage>,
    /// Targets the candidate would send more attempts per second than they
    /// ever carried in the window.
    pub rate_flags: Vec<RateFlag>,
    /// How far the simulated baseline is from what actually happened.
    pub calibration: Calibration,
    /// Config versions seen in the window.
    pub config_versions: Vec<u64>,
    /// The seed used.
    pub seed: u64,
    /// Wall-clock time the replay took, ms.
    pub elapsed_ms: u64,
    /// Replayed requests per wall-clock second (both sides).
    pub requests_per_s: f64,
    /// Caveats a reader should know.
    pub notes: Vec<String>,
    /// End-to-end latency distribution per side, for plotting.
    pub latency_histogram: LatencyHistogram,
    /// Requests, success rate and cost per time bucket over the window.
    pub series: Series,
    /// Present when the window was sampled: what was kept and 95 %
    /// confidence intervals.
    pub sample: Option<SampleReport>,
}

/// Latency counts in log-spaced bins.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let h = run(["b", "a"]).latency_histogram;
/// assert_eq!(h.bounds_ms.len(), h.actual.len() + 1);
/// assert_eq!(h.actual.iter().sum::<u64>(), 50);
/// assert_eq!(h.candidate.iter().sum::<u64>(), 50);
/// ```
pub struct LatencyHistogram {
    /// Bin edges, ms: bin `i` holds `[bounds_ms[i], bounds_ms[i + 1])`.
    pub bounds_ms: Vec<f64>,
    /// Baseline requests per bin.
    pub baseline: Vec<u64>,
    /// Candidate requests per bin.
    pub candidate: Vec<u64>,
    /// Recorded requests per bin.
    pub actual: Vec<u64>,
}

/// Figures per time bucket.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let series = run(["b", "a"]).series;
/// assert!(series.bucket_ms > 0 && !series.points.is_empty());
/// assert_eq!(series.points.iter().map(|p| p.actual.requests).sum::<u64>(), 50);
/// ```
pub struct Series {
    /// Bucket length, ms (an hour, or less for short windows).
    pub bucket_ms: u64,
    /// One point per bucket with traffic, oldest first.
    pub points: Vec<SeriesPoint>,
}

/// One time bucket.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let series = run(["b", "a"]).series;
/// let first = &series.points[0];
/// assert!(first.from <= 1_000_000 && 1_000_000 < first.from + series.bucket_ms);
/// assert_eq!(first.candidate.success_rate, 1.0);
/// ```
pub struct SeriesPoint {
    /// Bucket start, Unix ms.
    pub from: u64,
    /// The baseline's figures in the bucket.
    pub baseline: BucketFigures,
    /// The candidate's.
    pub candidate: BucketFigures,
    /// What actually happened.
    pub actual: BucketFigures,
}

/// A side's figures in one bucket.
#[derive(Debug, Clone, Copy, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let series = run(["b", "a"]).series;
/// let actual: BucketFigures = series.points[0].actual;
/// assert!(actual.requests > 0);
/// assert_eq!(actual.success_rate, 1.0);
/// // No prices configured: no cost.
/// assert_eq!((actual.cost_usd, actual.cost_usd_per_hour), (0.0, 0.0));
/// ```
pub struct BucketFigures {
    /// Requests.
    pub requests: u64,
    /// Share answered.
    pub success_rate: f64,
    /// Cost in the bucket, USD.
    pub cost_usd: f64,
    /// Cost scaled to an hour, USD/h.
    pub cost_usd_per_hour: f64,
}

/// What a sampled dry-run kept and how sure it is.
#[derive(Debug, Clone, Serialize)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let info = SampleInfo {
///     records_in_window: 200, records_sampled: 50, blocks_in_window: 20,
///     blocks_sampled: 5, blocks_cut: 0, block_ms: 10_000, blocks_from: 1_000_000,
/// };
/// let opts = DryRunOptions { sample: Some(info), ..DryRunOptions::default() };
/// let sample = run_with(["b", "a"], &opts).unwrap().sample.unwrap();
/// assert_eq!(sample.scale, 4.0);
/// assert!(sample.confidence_95.contains_key("candidate.success_rate"));
/// ```
pub struct SampleReport {
    /// The sample.
    #[serde(flatten)]
    pub info: SampleInfo,
    /// Multiply sample totals (cost) by this for the whole window.
    pub scale: f64,
    /// 95 % intervals from a bootstrap over the kept blocks, keyed like
    /// `candidate.success_rate`, `diff.p50_ms`.
    pub confidence_95: BTreeMap<String, [f64; 2]>,
}

/// Simulated baseline against the log.
#[derive(Debug, Clone, Serialize, Default)]
///
/// ```
/// # use modelux::{config::Config, traffic::*};
/// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
/// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
/// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
/// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// # })).unwrap();
/// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
/// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
/// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
/// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
/// #     attempts: vec![
/// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
/// #         AttemptRecord::ok("p", "b", 100, 20),
/// #     ],
/// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
/// #     served_by: Some("p/b".into()), cost_usd: None,
/// # }).collect();
/// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
/// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
/// # };
/// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
/// // 50 recorded requests, one a second, on route `default`: model `a`
/// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
/// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
/// let report = run(["b", "a"]);
/// let c = &report.calibration;
/// assert_eq!(c.success_rate_error, report.baseline.success_rate - report.actual.success_rate);
/// assert!(c.p50_relative_error.is_finite());
/// ```
pub struct Calibration {
    /// Simulated minus actual success rate.
    pub success_rate_error: f64,
    /// Simulated p50 relative to actual, minus 1.
    pub p50_relative_error: f64,
}

impl Report {
    /// The report as JSON.
    ///
    /// ```
    /// # use modelux::{config::Config, traffic::*};
    /// # let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
    /// #     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    /// #     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}, "c": {"provider": "p"}},
    /// #     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
    /// # })).unwrap();
    /// # let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
    /// #     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
    /// #     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
    /// #     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
    /// #     attempts: vec![
    /// #         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
    /// #         AttemptRecord::ok("p", "b", 100, 20),
    /// #     ],
    /// #     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
    /// #     served_by: Some("p/b".into()), cost_usd: None,
    /// # }).collect();
    /// # let run_with = |candidate: [&str; 2], opts: &DryRunOptions| {
    /// #     dry_run(&records, &config(["a", "b"]), &config(candidate), opts)
    /// # };
    /// # let run = |candidate: [&str; 2]| run_with(candidate, &DryRunOptions::default()).unwrap();
    /// // 50 recorded requests, one a second, on route `default`: model `a`
    /// // fails with a 503 after 100 ms, then `b` answers in 20 ms. The baseline
    /// // routes `[a, b]`; `run([x, y])` replays a candidate routing `[x, y]`.
    /// let json = run(["b", "a"]).to_json();
    /// assert_eq!(json["requests"], 50);
    /// assert_eq!(json["window"]["from"], 1_000_000);
    /// assert_eq!(json["candidate"]["by_route"]["default"]["success_rate"], 1.0);
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

// ---------------------------------------------------------------------------
// Compact input.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Ok,
    RateLimited,
    Server,
    Timeout,
    Connect,
    ContextLength,
    ContentPolicy,
    Refused,
    Client,
    Other,
}

fn class_of(s: &str) -> Class {
    match s {
        "ok" => Class::Ok,
        "429" => Class::RateLimited,
        "5xx" => Class::Server,
        "timeout" | "stream_stall" => Class::Timeout,
        "connect" | "stream_cut" => Class::Connect,
        "context_length" => Class::ContextLength,
        "content_policy" => Class::ContentPolicy,
        "target_refused" => Class::Refused,
        "client_error" | "prefill_unsupported" => Class::Client,
        _ => Class::Other,
    }
}

#[derive(Clone, Copy, Debug)]
struct Obs {
    /// Absolute start, Unix ms.
    at_ms: u64,
    class: Class,
    duration_ms: u32,
    /// For a committed stream: from first token to the end.
    tail_ms: u32,
    status: u16,
    retry_after_ms: Option<u32>,
}

struct Input {
    /// Records in time order: (index into the caller's slice).
    order: Vec<usize>,
    t0: u64,
    /// Interned `provider/model` names.
    names: Vec<String>,
    ids: HashMap<TargetId, u32>,
    /// Per target, observations sorted by time.
    obs: Vec<Vec<Obs>>,
    /// Per replayed request (in `order`), its own attempts.
    own: Vec<Vec<(u32, Obs)>>,
    routes: Vec<String>,
    route_of: Vec<u32>,
    /// Per replayed request: start (Unix ms).
    at: Vec<u64>,
    /// Per replayed request: stream, max_tokens, prompt and completion tokens.
    meta: Vec<(bool, Option<u32>, u64, u64)>,
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn build_input(records: &[TrafficRecord]) -> Input {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| records[i].at_ms);
    let t0 = order.first().map_or(0, |&i| records[i].at_ms);
    let mut names = Vec::new();
    let mut ids: HashMap<TargetId, u32> = HashMap::new();
    let mut obs: Vec<Vec<Obs>> = Vec::new();
    let mut own = Vec::with_capacity(order.len());
    let mut routes = Vec::new();
    let mut route_ids: HashMap<String, u32> = HashMap::new();
    let mut route_of = Vec::with_capacity(order.len());
    let mut at = Vec::with_capacity(order.len());
    let mut meta = Vec::with_capacity(order.len());
    for &i in &order {
        let r = &records[i];
        at.push(r.at_ms);
        meta.push((r.stream, r.max_tokens, r.prompt_tokens, r.completion_tokens));
        let rid = *route_ids.entry(r.route.clone()).or_insert_with(|| {
            routes.push(r.route.clone());
            (routes.len() - 1) as u32
        });
        route_of.push(rid);
        let mut mine = Vec::with_capacity(r.attempts.len());
        for a in &r.attempts {
            let key = TargetId::new(a.provider.as_str(), a.model.as_str());
            let tid = *ids.entry(key).or_insert_with(|| {
                names.push(a.target());
                obs.push(Vec::new());
                (names.len() - 1) as u32
            });
            let class = class_of(&a.outcome);
            let tail = if r.stream && class == Class::Ok {
                r.latency_ms.saturating_sub(a.start_ms + a.duration_ms)
            } else {
                0
            };
            let o = Obs {
                at_ms: r.at_ms + a.start_ms,
                class,
                duration_ms: clamp32(a.duration_ms),
                tail_ms: clamp32(tail),
                status: a.status.unwrap_or(0),
                retry_after_ms: a.retry_after_ms.map(clamp32),
            };
            obs[tid as usize].push(o);
            mine.push((tid, o));
        }
        own.push(mine);
    }
    for o in &mut obs {
        o.sort_by_key(|o| o.at_ms);
    }
    Input {
        order,
        t0,
        names,
        ids,
        obs,
        own,
        routes,
        route_of,
        at,
        meta,
    }
}

// ---------------------------------------------------------------------------
// The simulated provider.

const FLAG_UNKNOWN: u8 = 1;
const FLAG_FELL_BACK: u8 = 2;

#[derive(Default)]
struct Counters {
    own: AtomicU64,
    nearby: AtomicU64,
    none: AtomicU64,
}

struct SimState {
    input: Arc<Input>,
    start: Instant,
    window_ms: u64,
    ids: HashMap<TargetId, u32>,
    /// Per request: own attempts already used (bit i = own attempt i).
    used: Vec<AtomicU64>,
    first_target: Vec<AtomicU32>,
    flags: Vec<AtomicU8>,
    /// Target ids by `Arc<Target>` address, and the attempt rate per target.
    stats: Mutex<SimStats>,
    rng: Mutex<StdRng>,
    counters: Counters,
}

/// What the simulated provider tracks across attempts.
#[derive(Default)]
struct SimStats {
    /// `(Arc::as_ptr of a compiled target, its id)`: the compiled targets
    /// live for the whole replay, and a handful of them beat hashing the
    /// provider and model names on every attempt.
    by_ptr: Vec<(usize, u32)>,
    /// Per target id: (virtual second, attempts in it, busiest second).
    /// Attempts arrive in virtual-time order, so one counter per target
    /// suffices.
    rate: Vec<(u64, u64, u64)>,
}

impl SimStats {
    fn count(&mut self, tid: u32, second: u64) {
        let i = tid as usize;
        if self.rate.len() <= i {
            self.rate.resize(i + 1, (0, 0, 0));
        }
        let r = &mut self.rate[i];
        if r.0 != second {
            *r = (second, 0, r.2);
        }
        r.1 += 1;
        r.2 = r.2.max(r.1);
    }
}

#[derive(Clone)]
struct SimLeaf {
    state: Arc<SimState>,
}

type LeafFuture = Pin<Box<dyn Future<Output = Result<ProviderResponse, ProviderError>> + Send>>;

impl Service<AttemptRequest> for SimLeaf {
    type Response = ProviderResponse;
    type Error = ProviderError;
    type Future = LeafFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AttemptRequest) -> Self::Future {
        let st = &*self.state;
        let i = req.chat.params.seed.unwrap_or(0).max(0) as usize;
        let stream = req.chat.is_stream();
        let elapsed = Instant::now().saturating_duration_since(st.start);
        let tid = {
            let mut stats = st.stats.lock().unwrap_or_else(|p| p.into_inner());
            let ptr = Arc::as_ptr(&req.target) as usize;
            let tid = match stats.by_ptr.iter().find(|(p, _)| *p == ptr) {
                Some((_, t)) => *t,
                None => {
                    let t = st.ids.get(&req.target.id).copied().unwrap_or(u32::MAX);
                    stats.by_ptr.push((ptr, t));
                    t
                }
            };
            if tid != u32::MAX {
                stats.count(tid, elapsed.as_secs());
            }
            tid
        };
        let now_ms = st.input.t0 + elapsed.as_millis() as u64;
        if let Some(first) = st.first_target.get(i) {
            match first.compare_exchange(u32::MAX, tid, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {}
                Err(f) if f != tid => {
                    st.flags[i].fetch_or(FLAG_FELL_BACK, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
        let obs = self.pick(i, tid, now_ms);
        let Some(o) = obs else {
            if let Some(f) = st.flags.get(i) {
                f.fetch_or(FLAG_UNKNOWN, Ordering::Relaxed);
            }
            return Box::pin(async {
                Err(ProviderError::new(
                    Failure::Connect,
                    "dry-run: this target was never observed near this time",
                ))
            });
        };
        let target = req.target.clone();
        Box::pin(answer(o, stream, target))
    }
}

impl SimLeaf {
    fn pick(&self, i: usize, tid: u32, now_ms: u64) -> Option<Obs> {
        let st = &*self.state;
        if tid == u32::MAX {
            st.counters.none.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if let (Some(mine), Some(used)) = (st.input.own.get(i), st.used.get(i)) {
            let u = used.load(Ordering::Relaxed);
            for (k, (t, o)) in mine.iter().enumerate().take(64) {
                if *t == tid && u & (1 << k) == 0 {
                    used.fetch_or(1 << k, Ordering::Relaxed);
                    st.counters.own.fetch_add(1, Ordering::Relaxed);
                    return Some(*o);
                }
            }
        }
        let Some(list) = st.input.obs.get(tid as usize) else {
            st.counters.none.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let lo = list.partition_point(|o| o.at_ms + st.window_ms < now_ms);
        let hi = list.partition_point(|o| o.at_ms <= now_ms + st.window_ms);
        if lo >= hi {
            st.counters.none.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let k = match st.rng.lock() {
            Ok(mut r) => r.random_range(lo..hi),
            Err(_) => lo,
        };
        st.counters.nearby.fetch_add(1, Ordering::Relaxed);
        Some(list[k])
    }
}

async fn answer(
    o: Obs,
    stream: bool,
    target: Arc<Target>,
) -> Result<ProviderResponse, ProviderError> {
    let d = Duration::from_millis(u64::from(o.duration_ms));
    let err = |f: Failure| {
        let mut e = ProviderError::new(f, "dry-run: as recorded");
        if o.status != 0 {
            e.status = Some(o.status);
        }
        e
    };
    match o.class {
        Class::Ok => {
            tokio::time::sleep(d).await;
            if stream {
                let tail = Duration::from_millis(u64::from(o.tail_ms));
                let model = target.id.model.clone();
                let s = async_stream::stream! {
                    yield Ok(ChatChunk::content("dry-run", &model, 0, "x").into());
                    if !tail.is_zero() {
                        tokio::time::sleep(tail).await;
                    }
                    yield Ok(ChatChunk::finish("dry-run", &model, 0, "stop").into());
                };
                Ok(ProviderResponse::Stream(Box::pin(s)))
            } else {
                let tail = Duration::from_millis(u64::from(o.tail_ms));
                if !tail.is_zero() {
                    tokio::time::sleep(tail).await;
                }
                Ok(ProviderResponse::Complete(Completion::from(
                    ChatCompletion::text("dry-run", &target.id.model, "x", "stop"),
                )))
            }
        }
        Class::Timeout => {
            // It did not answer within the recorded attempt's timeout; the
            // replayed attempt's own timeout decides when to give up.
            std::future::pending::<()>().await;
            Err(err(Failure::Timeout))
        }
        c => {
            tokio::time::sleep(d).await;
            Err(match c {
                Class::RateLimited => err(Failure::RateLimited).with_retry_after(
                    o.retry_after_ms
                        .map(|v| Duration::from_millis(u64::from(v))),
                ),
                Class::Server => {
                    let status = if o.status >= 500 { o.status } else { 503 };
                    if status == 529 {
                        err(Failure::Overloaded)
                    } else {
                        err(Failure::Server { status })
                    }
                }
                Class::ContextLength => err(Failure::ContextLength),
                Class::ContentPolicy => err(Failure::ContentPolicy),
                Class::Refused => err(Failure::TargetRefused {
                    status: if o.status >= 400 { o.status } else { 401 },
                }),
                Class::Client => err(Failure::Client {
                    status: if o.status >= 400 { o.status } else { 400 },
                }),
                Class::Connect => err(Failure::Connect),
                _ => err(Failure::Malformed),
            })
        }
    }
}

// ---------------------------------------------------------------------------
// One side.

#[derive(Clone, Copy, Default)]
struct SimResult {
    ok: bool,
    latency_ms: u32,
    ttft_ms: Option<u32>,
    attempts: u8,
    /// The served target's index in `SideOut::served_names`, or MAX.
    served: u32,
    cost: f64,
}

/// Served targets' names, interned per side.
type ServedNames = (Vec<String>, HashMap<TargetId, u32>);

struct SideOut {
    results: Vec<SimResult>,
    flags: Vec<u8>,
    served_names: Vec<String>,
    coverage: Coverage,
    /// Per target id (input interning, extended): busiest virtual second.
    peaks: HashMap<u32, u64>,
}

fn compile(config: &Config) -> Result<Compiled, DryRunError> {
    // Keys are never used: nothing is sent anywhere.
    config
        .compile(crate::provider::http_client(), &|_| {
            Some("dry-run".to_owned())
        })
        .map_err(DryRunError::Config)
}

/// Shared progress of both sides: the callback, the count, the total.
type Progress<'a> = Option<(&'a ReplayProgress, &'a AtomicU64, u64)>;

/// How many requests a side replays between progress reports.
const PROGRESS_EVERY: u64 = 4096;

fn run_side(
    input: Arc<Input>,
    config: &Config,
    compiled: &Compiled,
    ids: HashMap<TargetId, u32>,
    opts: &DryRunOptions,
    progress: Progress<'_>,
) -> SideOut {
    let (seed, window_ms, cancel) = (opts.seed, opts.window_ms, opts.cancel.as_deref());
    let n = input.order.len();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    let routes: Vec<Option<Arc<Route>>> =
        input.routes.iter().map(|r| compiled.resolve(r)).collect();
    let recorder = metrics::NoopRecorder;
    // The simulated layers' events (ejections, restorations) are not the
    // gateway's: logged, they read exactly like real outages of production
    // targets, hundreds a second. Metrics are kept out the same way.
    let quiet = tracing::subscriber::NoSubscriber::default();
    let _quiet = tracing::subscriber::set_default(quiet);
    let out = metrics::with_local_recorder(&recorder, || {
        crate::rng::seeded(seed, || {
            rt.block_on(async {
                let state = Arc::new(SimState {
                    input: input.clone(),
                    start: Instant::now(),
                    window_ms,
                    ids,
                    used: (0..n).map(|_| AtomicU64::new(0)).collect(),
                    first_target: (0..n).map(|_| AtomicU32::new(u32::MAX)).collect(),
                    flags: (0..n).map(|_| AtomicU8::new(0)).collect(),
                    stats: Mutex::new(SimStats::default()),
                    rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed)),
                    counters: Counters::default(),
                });
                let svc = ServiceBuilder::new()
                    .layer(LatencyRankLayer::new(config.latency.layer_config()))
                    .layer(HealthScoreLayer::new(config.health.layer_config()))
                    .layer(RetryBudgetLayer::new(config.retry_budget.layer_config()))
                    .layer(FallbackLayer::new())
                    .service(SimLeaf {
                        state: state.clone(),
                    });
                let results: Arc<Mutex<Vec<SimResult>>> =
                    Arc::new(Mutex::new(vec![SimResult::default(); n]));
                let served_names: Arc<Mutex<ServedNames>> = Arc::default();
                let start = state.start;
                // Requests in flight. Tasks are detached, not joined: a
                // JoinHandle keeps its finished task's memory (the whole
                // future of the stack) until it is awaited, ~1 KB each.
                let in_flight = Arc::new(InFlight::default());
                for k in 0..n {
                    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                        // The caller stopped waiting: what was replayed so
                        // far is dropped with the side.
                        break;
                    }
                    if let Some((report, done, total)) = progress {
                        if k as u64 % PROGRESS_EVERY == PROGRESS_EVERY - 1 {
                            let d = done.fetch_add(PROGRESS_EVERY, Ordering::Relaxed);
                            report((d + PROGRESS_EVERY).min(total), total);
                        }
                    }
                    let at = start + Duration::from_millis(input.at[k].saturating_sub(input.t0));
                    if at > Instant::now() {
                        tokio::time::sleep_until(at).await;
                    }
                    let route = routes[input.route_of[k] as usize].clone();
                    let Some(route) = route else {
                        // The config has no such route: the client would get a 404.
                        if let Ok(mut r) = results.lock() {
                            r[k] = SimResult {
                                served: u32::MAX,
                                ..SimResult::default()
                            };
                        }
                        continue;
                    };
                    let meta = input_meta(&input, k);
                    let svc = svc.clone();
                    let results = results.clone();
                    let served_names = served_names.clone();
                    let guard = InFlight::enter(&in_flight);
                    drop(tokio::spawn(async move {
                        let _guard = guard;
                        let chat = ChatRequest {
                            model: String::new(),
                            messages: Vec::new(),
                            stream: Some(meta.stream),
                            stream_options: None,
                            params: RequestParams {
                                seed: Some(k as i64),
                                max_tokens: meta.max_tokens,
                                ..RequestParams::default()
                            },
                        };
                        let t = Instant::now();
                        let res = svc.oneshot(RouteRequest::new(chat, route)).await;
                        let r = match res {
                            Ok(resp) => {
                                let ttft = t.elapsed();
                                let mut ok = true;
                                if let ProviderResponse::Stream(mut s) = resp.body {
                                    use futures_util::StreamExt;
                                    while let Some(item) = s.next().await {
                                        if item.is_err() {
                                            ok = false;
                                        }
                                    }
                                }
                                let served = {
                                    let mut g =
                                        served_names.lock().unwrap_or_else(|p| p.into_inner());
                                    let (names, map) = &mut *g;
                                    *map.entry(resp.served_by.id.clone()).or_insert_with(|| {
                                        names.push(resp.served_by.id.to_string());
                                        (names.len() - 1) as u32
                                    })
                                };
                                let cost = resp.served_by.price.map_or(0.0, |p| {
                                    p.cost(&crate::api::Usage::new(
                                        meta.prompt_tokens,
                                        meta.completion_tokens,
                                    ))
                                });
                                SimResult {
                                    ok,
                                    latency_ms: clamp32(t.elapsed().as_millis() as u64),
                                    ttft_ms: meta.stream.then(|| clamp32(ttft.as_millis() as u64)),
                                    attempts: resp.attempts.min(255) as u8,
                                    served,
                                    cost,
                                }
                            }
                            Err(e) => SimResult {
                                ok: false,
                                latency_ms: clamp32(t.elapsed().as_millis() as u64),
                                ttft_ms: None,
                                attempts: e.attempts.len().min(255) as u8,
                                served: u32::MAX,
                                cost: 0.0,
                            },
                        };
                        if let Ok(mut v) = results.lock() {
                            v[k] = r;
                        }
                    }));
                }
                in_flight.drained().await;
                let results =
                    std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
                let served_names =
                    std::mem::take(&mut served_names.lock().unwrap_or_else(|p| p.into_inner()).0);
                let c = &state.counters;
                let (own, nearby, none) = (
                    c.own.load(Ordering::Relaxed),
                    c.nearby.load(Ordering::Relaxed),
                    c.none.load(Ordering::Relaxed),
                );
                let total = own + nearby + none;
                let share = |v: u64| {
                    if total == 0 {
                        0.0
                    } else {
                        v as f64 / total as f64
                    }
                };
                let peaks: HashMap<u32, u64> = state
                    .stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .rate
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.2 > 0)
                    .map(|(tid, r)| (tid as u32, r.2))
                    .collect();
                SideOut {
                    results,
                    flags: state
                        .flags
                        .iter()
                        .map(|f| f.load(Ordering::Relaxed))
                        .collect(),
                    served_names,
                    coverage: Coverage {
                        attempts: total,
                        own_record: share(own),
                        nearby: share(nearby),
                        none: share(none),
                    },
                    peaks,
                }
            })
        })
    });
    drop(rt);
    out
}

/// Counts replayed requests in flight; [`InFlight::drained`] waits for 0.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    zero: tokio::sync::Notify,
}

/// Leaves the [`InFlight`] count when dropped (also if the task panics).
struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    fn enter(this: &Arc<InFlight>) -> InFlightGuard {
        this.count.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(this.clone())
    }

    async fn drained(&self) {
        while self.count.load(Ordering::Acquire) > 0 {
            self.zero.notified().await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A stored permit if nobody waits yet: `drained` re-checks.
            self.0.zero.notify_one();
        }
    }
}

struct Meta {
    stream: bool,
    max_tokens: Option<u32>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

fn input_meta(input: &Input, k: usize) -> Meta {
    let m = &input.meta[k];
    Meta {
        stream: m.0,
        max_tokens: m.1,
        prompt_tokens: m.2,
        completion_tokens: m.3,
    }
}

// ---------------------------------------------------------------------------
// Figures.

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1])
}

struct Row<'a> {
    at_ms: u64,
    ok: bool,
    latency_ms: u32,
    ttft_ms: Option<u32>,
    attempts: u32,
    fell_back: bool,
    served: Option<&'a str>,
    cost: f64,
    route: u32,
}

fn outcomes(rows: &[Row<'_>], routes: &[String]) -> Outcomes {
    let mut lat = Vec::with_capacity(rows.len());
    let mut ttft = Vec::new();
    let (mut ok, mut attempts, mut fell, mut cost) = (0u64, 0u64, 0u64, 0.0f64);
    let mut served: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_route: Vec<(u64, u64, Vec<u32>)> = vec![(0, 0, Vec::new()); routes.len()];
    for r in rows {
        lat.push(r.latency_ms);
        if r.ok {
            ok += 1;
            if let Some(t) = r.ttft_ms {
                ttft.push(t);
            }
            if let Some(s) = r.served {
                *served.entry(s).or_insert(0) += 1;
            }
        }
        attempts += u64::from(r.attempts);
        fell += u64::from(r.fell_back);
        cost += r.cost;
        if let Some(pr) = per_route.get_mut(r.route as usize) {
            pr.0 += 1;
            pr.1 += u64::from(r.ok);
            pr.2.push(r.latency_ms);
        }
    }
    let n = lat.len() as u64;
    lat.sort_unstable();
    ttft.sort_unstable();
    let served_total: u64 = served.values().sum();
    Outcomes {
        requests: n,
        success_rate: div(ok, n),
        p50_ms: percentile(&lat, 0.50),
        p95_ms: percentile(&lat, 0.95),
        p99_ms: percentile(&lat, 0.99),
        ttft_p50_ms: (!ttft.is_empty()).then(|| percentile(&ttft, 0.5)),
        cost_usd: cost,
        attempts_per_request: div(attempts, n),
        fallback_rate: div(fell, n),
        by_target: served
            .into_iter()
            .map(|(k, v)| (k.to_owned(), div(v, served_total)))
            .collect(),
        by_route: per_route
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.0 > 0)
            .map(|(i, (count, ok, mut l))| {
                l.sort_unstable();
                (
                    routes[i].clone(),
                    RouteOutcomes {
                        requests: count,
                        success_rate: div(ok, count),
                        p50_ms: percentile(&l, 0.5),
                    },
                )
            })
            .collect(),
    }
}

fn div(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn side_rows<'a>(side: &'a SideOut, input: &Input) -> Vec<Row<'a>> {
    side.results
        .iter()
        .enumerate()
        .map(|(k, r)| Row {
            at_ms: input.at[k],
            ok: r.ok,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            attempts: u32::from(r.attempts),
            fell_back: side.flags[k] & FLAG_FELL_BACK != 0,
            served: side.served_names.get(r.served as usize).map(String::as_str),
            cost: r.cost,
            route: input.route_of[k],
        })
        .collect()
}

fn actual_rows<'a>(records: &'a [TrafficRecord], input: &Input, prices: &Compiled) -> Vec<Row<'a>> {
    let price_of: HashMap<String, crate::provider::Price> = prices
        .targets
        .iter()
        .filter_map(|t| t.price.map(|p| (t.id.to_string(), p)))
        .collect();
    input
        .order
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let r = &records[i];
            let mut distinct = r.attempts.iter().map(|a| (&a.provider, &a.model));
            let first = distinct.next();
            let fell_back = distinct.any(|t| Some(t) != first);
            // What the request cost when it ran, as recorded: priced again at
            // today's prices (or at the target that committed a stream
            // another one finished), "actual" was not what was billed. Only
            // a record without a cost is priced here.
            let cost = r
                .cost_usd
                .or_else(|| {
                    r.served_by.as_ref().and_then(|s| price_of.get(s)).map(|p| {
                        p.cost(&crate::api::Usage::new(
                            r.prompt_tokens,
                            r.completion_tokens,
                        ))
                    })
                })
                .unwrap_or(0.0);
            let ok = r.is_success();
            Row {
                at_ms: r.at_ms,
                ok,
                latency_ms: clamp32(r.latency_ms),
                ttft_ms: if r.stream {
                    r.ttft_ms.map(clamp32)
                } else {
                    None
                },
                attempts: r.attempts.len() as u32,
                fell_back,
                served: if ok { r.served_by.as_deref() } else { None },
                cost: if ok { cost } else { 0.0 },
                route: input.route_of[k],
            }
        })
        .collect()
}

/// Bins of the latency histogram.
const HISTOGRAM_BINS: usize = 40;

fn histogram(base: &[Row<'_>], cand: &[Row<'_>], actual: &[Row<'_>]) -> LatencyHistogram {
    let all = || base.iter().chain(cand).chain(actual).map(|r| r.latency_ms);
    let lo = f64::from(all().min().unwrap_or(0).max(1));
    let hi = f64::from(all().max().unwrap_or(1).max(1)) + 1.0;
    let hi = hi.max(lo + 1.0);
    let ratio = (hi / lo).powf(1.0 / HISTOGRAM_BINS as f64);
    let mut bounds: Vec<f64> = (0..=HISTOGRAM_BINS)
        .map(|i| (lo * ratio.powi(i as i32) * 10.0).round() / 10.0)
        .collect();
    bounds[0] = 0.0;
    bounds[HISTOGRAM_BINS] = hi;
    let count = |rows: &[Row<'_>]| {
        let mut c = vec![0u64; HISTOGRAM_BINS];
        for r in rows {
            let v = f64::from(r.latency_ms);
            let i = bounds.partition_point(|b| *b <= v).clamp(1, HISTOGRAM_BINS) - 1;
            c[i] += 1;
        }
        c
    };
    LatencyHistogram {
        baseline: count(base),
        candidate: count(cand),
        actual: count(actual),
        bounds_ms: bounds,
    }
}

/// Bucket lengths the series may use, shortest first: the shortest that
/// gives at most [`MAX_POINTS`] points wins.
const BUCKETS_MS: [u64; 7] = [
    1_000, 10_000, 60_000, 300_000, 900_000, 3_600_000, 86_400_000,
];
const MAX_POINTS: u64 = 48;

fn series(from: u64, to: u64, sides: [&[Row<'_>]; 3]) -> Series {
    let span = to.saturating_sub(from) + 1;
    let bucket_ms = BUCKETS_MS
        .iter()
        .copied()
        .find(|b| span.div_ceil(*b) <= MAX_POINTS)
        .unwrap_or(86_400_000);
    let origin = from - from % bucket_ms;
    let len = ((to - origin) / bucket_ms + 1) as usize;
    // Per side, per bucket: requests, ok, cost.
    let mut acc = vec![[(0u64, 0u64, 0.0f64); 3]; len];
    for (side, rows) in sides.iter().enumerate() {
        for r in rows.iter() {
            let b = ((r.at_ms.saturating_sub(origin)) / bucket_ms) as usize;
            if let Some(a) = acc.get_mut(b) {
                a[side].0 += 1;
                a[side].1 += u64::from(r.ok);
                a[side].2 += r.cost;
            }
        }
    }
    let per_hour = 3_600_000.0 / bucket_ms as f64;
    let fig = |(n, ok, cost): (u64, u64, f64)| BucketFigures {
        requests: n,
        success_rate: div(ok, n),
        cost_usd: cost,
        cost_usd_per_hour: cost * per_hour,
    };
    Series {
        bucket_ms,
        points: acc
            .into_iter()
            .enumerate()
            .filter(|(_, a)| a.iter().any(|s| s.0 > 0))
            .map(|(i, a)| SeriesPoint {
                from: origin + i as u64 * bucket_ms,
                baseline: fig(a[0]),
                candidate: fig(a[1]),
                actual: fig(a[2]),
            })
            .collect(),
    }
}

/// Latency bins for the bootstrap: exact below 1,024 ms, then 64 bins per
/// doubling (≈ 1 % wide).
fn fine_bin(v: u32) -> usize {
    if v < 1024 {
        v as usize
    } else {
        let e = 31 - v.leading_zeros(); // ≥ 10
        let sub = (v >> (e - 6)) & 63;
        1024 + ((e - 10) as usize) * 64 + sub as usize
    }
}

fn fine_value(b: usize) -> f64 {
    if b < 1024 {
        b as f64
    } else {
        let e = ((b - 1024) / 64) as u32 + 10;
        let sub = ((b - 1024) % 64) as u32;
        f64::from((64 + sub) << (e - 6))
    }
}

const FINE_BINS: usize = 1024 + 22 * 64;

fn median_of(hist: &[u64], n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let rank = n.div_ceil(2);
    let mut seen = 0;
    for (b, c) in hist.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return fine_value(b);
        }
    }
    0.0
}

/// Bootstrap resamples for the confidence intervals.
const BOOTSTRAP: usize = 200;

/// 95 % intervals by resampling whole blocks with replacement.
fn confidence(
    info: &SampleInfo,
    base: &[Row<'_>],
    cand: &[Row<'_>],
    seed: u64,
) -> BTreeMap<String, [f64; 2]> {
    // Per block: requests, ok per side, sparse latency bins per side.
    #[derive(Default)]
    struct Block {
        n: u64,
        ok: [u64; 2],
        bins: [BTreeMap<u32, u32>; 2],
    }
    let block_of = |at: u64| (at.saturating_sub(info.blocks_from)) / info.block_ms.max(1);
    let mut by_block: BTreeMap<u64, Block> = BTreeMap::new();
    for (b, c) in base.iter().zip(cand) {
        let e = by_block.entry(block_of(b.at_ms)).or_default();
        e.n += 1;
        for (side, r) in [b, c].into_iter().enumerate() {
            e.ok[side] += u64::from(r.ok);
            *e.bins[side]
                .entry(fine_bin(r.latency_ms) as u32)
                .or_insert(0) += 1;
        }
    }
    let blocks: Vec<Block> = by_block.into_values().collect();
    let mut out = BTreeMap::new();
    if blocks.len() < 2 {
        return out;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0xb007);
    let mut stats: [Vec<f64>; 6] = Default::default();
    let mut hist = [vec![0u64; FINE_BINS], vec![0u64; FINE_BINS]];
    for _ in 0..BOOTSTRAP {
        let (mut n, mut ok) = (0u64, [0u64; 2]);
        for h in &mut hist {
            h.iter_mut().for_each(|c| *c = 0);
        }
        for _ in 0..blocks.len() {
            let b = &blocks[rng.random_range(0..blocks.len())];
            n += b.n;
            for side in 0..2 {
                ok[side] += b.ok[side];
                for (&bin, &c) in &b.bins[side] {
                    hist[side][bin as usize] += u64::from(c);
                }
            }
        }
        let (sb, sc) = (div(ok[0], n), div(ok[1], n));
        let (pb, pc) = (median_of(&hist[0], n), median_of(&hist[1], n));
        for (i, v) in [sb, sc, sc - sb, pb, pc, pc - pb].into_iter().enumerate() {
            stats[i].push(v);
        }
    }
    let names = [
        "baseline.success_rate",
        "candidate.success_rate",
        "diff.success_rate",
        "baseline.p50_ms",
        "candidate.p50_ms",
        "diff.p50_ms",
    ];
    for (name, mut v) in names.into_iter().zip(stats) {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        out.insert(name.to_owned(), [at(0.025), at(0.975)]);
    }
    out
}

/// How many records have an attempt that timed out on a target the
/// candidate gives more time, on the record's route, than the attempt had
/// (with a tenth of slack): a recorded timeout only says the target did not
/// answer within the old limit.
fn longer_timeouts(records: &[TrafficRecord], cand: &Compiled) -> usize {
    records
        .iter()
        .filter(|r| {
            let Some(route) = cand.resolve(&r.route) else {
                return false;
            };
            r.attempts.iter().any(|a| {
                a.outcome == "timeout"
                    && route.candidates.iter().any(|c| {
                        &*c.target.id.provider == a.provider.as_str()
                            && &*c.target.id.model == a.model.as_str()
                            && c.timeout.as_millis() as u64 > a.duration_ms + a.duration_ms / 10
                    })
            })
        })
        .count()
}

/// How many records are streams continued after a cut (an attempt that
/// answered is followed by another) on a route whose candidate recovers
/// cut streams differently from the baseline.
fn changed_recovery(records: &[TrafficRecord], base: &Compiled, cand: &Compiled) -> usize {
    records
        .iter()
        .filter(|r| {
            let continued = r.stream && r.attempts.iter().rev().skip(1).any(|a| a.outcome == "ok");
            continued
                && match (base.resolve(&r.route), cand.resolve(&r.route)) {
                    (Some(b), Some(c)) => {
                        b.policy.continuation != c.policy.continuation
                            || b.policy.stream_idle_timeout != c.policy.stream_idle_timeout
                    }
                    _ => false,
                }
        })
        .count()
}

/// How many records are streams that ran longer after their first token
/// than the candidate's `stream_max` on their route, where the baseline's
/// let them run.
fn stream_limited(records: &[TrafficRecord], base: &Compiled, cand: &Compiled) -> usize {
    records
        .iter()
        .filter(|r| {
            let Some(ttft) = r.ttft_ms.filter(|_| r.stream) else {
                return false;
            };
            let lasted = std::time::Duration::from_millis(r.latency_ms.saturating_sub(ttft));
            match (base.resolve(&r.route), cand.resolve(&r.route)) {
                (Some(b), Some(c)) => lasted > c.policy.stream_max && lasted <= b.policy.stream_max,
                _ => false,
            }
        })
        .count()
}

/// What about target `id` differs between the two configs (its provider's
/// kind, URL, key or extra headers, its model's upstream name), when both
/// define it.
fn redefined(base: &Config, cand: &Config, id: &TargetId) -> Option<&'static str> {
    let (bm, cm) = (base.models.get(&*id.model)?, cand.models.get(&*id.model)?);
    let (bp, cp) = (
        base.providers.get(&*id.provider)?,
        cand.providers.get(&*id.provider)?,
    );
    if bp.kind != cp.kind {
        Some("provider kind")
    } else if bp.base_url != cp.base_url {
        Some("base_url")
    } else if bp.api_key != cp.api_key || bp.api_key_env != cp.api_key_env {
        Some("key")
    } else if lowercase(&bp.headers) != lowercase(&cp.headers)
        || lowercase(&bp.headers_env) != lowercase(&cp.headers_env)
    {
        Some("headers")
    } else if bm.upstream_model.as_deref().unwrap_or(&id.model)
        != cm.upstream_model.as_deref().unwrap_or(&id.model)
    {
        Some("upstream_model")
    } else {
        None
    }
}

/// A provider's headers by lowercased name (names are case-insensitive).
fn lowercase(headers: &BTreeMap<String, String>) -> BTreeMap<String, &str> {
    headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect()
}

/// Replays `records` through `baseline` and `candidate` and compares them
/// with each other and with what actually happened. See the
/// [module docs](super) and `docs/dry-run.md`.
///
/// The two sides run on two threads, each a current-thread Tokio runtime
/// with paused time. It blocks until both are done: inside a runtime, call
/// it from `spawn_blocking`.
///
/// ```
/// use modelux::config::Config;
/// use modelux::traffic::{dry_run, AttemptRecord, DryRunOptions, TrafficRecord};
/// let config = |order: [&str; 2]| Config::from_value(serde_json::json!({
///     "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
///     "models": {"a": {"provider": "p"}, "b": {"provider": "p"}},
///     "routes": {"default": {"attempts": [{"model": order[0]}, {"model": order[1]}]}}
/// })).unwrap();
/// // "a" always fails with a 503 after 100 ms, then "b" answers in 20 ms.
/// let records: Vec<TrafficRecord> = (0..50).map(|i| TrafficRecord {
///     at_ms: 1_000_000 + i * 1000, request_id: format!("r{i}"), config_version: 1,
///     route: "default".into(), client: None, stream: false, prompt_tokens: 10,
///     completion_tokens: 10, tokens_estimated: false, max_tokens: None,
///     attempts: vec![
///         AttemptRecord::failed("p", "a", 0, 100, "5xx", Some(503)),
///         AttemptRecord::ok("p", "b", 100, 20),
///     ],
///     outcome: "ok".into(), status: 200, latency_ms: 121, ttft_ms: None,
///     served_by: Some("p/b".into()), cost_usd: None,
/// }).collect();
/// let report = dry_run(&records, &config(["a", "b"]), &config(["b", "a"]), &DryRunOptions::default()).unwrap();
/// assert_eq!(report.candidate.success_rate, 1.0);
/// assert_eq!(report.candidate.p50_ms, 20.0);
/// assert_eq!(report.candidate.attempts_per_request, 1.0);
/// assert_eq!(report.actual.p50_ms, 121.0);
/// // The baseline's health layer soon ejects "a", as it would live.
/// assert!(report.baseline.attempts_per_request > 1.0);
/// assert_eq!(report.candidate.by_target["p/b"], 1.0);
/// ```
pub fn dry_run(
    records: &[TrafficRecord],
    baseline: &Config,
    candidate: &Config,
    opts: &DryRunOptions,
) -> Result<Report, DryRunError> {
    if records.is_empty() {
        return Err(DryRunError::Empty);
    }
    let started = std::time::Instant::now();
    let base_c = compile(baseline)?;
    let cand_c = compile(candidate)?;
    let input = build_input(records);
    // Every target either config can reach, interned after the observed ones.
    let mut ids = input.ids.clone();
    let mut names = input.names.clone();
    for t in base_c.targets.iter().chain(&cand_c.targets) {
        ids.entry(t.id.clone()).or_insert_with(|| {
            names.push(t.id.to_string());
            (names.len() - 1) as u32
        });
    }
    // A candidate target of the same name as a baseline one but another
    // definition (its endpoint, key, kind or upstream model changed) is
    // another target: its recorded outcomes say nothing about it. Replayed
    // as the old one, a candidate pointing a model at a dead URL was "NO
    // MEANINGFUL CHANGE".
    let mut cand_ids = ids.clone();
    for t in &cand_c.targets {
        if let Some(what) = redefined(baseline, candidate, &t.id) {
            names.push(format!("{} (its {what} changed)", t.id));
            cand_ids.insert(t.id.clone(), (names.len() - 1) as u32);
        }
    }
    let input = Arc::new(input);
    let n = input.order.len() as u64;
    let done = AtomicU64::new(0);
    let progress = opts.progress.as_ref().map(|p| (p, &done, 2 * n));
    // Each side on its own thread with its own current-thread runtime, so
    // this works from inside a runtime too (though it blocks the caller).
    let (base_out, cand_out) = std::thread::scope(|s| {
        let (ib, idb) = (input.clone(), ids.clone());
        let (base_c, cand_c) = (&base_c, &cand_c);
        let b = s.spawn(move || run_side(ib, baseline, base_c, idb, opts, progress));
        let (ic, idc) = (input.clone(), cand_ids.clone());
        let c = s.spawn(move || run_side(ic, candidate, cand_c, idc, opts, progress));
        (
            b.join().expect("the baseline replay thread panicked"),
            c.join().expect("the candidate replay thread panicked"),
        )
    });
    // The sides' quiet subscribers (see `run_side`) were registered with
    // tracing's global callsite cache, which then combined the gateway's
    // "always" with their "never" into "sometimes" and dropped its level
    // filter: every event would ask the subscriber from then on. With them
    // gone, the cache is rebuilt from the gateway's own subscriber.
    tracing::callsite::rebuild_interest_cache();
    if opts
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
    {
        return Err(DryRunError::Cancelled);
    }
    if let Some(p) = &opts.progress {
        p(2 * n, 2 * n);
    }
    let base_rows = side_rows(&base_out, &input);
    let cand_rows = side_rows(&cand_out, &input);
    let actual_rows = actual_rows(records, &input, &base_c);
    let baseline_o = outcomes(&base_rows, &input.routes);
    let candidate_o = outcomes(&cand_rows, &input.routes);
    let actual_o = outcomes(&actual_rows, &input.routes);

    // Targets never observed in the window, and who depended on them.
    let observed = |tid: u32| input.obs.get(tid as usize).is_some_and(|o| !o.is_empty());
    let mut unobserved = Vec::new();
    let any_unknown = cand_out
        .flags
        .iter()
        .filter(|f| **f & FLAG_UNKNOWN != 0)
        .count();
    let mut cand_targets: Vec<&Arc<Target>> = cand_c.targets.iter().collect();
    cand_targets.sort_by(|a, b| a.id.cmp(&b.id));
    for t in cand_targets {
        let tid = cand_ids[&t.id];
        if observed(tid) {
            continue;
        }
        // Routed: the request's candidate route lists it.
        let routed_routes: Vec<bool> = input
            .routes
            .iter()
            .map(|r| {
                cand_c
                    .resolve(r)
                    .is_some_and(|route| route.candidates.iter().any(|c| c.target.id == t.id))
            })
            .collect();
        let routed = input
            .route_of
            .iter()
            .filter(|r| routed_routes[**r as usize])
            .count();
        if routed == 0 {
            continue;
        }
        // Attempted: approximated per request by "touched an unknown target
        // and its route lists this one".
        let attempted = input
            .route_of
            .iter()
            .zip(&cand_out.flags)
            .filter(|(r, f)| routed_routes[**r as usize] && **f & FLAG_UNKNOWN != 0)
            .count();
        unobserved.push(UnobservedTarget {
            target: names[tid as usize].clone(),
            routed_share: routed as f64 / n as f64,
            attempted_share: attempted as f64 / n as f64,
        });
    }

    // Busiest seconds: observed (from the log) against the candidate.
    // Each target's observations are sorted by time: one pass each.
    let observed_peak: HashMap<u32, u64> = input
        .obs
        .iter()
        .enumerate()
        .map(|(tid, list)| {
            let (mut second, mut count, mut peak) = (u64::MAX, 0u64, 0u64);
            for o in list {
                let s = o.at_ms.saturating_sub(input.t0) / 1000;
                if s != second {
                    (second, count) = (s, 0);
                }
                count += 1;
                peak = peak.max(count);
            }
            (tid as u32, peak)
        })
        .collect();
    let mut rate_flags: Vec<RateFlag> = cand_out
        .peaks
        .iter()
        .filter(|(tid, _)| **tid != u32::MAX)
        .filter_map(|(tid, sim)| {
            let seen = observed_peak.get(tid).copied().unwrap_or(0);
            (*sim > seen).then(|| RateFlag {
                target: names[*tid as usize].clone(),
                simulated_peak_per_s: *sim,
                observed_peak_per_s: seen,
            })
        })
        .collect();
    rate_flags.sort_by(|a, b| a.target.cmp(&b.target));

    let mut versions: Vec<u64> = records.iter().map(|r| r.config_version).collect();
    versions.sort_unstable();
    versions.dedup();
    let estimated = records.iter().filter(|r| r.tokens_estimated).count();
    let mut notes = vec![
        "A target is only observed when it was tried: a fallback is seen only after its primary failed, so its record may be thin or biased.".to_owned(),
        "Outcomes are drawn from each target's records near the request's time; behaviour the window never showed (rate limits under more load, new failure modes) is not predicted.".to_owned(),
        "Cost uses the recorded token counts; a request served by another model keeps them, though tokenizers and answer lengths differ.".to_owned(),
        "The retry budget is replayed on the wall clock, not the virtual one, so it is more generous in a replay than live.".to_owned(),
        "Streams are replayed up to their recorded end; mid-stream failures after the first token are not replayed.".to_owned(),
    ];
    if estimated > 0 {
        notes.push(format!(
            "{estimated} of {n} records have estimated token counts (no usage was reported)."
        ));
    }
    if versions.len() > 1 {
        notes.push(format!(
            "The window spans config versions {versions:?}: `actual` mixes them, the baseline replays all of it."
        ));
    }
    let diff = Diff {
        success_rate: candidate_o.success_rate - baseline_o.success_rate,
        p50_ms: candidate_o.p50_ms - baseline_o.p50_ms,
        p95_ms: candidate_o.p95_ms - baseline_o.p95_ms,
        p99_ms: candidate_o.p99_ms - baseline_o.p99_ms,
        ttft_p50_ms: match (candidate_o.ttft_p50_ms, baseline_o.ttft_p50_ms) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        },
        cost_usd: candidate_o.cost_usd - baseline_o.cost_usd,
        attempts_per_request: candidate_o.attempts_per_request - baseline_o.attempts_per_request,
        fallback_rate: candidate_o.fallback_rate - baseline_o.fallback_rate,
    };
    let calibration = Calibration {
        success_rate_error: baseline_o.success_rate - actual_o.success_rate,
        p50_relative_error: if actual_o.p50_ms > 0.0 {
            baseline_o.p50_ms / actual_o.p50_ms - 1.0
        } else {
            0.0
        },
    };
    let first = input.at.first().copied().unwrap_or(0);
    let last = input.at.last().copied().unwrap_or(0);
    let latency_histogram = histogram(&base_rows, &cand_rows, &actual_rows);
    let series = series(first, last, [&base_rows, &cand_rows, &actual_rows]);
    let sample = opts.sample.as_ref().map(|info| {
        let cut = match info.blocks_cut {
            0 => String::new(),
            n => format!(", {n} of them cut to a run of their first requests to stay within the record limit"),
        };
        notes.push(format!(
            "Sampled: {} of {} recorded requests ({} of {} blocks of {}{cut}). Totals (cost) cover the sample; multiply by {:.2} for the window.",
            info.records_sampled,
            info.records_in_window,
            info.blocks_sampled,
            info.blocks_in_window,
            super::window::block_length(info.block_ms),
            div(info.records_in_window, info.records_sampled.max(1)),
        ));
        SampleReport {
            info: info.clone(),
            scale: div(info.records_in_window, info.records_sampled.max(1)),
            confidence_95: confidence(info, &base_rows, &cand_rows, opts.seed),
        }
    });
    let elapsed = started.elapsed();
    Ok(Report {
        requests: n,
        window: Window {
            from: first,
            to: last,
        },
        baseline: baseline_o,
        candidate: candidate_o,
        actual: actual_o,
        diff,
        unobserved: Unobserved {
            targets: unobserved,
            share_of_requests: any_unknown as f64 / n as f64,
            longer_timeout_share: longer_timeouts(records, &cand_c) as f64 / n as f64,
            changed_recovery_share: changed_recovery(records, &base_c, &cand_c) as f64 / n as f64,
            stream_limit_share: stream_limited(records, &base_c, &cand_c) as f64 / n as f64,
        },
        coverage: BTreeMap::from([
            ("baseline".to_owned(), base_out.coverage),
            ("candidate".to_owned(), cand_out.coverage),
        ]),
        rate_flags,
        calibration,
        config_versions: versions,
        seed: opts.seed,
        elapsed_ms: elapsed.as_millis() as u64,
        requests_per_s: n as f64 / elapsed.as_secs_f64().max(1e-9),
        notes,
        latency_histogram,
        series,
        sample,
    })
}
