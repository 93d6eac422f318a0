//! The config module: parsing, validation with exact problem paths,
//! compilation into routes, and secret handling.
//!
//! Everything lives in `mod config` so that `cargo test --test config --lib config`
//! (which filters both targets by "config") runs every test here.

mod config {
    use std::time::Duration;

    use modelux::config::{Config, ConfigError, Problem};
    use modelux::provider::{http_client, Price, ProviderKind};
    use modelux::route::{Continuation, RetryOn, RoutePolicy, Strategy};
    use serde_json::json;

    const EXAMPLE: &str = include_str!("../examples/configs/example.json");
    const LOCAL: &str = include_str!("../examples/configs/local.json");

    /// An environment where every variable the example names is set.
    fn fake_env(var: &str) -> Option<String> {
        match var {
            "ANTHROPIC_API_KEY" => Some("sk-ant-test".into()),
            "OPENAI_API_KEY" => Some("sk-openai-test".into()),
            "GEMINI_API_KEY" => Some("gemini-test".into()),
            _ => None,
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match Config::from_json(text) {
            Ok(c) => panic!("expected problems, got {c:?}"),
            Err(e) => e.problems,
        }
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    fn message<'a>(problems: &'a [Problem], path: &str) -> &'a str {
        problems
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.message.as_str())
            .unwrap_or_else(|| panic!("no problem at {path}: {problems:#?}"))
    }

    #[test]
    fn example_parses_with_its_values_and_defaults() {
        let config = Config::from_json(EXAMPLE).unwrap();
        assert_eq!(config.providers.len(), 3);
        assert_eq!(config.providers["google"].kind, ProviderKind::Gemini);
        assert_eq!(
            config.providers["anthropic"].api_key_env.as_deref(),
            Some("ANTHROPIC_API_KEY")
        );
        let haiku = &config.models["claude-haiku-4-5"];
        assert!(haiku.prefill);
        assert_eq!(
            haiku.price,
            Some(Price {
                input_per_mtok: 1.0,
                output_per_mtok: 5.0,
                ..Price::default()
            })
        );
        assert_eq!(config.models["gemini-2.5-flash"].timeout_ms, 30_000);
        let route = &config.routes["default"];
        assert_eq!(route.strategy, Strategy::Fallback);
        assert_eq!(route.attempts[1].timeout_ms, 3000);
        assert_eq!(route.retry_on, ["429", "5xx", "timeout"]);
        assert_eq!(route.total_budget_ms, 8000);
        assert_eq!(route.same_target_retries, 1);
        assert_eq!(config.health, Default::default());
        assert_eq!(config.traces.capacity, 1024);
    }

    #[test]
    fn example_compiles_with_fake_env() {
        let config = Config::from_json(EXAMPLE).unwrap();
        let compiled = config.compile(http_client(), &fake_env).unwrap();

        assert_eq!(compiled.targets.len(), 3);
        for name in ["anthropic", "openai", "google"] {
            assert!(compiled.providers.get(name).is_some(), "{name}");
        }

        let route = &compiled.routes["default"];
        assert_eq!(&*route.name, "default");
        assert_eq!(route.strategy, Strategy::Fallback);
        let got: Vec<(String, Duration)> = route
            .candidates
            .iter()
            .map(|c| (c.target.id.to_string(), c.timeout))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "anthropic/claude-haiku-4-5".into(),
                    Duration::from_millis(2000)
                ),
                ("openai/gpt-4o-mini".into(), Duration::from_millis(3000)),
                (
                    "google/gemini-2.5-flash".into(),
                    Duration::from_millis(5000)
                ),
            ]
        );
        let haiku = &route.candidates[0].target;
        assert!(haiku.prefill);
        assert_eq!(&*haiku.upstream_model, "claude-haiku-4-5");
        assert_eq!(haiku.price.unwrap().output_per_mtok, 5.0);

        let expected = RoutePolicy {
            retry_on: RetryOn::parse(["429", "5xx", "timeout"]).unwrap(),
            total_budget: Duration::from_millis(8000),
            ..RoutePolicy::default()
        };
        assert_eq!(route.policy, expected);

        // Routes and model routes share one target per model.
        let model_route = compiled.resolve("claude-haiku-4-5").unwrap();
        assert!(std::sync::Arc::ptr_eq(
            &model_route.candidates[0].target,
            &route.candidates[0].target
        ));
    }

    #[test]
    fn local_example_compiles_without_env() {
        let config = Config::from_json(LOCAL).unwrap();
        let compiled = config.compile(http_client(), &|_| None).unwrap();
        let fastest = compiled.resolve("fastest").unwrap();
        assert_eq!(fastest.strategy, Strategy::Latency);
        assert_eq!(fastest.policy.same_target_retries, 0);
        let local = compiled.resolve("local").unwrap();
        assert_eq!(local.policy.continuation, [Continuation::Prefill]);
        assert_eq!(
            &*local.candidates[0].target.upstream_model,
            "meta-llama/Llama-3.1-8B-Instruct"
        );
        assert_eq!(config.health.consecutive_failures, 3);
        assert_eq!(config.health.probes, 1);
        assert_eq!(config.traces.capacity, 256);
    }

    #[test]
    fn resolve_route_model_and_unknown_names() {
        let compiled = Config::from_json(EXAMPLE)
            .unwrap()
            .compile(http_client(), &fake_env)
            .unwrap();

        let route = compiled.resolve("default").unwrap();
        assert_eq!(route.candidates.len(), 3);

        let model = compiled.resolve("gpt-4o-mini").unwrap();
        assert_eq!(&*model.name, "gpt-4o-mini");
        assert_eq!(model.strategy, Strategy::Fallback);
        assert_eq!(model.candidates.len(), 1);
        assert_eq!(
            model.candidates[0].target.id.to_string(),
            "openai/gpt-4o-mini"
        );
        assert_eq!(model.candidates[0].timeout, Duration::from_secs(30));
        assert_eq!(model.policy, RoutePolicy::default());

        assert!(compiled.resolve("gpt-5").is_none());
        assert!(compiled.resolve("").is_none());
        assert!(compiled.resolve("DEFAULT").is_none());

        assert_eq!(
            compiled.route_names().collect::<Vec<_>>(),
            [
                "default",
                "claude-haiku-4-5",
                "gemini-2.5-flash",
                "gpt-4o-mini"
            ]
        );
    }

    #[test]
    fn route_wins_over_model_of_the_same_name() {
        let config = Config::from_value(json!({
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "models": {
                "fast": {"provider": "p", "timeout_ms": 1000},
                "slow": {"provider": "p", "timeout_ms": 90000}
            },
            "routes": {"fast": {"attempts": [{"model": "slow"}, {"model": "fast"}]}}
        }))
        .unwrap();
        let compiled = config.compile(http_client(), &|_| None).unwrap();
        let fast = compiled.resolve("fast").unwrap();
        assert_eq!(fast.candidates.len(), 2);
        assert_eq!(&*fast.candidates[0].target.id.model, "slow");
        assert_eq!(compiled.route_names().collect::<Vec<_>>(), ["fast", "slow"]);

        // A model route's budget stretches to the model's own timeout.
        let slow = compiled.resolve("slow").unwrap();
        assert_eq!(slow.candidates[0].timeout, Duration::from_secs(90));
        assert_eq!(slow.policy.total_budget, Duration::from_secs(90));
    }

    #[test]
    fn route_defaults_compile_to_the_default_policy() {
        let config = Config::from_value(json!({
            "providers": {"p": {"kind": "anthropic", "base_url": "https://api.anthropic.com"}},
            "models": {"m": {"provider": "p"}},
            "routes": {"r": {"attempts": [{"model": "m"}]}}
        }))
        .unwrap();
        let compiled = config.compile(http_client(), &|_| None).unwrap();
        let r = compiled.resolve("r").unwrap();
        assert_eq!(r.policy, RoutePolicy::default());
        assert_eq!(r.strategy, Strategy::Fallback);
        assert_eq!(r.candidates[0].timeout, Duration::from_secs(30));
    }

    const MANY_PROBLEMS: &str = r#"{
  "providers": {
    "both": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-both-secret", "api_key_env": "OPENAI_API_KEY"},
    "badurl": {"kind": "openai", "base_url": "api.openai.com/v1"},
    "weird": {"kind": "cohere", "base_url": "https://x.example"}
  },
  "models": {
    "orphan": {"provider": "nope"},
    "ok": {"provider": "badurl", "timeout_ms": -5, "colour": "red"}
  },
  "routes": {
    "empty": {"attempts": []},
    "main": {
      "strategy": "random",
      "attempts": [
        {"model": "ok", "timeout_ms": 0},
        {"model": "ghost"},
        {"model": "orphan", "timeout_ms": -1}
      ],
      "retry_on": ["429", "teapot", 503],
      "continuation": ["prefill", "rewind"]
    }
  },
  "health": {"failure_rate": 1.5},
  "surprise": true
}"#;

    #[test]
    fn every_problem_is_reported_at_its_exact_path() {
        let problems = problems(MANY_PROBLEMS);
        assert_eq!(
            paths(&problems),
            [
                "$.providers.badurl.base_url",
                "$.providers.both.api_key",
                "$.providers.weird.kind",
                "$.models.ok.timeout_ms",
                "$.models.ok.colour",
                "$.models.orphan.provider",
                "$.routes.empty.attempts",
                "$.routes.main.strategy",
                "$.routes.main.attempts[0].timeout_ms",
                "$.routes.main.attempts[1].model",
                "$.routes.main.attempts[2].timeout_ms",
                "$.routes.main.retry_on[1]",
                "$.routes.main.retry_on[2]",
                "$.routes.main.continuation[1]",
                "$.health.failure_rate",
                "$.surprise",
            ],
            "{problems:#?}"
        );
        assert_eq!(
            message(&problems, "$.providers.badurl.base_url"),
            "must be an absolute http:// or https:// URL"
        );
        assert!(message(&problems, "$.providers.both.api_key").contains("not both"));
        assert!(message(&problems, "$.providers.weird.kind")
            .contains("unknown provider kind \"cohere\""));
        assert!(message(&problems, "$.models.ok.timeout_ms").contains("negative"));
        assert!(message(&problems, "$.models.ok.colour").starts_with("unknown field"));
        assert!(
            message(&problems, "$.models.orphan.provider").contains("unknown provider \"nope\"")
        );
        assert_eq!(
            message(&problems, "$.routes.empty.attempts"),
            "must list at least one attempt"
        );
        assert!(
            message(&problems, "$.routes.main.strategy").contains("unknown strategy \"random\"")
        );
        assert!(message(&problems, "$.routes.main.retry_on[2]").contains("expected a string"));
        assert!(message(&problems, "$.routes.main.continuation[1]").contains("\"rewind\""));
        assert!(
            message(&problems, "$.routes.main.attempts[0].timeout_ms").contains("greater than 0")
        );
        assert!(message(&problems, "$.routes.main.attempts[1].model")
            .contains("unknown model \"ghost\""));
        assert!(message(&problems, "$.routes.main.attempts[2].timeout_ms").contains("negative"));
        assert!(message(&problems, "$.routes.main.retry_on[1]").contains("\"teapot\""));
        assert!(message(&problems, "$.health.failure_rate").contains("between 0 and 1"));
        assert!(message(&problems, "$.surprise").starts_with("unknown field"));

        let err = Config::from_json(MANY_PROBLEMS).unwrap_err();
        let text = err.to_string();
        assert_eq!(text.lines().count(), problems.len());
        assert!(!text.contains("sk-both-secret"));
    }

    #[test]
    fn problem_order_is_deterministic() {
        let a = problems(MANY_PROBLEMS);
        for _ in 0..5 {
            assert_eq!(problems(MANY_PROBLEMS), a);
        }
    }

    #[test]
    fn syntax_error_is_one_problem_at_the_root_with_its_line() {
        let text = "{\n  \"providers\": {},\n  \"models\": {\"m\": {\"provider\": \"p\",}}\n}";
        let problems = problems(text);
        assert_eq!(paths(&problems), ["$"]);
        assert!(
            problems[0].message.contains("line 3"),
            "{}",
            problems[0].message
        );
        assert!(problems[0].message.contains("column"));

        for text in ["", "{", "nul", "{\"a\": 1,}"] {
            assert_eq!(paths(&self::problems(text)), ["$"], "{text:?}");
        }
    }

    #[test]
    fn structural_problems_point_at_fields() {
        let problems = problems(
            r#"{
        "providers": {"p": {"kind": 7, "base_url": ["x"], "api_key": 12345}, "q": "nope"},
        "models": {"m": {"upstream_model": 3, "prefill": "yes", "price": {"input_per_mtok": "1", "output": 2}}},
        "routes": {"r": {"attempts": {"model": "m"}}, "s": {"attempts": ["m"], "total_budget_ms": 1.5}},
        "latency": [],
        "traces": {"capacity": 0}
    }"#,
        );
        assert_eq!(
            paths(&problems),
            [
                "$.providers.p.kind",
                "$.providers.p.base_url",
                "$.providers.p.api_key",
                "$.providers.q",
                "$.models.m.provider",
                "$.models.m.upstream_model",
                "$.models.m.prefill",
                "$.models.m.price.input_per_mtok",
                "$.models.m.price.output_per_mtok",
                "$.models.m.price.output",
                "$.routes.r.attempts",
                "$.routes.s.attempts[0]",
                "$.routes.s.total_budget_ms",
                "$.latency",
                "$.traces.capacity",
            ],
            "{problems:#?}"
        );
        assert_eq!(
            message(&problems, "$.models.m.provider"),
            "missing required field"
        );
        assert_eq!(
            message(&problems, "$.providers.q"),
            "expected an object, found a string"
        );
        // A wrongly typed key is described, never echoed.
        assert!(!message(&problems, "$.providers.p.api_key").contains("12345"));
        assert!(message(&problems, "$.models.m.price.output")
            .contains("did you mean \"output_per_mtok\""));
        assert!(message(&problems, "$.traces.capacity").contains("between 1 and 100000"));
    }

    #[test]
    fn top_level_shape_problems() {
        assert_eq!(
            paths(&problems("[]")),
            ["$"],
            "a document that is not an object"
        );
        assert_eq!(
            paths(&problems("{}")),
            ["$.providers", "$.models"],
            "both required sections missing"
        );
        assert_eq!(
            paths(&problems(r#"{"providers": {}, "models": {}}"#)),
            ["$.models"]
        );
        let p = problems(r#"{"providers": [], "models": {"m": {"provider": "p"}}}"#);
        // A broken providers section does not make every model's provider unknown.
        assert_eq!(paths(&p), ["$.providers"]);
    }

    #[test]
    fn names_with_dots_are_quoted_in_paths() {
        let problems = problems(
            r#"{
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:8000"}},
        "models": {"gemini-2.5-flash": {"provider": "nope"}},
        "routes": {"a b": {"attempts": [{"model": "x"}]}}
    }"#,
        );
        assert_eq!(
            paths(&problems),
            [
                "$.models[\"gemini-2.5-flash\"].provider",
                "$.routes[\"a b\"].attempts[0].model",
            ]
        );
    }

    /// A byte bound on bodies in flight below the largest body would
    /// refuse every body of that size, forever: the config says so.
    #[test]
    fn body_bytes_in_flight_below_the_largest_body_is_refused() {
        let problems = problems(
            r#"{
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:8000"}},
        "models": {"m": {"provider": "p"}},
        "routes": {"r": {"attempts": [{"model": "m"}]}},
        "server": {"max_body_bytes": 1000, "max_body_bytes_in_flight": 999}
    }"#,
        );
        assert_eq!(paths(&problems), ["$.server.max_body_bytes_in_flight"]);
        assert!(
            problems[0]
                .message
                .contains("at least max_body_bytes (1000)"),
            "{problems:?}"
        );
    }

    #[test]
    fn range_problems_in_sections_and_routes() {
        let problems = problems(
            r#"{
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:8000"}},
        "models": {"m": {"provider": "p", "price": {"input_per_mtok": -1, "output_per_mtok": 0}}},
        "routes": {"r": {
            "attempts": [{"model": "m", "timeout_ms": 86400001}],
            "total_budget_ms": 0,
            "same_target_retries": 11,
            "backoff_base_ms": 500, "backoff_max_ms": 100,
            "stream_idle_timeout_ms": 0,
            "continuation": ["regenerate", "regenerate"]
        }},
        "health": {"cooldown_base_ms": 10000, "cooldown_max_ms": 5000, "probes": 0, "consecutive_failures": 0, "min_requests": 0, "window_ms": 0},
        "latency": {"explore": -0.1, "min_samples": 10, "max_samples": 5},
        "retry_budget": {"ttl_ms": 500, "retry_percent": 2000},
        "server": {"max_body_bytes": 0, "max_connections": 0, "max_in_flight": 1000001, "idle_timeout_ms": 99,
                   "max_body_bytes_in_flight": 0},
        "traces": {"capacity": 100001}
    }"#,
        );
        assert_eq!(
            paths(&problems),
            [
                "$.models.m.price.input_per_mtok",
                "$.routes.r.attempts[0].timeout_ms",
                "$.routes.r.total_budget_ms",
                "$.routes.r.same_target_retries",
                "$.routes.r.backoff_max_ms",
                "$.routes.r.stream_idle_timeout_ms",
                "$.routes.r.continuation[1]",
                "$.health.window_ms",
                "$.health.consecutive_failures",
                "$.health.min_requests",
                "$.health.cooldown_max_ms",
                "$.health.probes",
                "$.latency.explore",
                "$.latency.max_samples",
                "$.retry_budget.ttl_ms",
                "$.retry_budget.retry_percent",
                "$.server.max_body_bytes",
                "$.server.max_connections",
                "$.server.max_in_flight",
                "$.server.max_body_bytes_in_flight",
                "$.server.idle_timeout_ms",
                "$.traces.capacity",
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn retry_on_accepts_every_token_kind() {
        let config = Config::from_value(json!({
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:8000"}},
        "models": {"m": {"provider": "p"}},
        "routes": {
            "r": {"attempts": [{"model": "m"}], "retry_on": ["429", "5xx", "timeout", "connect", "408", "599"]},
            "none": {"attempts": [{"model": "m"}], "retry_on": [], "continuation": []}
        }
    }))
    .unwrap();
        let compiled = config.compile(http_client(), &|_| None).unwrap();
        assert_eq!(
            compiled.resolve("none").unwrap().policy.retry_on,
            RetryOn::parse(Vec::<String>::new()).unwrap()
        );
        assert!(compiled
            .resolve("none")
            .unwrap()
            .policy
            .continuation
            .is_empty());

        let problems = problems(
            r#"{
        "providers": {"p": {"kind": "openai", "base_url": "http://localhost:8000"}},
        "models": {"m": {"provider": "p"}},
        "routes": {"r": {"attempts": [{"model": "m"}], "retry_on": ["399", "600", "4xx", "TIMEOUT"]}}
    }"#,
        );
        assert_eq!(
            paths(&problems),
            [
                "$.routes.r.retry_on[0]",
                "$.routes.r.retry_on[1]",
                "$.routes.r.retry_on[2]",
                "$.routes.r.retry_on[3]",
            ]
        );
    }

    #[test]
    fn url_problems() {
        for (url, ok) in [
            ("https://api.openai.com/v1", true),
            ("http://127.0.0.1:8000/v1/", true),
            ("http://[::1]:8000", true),
            ("ftp://example.com", false),
            ("example.com", false),
            ("/v1", false),
            ("https://", false),
            ("", false),
            ("https://exa mple.com", false),
            ("https://user:pw@example.com", false),
            ("https://example.com/v1?key=x", false),
        ] {
            let v = json!({
                "providers": {"p": {"kind": "openai", "base_url": url}},
                "models": {"m": {"provider": "p"}}
            });
            match Config::from_value(v) {
                Ok(_) => assert!(ok, "{url:?} accepted"),
                Err(e) => {
                    assert!(!ok, "{url:?} rejected: {e}");
                    assert_eq!(paths(&e.problems), ["$.providers.p.base_url"], "{url:?}");
                    assert!(!e.to_string().contains("pw@"), "{e}");
                }
            }
        }
    }

    const LITERAL_KEY: &str = r#"{
    "providers": {
        "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-live-0123456789"},
        "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"}
    },
    "models": {"gpt-4o-mini": {"provider": "openai"}, "claude": {"provider": "anthropic"}}
}"#;

    #[test]
    fn redacted_json_masks_every_literal_key() {
        let config = Config::from_json(LITERAL_KEY).unwrap();
        let shown = config.to_redacted_json();
        assert_eq!(shown["providers"]["openai"]["api_key"], "***");
        assert_eq!(
            shown["providers"]["anthropic"]["api_key_env"],
            "ANTHROPIC_API_KEY"
        );
        assert!(shown["providers"]["anthropic"].get("api_key").is_none());
        assert!(!shown.to_string().contains("sk-live-0123456789"));
        // Pushed back unedited, the mask is refused as a key (it would be sent
        // to the provider as one); with the key given again it is the same
        // config, defaults spelled out.
        let err = Config::from_value(shown.clone()).unwrap_err().to_string();
        assert!(
            err.contains("$.providers.openai.api_key") && err.contains("the mask"),
            "{err}"
        );
        let mut fixed = shown;
        fixed["providers"]["openai"]["api_key"] = "sk-live-0123456789".into();
        assert_eq!(Config::from_value(fixed).unwrap(), config);
    }

    #[test]
    fn debug_shows_no_literal_key() {
        let config = Config::from_json(LITERAL_KEY).unwrap();
        let debug = format!("{config:?} {config:#?}");
        assert!(!debug.contains("sk-live-0123456789"), "{debug}");
        assert!(debug.contains("***"));
        let compiled = config
            .compile(http_client(), &|_| Some("sk-ant-env-secret".into()))
            .unwrap();
        let debug = format!("{compiled:?}");
        assert!(!debug.contains("sk-live-0123456789"));
        assert!(!debug.contains("sk-ant-env-secret"));
    }

    #[test]
    fn missing_env_var_is_a_problem_naming_the_variable() {
        let config = Config::from_json(EXAMPLE).unwrap();
        let env = |var: &str| match var {
            "OPENAI_API_KEY" => Some("sk-openai-test".to_owned()),
            "GEMINI_API_KEY" => Some("  \n".to_owned()),
            _ => None,
        };
        let err = config.compile(http_client(), &env).unwrap_err();
        assert_eq!(
            err.problems,
            [
                Problem {
                    path: "$.providers.anthropic.api_key_env".into(),
                    message: "environment variable ANTHROPIC_API_KEY is not set".into(),
                },
                Problem {
                    path: "$.providers.google.api_key_env".into(),
                    message: "environment variable GEMINI_API_KEY is empty".into(),
                },
            ]
        );
        assert!(!err.to_string().contains("sk-openai-test"));
    }

    #[test]
    fn no_problem_shows_a_key() {
        // A key pasted into api_key_env is not echoed, at parse or compile time.
        for pasted in [
            "sk-proj-abcdef0123456789",
            "AIzaSyA0123456789abcdefghijklmnopqrstu",
        ] {
            let v = json!({
                "providers": {"g": {"kind": "gemini", "base_url": "https://generativelanguage.googleapis.com", "api_key_env": pasted}},
                "models": {"m": {"provider": "g"}}
            });
            let err = Config::from_value(v).unwrap_err();
            assert_eq!(paths(&err.problems), ["$.providers.g.api_key_env"]);
            assert!(!err.to_string().contains(pasted), "{err}");
        }
        // Both kinds of key: the literal one is never shown.
        let err = Config::from_json(
        r#"{"providers": {"p": {"kind": "openai", "base_url": "https://x.example", "api_key": "sk-dual-secret", "api_key_env": "K"}},
            "models": {"m": {"provider": "p"}}}"#,
    )
    .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("sk-dual-secret"));
    }

    #[test]
    fn empty_literal_key_is_rejected() {
        let problems = problems(
            r#"{"providers": {"p": {"kind": "openai", "base_url": "https://x.example", "api_key": ""}},
            "models": {"m": {"provider": "p"}}}"#,
        );
        assert_eq!(paths(&problems), ["$.providers.p.api_key"]);
    }

    #[test]
    fn serialize_round_trips_and_deserialize_validates() {
        let config = Config::from_json(EXAMPLE).unwrap();
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(Config::from_value(value.clone()).unwrap(), config);
        let via_serde: Config = serde_json::from_value(value).unwrap();
        assert_eq!(via_serde, config);

        let err = serde_json::from_str::<Config>(MANY_PROBLEMS).unwrap_err();
        assert!(err.to_string().contains("$.routes.main.attempts[1].model"));
    }

    #[test]
    fn validate_checks_configs_built_in_code() {
        let mut config = Config::from_json(EXAMPLE).unwrap();
        assert!(config.validate().is_ok());
        config.routes.get_mut("default").unwrap().attempts[0].model = "gone".into();
        config.traces.capacity = 0;
        let err: ConfigError = config.validate().unwrap_err();
        assert_eq!(
            paths(&err.problems),
            ["$.routes.default.attempts[0].model", "$.traces.capacity"]
        );
        // compile validates too, and never builds a route to a missing model.
        let err = config.compile(http_client(), &fake_env).unwrap_err();
        assert_eq!(err.problems.len(), 2);
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
        "null".to_owned(),
        "1".to_owned(),
        "\"x\"".to_owned(),
        r#"{"providers": null, "models": null, "routes": null}"#.to_owned(),
        r#"{"providers": {"p": null}, "models": {"m": []}, "routes": {"r": 1}, "health": null}"#.to_owned(),
        r#"{"providers": {}, "models": {"m": {"provider": "p", "timeout_ms": 1e300}}}"#.to_owned(),
        r#"{"providers": {}, "models": {"m": {"provider": "p", "timeout_ms": 18446744073709551616}}}"#
            .to_owned(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    ];
        for text in &inputs {
            let err = Config::from_json(text).unwrap_err();
            assert!(!err.problems.is_empty(), "{text}");
        }
    }

    /// The problem listing shown in docs/configuration.md is what the
    /// config shown there really produces.
    #[test]
    fn docs_problem_example_is_accurate() {
        let doc = include_str!("../docs/configuration.md");
        let after = doc.split("For example, this config:").nth(1).unwrap();
        let json = after
            .split("```json\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let text = after
            .split("```text\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let err = Config::from_json(json).unwrap_err();
        assert_eq!(err.to_string(), text.trim_end());

        let env_line = doc
            .split("Compiling adds one more check")
            .nth(1)
            .unwrap()
            .split("```text\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let err = Config::from_json(EXAMPLE)
            .unwrap()
            .compile(http_client(), &|v| {
                (v != "ANTHROPIC_API_KEY").then(|| "k".into())
            })
            .unwrap_err();
        assert_eq!(err.to_string(), env_line.trim_end());
    }
}
