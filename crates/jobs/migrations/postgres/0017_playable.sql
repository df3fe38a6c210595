-- Progressive HLS (issue 13): when a split job's HLS outputs first became playable (its first
-- ranges and its audio encoded), in ms since the epoch; NULL until then, and for every job
-- that is not split or has no HLS output.
ALTER TABLE jobs ADD COLUMN playable_at BIGINT;

-- Split-and-stitch (issue 13): whether admission split the job and, if not, why (the job view's
-- `split`, JSON written by the api and stored verbatim); NULL for jobs made before.
ALTER TABLE jobs ADD COLUMN split_json TEXT;
