//! Jobs, tasks and their state machine.
//!
//! A *job* is what a user asked for; a *task* is a unit of work a worker can claim. Today every
//! job has exactly one `transcode` task, but the two are stored apart because a job will later be
//! split into segment tasks claimed by different workers. The user-visible job status is updated
//! in the same transaction as its task, so the two never disagree.
//!
//! Everything the api and the workers need goes through the [`JobStore`] trait, so that the
//! SQLite implementation here and a future Postgres one are interchangeable and share one test
//! suite (`testsuite`, behind the `testsuite` feature).

mod migrate;
mod model;
mod retry;
mod sqlite;
mod store;

#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use model::*;
pub use retry::backoff;
pub use sqlite::SqliteStore;
pub use store::*;
