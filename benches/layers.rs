//! Per-request overhead of each routing layer alone and of the whole stack,
//! against an always-ready in-process leaf, versus calling the leaf directly
//! in the same run.
//!
//! ```text
//! cargo bench --bench layers                 # all groups, then a summary table
//! cargo bench --bench layers -- stack        # only benches whose id contains "stack"
//! MODELUX_PROFILE=stack cargo bench --bench layers   # no criterion: 200k stack calls, for callgrind
//! ```
//!
//! What one iteration is:
//!
//! * `leaf_attempt` (baseline of `fallback` and of the stacks): build an
//!   `AttemptRequest`, call the leaf, drop the `ProviderResponse::Complete`.
//! * `leaf_route` (baseline of the four `RouteRequest` layers): build a
//!   `RouteRequest`, call a route-level leaf that reports one successful
//!   attempt to every observer the layers attached (as the fallback router
//!   does) and answers a `RouteResponse`.
//! * `trace`, `latency`, `latency_ranked3`, `health`, `retry_budget`: that
//!   layer alone around `leaf_route`.
//! * `fallback`: `FallbackLayer` alone around the attempt leaf.
//! * `stack_1` / `stack_3`: the stack exactly as `SharedLayers::stack`
//!   assembles it (trace, latency, health, retry budget, fallback, boxed in a
//!   `BoxCloneSyncService`, cloned and `oneshot` per request as the gateway
//!   handler does) around the attempt leaf; a route of 1 or 3 candidates,
//!   the first of which answers.
//! * `stream_leaf` / `stream_stack`: the leaf returns a stream of 20 chunks
//!   (role, 17 words, finish, usage); the iteration drains it.
//!
//! The `observed` group repeats the stacks after installing the gateway's
//! Prometheus recorder (`modelux::gateway::prometheus()`), and then with a
//! `tracing` fmt subscriber at `info` writing to a sink, as the reference
//! gateway runs: the metrics and the per-request `modelux::request` event are
//! real costs of a deployed gateway that a bench without a recorder hides.
//! (The event is at `debug` for a successful request, so at `info` the
//! successful requests measured here only pay for the level check.)

mod common;

use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use futures::StreamExt;
use modelux::api::{ChatChunk, ChatCompletion, ChatRequest, Delta, Usage};
use modelux::config::Config;
use modelux::fallback::FallbackLayer;
use modelux::gateway::SharedLayers;
use modelux::provider::{
    http_client, AttemptRequest, ChunkStream, ProviderError, ProviderResponse, Target,
};
use modelux::route::{
    AttemptObserver, AttemptPhase, AttemptReport, RequestContext, Route, RouteError, RouteRequest,
    RouteResponse,
};
use modelux::trace::TraceLayer;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

type Stack = BoxCloneSyncService<RouteRequest, RouteResponse, RouteError>;

/// A realistic small client request (the layers only read `stream`).
const CHAT: &str = r#"{"model":"one","messages":[
 {"role":"system","content":"You are a concise assistant for an online bookshop. Answer in at most three sentences."},
 {"role":"user","content":"Do you have the second volume of the Baroque Cycle in paperback, and how long would delivery to Lyon take?"}],
 "temperature":0.3,"max_tokens":256,"user":"customer-4812"}"#;

const CONFIG: &str = r#"{
 "providers": {
   "openai":    {"kind": "openai",    "base_url": "http://127.0.0.1:9/v1"},
   "anthropic": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"},
   "google":    {"kind": "gemini",    "base_url": "http://127.0.0.1:9"}
 },
 "models": {
   "gpt":    {"provider": "openai", "upstream_model": "gpt-4o-mini", "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
   "claude": {"provider": "anthropic", "upstream_model": "claude-haiku-4-5", "prefill": true},
   "gemini": {"provider": "google", "upstream_model": "gemini-2.5-flash"}
 },
 "routes": {
   "one":   {"attempts": [{"model": "gpt", "timeout_ms": 30000}]},
   "three": {"attempts": [{"model": "gpt", "timeout_ms": 10000}, {"model": "claude", "timeout_ms": 10000}, {"model": "gemini", "timeout_ms": 10000}]},
   "fast":  {"strategy": "latency", "attempts": [{"model": "gpt", "timeout_ms": 10000}, {"model": "claude", "timeout_ms": 10000}, {"model": "gemini", "timeout_ms": 10000}]}
 }
}"#;

