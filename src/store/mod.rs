//! The durable config-version store (feature `store`).
//!
//! Every config change becomes an immutable, numbered version: who made it,
//! when, why, the SHA-256 of its [canonical JSON](canonical_json), the version
//! it was edited from, and whether it came from the API or a config file.
//! Exactly one version is active at a time; activations and rollbacks are
//! audited, and [`ConfigStore::rollback`] walks back through the activation
//! history like an undo stack.
//!
//! Three backends sit behind one dyn-compatible trait, [`ConfigStore`], chosen
//! by the URL given to [`open`]:
//!
//! | URL | backend | for |
//! |---|---|---|
//! | `memory` | [`MemoryStore`] | tests and throwaway runs |
//! | `sqlite:<path>` | [`SqliteStore`] | a single gateway (WAL, `synchronous=FULL`) |
//! | `postgres://…` / `postgresql://…` | [`PostgresStore`] | N replicas sharing one database (LISTEN/NOTIFY) |
//!
//! A replica converges on the active version by comparing the store's
//! [`active`](ConfigStore::active) version with its own, woken by
//! [`changes`](ConfigStore::changes) where the backend pushes and by a
//! periodic poll in any case. See `docs/store.md`.
//!
//! ```
//! use modelux::store::{open, NewVersion, VersionSource};
//! use serde_json::json;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), modelux::store::StoreError> {
//! let store = open("memory").await?;
//! let v1 = store.create_version(NewVersion {
//!     config: json!({"providers": {}, "models": {}}),
//!     author: "alice".into(),
//!     message: "initial".into(),
//!     based_on: None,
//!     source: VersionSource::File,
//!     activate: true,
//! }).await?;
//! assert_eq!(v1.version, 1);
//! assert!(v1.active);
//! assert_eq!(store.active().await?.unwrap().version, 1);
//! # Ok(())
//! # }
//! ```

mod config_sql;
mod memory;
mod postgres;
mod sqlite;
mod traffic_log;

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The most events one [`ConfigStore::audit`] call returns; a larger `limit`
/// is clamped to it.
///
/// ```
/// assert_eq!(modelux::store::MAX_AUDIT_LIMIT, 1000);
/// ```
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// The most summaries one [`ConfigStore::versions`] call returns (the newest
/// ones). Older versions stay readable through [`ConfigStore::version`].
///
/// ```
/// assert_eq!(modelux::store::MAX_VERSIONS_LISTED, 1000);
/// ```
pub const MAX_VERSIONS_LISTED: usize = 1000;

/// How many activations the rollback history keeps; older ones can no longer
/// be rolled back to (their versions and audit events stay).
///
/// ```
/// assert_eq!(modelux::store::MAX_ROLLBACK_DEPTH, 1000);
/// ```
pub const MAX_ROLLBACK_DEPTH: usize = 1000;

