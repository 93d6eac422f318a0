//! The admin API: versioned configs, activation, rollback, diff, audit and
//! status, behind bearer tokens from the environment.

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Query, Request, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

use super::State;
use crate::config::{diff, Config};
use crate::store::{NewVersion, StoreError, VersionSource};

/// Admin tokens: name and SHA-256 of the token.
///
/// ```
/// use modelux::gateway::AdminTokens;
/// let tokens = AdminTokens::single("ci", "s3cret");
/// assert_eq!(tokens.check("s3cret").as_deref(), Some("ci"));
/// // Only the names are kept in the clear, and only they print.
/// assert_eq!(format!("{tokens:?}"), r#"AdminTokens { names: ["ci"] }"#);
/// ```
#[derive(Clone, Default)]
pub struct AdminTokens {
    tokens: Vec<(Arc<str>, [u8; 32])>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| &**n).collect();
        f.debug_struct("AdminTokens")
            .field("names", &names)
            .finish()
    }
}

impl AdminTokens {
    /// Tokens from `MODELUX_ADMIN_TOKENS="name1:token1,name2:token2"`, or
    /// `MODELUX_ADMIN_TOKEN` for a single token named `admin`.
    ///
    /// ```
    /// let t = modelux::gateway::AdminTokens::parse(Some("alice:t-a, bob:t-b"), None);
    /// assert_eq!(t.check("t-b").as_deref(), Some("bob"));
    /// assert!(t.check("nope").is_none());
    /// // An entry without a name is ignored with a warning (it is not
    /// // echoed: it may be a token); a token given twice keeps its first
    /// // name, so the audit log names who was meant.
    /// let t = modelux::gateway::AdminTokens::parse(Some("bare-token, alice:t-a, admin2:t-a"), Some("t-a"));
    /// assert!(t.check("bare-token").is_none());
    /// assert_eq!(t.check("t-a").as_deref(), Some("alice"));
    /// ```
    pub fn parse(tokens: Option<&str>, single: Option<&str>) -> Self {
        let mut out: Vec<(Arc<str>, [u8; 32])> = Vec::new();
        let mut add = |name: &str, token: &str| {
            let d = digest(token);
            // One token under two names would be audited as whichever came
            // last: the first name keeps it.
            if let Some((first, _)) = out.iter().find(|(_, t)| *t == d) {
                tracing::warn!(name, kept = %first, "admin token given twice; the first name keeps it");
                return;
            }
            out.push((Arc::from(name), d));
        };
        if let Some(list) = tokens {
            for (i, item) in list.split(',').enumerate() {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                match item.split_once(':').map(|(n, t)| (n.trim(), t.trim())) {
                    Some((name, token)) if !name.is_empty() && !token.is_empty() => {
                        add(name, token)
                    }
                    // Never the item itself: it may be a bare token.
                    _ => tracing::warn!(
                        entry = i + 1,
                        "MODELUX_ADMIN_TOKENS entry ignored: expected name:token"
                    ),
                }
            }
        }
        if let Some(token) = single.map(str::trim).filter(|t| !t.is_empty()) {
            add("admin", token);
        }
        AdminTokens { tokens: out }
    }

    /// Tokens from the process environment.
    ///
    /// ```
    /// use modelux::gateway::AdminTokens;
    /// std::env::set_var("MODELUX_ADMIN_TOKENS", "alice:t-a");
    /// std::env::set_var("MODELUX_ADMIN_TOKEN", "t-root");
    /// let tokens = AdminTokens::from_env();
    /// assert_eq!(tokens.check("t-a").as_deref(), Some("alice"));
    /// assert_eq!(tokens.check("t-root").as_deref(), Some("admin"));
    /// ```
    pub fn from_env() -> Self {
        let a = std::env::var("MODELUX_ADMIN_TOKENS").ok();
        let b = std::env::var("MODELUX_ADMIN_TOKEN").ok();
        Self::parse(a.as_deref(), b.as_deref())
    }

    /// A single token named `name`.
    ///
    /// ```
    /// let tokens = modelux::gateway::AdminTokens::single("deploy", "t-1");
    /// assert!(!tokens.is_empty());
    /// assert_eq!(tokens.check("t-1").as_deref(), Some("deploy"));
    /// assert!(tokens.check("T-1").is_none());
    /// ```
    pub fn single(name: &str, token: &str) -> Self {
        AdminTokens {
            tokens: vec![(Arc::from(name), digest(token))],
        }
    }

