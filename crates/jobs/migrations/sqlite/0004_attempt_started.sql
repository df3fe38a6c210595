-- When the current attempt of a running task was claimed. `jobs.started_at` keeps the first
-- attempt's start (what users see); load reporting needs the current one to estimate how long a
-- running job has left.
ALTER TABLE tasks ADD COLUMN claimed_at INTEGER;
