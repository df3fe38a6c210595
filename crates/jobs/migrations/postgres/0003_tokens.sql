-- The Postgres twin of migrations/sqlite/0003_tokens.sql. Only a SHA-256 hash of each token's
-- secret is kept; revoked tokens keep their row.
CREATE TABLE api_tokens (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT   NOT NULL,
    secret_hash  TEXT   NOT NULL,
    scopes       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE INDEX jobs_owner_id ON jobs (owner, id);
