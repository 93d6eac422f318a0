//! Walks a `serde_json::Value` into a [`Config`], field by field, so that
//! every problem is reported at its own path and one bad entry (or field)
//! never hides another.
//!
//! A field that fails to parse is reported and replaced by its default; its
//! path is remembered so the semantic checks that run next do not report the
//! stand-in value a second time.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::settings::{
    AttemptConfig, ClientConfig, HealthSettings, LatencySettings, ModelConfig, ProviderConfig,
    RetryBudgetSettings, RouteConfig, ServerSettings, TraceSettings, TrafficSettings,
    DEFAULT_TIMEOUT_MS,
};
use super::validate::{self, index, join, Names, Sink};
use super::{Config, Problem};
use crate::provider::{Price, ProviderKind};
use crate::route::{Continuation, Strategy};

/// Problems found so far, and the paths whose values were replaced by defaults.
#[derive(Default)]
struct Cx {
    problems: Vec<Problem>,
    failed: Vec<String>,
}

impl Cx {
    fn problem(&mut self, path: String, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    /// A value that could not be used: reported, and checks below it skipped.
    fn fail(&mut self, path: String, message: impl Into<String>) {
        self.failed.push(path.clone());
        self.problem(path, message);
    }

    /// Puts the problems found since `start` (all inside the entry at
    /// `base`) in field order: the entry itself, then its fields in the
    /// order of `fields` (element by element for lists), then unknown fields.
    /// Stable, so a field's parse problem stays ahead of its semantic ones.
    fn order(&mut self, start: usize, base: &str, fields: &[&str]) {
        let key = |p: &Problem| -> (usize, usize) {
            let Some(rest) = p.path.strip_prefix(base).and_then(|r| r.strip_prefix('.')) else {
                return (0, 0);
            };
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let rank = fields
                .iter()
                .position(|f| *f == &rest[..end])
                .map_or(fields.len() + 1, |i| i + 1);
            let element = rest[end..]
                .strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (rank, element)
        };
        if let Some(problems) = self.problems.get_mut(start..) {
            problems.sort_by_key(key);
        }
    }

    /// Runs semantic checks, skipping paths that already failed.
    fn check(&mut self, f: impl FnOnce(&mut Sink<'_>)) {
        let mut sink = Sink::new(&mut self.problems, &self.failed);
        f(&mut sink);
    }
}

/// What a value is, for "expected X, found Y" (never the value itself).
fn found(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

type Parse<T> = fn(&Value) -> Result<T, String>;

fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) => Err("expected a string, found a number".to_owned()),
        _ => Err(format!("expected a string, found {}", found(v))),
    }
}

fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", found(v)))
}

fn number(v: &Value) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("expected a number, found {}", found(v)))
}

fn uint<T: TryFrom<u64>>(v: &Value) -> Result<T, String> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                T::try_from(u).map_err(|_| format!("is too large, found {u}"))
            } else if n.is_i64() {
                Err(format!("must not be negative, found {n}"))
            } else {
                Err(format!("expected a whole number, found {n}"))
            }
        }
        _ => Err(format!("expected a whole number, found {}", found(v))),
    }
}

/// A lower-case keyword, with the accepted values listed on error.
fn keyword<T: Copy>(v: &Value, what: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let expected = choices
        .iter()
        .map(|(k, _)| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let Value::String(s) = v else {
        return Err(format!(
            "expected a string ({expected}), found {}",
            found(v)
        ));
    };
    choices
        .iter()
        .find(|(k, _)| k == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            format!(
                "unknown {what} {}; expected one of {expected}",
                serde_json::to_string(s).unwrap_or_default()
            )
        })
}

fn kind(v: &Value) -> Result<ProviderKind, String> {
    keyword(
        v,
        "provider kind",
        &[
            ("openai", ProviderKind::OpenAi),
            ("anthropic", ProviderKind::Anthropic),
            ("gemini", ProviderKind::Gemini),
        ],
    )
}

fn strategy(v: &Value) -> Result<Strategy, String> {
    keyword(
        v,
        "strategy",
        &[
            ("fallback", Strategy::Fallback),
            ("latency", Strategy::Latency),
        ],
    )
}

fn continuation(v: &Value) -> Result<Continuation, String> {
    keyword(
        v,
        "continuation",
        &[
            ("prefill", Continuation::Prefill),
            ("regenerate", Continuation::Regenerate),
        ],
    )
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// One JSON object being read field by field. Keys never read are reported
/// as unknown by [`Obj::finish`].
struct Obj<'v> {
    path: String,
    map: Option<&'v Map<String, Value>>,
    read: Vec<&'static str>,
}

