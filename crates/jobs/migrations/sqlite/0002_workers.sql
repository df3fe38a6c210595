-- Live workers and their job slots, so any api replica can report the cluster's capacity.
CREATE TABLE workers (
    id TEXT PRIMARY KEY NOT NULL,
    slots INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX workers_expires ON workers (expires_at);
