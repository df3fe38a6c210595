//! Jobs, tasks and their state machine.
//!
//! A *job* is what a user asked for; a *task* is a unit of work a worker can claim. A plain job
//! has one `transcode` task; a split job has many (`split`, `encode_segment`, ..., `stitch`),
//! wired by dependencies. The job's status, progress, error and outputs are a rollup of its
//! tasks computed by ONE pure function ([`machine::apply`]) and written in the same transaction
//! as the task change, together with a [`JobEvent`] whenever the job's status changes.
//!
//! Everything the api and the workers need goes through the [`JobStore`] trait (plus
//! [`WorkerRegistry`] and [`TokenStore`]), so that the SQLite and the Postgres implementations
//! are interchangeable and share one test suite (`testsuite`, behind the `testsuite` feature).
//! Their statements are written once (`ops`); [`open_store`] picks one from a URL.

mod lease;
pub mod machine;
mod migrate;
mod model;
mod ops;
mod postgres;
mod registry;
mod retry;
mod shared_sql;
mod sqlite;
mod store;
mod wakeups;
pub mod webhooks;

#[cfg(any(test, feature = "testsuite"))]
mod testpg;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use lease::Lease;
pub use machine::TaskStatus;
pub use model::*;
pub use ops::{PeerClaim, PeerOffer};
pub use postgres::{PgStore, NOTIFY_CHANNEL};
pub use retry::{backoff, RETRY_CAP};
pub use sqlite::SqliteStore;
pub use store::*;
pub use wakeups::WorkListener;
pub use webhooks::{AttemptOutcome, Delivery, DeliveryAttempt, NewDelivery, WebhookStore};

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Opens and migrates the store a deployment is configured for.
///
/// * `None`: SQLite at `default_sqlite_path`, so a single machine needs no configuration;
/// * `sqlite:PATH`, `sqlite://PATH` (`sqlite:///abs/path` for an absolute one), or
///   `sqlite::memory:` for a throwaway database;
/// * `postgres://...` or `postgresql://...`: Postgres, which several machines can share.
///
/// Anything else is a [`StoreError::Config`] rather than a guess, because silently falling back
/// to a local SQLite file would split one cluster's queue in two.
pub async fn open_store(
    database_url: Option<&str>,
    default_sqlite_path: &Path,
) -> Result<Arc<dyn JobStore>, StoreError> {
    Ok(
        match parse_database_url(database_url, default_sqlite_path)? {
            StoreKind::Sqlite(path) => Arc::new(SqliteStore::open(&path).await?),
            StoreKind::SqliteMemory => Arc::new(SqliteStore::open_in_memory().await?),
            StoreKind::Postgres(url) => Arc::new(PgStore::connect(url).await?),
        },
    )
}

/// Whether `url` names a Postgres store (and so has `LISTEN`/`NOTIFY` wake-ups).
pub fn is_postgres_url(url: &str) -> bool {
    matches!(
        parse_database_url(Some(url), Path::new("")),
        Ok(StoreKind::Postgres(_))
    )
}

#[derive(Debug, PartialEq)]
enum StoreKind<'a> {
    Sqlite(PathBuf),
    SqliteMemory,
    Postgres(&'a str),
}

fn parse_database_url<'a>(
    database_url: Option<&'a str>,
    default_sqlite_path: &Path,
) -> Result<StoreKind<'a>, StoreError> {
    let Some(url) = database_url else {
        return Ok(StoreKind::Sqlite(default_sqlite_path.to_path_buf()));
    };
    // Only the scheme goes into errors: the rest may hold a password.
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" if url[scheme.len()..].starts_with("://") => {
            Ok(StoreKind::Postgres(url))
        }
        "sqlite" => {
            let rest = &url[scheme.len() + 1..];
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path == ":memory:" {
                return Ok(StoreKind::SqliteMemory);
            }
            if path.is_empty() {
                return Err(StoreError::Config(
                    "sqlite database URL has no path (expected sqlite:PATH)".to_string(),
                ));
            }
            // sqlx-style `?mode=...` options would otherwise end up in the file name.
            if path.contains('?') {
                return Err(StoreError::Config(
                    "sqlite database URLs take no options (expected sqlite:PATH)".to_string(),
                ));
            }
            Ok(StoreKind::Sqlite(PathBuf::from(path)))
        }
        _ => Err(StoreError::Config(format!(
            "unsupported database URL scheme {scheme:?}: expected sqlite:PATH, postgres://... \
             or postgresql://..."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: Option<&str>) -> Result<StoreKind<'_>, StoreError> {
        parse_database_url(url, Path::new("data/jobs.db"))
    }

    #[test]
    fn database_urls_pick_the_backend() {
        let sqlite = |p: &str| Ok::<_, ()>(StoreKind::Sqlite(PathBuf::from(p)));
        let ok = |url| parse(url).map_err(|_| ());
        assert_eq!(ok(None), sqlite("data/jobs.db"));
        assert_eq!(ok(Some("sqlite:jobs.db")), sqlite("jobs.db"));
        assert_eq!(ok(Some("sqlite://rel/jobs.db")), sqlite("rel/jobs.db"));
        assert_eq!(ok(Some("sqlite:///abs/jobs.db")), sqlite("/abs/jobs.db"));
        assert_eq!(ok(Some("SQLite:/abs/jobs.db")), sqlite("/abs/jobs.db"));
        assert_eq!(ok(Some("sqlite::memory:")), Ok(StoreKind::SqliteMemory));
        for url in [
            "postgres://u:p@db:5432/reelay",
            "postgresql://db/reelay?sslmode=require",
            "postgresql:///reelay?host=/run/postgresql",
        ] {
            assert_eq!(ok(Some(url)), Ok(StoreKind::Postgres(url)));
            assert!(is_postgres_url(url), "{url}");
        }
        // Only Postgres has LISTEN/NOTIFY wake-ups; SQLite and nonsense have none.
        for url in [
            "sqlite:jobs.db",
            "sqlite::memory:",
            "mysql://db/x",
            "postgres:x",
            "",
        ] {
            assert!(!is_postgres_url(url), "{url}");
        }
    }

    #[test]
    fn other_database_urls_are_config_errors_without_secrets() {
        for url in [
            "mysql://root:hunter2@db/reelay",
            "postgres:hunter2@db",
            "sqlite:",
            "sqlite://",
            "sqlite://jobs.db?mode=rwc",
            "data/jobs.db",
            "",
        ] {
            match parse(Some(url)) {
                Err(StoreError::Config(message)) => {
                    assert!(!message.contains("hunter2"), "{message}");
                }
                other => panic!("{url:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn open_store_opens_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("default.db");
        let store = open_store(None, &default).await.expect("open default");
        store.ping().await.expect("ping");
        assert!(default.exists());

        let explicit = dir.path().join("explicit.db");
        let url = format!("sqlite://{}", explicit.display());
        let store = open_store(Some(&url), &default).await.expect("open url");
        store.ping().await.expect("ping");
        assert!(explicit.exists());

        assert!(matches!(
            open_store(Some("redis://localhost"), &default).await,
            Err(StoreError::Config(_))
        ));
    }

    #[tokio::test]
    async fn open_store_opens_postgres() {
        let url = testsuite::test_database_url().await;
        let store = open_store(Some(&url), Path::new("unused.db"))
            .await
            .expect("open postgres");
        store.ping().await.expect("ping");
        assert!(matches!(
            store.create_job(testsuite::new_job("test")).await,
            Ok(CreateOutcome::Created(_))
        ));
        assert!(!Path::new("unused.db").exists());
    }
}
