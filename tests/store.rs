//! The config-version store: one behaviour suite run against every backend
//! (memory, SQLite in a temp file, PostgreSQL on a throwaway server), then
//! SQLite durability (reopen, SIGKILL of a writer process) and PostgreSQL
//! replicas (two handles, LISTEN/NOTIFY, concurrent writers, reconnects).
#![cfg(feature = "store")]

mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelux::config::Config;
use modelux::store::{
    canonical_json, open, sha256_hex, Activation, ConfigStore, NewVersion, PostgresStore,
    SqliteStore, StoreError, VersionSource,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

/// A valid gateway config whose model timeout is `timeout_ms`.
fn config(timeout_ms: u64) -> Value {
    json!({
        "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
        "models": {"llama": {"provider": "local", "timeout_ms": timeout_ms}},
        "routes": {"default": {"attempts": [{"model": "llama"}]}}
    })
}

fn new_version(config: Value, author: &str, source: VersionSource, activate: bool) -> NewVersion {
    NewVersion {
        config,
        author: author.to_owned(),
        message: format!("by {author}"),
        based_on: None,
        source,
        activate,
    }
}

fn api(n: u64, activate: bool) -> NewVersion {
    new_version(config(1000 + n), "alice", VersionSource::Api, activate)
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && s.starts_with("20")
}

async fn active_version(store: &dyn ConfigStore) -> Option<u64> {
    store.active().await.unwrap().map(|a| a.version)
}

/// A temp directory removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "modelux-store-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TmpDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store under test and what keeps its backing alive.
struct Backend {
    store: Arc<dyn ConfigStore>,
    _dir: Option<TmpDir>,
}

impl Backend {
    async fn memory() -> Backend {
        Backend {
            store: open("memory").await.unwrap(),
            _dir: None,
        }
    }

    async fn sqlite() -> Backend {
        let dir = TmpDir::new("suite");
        let url = format!("sqlite:{}", dir.path().join("config.db").display());
        Backend {
            store: open(&url).await.unwrap(),
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Backend {
        let url = pg::database("suite").await;
        Backend {
            store: open(&url).await.unwrap(),
            _dir: None,
        }
    }
}

// ------------------------------------------------------ the behaviour suite

mod checks {
    use super::*;

    pub async fn create_list_get(store: &dyn ConfigStore) {
        assert!(store.versions().await.unwrap().is_empty());
        assert!(Config::from_value(config(1)).is_ok());

        let v1 = store
            .create_version(new_version(config(1), "alice", VersionSource::File, false))
            .await
            .unwrap();
        assert_eq!(v1.version, 1);
        assert!(!v1.active);
        assert_eq!(v1.source, VersionSource::File);
        assert_eq!(v1.sha256, sha256_hex(canonical_json(&config(1)).as_bytes()));
        assert_eq!(v1.sha256.len(), 64);
        assert!(is_rfc3339_utc(&v1.created_at), "{}", v1.created_at);

        let v2 = store
            .create_version(NewVersion {
                based_on: Some(1),
                message: "raise the timeout".into(),
                ..new_version(config(2), "bob", VersionSource::Api, true)
            })
            .await
            .unwrap();
        assert_eq!((v2.version, v2.based_on, v2.active), (2, Some(1), true));

        let list = store.versions().await.unwrap();
        let got: Vec<_> = list.iter().map(|v| (v.version, v.active)).collect();
        assert_eq!(got, [(2, true), (1, false)], "newest first, active flagged");
        assert_eq!(list[0], v2);
        assert_eq!(list[1], v1);

        let got = store.version(2).await.unwrap().unwrap();
        assert_eq!(got.config, config(2));
        assert_eq!(got.summary.author, "bob");
        assert_eq!(got.summary.message, "raise the timeout");
        assert_eq!(got.summary.based_on, Some(1));
        assert!(got.summary.active);
        let got = store.version(1).await.unwrap().unwrap();
        assert_eq!(got.config, config(1));
        assert!(!got.summary.active);
        assert!(store.version(3).await.unwrap().is_none());
        assert!(store.version(0).await.unwrap().is_none());
        assert!(store.version(u64::MAX).await.unwrap().is_none());

        // based_on must name a version; nothing is created otherwise.
        let err = store
            .create_version(NewVersion {
                based_on: Some(99),
                ..api(3, true)
            })
            .await
            .unwrap_err();
        assert_eq!(err, StoreError::NotFound(99));
        assert_eq!(store.versions().await.unwrap().len(), 2);
        assert_eq!(active_version(store).await, Some(2));
    }

    pub async fn sha256_stable_across_key_order(store: &dyn ConfigStore) {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": "é"}}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":"é","y":[1,{"p":3,"q":2}]},"b":1}"#).unwrap();
        let c: Value =
            serde_json::from_str(r#"{"a":{"x":"é","y":[{"p":3,"q":2},1]},"b":1}"#).unwrap();
        let va = store
            .create_version(new_version(a.clone(), "a", VersionSource::Api, false))
            .await
            .unwrap();
        let vb = store
            .create_version(new_version(b, "b", VersionSource::Api, false))
            .await
            .unwrap();
        let vc = store
            .create_version(new_version(c, "c", VersionSource::Api, false))
            .await
            .unwrap();
        assert_eq!(
            va.sha256, vb.sha256,
            "key order and whitespace do not matter"
        );
        assert_ne!(va.sha256, vc.sha256, "array order does");
        assert_eq!(
            va.sha256,
            sha256_hex(r#"{"a":{"x":"é","y":[1,{"p":3,"q":2}]},"b":1}"#.as_bytes())
        );
        let stored = store.version(va.version).await.unwrap().unwrap();
        assert_eq!(stored.config, a);
        assert_eq!(stored.summary.sha256, va.sha256);
    }

    pub async fn activate_with_and_without_if_match(store: &dyn ConfigStore) {
        for n in 1..=3 {
            store.create_version(api(n, false)).await.unwrap();
        }
        assert_eq!(active_version(store).await, None);

        // If-Match against "nothing active": Some(0) matches, others conflict.
        let err = store.activate(1, "alice", Some(1)).await.unwrap_err();
        assert_eq!(err, StoreError::Conflict { current: None });
        assert_eq!(active_version(store).await, None);
        let a1 = store.activate(1, "alice", Some(0)).await.unwrap();
        assert_eq!(
            (a1.version, a1.previous, a1.actor.as_str()),
            (1, None, "alice")
        );
        assert!(is_rfc3339_utc(&a1.activated_at));

        // A stale If-Match conflicts and changes nothing.
        let err = store.activate(2, "bob", Some(3)).await.unwrap_err();
        assert_eq!(err, StoreError::Conflict { current: Some(1) });
        assert_eq!(store.active().await.unwrap(), Some(a1.clone()));

        let a2 = store.activate(2, "bob", Some(1)).await.unwrap();
        assert_eq!(
            (a2.version, a2.previous, a2.actor.as_str()),
            (2, Some(1), "bob")
        );
        let a3 = store.activate(3, "carol", None).await.unwrap();
        assert_eq!((a3.version, a3.previous), (3, Some(2)));
        assert_eq!(store.active().await.unwrap(), Some(a3.clone()));

        // Re-activating the active version creates nothing, changes nothing, is audited.
        let again = store.activate(3, "dave", Some(3)).await.unwrap();
        assert_eq!(again, a3);
        assert_eq!(store.versions().await.unwrap().len(), 3);
        let last = &store.audit(1).await.unwrap()[0];
        assert_eq!(
            (last.action.as_str(), last.actor.as_str(), last.version),
            ("activate", "dave", 3)
        );
        assert_eq!(last.message, "already active");

        let flags: Vec<_> = store
            .versions()
            .await
            .unwrap()
            .iter()
            .map(|v| v.active)
            .collect();
        assert_eq!(flags, [true, false, false], "exactly one active version");
    }

    pub async fn unknown_version_not_found(store: &dyn ConfigStore) {
        store.create_version(api(1, true)).await.unwrap();
        let events = store.audit(100).await.unwrap().len();
        assert_eq!(
            store.activate(42, "alice", None).await.unwrap_err(),
            StoreError::NotFound(42)
        );
        assert_eq!(
            store.activate(0, "alice", Some(1)).await.unwrap_err(),
            StoreError::NotFound(0)
        );
        assert_eq!(
            store.activate(u64::MAX, "alice", None).await.unwrap_err(),
            StoreError::NotFound(u64::MAX)
        );
        assert!(store.version(42).await.unwrap().is_none());
        assert_eq!(active_version(store).await, Some(1));
        assert_eq!(
            store.audit(100).await.unwrap().len(),
            events,
            "failures are not audited"
        );
    }

    pub async fn rollback_walks_back(store: &dyn ConfigStore) {
        assert_eq!(
            store.rollback("ops").await.unwrap_err(),
            StoreError::NothingToRollBack
        );
        store.create_version(api(1, true)).await.unwrap();
        assert_eq!(
            store.rollback("ops").await.unwrap_err(),
            StoreError::NothingToRollBack,
            "a single activation has nothing before it"
        );
        store.create_version(api(2, true)).await.unwrap();
        store.create_version(api(3, true)).await.unwrap();
        store.create_version(api(4, false)).await.unwrap();

        // v1 → v2 → v3; rollback → v2; rollback → v1.
        let r = store.rollback("ops").await.unwrap();
        assert_eq!(
            (r.version, r.previous, r.actor.as_str()),
            (2, Some(3), "ops")
        );
        assert_eq!(active_version(store).await, Some(2));
        let r = store.rollback("ops").await.unwrap();
        assert_eq!((r.version, r.previous), (1, Some(2)));
        assert_eq!(
            store.rollback("ops").await.unwrap_err(),
            StoreError::NothingToRollBack
        );
        assert_eq!(
            active_version(store).await,
            Some(1),
            "unchanged by the failure"
        );

        // The undone activations are gone from the history: v1 → v4, rollback → v1.
        store.activate(4, "alice", None).await.unwrap();
        assert_eq!(store.rollback("ops").await.unwrap().version, 1);
        assert_eq!(
            store.rollback("ops").await.unwrap_err(),
            StoreError::NothingToRollBack
        );

        // Activating an old version is a new step: v1 → v3 → v2 → v3, back to v2, v3, v1.
        for v in [3, 2, 3] {
            store.activate(v, "alice", None).await.unwrap();
        }
        let mut back = Vec::new();
        for _ in 0..3 {
            back.push(store.rollback("ops").await.unwrap().version);
        }
        assert_eq!(back, [2, 3, 1]);

        let last = &store.audit(1).await.unwrap()[0];
        assert_eq!(
            (last.action.as_str(), last.version, last.from_version),
            ("rollback", 1, Some(3))
        );
        // Rollbacks create no versions.
        assert_eq!(store.versions().await.unwrap().len(), 4);
    }

    pub async fn audit_records_actor_action_version(store: &dyn ConfigStore) {
        assert!(store.audit(10).await.unwrap().is_empty());
        store
            .create_version(NewVersion {
                message: "first".into(),
                ..new_version(config(1), "alice", VersionSource::File, true)
            })
            .await
            .unwrap();
        store
            .create_version(NewVersion {
                message: "second".into(),
                based_on: Some(1),
                ..new_version(config(2), "bob", VersionSource::Api, false)
            })
            .await
            .unwrap();
        store.activate(2, "carol", Some(1)).await.unwrap();
        store.rollback("dave").await.unwrap();

        let events = store.audit(10).await.unwrap();
        let got: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.actor.as_str(),
                    e.action.as_str(),
                    e.version,
                    e.from_version,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("dave", "rollback", 1, Some(2)),
                ("carol", "activate", 2, Some(1)),
                ("bob", "create", 2, Some(1)),
                ("alice", "activate", 1, None),
                ("alice", "create", 1, None),
            ]
        );
        assert_eq!(events[2].message, "second");
        assert_eq!(events[4].message, "first");
        assert!(events.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        assert!(events.iter().all(|e| is_rfc3339_utc(&e.at)));

        assert_eq!(store.audit(2).await.unwrap(), events[..2]);
        assert!(store.audit(0).await.unwrap().is_empty());
        assert_eq!(store.audit(usize::MAX).await.unwrap().len(), 5);
    }

    pub async fn last_file_import(store: &dyn ConfigStore) {
        assert!(store.last_file_import().await.unwrap().is_none());
        store.create_version(api(1, true)).await.unwrap();
        assert!(store.last_file_import().await.unwrap().is_none());
        let file = |n| new_version(config(n), "file", VersionSource::File, false);
        store.create_version(file(2)).await.unwrap();
        let v3 = store.create_version(file(3)).await.unwrap();
        store.create_version(api(4, true)).await.unwrap();

        let last = store.last_file_import().await.unwrap().unwrap();
        assert_eq!(last, v3);
        assert_eq!(
            last.sha256,
            sha256_hex(canonical_json(&config(3)).as_bytes())
        );
        assert!(!last.active);
        store.activate(3, "ops", None).await.unwrap();
        assert!(store.last_file_import().await.unwrap().unwrap().active);
    }

    /// Replicas that start at once with the same new file import it once:
    /// the check for an earlier import of the same config is in the write
    /// transaction, not a read before it.
    pub async fn concurrent_file_imports_of_one_config_create_one_version(
        store: Arc<dyn ConfigStore>,
    ) {
        store.create_version(api(1, true)).await.unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let file = new_version(config(2), "file", VersionSource::File, true);
                    store.create_version(file).await
                })
            })
            .collect();
        let (mut created, mut already) = (Vec::new(), Vec::new());
        for t in tasks {
            match t.await.unwrap() {
                Ok(v) => created.push(v.version),
                Err(StoreError::AlreadyImported(v)) => already.push(v),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(created, [2], "one import");
        assert_eq!(already, [2; 5]);
        assert_eq!(store.versions().await.unwrap().len(), 2);
        assert_eq!(active_version(&*store).await, Some(2));
        // A different file is still imported, and an API push of the same
        // config as a file import is not refused.
        let file3 = new_version(config(3), "file", VersionSource::File, true);
        assert_eq!(store.create_version(file3).await.unwrap().version, 3);
        let api2 = new_version(config(2), "api", VersionSource::Api, false);
        assert_eq!(store.create_version(api2).await.unwrap().version, 4);
    }

    pub async fn concurrent_creates_get_distinct_ids(store: Arc<dyn ConfigStore>) {
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.create_version(api(n, n % 2 == 0)).await })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().unwrap().version);
        }
        ids.sort();
        assert_eq!(ids, (1..=8).collect::<Vec<_>>());
        let active: Vec<_> = store
            .versions()
            .await
            .unwrap()
            .into_iter()
            .filter(|v| v.active)
            .map(|v| v.version)
            .collect();
        assert_eq!(active.len(), 1);
        assert_eq!(Some(active[0]), active_version(&*store).await);
    }

    pub fn traffic(at_ms: u64, attempts: usize) -> modelux::traffic::TrafficRecord {
        use modelux::traffic::{AttemptRecord, TrafficRecord};
        TrafficRecord {
            at_ms,
            request_id: format!("req-{at_ms}"),
            config_version: 3,
            route: "default".into(),
            client: Some("team-a".into()),
            stream: at_ms % 2 == 0,
            prompt_tokens: 120,
            completion_tokens: 40,
            tokens_estimated: at_ms % 3 == 0,
            max_tokens: Some(256),
            attempts: (0..attempts)
                .map(|k| {
                    if k + 1 < attempts {
                        let mut a = AttemptRecord::failed("oa", "primary", 0, 30, "429", Some(429));
                        a.retry_after_ms = Some(1500);
                        a
                    } else {
                        AttemptRecord::ok("an", "fallback", 30, 70)
                    }
                })
                .collect(),
            outcome: "ok".into(),
            status: 200,
            latency_ms: 101,
            ttft_ms: Some(55),
            served_by: Some("an/fallback".into()),
            cost_usd: Some(0.000125),
        }
    }

    /// The traffic log round-trips every field, counts and prunes by time
    /// and by size, and keeps order by start time.
    pub async fn traffic_log_round_trips_counts_and_prunes(store: &dyn ConfigStore) {
        let written: Vec<_> = [5_000u64, 1_000, 3_000, 2_000, 4_000]
            .iter()
            .map(|&t| traffic(t, 1 + (t as usize / 1000) % 2))
            .collect();
        store.append_traffic(&written).await.unwrap();
        assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 5);
        assert_eq!(store.traffic_count(2_000, 4_000).await.unwrap(), 2);
        let got = store.traffic_since(0, u64::MAX, 100).await.unwrap();
        let times: Vec<u64> = got.iter().map(|r| r.at_ms).collect();
        assert_eq!(times, [1_000, 2_000, 3_000, 4_000, 5_000]);
        let mut want = written.clone();
        want.sort_by_key(|r| r.at_ms);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                serde_json::to_value(g).unwrap(),
                serde_json::to_value(w).unwrap()
            );
        }
        assert_eq!(store.traffic_since(2_000, 5_000, 2).await.unwrap().len(), 2);
        // Older than 2 s goes, then all but the newest 2.
        assert_eq!(store.prune_traffic(2_000, 100).await.unwrap(), 1);
        assert_eq!(store.prune_traffic(0, 2).await.unwrap(), 2);
        let left: Vec<u64> = store
            .traffic_since(0, u64::MAX, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.at_ms)
            .collect();
        assert_eq!(left, [4_000, 5_000]);
    }

    /// Ranges, counts and prunes are exact to the millisecond whatever how
    /// the backend groups records (several writes in the same second, ranges
    /// that start and end inside a second, a size cap that cuts a group).
    pub async fn traffic_log_is_exact_inside_a_second(store: &dyn ConfigStore) {
        let times = |rs: &[modelux::traffic::TrafficRecord]| -> Vec<u64> {
            rs.iter().map(|r| r.at_ms).collect()
        };
        let first: Vec<_> = [10_900u64, 10_100, 11_000, 9_999]
            .iter()
            .map(|&t| traffic(t, 1))
            .collect();
        let second: Vec<_> = [10_500u64, 10_100, 12_999]
            .iter()
            .map(|&t| traffic(t, 2))
            .collect();
        store.append_traffic(&first).await.unwrap();
        store.append_traffic(&second).await.unwrap();
        let all = store.traffic_since(0, u64::MAX, 100).await.unwrap();
        assert_eq!(
            times(&all),
            [9_999, 10_100, 10_100, 10_500, 10_900, 11_000, 12_999]
        );
        // Ties keep the order they were written in.
        assert_eq!(all[1].attempts.len(), 1);
        assert_eq!(all[2].attempts.len(), 2);
        assert_eq!(store.traffic_count(10_100, 10_900).await.unwrap(), 3);
        assert_eq!(store.traffic_count(10_101, 11_001).await.unwrap(), 3);
        assert_eq!(store.traffic_count(9_999, 13_000).await.unwrap(), 7);
        assert_eq!(store.traffic_count(11_001, 12_999).await.unwrap(), 0);
        assert_eq!(
            times(&store.traffic_since(10_200, 12_000, 100).await.unwrap()),
            [10_500, 10_900, 11_000]
        );
        assert_eq!(
            times(&store.traffic_since(10_000, u64::MAX, 2).await.unwrap()),
            [10_100, 10_100]
        );
        assert!(store.traffic_since(0, 9_999, 10).await.unwrap().is_empty());
        // Older than 10.5 s goes: 9_999 and both 10_100.
        assert_eq!(store.prune_traffic(10_500, 100).await.unwrap(), 3);
        assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 4);
        // Keep the newest 3: 10_500 goes, 10_900 stays.
        assert_eq!(store.prune_traffic(0, 3).await.unwrap(), 1);
        assert_eq!(
            times(&store.traffic_since(0, u64::MAX, 100).await.unwrap()),
            [10_900, 11_000, 12_999]
        );
        assert_eq!(store.prune_traffic(0, 3).await.unwrap(), 0);
        assert_eq!(store.prune_traffic(u64::MAX, 3).await.unwrap(), 3);
        assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 0);
    }
}

