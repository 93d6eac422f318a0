//! Unit tests: the serde derives of the entry structs agree with the
//! field-by-field parser, and defaults agree with the runtime defaults.

use serde_json::{json, Value};

use super::*;
use crate::route::RoutePolicy;

/// Parses `entry` both ways: as the named entry of a minimal config through
/// the validating parser, and through the plain serde derive.
fn both_ways<T>(section: &str, entry: Value, pick: impl Fn(&Config) -> T) -> (T, T)
where
    T: serde::de::DeserializeOwned,
{
    let mut doc = json!({
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:1"}},
        "models": {"m": {"provider": "p"}},
        "routes": {}
    });
    doc[section]["x"] = entry.clone();
    let config = Config::from_value(doc).unwrap();
    (pick(&config), serde_json::from_value(entry).unwrap())
}

#[test]
fn derives_agree_with_the_parser() {
    for entry in [
        json!({"kind": "anthropic", "base_url": "https://api.anthropic.com"}),
        json!({"kind": "gemini", "base_url": "https://g.example", "api_key_env": "K"}),
        json!({"kind": "openai", "base_url": "https://o.example", "api_key": "k", "api_key_env": null}),
        json!({"kind": "openai", "base_url": "https://o.example", "http2": true}),
        json!({"kind": "openai", "base_url": "https://o.example", "http2": true, "http2_max_streams": 250}),
    ] {
        let (a, b) = both_ways("providers", entry, |c| c.providers["x"].clone());
        assert_eq!(a, b);
    }
    for entry in [
        json!({"provider": "p"}),
        json!({"provider": "p", "upstream_model": "u", "prefill": true, "timeout_ms": 5,
               "price": {"input_per_mtok": 0.5, "output_per_mtok": 1.5}}),
        json!({"provider": "p", "upstream_model": null, "price": null}),
    ] {
        let (a, b) = both_ways("models", entry, |c| c.models["x"].clone());
        assert_eq!(a, b);
    }
    for entry in [
        json!({"attempts": [{"model": "m"}]}),
        json!({"strategy": "latency", "attempts": [{"model": "m", "timeout_ms": 7}],
               "retry_on": ["500"], "total_budget_ms": 9, "same_target_retries": 0,
               "backoff_base_ms": 1, "backoff_max_ms": 2, "retry_after_cap_ms": 3,
               "stream_idle_timeout_ms": 4, "continuation": ["regenerate"],
               "regenerate_max_chars": 5}),
    ] {
        let (a, b) = both_ways("routes", entry, |c| c.routes["x"].clone());
        assert_eq!(a, b);
    }
}

#[test]
fn sections_agree_with_the_parser() {
    let doc = json!({
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:1"}},
        "models": {"m": {"provider": "p"}},
        "health": {"window_ms": 1, "consecutive_failures": 2, "failure_rate": 0.3,
                   "min_requests": 4, "cooldown_base_ms": 5, "cooldown_max_ms": 6, "probes": 7},
        "latency": {"window_ms": 1, "min_samples": 2, "explore": 0.3, "max_samples": 4},
        "retry_budget": {"ttl_ms": 1000, "min_per_sec": 2, "retry_percent": 3.0},
        "server": {"max_body_bytes": 1, "shutdown_grace_ms": 2, "max_connections": 3,
                   "max_in_flight": 4, "idle_timeout_ms": 500},
        "traces": {"capacity": 3}
    });
    let c = Config::from_value(doc.clone()).unwrap();
    assert_eq!(
        c.health,
        serde_json::from_value(doc["health"].clone()).unwrap()
    );
    assert_eq!(
        c.latency,
        serde_json::from_value(doc["latency"].clone()).unwrap()
    );
    assert_eq!(
        c.retry_budget,
        serde_json::from_value(doc["retry_budget"].clone()).unwrap()
    );
    assert_eq!(
        c.server,
        serde_json::from_value(doc["server"].clone()).unwrap()
    );
    assert_eq!(
        c.traces,
        serde_json::from_value(doc["traces"].clone()).unwrap()
    );
    // Empty sections are their defaults, both ways.
    assert_eq!(
        serde_json::from_value::<HealthSettings>(json!({})).unwrap(),
        HealthSettings::default()
    );
}

#[test]
fn derives_reject_unknown_fields() {
    assert!(serde_json::from_value::<ModelConfig>(json!({"provider": "p", "x": 1})).is_err());
    assert!(serde_json::from_value::<ModelConfig>(
        json!({"provider": "p", "price": {"input_per_mtok": 1, "output_per_mtok": 1, "x": 1}})
    )
    .is_err());
    assert!(serde_json::from_value::<AttemptConfig>(json!({"model": "m", "x": 1})).is_err());
    assert!(serde_json::from_value::<TraceSettings>(json!({"x": 1})).is_err());
    assert!(serde_json::from_value::<RouteConfig>(json!({"attempts": [], "x": 1})).is_err());
}

