//! Versioned schema migrations for SQLite and Postgres.
//!
//! Hand-rolled rather than sqlx's `migrate!` because the workspace builds sqlx without its
//! `macros`/`migrate` features (they pull in a heavy build-time dependency tree). The SQL files
//! are embedded so a single binary can upgrade its own database.

use crate::model::now_millis;
use crate::store::StoreError;
use sqlx::{PgPool, Row, SqlitePool};

/// One schema step. Versions only ever grow, and an applied migration is never edited: a fix
/// is a new migration, because databases in the field have already run the old one. Versions
/// need not be contiguous: a missing step is applied whenever it arrives. (Version 5 is left to
/// the token revocation table being built alongside, which claimed it first.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "workers",
        sql: include_str!("../migrations/sqlite/0002_workers.sql"),
    },
    Migration {
        version: 3,
        name: "tokens",
        sql: include_str!("../migrations/sqlite/0003_tokens.sql"),
    },
    Migration {
        version: 4,
        name: "attempt_started",
        sql: include_str!("../migrations/sqlite/0004_attempt_started.sql"),
    },
    Migration {
        version: 5,
        name: "revocations",
        sql: include_str!("../migrations/sqlite/0005_revocations.sql"),
    },
    Migration {
        version: 6,
        name: "idempotency_per_owner",
        sql: include_str!("../migrations/sqlite/0006_idempotency_per_owner.sql"),
    },
    Migration {
        version: 7,
        name: "fair_claims",
        sql: include_str!("../migrations/sqlite/0007_fair_claims.sql"),
    },
    Migration {
        version: 8,
        name: "tasks",
        sql: include_str!("../migrations/sqlite/0008_tasks.sql"),
    },
    Migration {
        version: 9,
        name: "job_events",
        sql: include_str!("../migrations/sqlite/0009_job_events.sql"),
    },
    // 10 and 12 were left unused by parallel branches; the versions need not be contiguous.
    Migration {
        version: 11,
        name: "webhooks",
        sql: include_str!("../migrations/sqlite/0011_webhooks.sql"),
    },
    Migration {
        version: 13,
        name: "retention",
        sql: include_str!("../migrations/sqlite/0013_retention.sql"),
    },
    Migration {
        version: 14,
        name: "job_context",
        sql: include_str!("../migrations/sqlite/0014_job_context.sql"),
    },
    Migration {
        version: 16,
        name: "task_timings",
        sql: include_str!("../migrations/sqlite/0016_task_timings.sql"),
    },
    Migration {
        version: 17,
        name: "playable",
        sql: include_str!("../migrations/sqlite/0017_playable.sql"),
    },
    Migration {
        version: 21,
        name: "ran_on",
        sql: include_str!("../migrations/sqlite/0021_ran_on.sql"),
    },
    Migration {
        version: 22,
        name: "worker_away",
        sql: include_str!("../migrations/sqlite/0022_worker_away.sql"),
    },
];

pub(crate) const POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "workers",
        sql: include_str!("../migrations/postgres/0002_workers.sql"),
    },
    Migration {
        version: 3,
        name: "tokens",
        sql: include_str!("../migrations/postgres/0003_tokens.sql"),
    },
    Migration {
        version: 4,
        name: "attempt_started",
        sql: include_str!("../migrations/postgres/0004_attempt_started.sql"),
    },
    Migration {
        version: 5,
        name: "revocations",
        sql: include_str!("../migrations/postgres/0005_revocations.sql"),
    },
    Migration {
        version: 6,
        name: "idempotency_per_owner",
        sql: include_str!("../migrations/postgres/0006_idempotency_per_owner.sql"),
    },
    Migration {
        version: 7,
        name: "fair_claims",
        sql: include_str!("../migrations/postgres/0007_fair_claims.sql"),
    },
    Migration {
        version: 8,
        name: "tasks",
        sql: include_str!("../migrations/postgres/0008_tasks.sql"),
    },
    Migration {
        version: 9,
        name: "job_events",
        sql: include_str!("../migrations/postgres/0009_job_events.sql"),
    },
    // 10 and 12 were left unused by parallel branches; the versions need not be contiguous.
    Migration {
        version: 11,
        name: "webhooks",
        sql: include_str!("../migrations/postgres/0011_webhooks.sql"),
    },
    Migration {
        version: 13,
        name: "retention",
        sql: include_str!("../migrations/postgres/0013_retention.sql"),
    },
    Migration {
        version: 14,
        name: "job_context",
        sql: include_str!("../migrations/postgres/0014_job_context.sql"),
    },
    Migration {
        version: 16,
        name: "task_timings",
        sql: include_str!("../migrations/postgres/0016_task_timings.sql"),
    },
    Migration {
        version: 17,
        name: "playable",
        sql: include_str!("../migrations/postgres/0017_playable.sql"),
    },
    Migration {
        version: 21,
        name: "ran_on",
        sql: include_str!("../migrations/postgres/0021_ran_on.sql"),
    },
    Migration {
        version: 22,
        name: "worker_away",
        sql: include_str!("../migrations/postgres/0022_worker_away.sql"),
    },
];

