//! The cluster's `/v1/load` report: how busy it is and when its slots free up, for the edge's
//! placement. Pure functions over what the store returns, so the estimates are unit-tested.

use reelay_jobs::{Millis, QueueCounts, RunningAttempt};
use reelay_protocol::LoadReport;

/// Progress below which the job's own estimate still counts; from here on the extrapolation from
/// progress is trusted fully. Early progress is noisy (ffmpeg start-up, input download).
const TRUST_PROGRESS_FROM: f64 = 0.25;

/// Seconds a running attempt has left.
///
/// Two estimates, blended by progress: the job's estimate minus the time it has run (right for a
/// job that just started, and for `-re` style real-time work) and the extrapolation
/// `elapsed · (1 − p) / p` from the reported progress, which corrects an estimate that was off
/// (a slow preset, a busy CPU) once enough of the job has run to say so.
pub fn remaining_seconds(estimated: f64, elapsed: f64, progress: f64) -> f64 {
    let estimated = if estimated.is_finite() {
        estimated.max(0.0)
    } else {
        0.0
    };
    let elapsed = if elapsed.is_finite() {
        elapsed.max(0.0)
    } else {
        0.0
    };
    let p = if progress.is_finite() {
        progress.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let by_estimate = (estimated - elapsed).max(0.0);
    if p <= 0.0 || elapsed <= 0.0 {
        return by_estimate;
    }
    let by_progress = elapsed * (1.0 - p) / p;
    let w = (p / TRUST_PROGRESS_FROM).min(1.0);
    (1.0 - w) * by_estimate + w * by_progress
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
            let elapsed = now.saturating_sub(r.claimed_at) as f64 / 1000.0;
            tenth(remaining_seconds(r.estimated_seconds, elapsed, r.progress))
        })
        .collect();
    remaining.sort_by(f64::total_cmp);
    let jobs = running.len() + counts.queued as usize;
    let work: f64 =
        running.iter().map(|r| r.estimated_seconds).sum::<f64>() + counts.queued_estimated_seconds;
    LoadReport {
        cluster: cluster.to_string(),
        capacity,
        running: counts.running,
        queued: counts.queued,
        backlog_seconds: tenth(counts.queued_estimated_seconds / f64::from(capacity.max(1))),
        accepting,
        running_remaining_seconds: remaining,
        mean_job_seconds: (jobs > 0 && work > 0.0).then(|| tenth(work / jobs as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_any_progress_the_estimate_counts_down() {
        assert_eq!(remaining_seconds(10.0, 0.0, 0.0), 10.0);
        assert_eq!(remaining_seconds(10.0, 4.0, 0.0), 6.0);
        // Overran its estimate without reporting progress: about to free, as far as we know.
        assert_eq!(remaining_seconds(10.0, 30.0, 0.0), 0.0);
    }

    #[test]
    fn progress_corrects_a_wrong_estimate() {
        // Estimated 10 s, but after 20 s it is half done: 20 s more, not 0.
        assert!((remaining_seconds(10.0, 20.0, 0.5) - 20.0).abs() < 1e-9);
        // Early progress only nudges the estimate.
        let early = remaining_seconds(10.0, 1.0, 0.05);
        assert!(early > 9.0 - 1e-9 && early < 19.0 + 1e-9, "{early}");
        assert_eq!(remaining_seconds(10.0, 5.0, 1.0), 0.0);
    }

    #[test]
    fn garbage_never_yields_negative_or_nan() {
        for (e, t, p) in [
            (f64::NAN, 1.0, 0.5),
            (-5.0, 1.0, 0.0),
            (10.0, f64::INFINITY, 0.5),
            (10.0, -3.0, 0.2),
            (10.0, 2.0, f64::NAN),
            (10.0, 2.0, 7.0),
            (10.0, 2.0, -1.0),
        ] {
            let r = remaining_seconds(e, t, p);
            assert!(r.is_finite() && r >= 0.0, "{e} {t} {p} -> {r}");
        }
    }

    #[test]
    fn report_sorts_remaining_and_averages_jobs() {
        let counts = QueueCounts {
            queued: 2,
            running: 2,
            queued_estimated_seconds: 30.0,
        };
        let now = 100_000;
        let running = [
            RunningAttempt {
                estimated_seconds: 12.0,
                claimed_at: now - 2_000,
                progress: 0.0,
            },
            RunningAttempt {
                estimated_seconds: 8.0,
                claimed_at: now - 5_000,
                progress: 0.0,
            },
        ];
        let r = report("aws", 3, &counts, &running, true, now);
        assert_eq!(r.running_remaining_seconds, vec![3.0, 10.0]);
        assert_eq!(r.backlog_seconds, 10.0);
        assert_eq!(r.mean_job_seconds, Some(12.5));
        assert_eq!((r.capacity, r.running, r.queued), (3, 2, 2));

        let idle = report("aws", 0, &QueueCounts::default(), &[], false, now);
        assert!(idle.running_remaining_seconds.is_empty());
        assert_eq!(idle.mean_job_seconds, None);
        assert_eq!(idle.backlog_seconds, 0.0);
    }
}
