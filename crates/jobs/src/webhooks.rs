//! Webhook deliveries in the store: the rows the dispatcher makes from the job-events outbox,
//! claims with a lease, and records attempts on. The SQL is written once here for both back
//! ends (through [`crate::ops::Conn`]); the policy (which events go where, backoff, signing)
//! lives in the server's `webhooks` module.

use crate::model::Millis;
use crate::ops::Conn;
use crate::store::StoreError;
use std::time::Duration;

/// A delivery to make: one job event for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The `webhook-id`: stable for this event and endpoint (retries and redeliveries reuse it).
    pub id: String,
    pub job_id: String,
    /// Which endpoint of the job: `notify:<n>` (the spec's n-th) or `sub:<name>` (configured).
    pub endpoint: String,
    pub url: String,
    /// The outbox row ([`crate::JobEvent::id`]) and the job's event number.
    pub event_id: i64,
    pub seq: i64,
    /// The Standard Webhooks event type, e.g. `job.succeeded`.
    pub kind: String,
    /// The exact JSON body sent (and signed) on every attempt.
    pub body: String,
}

/// `pending` (waiting or being tried), `delivered` (a 2xx came), `failed` (gave up).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub job_id: String,
    pub endpoint: String,
    pub url: String,
    pub event_id: i64,
    pub seq: i64,
    pub kind: String,
    pub body: String,
    pub state: String,
    pub attempts: u32,
    pub created_at: Millis,
    pub next_at: Millis,
}

/// One recorded try.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub delivery_id: String,
    pub n: u32,
    pub at: Millis,
    /// The receiver's HTTP status; `None` when no answer came (refused, timed out).
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What an attempt's result does to its delivery (decided by the caller's policy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time.
    RetryAt(Millis),
    GaveUp,
}

/// The webhook rows of a store. A separate trait, required by [`crate::JobStore`] so one
/// `Arc<dyn JobStore>` serves the dispatcher.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    /// Inserts the deliveries that do not exist yet (same job, endpoint and seq: skipped), so
    /// any number of replicas and re-reads of the outbox make each delivery once. Returns how
    /// many were new.
    async fn enqueue_deliveries(&self, rows: Vec<NewDelivery>) -> Result<u64, StoreError>;

    /// Leases up to `limit` due pending deliveries to `owner` for `lease`: next_at <= now, no
    /// live lease, and no earlier pending delivery of the same job and endpoint (order per job
    /// per endpoint). Counts the attempt.
    async fn claim_deliveries(
        &self,
        owner: &str,
        lease: Duration,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Records an attempt and applies its outcome, only while `owner` holds the lease (false
    /// otherwise: someone else took it over, nothing changed).
    async fn record_attempt(
        &self,
        owner: &str,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError>;

    /// A job's deliveries (by seq, then endpoint) with their attempts (oldest first).
    async fn job_deliveries(
        &self,
        job_id: &str,
    ) -> Result<Vec<(Delivery, Vec<DeliveryAttempt>)>, StoreError>;

    /// Makes a delivery of `job_id` pending and due now again (by hand); false if there is no
    /// such delivery of that job.
    async fn redeliver(&self, job_id: &str, id: &str, now: Millis) -> Result<bool, StoreError>;

    /// The outbox cursor of the dispatchers (0 before the first read).
    async fn webhook_cursor(&self) -> Result<i64, StoreError>;

    /// Moves the cursor forward to `last_id` (never back).
    async fn advance_webhook_cursor(&self, last_id: i64) -> Result<(), StoreError>;
}

pub(crate) const DELIVERY_COLUMNS: &str = "id, job_id, endpoint, url, event_id, seq, kind, body, \
     state, attempts, created_at, next_at";
pub(crate) const ATTEMPT_COLUMNS: &str = "delivery_id, n, at, status_code, latency_ms, error";

pub(crate) async fn enqueue(
    db: &mut dyn Conn,
    rows: Vec<NewDelivery>,
    now: Millis,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for r in rows {
        n += db
            .exec(
                "INSERT INTO webhook_deliveries (id, job_id, endpoint, url, event_id, seq, kind, \
                 body, state, attempts, created_at, next_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $9) \
                 ON CONFLICT DO NOTHING",
                crate::ops::args![
                    r.id, r.job_id, r.endpoint, r.url, r.event_id, r.seq, r.kind, r.body, now
                ],
            )
            .await?;
    }
    Ok(n)
}

pub(crate) async fn claim(
    db: &mut dyn Conn,
    owner: &str,
    lease: Duration,
    now: Millis,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    let candidates = db
        .deliveries(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                 WHERE state = 'pending' AND next_at <= $1 \
                   AND (lease_until IS NULL OR lease_until < $1) \
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e \
                       WHERE e.job_id = d.job_id AND e.endpoint = d.endpoint \
                         AND e.seq < d.seq AND e.state = 'pending') \
                 ORDER BY next_at, event_id LIMIT $2"
            ),
            crate::ops::args![now, i64::from(limit)],
        )
        .await?;
    let until = crate::ops::millis_after(now, lease);
    let mut claimed = Vec::new();
    for mut d in candidates {
        // Compare-and-set: a concurrent claimer that got there first leaves 0 rows changed.
        let changed = db
            .exec(
                "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2, \
                 attempts = attempts + 1 \
                 WHERE id = $3 AND state = 'pending' AND (lease_until IS NULL OR lease_until < $4)",
                crate::ops::args![owner, until, &d.id, now],
            )
            .await?;
        if changed == 1 {
            d.attempts += 1;
            claimed.push(d);
        }
    }
    Ok(claimed)
}