/// A durable store of config versions, shared by every backend.
///
/// Dyn-compatible: methods return boxed futures, so a gateway holds an
/// `Arc<dyn ConfigStore>` from [`open`] whatever the backend.
///
/// ```
/// use std::sync::Arc;
/// use modelux::store::{ConfigStore, MemoryStore};
/// let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new());
/// assert!(store.changes().is_none());
/// ```
pub trait ConfigStore: Send + Sync + 'static {
    /// Stores a new immutable version with the next id (1, 2, …). When
    /// `new.activate` is set it is activated in the same transaction. The
    /// creation is audited as `"create"` (and the activation as `"activate"`).
    ///
    /// `based_on`, when given, must name an existing version
    /// ([`StoreError::NotFound`] otherwise).
    ///
    /// ```
    /// use modelux::store::{open, NewVersion, VersionSource};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = open("memory").await?;
    /// let new = |based_on| NewVersion {
    ///     config: serde_json::json!({"models": {}, "providers": {}}),
    ///     author: "alice".into(), message: "edit".into(),
    ///     based_on, source: VersionSource::Api, activate: false,
    /// };
    /// let v1 = store.create_version(new(None)).await?;
    /// let v2 = store.create_version(new(Some(1))).await?;
    /// assert_eq!((v1.version, v2.version, v2.based_on), (1, 2, Some(1)));
    /// assert_eq!(v1.sha256, v2.sha256); // same config, same hash
    /// assert!(!v2.active);
    /// # Ok(())
    /// # }
    /// ```
    fn create_version(&self, new: NewVersion) -> BoxFuture<'_, Result<VersionSummary, StoreError>>;

    /// One version with its config, or `None` if there is no such version.
    ///
    /// ```
    /// use modelux::store::{open, NewVersion, VersionSource};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = open("memory").await?;
    /// let config = serde_json::json!({"models": {}, "providers": {}});
    /// store.create_version(NewVersion {
    ///     config: config.clone(), author: "alice".into(), message: "m".into(),
    ///     based_on: None, source: VersionSource::Api, activate: false,
    /// }).await?;
    /// let v = store.version(1).await?.unwrap();
    /// assert_eq!(v.config, config);
    /// assert!(store.version(2).await?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    fn version(&self, version: u64) -> BoxFuture<'_, Result<Option<ConfigVersion>, StoreError>>;

    /// Every version's summary, newest first, with the active one flagged
    /// (at most [`MAX_VERSIONS_LISTED`]).
    ///
    /// ```
    /// use modelux::store::{open, NewVersion, VersionSource};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = open("memory").await?;
    /// for activate in [true, false] {
    ///     store.create_version(NewVersion {
    ///         config: serde_json::json!({}), author: "a".into(), message: "m".into(),
    ///         based_on: None, source: VersionSource::Api, activate,
    ///     }).await?;
    /// }
    /// let list = store.versions().await?;
    /// assert_eq!(list.iter().map(|v| (v.version, v.active)).collect::<Vec<_>>(), [(2, false), (1, true)]);
    /// # Ok(())
    /// # }
    /// ```
    fn versions(&self) -> BoxFuture<'_, Result<Vec<VersionSummary>, StoreError>>;

    /// The current activation, or `None` before the first one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = modelux::store::open("memory").await?;
    /// assert!(store.active().await?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    fn active(&self) -> BoxFuture<'_, Result<Option<Activation>, StoreError>>;

    /// Makes `version` the active one, audited as `"activate"` by `actor`.
    ///
    /// * [`StoreError::NotFound`] if there is no such version.
    /// * `if_match: Some(v)` is an optimistic lock: the call fails with
    ///   [`StoreError::Conflict`] (changing nothing) unless `v` is the active
    ///   version now; `Some(0)` matches "nothing active yet".
    /// * Activating the version that is already active creates nothing and
    ///   changes nothing but is still audited; it returns the current
    ///   activation unchanged.
    ///
    /// Once this returns `Ok`, the activation is durable (committed).
    ///
    /// ```
    /// use modelux::store::{open, NewVersion, StoreError, VersionSource};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// let store = open("memory").await?;
    /// for _ in 0..2 {
    ///     store.create_version(NewVersion {
    ///         config: serde_json::json!({}), author: "a".into(), message: "m".into(),
    ///         based_on: None, source: VersionSource::Api, activate: false,
    ///     }).await?;
    /// }
    /// let a = store.activate(1, "alice", Some(0)).await?;
    /// assert_eq!((a.version, a.previous), (1, None));
    /// let err = store.activate(2, "bob", Some(7)).await.unwrap_err();
    /// assert_eq!(err, StoreError::Conflict { current: Some(1) });
    /// assert_eq!(store.activate(9, "bob", None).await.unwrap_err(), StoreError::NotFound(9));
    /// let a = store.activate(2, "bob", Some(1)).await?;
    /// assert_eq!((a.version, a.previous, a.actor.as_str()), (2, Some(1), "bob"));
    /// # Ok(())
    /// # }
    /// ```
    fn activate(
        &self,
        version: u64,
        actor: &str,
        if_match: Option<u64>,
    ) -> BoxFuture<'_, Result<Activation, StoreError>>;

    /// Re-activates the version that was active before the current one,
    /// audited as `"rollback"`. Repeated rollbacks walk further back through
    /// the activation history, like an undo stack: after activating 1, 2, 3,
    /// a rollback activates 2 and the next one 1. [`StoreError::NothingToRollBack`]
    /// when there is no earlier activation.
    ///
    /// ```
    /// use modelux::store::{open, NewVersion, StoreError, VersionSource};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// let store = open("memory").await?;
    /// for _ in 0..3 {
    ///     store.create_version(NewVersion {
    ///         config: serde_json::json!({}), author: "a".into(), message: "m".into(),
    ///         based_on: None, source: VersionSource::Api, activate: true,
    ///     }).await?;
    /// }
    /// assert_eq!(store.rollback("ops").await?.version, 2);
    /// assert_eq!(store.rollback("ops").await?.version, 1);
    /// assert_eq!(store.rollback("ops").await.unwrap_err(), StoreError::NothingToRollBack);
    /// # Ok(())
    /// # }
    /// ```
    fn rollback(&self, actor: &str) -> BoxFuture<'_, Result<Activation, StoreError>>;

    /// The newest `limit` audit events, newest first (`limit` is clamped to
    /// [`MAX_AUDIT_LIMIT`]).
    ///
    /// ```
    /// use modelux::store::{open, NewVersion, VersionSource};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = open("memory").await?;
    /// store.create_version(NewVersion {
    ///     config: serde_json::json!({}), author: "alice".into(), message: "first".into(),
    ///     based_on: None, source: VersionSource::Api, activate: true,
    /// }).await?;
    /// let events = store.audit(10).await?;
    /// let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
    /// assert_eq!(actions, ["activate", "create"]);
    /// assert_eq!(events[1].message, "first");
    /// # Ok(())
    /// # }
    /// ```
    fn audit(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditEvent>, StoreError>>;

    /// The newest version whose source is [`VersionSource::File`]: lets a
    /// gateway that starts with a config file tell whether the file changed
    /// since it was last imported (compare [`sha256`](VersionSummary::sha256)).
    ///
    /// ```
    /// use modelux::store::{canonical_json, open, sha256_hex, NewVersion, VersionSource};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = open("memory").await?;
    /// let file = serde_json::json!({"providers": {}, "models": {}});
    /// assert!(store.last_file_import().await?.is_none());
    /// store.create_version(NewVersion {
    ///     config: file.clone(), author: "file".into(), message: "import".into(),
    ///     based_on: None, source: VersionSource::File, activate: true,
    /// }).await?;
    /// let last = store.last_file_import().await?.unwrap();
    /// assert_eq!(last.sha256, sha256_hex(canonical_json(&file).as_bytes()));
    /// # Ok(())
    /// # }
    /// ```
    fn last_file_import(&self) -> BoxFuture<'_, Result<Option<VersionSummary>, StoreError>>;

    /// A push channel carrying the active version (`0` while none is active)
    /// when the backend has one (PostgreSQL's LISTEN/NOTIFY), else `None`.
    /// The caller polls [`active`](Self::active) as well: a push can be late
    /// or lost, the poll is the safety net.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = modelux::store::open("memory").await?;
    /// assert!(store.changes().is_none());
    /// # Ok(())
    /// # }
    /// ```
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>>;

    /// Appends finished requests to the traffic log (one transaction).
    ///
    /// ```
    /// use modelux::traffic::{AttemptRecord, TrafficRecord};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = modelux::store::open("memory").await?;
    /// let rec = |at_ms| TrafficRecord {
    ///     at_ms, request_id: format!("r{at_ms}"), config_version: 1, route: "default".into(),
    ///     client: None, stream: false, prompt_tokens: 10, completion_tokens: 5,
    ///     tokens_estimated: false, max_tokens: None,
    ///     attempts: vec![AttemptRecord::ok("oa", "m", 0, 90)],
    ///     outcome: "ok".into(), status: 200, latency_ms: 91, ttft_ms: None,
    ///     served_by: Some("oa/m".into()), cost_usd: None,
    /// };
    /// store.append_traffic(&[rec(30), rec(10), rec(20)]).await?;
    /// let got = store.traffic_since(15, 100, 10).await?;
    /// assert_eq!(store.traffic_count(15, 100).await?, 2);
    /// assert_eq!(got.iter().map(|r| r.at_ms).collect::<Vec<_>>(), [20, 30]);
    /// assert_eq!(got[0], rec(20));
    /// assert_eq!(store.prune_traffic(25, 10).await?, 2); // 10 and 20 are older than 25
    /// assert_eq!(store.prune_traffic(0, 0).await?, 1); // a cap of 0 keeps nothing
    /// # Ok(())
    /// # }
    /// ```
    fn append_traffic<'a>(
        &'a self,
        records: &'a [crate::traffic::TrafficRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let encoded: Vec<crate::traffic::EncodedRecord> = records
            .iter()
            .map(crate::traffic::EncodedRecord::new)
            .collect();
        Box::pin(async move { self.append_encoded(&encoded).await })
    }

    /// Appends records already in their stored form (what the
    /// [`TrafficRecorder`](crate::traffic::TrafficRecorder) queues), in one
    /// transaction. [`append_traffic`](Self::append_traffic) encodes and
    /// calls this.
    ///
    /// ```
    /// use modelux::trace::Trace;
    /// use modelux::traffic::EncodedRecord;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = modelux::store::open("memory").await?;
    /// let t = Trace { request_id: "r".into(), started_at_unix_ms: 42, ..Trace::default() };
    /// store.append_encoded(&[EncodedRecord::from_trace(&t)]).await?;
    /// assert_eq!(store.traffic_since(0, 100, 10).await?[0].request_id, "r");
    /// # Ok(())
    /// # }
    /// ```
    fn append_encoded<'a>(
        &'a self,
        records: &'a [crate::traffic::EncodedRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Recorded requests that started in `[from_unix_ms, to_unix_ms)`,
    /// oldest first, at most `limit` (the oldest ones).
    ///
    /// ```
    /// use modelux::trace::Trace;
    /// use modelux::traffic::EncodedRecord;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = modelux::store::open("memory").await?;
    /// let rec = |id: &str, at_ms| EncodedRecord::from_trace(&Trace {
    ///     request_id: id.into(), started_at_unix_ms: at_ms, ..Trace::default()
    /// });
    /// store.append_encoded(&[rec("c", 30), rec("a", 10), rec("b", 20)]).await?;
    /// let got = store.traffic_since(10, 30, 10).await?; // 30 is past the end
    /// assert_eq!(got.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    /// let oldest = store.traffic_since(0, 100, 1).await?; // a limit keeps the oldest
    /// assert_eq!((oldest.len(), oldest[0].request_id.as_str()), (1, "a"));
    /// # Ok(())
    /// # }
    /// ```
    fn traffic_since(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::traffic::TrafficRecord>, StoreError>>;

    /// How many recorded requests started in `[from_unix_ms, to_unix_ms)`:
    /// lets a dry-run decide whether to sample before it loads anything.
    ///
    /// ```
    /// use modelux::trace::Trace;
    /// use modelux::traffic::EncodedRecord;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = modelux::store::open("memory").await?;
    /// let rec = |id: &str, at_ms| EncodedRecord::from_trace(&Trace {
    ///     request_id: id.into(), started_at_unix_ms: at_ms, ..Trace::default()
    /// });
    /// store.append_encoded(&[rec("c", 30), rec("a", 10), rec("b", 20)]).await?;
    /// assert_eq!(store.traffic_count(0, 100).await?, 3);
    /// assert_eq!(store.traffic_count(10, 30).await?, 2); // 10 and 20: the end is exclusive
    /// assert_eq!(store.traffic_count(31, 100).await?, 0);
    /// # Ok(())
    /// # }
    /// ```
    fn traffic_count(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Deletes records that started before `older_than_unix_ms`, then the
    /// oldest ones beyond `max_records`. Returns how many were deleted.
    ///
    /// ```
    /// use modelux::trace::Trace;
    /// use modelux::traffic::EncodedRecord;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let store = modelux::store::open("memory").await?;
    /// let rec = |id: &str, at_ms| EncodedRecord::from_trace(&Trace {
    ///     request_id: id.into(), started_at_unix_ms: at_ms, ..Trace::default()
    /// });
    /// store.append_encoded(&[rec("c", 30), rec("a", 10), rec("b", 20)]).await?;
    /// assert_eq!(store.prune_traffic(15, 10).await?, 1); // "a" started before 15
    /// assert_eq!(store.prune_traffic(0, 1).await?, 1); // keeps the newest one only
    /// let left = store.traffic_since(0, 100, 10).await?;
    /// assert_eq!(left.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["c"]);
    /// # Ok(())
    /// # }
    /// ```
    fn prune_traffic(
        &self,
        older_than_unix_ms: u64,
        max_records: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// Where a version came from.
///
/// ```
/// use modelux::store::VersionSource;
/// assert_eq!(VersionSource::File.as_str(), "file");
/// assert_eq!(serde_json::to_string(&VersionSource::Api).unwrap(), "\"api\"");
/// assert_eq!(VersionSource::Api.to_string(), "api");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionSource {
    /// Created through the admin API.
    Api,
    /// Imported from a config file.
    File,
}

impl VersionSource {
    /// The name stored and serialized: `"api"` or `"file"`.
    ///
    /// ```
    /// assert_eq!(modelux::store::VersionSource::Api.as_str(), "api");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            VersionSource::Api => "api",
            VersionSource::File => "file",
        }
    }

    fn parse(s: &str) -> Result<VersionSource, StoreError> {
        match s {
            "api" => Ok(VersionSource::Api),
            "file" => Ok(VersionSource::File),
            other => Err(StoreError::Database(format!(
                "unexpected version source {other:?} in the store"
            ))),
        }
    }
}