    /// Whether any token is configured.
    ///
    /// ```
    /// use modelux::gateway::AdminTokens;
    /// assert!(AdminTokens::default().is_empty());
    /// // A blank token configures nothing.
    /// assert!(AdminTokens::parse(None, Some("  ")).is_empty());
    /// assert!(!AdminTokens::parse(None, Some("t")).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the token `presented`, comparing digests in constant time.
    ///
    /// ```
    /// let tokens = modelux::gateway::AdminTokens::parse(Some("alice:t-a,bob:t-b"), None);
    /// assert_eq!(tokens.check("t-a").as_deref(), Some("alice"));
    /// assert_eq!(tokens.check("t-b").as_deref(), Some("bob"));
    /// assert_eq!(tokens.check(""), None);
    /// ```
    pub fn check(&self, presented: &str) -> Option<Arc<str>> {
        let d = digest(presented);
        let mut found = None;
        for (name, t) in &self.tokens {
            let diff = t.iter().zip(&d).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(name.clone());
            }
        }
        found
    }
}

fn digest(s: &str) -> [u8; 32] {
    sha2::Sha256::digest(s.as_bytes()).into()
}

/// The authenticated admin, inserted into request extensions.
#[derive(Clone)]
struct Actor(Arc<str>);

/// An admin API error: `{"error": {"message", "type", "code"}}`, with the
/// type following the status (as the OpenAI format's `type` does) and the
/// status's own code (see [`coded`] for a more precise one).
fn error(status: StatusCode, message: &str) -> Response {
    let code = match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "admin_disabled",
        404 => "not_found",
        408 => "body_timeout",
        409 => "conflict",
        412 => "version_conflict",
        413 => "body_too_large",
        422 => "invalid_config",
        503 => "unavailable",
        s if s < 500 => "invalid_request",
        _ => "internal_error",
    };
    coded(status, code, message)
}

/// An admin API error with its own `code`, for a client to act on without
/// reading the message.
fn coded(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": error_body(status, code, message)})),
    )
        .into_response()
}

/// The `error` object of an admin API error.
fn error_body(status: StatusCode, code: &str, message: &str) -> Value {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        409 | 412 => "conflict_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"message": message, "type": kind, "code": code})
}

async fn auth(AxState(state): AxState<Arc<State>>, mut req: Request, next: Next) -> Response {
    let tokens = state.admin.load();
    if tokens.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set MODELUX_ADMIN_TOKEN (or MODELUX_ADMIN_TOKENS=\"name:token,...\") and restart",
        );
    }
    let presented = super::bearer(req.headers());
    match presented.and_then(|p| tokens.check(p)) {
        Some(name) => {
            req.extensions_mut().insert(Actor(name));
            next.run(req).await
        }
        None => error(StatusCode::UNAUTHORIZED, "unauthorized"),
    }
}

/// The `/admin` routes.
pub(crate) fn router(state: Arc<State>) -> Router<Arc<State>> {
    Router::new()
        .route("/admin/config", get(active_config))
        .route(
            "/admin/config/versions",
            get(list_versions).post(create_version),
        )
        .route("/admin/config/versions/{n}", get(get_version))
        .route("/admin/config/versions/{n}/activate", post(activate))
        .route("/admin/config/rollback", post(rollback))
        .route("/admin/config/diff", get(config_diff))
        .route("/admin/config/dry-run", post(dry_run))
        .route("/admin/audit", get(audit))
        .route("/admin/status", get(status))
        .route_layer(axum::middleware::from_fn_with_state(state, auth))
        .route_layer(axum::middleware::map_response(json_rejections))
}

/// axum answers a request its extractors reject (a version that is not a
/// number, a diff without `to`) in plain text; the admin API answers every
/// error in its JSON format, with the same status and message. (Bodies are
/// read by [`AdminBody`], which answers in JSON itself.)
async fn json_rejections(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&text);
    let json = error(status, message.trim());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (json_parts, json_body) = json.into_parts();
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}

/// A request body, buffered as axum's `Bytes` extractor does (within the
/// same size limit), whose rejections are answered in the admin API's JSON
/// error format with the status that fits: **408** when the client stopped
/// sending it (the server's body read timeout), **413** when it is too
/// large, **400** for any other failure to read it. (`Bytes` alone answers
/// a stalled body with a 400, as if the client had sent something wrong.)
struct AdminBody(axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for AdminBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(AdminBody)
            .map_err(|rejection| body_rejection(&rejection))
    }
}