struct Fixture {
    rt: tokio::runtime::Runtime,
    shared: SharedLayers,
    one: Arc<Route>,
    three: Arc<Route>,
    fast: Arc<Route>,
    chat: Arc<ChatRequest>,
    chat_stream: Arc<ChatRequest>,
    completion: Arc<ChatCompletion>,
    chunks: Arc<Vec<ChatChunk>>,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = Config::from_json(CONFIG).expect("bench config");
        let compiled = config.compile(http_client(), &|_| None).expect("compiles");
        let shared = SharedLayers::new(&config);
        let route = |n: &str| compiled.resolve(n).expect("route");
        let chat: ChatRequest = serde_json::from_str(CHAT).expect("chat");
        let mut chat_stream = chat.clone();
        chat_stream.stream = Some(true);

        let id = "chatcmpl-9zQ3mXb7Lk2PqR8sT1uV4wY6";
        let model = "gpt-4o-mini-2024-07-18";
        let created = 1_726_000_000;
        let words: Vec<String> = (0..17).map(|i| format!(" word{i}")).collect();
        let mut completion = ChatCompletion::text(id, model, words.concat().trim(), "stop");
        completion.usage = Some(Usage::new(52, 17));
        let mut chunks = vec![ChatChunk::with_delta(
            id,
            model,
            created,
            Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Delta::default()
            },
        )];
        chunks.extend(
            words
                .iter()
                .map(|w| ChatChunk::content(id, model, created, w)),
        );
        chunks.push(ChatChunk::finish(id, model, created, "stop"));
        chunks.push(ChatChunk::usage_only(
            id,
            model,
            created,
            Usage::new(52, 17),
        ));
        assert_eq!(chunks.len(), 20);

        let fx = Fixture {
            rt,
            shared,
            one: route("one"),
            three: route("three"),
            fast: route("fast"),
            chat: Arc::new(chat),
            chat_stream: Arc::new(chat_stream),
            completion: Arc::new(completion),
            chunks: Arc::new(chunks),
        };
        // Give every target of the latency route a full window of samples,
        // so the ranking has estimates to sort (the steady state).
        let reg = fx.shared.latency.registry();
        for (i, c) in fx.fast.candidates.iter().enumerate() {
            for k in 0..300u64 {
                reg.on_attempt(&AttemptReport {
                    target: &c.target.id,
                    result: Ok(()),
                    latency: Duration::from_micros(500 + 100 * i as u64 + k % 50),
                    stream: false,
                    phase: AttemptPhase::Whole,
                });
            }
        }
        fx
    }

    fn route_request(&self, route: &Arc<Route>, stream: bool) -> RouteRequest {
        RouteRequest {
            chat: if stream {
                self.chat_stream.clone()
            } else {
                self.chat.clone()
            },
            route: route.clone(),
            candidates: route.candidates.clone(),
            ctx: RequestContext::default(),
        }
    }
}

/// The attempt leaf: always ready, answers a ready completion.
fn complete_leaf(
    c: Arc<ChatCompletion>,
) -> impl Service<
    AttemptRequest,
    Response = ProviderResponse,
    Error = ProviderError,
    Future = Ready<Result<ProviderResponse, ProviderError>>,
> + Clone
       + Send
       + Sync
       + 'static {
    service_fn(move |_req: AttemptRequest| {
        ready(Ok(ProviderResponse::Complete((*c).clone().into())))
    })
}

/// The attempt leaf for streams: a ready stream of the fixture's chunks.
fn stream_leaf(
    chunks: Arc<Vec<ChatChunk>>,
) -> impl Service<
    AttemptRequest,
    Response = ProviderResponse,
    Error = ProviderError,
    Future = Ready<Result<ProviderResponse, ProviderError>>,
> + Clone
       + Send
       + Sync
       + 'static {
    service_fn(move |_req: AttemptRequest| {
        let s: ChunkStream = Box::pin(futures::stream::iter(
            (*chunks)
                .clone()
                .into_iter()
                .map(|c| Ok::<_, ProviderError>(c.into())),
        ));
        ready(Ok(ProviderResponse::Stream(s)))
    })
}

/// A route-level leaf: reports one successful attempt of the first
/// candidate to every observer (as the fallback router does) and answers.
fn route_leaf(
    c: Arc<ChatCompletion>,
) -> impl Service<
    RouteRequest,
    Response = RouteResponse,
    Error = RouteError,
    Future = Ready<Result<RouteResponse, RouteError>>,
