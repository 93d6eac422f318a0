//! The serde structs of the config file: one per entry kind and one per
//! top-level settings section.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::provider::{Price, ProviderKind};
use crate::route::{Continuation, RoutePolicy, Strategy};

/// The per-attempt timeout used when none is given, in milliseconds.
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 30_000;

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// One upstream provider: where it is, what wire format it speaks and how to
/// authenticate.
///
/// `Debug` prints `***` in place of a literal `api_key`; serialising writes
/// the real key (use [`Config::to_redacted_json`](super::Config::to_redacted_json)
/// to show a config).
///
/// ```
/// use modelux::config::ProviderConfig;
/// use modelux::provider::ProviderKind;
/// let p: ProviderConfig = serde_json::from_str(
///     r#"{"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-secret"}"#,
/// ).unwrap();
/// assert_eq!(p.kind, ProviderKind::OpenAi);
/// assert!(!format!("{p:?}").contains("sk-secret"));
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire format: `openai`, `anthropic` or `gemini`.
    pub kind: ProviderKind,
    /// The API's base URL, absolute `http://` or `https://` (for example
    /// `https://api.openai.com/v1`).
    pub base_url: String,
    /// The name of the environment variable holding the API key (the
    /// recommended way to configure a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The API key itself. Prefer `api_key_env`; at most one of the two may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Speak HTTP/2 to this provider (default `false`: HTTP/1.1): over
    /// `https://` through ALPN, over `http://` with prior knowledge (h2c).
    /// Streams then share connections; see
    /// [`HttpClient`](crate::provider::HttpClient).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    /// With `http2`: the most concurrent streams put on one connection
    /// before another opens (default
    /// [`DEFAULT_HTTP2_MAX_STREAMS`](crate::provider::DEFAULT_HTTP2_MAX_STREAMS);
    /// at least 1). Set it to the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
    /// or below.
    #[serde(
        default = "default_http2_max_streams",
        skip_serializing_if = "is_default_http2_max_streams"
    )]
    pub http2_max_streams: u32,
    /// Extra headers sent with every request to this provider, by name:
    /// `OpenAI-Organization`, `anthropic-beta`, an OpenRouter `X-Title`. The
    /// values are shown by the admin API like the rest of the config: put a
    /// secret in [`headers_env`](Self::headers_env). The headers the adapter
    /// sets itself (the key's, `content-type`, `anthropic-version`, ...) are
    /// refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Extra headers whose values are secrets, each read from the named
    /// environment variable when the config is applied (`{"cf-aig-authorization":
    /// "CF_AIG_TOKEN"}`), like [`api_key_env`](Self::api_key_env). Their
    /// values are never logged nor indexed by HTTP/2 header compression.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_env: BTreeMap<String, String>,
}

fn default_http2_max_streams() -> u32 {
    crate::provider::DEFAULT_HTTP2_MAX_STREAMS
}

fn is_default_http2_max_streams(n: &u32) -> bool {
    *n == crate::provider::DEFAULT_HTTP2_MAX_STREAMS
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("http2", &self.http2)
            .field("http2_max_streams", &self.http2_max_streams)
            .field("headers", &self.headers)
            .field("headers_env", &self.headers_env)
            .finish()
    }
}

/// One model on one provider.
///
/// ```
/// use modelux::config::ModelConfig;
/// let m: ModelConfig = serde_json::from_str(r#"{"provider": "openai"}"#).unwrap();
/// assert_eq!(m.upstream_model, None); // the model's own name is sent upstream
/// assert!(!m.prefill);
/// assert_eq!(m.timeout_ms, 30_000);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name of the provider (a key of `providers`) that serves it.
    pub provider: String,
    /// The model name sent upstream; defaults to the model's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// Whether the model continues a trailing assistant message (used by the
    /// `prefill` mid-stream continuation).
    #[serde(default)]
    pub prefill: bool,
    /// Prices in USD per million tokens, for cost estimates in traces.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict_price"
    )]
    pub price: Option<Price>,
    /// The attempt timeout when a request names this model directly.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The most output tokens the model produces per answer: sent as
    /// Anthropic's required `max_tokens` when the client gives no cap
    /// (else 4096), and a larger client cap is lowered to it for Anthropic
    /// and Gemini targets rather than refused with a 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