/// The admin API's answer to a request body that could not be read.
fn body_rejection(rejection: &axum::extract::rejection::BytesRejection) -> Response {
    match super::error::cause::<super::server::BodyReadTimedOut>(rejection) {
        Some(timed_out) => error(StatusCode::REQUEST_TIMEOUT, &timed_out.to_string()),
        None => error(rejection.status(), &rejection.body_text()),
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(v) => coded(
            StatusCode::NOT_FOUND,
            "version_not_found",
            &format!("no config version {v}"),
        ),
        StoreError::Conflict { current } => error(
            StatusCode::PRECONDITION_FAILED,
            &format!(
                "the active version is {}, not the one given in If-Match",
                current.map_or("none".to_owned(), |v| v.to_string())
            ),
        ),
        StoreError::NothingToRollBack => coded(
            StatusCode::CONFLICT,
            "nothing_to_roll_back",
            "there is no earlier active version to roll back to",
        ),
        StoreError::AlreadyImported(_) => {
            coded(StatusCode::CONFLICT, "already_imported", &e.to_string())
        }
        other => {
            tracing::error!(error = %other, "config store error");
            coded(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the config store is unavailable",
            )
        }
    }
}

/// A stored config as shown to operators: literal keys replaced by `***`.
fn redacted(config: &Value) -> Value {
    match Config::from_value(config.clone()) {
        Ok(c) => c.to_redacted_json(),
        Err(_) => {
            let mut v = config.clone();
            if let Some(ps) = v.get_mut("providers").and_then(Value::as_object_mut) {
                for p in ps.values_mut() {
                    if let Some(k) = p.get_mut("api_key") {
                        *k = Value::String("***".into());
                    }
                }
            }
            v
        }
    }
}

async fn active_config(AxState(state): AxState<Arc<State>>) -> Response {
    let live = state.live.load_full();
    Json(json!({"version": live.version, "config": live.config.to_redacted_json()})).into_response()
}

async fn list_versions(AxState(state): AxState<Arc<State>>) -> Response {
    let Some(store) = state.store() else {
        return no_store();
    };
    match store.versions().await {
        Ok(v) => Json(json!({"data": v})).into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_version(AxState(state): AxState<Arc<State>>, Path(n): Path<u64>) -> Response {
    let Some(store) = state.store() else {
        return no_store();
    };
    match store.version(n).await {
        Ok(Some(v)) => {
            let mut body = serde_json::to_value(&v.summary).unwrap_or_else(|_| json!({}));
            body["config"] = redacted(&v.config);
            body["version"] = json!(n);
            Json(body).into_response()
        }
        Ok(None) => coded(
            StatusCode::NOT_FOUND,
            "version_not_found",
            &format!("no config version {n}"),
        ),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    config: Value,
    #[serde(default)]
    message: String,
    #[serde(default)]
    activate: bool,
}

async fn create_version(
    AxState(state): AxState<Arc<State>>,
    axum::Extension(actor): axum::Extension<Actor>,
    headers: HeaderMap,
    AdminBody(body): AdminBody,
) -> Response {
    let Some(store) = state.store() else {
        return no_store();
    };
    let Ok(if_match) = if_match(&headers) else {
        return error(StatusCode::BAD_REQUEST, "If-Match must be a version number");
    };
    let body: CreateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                "expected {{\"config\": {{...}}, \"message\": \"...\", \"activate\": false}}: {e}"
            ),
            )
        }
    };
    // The same validation as at startup, plus compilation (unset key
    // variables), so nothing invalid is ever stored.
    let config = match Config::from_value(body.config.clone()) {
        Ok(c) => c,
        Err(e) => return invalid(e),
    };
    if let Err(e) = compiles_here(&state, &config) {
        return invalid(e);
    }
    // With If-Match the author says which version the change was made on:
    // it is activated only if that one is still active (two operators
    // pushing at once: the second gets 412 instead of silently replacing
    // the first's change). Stored first, then activated under the check.
    let guarded = body.activate && if_match.is_some();
    let based_on = if_match.unwrap_or_else(|| state.live.load().version);
    let new = NewVersion {
        config: serde_json::to_value(&config).unwrap_or(body.config),
        author: actor.0.to_string(),
        message: body.message,
        based_on: Some(based_on).filter(|v| *v > 0),
        source: VersionSource::Api,
        activate: body.activate && !guarded,
    };
    match store.create_version(new).await {
        Ok(summary) => {
            if guarded {
                match store.activate(summary.version, &actor.0, if_match).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict { current }) => {
                        return error(
                            StatusCode::PRECONDITION_FAILED,
                            &format!(
                                "stored as version {} but not activated: the active version is {}, not {} (If-Match)",
                                summary.version,
                                current.map_or("none".to_owned(), |c| c.to_string()),
                                based_on
                            ),
                        )
                    }
                    Err(e) => return store_error(e),
                }
            }
            if body.activate {
                state.apply_version(summary.version, config);
            }

            tracing::info!(version = summary.version, actor = %actor.0, activate = body.activate, "config version created");
            (
                StatusCode::CREATED,
                Json(json!({"version": summary.version, "active": body.activate})),
            )
                .into_response()
        }
        Err(e) => store_error(e),
    }
}

