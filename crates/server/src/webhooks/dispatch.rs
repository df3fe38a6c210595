//! The dispatcher every api replica runs: reads the job-events outbox into delivery rows, then
//! claims due deliveries (a lease, like tasks) and makes their HTTP attempts, each in its own
//! task so a slow receiver holds one slot and never the others.
//!
//! Replicas need no coordination: making rows is idempotent (one row per event and endpoint),
//! claiming is a compare-and-set on the lease, and an attempt counts only while its lease is
//! held. In Postgres an outbox id can commit after a higher one, so the last seconds are read
//! again and the (job, seq) pairs already handled are skipped.

use super::policy::{self, Target};
use super::sign;
use crate::config::Config;
use crate::view;
use reelay_jobs::{
    now_millis, AttemptOutcome, Delivery, DeliveryAttempt, JobEvent, JobStore, NewDelivery,
    StoreError,
};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How far back the outbox is read again (ids that committed late).
const REREAD: Duration = Duration::from_secs(5);
/// Outbox rows read per query.
const PAGE: u32 = 500;

/// The key owners' notify secrets derive from: the configured one, else the one in
/// `notify_key_file` (default `<data_dir>/webhook-notify.key`), generated there once if missing
/// (mode 0600).
pub fn load_notify_key(cfg: &Config) -> Result<Vec<u8>, String> {
    if let Some(key) = &cfg.webhooks.notify_key {
        return sign::secret_bytes(key);
    }
    let path = cfg
        .webhooks
        .notify_key_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("webhook-notify.key"));
    match std::fs::read_to_string(&path) {
        Ok(text) => sign::secret_bytes(text.trim()).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(&path),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes a new key to a file of its own, then links it into place: several processes
/// (a cluster's api and workers, or every cluster of `reelay up`) start at once, and one that
/// loses the race must read the winner's whole key, never a file still being written.
fn create_key(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut key = vec![0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| format!("random key: {e}"))?;
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).map_err(|e| format!("random name: {e}"))?;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(sign::secret_of(&key).as_bytes())?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(at)?;
            sign::secret_bytes(text.trim()).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => Err(at(e)),
    }
}

pub struct Dispatcher {
    store: Arc<dyn JobStore>,
    cfg: Arc<Config>,
    client: reqwest::Client,
    notify_key: Arc<Vec<u8>>,
    owner: String,
    permits: Arc<Semaphore>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn JobStore>,
        cfg: Arc<Config>,
        notify_key: Arc<Vec<u8>>,
    ) -> Result<Dispatcher, reqwest::Error> {
        let client = crate::fetch::guarded_client_builder(cfg.allow_private_urls)
            // A receiver answers; it does not send us elsewhere (a 3xx is a failed attempt).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(cfg.webhooks.timeout_seconds))
            .build()?;
        Ok(Dispatcher {
            permits: Arc::new(Semaphore::new(cfg.webhooks.concurrency)),
            store,
            cfg,
            client,
            notify_key,
            owner: format!("hooks-{}", ulid::Ulid::new()),
        })
    }

    /// Until `stop`: outbox → deliveries → attempts, every `poll_ms`.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let mut reader = OutboxReader::default();
        let poll = Duration::from_millis(this.cfg.webhooks.poll_ms.max(10));
        loop {
            if let Err(e) = this.scan(&mut reader).await {
                tracing::warn!(error = %e, "webhooks: reading the job events failed; retrying");
            }
            if let Err(e) = this.deliver_due().await {
                tracing::warn!(error = %e, "webhooks: claiming deliveries failed; retrying");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn scan(&self, reader: &mut OutboxReader) -> Result<(), StoreError> {
        if reader.cursor.is_none() {
            reader.cursor = Some(self.store.webhook_cursor().await?);
        }
        let now = Instant::now();
        let mut from = reader.start(now);
        loop {
            let events = self.store.events_after(from, PAGE).await?;
            let Some(last) = events.last().map(|e| e.id) else {
                break;
            };
            let mut rows = Vec::new();
            for e in &events {
                if reader.seen(e, now) {
                    continue;
                }
                rows.extend(self.deliveries_of(e).await?);
            }
            if !rows.is_empty() {
                self.store.enqueue_deliveries(rows).await?;
            }
            for e in &events {
                reader.handled(e, now);
            }
            from = last;
            if events.len() < PAGE as usize {
                break;
            }
        }
        let cursor = reader.cursor.unwrap_or(0);
        if cursor > 0 {
            self.store.advance_webhook_cursor(cursor).await?;
        }
        Ok(())
    }

    /// The rows one outbox event makes: one per endpoint that wants its type.
    async fn deliveries_of(&self, e: &JobEvent) -> Result<Vec<NewDelivery>, StoreError> {
        let Some(kind) = policy::event_type(&e.kind) else {
            return Ok(Vec::new());
        };
        let subs = &self.cfg.webhooks.subscriptions;
        // Only the job's spec knows its notify URLs: skip the read when nothing could match.
        let Some(job) = self.store.get_job(&e.job_id).await? else {
            return Ok(Vec::new());
        };
        let notify: Vec<String> = serde_json::from_str::<reelay_protocol::JobSpec>(&job.spec_json)
            .map(|s| s.notify.into_iter().map(|n| n.url).collect())
            .unwrap_or_default();
        let targets = policy::targets(kind, &notify, subs);
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!({
            "type": kind,
            "timestamp": view::rfc3339(e.at),
            "data": view::job_view(&job),
        })
        .to_string();
        Ok(targets
            .into_iter()
            .map(|Target { endpoint, url }| NewDelivery {
                id: policy::message_id(&job.cluster, e.id, &endpoint),
                job_id: e.job_id.clone(),
                endpoint,
                url,
                event_id: e.id,
                seq: e.seq,
                kind: kind.to_string(),
                body: body.clone(),
            })
            .collect())
    }

    async fn deliver_due(self: &Arc<Self>) -> Result<(), StoreError> {
        let free = self.permits.available_permits().min(64) as u32;
        if free == 0 {
            return Ok(());
        }
        let lease = Duration::from_secs(self.cfg.webhooks.timeout_seconds + 30);
        let due = self
            .store
            .claim_deliveries(&self.owner, lease, now_millis(), free)
            .await?;
        for d in due {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                this.attempt(d).await;
            });
        }
        Ok(())
    }

    /// One try of one delivery, recorded whatever happens.
    async fn attempt(&self, d: Delivery) {
        let at = now_millis();
        let started = Instant::now();
        let (status_code, error) = match self.send(&d).await {
            Ok(code) if (200..300).contains(&code) => (Some(code), None),
            Ok(code) => (Some(code), Some(format!("HTTP {code}"))),
            Err(e) => (None, Some(e)),
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        let outcome = match error {
            None => AttemptOutcome::Delivered,
            Some(_) => {
                policy::after_failure(d.attempts, d.created_at, now_millis(), &self.cfg.webhooks)
            }
        };
        tracing::info!(delivery = %d.id, job_id = %d.job_id, endpoint = %d.endpoint,
            attempt = d.attempts, status = ?status_code, latency_ms, outcome = ?outcome,
            "webhook attempt");
        let attempt = DeliveryAttempt {
            delivery_id: d.id.clone(),
            n: d.attempts,
            at,
            status_code,
            latency_ms,
            error: error.map(|e| e.chars().take(500).collect()),
        };
        if let Err(e) = self
            .store
            .record_attempt(&self.owner, attempt, outcome)
            .await
        {
            tracing::warn!(delivery = %d.id, error = %e, "webhooks: recording an attempt failed; the lease expires and it is tried again");
        }
    }

    /// Signs and posts; the receiver's status, or why none came.
    async fn send(&self, d: &Delivery) -> Result<u16, String> {
        let key = self.key_of(d).await?;
        let url = crate::fetch::check_url(&d.url, self.cfg.allow_private_urls)
            .map_err(|e| e.to_string())?;
        let ts = now_millis() / 1000;
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                sign::signature(&key, &d.id, ts, &d.body),
            )
            .body(d.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        // The body is never read: nothing in it matters, and a receiver cannot make us wait.
        Ok(resp.status().as_u16())
    }

    async fn key_of(&self, d: &Delivery) -> Result<Vec<u8>, String> {
        if let Some(name) = d.endpoint.strip_prefix("sub:") {
            let sub = self
                .cfg
                .webhooks
                .subscriptions
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| format!("subscription {name:?} is no longer configured"))?;
            return sign::secret_bytes(&sub.secret);
        }
        let job = self
            .store
            .get_job(&d.job_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the job no longer exists")?;
        let secret = sign::owner_secret(&self.notify_key, job.owner.as_deref().unwrap_or(""));
        sign::secret_bytes(&secret)
    }
}

