//! How long a failed attempt waits before it may run again.

use std::time::Duration;

/// The first retry comes quickly because most transient failures (a storage hiccup, a restarted
/// worker) clear in seconds; doubling after that keeps a persistently failing input from hogging
/// workers, and the cap keeps the last attempts within minutes rather than hours.
const BASE: Duration = Duration::from_secs(2);
const CAP: Duration = Duration::from_secs(5 * 60);

/// The longest [`backoff`] ever asks for: also the most a retry delay reported from outside
/// (a peer cluster's worker) is allowed, so no report can park a task for good.
pub const RETRY_CAP: Duration = CAP;

/// Delay before retrying after failed attempt number `attempt` (1-based): 2 s, 4 s, 8 s, …,
/// never more than 5 minutes. Attempt 0 is treated as 1 so callers cannot get a zero delay.
pub fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1);
    // 2 s * 2^8 already exceeds the cap, so larger exponents need no arithmetic at all.
    if exponent >= 8 {
        return CAP;
    }
    (BASE * (1u32 << exponent)).min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_two_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(8), Duration::from_secs(256));
    }

    #[test]
    fn is_capped_at_five_minutes() {
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(40), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn attempt_zero_is_not_instant() {
        assert_eq!(backoff(0), Duration::from_secs(2));
    }
}
