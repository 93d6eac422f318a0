//! The PostgreSQL backend: N gateway replicas sharing one database.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::Row;
use tokio::sync::watch;

use super::{
    db_error, now_rfc3339, redact_url, scrub, url_passwords, within, Activation, AuditEvent,
    ConfigStore, ConfigVersion, Migration, NewVersion, StoreError, VersionSummary,
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

/// The longest any one store operation may take, connection included. A
/// database that stops answering mid-query (a failover, a partition) would
/// otherwise hold the call until the kernel gives up on the connection
/// (about 15 minutes), with the replica reporting the store healthy.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a starting replica waits for the migration lock (PostgreSQL's
/// `lock_timeout`): a replica stuck holding it (a half-open transaction)
/// would otherwise keep this one from starting, silently. Only the wait is
/// bounded: the migrations themselves may rewrite a large traffic log, and
/// cut short they would roll back on every start.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Run first in every write transaction: it waits at most 10 s for a row or
/// advisory lock (another replica's activation), and the server ends it if
/// its client leaves it idle for 30 s (a replica partitioned while holding
/// the active row's lock would otherwise block every writer).
const WRITE_TX_LIMITS: [&str; 2] = [
    "SET LOCAL lock_timeout = '10s'",
    "SET LOCAL idle_in_transaction_session_timeout = '30s'",
];

/// How long the LISTEN connection may stay silent before it is checked with
/// a query (a dropped connection without a reset is otherwise never noticed).
const LISTEN_CHECK_AFTER: Duration = Duration::from_secs(30);

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

/// `url` without the query parameters sqlx does not understand, and their
/// names ("without `=`" for a parameter that has none).
fn without_unknown_params(url: &str) -> (String, Vec<String>) {
    let Some((base, rest)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let mut kept = Vec::new();
    let mut unknown = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, _)) if super::is_plain_param(k) || super::percent_decoded(k) == "password" => {
                kept.push(pair)
            }
            Some((k, _)) => unknown.push(format!("`{}`", super::percent_decoded(k))),
            // Its text may be a misplaced secret: not named.
            None => unknown.push("one without `=`".to_owned()),
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    (out, unknown)
}

impl PostgresStore {
    super::traffic_log::traffic_log_ops!(sqlx::Postgres, super::traffic_log::numbered, err);
    super::config_sql::config_ops!(sqlx::Postgres, super::traffic_log::numbered, err);

    /// Queues `NOTIFY modelux_config, '<version>'`, sent at commit: the
    /// other replicas' watch tasks pick the new version up at once.
    async fn announce(conn: &mut PgConnection, activation: &Activation) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(activation.version.to_string())
            .execute(conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Replicas prune one at a time (a transaction-scoped advisory lock):
    /// two concurrent size-cap prunes would each delete the excess.
    async fn prune_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = begin(&self.pool).await?;
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
        // sqlx ignores a parameter it does not know with a warning that
        // prints its value: libpq's `sslpassword=`, or a misspelt
        // `Password=`, reached the log in clear. Such parameters are taken
        // out here and named without their values (libpq's harmless ones,
        // `connect_timeout`, `channel_binding`, ..., are common in the
        // connection strings cloud consoles give).
        let (stripped, unknown) = without_unknown_params(url);
        if !unknown.is_empty() {
            tracing::warn!(
                store = %redact_url(url),
                "ignoring connection parameters the PostgreSQL store does not support (values not shown): {}",
                unknown.join(", ")
            );
        }
        let url = stripped.as_str();
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
            // A connection released inside a transaction is closed rather
            // than reused with sqlx's transaction depth out of step with the
            // server's. (sqlx's PostgreSQL driver lowers the depth when a
            // transaction is dropped, so this is a guard, not a fix as on
            // SQLite.)
            .after_release(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
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

    /// Runs a store operation within [`OPERATION_TIMEOUT`], masking
    /// passwords out of its error.
    fn guard<'a, T: Send + 'a>(
        &'a self,
        op: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            within(OPERATION_TIMEOUT, op)
                .await
                .map_err(|e| rescrub(e, &self.secrets))
        })
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
        let mut tx = begin(&self.pool).await?;
        let current = Self::cfg_current(&mut tx, " FOR UPDATE").await?;
        Ok((tx, current))
    }
}

fn rescrub(e: StoreError, secrets: &[String]) -> StoreError {
    match e {
        StoreError::Database(m) => StoreError::Database(scrub(m, secrets)),
        other => other,
    }
}

/// A write transaction with bounded lock waits and idle time
/// ([`WRITE_TX_LIMITS`]).
async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = pool.begin().await.map_err(err)?;
    for limit in WRITE_TX_LIMITS {
        sqlx::query(limit).execute(&mut *tx).await.map_err(err)?;
    }
    Ok(tx)
}

fn err(e: sqlx::Error) -> StoreError {
    db_error(e, &[])
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(err)?;
    sqlx::raw_sql(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        MIGRATION_LOCK_WAIT.as_millis()
    ))
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            // 55P03 lock_not_available: `lock_timeout` ran out.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03") => {
                StoreError::Database(format!(
                    "waited {} s for the schema migration lock: another gateway may hold \
                     it (pg_advisory_xact_lock({MIGRATION_LOCK})) in an open transaction",
                    MIGRATION_LOCK_WAIT.as_secs()
                ))
            }
            _ => err(e),
        })?;
    // The migrations themselves are not bounded (see MIGRATION_LOCK_WAIT).
    sqlx::raw_sql("SET LOCAL lock_timeout = 0")
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
            let connected = within(OPERATION_TIMEOUT, async {
                let mut listener = PgListener::connect_with(&listen_pool).await.map_err(err)?;
                listener.eager_reconnect(false);
                listener.listen(CHANNEL).await.map_err(err)?;
                Ok(listener)
            })
            .await;
            match connected {
                Ok(mut listener) => {
                    let up_since = Instant::now();
                    // A NOTIFY sent while we were not listening is lost.
                    refresh().await;
                    loop {
                        let received = match tokio::time::timeout(
                            LISTEN_CHECK_AFTER,
                            listener.try_recv(),
                        )
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => {
                                // Silent for a while: is the connection still there?
                                let check = sqlx::query("SELECT 1").execute(&mut listener);
                                match tokio::time::timeout(OPERATION_TIMEOUT, check).await {
                                    Ok(Ok(_)) => continue,
                                    _ => {
                                        tracing::warn!("config store: LISTEN connection does not answer; reconnecting");
                                        break;
                                    }
                                }
                            }
                        };
                        match received {
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

/// Bounded like every other operation: a read that hangs (a dropped
/// connection the kernel has not noticed yet) would hold the refresh lock
/// and stop both the LISTEN loop and the poll from ever applying a change.
async fn read_active(pool: &PgPool) -> Result<Option<Activation>, StoreError> {
    within(OPERATION_TIMEOUT, async {
        let mut conn = pool.acquire().await.map_err(err)?;
        PostgresStore::cfg_current(&mut conn, "").await
    })
    .await
}

impl ConfigStore for PostgresStore {
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

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.clone())
    }
}
