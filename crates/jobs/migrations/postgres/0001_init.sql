-- The Postgres twin of migrations/sqlite/0001_init.sql: same tables, columns and indexes, so both
-- backends behave the same. Jobs are what users asked for; tasks are the units workers claim.
--
-- Ids use the "C" collation because listing pages with `id < cursor ORDER BY id DESC` and
-- claiming breaks ties by id: a locale collation would order them differently from SQLite's
-- byte order (and from creation order). Times are BIGINT milliseconds written by the caller,
-- like SQLite's INTEGER columns, rather than timestamptz. attempts/max_attempts are BIGINT so
-- any u32 the api accepts fits, as it does in SQLite.

CREATE TABLE jobs (
    id                TEXT COLLATE "C" PRIMARY KEY,
    cluster           TEXT             NOT NULL,
    status            TEXT             NOT NULL
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress          DOUBLE PRECISION NOT NULL DEFAULT 0,
    attempts          BIGINT           NOT NULL DEFAULT 0,
    max_attempts      BIGINT           NOT NULL,
    priority          INTEGER          NOT NULL DEFAULT 0,
    spec_json         TEXT             NOT NULL,
    spec_hash         TEXT             NOT NULL,
    input_key         TEXT,
    input_url         TEXT,
    idempotency_key   TEXT,
    owner             TEXT,
    estimated_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at        BIGINT           NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    error_code        TEXT,
    error_message     TEXT,
    -- TEXT rather than JSONB: stored and returned byte for byte, as in SQLite.
    outputs           TEXT             NOT NULL DEFAULT '[]',
    cancel_requested  BOOLEAN          NOT NULL DEFAULT FALSE
);

-- Also the arbiter of `INSERT ... ON CONFLICT DO NOTHING` in create_job.
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (cluster, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Listing is newest first, optionally filtered by status.
CREATE INDEX jobs_status_id ON jobs (status, id);

CREATE TABLE tasks (
    id               TEXT COLLATE "C" PRIMARY KEY,
    job_id           TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- Copied from the job so that claiming never needs a join.
    priority         INTEGER NOT NULL DEFAULT 0,
    created_at       BIGINT  NOT NULL,
    run_after        BIGINT  NOT NULL,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    max_attempts     BIGINT  NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT
);

CREATE INDEX tasks_job_id ON tasks (job_id);

-- Claim order: highest priority first, then oldest.
CREATE INDEX tasks_claim_order ON tasks (status, priority DESC, created_at, id);