impl fmt::Display for VersionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version to create with [`ConfigStore::create_version`].
///
/// `Debug` masks every `api_key` value in the config.
///
/// ```
/// use modelux::store::{NewVersion, VersionSource};
/// let new = NewVersion {
///     config: serde_json::json!({"providers": {"p": {"api_key": "sk-secret"}}}),
///     author: "alice".into(),
///     message: "rotate key".into(),
///     based_on: Some(3),
///     source: VersionSource::Api,
///     activate: true,
/// };
/// assert!(!format!("{new:?}").contains("sk-secret"));
/// ```
#[derive(Clone, PartialEq)]
pub struct NewVersion {
    /// The config document (validate it with
    /// [`Config::from_value`](crate::config::Config::from_value) first; the
    /// store keeps any JSON).
    pub config: Value,
    /// Who made the change.
    pub author: String,
    /// Why.
    pub message: String,
    /// The version this one was edited from, if any.
    pub based_on: Option<u64>,
    /// API or file import. A file import of a config that an earlier file
    /// import already holds (same [`VersionSummary::sha256`]) creates
    /// nothing and fails with [`StoreError::AlreadyImported`], checked in
    /// the same transaction: replicas that start at once with a new file
    /// import it once.
    pub source: VersionSource,
    /// Activate it in the same transaction.
    pub activate: bool,
}

