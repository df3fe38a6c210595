-- Job context (issue 15 part 4): see the SQLite migration of the same number.
ALTER TABLE jobs ADD COLUMN input_name TEXT;
ALTER TABLE jobs ADD COLUMN input_facts TEXT;

CREATE TABLE job_metadata (
    job_id TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key    TEXT COLLATE "C" NOT NULL,
    value  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE INDEX job_metadata_lookup ON job_metadata (key, value, job_id);
