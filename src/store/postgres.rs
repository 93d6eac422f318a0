//! The PostgreSQL backend: N gateway replicas sharing one database.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use tokio::sync::watch;

use super::{
    activate_note, db_error, db_id, fingerprint, from_db_id, now_rfc3339, parse_stored_config,
    redact_url, rollback_note, scrub, url_passwords, Activation, AuditEvent, ConfigStore,
    ConfigVersion, Migration, NewVersion, StoreError, VersionSource, VersionSummary,
    MAX_AUDIT_LIMIT, MAX_ROLLBACK_DEPTH, MAX_VERSIONS_LISTED,
};

/// The schema, in order. Never edit an applied migration: add one.
const MIGRATIONS: &[Migration] = &[
    (1, "init", include_str!("migrations/postgres/0001_init.sql")),
    (
        2,
        "traffic",
        include_str!("migrations/postgres/0002_traffic.sql"),
    ),
    (
        3,
        "traffic log as one JSON record per row",
        include_str!("migrations/postgres/0003_traffic_log.sql"),
    ),
    (
        4,
        "traffic log in pages of one second",
        include_str!("migrations/postgres/0004_traffic_pages.sql"),
    ),
];

/// The NOTIFY channel; the payload is the newly active version.
const CHANNEL: &str = "modelux_config";

/// The advisory lock held while migrating, so replicas starting together
/// migrate one at a time ("modelux" in ASCII).
const MIGRATION_LOCK: i64 = 0x006d_6f64_656c_7578;

/// The advisory lock held while pruning the traffic log ("mxprune").
const PRUNE_LOCK: i64 = 0x006d_7870_7275_6e65;

/// How often the change task re-reads the active version even without a
/// notification: the safety net for a NOTIFY lost while disconnected.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Reconnect backoff of the LISTEN connection.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A LISTEN connection that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Pool limits.
const MAX_CONNECTIONS: u32 = 5;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`ConfigStore`] in a PostgreSQL database shared by every replica.
///
/// Writers serialize on the single row of `modelux_config_active`
/// (`SELECT … FOR UPDATE`), so concurrent creates get distinct ids and there
/// is never more than one active version. Every activation and rollback
/// sends `NOTIFY modelux_config, '<version>'` inside its transaction.
///
/// [`changes`](ConfigStore::changes) is backed by a background task that
/// LISTENs on its own connection, reconnects with backoff (re-reading the
/// active version after every (re)connect, since a NOTIFY sent while
/// disconnected is lost) and also re-reads it every second; the task stops
/// when the store is dropped. The channel carries the active version
/// (`0` while none is active).
///
/// ```no_run
/// use modelux::store::{ConfigStore, PostgresStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), modelux::store::StoreError> {
/// let store = PostgresStore::connect("postgres://modelux@127.0.0.1:5432/modelux").await?;
/// let mut changes = store.changes().unwrap();
/// changes.changed().await.ok();
/// println!("now active: {}", *changes.borrow());
/// # Ok(())
/// # }
/// ```
pub struct PostgresStore {
    pool: PgPool,
    /// Passwords from the URL, masked out of every error message.
    secrets: Vec<String>,
    changes: watch::Receiver<u64>,
    task: tokio::task::AbortHandle,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("active", &*self.changes.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PostgresStore {
    super::traffic_log::traffic_log_ops!(sqlx::Postgres, super::traffic_log::numbered, err);

    /// Replicas prune one at a time (a transaction-scoped advisory lock):
    /// two concurrent size-cap prunes would each delete the excess.
    async fn prune_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PRUNE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        Ok(tx)
    }

    /// Connects, applies the embedded migrations (under an advisory lock)
    /// and starts the change task. Must be called within a Tokio runtime.
    ///
    /// Errors never include the password.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A bad port: the error shows the URL with its password masked.
    /// let err = modelux::store::PostgresStore::connect("postgres://gw:hunter2@db:port/x")
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("postgres://gw:***@db:port/x"));
    /// assert!(!err.to_string().contains("hunter2"));
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let secrets = url_passwords(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Database(scrub(
                format!("invalid PostgreSQL URL {}: {e}", redact_url(url)),
                &secrets,
            ))
        })?;
        let connecting = |e: sqlx::Error| {
            StoreError::Database(scrub(
                format!("connecting to {}: {e}", redact_url(url)),
                &secrets,
            ))
        };
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone().application_name("modelux"))
            .await
            .map_err(connecting)?;
        migrate(&pool).await.map_err(|e| rescrub(e, &secrets))?;
        let initial = read_active(&pool)
            .await
            .map_err(|e| rescrub(e, &secrets))?
            .map_or(0, |a| a.version);
        let (tx, changes) = watch::channel(initial);
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.application_name("modelux-listener"));
        let task = tokio::spawn(watch_active(listen_pool, pool.clone(), tx)).abort_handle();
        Ok(PostgresStore {
            pool,
            secrets,
            changes,
            task,
        })
    }

    /// Runs a store operation, masking passwords out of its error.
    fn guard<'a, T: Send + 'a>(
        &'a self,
        op: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move { op.await.map_err(|e| rescrub(e, &self.secrets)) })
    }

    /// Begins a write transaction and locks the active row: every writer
    /// goes through here, one at a time.
    async fn write_tx(
        &self,
    ) -> Result<
        (
            sqlx::Transaction<'static, sqlx::Postgres>,
            Option<Activation>,
        ),
        StoreError,
    > {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let current = current(&mut tx, " FOR UPDATE").await?;
        Ok((tx, current))
    }
}

