-- Idempotency keys belong to the owner that used them: unique per (cluster, owner, key) instead of
-- per (cluster, key), so one tenant can neither take another's key nor find out that it was used.
-- Jobs without an owner (open mode) form one key space of their own ('' cannot be a token id).
-- Existing rows satisfy the new index: the old one was stricter.
DROP INDEX jobs_idempotency_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (cluster, COALESCE(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