macro_rules! behaviour_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn create_list_get() {
                let b = Backend::$backend().await;
                checks::create_list_get(&*b.store).await;
            }

            #[tokio::test]
            async fn sha256_stable_across_key_order() {
                let b = Backend::$backend().await;
                checks::sha256_stable_across_key_order(&*b.store).await;
            }

            #[tokio::test]
            async fn activate_with_and_without_if_match() {
                let b = Backend::$backend().await;
                checks::activate_with_and_without_if_match(&*b.store).await;
            }

            #[tokio::test]
            async fn unknown_version_not_found() {
                let b = Backend::$backend().await;
                checks::unknown_version_not_found(&*b.store).await;
            }

            #[tokio::test]
            async fn rollback_walks_back() {
                let b = Backend::$backend().await;
                checks::rollback_walks_back(&*b.store).await;
            }

            #[tokio::test]
            async fn audit_records_actor_action_version() {
                let b = Backend::$backend().await;
                checks::audit_records_actor_action_version(&*b.store).await;
            }

            #[tokio::test]
            async fn last_file_import() {
                let b = Backend::$backend().await;
                checks::last_file_import(&*b.store).await;
            }

            #[tokio::test]
            async fn traffic_log_round_trips_counts_and_prunes() {
                let b = Backend::$backend().await;
                checks::traffic_log_round_trips_counts_and_prunes(&*b.store).await;
            }

            #[tokio::test]
            async fn traffic_log_is_exact_inside_a_second() {
                let b = Backend::$backend().await;
                checks::traffic_log_is_exact_inside_a_second(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_file_imports_of_one_config_create_one_version() {
                let b = Backend::$backend().await;
                checks::concurrent_file_imports_of_one_config_create_one_version(b.store.clone())
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_creates_get_distinct_ids() {
                let b = Backend::$backend().await;
                checks::concurrent_creates_get_distinct_ids(b.store.clone()).await;
            }
        }
    };
}