fn rescrub(e: StoreError, secrets: &[String]) -> StoreError {
    match e {
        StoreError::Database(m) => StoreError::Database(scrub(m, secrets)),
        other => other,
    }
}

fn err(e: sqlx::Error) -> StoreError {
    db_error(e, &[])
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS modelux_schema_version (
            version     BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at  TEXT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM modelux_schema_version")
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
            "INSERT INTO modelux_schema_version (version, description, applied_at) \
             VALUES ($1, $2, $3)",
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

/// Keeps `tx` at the active version: LISTEN with reconnects, a re-read after
/// every (re)connect and notification, and a periodic re-read. Runs until
/// aborted.
async fn watch_active(listen_pool: PgPool, pool: PgPool, tx: watch::Sender<u64>) {
    // Serializes read-then-publish, so an older read never overwrites a newer one.
    let refreshing = tokio::sync::Mutex::new(());
    let refresh = || async {
        let _one_at_a_time = refreshing.lock().await;
        match read_active(&pool).await {
            Ok(active) => {
                let v = active.map_or(0, |a| a.version);
                tx.send_if_modified(|cur| {
                    let changed = *cur != v;
                    *cur = v;
                    changed
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "config store: reading the active version failed")
            }
        }
    };

    let listen = async {
        let mut backoff = BACKOFF_MIN;
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&listen_pool).await?;
                listener.eager_reconnect(false);
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            }
            .await;
            match connected {
                Ok(mut listener) => {
                    let up_since = Instant::now();
                    // A NOTIFY sent while we were not listening is lost.
                    refresh().await;
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => {
                                while listener.next_buffered().is_some() {}
                                refresh().await;
                            }
                            Ok(None) => {
                                tracing::warn!(
                                    "config store: LISTEN connection lost; reconnecting"
                                );
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "config store: LISTEN failed; reconnecting");
                                break;
                            }
                        }
                    }
                    if up_since.elapsed() >= STABLE_AFTER {
                        backoff = BACKOFF_MIN;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "config store: cannot LISTEN; retrying");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    };

    let poll = async {
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            refresh().await;
        }
    };

    tokio::join!(listen, poll);
}

const SUMMARY_COLUMNS: &str = "version, created_at, author, message, sha256, based_on, source, \
     COALESCE(version = (SELECT version FROM modelux_config_active WHERE id = 1), false) AS active";

fn summary(row: &PgRow) -> Result<VersionSummary, StoreError> {
    Ok(VersionSummary {
        version: from_db_id(row.try_get("version").map_err(err)?),
        created_at: row.try_get("created_at").map_err(err)?,
        author: row.try_get("author").map_err(err)?,
        message: row.try_get("message").map_err(err)?,
        sha256: row.try_get("sha256").map_err(err)?,
        based_on: row
            .try_get::<Option<i64>, _>("based_on")
            .map_err(err)?
            .map(from_db_id),
        source: VersionSource::parse(row.try_get("source").map_err(err)?)?,
        active: row.try_get("active").map_err(err)?,
    })
}

async fn read_active(pool: &PgPool) -> Result<Option<Activation>, StoreError> {
    let mut conn = pool.acquire().await.map_err(err)?;
    current(&mut conn, "").await
}

