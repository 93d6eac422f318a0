//! The JSON config file: providers, models, routes and the settings of the
//! layers, parsed with every problem reported at once, then compiled into
//! the runtime [`Route`](crate::route::Route)s and
//! [`Providers`](crate::provider::Providers).
//!
//! See `docs/configuration.md` for every field, its default and meaning.
//!
//! ```
//! use modelux::config::Config;
//! let config = Config::from_json(r#"{
//!     "providers": {
//!         "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"}
//!     },
//!     "models": {"gpt-4o-mini": {"provider": "openai"}},
//!     "routes": {"default": {"attempts": [{"model": "gpt-4o-mini", "timeout_ms": 3000}]}}
//! }"#).unwrap();
//! let env = |var: &str| (var == "OPENAI_API_KEY").then(|| "sk-test".to_owned());
//! let compiled = config.compile(modelux::provider::http_client(), &env).unwrap();
//! assert!(compiled.resolve("default").is_some());
//! assert!(compiled.resolve("gpt-4o-mini").is_some());
//! assert!(compiled.resolve("gpt-5").is_none());
//! ```
//!
//! A config with problems reports all of them, each at a JSON path:
//!
//! ```
//! use modelux::config::Config;
//! let err = Config::from_json(r#"{
//!     "providers": {"p": {"kind": "openai", "base_url": "ftp://x"}},
//!     "models": {"m": {"provider": "q"}},
//!     "routes": {"r": {"attempts": []}}
//! }"#).unwrap_err();
//! assert_eq!(err.to_string(), "\
//! $.providers.p.base_url: must be an absolute http:// or https:// URL
//! $.models.m.provider: unknown provider \"q\"; defined: \"p\"
//! $.routes.r.attempts: must list at least one attempt");
//! ```

mod build;
mod diff;
mod parse;
mod settings;
mod validate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use build::{ClientKey, Compiled};
pub use diff::{diff, Change};

/// What the admin API shows in place of a literal `api_key`. Validation
/// refuses it as a key, so a config shown and pushed back unedited cannot
/// send it to a provider.
///
/// ```
/// use modelux::config::{Config, REDACTED};
/// assert_eq!(REDACTED, "***");
/// let config = Config::from_json(r#"{
///     "providers": {"p": {"kind": "openai", "base_url": "https://example.com/v1", "api_key": "sk-secret"}},
///     "models": {"m": {"provider": "p"}}
/// }"#).unwrap();
/// let shown = config.to_redacted_json();
/// assert_eq!(shown["providers"]["p"]["api_key"], REDACTED);
/// // Pushed back unedited, the mask is refused as a key.
/// let err = Config::from_value(shown).unwrap_err();
/// assert_eq!(err.problems[0].path, "$.providers.p.api_key");
/// ```
pub const REDACTED: &str = "***";

/// Replaces literal keys inside `value` (found at `path`) with [`REDACTED`]:
/// the value itself when `path` names a provider's `api_key`, else every
/// `api_key` of the providers it holds.
fn redact_keys(path: &str, value: &mut Value) {
    let at_key = path.starts_with("$.providers") && path.ends_with(".api_key");
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) if at_key => {
            *value = Value::String(REDACTED.to_owned())
        }
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "api_key" && !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_keys("", v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| redact_keys("", v)),
        _ => {}
    }
}
pub use settings::{
    AttemptConfig, ClientConfig, HealthSettings, LatencySettings, ModelConfig, ProviderConfig,
    RetryBudgetSettings, RouteConfig, ServerSettings, TraceSettings, TrafficSettings,
};

use crate::provider::HttpClient;

