-- For estimating how long a running job has left (`/v1/load`, which the edge places by): when
-- the current attempt was claimed (`jobs.started_at` keeps the first attempt's start, which is
-- what users see) and when its worker expects to finish, from ffmpeg's speed.
ALTER TABLE tasks ADD COLUMN claimed_at INTEGER;
ALTER TABLE tasks ADD COLUMN eta_at INTEGER;
-- Each worker's recent encode speed (media seconds per wall second), so queued work, which is
-- known in media seconds, can be reported in wall seconds.
ALTER TABLE workers ADD COLUMN speed REAL;
