//! The SQLite backend: one gateway, one database file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Row;

use super::{
    db_error, now_rfc3339, within, Activation, AuditEvent, ConfigStore, ConfigVersion, Migration,
    NewVersion, StoreError, VersionSummary,
};

/// The schema, in order. Never edit an applied migration: add one.
const MIGRATIONS: &[Migration] = &[
    (1, "init", include_str!("migrations/sqlite/0001_init.sql")),
    (
        2,
        "traffic",
        include_str!("migrations/sqlite/0002_traffic.sql"),
    ),
    (
        3,
        "traffic log as one JSON record per row",
        include_str!("migrations/sqlite/0003_traffic_log.sql"),
    ),
    (
        4,
        "traffic log in pages of one second",
        include_str!("migrations/sqlite/0004_traffic_pages.sql"),
    ),
];

/// How long a writer waits for another connection's (or process's) write
/// transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest any one store operation may take by default, waiting for a
/// pooled connection included (see [`SqliteStore::with_operation_timeout`]).
///
/// Without it, nothing bounds an operation as a whole: the busy timeout
/// bounds each wait for a lock, not their sum (a pool-checkout wait, then
/// one lock wait per statement of a deferred transaction), and nothing at
/// all bounds a statement stuck in I/O (a stalled disk or network file
/// system). Longer than [`BUSY_TIMEOUT`], so a write that waits for another
/// writer's lock still fails with SQLite's own "database is locked"; the
/// same 15 s as the PostgreSQL store's limit.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Write transactions take the database's write lock up front, so two
/// writers never both read the same "next id" or active version.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// A [`ConfigStore`] in a SQLite database file, for a single gateway.
///
/// The file (and its parent directory) is created if missing. The journal is
/// in WAL mode with `synchronous=FULL`, so every committed transaction, an
/// activation in particular, survives a crash of the process or of the
/// machine. Writers use `BEGIN IMMEDIATE` and a busy timeout, so several
/// processes may share the file. Every operation has
/// [15 s](SqliteStore::with_operation_timeout) to finish.
/// [`changes`](ConfigStore::changes) is `None`: poll
/// [`active`](ConfigStore::active).
///
/// ```
/// use modelux::store::{ConfigStore, NewVersion, SqliteStore, VersionSource};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), modelux::store::StoreError> {
/// let dir = std::env::temp_dir().join(format!("modelux-doc-sqlite-{}", std::process::id()));
/// let path = dir.join("config.db");
/// let store = SqliteStore::open(&path).await?;
/// store.create_version(NewVersion {
///     config: serde_json::json!({"models": {}}), author: "a".into(), message: "m".into(),
///     based_on: None, source: VersionSource::File, activate: true,
/// }).await?;
/// drop(store);
///
/// let reopened = SqliteStore::open(&path).await?;
/// assert_eq!(reopened.active().await?.unwrap().version, 1);
/// # drop(reopened);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// How long one store operation may take ([`OPERATION_TIMEOUT`] unless
    /// set with [`SqliteStore::with_operation_timeout`]).
    operation_timeout: Duration,
}

/// The pool's options, with the two checks that keep a connection whose
/// state SQLite or sqlx lost track of out of the pool.
///
/// * A connection released inside a transaction is closed, not reused.
///   After a failed `COMMIT` (a full disk), sqlx's transaction depth could
///   stay at 1 while SQLite had rolled back; reused, the connection turned
///   the next `BEGIN` into a `SAVEPOINT` whose release committed nothing
///   and refused `BEGIN IMMEDIATE` outright. An audit saw config pushes and
///   rollbacks fail, and traffic records counted as written but lost, for
///   30 minutes after the disk had space again (until sqlx retired the
///   connection).
/// * A connection SQLite opened read-only (it does so, silently, when the
///   file is not writable at that moment) is closed before it is handed out
///   again: once the file is writable, the next one can write. The audit
///   saw half the writes fail for good after a read-only spell.
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .acquire_timeout(BUSY_TIMEOUT + Duration::from_secs(5))
        .after_release(|conn, _| {
            Box::pin(async move {
                // A dropped transaction's rollback is only queued on the
                // connection's worker; the ping runs after it, so only a
                // depth that is really stuck closes the connection.
                sqlx::Connection::ping(conn).await?;
                Ok(!sqlx::Connection::is_in_transaction(conn))
            })
        })
        .before_acquire(|conn, _| Box::pin(async move { Ok(!read_only(conn).await?) }))
}

