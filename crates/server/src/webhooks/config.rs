//! `[webhooks]` in the cluster config.

use serde::Deserialize;

/// Delivery timing and the cluster's subscriptions. Defaults: retried for 24 h, first retry
/// after 5 s, doubling up to an hour between tries, 10 s per attempt.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The key per-owner notify secrets are derived from (`whsec_…`). Unset: a key generated
    /// once in `data_dir/webhook-notify.key`; replicas of one cluster must share one, so a
    /// scaled-out cluster sets it here.
    pub notify_key: Option<String>,
    /// Or a file holding it (a mounted secret), created there if missing: what `reelay up`,
    /// the compose stack and the k8s manifests give every cluster behind one edge, so an
    /// owner's secret is the same whichever cluster answers or signs.
    pub notify_key_file: Option<std::path::PathBuf>,
    /// How long a failing delivery keeps being retried, from its first attempt.
    pub retry_period_seconds: u64,
    /// The first retry's delay; each next one doubles it.
    pub backoff_base_ms: u64,
    /// The longest delay between two attempts.
    pub backoff_max_seconds: u64,
    /// One attempt's whole time (connect, send, answer headers).
    pub timeout_seconds: u64,
    /// `notify` endpoints one job may name.
    pub max_notify: usize,
    /// How often the outbox and due deliveries are looked at.
    pub poll_ms: u64,
    /// Attempts in flight at once per process (each its own task: a slow receiver holds one).
    pub concurrency: usize,
    pub subscriptions: Vec<Subscription>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            notify_key: None,
            notify_key_file: None,
            retry_period_seconds: 24 * 3600,
            backoff_base_ms: 5000,
            backoff_max_seconds: 3600,
            timeout_seconds: 10,
            max_notify: 4,
            poll_ms: 500,
            concurrency: 32,
            subscriptions: Vec::new(),
        }
    }
}

/// An operator's endpoint for every job of the cluster (`[[webhooks.subscriptions]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Names the endpoint in delivery ids and the API (`[a-z0-9-]`, unique).
    pub name: String,
    pub url: String,
    /// `whsec_` + base64 of the key bytes.
    pub secret: String,
    /// Event types sent (`job.succeeded`, ...); empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
}

impl WebhookConfig {
    /// The first bad setting, as (setting, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.backoff_base_ms == 0 || self.timeout_seconds == 0 || self.concurrency == 0 {
            return Err((
                "webhooks",
                "backoff_base_ms, timeout_seconds and concurrency must be above 0".into(),
            ));
        }
        if let Some(key) = &self.notify_key {
            super::sign::secret_bytes(key).map_err(|e| ("webhooks.notify_key", e))?;
            if self.notify_key_file.is_some() {
                return Err((
                    "webhooks.notify_key",
                    "set notify_key or notify_key_file, not both".into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.subscriptions {
            let ok_name = !s.name.is_empty()
                && s.name.len() <= 32
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok_name || !names.insert(s.name.as_str()) {
                return Err((
                    "webhooks.subscriptions.name",
                    format!("{:?}: 1-32 of a-z, 0-9, -, unique", s.name),
                ));
            }
            crate::fetch::check_url(&s.url, true)
                .map_err(|e| ("webhooks.subscriptions.url", format!("{}: {e}", s.name)))?;
            super::sign::secret_bytes(&s.secret)
                .map_err(|e| ("webhooks.subscriptions.secret", format!("{}: {e}", s.name)))?;
            if let Some(bad) = s
                .events
                .iter()
                .find(|e| !super::policy::EVENT_TYPES.contains(&e.as_str()))
            {
                return Err((
                    "webhooks.subscriptions.events",
                    format!(
                        "{}: unknown event type {bad:?} (known: {})",
                        s.name,
                        super::policy::EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One source for the notify key: an inline key and a file could disagree.
    #[test]
    fn the_notify_key_comes_from_one_place() {
        let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let both = WebhookConfig {
            notify_key: Some(key.into()),
            notify_key_file: Some("/etc/reelay-identity/webhook-notify.key".into()),
            ..Default::default()
        };
        assert_eq!(both.validate().unwrap_err().0, "webhooks.notify_key");
        let inline = WebhookConfig {
            notify_key: Some(key.into()),
            ..Default::default()
        };
        assert!(inline.validate().is_ok());
        let file = WebhookConfig {
            notify_key_file: Some("/k".into()),
            ..Default::default()
        };
        assert!(file.validate().is_ok());
    }

    #[test]
    fn subscriptions_are_checked() {
        let sub = |name: &str, secret: &str, events: &[&str]| WebhookConfig {
            subscriptions: vec![Subscription {
                name: name.into(),
                url: "https://hooks.example.com/x".into(),
                secret: secret.into(),
                events: events.iter().map(|e| e.to_string()).collect(),
            }],
            ..WebhookConfig::default()
        };
        let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert!(sub("ops", good, &["job.failed"]).validate().is_ok());
        assert!(sub("Ops!", good, &[]).validate().is_err());
        assert!(sub("ops", "nope", &[]).validate().is_err());
        assert!(sub("ops", good, &["job.exploded"]).validate().is_err());
    }
}
