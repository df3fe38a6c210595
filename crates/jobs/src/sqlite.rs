//! [`JobStore`] on a single SQLite file.
//!
//! Every state change runs in a `BEGIN IMMEDIATE` transaction: it takes SQLite's single write
//! lock up front, so the read-check-write sequences below (claim, idempotent create, lease
//! checks) cannot interleave with another writer, whether in this process or another one.
//! Deferred transactions would instead fail with SQLITE_BUSY when upgrading a stale snapshot.

use crate::migrate::{self, SQLITE_MIGRATIONS};
use crate::ops::Dialect;
use crate::store::StoreError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

/// SQLite has one writer at a time (`BEGIN IMMEDIATE`), so nothing needs row locks.
static DIALECT: Dialect = Dialect {
    lock_job: "",
    claim_lock: "",
    greatest: "MAX",
};

/// Enough for a handful of api handlers and local workers; SQLite serializes writers anyway, so
/// more connections would only queue on the write lock.
const POOL_SIZE: u32 = 4;

/// How long a connection waits for the write lock before giving up with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file and its parent directory if missing) and migrates the database.
    ///
    /// WAL lets readers (status polls, listings) proceed while a worker writes; `synchronous =
    /// NORMAL` is durable against process crashes in WAL mode and only risks the last
    /// transactions on power loss, which the lease/retry machinery tolerates.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(sqlx::Error::Io)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A private database that lives as long as this store, for tests.
    ///
    /// An in-memory database exists per connection, so the pool is pinned to one connection that
    /// is never recycled.
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; a no-op when the schema is current. `open` already calls it,
    /// this is for an explicit `reelay migrate`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(&self.pool, SQLITE_MIGRATIONS).await
    }

    /// A write transaction: takes the write lock up front.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A read transaction: one consistent snapshot (WAL), without the write lock.
    async fn read(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

/// SQLite has no NOTIFY; local workers poll.
async fn notify(_conn: &mut SqliteConnection, _job_id: &str) -> Result<(), StoreError> {
    Ok(())
}

crate::ops::row_decoders!(SqliteRow);
crate::ops::conn_impl!(Db, SqliteConnection, Sqlite, DIALECT, notify);
crate::ops::job_store_impl!(SqliteStore, Db);
crate::webhooks::webhook_store_impl!(SqliteStore, Db);

crate::registry::worker_registry_impl!(SqliteStore);

crate::registry::token_store_impl!(SqliteStore, SqliteRow);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsuite::{self, new_job};
    use crate::{CreateOutcome, JobStore, RenewOutcome};
    use sqlx::Row;
    use std::sync::Arc;
    use tempfile::TempDir;

    async fn fresh() -> (TempDir, Arc<dyn JobStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("jobs.db"))
            .await
            .expect("open");
        (dir, Arc::new(store))
    }

    crate::job_store_suite!(fresh);

    async fn migration_count(store: &SqliteStore) -> i64 {
        sqlx::query("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(&store.pool)
            .await
            .and_then(|row| row.try_get(0))
            .expect("count migrations")
    }

    #[tokio::test]
    async fn reopening_keeps_everything_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/deeper/jobs.db");
        let store = SqliteStore::open(&path)
            .await
            .expect("open creates parents");
        let job = match store.create_job(new_job("test")).await.expect("create") {
            CreateOutcome::Created(job) => job,
            other => panic!("{other:?}"),
        };
        let claim = store
            .claim("w", Duration::from_secs(60))
            .await
            .expect("claim")
            .expect("claimable");
        store
            .renew(
                &claim.task_id,
                "w",
                1,
                Duration::from_secs(60),
                Some(0.5),
                None,
            )
            .await
            .expect("renew");
        let before = store.get_job(&job.id).await.expect("get").expect("job");
        store.migrate().await.expect("migrate again");
        assert_eq!(
            migration_count(&store).await,
            SQLITE_MIGRATIONS.len() as i64
        );
        store.pool.close().await;

        let reopened = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(
            migration_count(&reopened).await,
            SQLITE_MIGRATIONS.len() as i64
        );
        assert_eq!(
            reopened.get_job(&job.id).await.expect("get").expect("job"),
            before
        );
        // The lease survived too: the worker can carry on where it was.
        assert_eq!(
            reopened
                .renew(&claim.task_id, "w", 1, Duration::from_secs(60), None, None)
                .await
                .expect("renew"),
            RenewOutcome::Renewed
        );
        assert!(reopened
            .complete(&claim.task_id, "w", 1, vec![])
            .await
            .expect("complete"));
    }

    #[tokio::test]
    async fn refuses_a_schema_newer_than_the_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.db");
        let store = SqliteStore::open(&path).await.expect("open");
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        )
        .execute(&store.pool)
        .await
        .expect("insert");
        store.pool.close().await;
        assert!(matches!(
            SqliteStore::open(&path).await,
            Err(StoreError::Migration(_))
        ));
    }

    /// Migrations 0006 and 0007 on a database with jobs: owners are copied to the tasks, the
    /// old jobs keep their place and their keys.
    #[tokio::test]
    async fn upgrading_from_schema_4_keeps_jobs_keys_and_order() {
        // A fresh in-memory database migrated only as far as schema 4.
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .expect("pool");
        migrate::run(&pool, &SQLITE_MIGRATIONS[..4])
            .await
            .expect("migrate to 4");
        for sql in testsuite::SCHEMA_4_ROWS {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        let store = SqliteStore { pool };
        store.migrate().await.expect("upgrade");
        let owners: Vec<(String, String)> =
            sqlx::query_as("SELECT id, owner FROM tasks ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .expect("owners");
        assert_eq!(
            owners,
            vec![
                ("other.0002.transcode".into(), "bob".into()),
                ("test.0001.transcode".into(), "alice".into())
            ]
        );
        testsuite::upgraded_from_schema_4(&store).await;
    }

    /// Migrations 0008 and 0009 on a database with jobs in every state (issue 13): old
    /// single-task jobs keep working.
    #[tokio::test]
    async fn upgrading_from_schema_7_keeps_old_jobs_working() {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .expect("pool");
        migrate::run(&pool, &SQLITE_MIGRATIONS[..7])
            .await
            .expect("migrate to 7");
        for sql in testsuite::SCHEMA_7_ROWS {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        let store = SqliteStore { pool };
        store.migrate().await.expect("upgrade");
        testsuite::upgraded_from_schema_7(&store).await;
    }

    #[tokio::test]
    async fn journal_mode_is_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("jobs.db"))
            .await
            .expect("open");
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .and_then(|row| row.try_get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn in_memory_store_works() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        testsuite::claim_order(&store).await;
        let store = SqliteStore::open_in_memory().await.expect("open");
        testsuite::cancel(&store).await;
    }
}
