-- Remote claim (issue 16): which cluster ran the task's latest attempt (`ran_on`, set by every
-- claim: the job's own cluster, or the peer whose worker claimed it), and the peer it was ever
-- handed to (`moved_to`, set once by a peer's claim and never cleared), so a task moves at most
-- once: a peer claim skips any task whose `moved_to` is set. NULL for tasks claimed before.
ALTER TABLE tasks ADD COLUMN ran_on TEXT;
ALTER TABLE tasks ADD COLUMN moved_to TEXT;