/// `Price` as the config spells it: input and output required, the cache
/// prices optional, nothing else allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictPrice {
    input_per_mtok: f64,
    output_per_mtok: f64,
    #[serde(default)]
    cached_input_per_mtok: Option<f64>,
    #[serde(default)]
    cache_write_per_mtok: Option<f64>,
}

fn strict_price<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Price>, D::Error> {
    Ok(Option::<StrictPrice>::deserialize(d)?.map(|p| Price {
        input_per_mtok: p.input_per_mtok,
        output_per_mtok: p.output_per_mtok,
        cached_input_per_mtok: p.cached_input_per_mtok,
        cache_write_per_mtok: p.cache_write_per_mtok,
    }))
}

/// One attempt of a route: a model and how long one try of it may take.
///
/// ```
/// use modelux::config::AttemptConfig;
/// let a: AttemptConfig = serde_json::from_str(r#"{"model": "gpt-4o-mini"}"#).unwrap();
/// assert_eq!(a.timeout_ms, 30_000);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptConfig {
    /// The model (a key of `models`).
    pub model: String,
    /// How long one attempt may take, in milliseconds: the whole response,
    /// or the time to the first content token of a stream.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl AttemptConfig {
    /// An attempt of `model` with a timeout in milliseconds.
    ///
    /// ```
    /// use modelux::config::AttemptConfig;
    /// let a = AttemptConfig::new("gpt-4o-mini", 2000);
    /// assert_eq!(a.model, "gpt-4o-mini");
    /// ```
    pub fn new(model: impl Into<String>, timeout_ms: u64) -> Self {
        AttemptConfig {
            model: model.into(),
            timeout_ms,
        }
    }
}

fn default_retry_on() -> Vec<String> {
    ["429", "5xx", "timeout", "connect"]
        .into_iter()
        .map(String::from)
        .collect()
}
fn default_total_budget_ms() -> u64 {
    millis(RoutePolicy::default().total_budget)
}
fn default_same_target_retries() -> u32 {
    RoutePolicy::default().same_target_retries
}
fn default_backoff_base_ms() -> u64 {
    millis(RoutePolicy::default().backoff_base)
}
fn default_backoff_max_ms() -> u64 {
    millis(RoutePolicy::default().backoff_max)
}
fn default_retry_after_cap_ms() -> u64 {
    millis(RoutePolicy::default().retry_after_cap)
}
fn default_stream_idle_timeout_ms() -> u64 {
    millis(RoutePolicy::default().stream_idle_timeout)
}
fn default_stream_max_ms() -> u64 {
    millis(RoutePolicy::default().stream_max)
}
fn default_continuation() -> Vec<Continuation> {
    RoutePolicy::default().continuation
}
fn default_regenerate_max_chars() -> usize {
    RoutePolicy::default().regenerate_max_chars
}

/// A named route: the attempts to make, in order, and the policy for making
/// them. Every field but `attempts` has a default (those of
/// [`RoutePolicy::default`]).
///
/// ```
/// use modelux::config::RouteConfig;
/// use modelux::route::Strategy;
/// let r: RouteConfig = serde_json::from_str(
///     r#"{"attempts": [{"model": "a"}, {"model": "b", "timeout_ms": 5000}]}"#,
/// ).unwrap();
/// assert_eq!(r.strategy, Strategy::Fallback);
/// assert_eq!(r.retry_on, ["429", "5xx", "timeout", "connect"]);
/// assert_eq!(r.total_budget_ms, 30_000);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// How candidates are ordered: `fallback` (config order) or `latency`
    /// (fastest healthy first).
    #[serde(default)]
    pub strategy: Strategy,
    /// The attempts, in config order; at least one.
    pub attempts: Vec<AttemptConfig>,
    /// Which failures move on to a retry or the next attempt: `429`, `5xx`,
    /// `timeout`, `connect`, or an exact status 400–599.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<String>,
    /// The whole request's budget in milliseconds, until the response is committed.
    #[serde(default = "default_total_budget_ms")]
    pub total_budget_ms: u64,
    /// Same-target retries for 429, 5xx and connection failures before
    /// advancing (at most 10).
    #[serde(default = "default_same_target_retries")]
    pub same_target_retries: u32,
    /// First backoff step in milliseconds (full jitter).
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Largest backoff step in milliseconds; at least `backoff_base_ms`.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// A `Retry-After` longer than this (milliseconds) makes the router
    /// advance instead of waiting.
    #[serde(default = "default_retry_after_cap_ms")]
    pub retry_after_cap_ms: u64,
    /// Longest silence allowed inside a committed stream, in milliseconds.
    #[serde(default = "default_stream_idle_timeout_ms")]
    pub stream_idle_timeout_ms: u64,
    /// Longest a committed stream may last from its first token, in
    /// milliseconds (default 1800000, 30 minutes): past it the gateway ends
    /// it with a `stream_time_limit` error event.
    #[serde(default = "default_stream_max_ms")]
    pub stream_max_ms: u64,
    /// Mid-stream recovery strategies, in order (`prefill`, `regenerate`);
    /// empty disables mid-stream recovery.
    #[serde(default = "default_continuation")]
    pub continuation: Vec<Continuation>,
    /// Longest delivered text that `regenerate` will try to reproduce, in characters.
    #[serde(default = "default_regenerate_max_chars")]
    pub regenerate_max_chars: usize,
}

