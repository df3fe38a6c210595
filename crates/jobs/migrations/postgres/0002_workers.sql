-- Live workers and their job slots, so any api replica can report the cluster's capacity.
CREATE TABLE workers (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    slots BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX workers_expires ON workers (expires_at);