#[test]
fn route_defaults_are_the_runtime_defaults() {
    let r = RouteConfig::default();
    let p = RoutePolicy::default();
    assert_eq!(r.total_budget_ms as u128, p.total_budget.as_millis());
    assert_eq!(r.same_target_retries, p.same_target_retries);
    assert_eq!(r.backoff_base_ms as u128, p.backoff_base.as_millis());
    assert_eq!(r.backoff_max_ms as u128, p.backoff_max.as_millis());
    assert_eq!(r.retry_after_cap_ms as u128, p.retry_after_cap.as_millis());
    assert_eq!(
        r.stream_idle_timeout_ms as u128,
        p.stream_idle_timeout.as_millis()
    );
    assert_eq!(r.continuation, p.continuation);
    assert_eq!(r.regenerate_max_chars, p.regenerate_max_chars);
    assert_eq!(
        crate::route::RetryOn::parse(&r.retry_on).unwrap(),
        p.retry_on
    );
}

#[test]
fn settings_defaults_are_documented_values() {
    assert_eq!(
        HealthSettings::default(),
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
    );
    assert_eq!(ServerSettings::default().max_body_bytes, 4_194_304);
    let c = Config::default();
    assert!(validate::config(&c).iter().all(|p| p.path == "$.models"));
}

#[test]
fn default_sections_are_valid() {
    let c = Config::from_value(json!({
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:1"}},
        "models": {"m": {"provider": "p"}},
        "health": {}, "latency": {}, "retry_budget": {}, "server": {}, "traces": {}
    }))
    .unwrap();
    assert!(c.validate().is_ok());
}

#[test]
fn unknown_field_hints() {
    let err = Config::from_value(json!({
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:1"}},
        "models": {"m": {"provider": "p", "timeout": 5}},
        "rotues": {}
    }))
    .unwrap_err();
    assert_eq!(err.problems[0].path, "$.models.m.timeout");
    assert_eq!(
        err.problems[0].message,
        "unknown field; did you mean \"timeout_ms\"?"
    );
    assert_eq!(err.problems[1].path, "$.rotues");
    assert_eq!(
        err.problems[1].message,
        "unknown field; did you mean \"routes\"?"
    );
}

#[test]
fn http2_max_streams_defaults_to_the_client_default_and_must_be_positive() {
    let doc =
        |p: Value| json!({"providers": {"p": p}, "models": {"m": {"provider": "p"}}, "routes": {}});
    let c = Config::from_value(doc(
        json!({"kind": "openai", "base_url": "http://h:1", "http2": true}),
    ))
    .unwrap();
    assert_eq!(
        c.providers["p"].http2_max_streams,
        crate::provider::DEFAULT_HTTP2_MAX_STREAMS
    );
    for (bad, says) in [
        (json!(0), "must be at least 1"),
        (json!(-3), "must not be negative"),
        (json!("100"), "expected a whole number"),
        (json!(5_000_000_000u64), "is too large"),
    ] {
        let p = json!({"kind": "openai", "base_url": "http://h:1", "http2": true, "http2_max_streams": bad});
        let err = Config::from_value(doc(p)).unwrap_err().to_string();
        assert!(
            err.contains("$.providers.p.http2_max_streams") && err.contains(says),
            "{err}"
        );
    }
}

/// Settings a target's windows could never honour are refused: a
/// `min_requests` above the attempts the health window keeps would silently
/// turn off ejection by failure rate, and latency samples are bounded.
#[test]
fn window_sizes_are_bounded() {
    let doc = |section: &str, v: Value| {
        json!({"providers": {"p": {"kind": "openai", "base_url": "http://h:1"}},
               "models": {"m": {"provider": "p"}}, "routes": {}, section: v})
    };
    for (section, v, path, says) in [
        (
            "health",
            json!({"min_requests": 1025}),
            "$.health.min_requests",
            "must be at most 1024",
        ),
        (
            "latency",
            json!({"max_samples": 100_000}),
            "$.latency.max_samples",
            "must be at most 16384",
        ),
    ] {
        let err = Config::from_value(doc(section, v)).unwrap_err().to_string();
        assert!(err.contains(path) && err.contains(says), "{err}");
    }
    for (section, v) in [
        ("health", json!({"min_requests": 1024})),
        ("latency", json!({"max_samples": 16_384})),
    ] {
        Config::from_value(doc(section, v)).unwrap();
    }
}