/// A transport error without the URL (which may hold the receiver's path secrets).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

/// Where the outbox is read from: the cursor, and the (job, seq) pairs handled in the last
/// [`REREAD`], so a re-read skips them.
#[derive(Default)]
struct OutboxReader {
    cursor: Option<i64>,
    /// (when, the cursor then): the oldest within REREAD is where a read starts.
    marks: VecDeque<(Instant, i64)>,
    handled: HashMap<(String, i64), Instant>,
}

impl OutboxReader {
    fn start(&mut self, now: Instant) -> i64 {
        let cursor = self.cursor.unwrap_or(0);
        self.marks.push_back((now, cursor));
        while self.marks.len() > 1 && now.duration_since(self.marks[0].0) > REREAD {
            self.marks.pop_front();
        }
        self.handled
            .retain(|_, at| now.duration_since(*at) <= REREAD * 2);
        self.marks[0].1
    }

    fn seen(&self, e: &JobEvent, _now: Instant) -> bool {
        self.handled.contains_key(&(e.job_id.clone(), e.seq))
    }

    fn handled(&mut self, e: &JobEvent, now: Instant) {
        self.handled.insert((e.job_id.clone(), e.seq), now);
        self.cursor = Some(self.cursor.unwrap_or(0).max(e.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes that start together agree on one key: every racer gets the winner's whole
    /// key, and the file holds it.
    #[test]
    fn racing_processes_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook-notify.key");
        let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8).map(|_| s.spawn(|| create_key(&path))).collect();
            racers
                .into_iter()
                .map(|r| r.join().unwrap().unwrap())
                .collect()
        });
        assert!(keys.iter().all(|k| k == &keys[0] && k.len() == 32));
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(sign::secret_bytes(on_disk.trim()).unwrap(), keys[0]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// `notify_key_file` is read (or made) where it says, not in the data directory.
    #[test]
    fn the_key_file_setting_is_where_the_key_lives() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared.key");
        let mut a = Config {
            data_dir: dir.path().join("a"),
            ..Default::default()
        };
        a.webhooks.notify_key_file = Some(shared.clone());
        let b = Config {
            data_dir: dir.path().join("b"),
            ..a.clone()
        };
        let first = load_notify_key(&a).unwrap();
        assert_eq!(load_notify_key(&b).unwrap(), first);
        assert!(shared.exists());
        assert!(!a.data_dir.join("webhook-notify.key").exists());
    }
}
