//! The Modelux layers inside an existing axum application, next to its own
//! routes. Run it against any OpenAI-compatible server (or the fake provider:
//! `cargo run --example mock_provider -- --listen 127.0.0.1:9100`):
//!
//! ```text
//! PRIMARY_URL=http://127.0.0.1:9100/v1 BACKUP_URL=http://127.0.0.1:9100/v1 \
//!   cargo run --example axum_compose
//! curl -s localhost:3000/hello
//! curl -s localhost:3000/ask -d 'Why is the sky blue?'
//! curl -sN localhost:3000/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"ask","stream":true,"messages":[{"role":"user","content":"Hi"}]}'
//! ```
//!
//! `/v1/chat/completions` answers as the reference gateway does, through
//! `modelux::edge`: OpenAI's JSON or SSE (`[DONE]` only after a whole
//! stream), and OpenAI's error body with the status an SDK acts on.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use modelux::api::{ChatRequest, Message, Role};
use modelux::edge::{self, ErrorAnswer};
use modelux::fallback::FallbackLayer;
use modelux::health::{HealthConfig, HealthScoreLayer};
use modelux::provider::{http_client, Provider, ProviderKind, ProviderResponse, Providers, Target};
use modelux::retry_budget::{RetryBudgetConfig, RetryBudgetLayer};
use modelux::route::{Candidate, Route, RouteRequest};
use modelux::trace::{TraceLayer, TraceStore};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

#[derive(Clone)]
struct AppState {
    llm: BoxCloneSyncService<
        RouteRequest,
        modelux::route::RouteResponse,
        modelux::route::RouteError,
    >,
    route: Arc<Route>,
}

/// An OpenAI-compatible endpoint on the app's own server.
async fn chat_completions(State(app): State<AppState>, body: axum::body::Bytes) -> Response {
    let chat: ChatRequest = match serde_json::from_slice(&body) {
        Ok(chat) => chat,
        Err(e) => {
            let e = ErrorAnswer::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                format!("The body is not a chat request: {e}"),
            );
            return edge::error_response(e).map(Body::new);
        }
    };
    // What the response needs of the request, read before it moves.
    let wants_usage = chat.wants_stream_usage();
    let result = app
        .llm
        .oneshot(RouteRequest::new(chat, app.route.clone()))
        .await;
    edge::into_response(result, wants_usage).map(Body::new)
}

async fn ask(State(app): State<AppState>, question: String) -> String {
    let chat = ChatRequest {
        model: app.route.name.to_string(),
        messages: vec![Message::text(Role::User, question)],
        stream: None,
        stream_options: None,
        params: Default::default(),
    };
    match app
        .llm
        .oneshot(RouteRequest::new(chat, app.route.clone()))
        .await
    {
        Ok(resp) => match resp.body {
            ProviderResponse::Complete(c) => format!(
                "[{}] {}\n",
                resp.served_by.id,
                c.to_chat_completion()
                    .ok()
                    .and_then(|c| c.choices.first().and_then(|c| c.message.content.clone()))
                    .unwrap_or_default()
            ),
            ProviderResponse::Stream(_) => "unexpected stream\n".into(),
        },
        Err(e) => format!("error ({}): {e}\n", e.status()),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let url = |k: &str| std::env::var(k).unwrap_or_else(|_| "http://127.0.0.1:9100/v1".into());
    let client = http_client();
    let providers = Providers::new([
        (
            "primary".into(),
            Provider::new(
                ProviderKind::OpenAi,
                &url("PRIMARY_URL"),
                None,
                client.clone(),
            ),
        ),
        (
            "backup".into(),
            Provider::new(ProviderKind::OpenAi, &url("BACKUP_URL"), None, client),
        ),
    ]);
    let route = Arc::new(Route::fallback(
        "ask",
        vec![
            Candidate::new(
                Arc::new(Target::new("primary", "gpt-4o-mini")),
                Duration::from_secs(5),
            ),
            Candidate::new(
                Arc::new(Target::new("backup", "gpt-4o-mini")),
                Duration::from_secs(10),
            ),
        ],
    ));
    let llm = ServiceBuilder::new()
        .layer(TraceLayer::new(TraceStore::new(256)))
        .layer(HealthScoreLayer::new(HealthConfig::default()))
        .layer(RetryBudgetLayer::new(RetryBudgetConfig::default()))
        .layer(FallbackLayer::new())
        .service(providers);
    let app = Router::new()
        .route(
            "/hello",
            get(|| async { "hello from the app's own route\n" }),
        )
        .route("/ask", post(ask))
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(AppState {
            llm: BoxCloneSyncService::new(llm),
            route,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "listening on http://127.0.0.1:3000 (routes: GET /hello, POST /ask, POST /v1/chat/completions)"
    );
    axum::serve(listener, app).await
}
