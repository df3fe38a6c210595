-- Tasks become the unit of work of a job that may have many (issue 13): each has a kind and a
-- JSON payload, the tasks it waits for (`depends_on`, a JSON array of task ids; a task is
-- 'blocked' until they all succeeded), its own progress, weight (expected encode seconds, for the
-- job's weighted progress and the load report), position (earlier pieces first), error and
-- outputs (JSON). SQLite cannot change a CHECK constraint, so the table is rebuilt.
--
-- Existing tasks (one 'transcode' task per job) take their job's estimate as weight, its
-- progress, and, when they succeeded, its outputs: they keep working unchanged.
CREATE TABLE tasks_new (
    id               TEXT    PRIMARY KEY NOT NULL,
    job_id           TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('blocked', 'queued', 'running', 'succeeded', 'failed',
                                       'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    run_after        INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    claimed_at       INTEGER,
    eta_at           INTEGER,
    owner            TEXT    NOT NULL DEFAULT '',
    fair_seq         INTEGER NOT NULL DEFAULT 0,
    payload          TEXT    NOT NULL DEFAULT '{}',
    depends_on       TEXT    NOT NULL DEFAULT '[]',
    weight           REAL    NOT NULL DEFAULT 0,
    position         INTEGER NOT NULL DEFAULT 0,
    progress         REAL    NOT NULL DEFAULT 0,
    error_code       TEXT,
    error_message    TEXT,
    outputs          TEXT
);

INSERT INTO tasks_new (id, job_id, kind, status, priority, created_at, run_after, attempts,
                       max_attempts, lease_owner, lease_expires_at, claimed_at, eta_at, owner,
                       fair_seq, weight, progress, outputs)
SELECT t.id, t.job_id, t.kind, t.status, t.priority, t.created_at, t.run_after, t.attempts,
       t.max_attempts, t.lease_owner, t.lease_expires_at, t.claimed_at, t.eta_at, t.owner,
       t.fair_seq, j.estimated_seconds, j.progress,
       CASE WHEN t.status = 'succeeded' THEN j.outputs END
FROM tasks t JOIN jobs j ON j.id = t.job_id;

DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;

-- A job's tasks in claim order.
CREATE INDEX tasks_job_id ON tasks (job_id, position, id);
-- Claim order: priority, the owners' turns, then position within a job, then age.
CREATE INDEX tasks_claim_order ON tasks (status, priority DESC, fair_seq, position, created_at, id);
CREATE INDEX tasks_owner_seq ON tasks (owner, fair_seq);
CREATE INDEX tasks_status_seq ON tasks (status, fair_seq);
CREATE INDEX tasks_seq ON tasks (fair_seq);
