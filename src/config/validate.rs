//! Semantic checks on typed config entries, and JSON path helpers.
//!
//! The checks run per entry so the parser can run them right after parsing
//! each entry (reporting in document order) and [`Config::validate`] can run
//! the same checks on a config built in code.

use std::collections::BTreeSet;

use super::settings::{
    ClientConfig, HealthSettings, LatencySettings, ModelConfig, ProviderConfig,
    RetryBudgetSettings, RouteConfig, ServerSettings, TraceSettings, TrafficSettings,
};
use super::{Config, Problem};
use crate::route::RetryOn;

/// The longest duration any `*_ms` field may hold: 24 hours. Keeps every
/// deadline far from `Instant` overflow.
pub(crate) const MAX_MS: u64 = 86_400_000;

/// The most same-target retries a route may ask for.
pub(crate) const MAX_SAME_TARGET_RETRIES: u32 = 10;

/// The most traces a store may keep.
pub(crate) const MAX_TRACE_CAPACITY: usize = 100_000;

/// `base.key`, or `base["key"]` when the key is not a plain identifier.
pub(crate) fn join(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{base}.{key}")
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| "\"?\"".to_owned());
        format!("{base}[{quoted}]")
    }
}

/// `base[i]`.
pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// Whether `path` is `prefix` or lies inside it.
fn within(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

/// Where semantic problems go. Problems at or under a path whose value
/// failed to parse (and was replaced by a default) are dropped: the parse
/// problem already covers them.
pub(crate) struct Sink<'a> {
    out: &'a mut Vec<Problem>,
    skip: &'a [String],
}

impl<'a> Sink<'a> {
    pub(crate) fn new(out: &'a mut Vec<Problem>, skip: &'a [String]) -> Self {
        Sink { out, skip }
    }

    pub(crate) fn push(&mut self, path: String, message: impl Into<String>) {
        if !self.skip.iter().any(|s| within(&path, s)) {
            self.out.push(Problem {
                path,
                message: message.into(),
            });
        }
    }
}

/// Names defined in a section, for reference checks. `None` when the section
/// itself is broken, so references into it are not checked.
pub(crate) type Names<'a> = Option<&'a BTreeSet<&'a str>>;

fn list(names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        return "none are defined".to_owned();
    }
    let shown: Vec<String> = names
        .iter()
        .take(20)
        .map(|n| serde_json::to_string(n).unwrap_or_default())
        .collect();
    let more = if names.len() > 20 { ", ..." } else { "" };
    format!("defined: {}{more}", shown.join(", "))
}

fn empty_name(sink: &mut Sink<'_>, path: &str, name: &str, what: &str) {
    if name.is_empty() {
        sink.push(path.to_owned(), format!("{what} name must not be empty"));
    }
}

fn ms(sink: &mut Sink<'_>, path: String, v: u64) {
    if v > MAX_MS {
        sink.push(
            path,
            format!("must be at most {MAX_MS} (24 hours), found {v}"),
        );
    }
}

fn ms_positive(sink: &mut Sink<'_>, path: String, v: u64) {
    if v == 0 {
        sink.push(path, "must be greater than 0 (milliseconds), found 0");
    } else {
        ms(sink, path, v);
    }
}

fn positive<T: PartialEq + Default + std::fmt::Display>(sink: &mut Sink<'_>, path: String, v: T) {
    if v == T::default() {
        sink.push(path, format!("must be greater than 0, found {v}"));
    }
}

fn fraction(sink: &mut Sink<'_>, path: String, v: f64, max: f64) {
    if !(v.is_finite() && (0.0..=max).contains(&v)) {
        sink.push(path, format!("must be between 0 and {max}, found {v}"));
    }
}

/// Whether `s` is a usable environment variable name.
fn env_name_ok(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 128
}

/// Whether a would-be variable name looks like a key pasted in by mistake.
fn looks_like_key(s: &str) -> bool {
    s.starts_with("sk-") || s.starts_with("sk_") || s.starts_with("AIza") || s.len() > 64
}

