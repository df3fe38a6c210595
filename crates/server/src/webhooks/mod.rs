//! Webhooks (Standard Webhooks): the events of a job told to the job's own `notify` endpoints
//! and to the cluster's configured subscriptions, at least once, in order per job per endpoint.
//!
//! * [`config`]: `[webhooks]` settings and subscriptions;
//! * [`sign`]: secrets (`whsec_…`) and the `webhook-signature` header (pure);
//! * [`policy`]: which outbox events become which deliveries, the backoff schedule (pure, time
//!   passed in);
//! * [`dispatch`]: the loop every api replica runs: outbox → delivery rows → HTTP attempts.

pub mod config;
pub mod dispatch;
pub mod policy;
pub mod sign;

pub use config::{Subscription, WebhookConfig};