/// Anthropic returns one choice: its targets say so, so a request for
/// several skips them.
#[test]
fn anthropic_targets_return_one_choice() {
    let config = Config::from_value(json!({
        "providers": {"an": {"kind": "anthropic", "base_url": "http://h:1"},
                      "oa": {"kind": "openai", "base_url": "http://h:2"},
                      "ge": {"kind": "gemini", "base_url": "http://h:3"}},
        "models": {"c": {"provider": "an"}, "g": {"provider": "oa"}, "f": {"provider": "ge"}},
        "routes": {"r": {"attempts": [{"model": "c"}, {"model": "g"}, {"model": "f"}]}}
    }))
    .unwrap();
    let compiled = config
        .compile(crate::provider::http_client(), &|_| None)
        .unwrap();
    let route = compiled.resolve("r").unwrap();
    let flags: Vec<bool> = route
        .candidates
        .iter()
        .map(|c| c.target.multiple_choices)
        .collect();
    assert_eq!(flags, [false, true, true]);
}

/// A model's `max_output_tokens` reaches its target; 0 is refused.
#[test]
fn a_model_s_output_limit_reaches_its_target() {
    let config = |limit: Value| {
        Config::from_value(json!({
            "providers": {"an": {"kind": "anthropic", "base_url": "http://h:1"}},
            "models": {"c": {"provider": "an", "max_output_tokens": limit}, "d": {"provider": "an"}},
        }))
    };
    let compiled = config(json!(64000))
        .unwrap()
        .compile(crate::provider::http_client(), &|_| None)
        .unwrap();
    let limit = |m: &str| {
        compiled.resolve(m).unwrap().candidates[0]
            .target
            .max_output_tokens
    };
    assert_eq!(limit("c"), Some(64000));
    assert_eq!(limit("d"), None);
    let err = config(json!(0)).unwrap_err();
    assert_eq!(err.problems[0].path, "$.models.c.max_output_tokens");
    assert!(config(json!(-1)).is_err());
    assert!(config(json!("64000")).is_err());
}

/// A key that cannot be sent in a header is refused when the config is read
/// (it made every request to its provider fail, blamed on the client), and
/// the problem never quotes it.
#[test]
fn a_key_that_cannot_be_sent_is_refused() {
    let config = |provider: Value| {
        Config::from_value(json!({
            "providers": {"oa": provider},
            "models": {"m": {"provider": "oa"}},
        }))
    };
    for key in ["sk-LEAK\n", "sk-LEAK\u{1}x", "sk LEAK", "sk-LEAKé"] {
        let err = config(json!({"kind": "openai", "base_url": "http://h:1/v1", "api_key": key}))
            .unwrap_err();
        assert_eq!(err.problems[0].path, "$.providers.oa.api_key", "{key:?}");
        assert!(!err.to_string().contains("LEAK"));
    }
    let c =
        config(json!({"kind": "openai", "base_url": "http://h:1/v1", "api_key_env": "K"})).unwrap();
    let err = c
        .compile(crate::provider::http_client(), &|_| {
            Some("sk-LEAK\u{7}x\n".into())
        })
        .unwrap_err();
    assert_eq!(err.problems[0].path, "$.providers.oa.api_key_env");
    assert!(!err.to_string().contains("LEAK"));
    // Surrounding whitespace (a trailing newline from a file) is trimmed.
    assert!(c
        .compile(crate::provider::http_client(), &|_| Some(
            " sk-ok-123\n".into()
        ))
        .is_ok());
}

/// The cache prices are optional, and checked as the others.
#[test]
fn cache_prices_are_optional_and_checked() {
    let config = |price: Value| {
        Config::from_value(json!({
            "providers": {"an": {"kind": "anthropic", "base_url": "http://h:1"}},
            "models": {"c": {"provider": "an", "price": price}},
        }))
    };
    let c = config(json!({"input_per_mtok": 3, "output_per_mtok": 15,
                          "cached_input_per_mtok": 0.3, "cache_write_per_mtok": 3.75}))
    .unwrap();
    let p = c.models["c"].price.unwrap();
    assert_eq!(
        (p.cached_input_per_mtok, p.cache_write_per_mtok),
        (Some(0.3), Some(3.75))
    );
    assert_eq!(
        config(json!({"input_per_mtok": 3, "output_per_mtok": 15}))
            .unwrap()
            .models["c"]
            .price
            .unwrap()
            .cached_input_per_mtok,
        None
    );
    let err =
        config(json!({"input_per_mtok": 3, "output_per_mtok": 15, "cached_input_per_mtok": -1}))
            .unwrap_err();
    assert_eq!(
        err.problems[0].path,
        "$.models.c.price.cached_input_per_mtok"
    );
    assert!(config(json!({"input_per_mtok": 3, "output_per_mtok": 15, "cache_read": 1})).is_err());
}