/// Checks a base URL without ever echoing it (it might carry credentials).
fn base_url(sink: &mut Sink<'_>, path: String, url: &str) {
    const MSG: &str = "must be an absolute http:// or https:// URL";
    let Ok(uri) = url.parse::<http::Uri>() else {
        sink.push(path, MSG);
        return;
    };
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    if !scheme_ok || !host_ok {
        sink.push(path, MSG);
    } else if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        sink.push(
            path,
            "must not contain credentials; set api_key_env instead",
        );
    } else if uri.query().is_some() {
        sink.push(path, "must not contain a query string");
    }
}

pub(crate) fn provider(sink: &mut Sink<'_>, path: &str, name: &str, p: &ProviderConfig) {
    empty_name(sink, path, name, "provider");
    base_url(sink, join(path, "base_url"), &p.base_url);
    if let Some(var) = &p.api_key_env {
        if looks_like_key(var) {
            sink.push(
                join(path, "api_key_env"),
                "looks like an API key, not the name of an environment variable; \
                 put the key in an environment variable and name the variable here",
            );
        } else if !env_name_ok(var) {
            sink.push(
                join(path, "api_key_env"),
                "must be an environment variable name (letters, digits and _, not starting with a digit)",
            );
        }
    }
    extra_headers(sink, path, p);
    if p.http2_max_streams == 0 {
        sink.push(
            join(path, "http2_max_streams"),
            "must be at least 1 (the streams one HTTP/2 connection carries)",
        );
    }
    if let Some(key) = &p.api_key {
        if p.api_key_env.is_some() {
            sink.push(
                join(path, "api_key"),
                "set either api_key or api_key_env, not both (api_key_env is preferred)",
            );
        } else if key.trim().is_empty() {
            sink.push(
                join(path, "api_key"),
                "must not be empty; omit it for a provider without authentication",
            );
        } else if key == super::REDACTED {
            sink.push(
                join(path, "api_key"),
                "is \"***\", the mask the admin API shows in place of a key, not a key: give the key itself, or better api_key_env",
            );
        } else if !sendable_key(key) {
            sink.push(
                join(path, "api_key"),
                "must be printable ASCII without spaces (a key pasted with a line break?): it could not be sent in a header",
            );
        }
    }
}

/// The most extra headers one provider may have.
pub(crate) const MAX_EXTRA_HEADERS: usize = 32;

/// The longest extra header value.
pub(crate) const MAX_HEADER_VALUE: usize = 4096;

