//! Versioned schema migrations for SQLite.
//!
//! Hand-rolled rather than sqlx's `migrate!` because the workspace builds sqlx without its
//! `macros`/`migrate` features (they pull in a heavy build-time dependency tree). The SQL files
//! are embedded so a single binary can upgrade its own database.

use crate::model::now_millis;
use crate::store::StoreError;
use sqlx::{Row, SqlitePool};

/// One schema step. Versions only ever grow, and an applied migration is never edited: a fix
/// is a new migration, because databases in the field have already run the old one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/sqlite/0001_init.sql"),
}];

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

    let known_max = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let applied_max: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| fail("reading schema_migrations", e))?;
    if let Some(applied_max) = applied_max.filter(|v| *v > known_max) {
        // An older binary must not write to a schema it does not understand.
        return Err(StoreError::Migration(format!(
            "database schema version {applied_max} is newer than this build knows ({known_max})"
        )));
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing() {
        for pair in SQLITE_MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        assert_eq!(SQLITE_MIGRATIONS[0].version, 1);
    }
}
