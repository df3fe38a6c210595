-- Revoked signed tokens (rly2.…), by token id. A token is verified with the issuer's public
-- key on every cluster; this table is the per-cluster copy of the revocation list that the edge
-- keeps in step across clusters. `seq` orders rows for incremental reads; `recorded_at` lets a
-- reader re-check the last seconds (in Postgres, rows can commit out of `seq` order).
CREATE TABLE revocations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id    TEXT    NOT NULL UNIQUE,
    revoked_at  INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL
);

CREATE INDEX revocations_recorded_at ON revocations (recorded_at);
