-- Webhook deliveries: one row per (job event, endpoint), made from the job_events outbox by any
-- api replica (INSERT ... ON CONFLICT DO NOTHING, so replicas and re-reads never duplicate one).
-- `id` is the Standard Webhooks `webhook-id`, stable across retries and redeliveries. A replica
-- claims a due row with a lease (`lease_owner`, `lease_until`) like a task; a row waits while an
-- earlier (lower `seq`) row of the same job and endpoint is still pending, so events arrive in
-- order per job per endpoint. `state`: pending, delivered, failed (gave up).
CREATE TABLE webhook_deliveries (
    id          TEXT    PRIMARY KEY,
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    endpoint    TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    event_id    INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    next_at     INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    UNIQUE (job_id, endpoint, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);

-- Every delivery attempt: HTTP status (NULL when none came), latency, error.
CREATE TABLE webhook_attempts (
    delivery_id TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    n           INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, n)
);

-- How far the dispatchers have read the outbox (one row; replicas move it forward only).
CREATE TABLE webhook_cursor (
    name    TEXT    PRIMARY KEY,
    last_id INTEGER NOT NULL
);

-- A cluster that already has events starts delivering from now, not from its whole history.
INSERT INTO webhook_cursor (name, last_id) SELECT 'outbox', COALESCE(MAX(id), 0) FROM job_events;
