-- The Postgres twin of migrations/sqlite/0004_attempt_started.sql: when the current attempt of a
-- running task was claimed and when its worker expects to finish, for estimating how long
-- running jobs have left.
ALTER TABLE tasks ADD COLUMN claimed_at BIGINT;
ALTER TABLE tasks ADD COLUMN eta_at BIGINT;
ALTER TABLE workers ADD COLUMN speed DOUBLE PRECISION;