impl<'v> Obj<'v> {
    fn new(cx: &mut Cx, v: &'v Value, path: String) -> Self {
        let map = v.as_object();
        if map.is_none() {
            cx.fail(
                path.clone(),
                format!("expected an object, found {}", found(v)),
            );
        }
        Obj {
            path,
            map,
            read: Vec::new(),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<(&'v Value, String)> {
        self.read.push(key);
        let v = self.map?.get(key)?;
        Some((v, join(&self.path, key)))
    }

    fn parse<T>(cx: &mut Cx, v: &Value, path: String, parse: Parse<T>) -> Option<T> {
        match parse(v) {
            Ok(t) => Some(t),
            Err(m) => {
                cx.fail(path, m);
                None
            }
        }
    }

    /// A field that must be present.
    fn required<T>(&mut self, cx: &mut Cx, key: &'static str, parse: Parse<T>) -> Option<T> {
        match self.get(key) {
            Some((v, path)) => Self::parse(cx, v, path, parse),
            None => {
                if self.map.is_some() {
                    cx.fail(join(&self.path, key), "missing required field");
                }
                None
            }
        }
    }

    /// A field with a default: `None` when absent (or invalid, reported).
    fn optional<T>(&mut self, cx: &mut Cx, key: &'static str, parse: Parse<T>) -> Option<T> {
        let (v, path) = self.get(key)?;
        Self::parse(cx, v, path, parse)
    }

    /// An `Option` field: absent and `null` both mean `None`.
    fn nullable<T>(&mut self, cx: &mut Cx, key: &'static str, parse: Parse<T>) -> Option<T> {
        let (v, path) = self.get(key)?;
        if v.is_null() {
            return None;
        }
        Self::parse(cx, v, path, parse)
    }

    /// A list field; elements are parsed by `elem` at their own paths. When
    /// an element fails, the whole list's semantic checks are skipped
    /// (indices would no longer line up), unless `elem` returns a stand-in.
    fn list<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        required: bool,
        mut elem: impl FnMut(&mut Cx, &Value, String) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some((v, path)) = self.get(key) else {
            if required && self.map.is_some() {
                cx.fail(join(&self.path, key), "missing required field");
            }
            return None;
        };
        let Value::Array(items) = v else {
            cx.fail(path, format!("expected an array, found {}", found(v)));
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut complete = true;
        for (i, item) in items.iter().enumerate() {
            match elem(cx, item, index(&path, i)) {
                Some(t) => out.push(t),
                None => complete = false,
            }
        }
        if !complete {
            cx.failed.push(path);
        }
        Some(out)
    }

    /// A map field of named entries, each parsed by `entry`.
    fn entries<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        required: bool,
        mut entry: impl FnMut(&mut Cx, &str, &Value, String) -> T,
    ) -> Option<BTreeMap<String, T>> {
        let Some((v, path)) = self.get(key) else {
            if required && self.map.is_some() {
                cx.fail(join(&self.path, key), "missing required field");
            }
            return None;
        };
        let Value::Object(map) = v else {
            cx.fail(path, format!("expected an object, found {}", found(v)));
            return None;
        };
        Some(
            map.iter()
                .map(|(name, v)| (name.clone(), entry(cx, name, v, join(&path, name))))
                .collect(),
        )
    }

    /// Reports every key that was never read; returns the fields read, in order.
    fn finish(self, cx: &mut Cx) -> Vec<&'static str> {
        let Some(map) = self.map else {
            return self.read;
        };
        for key in map.keys() {
            if self.read.contains(&key.as_str()) {
                continue;
            }
            let near = self
                .read
                .iter()
                .map(|k| (distance(key, k), *k))
                .filter(|(d, k)| {
                    *d <= 2.max(k.len() / 4)
                        || (key.len() >= 4 && (k.starts_with(key.as_str()) || key.starts_with(k)))
                })
                .min();
            let message = match near {
                Some((_, k)) => format!("unknown field; did you mean \"{k}\"?"),
                None => format!("unknown field; expected one of: {}", self.read.join(", ")),
            };
            cx.problem(join(&self.path, key), message);
        }
        self.read
    }
}

fn parse_provider(cx: &mut Cx, name: &str, v: &Value, path: String) -> ProviderConfig {
    let start = cx.problems.len();
    let mut o = Obj::new(cx, v, path.clone());
    let p = ProviderConfig {
        kind: o.required(cx, "kind", kind).unwrap_or(ProviderKind::OpenAi),
        base_url: o.required(cx, "base_url", string).unwrap_or_default(),
        api_key_env: o.nullable(cx, "api_key_env", string),
        api_key: o.nullable(cx, "api_key", string),
        http2: o.optional(cx, "http2", boolean).unwrap_or(false),
        http2_max_streams: o
            .optional(cx, "http2_max_streams", uint::<u32>)
            .unwrap_or(crate::provider::DEFAULT_HTTP2_MAX_STREAMS),
        headers: string_map(cx, &mut o, "headers"),
        headers_env: string_map(cx, &mut o, "headers_env"),
    };
    let fields = o.finish(cx);
    cx.check(|s| validate::provider(s, &path, name, &p));
    cx.order(start, &path, &fields);
    p
}

