-- The Postgres twin of migrations/sqlite/0004_attempt_started.sql: when the current attempt of a
-- running task was claimed, for estimating how long running jobs have left.
ALTER TABLE tasks ADD COLUMN claimed_at BIGINT;
