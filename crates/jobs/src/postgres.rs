//! [`JobStore`] on Postgres, for several api and worker processes on several machines.
//!
//! It behaves exactly like [`SqliteStore`](crate::SqliteStore) (both run the same `testsuite`);
//! only the way concurrent writers are kept apart differs. The statements and the state machine
//! are shared (`ops`, `machine`); SQLite has one write lock for the whole file, here every state
//! change locks the JOB row before it reads the job's tasks and decides:
//!
//! * `claim` probes for a candidate task and locks its job row with `FOR UPDATE OF j SKIP
//!   LOCKED`, so concurrent claimers pass over a job that another transaction is changing rather
//!   than wait for it, then re-reads the tasks and lets the machine check the candidate is still
//!   claimable (a concurrent claimer may have taken it since the probe's snapshot);
//! * `renew`, `complete`, `fail`, `release` and `cancel` lock the job row (`FOR UPDATE`) first.
//!
//! No transaction locks a task row before its job row, so these cannot deadlock. Every path ends
//! its transaction explicitly (commit, or rollback on error), so no lock outlives its decision.
//!
//! Times are the caller's wall clock ([`now_millis`]), not the database's `now()`, so both
//! backends share one notion of time. The price: lease expiry compares one process's clock with
//! another's, so machines whose clocks disagree by more than a small part of the lease length
//! (keep them NTP-synced) take over leases early or late. Skew never gives two workers the same
//! lease, though: the owner is one column changed under the row lock, and a worker that was
//! overtaken learns it from its next renew.

use crate::migrate::{self, POSTGRES_MIGRATIONS};
use crate::ops::Dialect;
use crate::store::StoreError;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};
use std::time::Duration;

/// Channel on which a `NOTIFY` (payload: the job id) is sent whenever a task becomes claimable at
/// once: a new job, a released task, or tasks unblocked by their dependencies. Workers may `LISTEN` on it to claim without waiting for
/// their next poll; nothing depends on it, because notifications are lost while nobody listens.
pub const NOTIFY_CHANNEL: &str = "reelay_jobs";

/// Row locks: the job row is the lock of a job and its tasks (see `ops`); claimers skip a job
/// someone else is changing.
static DIALECT: Dialect = Dialect {
    lock_job: " FOR UPDATE",
    claim_lock: " FOR UPDATE OF j SKIP LOCKED",
    greatest: "GREATEST",
};

/// Per process. Unlike SQLite, writers run in parallel, so more connections do help; but every
/// api and worker process has its own pool and Postgres' default `max_connections` is 100.
const POOL_SIZE: u32 = 10;