/// The `If-Match` version, if any; `Err` when it is not a version number.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    match headers.get(header::IF_MATCH).map(|v| {
        v.to_str()
            .map(|s| s.trim().trim_matches('"').parse::<u64>())
    }) {
        None => Ok(None),
        Some(Ok(Ok(v))) => Ok(Some(v)),
        Some(_) => Err(()),
    }
}

/// Whether `config` compiles on this replica (its key variables are set
/// here): checked before a version is made active anywhere, so the store
/// never names an active version this replica cannot serve.
fn compiles_here(state: &State, config: &Config) -> Result<(), crate::config::ConfigError> {
    config
        .compile(state.client.clone(), &|k| std::env::var(k).ok())
        .map(drop)
}

fn invalid(e: crate::config::ConfigError) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"error": with_problems(
            error_body(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", "the config is invalid"),
            &e.problems,
        )})),
    )
        .into_response()
}

/// An error object with the config's `problems` added.
fn with_problems(mut body: Value, problems: &[crate::config::Problem]) -> Value {
    body["problems"] = json!(problems);
    body
}

fn no_store() -> Response {
    coded(
        StatusCode::NOT_FOUND,
        "no_store",
        "this gateway runs without a config store",
    )
}

async fn activate(
    AxState(state): AxState<Arc<State>>,
    axum::Extension(actor): axum::Extension<Actor>,
    Path(n): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let Some(store) = state.store() else {
        return no_store();
    };
    let Ok(if_match) = if_match(&headers) else {
        return error(StatusCode::BAD_REQUEST, "If-Match must be a version number");
    };
    // Check the version compiles here before making it active anywhere.
    let config = match store.version(n).await {
        Ok(Some(v)) => match Config::from_value(v.config) {
            Ok(c) => match compiles_here(&state, &c) {
                Ok(()) => c,
                Err(e) => return invalid(e),
            },
            Err(e) => return invalid(e),
        },
        Ok(None) => {
            return coded(
                StatusCode::NOT_FOUND,
                "version_not_found",
                &format!("no config version {n}"),
            )
        }
        Err(e) => return store_error(e),
    };
    match store.activate(n, &actor.0, if_match).await {
        Ok(a) => {
            state.apply_version(a.version, config);
            tracing::info!(version = a.version, actor = %actor.0, "config version activated");
            Json(json!({"active": a.version})).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn rollback(
    AxState(state): AxState<Arc<State>>,
    axum::Extension(actor): axum::Extension<Actor>,
) -> Response {
    let Some(store) = state.store() else {
        return no_store();
    };
    // The store picks the version to go back to; one that cannot be served
    // here (a key variable unset on this replica) is undone at once, so the
    // store never names an active version this replica refuses.
    let a = match store.rollback(&actor.0).await {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let config = match store.version(a.version).await {
        Ok(Some(v)) => {
            Config::from_value(v.config).and_then(|c| compiles_here(&state, &c).map(|()| c))
        }
        Ok(None) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "the store rolled back to version {}, which it does not hold",
                    a.version
                ),
            )
        }
        Err(e) => return store_error(e),
    };
    match config {
        Ok(c) => {
            state.apply_version(a.version, c);
            tracing::info!(version = a.version, actor = %actor.0, "config rolled back");
            Json(json!({"active": a.version})).into_response()
        }
        Err(e) => {
            tracing::warn!(version = a.version, actor = %actor.0, "rollback undone: the version does not compile on this replica");
            if let Some(prev) = a.previous {
                // Only if the rollback's version is still the active one:
                // another operator's activation in between is theirs to keep,
                // not overwritten by this undo.
                match store.activate(prev, &actor.0, Some(a.version)).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict { current }) => {
                        tracing::warn!(version = a.version, now = ?current, "rollback not undone: the active version changed meanwhile");
                        let message = format!(
                            "rolled back to version {}, which this replica cannot serve; not undone, because the active version changed meanwhile (now {})",
                            a.version,
                            current.map_or("none".to_owned(), |v| v.to_string())
                        );
                        let body =
                            error_body(StatusCode::CONFLICT, "rollback_not_undone", &message);
                        return (
                            StatusCode::CONFLICT,
                            Json(json!({"error": with_problems(body, &e.problems)})),
                        )
                            .into_response();
                    }
                    Err(err) => {
                        tracing::error!(version = prev, error = %err, "could not undo a rollback to a version this replica cannot serve");
                        return store_error(err);
                    }
                }
            }
            invalid(e)
        }
    }
}