/// A whole config file.
///
/// Build one with [`Config::from_json`] or [`Config::from_value`], which
/// validate; `Deserialize` validates the same way. `Serialize` writes literal
/// API keys as they are: use [`Config::to_redacted_json`] to show a config.
///
/// ```
/// use modelux::config::Config;
/// let config: Config = serde_json::from_str(r#"{
///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
///     "models": {"llama": {"provider": "local"}}
/// }"#).unwrap();
/// assert!(config.routes.is_empty());
/// assert_eq!(config.traces.capacity, 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    /// Upstream providers, by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Models, by the name clients and routes use.
    pub models: BTreeMap<String, ModelConfig>,
    /// Named routes; a request's `model` names one of these (or a model).
    pub routes: BTreeMap<String, RouteConfig>,
    /// Health scoring settings.
    pub health: HealthSettings,
    /// Latency ranking settings.
    pub latency: LatencySettings,
    /// The shared retry budget.
    pub retry_budget: RetryBudgetSettings,
    /// The reference gateway's server settings.
    pub server: ServerSettings,
    /// Decision trace settings.
    pub traces: TraceSettings,
    /// The traffic log kept for dry-runs.
    #[serde(default, skip_serializing_if = "TrafficSettings::is_default")]
    pub traffic: TrafficSettings,
    /// Clients allowed to call `/v1`, by name. When empty, `/v1` is open.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clients: BTreeMap<String, ClientConfig>,
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Config::from_value(v).map_err(serde::de::Error::custom)
    }
}