impl Default for RouteConfig {
    /// A route with no attempts (add some before use) and the default policy.
    ///
    /// ```
    /// use modelux::config::{AttemptConfig, RouteConfig};
    /// let r = RouteConfig { attempts: vec![AttemptConfig::new("a", 1000)], ..Default::default() };
    /// assert_eq!(r.same_target_retries, 1);
    /// ```
    fn default() -> Self {
        RouteConfig {
            strategy: Strategy::default(),
            attempts: Vec::new(),
            retry_on: default_retry_on(),
            total_budget_ms: default_total_budget_ms(),
            same_target_retries: default_same_target_retries(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            retry_after_cap_ms: default_retry_after_cap_ms(),
            stream_idle_timeout_ms: default_stream_idle_timeout_ms(),
            stream_max_ms: default_stream_max_ms(),
            continuation: default_continuation(),
            regenerate_max_chars: default_regenerate_max_chars(),
        }
    }
}

/// Health scoring (the `health` section): when a target is ejected and how
/// it comes back.
///
/// ```
/// use modelux::config::HealthSettings;
/// let h: HealthSettings = serde_json::from_str(r#"{"probes": 2}"#).unwrap();
/// assert_eq!(h, HealthSettings { probes: 2, ..HealthSettings::default() });
/// assert_eq!(h.consecutive_failures, 5);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// The sliding window outcomes are counted over, in milliseconds (default 30000).
    pub window_ms: u64,
    /// Consecutive failures that eject a target (default 5).
    pub consecutive_failures: u32,
    /// Failure rate in the window that ejects a target, in `[0, 1]` (default 0.5).
    pub failure_rate: f64,
    /// Requests needed in the window before `failure_rate` applies (default 10).
    pub min_requests: u32,
    /// First ejection's cooldown in milliseconds (default 5000); repeated
    /// ejections wait longer, up to `cooldown_max_ms`.
    pub cooldown_base_ms: u64,
    /// Longest cooldown in milliseconds (default 60000); at least `cooldown_base_ms`.
    pub cooldown_max_ms: u64,
    /// Probe requests let through concurrently once a cooldown ends (default 1).
    pub probes: u32,
    /// Milliseconds a target restored by a probe takes to get its full share
    /// of traffic back, from ≈ 10 % of requests (default 30000; 0: at once).
    pub slow_start_ms: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            window_ms: 30_000,
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 10,
            cooldown_base_ms: 5_000,
            cooldown_max_ms: 60_000,
            probes: 1,
            slow_start_ms: 30_000,
        }
    }
}

/// Latency ranking (the `latency` section), used by `latency` routes.
///
/// ```
/// use modelux::config::LatencySettings;
/// let l = LatencySettings::default();
/// assert_eq!((l.window_ms, l.min_samples, l.max_samples), (300_000, 5, 256));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencySettings {
    /// How long a latency sample counts, in milliseconds (default 300000).
    pub window_ms: u64,
    /// Samples needed before a target is ranked by its p50 (default 5).
    pub min_samples: usize,
    /// Share of requests that try a random candidate first, in `[0, 1]` (default 0.05).
    pub explore: f64,
    /// Most samples kept per target (default 256); at least `min_samples`.
    pub max_samples: usize,
}