/// The active row; `lock` is `" FOR UPDATE"` inside a write transaction.
async fn current(conn: &mut PgConnection, lock: &str) -> Result<Option<Activation>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT version, activated_at, actor, previous FROM modelux_config_active \
         WHERE id = 1{lock}"
    ))
    .fetch_optional(conn)
    .await
    .map_err(err)?;
    let Some(row) = row else {
        return Err(StoreError::Database(
            "the modelux_config_active row is missing".to_owned(),
        ));
    };
    let Some(version) = row.try_get::<Option<i64>, _>("version").map_err(err)? else {
        return Ok(None);
    };
    Ok(Some(Activation {
        version: from_db_id(version),
        activated_at: row
            .try_get::<Option<String>, _>("activated_at")
            .map_err(err)?
            .unwrap_or_default(),
        actor: row
            .try_get::<Option<String>, _>("actor")
            .map_err(err)?
            .unwrap_or_default(),
        previous: row
            .try_get::<Option<i64>, _>("previous")
            .map_err(err)?
            .map(from_db_id),
    }))
}

async fn exists(conn: &mut PgConnection, version: u64) -> Result<bool, StoreError> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT version FROM modelux_config_versions WHERE version = $1")
            .bind(db_id(version))
            .fetch_optional(conn)
            .await
            .map_err(err)?;
    Ok(found.is_some())
}

async fn record(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    version: u64,
    from: Option<u64>,
    message: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO modelux_config_audit (at, actor, action, version, from_version, message) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now_rfc3339())
    .bind(actor)
    .bind(action)
    .bind(db_id(version))
    .bind(from.map(db_id))
    .bind(message)
    .execute(conn)
    .await
    .map_err(err)?;
    Ok(())
}

/// Updates the active row and queues the NOTIFY (sent at commit).
async fn set_active(conn: &mut PgConnection, activation: &Activation) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE modelux_config_active SET version = $1, activated_at = $2, actor = $3, \
         previous = $4 WHERE id = 1",
    )
    .bind(db_id(activation.version))
    .bind(&activation.activated_at)
    .bind(&activation.actor)
    .bind(activation.previous.map(db_id))
    .execute(&mut *conn)
    .await
    .map_err(err)?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(activation.version.to_string())
        .execute(conn)
        .await
        .map_err(err)?;
    Ok(())
}

/// Activates an existing version inside a write transaction: updates the
/// active row, pushes onto the rollback history, audits, notifies.
async fn activate_in(
    conn: &mut PgConnection,
    current: Option<Activation>,
    version: u64,
    actor: &str,
) -> Result<Activation, StoreError> {
    let previous = current.as_ref().map(|a| a.version);
    if let Some(current) = current.filter(|a| a.version == version) {
        record(
            conn,
            actor,
            "activate",
            version,
            previous,
            &activate_note(true),
        )
        .await?;
        return Ok(current);
    }
    let activation = Activation {
        version,
        activated_at: now_rfc3339(),
        actor: actor.to_owned(),
        previous,
    };
    set_active(&mut *conn, &activation).await?;
    sqlx::query("INSERT INTO modelux_config_stack (version) VALUES ($1)")
        .bind(db_id(version))
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    sqlx::query(
        "DELETE FROM modelux_config_stack WHERE pos NOT IN \
         (SELECT pos FROM modelux_config_stack ORDER BY pos DESC LIMIT $1)",
    )
    .bind(MAX_ROLLBACK_DEPTH as i64)
    .execute(&mut *conn)
    .await
    .map_err(err)?;
    record(
        conn,
        actor,
        "activate",
        version,
        previous,
        &activate_note(false),
    )
    .await?;
    Ok(activation)
}

impl ConfigStore for PostgresStore {
    fn create_version(&self, new: NewVersion) -> BoxFuture<'_, Result<VersionSummary, StoreError>> {
        self.guard(async move {
            let (text, sha256) = fingerprint(&new.config);
            let (mut tx, current) = self.write_tx().await?;
            if let Some(b) = new.based_on {
                if !exists(&mut tx, b).await? {
                    return Err(StoreError::NotFound(b));
                }
            }
            let next: i64 = sqlx::query_scalar(
                "SELECT (COALESCE(MAX(version), 0) + 1)::BIGINT FROM modelux_config_versions",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
            let version = from_db_id(next);
            let created_at = now_rfc3339();
            sqlx::query(
                "INSERT INTO modelux_config_versions \
                 (version, created_at, author, message, sha256, based_on, source, config) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(next)
            .bind(&created_at)
            .bind(&new.author)
            .bind(&new.message)
            .bind(&sha256)
            .bind(new.based_on.map(db_id))
            .bind(new.source.as_str())
            .bind(&text)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            record(
                &mut tx,
                &new.author,
                "create",
                version,
                new.based_on,
                &new.message,
            )
            .await?;
            if new.activate {
                activate_in(&mut tx, current, version, &new.author).await?;
            }
            tx.commit().await.map_err(err)?;
            Ok(VersionSummary {
                version,
                created_at,
                author: new.author,
                message: new.message,
                sha256,
                based_on: new.based_on,
                source: new.source,
                active: new.activate,
            })
        })
    }

    fn version(&self, version: u64) -> BoxFuture<'_, Result<Option<ConfigVersion>, StoreError>> {
        self.guard(async move {
            let row = sqlx::query(&format!(
                "SELECT {SUMMARY_COLUMNS}, config FROM modelux_config_versions WHERE version = $1"
            ))
            .bind(db_id(version))
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
            let Some(row) = row else { return Ok(None) };
            let summary = summary(&row)?;
            let text: String = row.try_get("config").map_err(err)?;
            let config = parse_stored_config(version, &text, &summary.sha256)?;
            Ok(Some(ConfigVersion { summary, config }))
        })
    }

