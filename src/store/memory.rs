//! The in-memory backend: for tests and throwaway runs.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{
    activate_note, fingerprint, now_rfc3339, rollback_note, Activation, AuditEvent, ConfigStore,
    ConfigVersion, NewVersion, StoreError, VersionSource, VersionSummary, MAX_AUDIT_LIMIT,
    MAX_ROLLBACK_DEPTH, MAX_VERSIONS_LISTED,
};

/// A [`ConfigStore`] that lives in the process and is gone when it exits.
///
/// Same semantics as the durable backends (ids, activation history, audit);
/// [`changes`](ConfigStore::changes) is `None`. It keeps the newest 10 000
/// audit events.
///
/// ```
/// use modelux::store::{ConfigStore, MemoryStore, NewVersion, VersionSource};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), modelux::store::StoreError> {
/// let store = MemoryStore::new();
/// let v = store.create_version(NewVersion {
///     config: serde_json::json!({"models": {}}), author: "a".into(), message: "m".into(),
///     based_on: None, source: VersionSource::Api, activate: true,
/// }).await?;
/// assert_eq!(store.active().await?.unwrap().version, v.version);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Index i holds version i + 1.
    versions: Vec<Stored>,
    active: Option<Activation>,
    /// The activation history; the last entry is the active version.
    stack: Vec<u64>,
    /// The newest [`AUDIT_KEPT`] events, oldest first.
    audit: VecDeque<AuditEvent>,
    next_audit_id: u64,
    /// The traffic log, in insertion order.
    traffic: Vec<crate::traffic::TrafficRecord>,
}

impl State {
    /// Appends traffic records, keeping the newest [`TRAFFIC_KEPT`].
    fn append(&mut self, records: impl IntoIterator<Item = crate::traffic::TrafficRecord>) {
        self.traffic.extend(records);
        let excess = self.traffic.len().saturating_sub(TRAFFIC_KEPT);
        if excess > 0 {
            self.traffic.drain(..excess);
        }
    }
}

/// How many audit events a memory store keeps.
const AUDIT_KEPT: usize = 10_000;

/// How many traffic records a memory store keeps, the newest, whatever
/// `traffic.max_records` says: at ≈ 1 KB each in memory, the default of a
/// million grew a soak test on `--store memory` towards a gigabyte.
const TRAFFIC_KEPT: usize = 100_000;

#[derive(Debug)]
struct Stored {
    summary: VersionSummary,
    config: Value,
}

impl MemoryStore {
    /// An empty store.
    ///
    /// ```
    /// let store = modelux::store::MemoryStore::new();
    /// # let _ = store;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change:
        // every method checks before it mutates.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn active_version(&self) -> Option<u64> {
        self.active.as_ref().map(|a| a.version)
    }

    fn summary(&self, s: &Stored) -> VersionSummary {
        VersionSummary {
            active: self.active_version() == Some(s.summary.version),
            ..s.summary.clone()
        }
    }

    fn record(
        &mut self,
        actor: &str,
        action: &str,
        version: u64,
        from: Option<u64>,
        message: String,
    ) {
        self.next_audit_id += 1;
        let id = self.next_audit_id;
        if self.audit.len() == AUDIT_KEPT {
            self.audit.pop_front();
        }
        self.audit.push_back(AuditEvent {
            id,
            at: now_rfc3339(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            version,
            from_version: from,
            message,
        });
    }

    fn activate(&mut self, version: u64, actor: &str) -> Activation {
        let previous = self.active_version();
        if previous == Some(version) {
            self.record(actor, "activate", version, previous, activate_note(true));
            if let Some(a) = &self.active {
                return a.clone();
            }
        }
        let activation = Activation {
            version,
            activated_at: now_rfc3339(),
            actor: actor.to_owned(),
            previous,
        };
        self.active = Some(activation.clone());
        self.stack.push(version);
        if self.stack.len() > MAX_ROLLBACK_DEPTH {
            let excess = self.stack.len() - MAX_ROLLBACK_DEPTH;
            self.stack.drain(..excess);
        }
        self.record(actor, "activate", version, previous, activate_note(false));
        activation
    }
}