/// A provider's extra headers: names checked, the adapter's own refused,
/// literal values sendable, `headers_env` naming variables read at compile
/// (never quoted when wrong).
#[test]
fn extra_headers_are_checked_and_read_from_the_environment() {
    let config = |provider: Value| {
        Config::from_value(json!({
            "providers": {"oa": provider},
            "models": {"m": {"provider": "oa"}},
        }))
    };
    let base = json!({"kind": "openai", "base_url": "http://h:1/v1"});
    let with = |field: &str, v: Value| {
        let mut p = base.clone();
        p[field] = v;
        p
    };
    for (field, headers, path, needle) in [
        (
            "headers",
            json!({"Authorization": "Bearer x"}),
            "$.providers.oa.headers.Authorization",
            "set by the gateway",
        ),
        (
            "headers",
            json!({"anthropic-version": "2099-01-01"}),
            "$.providers.oa.headers.anthropic-version",
            "set by the gateway",
        ),
        (
            "headers",
            json!({"bad name": "v"}),
            "$.providers.oa.headers[\"bad name\"]",
            "not a valid header name",
        ),
        (
            "headers",
            json!({"x-a": "line\nbreak"}),
            "$.providers.oa.headers.x-a",
            "printable ASCII",
        ),
        (
            "headers",
            json!({"x-a": 3}),
            "$.providers.oa.headers.x-a",
            "expected a string",
        ),
        (
            "headers",
            json!({"Helicone-Auth": "Bearer LEAK-123"}),
            "$.providers.oa.headers.Helicone-Auth",
            "looks like a credential",
        ),
        (
            "headers",
            json!({"x-title": "sk-LEAKLEAKLEAK"}),
            "$.providers.oa.headers.x-title",
            "looks like a credential",
        ),
        (
            "headers_env",
            json!({"x-gw-auth": "sk-LEAKLEAKLEAKLEAK"}),
            "$.providers.oa.headers_env.x-gw-auth",
            "looks like a secret",
        ),
        (
            "headers_env",
            json!({"x-gw-auth": "1VAR"}),
            "$.providers.oa.headers_env.x-gw-auth",
            "environment variable name",
        ),
    ] {
        let err = config(with(field, headers.clone())).unwrap_err();
        assert_eq!(err.problems[0].path, path, "{headers}: {err}");
        assert!(err.problems[0].message.contains(needle), "{headers}: {err}");
        assert!(!err.to_string().contains("LEAK"));
    }
    // A long feature list is not a credential.
    config(with(
        "headers",
        json!({"anthropic-beta": "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"}),
    ))
    .unwrap();
    let err = config(with("headers", json!({"x-upstream": "Basic dXNlcjpwdw=="}))).unwrap_err();
    assert!(
        err.problems[0].message.contains("looks like a credential"),
        "{err}"
    );
    // The same name twice, across the two maps and in another case.
    let mut p = with("headers", json!({"X-Title": "app"}));
    p["headers_env"] = json!({"x-title": "TITLE"});
    let err = config(p).unwrap_err();
    assert_eq!(err.problems[0].path, "$.providers.oa.headers_env.x-title");
    assert!(err.problems[0].message.contains("twice"));
    // Too many.
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let err = config(with("headers", Value::Object(many))).unwrap_err();
    assert!(err.problems[0].message.contains("at most 32"), "{err}");

    let mut p = with("headers", json!({"OpenAI-Organization": "org-1"}));
    p["headers_env"] = json!({"x-gw-auth": "GW_AUTH"});
    let c = config(p).unwrap();
    // Round trip: serialised and parsed again, the same config.
    let again = Config::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(again.providers["oa"], c.providers["oa"]);
    let err = c
        .compile(crate::provider::http_client(), &|_| None)
        .unwrap_err();
    assert_eq!(err.problems[0].path, "$.providers.oa.headers_env.x-gw-auth");
    assert!(err.problems[0].message.contains("GW_AUTH is not set"));
    let err = c
        .compile(crate::provider::http_client(), &|_| {
            Some("LEAK\u{7}".into())
        })
        .unwrap_err();
    assert!(!err.to_string().contains("LEAK"));
    let compiled = c
        .compile(crate::provider::http_client(), &|v| {
            (v == "GW_AUTH").then(|| "Bearer gw-secret-1\n".into())
        })
        .unwrap();
    let shown = format!("{:?}", compiled.providers);
    assert!(shown.contains("openai-organization"), "{shown}");
    assert!(!shown.contains("gw-secret-1"), "{shown}");
}