/// How long a query waits for a connection (including reconnecting to a restarted server)
/// before it fails with [`StoreError::Database`]: long enough to ride out a quick restart or
/// failover, short enough that /readyz reports an outage.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates, like [`SqliteStore::open`](crate::SqliteStore::open).
    ///
    /// `url` is a libpq-style `postgres://user:password@host:port/database?options` URL. An
    /// unreachable server or refused login is a [`StoreError::Database`]. The pool checks each
    /// idle connection before handing it out and replaces dead ones, so the store carries on by
    /// itself after the server restarts; calls made while it is down fail after 10 s.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        Self::connect_with(url, ACQUIRE_TIMEOUT).await
    }

    pub(crate) async fn connect_with(
        url: &str,
        acquire_timeout: Duration,
    ) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(acquire_timeout)
            // The default already; spelled out because reconnecting after a restart relies on it.
            .test_before_acquire(true)
            .connect(url)
            .await?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; a no-op when the schema is current, and safe to run from
    /// several processes at once (they take turns on an advisory lock). `connect` already calls
    /// it, this is for an explicit `reelay migrate`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run_postgres(&self.pool, POSTGRES_MIGRATIONS).await
    }

    /// A write transaction (READ COMMITTED; rows are locked as they are read).
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A read transaction.
    async fn read(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

async fn notify(conn: &mut PgConnection, job_id: &str) -> Result<(), StoreError> {
    // Inside the caller's transaction: delivered on commit, dropped on rollback.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

crate::ops::row_decoders!(PgRow);
crate::ops::conn_impl!(Db, PgConnection, Postgres, DIALECT, notify);
crate::ops::job_store_impl!(PgStore, Db);
crate::webhooks::webhook_store_impl!(PgStore, Db);

crate::registry::worker_registry_impl!(PgStore);

crate::registry::token_store_impl!(PgStore, PgRow);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpg::{self, Cluster, PrivateCluster};
    use crate::testsuite::{new_job, test_database_url};
    use crate::{CancelOutcome, FailOutcome, JobStore, RenewOutcome};
    use reelay_protocol::ErrorDetail;
    use sqlx::Row;
    use std::collections::HashSet;
    use std::sync::Arc;

    const LEASE: Duration = Duration::from_secs(60);

    async fn fresh() -> (String, Arc<dyn JobStore>) {
        let url = test_database_url().await;
        let store = PgStore::connect(&url).await.expect("connect");
        (url, Arc::new(store))
    }

    crate::job_store_suite!(fresh);

    async fn migration_count(store: &PgStore) -> i64 {
        sqlx::query("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(&store.pool)
            .await
            .and_then(|row| row.try_get(0))
            .expect("count migrations")
    }

    /// Two pools stand for two worker processes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_claim_each_job_exactly_once() {
        let url = test_database_url().await;
        let a = Arc::new(PgStore::connect(&url).await.expect("connect a"));
        let b = Arc::new(PgStore::connect(&url).await.expect("connect b"));
        let mut ids = HashSet::new();
        for i in 0..40 {
            let store = if i % 2 == 0 { &a } else { &b };
            let job = store.create_job(new_job("test")).await.expect("create");
            ids.insert(job.into_job().id);
        }

        let mut handles = Vec::new();
        for (name, store) in [("a", &a), ("b", &b)] {
            for w in 0..8 {
                let store = Arc::clone(store);
                let worker = format!("worker-{name}{w}");
                handles.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while let Some(claim) = store.claim(&worker, LEASE).await.expect("claim") {
                        assert_eq!(claim.attempt, 1);
                        assert_eq!(claim.job.attempts, 1);
                        mine.push(claim.job.id);
                        tokio::task::yield_now().await;
                    }
                    mine
                }));
            }
        }
        let mut claimed = Vec::new();
        for handle in handles {
            claimed.extend(handle.await.expect("claimer panicked"));
        }
        let unique: HashSet<_> = claimed.iter().cloned().collect();
        assert_eq!(claimed.len(), 40, "some job was claimed twice: {claimed:?}");
        assert_eq!(unique, ids);
        let counts = a.counts().await.expect("counts");
        assert_eq!((counts.queued, counts.running), (0, 40));
        assert!(b.claim("late", LEASE).await.expect("claim").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_are_safe_and_idempotent() {
        let url = test_database_url().await;
        // Four processes starting at once against an empty database all migrate on connect.
        let (a, b, c, d) = tokio::join!(
            PgStore::connect(&url),
            PgStore::connect(&url),
            PgStore::connect(&url),
            PgStore::connect(&url)
        );
        let stores = [a, b, c, d].map(|s| s.expect("connect and migrate"));
        let expected = POSTGRES_MIGRATIONS.len() as i64;
        assert_eq!(migration_count(&stores[0]).await, expected);

        let job = stores[0]
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        let (a, b, c, d) = tokio::join!(
            stores[0].migrate(),
            stores[1].migrate(),
            stores[2].migrate(),
            stores[3].migrate()
        );
        for result in [a, b, c, d] {
            result.expect("migrate again");
        }
        assert_eq!(migration_count(&stores[3]).await, expected);
        assert_eq!(
            stores[3].get_job(&job.id).await.expect("get"),
            Some(job),
            "re-running migrations must not touch data"
        );
    }

    /// Migrations 0006 and 0007 on a database with jobs: owners are copied to the tasks, the
    /// old jobs keep their place and their keys.
    #[tokio::test]
    async fn upgrading_from_schema_4_keeps_jobs_keys_and_order() {
        let url = test_database_url().await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("pool");
        migrate::run_postgres(&pool, &POSTGRES_MIGRATIONS[..4])
            .await
            .expect("migrate to 4");
        for sql in crate::testsuite::SCHEMA_4_ROWS {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        pool.close().await;
        let store = PgStore::connect(&url).await.expect("connect and upgrade");
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
        crate::testsuite::upgraded_from_schema_4(&store).await;
    }

    /// Migrations 0008 and 0009 on a database with jobs in every state (issue 13).
    #[tokio::test]
    async fn upgrading_from_schema_7_keeps_old_jobs_working() {
        let url = test_database_url().await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("pool");
        migrate::run_postgres(&pool, &POSTGRES_MIGRATIONS[..7])
            .await
            .expect("migrate to 7");
        for sql in crate::testsuite::SCHEMA_7_ROWS {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        pool.close().await;
        let store = PgStore::connect(&url).await.expect("connect and upgrade");
        crate::testsuite::upgraded_from_schema_7(&store).await;
    }

    #[tokio::test]
    async fn refuses_a_schema_newer_than_the_build() {
        let url = test_database_url().await;
        let store = PgStore::connect(&url).await.expect("connect");
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        )
        .execute(&store.pool)
        .await
        .expect("insert");
        store.pool.close().await;
        assert!(matches!(
            PgStore::connect(&url).await,
            Err(StoreError::Migration(_))
        ));
    }

    #[tokio::test]
    async fn connection_failures_are_database_errors() {
        let url = test_database_url().await;
        let missing = testpg::with_database(&url, "reelay_no_such_database").expect("url");
        assert!(matches!(
            PgStore::connect(&missing).await,
            Err(StoreError::Database(_))
        ));

        // Nothing listens on a port just released; the pool retries until its timeout.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let closed = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        assert!(matches!(
            PgStore::connect_with(&closed, Duration::from_millis(500)).await,
            Err(StoreError::Database(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnects_after_the_server_restarts() {
        if testpg::external_server() {
            eprintln!(
                "skipping reconnects_after_the_server_restarts: REELAY_TEST_DATABASE_URL is set \
                 and the tests must not restart a server they did not start"
            );
            return;
        }
        // A cluster of its own: restarting the shared one would break tests running alongside.
        let cluster = tokio::task::spawn_blocking(Cluster::start_new)
            .await
            .expect("start task")
            .map(PrivateCluster)
            .expect("start a private cluster");
        let url = cluster.0.admin_url();
        let store = Arc::new(
            PgStore::connect_with(&url, Duration::from_secs(1))
                .await
                .expect("connect"),
        );
        let job = store
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        let claim = store
            .claim("w", LEASE)
            .await
            .expect("claim")
            .expect("claimable");
        // Several idle connections in the pool, all of which the restart kills.
        let pings: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.ping().await })
            })
            .collect();
        for ping in pings {
            ping.await.expect("ping task").expect("ping");
        }

        let cluster =
            tokio::task::spawn_blocking(move || cluster.0.stop().map(|()| cluster).expect("stop"))
                .await
                .expect("stop task");
        // Each waits out the acquire timeout while the pool keeps trying to reconnect.
        let (ping, get) = tokio::join!(store.ping(), store.get_job(&job.id));
        assert!(matches!(ping, Err(StoreError::Database(_))), "{ping:?}");
        assert!(matches!(get, Err(StoreError::Database(_))), "{get:?}");
        let _cluster = tokio::task::spawn_blocking(move || {
            cluster.0.start().map(|()| cluster).expect("start again")
        })
        .await
        .expect("start task");

        // No retry loop: the first call after the restart must already work.
        store.ping().await.expect("ping after restart");
        assert_eq!(
            store.get_job(&job.id).await.expect("get").expect("job"),
            claim.job
        );
        assert_eq!(
            store
                .renew(&claim.task_id, "w", 1, LEASE, Some(0.5), None)
                .await
                .expect("renew"),
            RenewOutcome::Renewed
        );
        assert!(store
            .complete(&claim.task_id, "w", 1, vec![])
            .await
            .expect("complete"));
        store.create_job(new_job("test")).await.expect("create");
    }

    /// Calls that change nothing must not leave their row locks behind for the next caller to
    /// skip (see `unchanged`); the suite's `release` test caught this only now and then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_calls_leave_nothing_locked() {
        let (_url, store) = fresh().await;
        for _ in 0..25 {
            let job = store
                .create_job(new_job("test"))
                .await
                .expect("create")
                .into_job();
            let claim = store
                .claim("w1", LEASE)
                .await
                .expect("claim")
                .expect("claimable");
            store
                .release(&claim.task_id, "w1", 1)
                .await
                .expect("release");
            assert_eq!(
                store
                    .renew(&claim.task_id, "w1", 1, LEASE, None, None)
                    .await
                    .expect("renew"),
                RenewOutcome::LeaseLost
            );
            assert!(!store
                .complete(&claim.task_id, "w1", 1, vec![])
                .await
                .expect("complete"));
            let again = store
                .claim("w2", LEASE)
                .await
                .expect("claim")
                .expect("the released task, not skipped as locked");
            assert_eq!(again.job.id, job.id);
            store
                .release(&again.task_id, "w3", 1)
                .await
                .expect("release");
            assert!(matches!(
                store.cancel(&job.id).await.expect("cancel"),
                CancelOutcome::Cancelled(_)
            ));
            assert!(matches!(
                store.cancel(&job.id).await.expect("cancel"),
                CancelOutcome::AlreadyFinished(_)
            ));
            assert_eq!(
                store
                    .renew(&again.task_id, "w2", 1, LEASE, None, None)
                    .await
                    .expect("renew"),
                RenewOutcome::Cancelled
            );
        }
        assert!(store.claim("w", LEASE).await.expect("claim").is_none());
    }

    async fn next_payload(listener: &mut sqlx::postgres::PgListener) -> String {
        tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification within 5 s")
            .expect("recv")
            .payload()
            .to_string()
    }

    #[tokio::test]
    async fn notifies_when_work_becomes_claimable() {
        let (url, store) = fresh().await;
        let mut listener = sqlx::postgres::PgListener::connect(&url)
            .await
            .expect("listener");
        listener.listen(NOTIFY_CHANNEL).await.expect("listen");
        let job = store
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        assert_eq!(next_payload(&mut listener).await, job.id);
        let claim = store
            .claim("w", LEASE)
            .await
            .expect("claim")
            .expect("claimable");
        store
            .release(&claim.task_id, "w", 1)
            .await
            .expect("release");
        assert_eq!(next_payload(&mut listener).await, job.id);
    }

    /// What a worker process listens with (`WorkListener`) hears the job another connection
    /// created; a SQLite URL gives no listener at all.
    #[tokio::test]
    async fn a_work_listener_hears_new_jobs() {
        let (url, store) = fresh().await;
        let mut listener = crate::WorkListener::connect(Some(&url))
            .await
            .expect("listen")
            .expect("postgres has notifications");
        let job = store
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        let heard = tokio::time::timeout(Duration::from_secs(5), listener.next())
            .await
            .expect("a notification within 5 s")
            .expect("recv");
        assert_eq!(heard, job.id);
        assert!(crate::WorkListener::connect(Some("sqlite::memory:"))
            .await
            .expect("no error")
            .is_none());
    }

    #[tokio::test]
    async fn error_messages_with_nul_are_stored() {
        let (_url, store) = fresh().await;
        let job = store
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        let claim = store
            .claim("w", LEASE)
            .await
            .expect("claim")
            .expect("claimable");
        let outcome = store
            .fail(
                &claim.task_id,
                "w",
                1,
                ErrorDetail::new("ffmpeg\0failed", "bad\0frame"),
                None,
            )
            .await
            .expect("fail");
        assert_eq!(outcome, FailOutcome::Failed);
        let failed = store.get_job(&job.id).await.expect("get").expect("job");
        assert_eq!(
            failed.error,
            Some(ErrorDetail::new("ffmpeg\u{FFFD}failed", "bad\u{FFFD}frame"))
        );
    }

    /// Listing and claiming compare ids byte by byte like SQLite, whatever the database's
    /// default collation (the test cluster's is C anyway, so the column itself is checked).
    #[tokio::test]
    async fn ids_compare_bytewise() {
        let url = test_database_url().await;
        let store = PgStore::connect(&url).await.expect("connect");
        let collations: Vec<(String, String, Option<String>)> = sqlx::query(
            "SELECT table_name::text, column_name::text, collation_name::text
             FROM information_schema.columns
             WHERE column_name IN ('id', 'job_id') AND table_name IN ('jobs', 'tasks')
             ORDER BY 1, 2",
        )
        .fetch_all(&store.pool)
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        let c = Some("C".to_string());
        assert_eq!(
            collations,
            [
                ("jobs".into(), "id".into(), c.clone()),
                ("tasks".into(), "id".into(), c.clone()),
                ("tasks".into(), "job_id".into(), c),
            ]
        );
    }
}
