-- The job event log and outbox: see the SQLite migration of the same number.
CREATE TABLE job_events (
    id      BIGSERIAL        PRIMARY KEY,
    job_id  TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     BIGINT           NOT NULL,
    kind    TEXT             NOT NULL,
    at      BIGINT           NOT NULL,
    payload TEXT             NOT NULL,
    UNIQUE (job_id, seq)
);

INSERT INTO job_events (job_id, seq, kind, at, payload)
SELECT id, 1, status, COALESCE(finished_at, started_at, created_at),
       '{"status":"' || status || '"}'
FROM jobs ORDER BY id;
