//! Keeping a gateway on the store's active config version.
//!
//! Each replica decides for itself: it compares the store's active version
//! with the one it serves and applies the difference. A push channel
//! (PostgreSQL `LISTEN`) makes that fast; a poll every second is the safety
//! net for notifications lost while the connection was down. A replica that
//! cannot reach the store keeps serving its last version and says so in
//! `/healthz`, `/admin/status` and `modelux_store_up`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Gateway, State};
use crate::config::{Config, ConfigError, Problem};
use crate::store::{ConfigStore, NewVersion, StoreError, VersionSource};

/// How often the active version is polled besides notifications.
///
/// ```
/// # use std::time::Duration;
/// # use modelux::config::Config;
/// # use modelux::gateway::Gateway;
/// # use modelux::store::{NewVersion, VersionSource};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # let mut v2 = serde_json::json!({
/// #     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
/// #     "models": {"llama": {"provider": "local"}}
/// # });
/// # let config = Config::from_value(v2.clone()).unwrap();
/// # v2["models"]["qwen"] = serde_json::json!({"provider": "local"});
/// let store = modelux::store::open("memory").await.unwrap(); // no push channel
/// let gateway = Gateway::with_store(store.clone(), "memory", Some((config, "f.json"))).await.unwrap();
/// // Another replica activates version 2 (`v2`: the config with one more model).
/// store.create_version(NewVersion { config: v2, author: "alice".into(), message: "add qwen".into(),
///     based_on: Some(1), source: VersionSource::Api, activate: true }).await.unwrap();
/// tokio::time::sleep(Duration::from_millis(999)).await;
/// assert_eq!(gateway.version(), 1);
/// // The first poll, POLL_INTERVAL (1 s) after the start, applies it.
/// tokio::time::sleep(Duration::from_millis(2)).await;
/// assert_eq!(gateway.version(), 2);
/// # }
/// ```
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct SyncStatus {
    pub(crate) applied_version: u64,
    pub(crate) applied_at: String,
    pub(crate) store_url: Option<String>,
    pub(crate) store_ok: bool,
    pub(crate) last_store_error: Option<String>,
    pub(crate) last_store_error_at: Option<String>,
    pub(crate) apply_error: Option<String>,
    /// The active version this replica last failed to apply: the store is
    /// not asked for it again (a process's environment does not change, so
    /// neither would the outcome) and the error is logged once, not every
    /// poll.
    pub(crate) failed_version: Option<u64>,
}

impl SyncStatus {
    pub(crate) fn new(version: u64) -> Self {
        SyncStatus {
            applied_version: version,
            applied_at: rfc3339_now(),
            store_url: None,
            store_ok: true,
            last_store_error: None,
            last_store_error_at: None,
            apply_error: None,
            failed_version: None,
        }
    }
}

/// Why a gateway could not start from a store
/// ([`Gateway::with_store`]).
///
/// ```
/// use modelux::gateway::{Gateway, StartError};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = modelux::store::open("memory").await.unwrap();
/// match Gateway::with_store(store, "memory", None).await {
///     Err(StartError::Empty) => {} // start once with a config file
///     other => panic!("an empty store cannot start: {:?}", other.map(|g| g.version())),
/// }
/// # }
/// ```
#[derive(Debug)]
pub enum StartError {
    /// The store failed.
    Store(StoreError),
    /// The config (from the file or the store) is invalid here.
    Config(ConfigError),
    /// The store holds no active version and no file was given.
    Empty,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "config store: {e}"),
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Empty => {
                f.write_str("the store has no active config version; start once with --config FILE")
            }
        }
    }
}

impl std::error::Error for StartError {}

