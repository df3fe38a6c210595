-- Job context (issue 15 part 4). `input_name`: what the caller calls the input (the uploaded
-- file's name, or the last segment of its URL or key), cleaned, known at submission.
-- `input_facts`: JSON of what probing the input found (size, duration, picture size, codecs),
-- written once a worker (or admission, for multipart uploads) has probed it; NULL before.
ALTER TABLE jobs ADD COLUMN input_name TEXT;
ALTER TABLE jobs ADD COLUMN input_facts TEXT;

-- The caller's `metadata` key/values, one row each, for `GET /v1/jobs?metadata.<key>=<value>`.
-- The job view reads them from the stored spec; this table exists to be filtered on.
CREATE TABLE job_metadata (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE INDEX job_metadata_lookup ON job_metadata (key, value, job_id);