    fn versions(&self) -> BoxFuture<'_, Result<Vec<VersionSummary>, StoreError>> {
        self.guard(async move {
            let rows = sqlx::query(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM modelux_config_versions \
                 ORDER BY version DESC LIMIT $1"
            ))
            .bind(MAX_VERSIONS_LISTED as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
            rows.iter().map(summary).collect()
        })
    }

    fn active(&self) -> BoxFuture<'_, Result<Option<Activation>, StoreError>> {
        self.guard(read_active(&self.pool))
    }

    fn activate(
        &self,
        version: u64,
        actor: &str,
        if_match: Option<u64>,
    ) -> BoxFuture<'_, Result<Activation, StoreError>> {
        let actor = actor.to_owned();
        self.guard(async move {
            let (mut tx, current) = self.write_tx().await?;
            if !exists(&mut tx, version).await? {
                return Err(StoreError::NotFound(version));
            }
            let current_version = current.as_ref().map(|a| a.version);
            if let Some(expected) = if_match {
                if current_version.unwrap_or(0) != expected {
                    return Err(StoreError::Conflict {
                        current: current_version,
                    });
                }
            }
            let activation = activate_in(&mut tx, current, version, &actor).await?;
            tx.commit().await.map_err(err)?;
            Ok(activation)
        })
    }

    fn rollback(&self, actor: &str) -> BoxFuture<'_, Result<Activation, StoreError>> {
        let actor = actor.to_owned();
        self.guard(async move {
            let (mut tx, current) = self.write_tx().await?;
            let top: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT pos, version FROM modelux_config_stack ORDER BY pos DESC LIMIT 2",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            let [(top_pos, _), (_, target)] = top[..] else {
                return Err(StoreError::NothingToRollBack);
            };
            sqlx::query("DELETE FROM modelux_config_stack WHERE pos = $1")
                .bind(top_pos)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            let from = current.map(|a| a.version);
            let activation = Activation {
                version: from_db_id(target),
                activated_at: now_rfc3339(),
                actor: actor.clone(),
                previous: from,
            };
            set_active(&mut tx, &activation).await?;
            record(
                &mut tx,
                &actor,
                "rollback",
                activation.version,
                from,
                &rollback_note(from),
            )
            .await?;
            tx.commit().await.map_err(err)?;
            Ok(activation)
        })
    }

    fn audit(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditEvent>, StoreError>> {
        self.guard(async move {
            let rows = sqlx::query(
                "SELECT id, at, actor, action, version, from_version, message \
                 FROM modelux_config_audit ORDER BY id DESC LIMIT $1",
            )
            .bind(limit.min(MAX_AUDIT_LIMIT) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
            rows.iter()
                .map(|row| {
                    Ok(AuditEvent {
                        id: from_db_id(row.try_get("id").map_err(err)?),
                        at: row.try_get("at").map_err(err)?,
                        actor: row.try_get("actor").map_err(err)?,
                        action: row.try_get("action").map_err(err)?,
                        version: from_db_id(row.try_get("version").map_err(err)?),
                        from_version: row
                            .try_get::<Option<i64>, _>("from_version")
                            .map_err(err)?
                            .map(from_db_id),
                        message: row.try_get("message").map_err(err)?,
                    })
                })
                .collect()
        })
    }

    fn last_file_import(&self) -> BoxFuture<'_, Result<Option<VersionSummary>, StoreError>> {
        self.guard(async move {
            let row = sqlx::query(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM modelux_config_versions \
                 WHERE source = 'file' ORDER BY version DESC LIMIT 1"
            ))
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
            row.as_ref().map(summary).transpose()
        })
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

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.clone())
    }
}
