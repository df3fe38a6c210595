-- Jobs are what users asked for; tasks are the units workers claim. Today each job has exactly one
-- task of kind 'transcode', but they are kept apart so a job can later be split into segment tasks.

CREATE TABLE jobs (
    id                TEXT    PRIMARY KEY NOT NULL,
    cluster           TEXT    NOT NULL,
    status            TEXT    NOT NULL
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress          REAL    NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    spec_json         TEXT    NOT NULL,
    spec_hash         TEXT    NOT NULL,
    input_key         TEXT,
    input_url         TEXT,
    idempotency_key   TEXT,
    owner             TEXT,
    estimated_seconds REAL    NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    error_code        TEXT,
    error_message     TEXT,
    outputs           TEXT    NOT NULL DEFAULT '[]',
    cancel_requested  INTEGER NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (cluster, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Listing is newest first, optionally filtered by status.
CREATE INDEX jobs_status_id ON jobs (status, id);

CREATE TABLE tasks (
    id               TEXT    PRIMARY KEY NOT NULL,
    job_id           TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- Copied from the job so that claiming never needs a join.
    priority         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    run_after        INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER
);

CREATE INDEX tasks_job_id ON tasks (job_id);

-- Claim order: highest priority first, then oldest.
CREATE INDEX tasks_claim_order ON tasks (status, priority DESC, created_at, id);