/// Whether `value` can be sent as a header value as is: printable ASCII and
/// spaces, no line breaks or control characters.
pub(crate) fn sendable_value(value: &str) -> bool {
    value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn extra_headers(sink: &mut Sink<'_>, path: &str, p: &ProviderConfig) {
    if p.headers.len() + p.headers_env.len() > MAX_EXTRA_HEADERS {
        sink.push(
            join(path, "headers"),
            format!("at most {MAX_EXTRA_HEADERS} extra headers (headers and headers_env together)"),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (field, map) in [("headers", &p.headers), ("headers_env", &p.headers_env)] {
        for (name, value) in map {
            let at = join(&join(path, field), name);
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                sink.push(
                    at,
                    "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)",
                );
                continue;
            }
            if crate::provider::RESERVED_HEADERS.contains(&lower.as_str()) {
                sink.push(
                    at,
                    "is set by the gateway itself and cannot be overridden (give a key with api_key_env)",
                );
                continue;
            }
            if !seen.insert(lower.clone()) {
                sink.push(at, "is given twice (header names are case-insensitive)");
                continue;
            }
            if field == "headers_env" {
                if looks_like_key(value) {
                    sink.push(
                        at,
                        "looks like a secret, not the name of an environment variable; \
                         put it in an environment variable and name the variable here",
                    );
                } else if !env_name_ok(value) {
                    sink.push(
                        at,
                        "must be an environment variable name (letters, digits and _, not starting with a digit)",
                    );
                }
            } else if credential_like(&lower, value) {
                // Never echoed: the config that holds it is shown by the
                // admin API and diffed in the audit log.
                sink.push(
                    at,
                    "looks like a credential; give it with headers_env, which keeps it out of the config the admin API shows",
                );
            } else if value.len() > MAX_HEADER_VALUE {
                sink.push(at, format!("must be at most {MAX_HEADER_VALUE} bytes"));
            } else if !sendable_value(value) {
                sink.push(
                    at,
                    "must be printable ASCII (no line breaks or control characters): it could not be sent in a header",
                );
            }
        }
    }
}

/// Whether a literal header looks like it carries a secret: its name
/// speaks of one (`Helicone-Auth`, `x-portkey-api-key`, a cookie) or its
/// value looks like a key.
fn credential_like(lower_name: &str, value: &str) -> bool {
    const WORDS: &[&str] = &[
        "auth",
        "key",
        "token",
        "secret",
        "pass",
        "credential",
        "bearer",
        "cookie",
        "session",
    ];
    const VALUES: &[&str] = &["sk-", "sk_", "AIza", "Bearer ", "Basic ", "Token "];
    let value = value.trim_start();
    WORDS.iter().any(|w| lower_name.contains(w)) || VALUES.iter().any(|p| value.starts_with(p))
}

/// Whether a key can be sent in a header as is: printable ASCII, no spaces
/// or control characters. A key that cannot made every request to its
/// provider fail, so it is refused when the config is read (the message
/// never quotes the key).
pub(crate) fn sendable_key(key: &str) -> bool {
    key.bytes().all(|b| b.is_ascii_graphic())
}

pub(crate) fn client(sink: &mut Sink<'_>, path: &str, name: &str, c: &ClientConfig) {
    empty_name(sink, path, name, "client");
    match (&c.key_sha256, &c.key_env) {
        (Some(_), Some(_)) => sink.push(
            path.to_owned(),
            "set either key_sha256 or key_env, not both",
        ),
        (None, None) => sink.push(path.to_owned(), "must set key_sha256 or key_env"),
        (Some(h), None) => {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                sink.push(
                    join(path, "key_sha256"),
                    "must be the SHA-256 of the key as 64 hex digits (e.g. `printf %s KEY | sha256sum`)",
                );
            }
        }
        (None, Some(var)) => {
            if looks_like_key(var) || !env_name_ok(var) {
                sink.push(
                    join(path, "key_env"),
                    "must be an environment variable name (letters, digits and _, not starting with a digit)",
                );
            }
        }
    }
}

pub(crate) fn model(
    sink: &mut Sink<'_>,
    path: &str,
    name: &str,
    m: &ModelConfig,
    providers: Names<'_>,
) {
    empty_name(sink, path, name, "model");
    if let Some(providers) = providers {
        if !providers.contains(m.provider.as_str()) {
            sink.push(
                join(path, "provider"),
                format!(
                    "unknown provider {}; {}",
                    serde_json::to_string(&m.provider).unwrap_or_default(),
                    list(providers)
                ),
            );
        }
    }
    if m.max_output_tokens == Some(0) {
        sink.push(
            join(path, "max_output_tokens"),
            "must be at least 1; omit it for the provider's default",
        );
    }
    if m.upstream_model.as_deref() == Some("") {
        sink.push(
            join(path, "upstream_model"),
            "must not be empty; omit it to send the model's own name",
        );
    }
    if let Some(price) = &m.price {
        let price_path = join(path, "price");
        let optional = [
            ("cached_input_per_mtok", price.cached_input_per_mtok),
            ("cache_write_per_mtok", price.cache_write_per_mtok),
        ];
        for (field, v) in [
            ("input_per_mtok", price.input_per_mtok),
            ("output_per_mtok", price.output_per_mtok),
        ]
        .into_iter()
        .chain(optional.into_iter().filter_map(|(f, v)| Some((f, v?))))
        {
            if !(v.is_finite() && v >= 0.0) {
                sink.push(
                    join(&price_path, field),
                    format!("must be a non-negative price, found {v}"),
                );
            }
        }
    }
    ms_positive(sink, join(path, "timeout_ms"), m.timeout_ms);
}

pub(crate) fn route(
    sink: &mut Sink<'_>,
    path: &str,
    name: &str,
    r: &RouteConfig,
    models: Names<'_>,
) {
    empty_name(sink, path, name, "route");
    let attempts = join(path, "attempts");
    if r.attempts.is_empty() {
        sink.push(attempts.clone(), "must list at least one attempt");
    }
    for (i, a) in r.attempts.iter().enumerate() {
        let at = index(&attempts, i);
        if let Some(models) = models {
            if !models.contains(a.model.as_str()) {
                sink.push(
                    join(&at, "model"),
                    format!(
                        "unknown model {}; attempts name entries of $.models ({})",
                        serde_json::to_string(&a.model).unwrap_or_default(),
                        list(models)
                    ),
                );
            }
        }
        ms_positive(sink, join(&at, "timeout_ms"), a.timeout_ms);
    }
    let retry_on = join(path, "retry_on");
    for (i, token) in r.retry_on.iter().enumerate() {
        if RetryOn::parse([token]).is_err() {
            sink.push(
                index(&retry_on, i),
                format!(
                    "unknown retry_on token {}; expected \"429\", \"5xx\", \"timeout\", \"connect\" or a status 400-599",
                    serde_json::to_string(token).unwrap_or_default()
                ),
            );
        }
    }
    ms_positive(sink, join(path, "total_budget_ms"), r.total_budget_ms);
    if r.same_target_retries > MAX_SAME_TARGET_RETRIES {
        sink.push(
            join(path, "same_target_retries"),
            format!(
                "must be at most {MAX_SAME_TARGET_RETRIES}, found {}",
                r.same_target_retries
            ),
        );
    }
    ms(sink, join(path, "backoff_base_ms"), r.backoff_base_ms);
    ms(sink, join(path, "backoff_max_ms"), r.backoff_max_ms);
    if r.backoff_max_ms < r.backoff_base_ms {
        sink.push(
            join(path, "backoff_max_ms"),
            format!(
                "must be at least backoff_base_ms ({}), found {}",
                r.backoff_base_ms, r.backoff_max_ms
            ),
        );
    }
    ms(sink, join(path, "retry_after_cap_ms"), r.retry_after_cap_ms);
    ms_positive(
        sink,
        join(path, "stream_idle_timeout_ms"),
        r.stream_idle_timeout_ms,
    );
    ms_positive(sink, join(path, "stream_max_ms"), r.stream_max_ms);
    let continuation = join(path, "continuation");
    for (i, c) in r.continuation.iter().enumerate() {
        if r.continuation[..i].contains(c) {
            sink.push(index(&continuation, i), "listed more than once");
        }
    }
}

pub(crate) fn health(sink: &mut Sink<'_>, path: &str, h: &HealthSettings) {
    ms_positive(sink, join(path, "window_ms"), h.window_ms);
    positive(
        sink,
        join(path, "consecutive_failures"),
        h.consecutive_failures,
    );
    fraction(sink, join(path, "failure_rate"), h.failure_rate, 1.0);
    if h.failure_rate == 0.0 {
        sink.push(
            join(path, "failure_rate"),
            "must be greater than 0 (0 would eject a target on any failure)",
        );
    }
    positive(sink, join(path, "min_requests"), h.min_requests);
    // The window keeps at most this many attempts per target: a larger
    // `min_requests` could never be reached, and `failure_rate` would
    // silently never eject.
    let max_window = crate::health::MAX_WINDOW as u32;
    if h.min_requests > max_window {
        sink.push(
            join(path, "min_requests"),
            format!(
                "must be at most {max_window} (the attempts a target's window keeps), found {}",
                h.min_requests
            ),
        );
    }
    ms_positive(sink, join(path, "cooldown_base_ms"), h.cooldown_base_ms);
    ms(sink, join(path, "cooldown_max_ms"), h.cooldown_max_ms);
    if h.cooldown_max_ms < h.cooldown_base_ms {
        sink.push(
            join(path, "cooldown_max_ms"),
            format!(
                "must be at least cooldown_base_ms ({}), found {}",
                h.cooldown_base_ms, h.cooldown_max_ms
            ),
        );
    }
    positive(sink, join(path, "probes"), h.probes);
    ms(sink, join(path, "slow_start_ms"), h.slow_start_ms);
}

/// The most latency samples a target keeps per measure: each ranked request
/// may select its percentiles from a copy of them.
const MAX_LATENCY_SAMPLES: usize = 16_384;

pub(crate) fn latency(sink: &mut Sink<'_>, path: &str, l: &LatencySettings) {
    ms_positive(sink, join(path, "window_ms"), l.window_ms);
    positive(sink, join(path, "min_samples"), l.min_samples);
    fraction(sink, join(path, "explore"), l.explore, 1.0);
    positive(sink, join(path, "max_samples"), l.max_samples);
    if l.max_samples > MAX_LATENCY_SAMPLES {
        sink.push(
            join(path, "max_samples"),
            format!(
                "must be at most {MAX_LATENCY_SAMPLES}, found {}",
                l.max_samples
            ),
        );
    }
    if l.max_samples < l.min_samples {
        sink.push(
            join(path, "max_samples"),
            format!(
                "must be at least min_samples ({}), found {}",
                l.min_samples, l.max_samples
            ),
        );
    }
}

pub(crate) fn retry_budget(sink: &mut Sink<'_>, path: &str, r: &RetryBudgetSettings) {
    if !(1_000..=60_000).contains(&r.ttl_ms) {
        sink.push(
            join(path, "ttl_ms"),
            format!("must be between 1000 and 60000, found {}", r.ttl_ms),
        );
    }
    if r.min_per_sec >= i32::MAX as u32 {
        sink.push(
            join(path, "min_per_sec"),
            format!("must be less than {}, found {}", i32::MAX, r.min_per_sec),
        );
    }
    fraction(sink, join(path, "retry_percent"), r.retry_percent, 1000.0);
}

pub(crate) fn server(sink: &mut Sink<'_>, path: &str, s: &ServerSettings) {
    positive(sink, join(path, "max_body_bytes"), s.max_body_bytes);
    ms(sink, join(path, "shutdown_grace_ms"), s.shutdown_grace_ms);
    for (field, value) in [
        ("max_connections", s.max_connections),
        ("max_in_flight", s.max_in_flight),
    ] {
        if !(1..=MAX_CONNECTIONS).contains(&value) {
            sink.push(
                join(path, field),
                format!("must be from 1 to {MAX_CONNECTIONS}, found {value}"),
            );
        }
    }
    positive(
        sink,
        join(path, "max_body_bytes_in_flight"),
        s.max_body_bytes_in_flight,
    );
    if s.max_body_bytes_in_flight > 0 && s.max_body_bytes_in_flight < s.max_body_bytes {
        sink.push(
            join(path, "max_body_bytes_in_flight"),
            format!(
                "must be at least max_body_bytes ({}), found {}: a body of the largest size could never be read",
                s.max_body_bytes, s.max_body_bytes_in_flight
            ),
        );
    }
    if !(MIN_IDLE_TIMEOUT_MS..=MAX_IDLE_TIMEOUT_MS).contains(&s.idle_timeout_ms) {
        sink.push(
            join(path, "idle_timeout_ms"),
            format!(
                "must be from {MIN_IDLE_TIMEOUT_MS} to {MAX_IDLE_TIMEOUT_MS}, found {}",
                s.idle_timeout_ms
            ),
        );
    }
}

/// The largest `server.max_connections` and `server.max_in_flight`.
const MAX_CONNECTIONS: usize = 1_000_000;

/// The bounds of `server.idle_timeout_ms`: shorter than 100 ms would cut
/// clients between two requests of one exchange; longer than an hour keeps
/// dead connections for no one.
const MIN_IDLE_TIMEOUT_MS: u64 = 100;
const MAX_IDLE_TIMEOUT_MS: u64 = 3_600_000;

pub(crate) fn traces(sink: &mut Sink<'_>, path: &str, t: &TraceSettings) {
    if !(1..=MAX_TRACE_CAPACITY).contains(&t.capacity) {
        sink.push(
            join(path, "capacity"),
            format!(
                "must be between 1 and {MAX_TRACE_CAPACITY}, found {}",
                t.capacity
            ),
        );
    }
}

pub(crate) fn traffic(sink: &mut Sink<'_>, path: &str, t: &TrafficSettings) {
    if !(1..=8760).contains(&t.retention_hours) {
        sink.push(
            join(path, "retention_hours"),
            format!("must be between 1 and 8760, found {}", t.retention_hours),
        );
    }
    if t.max_records == 0 {
        sink.push(join(path, "max_records"), "must be at least 1");
    }
    if !(1..=1_000_000).contains(&t.queue) {
        sink.push(
            join(path, "queue"),
            format!("must be between 1 and 1000000, found {}", t.queue),
        );
    }
}

/// Every semantic problem of a typed config, in document order.
pub(crate) fn config(c: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut sink = Sink::new(&mut out, &[]);
    if c.models.is_empty() {
        sink.push("$.models".to_owned(), "must define at least one model");
    }
    let providers: BTreeSet<&str> = c.providers.keys().map(String::as_str).collect();
    let models: BTreeSet<&str> = c.models.keys().map(String::as_str).collect();
    for (name, p) in &c.providers {
        provider(&mut sink, &join("$.providers", name), name, p);
    }
    for (name, cl) in &c.clients {
        client(&mut sink, &join("$.clients", name), name, cl);
    }
    for (name, m) in &c.models {
        model(
            &mut sink,
            &join("$.models", name),
            name,
            m,
            Some(&providers),
        );
    }
    for (name, r) in &c.routes {
        route(&mut sink, &join("$.routes", name), name, r, Some(&models));
    }
    health(&mut sink, "$.health", &c.health);
    latency(&mut sink, "$.latency", &c.latency);
    retry_budget(&mut sink, "$.retry_budget", &c.retry_budget);
    server(&mut sink, "$.server", &c.server);
    traces(&mut sink, "$.traces", &c.traces);
    traffic(&mut sink, "$.traffic", &c.traffic);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_keys_that_are_not_plain() {
        assert_eq!(join("$.models", "gpt-4o-mini"), "$.models.gpt-4o-mini");
        assert_eq!(
            join("$.models", "gemini-2.5-flash"),
            "$.models[\"gemini-2.5-flash\"]"
        );
        assert_eq!(join("$.routes", ""), "$.routes[\"\"]");
        assert_eq!(index("$.x", 3), "$.x[3]");
    }

    #[test]
    fn within_matches_whole_segments() {
        assert!(within("$.a.b", "$.a"));
        assert!(within("$.a[0]", "$.a"));
        assert!(within("$.a", "$.a"));
        assert!(!within("$.ab", "$.a"));
    }

    #[test]
    fn env_names() {
        assert!(env_name_ok("OPENAI_API_KEY"));
        assert!(env_name_ok("_x1"));
        assert!(!env_name_ok("1X"));
        assert!(!env_name_ok(""));
        assert!(!env_name_ok("A-B"));
        assert!(looks_like_key("sk-proj-abc"));
        assert!(looks_like_key("AIzaSyA0123456789abcdefghijklmnopqrstu"));
        assert!(!looks_like_key("GEMINI_API_KEY"));
    }
}