#[derive(Deserialize)]
struct DiffQuery {
    from: u64,
    to: u64,
}

async fn config_diff(AxState(state): AxState<Arc<State>>, Query(q): Query<DiffQuery>) -> Response {
    let Some(store) = state.store() else {
        return no_store();
    };
    let mut configs = Vec::with_capacity(2);
    for n in [q.from, q.to] {
        match store.version(n).await {
            Ok(Some(v)) => configs.push(v.config),
            Ok(None) => {
                return coded(
                    StatusCode::NOT_FOUND,
                    "version_not_found",
                    &format!("no config version {n}"),
                )
            }
            Err(e) => return store_error(e),
        }
    }
    // Compared with their keys, shown without them: a rotated key is a
    // change, and its value never leaves the store.
    let changes = match (
        Config::from_value(configs[0].clone()),
        Config::from_value(configs[1].clone()),
    ) {
        (Ok(a), Ok(b)) => a.diff_redacted(&b),
        _ => diff(&redacted(&configs[0]), &redacted(&configs[1])),
    };
    Json(json!({"from": q.from, "to": q.to, "changes": changes})).into_response()
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn audit(AxState(state): AxState<Arc<State>>, Query(q): Query<AuditQuery>) -> Response {
    let Some(store) = state.store() else {
        return no_store();
    };
    match store.audit(q.limit.unwrap_or(100).min(1000)).await {
        Ok(events) => Json(json!({"data": events})).into_response(),
        Err(e) => store_error(e),
    }
}

async fn status(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.status_json()).into_response()
}

/// The most recorded requests one dry-run reads and replays when asked
/// (`max_records`): a longer window is sampled in blocks of consecutive
/// requests, never reading more (see `traffic::load_window`).
const MAX_DRY_RUN_RECORDS: u64 = 1_000_000;

/// The records a dry-run on a serving replica replays unless asked for more
/// (≈ 300 MB at its peak instead of ≈ 1.5 GB for the full million); the
/// offline `config dry-run` keeps the full default.
const DEFAULT_DRY_RUN_RECORDS: u64 = 200_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunBody {
    #[serde(default)]
    candidate: Option<Value>,
    #[serde(default)]
    candidate_version: Option<u64>,
    #[serde(default)]
    baseline_version: Option<u64>,
    #[serde(default)]
    since_s: Option<u64>,
    #[serde(default)]
    max_records: Option<u64>,
}