behaviour_suite!(memory);
behaviour_suite!(sqlite);
behaviour_suite!(postgres);

// ------------------------------------------------------------ open() URLs

/// The memory store keeps the newest 100,000 traffic records, whatever
/// `traffic.max_records` says (a soak test on `--store memory` grew towards
/// a gigabyte with the default million).
#[tokio::test]
async fn the_memory_store_keeps_a_bounded_traffic_log() {
    let store = open("memory").await.unwrap();
    let records: Vec<_> = (0..1_000u64).map(|k| checks::traffic(k, 1)).collect();
    for round in 0..101u64 {
        let batch: Vec<_> = records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.at_ms += round * 1_000;
                r
            })
            .collect();
        store.append_traffic(&batch).await.unwrap();
    }
    let kept = store.traffic_since(0, u64::MAX, usize::MAX).await.unwrap();
    assert_eq!(kept.len(), 100_000);
    assert_eq!(
        kept.iter().map(|r| r.at_ms).min(),
        Some(1_000),
        "the oldest went first"
    );
}

#[tokio::test]
async fn open_rejects_unknown_urls_without_leaking_passwords() {
    let err = open("mysql://root:hunter2@db/x").await.err().unwrap();
    assert!(matches!(err, StoreError::Database(_)));
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("mysql://root:***@db/x"), "{text}");
    assert!(open("sqlite:").await.is_err());
    assert!(open("sqlite::memory:").await.is_err());
    assert!(open("sqlite:x.db?mode=rwc").await.is_err());
    assert!(open("memory").await.unwrap().changes().is_none());
}

