-- The Postgres twin of migrations/sqlite/0007_fair_claims.sql: per-owner sequence numbers that
-- make owners of equal priority take turns in the claim order.
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN fair_seq BIGINT NOT NULL DEFAULT 0;
UPDATE tasks SET owner = COALESCE(jobs.owner, '') FROM jobs WHERE jobs.id = tasks.job_id;

DROP INDEX tasks_claim_order;
CREATE INDEX tasks_claim_order ON tasks (status, priority DESC, fair_seq, created_at, id);
CREATE INDEX tasks_owner_seq ON tasks (owner, fair_seq);
CREATE INDEX tasks_status_seq ON tasks (status, fair_seq);
CREATE INDEX tasks_seq ON tasks (fair_seq);
