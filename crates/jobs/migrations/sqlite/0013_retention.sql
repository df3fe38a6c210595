-- Retention and delete (issue 15 part 3). A deleted job stays as a tombstone: its row, status
-- and events are kept (so a repeated DELETE and the job's history still answer), `deleted_at`
-- says when its objects were removed and its outputs are emptied. `inputs_deleted_at`: the
-- input objects alone were removed (inputs expire sooner than outputs after a success).
-- `purge_lease_until`: a sweeper replica claimed the job's clean-up until then, so replicas
-- do not all delete the same objects at once (the deletes are idempotent either way).
ALTER TABLE jobs ADD COLUMN deleted_at INTEGER;
ALTER TABLE jobs ADD COLUMN inputs_deleted_at INTEGER;
ALTER TABLE jobs ADD COLUMN purge_lease_until INTEGER NOT NULL DEFAULT 0;

-- The sweeper's scan: finished jobs not yet deleted, oldest first.
CREATE INDEX jobs_retention ON jobs (finished_at) WHERE deleted_at IS NULL AND finished_at IS NOT NULL;