> + Clone
       + Send
       + Sync
       + 'static {
    service_fn(move |req: RouteRequest| {
        let target = req.candidates[0].target.clone();
        let report = AttemptReport {
            target: &target.id,
            result: Ok(()),
            latency: Duration::from_micros(900),
            stream: false,
            phase: AttemptPhase::Whole,
        };
        for o in &req.ctx.observers {
            o.on_attempt(&report);
        }
        drop(req);
        ready(Ok(RouteResponse {
            body: ProviderResponse::Complete((*c).clone().into()),
            served_by: target,
            attempts: 1,
        }))
    })
}

/// The stack as `SharedLayers::stack` assembles it, around `leaf`.
fn stack<L>(shared: &SharedLayers, leaf: L) -> Stack
where
    L: Service<AttemptRequest, Response = ProviderResponse, Error = ProviderError>
        + Clone
        + Send
        + Sync
        + 'static,
    L::Future: Send + 'static,
{
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(shared.traces.clone()))
        .layer(shared.latency.clone())
        .layer(shared.health.clone())
        .layer(shared.budget.clone())
        .layer(FallbackLayer::new())
        .service(leaf);
    BoxCloneSyncService::new(svc)
}

async fn drain(resp: ProviderResponse) -> usize {
    match resp {
        ProviderResponse::Complete(_) => 1,
        ProviderResponse::Stream(mut s) => {
            let mut n = 0;
            while let Some(item) = s.next().await {
                item.expect("chunk");
                n += 1;
            }
            n
        }
    }
}

fn bench_layers(c: &mut Criterion, fx: &Fixture) {
    let mut g = c.benchmark_group("layers");
    let target: Arc<Target> = fx.one.candidates[0].target.clone();

    let leaf = complete_leaf(fx.completion.clone());
    g.bench_function("leaf_attempt", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = AttemptRequest::new(target.clone(), fx.chat.clone());
            let svc = leaf.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });

    let rleaf = route_leaf(fx.completion.clone());
    g.bench_function("leaf_route", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = rleaf.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });

    let trace = TraceLayer::new(fx.shared.traces.clone()).layer(rleaf.clone());
    g.bench_function("trace", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = trace.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });

    let latency = fx.shared.latency.clone().layer(rleaf.clone());
    g.bench_function("latency", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = latency.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });
    g.bench_function("latency_ranked3", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.fast, false);
            let svc = latency.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });

    let health = fx.shared.health.clone().layer(rleaf.clone());
    g.bench_function("health", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = health.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });

    let budget = fx.shared.budget.clone().layer(rleaf.clone());
    g.bench_function("retry_budget", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = budget.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });

    let fallback = FallbackLayer::new().layer(leaf.clone());
    g.bench_function("fallback", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = fallback.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });

    let full = stack(&fx.shared, leaf.clone());
    g.bench_function("stack_1", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = full.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });
    g.bench_function("stack_3", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.three, false);
            let svc = full.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });

    let sleaf = stream_leaf(fx.chunks.clone());
    g.throughput(Throughput::Elements(1));
    g.bench_function("stream_leaf", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = AttemptRequest::new(target.clone(), fx.chat_stream.clone());
            let svc = sleaf.clone();
            async move { drain(svc.oneshot(req).await.expect("ok")).await }
        })
    });
    let sstack = stack(&fx.shared, sleaf.clone());
    g.bench_function("stream_stack", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, true);
            let svc = sstack.clone();
            async move { drain(svc.oneshot(req).await.expect("ok").body).await }
        })
    });
    g.finish();
}

/// The stacks again, with the gateway's Prometheus recorder installed, then
/// also with an `info` fmt subscriber writing to a sink.
fn bench_observed(c: &mut Criterion, fx: &Fixture) {
    let recorder = modelux::gateway::prometheus();
    assert!(recorder.is_some(), "the Prometheus recorder installs");
    let leaf = complete_leaf(fx.completion.clone());
    let sleaf = stream_leaf(fx.chunks.clone());
    let full = stack(&fx.shared, leaf);
    let sstack = stack(&fx.shared, sleaf);

    let mut g = c.benchmark_group("observed");
    g.bench_function("stack_1_metrics", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = full.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });
    g.bench_function("stream_stack_metrics", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, true);
            let svc = sstack.clone();
            async move { drain(svc.oneshot(req).await.expect("ok").body).await }
        })
    });

    // The reference gateway's subscriber (text format, `info`), into a sink:
    // formatting is counted, the write(2) to stderr is not.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .try_init();
    g.bench_function("stack_1_metrics_log", |b| {
        b.to_async(&fx.rt).iter(|| {
            let req = fx.route_request(&fx.one, false);
            let svc = full.clone();
            async move { svc.oneshot(req).await.expect("ok") }
        })
    });
    g.finish();
    // Keep the trace ring's content alive to here (a full ring is the steady state).
    assert!(!fx.shared.traces.is_empty());
}