/// An older binary must not write to a schema it does not understand.
fn refuse_newer_schema(
    applied_max: Option<i64>,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let known_max = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    match applied_max.filter(|v| *v > known_max) {
        Some(applied_max) => Err(StoreError::Migration(format!(
            "database schema version {applied_max} is newer than this build knows ({known_max})"
        ))),
        None => Ok(()),
    }
}

/// Applies every migration not yet recorded in `schema_migrations`, in order, each inside its
/// own `BEGIN IMMEDIATE` transaction together with its record, so a crash never leaves a
/// half-applied step and two processes starting at once cannot both apply it.
pub(crate) async fn run(pool: &SqlitePool, migrations: &[Migration]) -> Result<(), StoreError> {
    let fail = |what: &str, e: sqlx::Error| StoreError::Migration(format!("{what}: {e}"));

    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )
    .execute(pool)
    .await
    .map_err(|e| fail("creating schema_migrations", e))?;

    let applied_max: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| fail("reading schema_migrations", e))?;
    refuse_newer_schema(applied_max, migrations)?;

    for m in migrations {
        let context = format!("migration {:04} {}", m.version, m.name);
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| fail(&context, e))?;
        let already: Option<String> =
            sqlx::query("SELECT name FROM schema_migrations WHERE version = ?")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await
                .and_then(|row| row.map(|r| r.try_get(0)).transpose())
                .map_err(|e| fail(&context, e))?;
        if let Some(name) = already {
            if name != m.name {
                tracing::warn!(
                    version = m.version,
                    recorded = %name,
                    expected = m.name,
                    "applied migration was recorded under another name"
                );
            }
            continue;
        }
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(&context, e))?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(&context, e))?;
        tx.commit().await.map_err(|e| fail(&context, e))?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

/// Key of the advisory lock that serializes migrating processes. Advisory locks are per
/// database, so this only has to be unique among the advisory locks reelay itself takes.
const PG_MIGRATION_LOCK: i64 = 0x7265_656c_6179_0001; // "reelay" + 1

/// Takes the migration lock for the rest of `tx`.
///
/// Postgres has no `BEGIN IMMEDIATE`: without this, two processes starting at once would both
/// see a migration as missing and both apply it (or race on `CREATE TABLE IF NOT EXISTS`, which
/// is not concurrency-safe in Postgres). A transaction-scoped lock is released by commit or
/// rollback, so a crashed migrator can never leave it held.
async fn pg_migration_lock(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_MIGRATION_LOCK)
        .execute(tx)
        .await
        .map(drop)
}

/// The Postgres counterpart of [`run`]: same bookkeeping and the same one-transaction-per-step
/// rule (Postgres DDL is transactional, so a failed step leaves nothing behind), with every
/// transaction holding [`PG_MIGRATION_LOCK`].
pub(crate) async fn run_postgres(
    pool: &PgPool,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let fail = |what: &str, e: sqlx::Error| StoreError::Migration(format!("{what}: {e}"));

    let setup = "creating schema_migrations";
    let mut tx = pool.begin().await.map_err(|e| fail(setup, e))?;
    pg_migration_lock(&mut tx)
        .await
        .map_err(|e| fail(setup, e))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT   NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| fail(setup, e))?;
    let applied_max: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| fail("reading schema_migrations", e))?;
    tx.commit().await.map_err(|e| fail(setup, e))?;
    refuse_newer_schema(applied_max, migrations)?;

    for m in migrations {
        let context = format!("migration {:04} {}", m.version, m.name);
        let mut tx = pool.begin().await.map_err(|e| fail(&context, e))?;
        pg_migration_lock(&mut tx)
            .await
            .map_err(|e| fail(&context, e))?;
        let already: Option<String> =
            sqlx::query("SELECT name FROM schema_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await
                .and_then(|row| row.map(|r| r.try_get(0)).transpose())
                .map_err(|e| fail(&context, e))?;
        if let Some(name) = already {
            if name != m.name {
                tracing::warn!(
                    version = m.version,
                    recorded = %name,
                    expected = m.name,
                    "applied migration was recorded under another name"
                );
            }
            // Explicitly: a dropped transaction's rollback, and so the lock's release, is only
            // sent when sqlx gets round to it.
            tx.rollback().await.map_err(|e| fail(&context, e))?;
            continue;
        }
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(&context, e))?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| fail(&context, e))?;
        tx.commit().await.map_err(|e| fail(&context, e))?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing() {
        for migrations in [SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS] {
            for pair in migrations.windows(2) {
                assert!(pair[0].version < pair[1].version);
            }
            assert_eq!(migrations[0].version, 1);
        }
    }

    /// Both backends must be at the same schema step, or one of them is missing a change.
    #[test]
    fn backends_have_the_same_steps() {
        let steps = |ms: &[Migration]| ms.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(steps(SQLITE_MIGRATIONS), steps(POSTGRES_MIGRATIONS));
    }
}
