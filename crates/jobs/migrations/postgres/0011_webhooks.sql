-- Webhook deliveries, attempts and the outbox cursor: see the SQLite migration of the same number.
CREATE TABLE webhook_deliveries (
    id          TEXT COLLATE "C" PRIMARY KEY,
    job_id      TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    endpoint    TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    event_id    BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending',
    attempts    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    next_at     BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    UNIQUE (job_id, endpoint, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);

-- Every delivery attempt: HTTP status (NULL when none came), latency, error.
CREATE TABLE webhook_attempts (
    delivery_id TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    n           BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status_code BIGINT,
    latency_ms  BIGINT NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, n)
);

-- How far the dispatchers have read the outbox (one row; replicas move it forward only).
CREATE TABLE webhook_cursor (
    name    TEXT    PRIMARY KEY,
    last_id BIGINT NOT NULL
);

-- A cluster that already has events starts delivering from now, not from its whole history.
INSERT INTO webhook_cursor (name, last_id) SELECT 'outbox', COALESCE(MAX(id), 0) FROM job_events;