impl Gateway {
    /// Starts a gateway on the store's active version. With `file`, an empty
    /// store imports it as version 1 and activates it; on later starts it is
    /// imported as a new active version only if it differs from the last
    /// version imported from a file, so restarting with the same file keeps
    /// a rollback made through the API. Then keeps following the store.
    ///
    /// Finished requests are recorded in the store's traffic log (for
    /// dry-runs) while the active config's `traffic.enabled` is set.
    ///
    /// ```
    /// use modelux::config::Config;
    /// use modelux::gateway::Gateway;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = modelux::store::open("memory").await.unwrap();
    /// let config = Config::from_json(r#"{
    ///     "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    ///     "models": {"llama": {"provider": "local"}}
    /// }"#).unwrap();
    ///
    /// // An empty store and no file: nothing to serve.
    /// let err = Gateway::with_store(store.clone(), "memory", None).await.unwrap_err();
    /// assert!(matches!(err, modelux::gateway::StartError::Empty));
    /// assert!(err.to_string().contains("no active config version"));
    ///
    /// // The file becomes version 1, active.
    /// let gateway = Gateway::with_store(store.clone(), "memory", Some((config.clone(), "modelux.json")))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(gateway.version(), 1);
    /// assert_eq!(store.active().await.unwrap().unwrap().version, 1);
    /// assert_eq!(gateway.status()["store"], "memory");
    /// assert!(gateway.traffic().is_some());
    ///
    /// // Restarting with the same file imports nothing.
    /// let again = Gateway::with_store(store.clone(), "memory", Some((config, "modelux.json")))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(again.version(), 1);
    /// assert_eq!(store.versions().await.unwrap().len(), 1);
    /// # }
    /// ```
    pub async fn with_store(
        store: Arc<dyn ConfigStore>,
        store_url: &str,
        file: Option<(Config, &str)>,
    ) -> Result<Gateway, StartError> {
        if let Some((config, name)) = file {
            // Compiled against this process's environment before the store
            // is touched: a file naming a key variable this replica lacks
            // would otherwise become the fleet's active version, which no
            // replica started without the variable could then serve.
            config
                .compile(offline_client(), &super::env_var)
                .map_err(StartError::Config)?;
            let value = serde_json::to_value(&config).map_err(|e| {
                StartError::Config(ConfigError {
                    problems: vec![Problem {
                        path: "$".into(),
                        message: e.to_string(),
                    }],
                })
            })?;
            let sha = sha256_hex(crate::store::canonical_json(&value).as_bytes());
            let last = store.last_file_import().await.map_err(StartError::Store)?;
            // A file imported before and superseded since is the previous
            // deploy's, on a replica that restarted before it was updated:
            // imported again, it rolled the whole fleet back.
            let superseded = last.as_ref().map(|v| v.sha256.as_str()) != Some(sha.as_str())
                && store
                    .versions()
                    .await
                    .map_err(StartError::Store)?
                    .iter()
                    .any(|v| v.source == VersionSource::File && v.sha256 == sha);
            if superseded {
                tracing::warn!(
                    file = name,
                    "config file was imported before and a newer one since: not imported again \
                     (activate its version through the admin API to go back to it)"
                );
            } else if last.as_ref().map(|v| v.sha256.as_str()) != Some(sha.as_str()) {
                let based_on = store
                    .active()
                    .await
                    .map_err(StartError::Store)?
                    .map(|a| a.version);
                let created = store
                    .create_version(NewVersion {
                        config: value,
                        author: "file".into(),
                        message: format!("imported from {name}"),
                        based_on,
                        source: VersionSource::File,
                        activate: true,
                    })
                    .await;
                match created {
                    Ok(v) => tracing::info!(
                        version = v.version,
                        file = name,
                        "config file imported as a new active version"
                    ),
                    // Another replica started with the same file at the same
                    // moment and imported it first.
                    Err(StoreError::AlreadyImported(version)) => tracing::info!(
                        version,
                        file = name,
                        "config file imported by another replica meanwhile"
                    ),
                    Err(e) => return Err(StartError::Store(e)),
                }
            }
        }
        let active = store
            .active()
            .await
            .map_err(StartError::Store)?
            .ok_or(StartError::Empty)?;
        let stored = store
            .version(active.version)
            .await
            .map_err(StartError::Store)?
            .ok_or(StartError::Store(StoreError::NotFound(active.version)))?;
        let (config, version, apply_error) = match servable(stored.config) {
            Ok(c) => (c, active.version, None),
            // The fleet's active version names a key variable this replica
            // lacks (activated through another replica): refusing to start
            // crash-looped every restart and scale-up of this one. It
            // serves the newest older version it can, and says so.
            Err(e) => match newest_servable_before(&*store, active.version).await? {
                Some((c, v)) => {
                    tracing::error!(
                        active = active.version,
                        serving = v,
                        error = %e,
                        "the active config version cannot be served here; serving the newest older one that can"
                    );
                    (c, v, Some(format!("version {}: {e}", active.version)))
                }
                None => return Err(StartError::Config(e)),
            },
        };
        let traffic = crate::traffic::TrafficRecorder::start(store.clone(), &config.traffic);
        let gateway = Gateway::build(config, version, Some(traffic)).map_err(StartError::Config)?;
        if let Some(e) = apply_error {
            let mut st = gateway.state.sync_status();
            st.apply_error = Some(e);
            st.failed_version = Some(active.version);
            ::metrics::gauge!("modelux_config_apply_failed").set(1.0);
        }
        let _ = gateway.state.store.set(store.clone());
        gateway.state.sync_status().store_url = Some(crate::store::redact_url(store_url));
        ::metrics::gauge!("modelux_store_up").set(1.0);
        tokio::spawn(follow(Arc::downgrade(&gateway.state), store));
        Ok(gateway)
    }
}