/// Whether SQLite opened `conn`'s main database read-only.
async fn read_only(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle();
    // SAFETY: `db` is the connection's open handle, held locked for the
    // call; `sqlite3_db_readonly` only reads its state.
    let ro = unsafe { libsqlite3_sys::sqlite3_db_readonly(db.as_ptr(), c"main".as_ptr()) };
    Ok(ro == 1)
}

impl SqliteStore {
    super::traffic_log::traffic_log_ops!(sqlx::Sqlite, super::traffic_log::as_written, err);
    super::config_sql::config_ops!(sqlx::Sqlite, super::traffic_log::as_written, err);

    /// SQLite has nothing to tell other processes about an activation:
    /// they poll the file.
    async fn announce(_: &mut SqliteConnection, _: &Activation) -> Result<(), StoreError> {
        Ok(())
    }

    /// A prune reads before it writes: `BEGIN IMMEDIATE`, so it waits for
    /// another writer (busy timeout) instead of failing on a stale snapshot.
    async fn prune_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool.begin_with(BEGIN_WRITE).await.map_err(err)
    }

    /// Opens (creating if needed) the database file at `path` and applies
    /// the embedded migrations.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let dir = std::env::temp_dir().join(format!("modelux-doc-sqlite-open-{}", std::process::id()));
    /// let store = modelux::store::SqliteStore::open(dir.join("nested/config.db")).await?;
    /// assert!(dir.join("nested/config.db").exists());
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = pool_options()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| opening(path, e))?;
        migrate(&pool).await.map_err(|e| match e {
            StoreError::Database(m) => {
                StoreError::Database(format!("migrating {}: {m}", path.display()))
            }
            other => other,
        })?;
        Ok(SqliteStore {
            pool,
            path: path.to_owned(),
            operation_timeout: OPERATION_TIMEOUT,
        })
    }

    /// Sets how long each store operation (every [`ConfigStore`] method)
    /// may take, waiting for a pooled connection included; 15 s unless set.
    /// Past it the call fails with a [`StoreError::Database`] saying the
    /// database did not answer in time, the same error the PostgreSQL store
    /// gives, and its transaction is rolled back (a write that was already
    /// committing may still commit: check [`active`](ConfigStore::active)).
    /// The store stays usable.
    ///
    /// Opening is not bounded by it: a migration of a large traffic log may
    /// take longer, and waits for a lock at most the busy timeout (10 s).
    ///
    /// A limit under the busy timeout makes a write that waits for another
    /// connection's (or process's) write transaction fail with this timeout
    /// instead of SQLite's "database is locked".
    ///
    /// ```
    /// use std::time::Duration;
    /// use modelux::store::{ConfigStore, SqliteStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let dir = std::env::temp_dir().join(format!("modelux-doc-sqlite-timeout-{}", std::process::id()));
    /// let store = SqliteStore::open(dir.join("c.db"))
    ///     .await?
    ///     .with_operation_timeout(Duration::from_secs(5));
    /// assert_eq!(store.operation_timeout(), Duration::from_secs(5));
    /// assert!(store.active().await?.is_none());
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_operation_timeout(mut self, limit: Duration) -> SqliteStore {
        self.operation_timeout = limit;
        self
    }

    /// How long each store operation may take (15 s unless set with
    /// [`with_operation_timeout`](SqliteStore::with_operation_timeout)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let dir = std::env::temp_dir().join(format!("modelux-doc-sqlite-deadline-{}", std::process::id()));
    /// let store = modelux::store::SqliteStore::open(dir.join("c.db")).await?;
    /// assert_eq!(store.operation_timeout().as_secs(), 15);
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// Runs a store operation within the operation timeout.
    fn guard<'a, T: Send + 'a>(
        &'a self,
        op: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(within(self.operation_timeout, op))
    }

    /// The database file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), modelux::store::StoreError> {
    /// let dir = std::env::temp_dir().join(format!("modelux-doc-sqlite-path-{}", std::process::id()));
    /// let store = modelux::store::SqliteStore::open(dir.join("c.db")).await?;
    /// assert_eq!(store.path(), dir.join("c.db"));
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`: writers take the
    /// database's write lock up front, one at a time) and reads the active
    /// row inside it.
    async fn write_tx(
        &self,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Sqlite>, Option<Activation>), StoreError> {
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
        let current = Self::cfg_current(&mut tx, "").await?;
        Ok((tx, current))
    }
}

fn opening(path: &Path, e: sqlx::Error) -> StoreError {
    StoreError::Database(format!("opening {}: {e}", path.display()))
}

fn err(e: sqlx::Error) -> StoreError {
    db_error(e, &[])
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS modelux_schema_version (
            version     INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at  TEXT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM modelux_schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::Database(format!(
            "the database has schema version {current}, newer than this build knows ({latest})"
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query(
            "INSERT INTO modelux_schema_version (version, description, applied_at) VALUES (?, ?, ?)",
        )
        .bind(version)
        .bind(description)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

impl ConfigStore for SqliteStore {
    fn create_version(&self, new: NewVersion) -> BoxFuture<'_, Result<VersionSummary, StoreError>> {
        self.guard(self.cfg_create(new))
    }

    fn version(&self, version: u64) -> BoxFuture<'_, Result<Option<ConfigVersion>, StoreError>> {
        self.guard(self.cfg_version(version))
    }

    fn versions(&self) -> BoxFuture<'_, Result<Vec<VersionSummary>, StoreError>> {
        self.guard(self.cfg_versions())
    }

    fn active(&self) -> BoxFuture<'_, Result<Option<Activation>, StoreError>> {
        self.guard(self.cfg_active())
    }

    fn activate(
        &self,
        version: u64,
        actor: &str,
        if_match: Option<u64>,
    ) -> BoxFuture<'_, Result<Activation, StoreError>> {
        self.guard(self.cfg_activate(version, actor.to_owned(), if_match))
    }

    fn rollback(&self, actor: &str) -> BoxFuture<'_, Result<Activation, StoreError>> {
        self.guard(self.cfg_rollback(actor.to_owned()))
    }

    fn audit(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditEvent>, StoreError>> {
        self.guard(self.cfg_audit(limit))
    }

    fn last_file_import(&self) -> BoxFuture<'_, Result<Option<VersionSummary>, StoreError>> {
        self.guard(self.cfg_last_file_import())
    }

    fn append_encoded<'a>(
        &'a self,
        records: &'a [crate::traffic::EncodedRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.guard(self.log_append(records))
    }

    fn traffic_since(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::traffic::TrafficRecord>, StoreError>> {
        self.guard(self.log_since(from_unix_ms, to_unix_ms, limit))
    }

    fn traffic_count(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.guard(self.log_count(from_unix_ms, to_unix_ms))
    }

    fn prune_traffic(
        &self,
        older_than_unix_ms: u64,
        max_records: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.guard(self.log_prune(older_than_unix_ms, max_records))
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection released inside a transaction (as after a failed
    /// `COMMIT`) is not reused: the next write transaction begins afresh
    /// and commits. Reused, `BEGIN IMMEDIATE` was refused ("begin_with at
    /// non-zero transaction depth") and a plain `BEGIN` became a savepoint.
    #[tokio::test]
    async fn a_connection_left_in_a_transaction_is_not_reused() {
        let dir =
            std::env::temp_dir().join(format!("modelux-sqlite-leftover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.join("t.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = pool_options()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::raw_sql("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        {
            let mut conn = pool.acquire().await.unwrap();
            let tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            // Neither committed nor rolled back: sqlx's depth stays at 1.
            std::mem::forget(tx);
            assert!(sqlx::Connection::is_in_transaction(&*conn));
        }
        let mut tx = pool.begin_with(BEGIN_WRITE).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        pool.close().await;
        // Durable: another pool sees the row.
        let other = SqlitePoolOptions::new()
            .connect_with(SqliteConnectOptions::new().filename(dir.join("t.db")))
            .await
            .unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
            .fetch_one(&other)
            .await
            .unwrap();
        assert_eq!(n, 1);
        other.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A connection SQLite opened read-only is closed before it is handed
    /// out again, so the pool can open a writable one once the file is.
    #[tokio::test]
    async fn a_read_only_connection_is_not_handed_out_again() {
        let dir = std::env::temp_dir().join(format!("modelux-sqlite-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        SqliteStore::open(&path).await.unwrap();
        let pool = pool_options()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::new().filename(&path).read_only(true))
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        assert!(read_only(&mut conn).await.unwrap());
        sqlx::raw_sql("CREATE TEMP TABLE marker (x INTEGER)")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        // Handed out again, the same connection would still have `marker`.
        let mut conn = pool.acquire().await.unwrap();
        let found: Option<(String,)> =
            sqlx::query_as("SELECT name FROM sqlite_temp_master WHERE name = 'marker'")
                .fetch_optional(&mut *conn)
                .await
                .unwrap();
        assert!(found.is_none(), "the read-only connection was reused");
        drop(conn);
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database at schema 2 (one column per field) keeps its traffic
    /// records when it is opened by a build with schema 3 (one JSON text).
    #[tokio::test]
    async fn schema_2_traffic_records_are_carried_over() {
        let dir = std::env::temp_dir().join(format!("modelux-sqlite-mig3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE TABLE modelux_schema_version (version INTEGER PRIMARY KEY, \
                 description TEXT NOT NULL, applied_at TEXT NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
            for (version, description, sql) in &MIGRATIONS[..2] {
                sqlx::raw_sql(sql).execute(&pool).await.unwrap();
                sqlx::query("INSERT INTO modelux_schema_version VALUES (?, ?, 'then')")
                    .bind(version)
                    .bind(description)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            sqlx::raw_sql(
                r#"INSERT INTO modelux_traffic (at_ms, request_id, config_version, route, client,
                   stream, prompt_tokens, completion_tokens, tokens_estimated, max_tokens, outcome,
                   status, latency_ms, ttft_ms, served_by, cost_usd, attempts) VALUES
                   (2000, 'r2', 3, 'default', NULL, 1, 10, 20, 0, 256, 'ok', 200, 120, 40,
                    'an/fallback', 0.5,
                    '[{"provider":"oa","model":"primary","start_ms":0,"duration_ms":30,"outcome":"429","status":429,"retry_after_ms":1500},{"provider":"an","model":"fallback","start_ms":30,"duration_ms":90,"outcome":"ok"}]'),
                   (1000, 'r1', 3, 'default', 'team-a', 0, 5, 6, 1, NULL, '5xx', 502, 80, NULL,
                    NULL, NULL, '[]')"#,
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let got = store.traffic_since(0, u64::MAX, 10).await.unwrap();
        assert_eq!(got.len(), 2);
        let (r1, r2) = (&got[0], &got[1]);
        assert_eq!((r1.at_ms, r1.request_id.as_str()), (1000, "r1"));
        assert_eq!(r1.client.as_deref(), Some("team-a"));
        assert!(!r1.stream && r1.tokens_estimated);
        assert_eq!((r1.max_tokens, r1.status, r1.ttft_ms), (None, 502, None));
        assert!(r1.attempts.is_empty() && r1.served_by.is_none() && r1.cost_usd.is_none());
        assert_eq!(r2.request_id, "r2");
        assert!(r2.stream && !r2.tokens_estimated);
        assert_eq!(
            (r2.max_tokens, r2.ttft_ms, r2.cost_usd),
            (Some(256), Some(40), Some(0.5))
        );
        assert_eq!(r2.attempts.len(), 2);
        assert_eq!(r2.attempts[0].retry_after_ms, Some(1500));
        assert_eq!(r2.attempts[1].target(), "an/fallback");
        assert_eq!(store.traffic_count(0, u64::MAX).await.unwrap(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
