//! What to deliver, where, and when to try again: pure functions, time passed in.

use super::config::{Subscription, WebhookConfig};
use reelay_jobs::{AttemptOutcome, Millis};
use std::time::Duration;

/// Every event type a job has, in the order a job goes through them.
pub const EVENT_TYPES: &[&str] = &[
    "job.created",
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
];

/// The event type of an outbox row's kind; `queued` (a retry going back to the queue) is none.
/// Every `running` is a `job.started`: a job retried after a failure starts again.
pub fn event_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "created" => "job.created",
        "running" => "job.started",
        "succeeded" => "job.succeeded",
        "failed" => "job.failed",
        "cancelled" => "job.cancelled",
        _ => return None,
    })
}

/// One endpoint an event goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `notify:<n>` or `sub:<name>` (stored, shown in the API).
    pub endpoint: String,
    pub url: String,
}

/// The endpoints of one event: each of the job's own `notify` URLs, and each subscription
/// whose filter takes the type (an empty filter takes all).
pub fn targets(event_type: &str, notify: &[String], subscriptions: &[Subscription]) -> Vec<Target> {
    let own = notify.iter().enumerate().map(|(i, url)| Target {
        endpoint: format!("notify:{i}"),
        url: url.clone(),
    });
    let subs = subscriptions
        .iter()
        .filter(|s| s.events.is_empty() || s.events.iter().any(|e| e == event_type))
        .map(|s| Target {
            endpoint: format!("sub:{}", s.name),
            url: s.url.clone(),
        });
    own.chain(subs).collect()
}

/// The `webhook-id` of an event for an endpoint: the same on every try.
pub fn message_id(cluster: &str, event_id: i64, endpoint: &str) -> String {
    format!("msg_{cluster}_{event_id}_{}", endpoint.replace(':', "-"))
}

/// Delay after the `attempt`-th failed try (1-based): base, 2×base, 4×base, ... up to max.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// What a failed try does: another one after the backoff while the retry period (from the
/// delivery's start) lasts, else give up.
pub fn after_failure(
    attempt: u32,
    started_at: Millis,
    now: Millis,
    cfg: &WebhookConfig,
) -> AttemptOutcome {
    let delay = backoff(
        attempt,
        Duration::from_millis(cfg.backoff_base_ms),
        Duration::from_secs(cfg.backoff_max_seconds),
    );
    let next = now.saturating_add(delay.as_millis() as i64);
    let end = started_at.saturating_add((cfg.retry_period_seconds as i64).saturating_mul(1000));
    if now >= end {
        AttemptOutcome::GaveUp
    } else {
        // The last try lands at the end of the period rather than past it.
        AttemptOutcome::RetryAt(next.min(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_types() {
        assert_eq!(event_type("created"), Some("job.created"));
        assert_eq!(event_type("running"), Some("job.started"));
        assert_eq!(event_type("queued"), None);
        for kind in ["succeeded", "failed", "cancelled"] {
            assert!(EVENT_TYPES.contains(&event_type(kind).unwrap()));
        }
    }

    #[test]
    fn subscriptions_filter_by_type() {
        let sub = |name: &str, events: &[&str]| Subscription {
            name: name.into(),
            url: format!("https://{name}.example.com/"),
            secret: String::new(),
            events: events.iter().map(|e| e.to_string()).collect(),
        };
        let subs = [
            sub("all", &[]),
            sub("ends", &["job.succeeded", "job.failed"]),
        ];
        let notify = ["https://me.example.com/hook".to_string()];
        let eps = |t| {
            targets(t, &notify, &subs)
                .into_iter()
                .map(|t| t.endpoint)
                .collect::<Vec<_>>()
        };
        assert_eq!(eps("job.created"), ["notify:0", "sub:all"]);
        assert_eq!(eps("job.failed"), ["notify:0", "sub:all", "sub:ends"]);
        assert_eq!(message_id("aws", 42, "sub:ends"), "msg_aws_42_sub-ends");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        let b = |n| backoff(n, s(5), s(3600));
        assert_eq!([b(1), b(2), b(3), b(4)], [s(5), s(10), s(20), s(40)]);
        assert_eq!(b(20), s(3600));
        assert_eq!(b(u32::MAX), s(3600));
    }

    #[test]
    fn retries_last_for_the_period_then_give_up() {
        let cfg = WebhookConfig {
            retry_period_seconds: 60,
            backoff_base_ms: 10_000,
            backoff_max_seconds: 3600,
            ..WebhookConfig::default()
        };
        assert_eq!(
            after_failure(1, 0, 0, &cfg),
            AttemptOutcome::RetryAt(10_000)
        );
        assert_eq!(
            after_failure(3, 0, 30_000, &cfg),
            AttemptOutcome::RetryAt(60_000)
        );
        assert_eq!(after_failure(4, 0, 60_000, &cfg), AttemptOutcome::GaveUp);
    }
}
