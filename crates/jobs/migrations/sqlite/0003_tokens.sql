-- API tokens. Only a SHA-256 hash of each token's secret is kept; the secret itself is shown
-- once, when the token is created. Rows are never deleted: a revoked token keeps its row (and
-- so the cluster stays in "tokens exist, authentication required" mode).
CREATE TABLE api_tokens (
    id           TEXT    PRIMARY KEY NOT NULL,
    name         TEXT    NOT NULL,
    secret_hash  TEXT    NOT NULL,
    -- Space-separated scope words (submit, read, admin).
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

-- A token lists only its own jobs, newest first.
CREATE INDEX jobs_owner_id ON jobs (owner, id);