// ------------------------------------------------------- SQLite durability

#[tokio::test]
async fn sqlite_creates_parent_dirs_and_uses_wal() {
    let dir = TmpDir::new("wal");
    let path = dir.path().join("a/b/config.db");
    let store = open(&format!("sqlite://{}", path.display())).await.unwrap();
    assert!(path.exists());
    assert!(store.changes().is_none());
    store.create_version(api(1, true)).await.unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        wal.exists(),
        "journal_mode=WAL keeps a -wal file while open"
    );
}

#[tokio::test]
async fn sqlite_activation_survives_reopen() {
    let dir = TmpDir::new("reopen");
    let path = dir.path().join("config.db");
    let (versions, audit, active) = {
        let store = SqliteStore::open(&path).await.unwrap();
        for n in 1..=3 {
            store.create_version(api(n, true)).await.unwrap();
        }
        store.activate(2, "ops", Some(3)).await.unwrap();
        (
            store.versions().await.unwrap(),
            store.audit(100).await.unwrap(),
            store.active().await.unwrap(),
        )
    };
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.active().await.unwrap(), active);
    assert_eq!(store.active().await.unwrap().unwrap().version, 2);
    assert_eq!(store.versions().await.unwrap(), versions);
    assert_eq!(store.audit(100).await.unwrap(), audit);
    // The rollback history survives too: 1 → 2 → 3 → 2, back to 3.
    assert_eq!(store.rollback("ops").await.unwrap().version, 3);
    // Ids continue.
    assert_eq!(
        store.create_version(api(4, false)).await.unwrap().version,
        4
    );
}