/// `MODELUX_PROFILE=stack|stack_observed|stream_observed|leaf`: a fixed number of calls
/// without criterion, for `valgrind --tool=callgrind`.
fn profile(fx: &Fixture, what: &str) {
    let n: usize = std::env::var("MODELUX_PROFILE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    if what == "stream_observed" {
        // A streaming request through the whole stack with the gateway's
        // recorder and logger, drained: per-request plus 20 chunks.
        let _ = modelux::gateway::prometheus();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .try_init();
        let full = stack(&fx.shared, stream_leaf(fx.chunks.clone()));
        fx.rt.block_on(async {
            for _ in 0..n {
                let req = fx.route_request(&fx.one, true);
                let resp = full.clone().oneshot(req).await.expect("ok");
                std::hint::black_box(drain(resp.body).await);
            }
        });
        eprintln!("profiled {n} × {what}");
        return;
    }
    if what == "stack_observed" {
        let _ = modelux::gateway::prometheus();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .try_init();
    }
    let leaf = complete_leaf(fx.completion.clone());
    let target = fx.one.candidates[0].target.clone();
    let full = stack(&fx.shared, leaf.clone());
    fx.rt.block_on(async {
        for _ in 0..n {
            if what == "leaf" {
                let req = AttemptRequest::new(target.clone(), fx.chat.clone());
                std::hint::black_box(leaf.clone().oneshot(req).await.expect("ok"));
            } else {
                let req = fx.route_request(&fx.one, false);
                std::hint::black_box(full.clone().oneshot(req).await.expect("ok"));
            }
        }
    });
    eprintln!("profiled {n} × {what}");
}

/// The summary's rows: label | group/bench | baseline group/bench (or -).
const SUMMARY: &str = "\
leaf called directly (AttemptRequest)            | layers/leaf_attempt          | -
route-level leaf (RouteRequest)                  | layers/leaf_route            | -
TraceLayer alone                                 | layers/trace                 | layers/leaf_route
LatencyRankLayer alone (fallback route)          | layers/latency               | layers/leaf_route
LatencyRankLayer alone (latency route, 3 ranked) | layers/latency_ranked3       | layers/leaf_route
HealthScoreLayer alone                           | layers/health                | layers/leaf_route
RetryBudgetLayer alone                           | layers/retry_budget          | layers/leaf_route
FallbackLayer alone                              | layers/fallback              | layers/leaf_attempt
whole stack, 1 candidate                         | layers/stack_1               | layers/leaf_attempt
whole stack, 3 candidates                        | layers/stack_3               | layers/leaf_attempt
stream of 20 chunks: leaf + drain                | layers/stream_leaf           | -
stream of 20 chunks: stack + drain               | layers/stream_stack          | layers/stream_leaf
stack, 1 candidate, + Prometheus                 | observed/stack_1_metrics     | layers/leaf_attempt
stream stack + drain, + Prometheus               | observed/stream_stack_metrics | layers/stream_leaf
stack, 1 candidate, + Prometheus + info log      | observed/stack_1_metrics_log | layers/leaf_attempt";

fn mean(id: &str) -> Option<f64> {
    let (g, n) = id.split_once('/')?;
    common::mean_ns(g, n)
}

fn summary() {
    println!();
    println!("modelux layer overhead: mean time per request in this run");
    let head = ("what", "mean", "baseline", "overhead");
    println!(
        "{:<50} {:>12} {:>12} {:>12}",
        head.0, head.1, head.2, head.3
    );
    for line in SUMMARY.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let [label, id, base] = cols[..] else {
            continue;
        };
        let Some(m) = mean(id) else {
            continue;
        };
        let (b, over) = match (base, mean(base)) {
            ("-", _) => (String::new(), String::new()),
            (_, Some(b)) => (common::fmt_ns(b), common::fmt_ns(m - b)),
            (_, None) => ("-".to_owned(), "-".to_owned()),
        };
        println!("{label:<50} {:>12} {b:>12} {over:>12}", common::fmt_ns(m));
    }
}

fn main() {
    let fx = Fixture::new();
    if let Ok(what) = std::env::var("MODELUX_PROFILE") {
        profile(&fx, &what);
        return;
    }
    let mut c = common::criterion();
    bench_layers(&mut c, &fx);
    bench_observed(&mut c, &fx);
    c.final_summary();
    summary();
}