impl fmt::Debug for NewVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewVersion")
            .field("config", &DebugJson(&self.config))
            .field("author", &self.author)
            .field("message", &self.message)
            .field("based_on", &self.based_on)
            .field("source", &self.source)
            .field("activate", &self.activate)
            .finish()
    }
}

/// A version's metadata (no config body).
///
/// ```
/// use modelux::store::{VersionSource, VersionSummary};
/// let s = VersionSummary {
///     version: 2, created_at: "2025-01-01T00:00:00.000Z".into(), author: "alice".into(),
///     message: "raise timeout".into(), sha256: "ab".repeat(32), based_on: Some(1),
///     source: VersionSource::Api, active: true,
/// };
/// let json = serde_json::to_value(&s).unwrap();
/// assert_eq!(json["source"], "api");
/// assert_eq!(json["based_on"], 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version id: 1, 2, … per store.
    pub version: u64,
    /// When it was created, RFC 3339 UTC (`2025-01-01T12:00:00.000Z`).
    pub created_at: String,
    /// Who created it.
    pub author: String,
    /// Why.
    pub message: String,
    /// Lower-case hex SHA-256 of the config's [`canonical_json`].
    pub sha256: String,
    /// The version it was edited from.
    pub based_on: Option<u64>,
    /// API or file import.
    pub source: VersionSource,
    /// Whether it is the active version (at the time it was read).
    pub active: bool,
}

