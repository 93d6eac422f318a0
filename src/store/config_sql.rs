//! The config-version operations (create, read, list, activate, roll
//! back, audit) shared by the SQLite and PostgreSQL stores.
//!
//! Why one macro rather than two copies: the two backends run the same
//! statements in the same transactions; they differ only in how a
//! statement numbers its parameters (`?` against `$1`), in how a writer
//! takes its lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `SELECT … FOR
//! UPDATE` on the active row) and in what an activation announces
//! (PostgreSQL sends `NOTIFY` to the other replicas). sqlx's executors are
//! generic in ways that make one generic function over both databases much
//! harder to read than this, so, like `traffic_log_ops` (store::traffic_log),
//! the shared code is a macro expanded once per backend, each with its own
//! types.
//!
//! A backend expanding [`config_ops!`] provides, in the same `impl` block's
//! type:
//! - `async fn write_tx(&self) -> Result<(Transaction<'static, DB>,
//!   Option<Activation>), StoreError>`: begins a write transaction holding
//!   the writers' lock and reads the active row inside it;
//! - `async fn announce(conn, &Activation) -> Result<(), StoreError>`: what
//!   follows an update of the active row, inside its transaction.
//!
//! Statements are written with `?` placeholders and passed through the
//! backend's `$sql` (`as_written` or `numbered`).

/// Summary columns of `modelux_config_versions`, plus whether the version is
/// the active one (`active`, 0 or 1 as a BIGINT in both databases).
macro_rules! summary_columns {
    () => {
        "version, created_at, author, message, sha256, based_on, source, \
         CAST(CASE WHEN version = (SELECT version FROM modelux_config_active WHERE id = 1) \
         THEN 1 ELSE 0 END AS BIGINT) AS active"
    };
}

pub(crate) const SELECT_ACTIVE: &str =
    "SELECT version, activated_at, actor, previous FROM modelux_config_active WHERE id = 1";
pub(crate) const EXISTS: &str = "SELECT version FROM modelux_config_versions WHERE version = ?";
pub(crate) const AUDIT_INSERT: &str =
    "INSERT INTO modelux_config_audit (at, actor, action, version, from_version, message) \
     VALUES (?, ?, ?, ?, ?, ?)";
pub(crate) const SET_ACTIVE: &str =
    "UPDATE modelux_config_active SET version = ?, activated_at = ?, actor = ?, previous = ? \
     WHERE id = 1";
pub(crate) const STACK_PUSH: &str = "INSERT INTO modelux_config_stack (version) VALUES (?)";
pub(crate) const STACK_TRIM: &str = "DELETE FROM modelux_config_stack WHERE pos NOT IN \
     (SELECT pos FROM modelux_config_stack ORDER BY pos DESC LIMIT ?)";
pub(crate) const STACK_TOP_TWO: &str =
    "SELECT pos, version FROM modelux_config_stack ORDER BY pos DESC LIMIT 2";
pub(crate) const STACK_POP: &str = "DELETE FROM modelux_config_stack WHERE pos = ?";
pub(crate) const NEXT_VERSION: &str =
    "SELECT CAST(COALESCE(MAX(version), 0) + 1 AS BIGINT) FROM modelux_config_versions";
pub(crate) const INSERT_VERSION: &str = "INSERT INTO modelux_config_versions \
     (version, created_at, author, message, sha256, based_on, source, config) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
pub(crate) const SELECT_VERSION: &str = concat!(
    "SELECT ",
    summary_columns!(),
    ", config FROM modelux_config_versions WHERE version = ?"
);
pub(crate) const LIST_VERSIONS: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM modelux_config_versions ORDER BY version DESC LIMIT ?"
);
pub(crate) const LAST_FILE_IMPORT: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM modelux_config_versions WHERE source = 'file' ORDER BY version DESC LIMIT 1"
);
/// The newest file import of a config with this hash, if any: read in the
/// write transaction, so replicas starting at once import a file once.
pub(crate) const FILE_IMPORT_WITH_SHA: &str = "SELECT version FROM modelux_config_versions \
     WHERE source = 'file' AND sha256 = ? ORDER BY version DESC LIMIT 1";
pub(crate) const AUDIT_LIST: &str = "SELECT id, at, actor, action, version, from_version, message \
     FROM modelux_config_audit ORDER BY id DESC LIMIT ?";

