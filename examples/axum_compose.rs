//! The Modelux layers inside an existing axum application, next to its own
//! routes. Run it against any OpenAI-compatible server (or the fake provider:
//! `cargo run --example mock_provider -- --listen 127.0.0.1:9100`):
//!
//! ```text
//! PRIMARY_URL=http://127.0.0.1:9100/v1 BACKUP_URL=http://127.0.0.1:9100/v1 \
//!   cargo run --example axum_compose
//! curl -s localhost:3000/hello
//! curl -s localhost:3000/ask -d 'Why is the sky blue?'
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use modelux::api::{ChatRequest, Message, Role};
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
        .with_state(AppState {
            llm: BoxCloneSyncService::new(llm),
            route,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000 (routes: GET /hello, POST /ask)");
    axum::serve(listener, app).await
}