/// A client for compiling a config only to check it (compiling sends
/// nothing): no proxy, so the environment's proxy variables are read, and
/// warned about, once, by the gateway's own client.
fn offline_client() -> crate::provider::HttpClient {
    crate::provider::HttpClient::builder()
        .direct()
        .build()
        .expect("a client without a proxy always builds")
}

/// Older versions tried, newest first, when the active one cannot be served.
const FALLBACK_VERSIONS: usize = 20;

/// A stored config that validates and compiles here (its key variables set).
fn servable(value: serde_json::Value) -> Result<Config, crate::config::ConfigError> {
    let config = Config::from_value(value)?;
    config.compile(offline_client(), &super::env_var)?;
    Ok(config)
}

/// The newest of the versions before `active` that this replica can serve.
async fn newest_servable_before(
    store: &dyn ConfigStore,
    active: u64,
) -> Result<Option<(Config, u64)>, StartError> {
    let mut older = store.versions().await.map_err(StartError::Store)?;
    older.retain(|v| v.version < active);
    older.sort_by_key(|v| std::cmp::Reverse(v.version));
    for v in older.iter().take(FALLBACK_VERSIONS) {
        let Some(stored) = store.version(v.version).await.map_err(StartError::Store)? else {
            continue;
        };
        if let Ok(c) = servable(stored.config) {
            return Ok(Some((c, v.version)));
        }
    }
    Ok(None)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Follows the store until the gateway is dropped.
async fn follow(state: Weak<State>, store: Arc<dyn ConfigStore>) {
    let mut changes = store.changes();
    loop {
        let pushed = async {
            match changes.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = pushed => {},
            _ = tokio::time::sleep(POLL_INTERVAL) => {},
        }
        let Some(state) = state.upgrade() else { return };
        let result = check(&state, &*store).await;
        let mut st = state.sync_status();
        match result {
            Ok(()) => {
                if !st.store_ok {
                    tracing::info!("config store reachable again");
                }
                st.store_ok = true;
                ::metrics::gauge!("modelux_store_up").set(1.0);
            }
            Err(e) => {
                if st.store_ok {
                    tracing::warn!(error = %e, "config store unreachable; serving the last active version");
                }
                st.store_ok = false;
                st.last_store_error = Some(e.to_string());
                st.last_store_error_at = Some(rfc3339_now());
                ::metrics::gauge!("modelux_store_up").set(0.0);
            }
        }
    }
}

async fn check(state: &State, store: &dyn ConfigStore) -> Result<(), StoreError> {
    let Some(active) = store.active().await? else {
        return Ok(());
    };
    if active.version == state.live.load().version {
        // Back on a version this replica serves (a rollback past the one it
        // could not apply): the old apply error no longer holds.
        let mut st = state.sync_status();
        if st.failed_version.take().is_some() {
            st.apply_error = None;
            metrics::gauge!("modelux_config_apply_failed").set(0.0);
            tracing::info!(version = active.version, "serving the active version again");
        }
        return Ok(());
    }
    if state.sync_status().failed_version == Some(active.version) {
        return Ok(());
    }
    let Some(v) = store.version(active.version).await? else {
        return Ok(());
    };
    match Config::from_value(v.config) {
        Ok(c) => {
            state.apply_version(active.version, c);
        }
        Err(e) => {
            tracing::error!(version = active.version, error = %e, "active version does not validate here");
            let mut st = state.sync_status();
            st.apply_error = Some(format!("version {}: {e}", active.version));
            st.failed_version = Some(active.version);
            metrics::gauge!("modelux_config_apply_failed").set(1.0);
        }
    }
    Ok(())
}

/// The current time as RFC 3339 UTC, e.g. `2026-11-28T01:17:29Z`.
///
/// ```
/// let t = modelux::gateway::rfc3339_now();
/// assert_eq!(t.len(), 20);
/// assert!(t.ends_with('Z'));
/// ```
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::store::format_rfc3339_secs(secs)
}
