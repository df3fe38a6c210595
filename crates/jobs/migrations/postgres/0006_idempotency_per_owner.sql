-- The Postgres twin of migrations/sqlite/0006_idempotency_per_owner.sql: idempotency keys are
-- unique per (cluster, owner, key); ownerless jobs share the owner ''. The index is also the
-- arbiter of create_job's `ON CONFLICT`, whose target names the same expressions.
DROP INDEX jobs_idempotency_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (cluster, (COALESCE(owner, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