/// Set in the child process of `sqlite_activation_survives_sigkill`.
const CHILD_DB_ENV: &str = "MODELUX_STORE_TEST_CHILD_DB";

/// Not a test of its own: the writer process that
/// `sqlite_activation_survives_sigkill` runs (this same binary) and kills.
/// Without the environment variable it does nothing.
#[tokio::test]
async fn sqlite_sigkill_child_writer() {
    let Ok(path) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    let store = SqliteStore::open(&path).await.unwrap();
    for n in 1..=2000 {
        let v = store.create_version(api(n, true)).await.unwrap();
        // Acknowledged only once create_version (and its activation) returned Ok.
        println!("ACK {}", v.version);
    }
    // Bounded: the parent kills us long before this ends.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn sqlite_activation_survives_sigkill() {
    let dir = TmpDir::new("sigkill");
    let path = dir.path().join("config.db");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "sqlite_sigkill_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (acked, child) = tokio::task::spawn_blocking(move || {
        let mut acked = 0u64;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("ACK ") {
                acked = v.parse().unwrap();
                if acked >= 25 {
                    // SIGKILL, while the writer is in the middle of its next write.
                    child.kill().unwrap();
                    break;
                }
            }
        }
        child.wait().unwrap();
        (acked, child)
    })
    .await
    .unwrap();
    drop(child);
    assert!(acked >= 25, "the writer acknowledged only {acked} versions");

    let store = SqliteStore::open(&path).await.unwrap();
    let active = store.active().await.unwrap().unwrap().version;
    assert!(
        active >= acked,
        "acknowledged activation of {acked} lost: active is {active}"
    );
    let newest = store.versions().await.unwrap()[0].version;
    assert_eq!(active, newest, "every committed create also activated");
    for v in 1..=acked {
        assert!(
            store.version(v).await.unwrap().is_some(),
            "version {v} lost"
        );
    }
    println!("SIGKILL after {acked} acknowledged activations; active after restart: {active}");
}