/// A version with its config.
///
/// `Debug` masks every `api_key` value in the config.
///
/// ```
/// use modelux::store::{ConfigVersion, VersionSource, VersionSummary};
/// let v = ConfigVersion {
///     summary: VersionSummary {
///         version: 1, created_at: "2025-01-01T00:00:00.000Z".into(), author: "a".into(),
///         message: "m".into(), sha256: String::new(), based_on: None,
///         source: VersionSource::File, active: false,
///     },
///     config: serde_json::json!({"providers": {"p": {"api_key": "sk-secret"}}}),
/// };
/// assert!(format!("{v:?}").contains("\"api_key\":\"***\""));
/// ```
#[derive(Clone, PartialEq)]
pub struct ConfigVersion {
    /// Its metadata.
    pub summary: VersionSummary,
    /// The config document as stored.
    pub config: Value,
}

impl fmt::Debug for ConfigVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigVersion")
            .field("summary", &self.summary)
            .field("config", &DebugJson(&self.config))
            .finish()
    }
}

/// The active version and how it became active.
///
/// ```
/// use modelux::store::Activation;
/// let a = Activation { version: 3, activated_at: "2025-01-01T00:00:00.000Z".into(), actor: "ops".into(), previous: Some(2) };
/// assert_eq!(serde_json::to_value(&a).unwrap()["previous"], 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The active version.
    pub version: u64,
    /// When it became active, RFC 3339 UTC.
    pub activated_at: String,
    /// Who activated it (or rolled back to it).
    pub actor: String,
    /// The version that was active before it, if any.
    pub previous: Option<u64>,
}

/// One audit log entry.
///
/// ```
/// use modelux::store::AuditEvent;
/// let e = AuditEvent {
///     id: 7, at: "2025-01-01T00:00:00.000Z".into(), actor: "ops".into(),
///     action: "rollback".into(), version: 2, from_version: Some(3), message: String::new(),
/// };
/// assert_eq!(serde_json::to_value(&e).unwrap()["action"], "rollback");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Increasing event id.
    pub id: u64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Who.
    pub actor: String,
    /// `"create"`, `"activate"` or `"rollback"`.
    pub action: String,
    /// The version created, activated or rolled back to.
    pub version: u64,
    /// For `create`, the version it was based on; for `activate` and
    /// `rollback`, the version active before.
    pub from_version: Option<u64>,
    /// For `create`, the version's message; otherwise a short note.
    pub message: String,
}

