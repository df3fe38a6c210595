-- The Postgres twin of migrations/sqlite/0005_revocations.sql.
CREATE TABLE revocations (
    seq         BIGSERIAL PRIMARY KEY,
    token_id    TEXT COLLATE "C" NOT NULL UNIQUE,
    revoked_at  BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL
);

CREATE INDEX revocations_recorded_at ON revocations (recorded_at);