/// Another connection (another process sharing the file, in production)
/// takes the database's write lock and never commits: every write fails
/// within the store's operation timeout, with the same error the
/// PostgreSQL store gives when its database does not answer, instead of
/// waiting out SQLite's busy timeout (10 s per lock wait). Reads go on
/// (WAL) while a connection is free, and are bounded too once none is;
/// once the lock is released the store works again, with no trace of the
/// writes that timed out.
#[tokio::test]
async fn sqlite_operations_fail_within_the_operation_timeout() {
    use sqlx::Connection;
    let dir = TmpDir::new("deadline");
    let path = dir.path().join("config.db");
    let limit = Duration::from_millis(500);
    let store = SqliteStore::open(&path)
        .await
        .unwrap()
        .with_operation_timeout(limit);
    assert_eq!(store.operation_timeout(), limit);
    store.create_version(api(1, true)).await.unwrap();
    store
        .append_traffic(&[checks_traffic(1_000)])
        .await
        .unwrap();

    let mut holder = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
    )
    .await
    .unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    // WAL: readers are not blocked by the writer.
    assert_eq!(active_version(&store).await, Some(1));

    let expect_timeout = |what: &str, started: Instant, r: Result<(), StoreError>| {
        let waited = started.elapsed();
        match r {
            Err(StoreError::Database(m)) => assert!(
                m.contains("no answer from the database within 500 ms"),
                "{what}: {m} (after {waited:?})"
            ),
            other => panic!("{what}: {other:?} after {waited:?}"),
        }
        assert!(
            waited >= limit && waited < limit + Duration::from_secs(2),
            "{what} failed after {waited:?}"
        );
    };
    let t = Instant::now();
    let r = store.create_version(api(2, true)).await.map(drop);
    expect_timeout("create_version", t, r);
    let t = Instant::now();
    let r = store.activate(1, "ops", None).await.map(drop);
    expect_timeout("activate", t, r);
    let t = Instant::now();
    let r = store.rollback("ops").await.map(drop);
    expect_timeout("rollback", t, r);
    let t = Instant::now();
    let r = store.append_traffic(&[checks_traffic(2_000)]).await;
    expect_timeout("append_traffic", t, r);
    let t = Instant::now();
    let r = store.prune_traffic(u64::MAX, 0).await.map(drop);
    expect_timeout("prune_traffic", t, r);
    // Every pooled connection may now be busy with a timed-out write
    // waiting out SQLite's busy timeout: a read may have to wait for one,
    // but no longer than the operation timeout either.
    let t = Instant::now();
    let read = store.active().await;
    assert!(
        t.elapsed() < limit + Duration::from_secs(2),
        "a read took {:?}: {read:?}",
        t.elapsed()
    );

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();
    let v = tokio::time::timeout(Duration::from_secs(5), store.create_version(api(2, true)))
        .await
        .expect("the store works again once the lock is released")
        .unwrap();
    assert_eq!(v.version, 2, "no version was created by a timed-out call");
    assert_eq!(store.versions().await.unwrap().len(), 2);
    assert_eq!(active_version(&store).await, Some(2));
    assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 1);
}

// ------------------------------------------------- PostgreSQL, N replicas

async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<u64>,
    want: u64,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    let delivered = tokio::time::timeout(limit, rx.wait_for(|v| *v == want))
        .await
        .map(|r| r.is_ok());
    assert!(
        matches!(delivered, Ok(true)),
        "changes() did not deliver version {want} within {limit:?} (has {})",
        *rx.borrow()
    );
    start.elapsed()
}

