-- The job event log and outbox: one row per change of a job's status (created, queued, running,
-- succeeded, failed, cancelled), written in the same transaction as the change. `seq` numbers a
-- job's events 1, 2, 3, ... (SSE event ids); `id` orders all events of the cluster (the cursor of
-- an outbox reader such as webhook delivery). Existing jobs get one event with their status.
CREATE TABLE job_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    payload TEXT    NOT NULL,
    UNIQUE (job_id, seq)
);

INSERT INTO job_events (job_id, seq, kind, at, payload)
SELECT id, 1, status, COALESCE(finished_at, started_at, created_at),
       '{"status":"' || status || '"}'
FROM jobs ORDER BY id;
