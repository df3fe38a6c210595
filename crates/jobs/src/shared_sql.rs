//! Statements both back ends run unchanged. SQLite accepts Postgres's `$N` placeholders, so
//! anything that needs no dialect-specific syntax is written once, here.

/// Slot-weighted encode speed of the live workers that know theirs; `$1` = now (ms).
pub(crate) const LIVE_SPEED: &str = "SELECT SUM(slots * speed) / SUM(slots) AS speed FROM workers \
     WHERE expires_at >= $1 AND speed IS NOT NULL AND slots > 0";

/// A worker's heartbeat: `$1` id, `$2` slots, `$3` expiry (ms), `$4` speed or NULL (keeps the
/// last known one), `$5` the peers' tasks it runs now (JSON [`crate::AwayTask`]s, NULL for
/// none; replaced by every beat).
pub(crate) const HEARTBEAT: &str = "INSERT INTO workers (id, slots, expires_at, speed, away) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO UPDATE SET slots = excluded.slots, \
     expires_at = excluded.expires_at, speed = COALESCE(excluded.speed, workers.speed), \
     away = excluded.away";

/// The live workers that run peers' tasks: `$1` = now.
pub(crate) const LIVE_AWAY: &str =
    "SELECT away, expires_at FROM workers WHERE expires_at >= $1 AND away IS NOT NULL";

/// Expired worker rows are only clutter: dropped an hour after expiry; `$1` = that cutoff.
pub(crate) const FORGET_OLD_WORKERS: &str = "DELETE FROM workers WHERE expires_at < $1";

/// The claim order of both probes (`t` is the task): priority, then the owners' turns (a job's
/// tasks share its turn), then position within the job (earlier pieces first), then age.
pub(crate) const CLAIM_ORDER: &str = "ORDER BY t.priority DESC, t.fair_seq ASC, t.position ASC, \
     t.created_at ASC, t.id ASC";

/// The turn number (`tasks.fair_seq`) of a new task of owner `$1` ('' for none): one past the
/// owner's last, but not below the head of the queue, which is the lowest number still queued,
/// or, with nothing queued, the highest number given (so past use is forgiven once the queue
/// has drained). `greatest` is the dialect's two-argument maximum (`MAX` in SQLite, `GREATEST`
/// in Postgres). Every lookup is one probe of an index from migration 0007.
pub(crate) fn next_fair_seq(greatest: &str) -> String {
    format!(
        "SELECT {greatest}(\
             COALESCE((SELECT MAX(fair_seq) + 1 FROM tasks WHERE owner = $1), 0), \
             COALESCE((SELECT MIN(fair_seq) FROM tasks WHERE status = 'queued'), \
                      (SELECT MAX(fair_seq) FROM tasks), 0)) AS seq"
    )
}

/// Records a revocation once: `$1` token id, `$2` revoked at, `$3` now (ms).
pub(crate) const ADD_REVOCATION: &str =
    "INSERT INTO revocations (token_id, revoked_at, recorded_at) \
     VALUES ($1, $2, $3) ON CONFLICT (token_id) DO NOTHING";

/// The next revocations after `$1` (seq), at most `$2`.
pub(crate) const REVOCATIONS_AFTER: &str = "SELECT seq, token_id, revoked_at FROM revocations \
     WHERE seq > $1 ORDER BY seq LIMIT $2";

/// Rows at or below seq `$1` recorded since `$2` (ms): a Postgres row can commit after one with
/// a higher seq, so readers look at the last seconds again.
pub(crate) const REVOCATIONS_RECENT: &str = "SELECT seq, token_id, revoked_at FROM revocations \
     WHERE seq <= $1 AND recorded_at >= $2 ORDER BY seq";