/// What can go wrong with a store call.
///
/// ```
/// use modelux::store::StoreError;
/// assert_eq!(StoreError::NotFound(4).to_string(), "config version 4 not found");
/// assert_eq!(
///     StoreError::Conflict { current: Some(3) }.to_string(),
///     "the active config version is 3, not the expected one",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No version with this id.
    NotFound(u64),
    /// `if_match` did not match the active version, which is `current`.
    Conflict {
        /// The active version now (`None`: nothing active).
        current: Option<u64>,
    },
    /// No earlier activation to roll back to.
    NothingToRollBack,
    /// A file import of a config an earlier file import holds: this version
    /// (see [`NewVersion::source`]).
    AlreadyImported(u64),
    /// The database failed (never includes the connection URL or password).
    Database(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(v) => write!(f, "config version {v} not found"),
            StoreError::Conflict { current: Some(v) } => {
                write!(f, "the active config version is {v}, not the expected one")
            }
            StoreError::Conflict { current: None } => {
                f.write_str("no config version is active, unlike what was expected")
            }
            StoreError::NothingToRollBack => f.write_str("no earlier activation to roll back to"),
            StoreError::AlreadyImported(v) => {
                write!(
                    f,
                    "the same config file was already imported as version {v}"
                )
            }
            StoreError::Database(m) => write!(f, "config store: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Opens a store by URL and applies its embedded migrations:
///
/// * `memory`: a [`MemoryStore`];
/// * `sqlite:<path>` (also `sqlite://<path>`): a [`SqliteStore`], creating the
///   file and its parent directory;
/// * `postgres://…` or `postgresql://…`: a [`PostgresStore`].
///
/// Errors never include the password.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let dir = std::env::temp_dir().join(format!("modelux-doc-open-{}", std::process::id()));
/// let url = format!("sqlite:{}", dir.join("config.db").display());
/// let store = modelux::store::open(&url).await.unwrap();
/// assert!(store.active().await.unwrap().is_none());
/// drop(store);
/// std::fs::remove_dir_all(&dir).unwrap();
///
/// let err = modelux::store::open("mysql://root:hunter2@db/x").await.err().unwrap();
/// assert!(!err.to_string().contains("hunter2"));
/// # }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn ConfigStore>, StoreError> {
    let url = url.trim();
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() || path.contains('?') || path.starts_with(":memory:") {
            return Err(StoreError::Database(format!(
                "unsupported SQLite URL {url:?}: expected sqlite:<file path> without parameters \
                 (use \"memory\" for a store in memory)"
            )));
        }
        return Ok(Arc::new(SqliteStore::open(path).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::connect(url).await?));
    }
    Err(StoreError::Database(format!(
        "unsupported store URL {:?}: expected \"memory\", \"sqlite:<path>\" or \"postgres://...\"",
        redact_url(url)
    )))
}

/// The canonical JSON text of a value: object keys sorted (by their UTF-8
/// bytes) at every depth, no whitespace, strings escaped as `serde_json`
/// does. Two documents that differ only in key order or formatting give the
/// same text, so the same [`VersionSummary::sha256`].
///
/// ```
/// use modelux::store::canonical_json;
/// let a = serde_json::json!({"b": [1, {"d": true, "c": null}], "a": "x"});
/// assert_eq!(canonical_json(&a), r#"{"a":"x","b":[1,{"c":null,"d":true}]}"#);
/// ```
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Lower-case hex SHA-256 of some bytes, as stored in
/// [`VersionSummary::sha256`] (over [`canonical_json`]).
///
/// ```
/// assert_eq!(
///     modelux::store::sha256_hex(b"abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
/// );
/// ```
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A store URL with its password hidden, for logs: the password in
/// `user:password@` and any `password=` query parameter become `***`.
///
/// ```
/// use modelux::store::redact_url;
/// assert_eq!(redact_url("postgres://gw:s3cret@db:5432/modelux"), "postgres://gw:***@db:5432/modelux");
/// assert_eq!(redact_url("postgres://db/modelux?user=gw&password=s3cret"), "postgres://db/modelux?user=gw&password=***");
/// // A parameter the store does not know may be a secret too (libpq's).
/// assert_eq!(redact_url("postgres://db/m?sslmode=require&sslpassword=k3y"), "postgres://db/m?sslmode=require&sslpassword=***");
/// assert_eq!(redact_url("sqlite:/var/lib/modelux/config.db"), "sqlite:/var/lib/modelux/config.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    // Replace from the end so earlier ranges stay valid.
    for range in password_ranges(url).into_iter().rev() {
        out.replace_range(range, "***");
    }
    out
}

/// The query parameters of a PostgreSQL URL whose values are shown in logs
/// and errors: the ones the PostgreSQL store understands (sqlx's list) that
/// hold no secret. Every other value (`password=`, and any parameter it does
/// not know, such as libpq's `sslpassword=`) is masked.
pub(crate) const PLAIN_URL_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "application_name",
    "options",
];

