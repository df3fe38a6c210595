-- Tasks become the unit of work of a job that may have many (issue 13): see the SQLite
-- migration of the same number for the meaning of each column. Existing tasks (one 'transcode'
-- task per job) take their job's estimate as weight, its progress and, when they succeeded, its
-- outputs: they keep working unchanged.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('blocked', 'queued', 'running', 'succeeded', 'failed', 'cancelled'));

ALTER TABLE tasks
    ADD COLUMN payload       TEXT             NOT NULL DEFAULT '{}',
    ADD COLUMN depends_on    TEXT             NOT NULL DEFAULT '[]',
    ADD COLUMN weight        DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN position      BIGINT           NOT NULL DEFAULT 0,
    ADD COLUMN progress      DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN error_code    TEXT,
    ADD COLUMN error_message TEXT,
    ADD COLUMN outputs       TEXT;

UPDATE tasks SET weight = jobs.estimated_seconds, progress = jobs.progress,
    outputs = CASE WHEN tasks.status = 'succeeded' THEN jobs.outputs END
FROM jobs WHERE jobs.id = tasks.job_id;

DROP INDEX tasks_job_id;
CREATE INDEX tasks_job_id ON tasks (job_id, position, id);
DROP INDEX tasks_claim_order;
CREATE INDEX tasks_claim_order ON tasks (status, priority DESC, fair_seq, position, created_at, id);