impl Default for LatencySettings {
    fn default() -> Self {
        LatencySettings {
            window_ms: 300_000,
            min_samples: 5,
            explore: 0.05,
            max_samples: 256,
        }
    }
}

/// The retry budget shared by all requests (the `retry_budget` section), as
/// tower's `TpsBudget` takes it.
///
/// ```
/// use modelux::config::RetryBudgetSettings;
/// let r = RetryBudgetSettings::default();
/// assert_eq!((r.ttl_ms, r.min_per_sec, r.retry_percent), (10_000, 10, 0.2));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetSettings {
    /// How long a request's deposit counts, in milliseconds, 1000–60000 (default 10000).
    pub ttl_ms: u64,
    /// Retries allowed per second regardless of traffic (default 10).
    pub min_per_sec: u32,
    /// Retries allowed as a share of requests, 0.2 = 20% (default 0.2; 0–1000).
    pub retry_percent: f64,
}

impl Default for RetryBudgetSettings {
    fn default() -> Self {
        RetryBudgetSettings {
            ttl_ms: 10_000,
            min_per_sec: 10,
            retry_percent: 0.2,
        }
    }
}

/// The reference gateway's HTTP server (the `server` section).
///
/// ```
/// use modelux::config::ServerSettings;
/// let s = ServerSettings::default();
/// assert_eq!((s.max_body_bytes, s.shutdown_grace_ms), (4 * 1024 * 1024, 30_000));
/// assert_eq!((s.max_connections, s.max_in_flight), (20_000, 20_000));
/// assert_eq!(s.max_body_bytes_in_flight, 512 * 1024 * 1024);
/// assert_eq!(s.idle_timeout_ms, 75_000);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Largest request body accepted, in bytes (default 4194304).
    pub max_body_bytes: usize,
    /// How long in-flight requests may finish after a shutdown signal, in
    /// milliseconds (default 30000).
    pub shutdown_grace_ms: u64,
    /// Client connections served at once (default 20000). At the limit the
    /// gateway stops accepting until one closes: new connections wait in the
    /// kernel's listen backlog instead of exhausting memory and file
    /// descriptors.
    pub max_connections: usize,
    /// Chat requests served at once, a stream counting until its last byte
    /// (default 20000). Past it a request gets 503 with `Retry-After` at
    /// once: HTTP/2 clients multiplex up to 200 requests on each connection,
    /// so `max_connections` alone does not bound the work in flight.
    pub max_in_flight: usize,
    /// Bytes of chat request bodies held at once (default 536870912, 512
    /// MiB), counted from when they arrive until the request's answer ends.
    /// Past it a request gets 503 with `Retry-After` at once, as past
    /// `max_in_flight`, which counts requests whatever their size. The
    /// gateway's memory for them is about three times this (the body, its
    /// parsed form and the upstream body).
    pub max_body_bytes_in_flight: usize,
    /// How long a client connection may stay idle before the gateway closes
    /// it, in milliseconds (default 75000): an HTTP/1.1 connection between
    /// requests (and while it sends a request's headers), an HTTP/2
    /// connection with no request open.
    pub idle_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace_ms: 30_000,
            max_connections: 20_000,
            max_in_flight: 20_000,
            max_body_bytes_in_flight: 512 * 1024 * 1024,
            idle_timeout_ms: 75_000,
        }
    }
}

/// Decision traces (the `traces` section).
///
/// ```
/// use modelux::config::TraceSettings;
/// assert_eq!(TraceSettings::default().capacity, 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceSettings {
    /// How many recent traces are kept, 1–100000 (default 1024).
    pub capacity: usize,
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings { capacity: 1024 }
    }
}