/// The config-version operations over a sqlx pool `self.pool` of database
/// `$db`, with statements passed through `$sql` and sqlx errors mapped by
/// `$err`. Expands to inherent methods (`cfg_*`) the backends' trait
/// methods call; see the module docs for what the backend provides.
macro_rules! config_ops {
    ($db:ty, $sql:path, $err:path) => {
        fn cfg_summary(
            row: &<$db as sqlx::Database>::Row,
        ) -> Result<crate::store::VersionSummary, crate::store::StoreError> {
            use crate::store::from_db_id;
            use sqlx::Row;
            Ok(crate::store::VersionSummary {
                version: from_db_id(row.try_get("version").map_err($err)?),
                created_at: row.try_get("created_at").map_err($err)?,
                author: row.try_get("author").map_err($err)?,
                message: row.try_get("message").map_err($err)?,
                sha256: row.try_get("sha256").map_err($err)?,
                based_on: row
                    .try_get::<Option<i64>, _>("based_on")
                    .map_err($err)?
                    .map(from_db_id),
                source: crate::store::VersionSource::parse(row.try_get("source").map_err($err)?)?,
                active: row.try_get::<i64, _>("active").map_err($err)? != 0,
            })
        }

        /// The active row; `lock` is appended to the statement (the
        /// backend's row lock inside a write transaction, or "").
        async fn cfg_current(
            conn: &mut <$db as sqlx::Database>::Connection,
            lock: &str,
        ) -> Result<Option<crate::store::Activation>, crate::store::StoreError> {
            use crate::store::from_db_id;
            use sqlx::Row;
            let row = sqlx::query::<$db>(&format!("{}{lock}", super::config_sql::SELECT_ACTIVE))
                .fetch_optional(conn)
                .await
                .map_err($err)?;
            let Some(row) = row else {
                return Err(crate::store::StoreError::Database(
                    "the modelux_config_active row is missing".to_owned(),
                ));
            };
            let Some(version) = row.try_get::<Option<i64>, _>("version").map_err($err)? else {
                return Ok(None);
            };
            Ok(Some(crate::store::Activation {
                version: from_db_id(version),
                activated_at: row
                    .try_get::<Option<String>, _>("activated_at")
                    .map_err($err)?
                    .unwrap_or_default(),
                actor: row
                    .try_get::<Option<String>, _>("actor")
                    .map_err($err)?
                    .unwrap_or_default(),
                previous: row
                    .try_get::<Option<i64>, _>("previous")
                    .map_err($err)?
                    .map(from_db_id),
            }))
        }

        async fn cfg_exists(
            conn: &mut <$db as sqlx::Database>::Connection,
            version: u64,
        ) -> Result<bool, crate::store::StoreError> {
            let found: Option<i64> =
                sqlx::query_scalar::<$db, i64>(&$sql(super::config_sql::EXISTS))
                    .bind(crate::store::db_id(version))
                    .fetch_optional(conn)
                    .await
                    .map_err($err)?;
            Ok(found.is_some())
        }

        async fn cfg_audit_record(
            conn: &mut <$db as sqlx::Database>::Connection,
            actor: &str,
            action: &str,
            version: u64,
            from: Option<u64>,
            message: &str,
        ) -> Result<(), crate::store::StoreError> {
            use crate::store::db_id;
            sqlx::query::<$db>(&$sql(super::config_sql::AUDIT_INSERT))
                .bind(crate::store::now_rfc3339())
                .bind(actor)
                .bind(action)
                .bind(db_id(version))
                .bind(from.map(db_id))
                .bind(message)
                .execute(conn)
                .await
                .map_err($err)?;
            Ok(())
        }

        /// Updates the active row, then whatever the backend announces.
        async fn cfg_set_active(
            conn: &mut <$db as sqlx::Database>::Connection,
            activation: &crate::store::Activation,
        ) -> Result<(), crate::store::StoreError> {
            use crate::store::db_id;
            sqlx::query::<$db>(&$sql(super::config_sql::SET_ACTIVE))
                .bind(db_id(activation.version))
                .bind(&activation.activated_at)
                .bind(&activation.actor)
                .bind(activation.previous.map(db_id))
                .execute(&mut *conn)
                .await
                .map_err($err)?;
            Self::announce(conn, activation).await
        }

        /// Activates an existing version inside a write transaction: updates
        /// the active row, pushes onto the rollback history, audits.
        async fn cfg_activate_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            current: Option<crate::store::Activation>,
            version: u64,
            actor: &str,
        ) -> Result<crate::store::Activation, crate::store::StoreError> {
            let previous = current.as_ref().map(|a| a.version);
            let unchanged = previous == Some(version);
            let activation = match current.filter(|_| unchanged) {
                // Already active: only the audit trail records the call.
                Some(current) => current,
                None => {
                    let activation = crate::store::Activation {
                        version,
                        activated_at: crate::store::now_rfc3339(),
                        actor: actor.to_owned(),
                        previous,
                    };
                    Self::cfg_set_active(&mut *conn, &activation).await?;
                    sqlx::query::<$db>(&$sql(super::config_sql::STACK_PUSH))
                        .bind(crate::store::db_id(version))
                        .execute(&mut *conn)
                        .await
                        .map_err($err)?;
                    sqlx::query::<$db>(&$sql(super::config_sql::STACK_TRIM))
                        .bind(crate::store::MAX_ROLLBACK_DEPTH as i64)
                        .execute(&mut *conn)
                        .await
                        .map_err($err)?;
                    activation
                }
            };
            Self::cfg_audit_record(
                conn,
                actor,
                "activate",
                version,
                previous,
                &crate::store::activate_note(unchanged),
            )
            .await?;
            Ok(activation)
        }

        async fn cfg_create(
            &self,
            new: crate::store::NewVersion,
        ) -> Result<crate::store::VersionSummary, crate::store::StoreError> {
            let (text, sha256) = crate::store::fingerprint(&new.config);
            let (mut tx, current) = self.write_tx().await?;
            if new.source == crate::store::VersionSource::File {
                let earlier: Option<i64> =
                    sqlx::query_scalar::<$db, i64>(&$sql(super::config_sql::FILE_IMPORT_WITH_SHA))
                        .bind(&sha256)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($err)?;
                if let Some(v) = earlier {
                    return Err(crate::store::StoreError::AlreadyImported(
                        crate::store::from_db_id(v),
                    ));
                }
            }
            if let Some(b) = new.based_on {
                if !Self::cfg_exists(&mut tx, b).await? {
                    return Err(crate::store::StoreError::NotFound(b));
                }
            }
            let next: i64 = sqlx::query_scalar::<$db, i64>(&$sql(super::config_sql::NEXT_VERSION))
                .fetch_one(&mut *tx)
                .await
                .map_err($err)?;
            let version = crate::store::from_db_id(next);
            let created_at = crate::store::now_rfc3339();
            sqlx::query::<$db>(&$sql(super::config_sql::INSERT_VERSION))
                .bind(next)
                .bind(&created_at)
                .bind(&new.author)
                .bind(&new.message)
                .bind(&sha256)
                .bind(new.based_on.map(crate::store::db_id))
                .bind(new.source.as_str())
                .bind(&text)
                .execute(&mut *tx)
                .await
                .map_err($err)?;
            Self::cfg_audit_record(
                &mut tx,
                &new.author,
                "create",
                version,
                new.based_on,
                &new.message,
            )
            .await?;
            if new.activate {
                Self::cfg_activate_in(&mut tx, current, version, &new.author).await?;
            }
            tx.commit().await.map_err($err)?;
            Ok(crate::store::VersionSummary {
                version,
                created_at,
                author: new.author,
                message: new.message,
                sha256,
                based_on: new.based_on,
                source: new.source,
                active: new.activate,
            })
        }

        async fn cfg_version(
            &self,
            version: u64,
        ) -> Result<Option<crate::store::ConfigVersion>, crate::store::StoreError> {
            use sqlx::Row;
            let row = sqlx::query::<$db>(&$sql(super::config_sql::SELECT_VERSION))
                .bind(crate::store::db_id(version))
                .fetch_optional(&self.pool)
                .await
                .map_err($err)?;
            let Some(row) = row else { return Ok(None) };
            let summary = Self::cfg_summary(&row)?;
            let text: String = row.try_get("config").map_err($err)?;
            let config = crate::store::parse_stored_config(version, &text, &summary.sha256)?;
            Ok(Some(crate::store::ConfigVersion { summary, config }))
        }

        async fn cfg_versions(
            &self,
        ) -> Result<Vec<crate::store::VersionSummary>, crate::store::StoreError> {
            let rows = sqlx::query::<$db>(&$sql(super::config_sql::LIST_VERSIONS))
                .bind(crate::store::MAX_VERSIONS_LISTED as i64)
                .fetch_all(&self.pool)
                .await
                .map_err($err)?;
            rows.iter().map(Self::cfg_summary).collect()
        }

        async fn cfg_active(
            &self,
        ) -> Result<Option<crate::store::Activation>, crate::store::StoreError> {
            let mut conn = self.pool.acquire().await.map_err($err)?;
            Self::cfg_current(&mut conn, "").await
        }

        async fn cfg_activate(
            &self,
            version: u64,
            actor: String,
            if_match: Option<u64>,
        ) -> Result<crate::store::Activation, crate::store::StoreError> {
            let (mut tx, current) = self.write_tx().await?;
            if !Self::cfg_exists(&mut tx, version).await? {
                return Err(crate::store::StoreError::NotFound(version));
            }
            let current_version = current.as_ref().map(|a| a.version);
            if let Some(expected) = if_match {
                if current_version.unwrap_or(0) != expected {
                    return Err(crate::store::StoreError::Conflict {
                        current: current_version,
                    });
                }
            }
            let activation = Self::cfg_activate_in(&mut tx, current, version, &actor).await?;
            tx.commit().await.map_err($err)?;
            Ok(activation)
        }

        async fn cfg_rollback(
            &self,
            actor: String,
        ) -> Result<crate::store::Activation, crate::store::StoreError> {
            let (mut tx, current) = self.write_tx().await?;
            let top: Vec<(i64, i64)> =
                sqlx::query_as::<$db, (i64, i64)>(&$sql(super::config_sql::STACK_TOP_TWO))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err($err)?;
            let [(top_pos, _), (_, target)] = top[..] else {
                return Err(crate::store::StoreError::NothingToRollBack);
            };
            sqlx::query::<$db>(&$sql(super::config_sql::STACK_POP))
                .bind(top_pos)
                .execute(&mut *tx)
                .await
                .map_err($err)?;
            let from = current.map(|a| a.version);
            let activation = crate::store::Activation {
                version: crate::store::from_db_id(target),
                activated_at: crate::store::now_rfc3339(),
                actor: actor.clone(),
                previous: from,
            };
            Self::cfg_set_active(&mut tx, &activation).await?;
            Self::cfg_audit_record(
                &mut tx,
                &actor,
                "rollback",
                activation.version,
                from,
                &crate::store::rollback_note(from),
            )
            .await?;
            tx.commit().await.map_err($err)?;
            Ok(activation)
        }

        async fn cfg_audit(
            &self,
            limit: usize,
        ) -> Result<Vec<crate::store::AuditEvent>, crate::store::StoreError> {
            use crate::store::from_db_id;
            use sqlx::Row;
            let rows = sqlx::query::<$db>(&$sql(super::config_sql::AUDIT_LIST))
                .bind(limit.min(crate::store::MAX_AUDIT_LIMIT) as i64)
                .fetch_all(&self.pool)
                .await
                .map_err($err)?;
            rows.iter()
                .map(|row| {
                    Ok(crate::store::AuditEvent {
                        id: from_db_id(row.try_get("id").map_err($err)?),
                        at: row.try_get("at").map_err($err)?,
                        actor: row.try_get("actor").map_err($err)?,
                        action: row.try_get("action").map_err($err)?,
                        version: from_db_id(row.try_get("version").map_err($err)?),
                        from_version: row
                            .try_get::<Option<i64>, _>("from_version")
                            .map_err($err)?
                            .map(from_db_id),
                        message: row.try_get("message").map_err($err)?,
                    })
                })
                .collect()
        }

        async fn cfg_last_file_import(
            &self,
        ) -> Result<Option<crate::store::VersionSummary>, crate::store::StoreError> {
            let row = sqlx::query::<$db>(&$sql(super::config_sql::LAST_FILE_IMPORT))
                .fetch_optional(&self.pool)
                .await
                .map_err($err)?;
            row.as_ref().map(Self::cfg_summary).transpose()
        }
    };
}

pub(crate) use config_ops;
