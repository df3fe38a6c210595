//! The cluster's `/v1/load` report: how busy it is and when its slots free up, for the edge's
//! placement. Pure functions over what the store returns, so the estimates are unit-tested.

use reelay_jobs::{Millis, QueueCounts, RunningAttempt};
use reelay_protocol::LoadReport;

/// Seconds a running attempt has left: until the worker's own estimate when it has one (ffmpeg's
/// encode speed applied to the media still to encode, refreshed with every lease renewal), else
/// the job's estimate less the time it has run (the fetch and probe before encoding starts).
pub fn remaining_seconds(estimated: f64, elapsed: f64, eta_in: Option<f64>) -> f64 {
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    match eta_in {
        Some(eta) => finite(eta).max(0.0),
        None => (finite(estimated) - finite(elapsed)).max(0.0),
    }
}

/// One decimal is plenty for placement and keeps the JSON readable.
fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The report from the store's counts, the live capacity and the running attempts at `now`.
pub fn report(
    cluster: &str,
    capacity: u32,
    counts: &QueueCounts,
    running: &[RunningAttempt],
    accepting: bool,
    now: Millis,
) -> LoadReport {
    let mut remaining: Vec<f64> = running
        .iter()
        .map(|r| {
            let secs = |ms: Millis| ms as f64 / 1000.0;
            let elapsed = secs(now.saturating_sub(r.claimed_at));
            let eta_in = r.eta_at.map(|at| secs(at.saturating_sub(now)));
            tenth(remaining_seconds(r.estimated_seconds, elapsed, eta_in))
        })
        .collect();
    remaining.sort_by(f64::total_cmp);
    // Rounded up: a small queue must not read as an empty one (the edge would then count its
    // jobs at a default length, more than their real one).
    let backlog = counts.queued_estimated_seconds / f64::from(capacity.max(1));
    LoadReport {
        cluster: cluster.to_string(),
        capacity,
        // The same list as the remaining times: a job ending between the two queries must not
        // count as running with no figure.
        running: running.len() as u32,
        queued: counts.queued,
        backlog_seconds: if backlog.is_finite() && backlog > 0.0 {
            (backlog * 10.0).ceil() / 10.0
        } else {
            0.0
        },
        accepting,
        running_remaining_seconds: remaining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_encoding_the_estimate_counts_down() {
        assert_eq!(remaining_seconds(10.0, 0.0, None), 10.0);
        assert_eq!(remaining_seconds(10.0, 4.0, None), 6.0);
        // Overran its estimate without an ETA yet: about to free, as far as we know.
        assert_eq!(remaining_seconds(10.0, 30.0, None), 0.0);
    }

    #[test]
    fn the_workers_eta_wins_over_the_estimate() {
        // Estimated 10 s, but the encoder runs at half speed: 12 s more, not 0.
        assert_eq!(remaining_seconds(10.0, 20.0, Some(12.0)), 12.0);
        assert_eq!(remaining_seconds(10.0, 1.0, Some(2.5)), 2.5);
        // An ETA already passed: the job is finishing.
        assert_eq!(remaining_seconds(10.0, 5.0, Some(-3.0)), 0.0);
    }

    #[test]
    fn garbage_never_yields_negative_or_nan() {
        for (e, t, eta) in [
            (f64::NAN, 1.0, None),
            (-5.0, 1.0, None),
            (10.0, f64::INFINITY, None),
            (10.0, -3.0, None),
            (10.0, 2.0, Some(f64::NAN)),
            (10.0, 2.0, Some(f64::NEG_INFINITY)),
        ] {
            let r = remaining_seconds(e, t, eta);
            assert!(r.is_finite() && r >= 0.0, "{e} {t} {eta:?} -> {r}");
        }
    }

    #[test]
    fn report_sorts_remaining_and_averages_jobs() {
        let counts = QueueCounts {
            queued: 2,
            running: 3,
            queued_estimated_seconds: 30.0,
        };
        let now = 100_000;
        let running = [
            RunningAttempt {
                estimated_seconds: 12.0,
                claimed_at: now - 2_000,
                eta_at: None,
            },
            RunningAttempt {
                estimated_seconds: 8.0,
                claimed_at: now - 5_000,
                eta_at: None,
            },
            RunningAttempt {
                estimated_seconds: 10.0,
                claimed_at: now - 1_000,
                eta_at: Some(now + 1_500),
            },
        ];
        let r = report("aws", 3, &counts, &running, true, now);
        assert_eq!(r.running_remaining_seconds, vec![1.5, 3.0, 10.0]);
        assert_eq!(r.backlog_seconds, 10.0);
        assert_eq!((r.capacity, r.running, r.queued), (3, 3, 2));
        // A tiny queue still shows: 0.04 s per slot rounds up, never to zero.
        let tiny = QueueCounts {
            queued: 1,
            running: 0,
            queued_estimated_seconds: 0.12,
        };
        assert_eq!(report("aws", 3, &tiny, &[], true, now).backlog_seconds, 0.1);
        // The running count follows the list it comes with.
        let r = report("aws", 3, &counts, &running[..1], true, now);
        assert_eq!(r.running, 1);

        let idle = report("aws", 0, &QueueCounts::default(), &[], false, now);
        assert!(idle.running_remaining_seconds.is_empty());
        assert_eq!(idle.backlog_seconds, 0.0);
    }
}
