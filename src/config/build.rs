//! Turns a validated [`Config`] into the runtime types the layers use.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::settings::{ModelConfig, RouteConfig};
use super::validate::join;
use super::{Config, ConfigError, Problem};
use crate::provider::{HttpClient, Provider, ProviderKind, Providers, Target};
use crate::route::{Candidate, RetryOn, Route, RoutePolicy};
use crate::Secret;

/// A config compiled into runtime values: routes ready to bind requests to,
/// and the providers that serve them.
///
/// ```
/// use modelux::config::Config;
/// let config = Config::from_json(r#"{
///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
///     "models": {"llama": {"provider": "local"}},
///     "routes": {"default": {"attempts": [{"model": "llama"}]}}
/// }"#).unwrap();
/// let compiled = config.compile(modelux::provider::http_client(), &|_| None).unwrap();
/// assert_eq!(compiled.route_names().collect::<Vec<_>>(), ["default", "llama"]);
/// assert_eq!(compiled.targets.len(), 1);
/// assert!(compiled.providers.get("local").is_some());
/// ```
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The routes of `routes`, by name.
    pub routes: BTreeMap<Arc<str>, Arc<Route>>,
    /// A single-attempt route for every model, by model name: that model,
    /// its `timeout_ms`, and the default policy.
    pub models: BTreeMap<Arc<str>, Arc<Route>>,
    /// Every configured provider, by name: the leaf service of the stack.
    pub providers: Providers,
    /// One target per model, in model-name order, shared by every route
    /// that names the model.
    pub targets: Vec<Arc<Target>>,
    /// Clients allowed to call `/v1` (empty: `/v1` is open).
    pub clients: Vec<ClientKey>,
}

/// A client's name and the SHA-256 of its key.
///
/// ```
/// use modelux::config::Config;
/// use sha2::{Digest, Sha256};
/// let config = Config::from_json(r#"{
///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
///     "models": {"m": {"provider": "local"}},
///     "clients": {"team-a": {"key_env": "TEAM_A_KEY"}}
/// }"#).unwrap();
/// let env = |v: &str| (v == "TEAM_A_KEY").then(|| "secret-a".to_owned());
/// let compiled = config.compile(modelux::provider::http_client(), &env).unwrap();
/// let key = &compiled.clients[0];
/// assert_eq!(&*key.name, "team-a");
/// let digest: [u8; 32] = Sha256::digest(b"secret-a").into();
/// assert_eq!(key.sha256, digest);
/// // `Debug` never shows the digest.
/// assert_eq!(format!("{key:?}"), r#"ClientKey { name: "team-a", .. }"#);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey {
    /// The client's name (recorded in traces and metrics, never the key).
    pub name: Arc<str>,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Compiled {
    /// The client whose key is `key`, comparing digests in constant time
    /// (every configured client is compared, whatever matches).
    ///
    /// ```
    /// use modelux::config::Config;
    /// let config = Config::from_json(r#"{
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    ///     "models": {"m": {"provider": "local"}},
    ///     "clients": {"team-a": {"key_env": "TEAM_A_KEY"}}
    /// }"#).unwrap();
    /// let env = |v: &str| (v == "TEAM_A_KEY").then(|| "secret-a".to_owned());
    /// let compiled = config.compile(modelux::provider::http_client(), &env).unwrap();
    /// assert_eq!(compiled.client_for("secret-a").as_deref(), Some("team-a"));
    /// assert!(compiled.client_for("nope").is_none());
    /// ```
    pub fn client_for(&self, key: &str) -> Option<Arc<str>> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for c in &self.clients {
            let diff = c
                .sha256
                .iter()
                .zip(&digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(c.name.clone());
            }
        }
        found
    }
}

impl Compiled {
    /// The route a request's `model` names: a route of that name, else the
    /// single-attempt route of a model of that name, else `None`.
    ///
    /// ```
    /// use modelux::config::Config;
    /// let config = Config::from_json(r#"{
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    ///     "models": {"a": {"provider": "local"}, "b": {"provider": "local"}},
    ///     "routes": {"a": {"attempts": [{"model": "b"}]}}
    /// }"#).unwrap();
    /// let compiled = config.compile(modelux::provider::http_client(), &|_| None).unwrap();
    /// // A route wins over a model of the same name.
    /// assert_eq!(&*compiled.resolve("a").unwrap().candidates[0].target.id.model, "b");
    /// assert_eq!(compiled.resolve("b").unwrap().candidates.len(), 1);
    /// assert!(compiled.resolve("c").is_none());
    /// ```
    pub fn resolve(&self, name: &str) -> Option<Arc<Route>> {
        self.routes
            .get(name)
            .or_else(|| self.models.get(name))
            .cloned()
    }

