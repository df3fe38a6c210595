-- Fair turns between owners among tasks of equal priority. Each task gets a sequence number when
-- its job is created: one past its owner's previous task, but never below the head of the queue
-- (the lowest number still queued, or the highest number ever given when nothing is queued).
-- Claiming in (priority, fair_seq, created_at) order then serves owners round robin: a burst of
-- one owner's jobs takes consecutive numbers, while another owner's next job is numbered from
-- the head and runs within a round.
--
-- The owner is copied from the job ('' for none) so that claiming and numbering never need a
-- join. Tasks from before this migration get 0: they keep their order among themselves.
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN fair_seq INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET owner = COALESCE((SELECT owner FROM jobs WHERE jobs.id = tasks.job_id), '');

DROP INDEX tasks_claim_order;
CREATE INDEX tasks_claim_order ON tasks (status, priority DESC, fair_seq, created_at, id);
-- An owner's last number, the head of the queue, the highest number given.
CREATE INDEX tasks_owner_seq ON tasks (owner, fair_seq);
CREATE INDEX tasks_status_seq ON tasks (status, fair_seq);
CREATE INDEX tasks_seq ON tasks (fair_seq);