/// An object of strings by name (a provider's `headers`); absent is empty.
fn string_map(cx: &mut Cx, o: &mut Obj<'_>, key: &'static str) -> BTreeMap<String, String> {
    o.entries(cx, key, false, |cx, _, v, path| match string(v) {
        Ok(s) => s,
        Err(e) => {
            cx.fail(path, e);
            String::new()
        }
    })
    .unwrap_or_default()
}

fn parse_client(cx: &mut Cx, name: &str, v: &Value, path: String) -> ClientConfig {
    let start = cx.problems.len();
    let mut o = Obj::new(cx, v, path.clone());
    let c = ClientConfig {
        key_sha256: o.nullable(cx, "key_sha256", string),
        key_env: o.nullable(cx, "key_env", string),
    };
    let fields = o.finish(cx);
    cx.check(|s| validate::client(s, &path, name, &c));
    cx.order(start, &path, &fields);
    c
}

fn parse_price(cx: &mut Cx, o: &mut Obj<'_>) -> Option<Price> {
    let (v, path) = o.get("price")?;
    if v.is_null() {
        return None;
    }
    let mut p = Obj::new(cx, v, path);
    let price = Price {
        input_per_mtok: p.required(cx, "input_per_mtok", number).unwrap_or(0.0),
        output_per_mtok: p.required(cx, "output_per_mtok", number).unwrap_or(0.0),
        cached_input_per_mtok: p.nullable(cx, "cached_input_per_mtok", number),
        cache_write_per_mtok: p.nullable(cx, "cache_write_per_mtok", number),
    };
    p.finish(cx);
    Some(price)
}

fn parse_model(
    cx: &mut Cx,
    name: &str,
    v: &Value,
    path: String,
    providers: Names<'_>,
) -> ModelConfig {
    let start = cx.problems.len();
    let mut o = Obj::new(cx, v, path.clone());
    let m = ModelConfig {
        provider: o.required(cx, "provider", string).unwrap_or_default(),
        upstream_model: o.nullable(cx, "upstream_model", string),
        prefill: o.optional(cx, "prefill", boolean).unwrap_or(false),
        price: parse_price(cx, &mut o),
        timeout_ms: o
            .optional(cx, "timeout_ms", uint::<u64>)
            .unwrap_or(DEFAULT_TIMEOUT_MS),
        max_output_tokens: o.nullable(cx, "max_output_tokens", uint::<u32>),
    };
    let fields = o.finish(cx);
    cx.check(|s| validate::model(s, &path, name, &m, providers));
    cx.order(start, &path, &fields);
    m
}

fn parse_attempt(cx: &mut Cx, v: &Value, path: String) -> AttemptConfig {
    let mut o = Obj::new(cx, v, path);
    let a = AttemptConfig {
        model: o.required(cx, "model", string).unwrap_or_default(),
        timeout_ms: o
            .optional(cx, "timeout_ms", uint::<u64>)
            .unwrap_or(DEFAULT_TIMEOUT_MS),
    };
    o.finish(cx);
    a
}

fn parse_route(cx: &mut Cx, name: &str, v: &Value, path: String, models: Names<'_>) -> RouteConfig {
    let d = RouteConfig::default();
    let start = cx.problems.len();
    let mut o = Obj::new(cx, v, path.clone());
    let strategy = o.optional(cx, "strategy", strategy).unwrap_or(d.strategy);
    let attempts = o
        .list(cx, "attempts", true, |cx, v, p| {
            Some(parse_attempt(cx, v, p))
        })
        .unwrap_or_default();
    let r = RouteConfig {
        strategy,
        attempts,
        retry_on: o
            .list(cx, "retry_on", false, |cx, v, p| {
                // A stand-in keeps later indices aligned; its path is skipped.
                Some(Obj::parse(cx, v, p, string).unwrap_or_default())
            })
            .unwrap_or(d.retry_on),
        total_budget_ms: o
            .optional(cx, "total_budget_ms", uint)
            .unwrap_or(d.total_budget_ms),
        same_target_retries: o
            .optional(cx, "same_target_retries", uint)
            .unwrap_or(d.same_target_retries),
        backoff_base_ms: o
            .optional(cx, "backoff_base_ms", uint)
            .unwrap_or(d.backoff_base_ms),
        backoff_max_ms: o
            .optional(cx, "backoff_max_ms", uint)
            .unwrap_or(d.backoff_max_ms),
        retry_after_cap_ms: o
            .optional(cx, "retry_after_cap_ms", uint)
            .unwrap_or(d.retry_after_cap_ms),
        stream_idle_timeout_ms: o
            .optional(cx, "stream_idle_timeout_ms", uint)
            .unwrap_or(d.stream_idle_timeout_ms),
        stream_max_ms: o
            .optional(cx, "stream_max_ms", uint)
            .unwrap_or(d.stream_max_ms),
        continuation: o
            .list(cx, "continuation", false, |cx, v, p| {
                Obj::parse(cx, v, p, continuation)
            })
            .unwrap_or(d.continuation),
        regenerate_max_chars: o
            .optional(cx, "regenerate_max_chars", uint)
            .unwrap_or(d.regenerate_max_chars),
    };
    let fields = o.finish(cx);
    cx.check(|s| validate::route(s, &path, name, &r, models));
    cx.order(start, &path, &fields);
    r
}