/// The byte ranges of a URL's secrets: the password in `user:password@`,
/// the value of every query parameter not in [`PLAIN_URL_PARAMS`], and a
/// fragment. In increasing order, not overlapping.
fn password_ranges(url: &str) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let auth_start = scheme_end + 3;
        // The user info ends at the last `@`, wherever it is: a password
        // pasted with a raw `/`, `?` or `#` (they should be percent-encoded)
        // ends a strict authority early, and was echoed whole. An `@` later
        // in the URL (`?user=a@b`) masks more than the password, never less.
        if let Some(at) = url[auth_start..].rfind('@') {
            if let Some(colon) = url[auth_start..auth_start + at].find(':') {
                ranges.push(auth_start + colon + 1..auth_start + at);
            }
        }
    }
    // The query is read from its first `?` whatever the user info covered:
    // an `@` in the query (`?user=a@b`) took the password's range past the
    // `?`, and the query's `password=` was shown. From there, parameters
    // without `=` are left alone (the `?` may be a raw one in a password);
    // from the first `?` after the user info, they are masked too.
    let after_user = ranges.last().map_or(0, |r| r.end);
    // A `#` inside the password (raw) is not the fragment's.
    let fragment = url[after_user..].find('#').map(|f| after_user + f);
    let query_end = fragment.unwrap_or(url.len());
    let first = url.find('?');
    let own = url[after_user..].find('?').map(|q| after_user + q);
    for (q, bare_too) in [(first, false), (own, true)] {
        let Some(q) = q.filter(|q| *q < query_end) else {
            continue;
        };
        let mut pos = q + 1;
        for pair in url[q + 1..query_end].split('&') {
            match pair.split_once('=') {
                Some((k, v)) if !is_plain_param(k) && !v.is_empty() => {
                    ranges.push(pos + k.len() + 1..pos + pair.len());
                }
                // No `=`: perhaps a secret pasted in the wrong place.
                None if bare_too && !pair.is_empty() => ranges.push(pos..pos + pair.len()),
                _ => {}
            }
            pos += pair.len() + 1;
        }
    }
    // A fragment has no meaning in a database URL: what follows a raw `#`
    // is most likely the rest of a password.
    if let Some(f) = fragment.filter(|f| f + 1 < url.len()) {
        ranges.push(f + 1..url.len());
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Whether a URL query parameter's value is shown: one of
/// [`PLAIN_URL_PARAMS`] or an `options[NAME]`, its name percent-decoded.
pub(crate) fn is_plain_param(key: &str) -> bool {
    let key = percent_decoded(key);
    PLAIN_URL_PARAMS.contains(&key.as_str()) || key.starts_with("options[")
}

/// `s` with its `%XX` escapes decoded (as a URL parser reads a query key);
/// an invalid escape is kept as written.
pub(crate) fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The passwords written in a URL, to scrub from error messages.
fn url_passwords(url: &str) -> Vec<String> {
    password_ranges(url)
        .into_iter()
        .map(|r| url[r].to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Debug-prints JSON with every `api_key` value masked.
struct DebugJson<'a>(&'a Value);

impl fmt::Debug for DebugJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = self.0.clone();
        mask_api_keys(&mut v);
        write!(f, "{v}")
    }
}

fn mask_api_keys(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                if k == "api_key" && !item.is_null() {
                    *item = Value::String("***".to_owned());
                } else {
                    mask_api_keys(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_api_keys),
        _ => {}
    }
}

/// The canonical text and hash of a new version's config.
fn fingerprint(config: &Value) -> (String, String) {
    let text = canonical_json(config);
    let hash = sha256_hex(text.as_bytes());
    (text, hash)
}

/// Parses a stored config and checks it against its stored hash.
fn parse_stored_config(version: u64, text: &str, sha256: &str) -> Result<Value, StoreError> {
    if sha256_hex(text.as_bytes()) != sha256 {
        return Err(StoreError::Database(format!(
            "version {version}: stored config does not match its sha256"
        )));
    }
    serde_json::from_str(text).map_err(|e| {
        StoreError::Database(format!("version {version}: stored config is not JSON: {e}"))
    })
}