impl ConfigStore for MemoryStore {
    fn create_version(&self, new: NewVersion) -> BoxFuture<'_, Result<VersionSummary, StoreError>> {
        Box::pin(async move {
            let mut st = self.lock();
            if let Some(b) = new.based_on {
                if b == 0 || b > st.versions.len() as u64 {
                    return Err(StoreError::NotFound(b));
                }
            }
            let (text, sha256) = fingerprint(&new.config);
            if new.source == VersionSource::File {
                let earlier = st.versions.iter().rev().find(|v| {
                    v.summary.source == VersionSource::File && v.summary.sha256 == sha256
                });
                if let Some(v) = earlier {
                    return Err(StoreError::AlreadyImported(v.summary.version));
                }
            }
            // Store what a durable backend would return: the canonical text parsed back.
            let config = serde_json::from_str(&text).unwrap_or(new.config);
            let version = st.versions.len() as u64 + 1;
            let summary = VersionSummary {
                version,
                created_at: now_rfc3339(),
                author: new.author.clone(),
                message: new.message.clone(),
                sha256,
                based_on: new.based_on,
                source: new.source,
                active: false,
            };
            st.versions.push(Stored {
                summary: summary.clone(),
                config,
            });
            st.record(&new.author, "create", version, new.based_on, new.message);
            if new.activate {
                st.activate(version, &new.author);
            }
            Ok(VersionSummary {
                active: new.activate,
                ..summary
            })
        })
    }

    fn version(&self, version: u64) -> BoxFuture<'_, Result<Option<ConfigVersion>, StoreError>> {
        Box::pin(async move {
            let st = self.lock();
            let found = version
                .checked_sub(1)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| st.versions.get(i));
            Ok(found.map(|s| ConfigVersion {
                summary: st.summary(s),
                config: s.config.clone(),
            }))
        })
    }

    fn versions(&self) -> BoxFuture<'_, Result<Vec<VersionSummary>, StoreError>> {
        Box::pin(async move {
            let st = self.lock();
            Ok(st
                .versions
                .iter()
                .rev()
                .take(MAX_VERSIONS_LISTED)
                .map(|s| st.summary(s))
                .collect())
        })
    }

    fn active(&self) -> BoxFuture<'_, Result<Option<Activation>, StoreError>> {
        Box::pin(async move { Ok(self.lock().active.clone()) })
    }

    fn activate(
        &self,
        version: u64,
        actor: &str,
        if_match: Option<u64>,
    ) -> BoxFuture<'_, Result<Activation, StoreError>> {
        let actor = actor.to_owned();
        Box::pin(async move {
            let mut st = self.lock();
            if version == 0 || version > st.versions.len() as u64 {
                return Err(StoreError::NotFound(version));
            }
            let current = st.active_version();
            if let Some(expected) = if_match {
                if current.unwrap_or(0) != expected {
                    return Err(StoreError::Conflict { current });
                }
            }
            Ok(st.activate(version, &actor))
        })
    }

    fn rollback(&self, actor: &str) -> BoxFuture<'_, Result<Activation, StoreError>> {
        let actor = actor.to_owned();
        Box::pin(async move {
            let mut st = self.lock();
            if st.stack.len() < 2 {
                return Err(StoreError::NothingToRollBack);
            }
            st.stack.pop();
            let target = st.stack[st.stack.len() - 1];
            let from = st.active_version();
            let activation = Activation {
                version: target,
                activated_at: now_rfc3339(),
                actor: actor.clone(),
                previous: from,
            };
            st.active = Some(activation.clone());
            st.record(&actor, "rollback", target, from, rollback_note(from));
            Ok(activation)
        })
    }

    fn audit(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditEvent>, StoreError>> {
        Box::pin(async move {
            let st = self.lock();
            Ok(st
                .audit
                .iter()
                .rev()
                .take(limit.min(MAX_AUDIT_LIMIT))
                .cloned()
                .collect())
        })
    }

    fn last_file_import(&self) -> BoxFuture<'_, Result<Option<VersionSummary>, StoreError>> {
        Box::pin(async move {
            let st = self.lock();
            Ok(st
                .versions
                .iter()
                .rev()
                .find(|s| s.summary.source == VersionSource::File)
                .map(|s| st.summary(s)))
        })
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    fn append_encoded<'a>(
        &'a self,
        records: &'a [crate::traffic::EncodedRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let decoded = records
                .iter()
                .map(|r| r.decode())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Database(format!("a traffic record is not valid: {e}")))?;
            self.lock().append(decoded);
            Ok(())
        })
    }

    fn append_traffic<'a>(
        &'a self,
        records: &'a [crate::traffic::TrafficRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.lock().append(records.iter().cloned());
            Ok(())
        })
    }

    fn traffic_since(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::traffic::TrafficRecord>, StoreError>> {
        Box::pin(async move {
            let st = self.lock();
            // Sorted by reference and cut to `limit` before anything is
            // copied: a limited read holds at most `limit` records.
            let mut found: Vec<_> = st
                .traffic
                .iter()
                .filter(|r| r.at_ms >= from_unix_ms && r.at_ms < to_unix_ms)
                .collect();
            found.sort_by_key(|r| r.at_ms);
            found.truncate(limit);
            Ok(found.into_iter().cloned().collect())
        })
    }

    fn traffic_count(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let st = self.lock();
            Ok(st
                .traffic
                .iter()
                .filter(|r| r.at_ms >= from_unix_ms && r.at_ms < to_unix_ms)
                .count() as u64)
        })
    }

    fn prune_traffic(
        &self,
        older_than_unix_ms: u64,
        max_records: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut st = self.lock();
            let before = st.traffic.len();
            st.traffic.retain(|r| r.at_ms >= older_than_unix_ms);
            let cap = usize::try_from(max_records).unwrap_or(usize::MAX);
            if st.traffic.len() > cap {
                // Keep the newest `cap` records.
                st.traffic.sort_by_key(|r| r.at_ms);
                let excess = st.traffic.len() - cap;
                st.traffic.drain(..excess);
            }
            Ok((before - st.traffic.len()) as u64)
        })
    }
}