/// Reads an optional settings section onto its defaults.
macro_rules! section {
    ($cx:expr, $top:expr, $key:literal, $ty:ty, $check:path, { $($field:ident: $parse:expr),* $(,)? }) => {{
        let mut s = <$ty>::default();
        if let Some((v, path)) = $top.get($key) {
            let start = $cx.problems.len();
            let mut o = Obj::new($cx, v, path.clone());
            $(
                if let Some(x) = o.optional($cx, stringify!($field), $parse) {
                    s.$field = x;
                }
            )*
            let fields = o.finish($cx);
            $cx.check(|sink| $check(sink, &path, &s));
            $cx.order(start, &path, &fields);
        }
        s
    }};
}

/// Parses and validates a whole config document.
pub(crate) fn config(root: &Value) -> Result<Config, Vec<Problem>> {
    let mut cx = Cx::default();
    let mut top = Obj::new(&mut cx, root, "$".to_owned());

    let names = |key: &str| -> Option<BTreeSet<&str>> {
        Some(
            root.get(key)?
                .as_object()?
                .keys()
                .map(String::as_str)
                .collect(),
        )
    };
    let provider_names = names("providers");
    let model_names = names("models");

    let providers = top
        .entries(&mut cx, "providers", true, parse_provider)
        .unwrap_or_default();
    let models = top
        .entries(&mut cx, "models", true, |cx, name, v, path| {
            parse_model(cx, name, v, path, provider_names.as_ref())
        })
        .unwrap_or_default();
    if top.map.is_some() && model_names.as_ref().is_some_and(BTreeSet::is_empty) {
        cx.problem("$.models".to_owned(), "must define at least one model");
    }
    let routes = top
        .entries(&mut cx, "routes", false, |cx, name, v, path| {
            parse_route(cx, name, v, path, model_names.as_ref())
        })
        .unwrap_or_default();

    let health = section!(&mut cx, top, "health", HealthSettings, validate::health, {
        window_ms: uint,
        consecutive_failures: uint,
        failure_rate: number,
        min_requests: uint,
        cooldown_base_ms: uint,
        cooldown_max_ms: uint,
        probes: uint,
        slow_start_ms: uint,
    });
    let latency = section!(&mut cx, top, "latency", LatencySettings, validate::latency, {
        window_ms: uint,
        min_samples: uint,
        explore: number,
        max_samples: uint,
    });
    let retry_budget = section!(&mut cx, top, "retry_budget", RetryBudgetSettings, validate::retry_budget, {
        ttl_ms: uint,
        min_per_sec: uint,
        retry_percent: number,
    });
    let server = section!(&mut cx, top, "server", ServerSettings, validate::server, {
        max_body_bytes: uint,
        shutdown_grace_ms: uint,
        max_connections: uint,
        max_in_flight: uint,
        max_body_bytes_in_flight: uint,
        idle_timeout_ms: uint,
    });
    let traces = section!(&mut cx, top, "traces", TraceSettings, validate::traces, {
        capacity: uint,
    });
    let traffic = section!(&mut cx, top, "traffic", TrafficSettings, validate::traffic, {
        enabled: boolean,
        retention_hours: uint,
        max_records: uint,
        queue: uint,
    });
    let clients = top
        .entries(&mut cx, "clients", false, parse_client)
        .unwrap_or_default();
    top.finish(&mut cx);

    if cx.problems.is_empty() {
        Ok(Config {
            providers,
            models,
            routes,
            health,
            latency,
            retry_budget,
            server,
            traces,
            traffic,
            clients,
        })
    } else {
        Err(cx.problems)
    }
}