/// Now as RFC 3339 UTC with milliseconds: `2025-01-02T03:04:05.678Z`.
fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(d.as_secs(), d.subsec_millis())
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC, no fraction).
pub(crate) fn format_rfc3339_secs(secs: u64) -> String {
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(secs / 86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn format_rfc3339(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A version id as the databases' signed 64-bit integer. Ids above
/// `i64::MAX` cannot exist, so they map to a value no row has.
fn db_id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A database id back to a version id.
fn from_db_id(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A database error as a [`StoreError`], with `secrets` (passwords) masked
/// should the driver ever echo one.
fn db_error(e: sqlx::Error, secrets: &[String]) -> StoreError {
    StoreError::Database(scrub(e.to_string(), secrets))
}

/// Runs a store operation within `limit`. Past it the operation is dropped
/// (an open transaction is rolled back when its connection next runs) and
/// the call fails with [`timed_out`]; both SQL backends bound every
/// operation this way.
async fn within<T>(
    limit: std::time::Duration,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or_else(|_| Err(timed_out(limit)))
}

/// The error of a store operation that did not finish within `limit`: a
/// [`StoreError::Database`], like any other failure of the database.
fn timed_out(limit: std::time::Duration) -> StoreError {
    let limit = if limit.subsec_nanos() == 0 {
        format!("{} s", limit.as_secs())
    } else {
        format!("{} ms", limit.as_millis())
    };
    StoreError::Database(format!("no answer from the database within {limit}"))
}

fn scrub(mut msg: String, secrets: &[String]) -> String {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        msg = msg.replace(s.as_str(), "***");
    }
    msg
}

/// The text of an `activate` audit event.
fn activate_note(already_active: bool) -> String {
    if already_active {
        "already active".to_owned()
    } else {
        String::new()
    }
}

/// The text of a `rollback` audit event.
fn rollback_note(from: Option<u64>) -> String {
    match from {
        Some(v) => format!("rolled back from version {v}"),
        None => "rolled back".to_owned(),
    }
}

/// Migrations embedded at compile time: (schema version, description, SQL).
type Migration = (i64, &'static str, &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    /// A PostgreSQL URL parameter the store does not know is taken out and
    /// named, without its value, before sqlx sees it (sqlx logs such a
    /// parameter's value), and its value is masked wherever the URL is
    /// shown. The port is invalid so that nothing is dialled.
    #[tokio::test]
    async fn unknown_postgres_url_parameters_are_named_without_their_value() {
        for (url, named) in [
            (
                "postgres://gw@127.0.0.1:99999/m?sslmode=disable&sslpassword=SECRETQ",
                "`sslpassword`",
            ),
            (
                "postgres://gw@127.0.0.1:99999/m?Password=SECRETG",
                "`Password`",
            ),
            ("postgres://gw@127.0.0.1:99999/m?SECRETZ", "one without `=`"),
            (
                "postgres://gw@127.0.0.1:99999/m?user=a@b&channel_binding=require&password=SECRETP",
                "`channel_binding`",
            ),
        ] {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let b = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || LogWriter(b.clone()))
                .finish();
            let _guard = tracing::subscriber::set_default(subscriber);
            let e = PostgresStore::connect(url).await.unwrap_err().to_string();
            assert!(!e.contains("SECRET"), "{e}");
            let logs = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
            assert!(!logs.contains("SECRET"), "{logs}");
            assert!(
                logs.contains("does not support") && logs.contains(named),
                "{logs}"
            );
            assert!(!redact_url(url).contains("SECRET"), "{}", redact_url(url));
        }
    }

    #[test]
    fn secrets_after_an_at_sign_in_the_query_or_a_hash_are_masked() {
        assert_eq!(
            redact_url("postgres://gw:pw@db/m?user=a@b&password=s3cret"),
            "postgres://gw:***@b&password=***"
        );
        assert_eq!(
            redact_url("postgres://db:5432/m?application_name=me@host&password=s3cret"),
            // The `@` reads as the end of a user info: more is masked.
            "postgres://db:***@host&password=***"
        );
        assert_eq!(
            redact_url("postgres://db/m?password=ab#cd"),
            "postgres://db/m?password=***#***"
        );
        assert_eq!(
            redact_url("postgres://db/m?options%5Bsearch_path%5D=x&port=5"),
            "postgres://db/m?options%5Bsearch_path%5D=x&port=5"
        );
        assert!(
            url_passwords("postgres://gw:pw@db/m?user=a@b&password=s3cret")
                .iter()
                .any(|p| p.contains("s3cret"))
        );
    }

    struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogWriter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_rfc3339(951_868_800, 0), "2000-03-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(1_735_689_599, 999),
            "2024-12-31T23:59:59.999Z"
        );
        assert_eq!(format_rfc3339(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
        let now = now_rfc3339();
        assert_eq!(now.len(), 24);
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn canonical_json_sorts_and_escapes() {
        let v: Value =
            serde_json::from_str(r#"{ "é": "\u0001\"", "a" : [ 1.5, -2, {"z":1,"y":2} ] }"#)
                .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":[1.5,-2,{"y":2,"z":1}],"é":"\u0001\""}"#
        );
    }

    #[test]
    fn redacts_urls() {
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h/db?sslmode=require"),
            "postgresql://u:***@h/db?sslmode=require"
        );
        assert_eq!(redact_url("memory"), "memory");
        assert_eq!(
            redact_url("postgres://a:b@h/d?password=c&port=5&x=1#f"),
            "postgres://a:***@h/d?password=***&port=5&x=***#***"
        );
        assert_eq!(url_passwords("postgres://a:b@h/d?password=c"), ["b", "c"]);
        // A password pasted with a raw `/`, `?` or `#`: never echoed.
        for pw in ["Sec/ret1", "Sec?ret1", "Sec#ret1", "a/b?c#d"] {
            let url = format!("postgres://auditd:{pw}@127.0.0.1:5432/x");
            let shown = redact_url(&url);
            assert_eq!(shown, "postgres://auditd:***@127.0.0.1:5432/x", "{pw}");
            assert_eq!(url_passwords(&url), [pw]);
        }
    }

    #[test]
    fn debug_masks_api_keys() {
        let v = serde_json::json!({"a": [{"api_key": "k"}], "api_key": null});
        assert_eq!(
            format!("{:?}", DebugJson(&v)),
            r#"{"a":[{"api_key":"***"}],"api_key":null}"#
        );
    }
}