#[tokio::test]
async fn postgres_two_handles_see_each_others_activations() {
    let url = pg::database("handles").await;
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    a.create_version(api(1, true)).await.unwrap();
    assert_eq!(active_version(&*b).await, Some(1));
    let v2 = b
        .create_version(NewVersion {
            based_on: Some(1),
            ..api(2, false)
        })
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(a.versions().await.unwrap().len(), 2);
    assert_eq!(
        a.activate(2, "a", Some(2)).await.unwrap_err(),
        StoreError::Conflict { current: Some(1) }
    );
    a.activate(2, "a", Some(1)).await.unwrap();
    assert_eq!(active_version(&*b).await, Some(2));
    assert_eq!(b.rollback("b").await.unwrap().version, 1);
    assert_eq!(active_version(&*a).await, Some(1));
    assert_eq!(a.audit(1).await.unwrap()[0].actor, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_delivers_other_handles_activation_within_2s() {
    let url = pg::database("changes").await;
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    let mut rx = a.changes().expect("postgres pushes changes");
    assert_eq!(*rx.borrow(), 0, "nothing active yet");

    let mut took = Vec::new();
    b.create_version(api(1, true)).await.unwrap();
    took.push(wait_for(&mut rx, 1, Duration::from_secs(2)).await);
    b.create_version(api(2, true)).await.unwrap();
    took.push(wait_for(&mut rx, 2, Duration::from_secs(2)).await);
    b.rollback("ops").await.unwrap();
    took.push(wait_for(&mut rx, 1, Duration::from_secs(2)).await);
    b.activate(2, "ops", Some(1)).await.unwrap();
    took.push(wait_for(&mut rx, 2, Duration::from_secs(2)).await);
    println!("changes() delivery latencies: {took:?}");
    // NOTIFY, not the 1 s poll, should be what delivers.
    assert!(
        took.iter()
            .filter(|d| **d < Duration::from_millis(500))
            .count()
            >= 3,
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_writers_on_two_handles() {
    let url = pg::database("concurrent").await;
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..20u64 {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.create_version(api(n, n % 3 == 0)).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().version);
    }
    ids.sort();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>(), "distinct, dense ids");

    // Racing activations with the same If-Match: exactly one wins.
    let current = active_version(&*a).await.unwrap();
    let (ra, rb) = tokio::join!(
        a.activate(if current == 5 { 6 } else { 5 }, "a", Some(current)),
        b.activate(if current == 7 { 8 } else { 7 }, "b", Some(current)),
    );
    let results: Vec<Result<Activation, StoreError>> = vec![ra, rb];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .any(|r| matches!(r, Err(StoreError::Conflict { .. }))));
    let flagged: Vec<_> = b
        .versions()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.active)
        .collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(Some(flagged[0].version), active_version(&*a).await);
}