pub(crate) async fn record(
    db: &mut dyn Conn,
    owner: &str,
    a: DeliveryAttempt,
    outcome: AttemptOutcome,
) -> Result<bool, StoreError> {
    let (state, next_at) = match outcome {
        AttemptOutcome::Delivered => ("delivered", None),
        AttemptOutcome::RetryAt(at) => ("pending", Some(at)),
        AttemptOutcome::GaveUp => ("failed", None),
    };
    let changed = db
        .exec(
            "UPDATE webhook_deliveries SET state = $1, next_at = COALESCE($2, next_at), \
             lease_owner = NULL, lease_until = NULL \
             WHERE id = $3 AND lease_owner = $4 AND state = 'pending'",
            crate::ops::args![state, next_at, &a.delivery_id, owner],
        )
        .await?;
    if changed == 0 {
        return Ok(false);
    }
    db.exec(
        "INSERT INTO webhook_attempts (delivery_id, n, at, status_code, latency_ms, error) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        crate::ops::args![
            &a.delivery_id,
            i64::from(a.n),
            a.at,
            a.status_code.map(i64::from),
            a.latency_ms,
            a.error.as_deref().map(crate::ops::clean_text)
        ],
    )
    .await?;
    Ok(true)
}

pub(crate) async fn of_job(
    db: &mut dyn Conn,
    job_id: &str,
) -> Result<Vec<(Delivery, Vec<DeliveryAttempt>)>, StoreError> {
    let deliveries = db
        .deliveries(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = $1 \
                 ORDER BY seq, endpoint"
            ),
            crate::ops::args![job_id],
        )
        .await?;
    let attempts = db
        .attempts(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id IN \
                 (SELECT id FROM webhook_deliveries WHERE job_id = $1) ORDER BY delivery_id, n"
            ),
            crate::ops::args![job_id],
        )
        .await?;
    Ok(deliveries
        .into_iter()
        .map(|d| {
            let mine = attempts
                .iter()
                .filter(|a| a.delivery_id == d.id)
                .cloned()
                .collect();
            (d, mine)
        })
        .collect())
}

pub(crate) async fn redeliver(
    db: &mut dyn Conn,
    job_id: &str,
    id: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    Ok(db
        .exec(
            "UPDATE webhook_deliveries SET state = 'pending', next_at = $1, created_at = $1, lease_owner = NULL, \
             lease_until = NULL WHERE id = $2 AND job_id = $3",
            crate::ops::args![now, id, job_id],
        )
        .await?
        == 1)
}

pub(crate) async fn cursor(db: &mut dyn Conn) -> Result<i64, StoreError> {
    Ok(db
        .int(
            "SELECT last_id FROM webhook_cursor WHERE name = 'outbox'",
            vec![],
        )
        .await?
        .unwrap_or(0))
}

pub(crate) async fn advance(db: &mut dyn Conn, last_id: i64) -> Result<(), StoreError> {
    let greatest = db.dialect().greatest;
    db.exec(
        &format!(
            "INSERT INTO webhook_cursor (name, last_id) VALUES ('outbox', $1) \
             ON CONFLICT (name) DO UPDATE SET last_id = {greatest}(webhook_cursor.last_id, $1)"
        ),
        crate::ops::args![last_id],
    )
    .await?;
    Ok(())
}

/// `impl WebhookStore for $store` over its `$wrapper` [`Conn`], the same for every back end.
macro_rules! webhook_store_impl {
    ($store:ty, $wrapper:ident) => {
        #[async_trait::async_trait]
        impl crate::webhooks::WebhookStore for $store {
            async fn enqueue_deliveries(
                &self,
                rows: Vec<crate::webhooks::NewDelivery>,
            ) -> Result<u64, StoreError> {
                let now = crate::model::now_millis();
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::webhooks::enqueue(
                    db, rows, now
                ))
            }

            async fn claim_deliveries(
                &self,
                owner: &str,
                lease: std::time::Duration,
                now: crate::model::Millis,
                limit: u32,
            ) -> Result<Vec<crate::webhooks::Delivery>, StoreError> {
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::webhooks::claim(
                    db, owner, lease, now, limit
                ))
            }

            async fn record_attempt(
                &self,
                owner: &str,
                attempt: crate::webhooks::DeliveryAttempt,
                outcome: crate::webhooks::AttemptOutcome,
            ) -> Result<bool, StoreError> {
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::webhooks::record(
                    db, owner, attempt, outcome
                ))
            }

            async fn job_deliveries(
                &self,
                job_id: &str,
            ) -> Result<
                Vec<(
                    crate::webhooks::Delivery,
                    Vec<crate::webhooks::DeliveryAttempt>,
                )>,
                StoreError,
            > {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::webhooks::of_job(
                    db, job_id
                ))
            }

            async fn redeliver(
                &self,
                job_id: &str,
                id: &str,
                now: crate::model::Millis,
            ) -> Result<bool, StoreError> {
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::webhooks::redeliver(
                    db, job_id, id, now
                ))
            }

            async fn webhook_cursor(&self) -> Result<i64, StoreError> {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::webhooks::cursor(db))
            }

            async fn advance_webhook_cursor(&self, last_id: i64) -> Result<(), StoreError> {
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::webhooks::advance(
                    db, last_id
                ))
            }
        }
    };
}
pub(crate) use webhook_store_impl;