/// One thing wrong with a config: where (a JSON path such as
/// `$.routes.default.attempts[1].model`) and what.
///
/// Keys that are not plain identifiers are quoted: `$.models["gemini-2.5-flash"]`.
///
/// ```
/// use modelux::config::Problem;
/// let p = Problem { path: "$.routes.r.attempts".into(), message: "must list at least one attempt".into() };
/// assert_eq!(p.to_string(), "$.routes.r.attempts: must list at least one attempt");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where, as a JSON path from the document root `$`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a config. `Display` prints one per line.
///
/// ```
/// use modelux::config::Config;
/// let err = Config::from_json("{\"providers\": {},\n \"models\": }").unwrap_err();
/// assert_eq!(err.problems.len(), 1);
/// assert_eq!(err.problems[0].path, "$");
/// assert!(err.to_string().contains("line 2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The problems, in document order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates a config file.
    ///
    /// A syntax error is one problem at `$` giving its line and column;
    /// otherwise every problem in the document is reported.
    ///
    /// ```
    /// use modelux::config::Config;
    /// let config = Config::from_json(r#"{
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    ///     "models": {"llama": {"provider": "local", "upstream_model": "meta-llama/Llama-3.1-8B"}}
    /// }"#).unwrap();
    /// assert_eq!(config.models["llama"].upstream_model.as_deref(), Some("meta-llama/Llama-3.1-8B"));
    ///
    /// let err = Config::from_json(r#"{"providers": {}, "models": {}, "extra": 1}"#).unwrap_err();
    /// assert_eq!(err.problems[1].path, "$.extra");
    /// ```
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => Config::from_value(v),
            Err(e) => Err(ConfigError {
                problems: vec![Problem {
                    path: "$".to_owned(),
                    message: format!("invalid JSON: {e}"),
                }],
            }),
        }
    }

    /// Validates an already-parsed JSON document.
    ///
    /// ```
    /// use modelux::config::Config;
    /// let v = serde_json::json!({
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    ///     "models": {"llama": {"provider": "local", "timeout_ms": 0}}
    /// });
    /// let err = Config::from_value(v).unwrap_err();
    /// assert_eq!(err.problems[0].path, "$.models.llama.timeout_ms");
    /// ```
    pub fn from_value(v: Value) -> Result<Config, ConfigError> {
        parse::config(&v).map_err(|problems| ConfigError { problems })
    }

    /// Checks a config built or changed in code: the semantic checks
    /// [`from_value`](Self::from_value) makes (references, ranges, URLs, key settings).
    ///
    /// ```
    /// use modelux::config::{Config, ModelConfig};
    /// let mut config = Config::default();
    /// config.models.insert("m".into(), ModelConfig {
    ///     provider: "nowhere".into(), upstream_model: None, prefill: false, price: None, timeout_ms: 1000,
    ///     max_output_tokens: None,
    /// });
    /// let err = config.validate().unwrap_err();
    /// assert_eq!(err.problems[0].path, "$.models.m.provider");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::config(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The config as JSON with every literal `api_key` replaced by `"***"`,
    /// safe to log or serve from an admin endpoint.
    ///
    /// ```
    /// use modelux::config::Config;
    /// let config = Config::from_json(r#"{
    ///     "providers": {"p": {"kind": "openai", "base_url": "https://example.com/v1", "api_key": "sk-secret"}},
    ///     "models": {"m": {"provider": "p"}}
    /// }"#).unwrap();
    /// let shown = config.to_redacted_json();
    /// assert_eq!(shown["providers"]["p"]["api_key"], "***");
    /// assert!(!shown.to_string().contains("sk-secret"));
    /// ```
    pub fn to_redacted_json(&self) -> Value {
        let mut shown = self.clone();
        for p in shown.providers.values_mut() {
            if p.api_key.is_some() {
                p.api_key = Some(REDACTED.to_owned());
            }
        }
        serde_json::to_value(&shown).unwrap_or(Value::Null)
    }

    /// Every difference from `self` to `to`, as [`diff`] gives it, with
    /// literal keys compared as they are and shown as `"***"`: a rotated key
    /// is a change an operator sees, and its value is never shown.
    ///
    /// ```
    /// use modelux::config::Config;
    /// let with = |key: &str| Config::from_json(&format!(r#"{{
    ///     "providers": {{"p": {{"kind": "openai", "base_url": "https://example.com/v1", "api_key": "{key}"}}}},
    ///     "models": {{"m": {{"provider": "p"}}}}
    /// }}"#)).unwrap();
    /// let changes = with("sk-old").diff_redacted(&with("sk-new"));
    /// assert_eq!(changes.len(), 1);
    /// assert_eq!(changes[0].path, "$.providers.p.api_key");
    /// assert_eq!(changes[0].from.as_ref().unwrap(), "***");
    /// assert_eq!(changes[0].to.as_ref().unwrap(), "***");
    /// ```
    pub fn diff_redacted(&self, to: &Config) -> Vec<Change> {
        let as_json = |c: &Config| serde_json::to_value(c).unwrap_or(Value::Null);
        let mut changes = diff(&as_json(self), &as_json(to));
        for c in &mut changes {
            for side in [&mut c.from, &mut c.to].into_iter().flatten() {
                redact_keys(&c.path, side);
            }
        }
        changes
    }

    /// Builds the runtime values: one [`Target`](crate::provider::Target)
    /// per model, the [`Providers`](crate::provider::Providers), every route,
    /// and a single-attempt route per model.
    ///
    /// `env` looks up environment variables for `api_key_env` (pass
    /// `&|k| std::env::var(k).ok()` in production). A variable that is unset
    /// or empty is a problem at `$.providers.<name>.api_key_env` naming the
    /// variable; no problem ever shows a key. The config is validated again
    /// first, so a config changed in code cannot compile into bad routes.
    ///
    /// ```
    /// use modelux::config::Config;
    /// let config = Config::from_json(r#"{
    ///     "providers": {"openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"}},
    ///     "models": {"gpt-4o-mini": {"provider": "openai"}}
    /// }"#).unwrap();
    /// let client = modelux::provider::http_client();
    /// let err = config.compile(client.clone(), &|_| None).unwrap_err();
    /// assert_eq!(err.to_string(), "$.providers.openai.api_key_env: environment variable OPENAI_API_KEY is not set");
    /// let ok = config.compile(client, &|_| Some("sk-test".into())).unwrap();
    /// assert_eq!(ok.targets.len(), 1);
    /// ```
    pub fn compile(
        &self,
        client: HttpClient,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Compiled, ConfigError> {
        build::compile(self, client, env)
    }
}

#[cfg(test)]
mod tests;