    /// Every name [`resolve`](Self::resolve) accepts, each once: route names
    /// in order, then the names of models that are not also routes, in order.
    ///
    /// ```
    /// use modelux::config::Config;
    /// let config = Config::from_json(r#"{
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    ///     "models": {"a": {"provider": "local"}, "b": {"provider": "local"}},
    ///     "routes": {"z": {"attempts": [{"model": "a"}]}, "b": {"attempts": [{"model": "a"}]}}
    /// }"#).unwrap();
    /// let compiled = config.compile(modelux::provider::http_client(), &|_| None).unwrap();
    /// assert_eq!(compiled.route_names().collect::<Vec<_>>(), ["b", "z", "a"]);
    /// ```
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(|k| &**k).chain(
            self.models
                .keys()
                .filter(|k| !self.routes.contains_key(*k))
                .map(|k| &**k),
        )
    }
}

fn policy(r: &RouteConfig) -> Result<RoutePolicy, String> {
    Ok(RoutePolicy {
        retry_on: RetryOn::parse(&r.retry_on)
            .map_err(|t| format!("unknown retry_on token {t:?}"))?,
        total_budget: Duration::from_millis(r.total_budget_ms),
        same_target_retries: r.same_target_retries,
        backoff_base: Duration::from_millis(r.backoff_base_ms),
        backoff_max: Duration::from_millis(r.backoff_max_ms),
        retry_after_cap: Duration::from_millis(r.retry_after_cap_ms),
        stream_idle_timeout: Duration::from_millis(r.stream_idle_timeout_ms),
        stream_max: Duration::from_millis(r.stream_max_ms),
        continuation: r.continuation.clone(),
        regenerate_max_chars: r.regenerate_max_chars,
    })
}

fn target(provider: &Arc<str>, kind: ProviderKind, name: &str, m: &ModelConfig) -> Target {
    let mut t = Target::new(provider.clone(), name);
    if let Some(up) = &m.upstream_model {
        t.upstream_model = up.as_str().into();
    }
    t.prefill = m.prefill;
    t.multiple_choices = kind != ProviderKind::Anthropic;
    t.price = m.price;
    t.max_output_tokens = m.max_output_tokens;
    t
}

/// The single-attempt route a model name resolves to. Its budget is the
/// default one, stretched to the model's timeout when that is longer so the
/// timeout is not cut short.
fn model_route(name: Arc<str>, t: Arc<Target>, timeout_ms: u64) -> Route {
    let timeout = Duration::from_millis(timeout_ms);
    let mut route = Route::fallback("", vec![Candidate::new(t, timeout)]);
    route.name = name;
    route.policy.total_budget = route.policy.total_budget.max(timeout);
    route
}

/// A provider's extra headers, those of `headers_env` read from the
/// environment and marked sensitive. Validation has checked the names and
/// the literal values; a variable that is unset, empty or not sendable is a
/// problem (never quoting its value).
fn extra_headers(
    path: &str,
    p: &crate::config::ProviderConfig,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    let named = |name: &str| http::HeaderName::from_bytes(name.as_bytes()).ok();
    for (name, value) in &p.headers {
        if let (Some(name), Ok(value)) = (named(name), http::HeaderValue::from_str(value)) {
            out.insert(name, value);
        }
    }
    for (name, var) in &p.headers_env {
        let at = join(&join(path, "headers_env"), name);
        let value = env(var).map(|v| v.trim().to_owned());
        let problem = match &value {
            None => Some(format!("environment variable {var} is not set")),
            Some(v) if v.is_empty() => Some(format!("environment variable {var} is empty")),
            Some(v) if !super::validate::sendable_value(v) => Some(format!(
                "environment variable {var} must be printable ASCII: it could not be sent in a header"
            )),
            Some(_) => None,
        };
        if let Some(message) = problem {
            problems.push(Problem { path: at, message });
            continue;
        }
        let value = value.and_then(|v| http::HeaderValue::from_str(&v).ok());
        if let (Some(name), Some(mut value)) = (named(name), value) {
            value.set_sensitive(true);
            out.insert(name, value);
        }
    }
    out
}

