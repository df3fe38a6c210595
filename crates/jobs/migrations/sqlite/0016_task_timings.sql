-- Where a task's time went (issue 18): phase name -> seconds (JSON object), written with the
-- task's completion in the same transaction, so a succeeded task's view shows why it took what
-- it took. NULL for tasks finished before this column existed and for attempts that failed.
ALTER TABLE tasks ADD COLUMN timings TEXT;