/// The traffic log (the `traffic` section): one record per finished request,
/// written to the config store for dry-runs.
///
/// ```
/// use modelux::config::TrafficSettings;
/// let t = TrafficSettings::default();
/// assert!(t.enabled);
/// assert_eq!((t.retention_hours, t.max_records, t.queue), (24, 1_000_000, 10_000));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficSettings {
    /// Record traffic when the gateway runs with a store (default `true`).
    pub enabled: bool,
    /// How long records are kept, 1–8760 hours (default 24).
    pub retention_hours: u64,
    /// The most records kept; older ones are pruned first (default 1000000).
    pub max_records: u64,
    /// Records waiting to be written, 1–1000000 (default 10000); when full,
    /// new records are dropped and counted.
    pub queue: usize,
}

impl Default for TrafficSettings {
    fn default() -> Self {
        TrafficSettings {
            enabled: true,
            retention_hours: 24,
            max_records: 1_000_000,
            queue: 10_000,
        }
    }
}

impl TrafficSettings {
    pub(crate) fn is_default(&self) -> bool {
        *self == TrafficSettings::default()
    }
}

/// A client allowed to call `/v1`: its key is given as a SHA-256 digest
/// (`key_sha256`, 64 hex digits) or read from an environment variable
/// (`key_env`). Exactly one of the two.
///
/// ```
/// use modelux::config::ClientConfig;
/// let c: ClientConfig = serde_json::from_str(r#"{"key_env": "TEAM_A_KEY"}"#).unwrap();
/// assert_eq!(c.key_env.as_deref(), Some("TEAM_A_KEY"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// SHA-256 of the client's key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
    /// The environment variable holding the client's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
}

fn ms(v: u64) -> std::time::Duration {
    std::time::Duration::from_millis(v)
}

impl HealthSettings {
    /// The [`HealthScoreLayer`](crate::health::HealthScoreLayer) settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::config::HealthSettings;
    /// use modelux::health::HealthConfig;
    /// assert_eq!(HealthSettings::default().layer_config(), HealthConfig::default());
    /// let s: HealthSettings = serde_json::from_str(r#"{"cooldown_base_ms": 250}"#).unwrap();
    /// assert_eq!(s.layer_config().cooldown_base, Duration::from_millis(250));
    /// ```
    pub fn layer_config(&self) -> crate::health::HealthConfig {
        crate::health::HealthConfig {
            window: ms(self.window_ms),
            consecutive_failures: self.consecutive_failures,
            failure_rate: self.failure_rate,
            min_requests: self.min_requests,
            cooldown_base: ms(self.cooldown_base_ms),
            cooldown_max: ms(self.cooldown_max_ms),
            probes: self.probes,
            slow_start: ms(self.slow_start_ms),
        }
    }
}

impl LatencySettings {
    /// The [`LatencyRankLayer`](crate::latency::LatencyRankLayer) settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::config::LatencySettings;
    /// use modelux::latency::LatencyConfig;
    /// assert_eq!(LatencySettings::default().layer_config(), LatencyConfig::default());
    /// let s: LatencySettings = serde_json::from_str(r#"{"window_ms": 60000}"#).unwrap();
    /// assert_eq!(s.layer_config().window, Duration::from_secs(60));
    /// ```
    pub fn layer_config(&self) -> crate::latency::LatencyConfig {
        crate::latency::LatencyConfig {
            window: ms(self.window_ms),
            min_samples: self.min_samples,
            explore: self.explore,
            max_samples: self.max_samples,
        }
    }
}

impl RetryBudgetSettings {
    /// The [`RetryBudgetLayer`](crate::retry_budget::RetryBudgetLayer) settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::config::RetryBudgetSettings;
    /// use modelux::retry_budget::RetryBudgetConfig;
    /// assert_eq!(RetryBudgetSettings::default().layer_config(), RetryBudgetConfig::default());
    /// let s: RetryBudgetSettings = serde_json::from_str(r#"{"ttl_ms": 5000, "retry_percent": 0.5}"#).unwrap();
    /// let c = s.layer_config();
    /// assert_eq!((c.ttl, c.retry_percent), (Duration::from_secs(5), 0.5));
    /// ```
    pub fn layer_config(&self) -> crate::retry_budget::RetryBudgetConfig {
        crate::retry_budget::RetryBudgetConfig {
            ttl: ms(self.ttl_ms),
            min_per_sec: self.min_per_sec,
            retry_percent: self.retry_percent as f32,
        }
    }
}