pub(crate) fn compile(
    config: &Config,
    client: HttpClient,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Compiled, ConfigError> {
    let mut problems = super::validate::config(config);
    let rejected = |path: &str| problems.iter().any(|p| p.path == path);

    let mut keys: BTreeMap<&str, Option<Secret>> = BTreeMap::new();
    let mut headers: BTreeMap<&str, http::HeaderMap> = BTreeMap::new();
    let mut env_problems = Vec::new();
    for (name, p) in &config.providers {
        let path = join("$.providers", name);
        let key = match (&p.api_key, &p.api_key_env) {
            (Some(key), None) => Some(Secret::new(key.as_str())),
            (None, Some(var)) if !rejected(&join(&path, "api_key_env")) => {
                match env(var).map(|v| v.trim().to_owned()) {
                    Some(v) if !v.is_empty() && super::validate::sendable_key(&v) => {
                        Some(Secret::new(v))
                    }
                    Some(v) if !v.is_empty() => {
                        env_problems.push(Problem {
                            path: join(&path, "api_key_env"),
                            message: format!(
                                "environment variable {var} must be printable ASCII without spaces: it could not be sent in a header"
                            ),
                        });
                        None
                    }
                    Some(_) => {
                        env_problems.push(Problem {
                            path: join(&path, "api_key_env"),
                            message: format!("environment variable {var} is empty"),
                        });
                        None
                    }
                    None => {
                        env_problems.push(Problem {
                            path: join(&path, "api_key_env"),
                            message: format!("environment variable {var} is not set"),
                        });
                        None
                    }
                }
            }
            _ => None,
        };
        keys.insert(name, key);
        headers.insert(name, extra_headers(&path, p, env, &mut env_problems));
    }
    let mut clients = Vec::with_capacity(config.clients.len());
    for (name, c) in &config.clients {
        let path = join("$.clients", name);
        let digest = match (&c.key_sha256, &c.key_env) {
            (Some(hex), None) => decode_hex32(hex),
            (None, Some(var)) => match env(var).map(|v| v.trim().to_owned()) {
                Some(v) if !v.is_empty() => {
                    use sha2::Digest;
                    Some(sha2::Sha256::digest(v.as_bytes()).into())
                }
                _ => {
                    env_problems.push(Problem {
                        path: join(&path, "key_env"),
                        message: format!("environment variable {var} is not set or empty"),
                    });
                    None
                }
            },
            _ => None,
        };
        if let Some(sha256) = digest {
            clients.push(ClientKey {
                name: name.as_str().into(),
                sha256,
            });
        }
    }
    problems.extend(env_problems);
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }

    let mut provider_names: BTreeMap<&str, (Arc<str>, ProviderKind)> = BTreeMap::new();
    let mut providers = Vec::with_capacity(config.providers.len());
    for (name, p) in &config.providers {
        let arc: Arc<str> = name.as_str().into();
        let key = keys.remove(name.as_str()).flatten();
        let provider = Provider::new(
            p.kind,
            &p.base_url,
            key,
            client
                .with_http2(p.http2)
                .with_http2_max_streams(p.http2_max_streams),
        );
        let provider = match headers.remove(name.as_str()) {
            Some(extra) if !extra.is_empty() => provider.with_headers(&extra),
            _ => provider,
        };
        providers.push((arc.clone(), provider));
        provider_names.insert(name, (arc, p.kind));
    }

    let mut targets: BTreeMap<&str, Arc<Target>> = BTreeMap::new();
    let mut models = BTreeMap::new();
    for (name, m) in &config.models {
        // Validation guarantees the provider exists.
        let Some((provider, kind)) = provider_names.get(m.provider.as_str()) else {
            problems.push(Problem {
                path: join(&join("$.models", name), "provider"),
                message: "unknown provider".to_owned(),
            });
            continue;
        };
        let t = Arc::new(target(provider, *kind, name, m));
        let route_name: Arc<str> = t.id.model.clone();
        models.insert(
            route_name.clone(),
            Arc::new(model_route(route_name, t.clone(), m.timeout_ms)),
        );
        targets.insert(name, t);
    }

    let mut routes = BTreeMap::new();
    for (name, r) in &config.routes {
        let path = join("$.routes", name);
        let policy = match policy(r) {
            Ok(p) => p,
            Err(e) => {
                problems.push(Problem {
                    path: join(&path, "retry_on"),
                    message: e,
                });
                continue;
            }
        };
        let mut candidates = Vec::with_capacity(r.attempts.len());
        for (i, a) in r.attempts.iter().enumerate() {
            match targets.get(a.model.as_str()) {
                Some(t) => candidates.push(Candidate::new(
                    t.clone(),
                    Duration::from_millis(a.timeout_ms),
                )),
                None => problems.push(Problem {
                    path: format!(
                        "{}.model",
                        super::validate::index(&join(&path, "attempts"), i)
                    ),
                    message: "unknown model".to_owned(),
                }),
            }
        }
        let name: Arc<str> = name.as_str().into();
        routes.insert(
            name.clone(),
            Arc::new(Route {
                name,
                strategy: r.strategy,
                candidates,
                policy,
                handles: Default::default(),
            }),
        );
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }

    Ok(Compiled {
        routes,
        models,
        providers: Providers::new(providers),
        targets: targets.into_values().collect(),
        clients,
    })
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}
