-- Stolen tasks (issue 16): the peers' tasks a worker runs now, as JSON (`AwayTask`s), replaced
-- by every heartbeat and NULL when none, so the load report shows the slots they hold busy
-- although this cluster's tasks table has no row for them.
ALTER TABLE workers ADD COLUMN away TEXT;