async fn listener_connections(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = 'modelux-listener' AND datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

/// Waits (at most 5 s) until the number of LISTEN connections satisfies `ok`.
async fn wait_for_listeners(url: &str, ok: impl Fn(i64) -> bool) {
    let start = Instant::now();
    loop {
        let n = listener_connections(url).await;
        if ok(n) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{n} LISTEN connections after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_survive_a_killed_listener_connection() {
    let url = pg::database("reconnect").await;
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    let mut rx = a.changes().unwrap();
    b.create_version(api(1, true)).await.unwrap();
    wait_for(&mut rx, 1, Duration::from_secs(2)).await;
    wait_for_listeners(&url, |n| n == 2).await;

    // Kill every LISTEN connection (both handles'), as a failover or a
    // connection reaper would.
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'modelux-listener' AND datname = current_database()",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(killed, [true, true]);

    // An activation made while the listener is down still arrives in time.
    b.create_version(api(2, true)).await.unwrap();
    let took = wait_for(&mut rx, 2, Duration::from_secs(2)).await;
    println!("delivered {took:?} after the LISTEN connection was killed");

    // And the listeners reconnect.
    wait_for_listeners(&url, |n| n == 2).await;
    b.activate(1, "ops", None).await.unwrap();
    wait_for(&mut rx, 1, Duration::from_millis(900)).await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_task_stops_when_the_store_is_dropped() {
    let url = pg::database("drop").await;
    let store = open(&url).await.unwrap();
    let rx = store.changes().unwrap();
    wait_for_listeners(&url, |n| n == 1).await;
    drop(store);
    // The LISTEN connection goes with the task.
    wait_for_listeners(&url, |n| n == 0).await;
    assert!(
        rx.has_changed().is_err(),
        "the sender is gone with the task"
    );
}

#[tokio::test]
async fn postgres_errors_hide_the_password() {
    let url = pg::database("secret").await;
    let port = pg::server().port();
    let bad = format!("postgres://modelux:hunter2@127.0.0.1:{port}/no_such_database");
    let err = open(&bad).await.err().unwrap();
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("modelux:***@127.0.0.1"), "{text}");
    assert!(text.contains("no_such_database"), "{text}");
    // The good database opens, and re-opening does not re-run migrations.
    open(&url).await.unwrap();
    open(&url).await.unwrap();
}

/// A PostgreSQL database written by older builds keeps its traffic log:
/// a row of schema 2 (one column per field) and a row of schema 3 (one JSON
/// object per row) both come back after the migrations to schema 4 (pages).
#[tokio::test]
async fn postgres_traffic_of_older_schemas_is_carried_over() {
    let url = pg::database("oldschema").await;
    {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE modelux_schema_version (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let migrations = [
            include_str!("../src/store/migrations/postgres/0001_init.sql"),
            include_str!("../src/store/migrations/postgres/0002_traffic.sql"),
            include_str!("../src/store/migrations/postgres/0003_traffic_log.sql"),
        ];
        for (i, sql) in migrations.iter().enumerate() {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            sqlx::query("INSERT INTO modelux_schema_version VALUES ($1, 'old', 'then')")
                .bind(i as i64 + 1)
                .execute(&pool)
                .await
                .unwrap();
            if i == 1 {
                // Written by a schema-2 build.
                sqlx::raw_sql(
                    r#"INSERT INTO modelux_traffic (at_ms, request_id, config_version, route,
                       client, stream, prompt_tokens, completion_tokens, tokens_estimated,
                       max_tokens, outcome, status, latency_ms, ttft_ms, served_by, cost_usd,
                       attempts) VALUES (1500, 'r-schema-2', 3, 'default', 'team-a', 1, 10, 20,
                       0, 256, 'ok', 200, 120, 40, 'an/fallback', 0.5,
                       '[{"provider":"oa","model":"primary","start_ms":0,"duration_ms":30,"outcome":"429","status":429,"retry_after_ms":1500},{"provider":"an","model":"fallback","start_ms":30,"duration_ms":90,"outcome":"ok"}]')"#,
                )
                .execute(&pool)
                .await
                .unwrap();
            }
        }
        // Written by a schema-3 build: the record's serde JSON object.
        let mut r3 = checks_traffic(1_700);
        r3.request_id = "r-schema-3".into();
        sqlx::query("INSERT INTO modelux_traffic_log (at_ms, record) VALUES ($1, $2)")
            .bind(1_700i64)
            .bind(serde_json::to_string(&r3).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let store = open(&url).await.unwrap();
    assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 2);
    let got = store.traffic_since(0, u64::MAX, 10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].request_id, "r-schema-2");
    assert_eq!(got[0].client.as_deref(), Some("team-a"));
    assert!(got[0].stream && !got[0].tokens_estimated);
    assert_eq!(got[0].attempts[0].retry_after_ms, Some(1500));
    assert_eq!(got[0].cost_usd, Some(0.5));
    let mut want3 = checks_traffic(1_700);
    want3.request_id = "r-schema-3".into();
    assert_eq!(got[1], want3);
    // New records land next to the old ones, in the same second.
    store
        .append_traffic(&[checks_traffic(1_600)])
        .await
        .unwrap();
    let at: Vec<u64> = store
        .traffic_since(1_000, 2_000, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.at_ms)
        .collect();
    assert_eq!(at, [1_500, 1_600, 1_700]);
}

fn checks_traffic(at_ms: u64) -> modelux::traffic::TrafficRecord {
    checks::traffic(at_ms, 2)
}

/// Two replicas pruning the shared traffic log at the same moment keep
/// exactly the size cap: neither deletes the excess a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_prunes_keep_the_cap() {
    let url = pg::database("prunes").await;
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    for batch in 0..4u64 {
        let records: Vec<_> = (0..500u64)
            .map(|i| checks::traffic(batch * 7_000 + i * 13, 1))
            .collect();
        a.append_traffic(&records).await.unwrap();
    }
    assert_eq!(a.traffic_count(0, u64::MAX).await.unwrap(), 2_000);
    for _ in 0..3 {
        let (x, y) = tokio::join!(a.prune_traffic(0, 1_200), b.prune_traffic(0, 1_200));
        let deleted = x.unwrap() + y.unwrap();
        assert!(deleted == 800 || deleted == 0, "{deleted}");
        assert_eq!(a.traffic_count(0, u64::MAX).await.unwrap(), 1_200);
        let kept = b.traffic_since(0, u64::MAX, usize::MAX).await.unwrap();
        assert_eq!(kept.len(), 1_200);
        // The newest ones stay.
        assert_eq!(kept.last().unwrap().at_ms, 3 * 7_000 + 499 * 13);
    }
}

/// The PostgreSQL store speaks TLS: `sslmode=verify-full` with the server's
/// CA in `sslrootcert` connects and works, without it the unknown
/// certificate is refused with a reason, and `require` encrypts without
/// verifying. (Before, sqlx was built without TLS: `sslmode=require` failed
/// with "SQLx was built without TLS support", so a database that demands
/// TLS, as managed ones do, could not be used.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_connects_over_tls_and_verifies_the_server() {
    let url = pg::database("tls").await;
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let store = PostgresStore::connect(&verified).await.unwrap();
    store.create_version(api(1, true)).await.unwrap();
    assert_eq!(store.active().await.unwrap().map(|a| a.version), Some(1));
    // The session is encrypted.
    let pool = sqlx::PgPool::connect(&verified).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl);
    pool.close().await;

    let unknown = PostgresStore::connect(&format!("{url}?sslmode=verify-full"))
        .await
        .expect_err("an unknown CA is refused")
        .to_string();
    assert!(unknown.to_lowercase().contains("certificate"), "{unknown}");
    PostgresStore::connect(&format!("{url}?sslmode=require"))
        .await
        .unwrap();
}