async fn dry_run(AxState(state): AxState<Arc<State>>, AdminBody(body): AdminBody) -> Response {
    let Some(store) = state.store() else {
        return no_store();
    };
    const SHAPE: &str = "expected {\"candidate\": {config}} or {\"candidate_version\": N}, \
        with optional \"baseline_version\": N, \"since_s\": seconds and \"max_records\": N";
    let body: DryRunBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("{SHAPE}: {e}")),
    };
    // Held until the replay itself ends (it moves into the blocking task),
    // not until this handler returns: a caller that gives up does not free
    // the slot while its replay still runs.
    let Ok(permit) = state.dry_run.clone().try_acquire_owned() else {
        return coded(
            StatusCode::CONFLICT,
            "dry_run_running",
            "a dry-run is already running on this replica: retry when it ends, \
             or run `config dry-run` offline against the store",
        );
    };
    let load = |n: u64| {
        let store = store.clone();
        async move {
            match store.version(n).await {
                Ok(Some(v)) => Config::from_value(v.config).map_err(invalid),
                Ok(None) => Err(coded(
                    StatusCode::NOT_FOUND,
                    "version_not_found",
                    &format!("no config version {n}"),
                )),
                Err(e) => Err(store_error(e)),
            }
        }
    };
    let candidate = match (body.candidate, body.candidate_version) {
        (Some(c), None) => match Config::from_value(c) {
            Ok(c) => c,
            Err(e) => return invalid(e),
        },
        (None, Some(n)) => match load(n).await {
            Ok(c) => c,
            Err(r) => return r,
        },
        _ => return error(StatusCode::BAD_REQUEST, SHAPE),
    };
    let (baseline, baseline_version) = match body.baseline_version {
        Some(n) => match load(n).await {
            Ok(c) => (c, n),
            Err(r) => return r,
        },
        None => {
            let live = state.live.load_full();
            (live.config.clone(), live.version)
        }
    };
    let since_s = body.since_s.unwrap_or(86_400);
    if since_s == 0 {
        return error(StatusCode::BAD_REQUEST, "since_s must be at least 1");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let from = now.saturating_sub(since_s.saturating_mul(1000));
    let max_records = body.max_records.unwrap_or(DEFAULT_DRY_RUN_RECORDS);
    if !(1..=MAX_DRY_RUN_RECORDS).contains(&max_records) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("max_records must be between 1 and {MAX_DRY_RUN_RECORDS}"),
        );
    }
    let load = crate::traffic::LoadOptions {
        max_records,
        ..crate::traffic::LoadOptions::default()
    };
    let window = match crate::traffic::load_window(&*store, from, u64::MAX, &load, None).await {
        Ok(w) => w,
        Err(e) => return store_error(e),
    };
    let records = window.records;
    if records.is_empty() {
        return coded(
            StatusCode::BAD_REQUEST,
            "no_traffic",
            &format!(
                "no recorded traffic in the last {since_s} s: nothing to replay \
                 (traffic is recorded while traffic.enabled is set and the gateway has a store)"
            ),
        );
    }
    // A caller that goes away drops this handler's future, and with it the
    // guard: the replay stops within a few hundred requests and frees the
    // slot, instead of running to an end nobody reads.
    let cancel = CancelOnDrop::default();
    let opts = crate::traffic::DryRunOptions {
        sample: window.sample,
        cancel: Some(cancel.0.clone()),
        ..crate::traffic::DryRunOptions::default()
    };
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let result = crate::traffic::dry_run(&records, &baseline, &candidate, &opts);
        if let Err(crate::traffic::DryRunError::Cancelled) = &result {
            tracing::info!(
                records = records.len(),
                "dry-run cancelled: its caller went away"
            );
        }
        drop(records);
        release_freed_memory();
        result
    })
    .await;
    drop(cancel);
    match result {
        Ok(Ok(report)) => {
            let mut v = report.to_json();
            v["baseline_version"] = json!(baseline_version);
            v["candidate_version"] = json!(body.candidate_version);
            v["since_s"] = json!(since_s);
            v["verdict"] = serde_json::to_value(report.verdict()).unwrap_or_default();
            Json(v).into_response()
        }
        Ok(Err(crate::traffic::DryRunError::Config(e))) => invalid(e),
        // Only this handler cancels, and only once its caller is gone.
        Ok(Err(crate::traffic::DryRunError::Cancelled)) => coded(
            StatusCode::SERVICE_UNAVAILABLE,
            "dry_run_cancelled",
            "the dry-run was cancelled",
        ),
        Ok(Err(crate::traffic::DryRunError::Empty)) => coded(
            StatusCode::BAD_REQUEST,
            "no_traffic",
            "no recorded traffic in the window: nothing to replay",
        ),
        Err(e) => {
            tracing::error!(error = %e, "dry-run failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "the dry-run failed")
        }
    }
}

/// Sets its flag when dropped: the admin dry-run's cancellation when its
/// caller goes away (after the replay ended, nothing reads the flag).
#[derive(Default)]
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Gives the memory a dry-run freed back to the system. A replay of a long
/// window peaks at a few hundred MB on its own threads, and glibc keeps what
/// those threads freed in their arenas: without this the gateway's RSS stayed
/// at the peak of its largest dry-run for good (measured in a soak: 31 MB
/// before, 317 MB after eight dry-runs of 150k records, never lower).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of the allocator's
    // arenas to the system; it takes the arenas' own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
