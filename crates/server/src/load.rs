//! The cluster's `/v1/load` report: how busy it is and when its slots free up, for the edge's
//! placement. Pure functions over what the store returns, so the estimates are unit-tested.
//!
//! Everything is counted in tasks, the units a slot runs (a plain job is one task, a split job
//! many): queued work is the waiting tasks' weights, a running task is charged its own remaining
//! part. Tasks are estimated in media seconds (input duration × outputs); the report speaks wall
//! seconds, converted with the workers' recent encode speed, so a cluster of slow encoders
//! does not look as free as a fast one with the same queue. Running jobs with an ETA from their
//! worker need no conversion.

use reelay_jobs::{Millis, PeerOffer, QueueCounts, RunningAttempt};
use reelay_protocol::{LoadReport, StealOffer};

/// How much one new measurement moves a worker's speed estimate.
const SPEED_WEIGHT: f64 = 0.3;

/// A worker's speed estimate after one more job encoded at `sample` × real time. Outputs of
/// different presets encode at very different speeds, so this is an average over the recent
/// mix, not a per-job forecast.
pub fn update_speed(old: Option<f64>, sample: f64) -> f64 {
    let sample = if sample.is_finite() {
        sample.clamp(0.01, 1000.0)
    } else {
        1.0
    };
    match old.filter(|s| s.is_finite() && *s > 0.0) {
        Some(old) => old + SPEED_WEIGHT * (sample - old),
        None => sample,
    }
}

/// Seconds a running attempt has left: until the worker's own estimate when it has one (ffmpeg's
/// encode speed applied to the media still to encode, refreshed with every lease renewal), else
/// the job's estimate (already in wall seconds) less the time it has run (the fetch and probe
/// before encoding starts).
pub fn remaining_seconds(estimated: f64, elapsed: f64, eta_in: Option<f64>) -> f64 {
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    match eta_in {
        Some(eta) => finite(eta).max(0.0),
        None => (finite(estimated) - finite(elapsed)).max(0.0),
    }
}

/// The report's steal offer (issue 16) from the task a peer's claim would take now: how long it
/// has waited, its input's size (`input_bytes`: the recorded size, or the stored object's, or
/// 0 when neither is known, e.g. a URL input the thief fetches itself), its outputs' size, and
/// its encode time in wall seconds at the workers' speed, the estimate placement uses.
///
/// The outputs are estimated at the input's size per requested output: a transcode rarely
/// writes more than its input per output, so this errs on the side of a dearer transfer.
pub fn offer(task: &PeerOffer, input_bytes: u64, speed: Option<f64>, now: Millis) -> StealOffer {
    let ready = now.saturating_sub(task.ready_since).max(0) as f64 / 1000.0;
    let expected = wall(task.weight, speed);
    StealOffer {
        task_id: task.task_id.clone(),
        ready_seconds: tenth(ready),
        input_bytes,
        output_bytes: input_bytes.saturating_mul(task.outputs.max(1) as u64),
        expected_seconds: if expected.is_finite() {
            tenth(expected.max(0.0))
        } else {
            0.0
        },
    }
}

/// One decimal is plenty for placement and keeps the JSON readable.
fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Media seconds → wall seconds at the workers' speed (1× until a worker has measured one).
fn wall(media_seconds: f64, speed: Option<f64>) -> f64 {
    media_seconds / speed.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(1.0)
}

/// Queued work per slot, in wall seconds: the autoscaling signal and the edge's backlog.
pub fn backlog_seconds(queued_media_seconds: f64, capacity: u32, speed: Option<f64>) -> f64 {
    let b = wall(queued_media_seconds, speed) / f64::from(capacity.max(1));
    if b.is_finite() && b > 0.0 {
        b
    } else {
        0.0
    }
}

/// The report from the store's counts, the live capacity and speed, and the running attempts
/// at `now`.
pub fn report(
    cluster: &str,
    capacity: u32,
    speed: Option<f64>,
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
            // A task is charged only its own remaining part: one segment of a split job is not
            // the whole job. Once it reports progress, that says how much is left; before, it
            // is fetching and probing, and the time spent so far counts instead.
            let progress = if r.progress.is_finite() {
                r.progress.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let left = wall(r.estimated_seconds * (1.0 - progress), speed);
            let elapsed = if progress > 0.0 { 0.0 } else { elapsed };
            tenth(remaining_seconds(left, elapsed, eta_in))
        })
        .collect();
    remaining.sort_by(f64::total_cmp);
    // Rounded up: a small queue must not read as an empty one (the edge would then count its
    // jobs at a default length, more than their real one).
    let backlog = backlog_seconds(counts.queued_estimated_seconds, capacity, speed);
    LoadReport {
        cluster: cluster.to_string(),
        capacity,
        // The same list as the remaining times: a job ending between the two queries must not
        // count as running with no figure.
        running: running.len() as u32,
        queued: counts.queued,
        backlog_seconds: (backlog * 10.0).ceil() / 10.0,
        accepting,
        running_remaining_seconds: remaining,
        encode_speed: speed.map(|s| (s * 100.0).round() / 100.0),
        offer: None,
    }
}

/// The report with its steal offer; a cluster that takes no new work hands none to its peers
/// either.
pub fn with_offer(report: LoadReport, offer: Option<StealOffer>) -> LoadReport {
    LoadReport {
        offer: offer.filter(|_| report.accepting),
        ..report
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
    fn speed_is_a_moving_average_of_sane_samples() {
        assert_eq!(update_speed(None, 2.0), 2.0);
        assert!((update_speed(Some(2.0), 1.0) - 1.7).abs() < 1e-9);
        assert_eq!(update_speed(None, f64::NAN), 1.0);
        assert_eq!(update_speed(None, 0.0), 0.01);
        assert_eq!(update_speed(Some(f64::NAN), 3.0), 3.0);
        assert_eq!(backlog_seconds(30.0, 3, Some(0.5)), 20.0);
        assert_eq!(backlog_seconds(30.0, 0, None), 30.0);
        assert_eq!(backlog_seconds(f64::NAN, 3, None), 0.0);
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
                progress: 0.0,
                claimed_at: now - 2_000,
                eta_at: None,
            },
            RunningAttempt {
                estimated_seconds: 8.0,
                progress: 0.0,
                claimed_at: now - 5_000,
                eta_at: None,
            },
            RunningAttempt {
                estimated_seconds: 10.0,
                progress: 0.0,
                claimed_at: now - 1_000,
                eta_at: Some(now + 1_500),
            },
        ];
        let r = report("aws", 3, None, &counts, &running, true, now);
        assert_eq!(r.running_remaining_seconds, vec![1.5, 3.0, 10.0]);
        assert_eq!(r.backlog_seconds, 10.0);
        assert_eq!((r.capacity, r.running, r.queued), (3, 3, 2));
        // A tiny queue still shows: 0.04 s per slot rounds up, never to zero.
        let tiny = QueueCounts {
            queued: 1,
            running: 0,
            queued_estimated_seconds: 0.12,
        };
        assert_eq!(
            report("aws", 3, None, &tiny, &[], true, now).backlog_seconds,
            0.1
        );
        // The running count follows the list it comes with.
        let r = report("aws", 3, None, &counts, &running[..1], true, now);
        assert_eq!(r.running, 1);
        // Workers encoding at 2× real time: the same media is half the wall time; jobs with an
        // ETA keep it.
        let fast = report("aws", 3, Some(2.0), &counts, &running, true, now);
        assert_eq!(fast.backlog_seconds, 5.0);
        assert_eq!(fast.running_remaining_seconds, vec![0.0, 1.5, 4.0]);
        assert_eq!(fast.encode_speed, Some(2.0));

        let idle = report("aws", 0, None, &QueueCounts::default(), &[], false, now);
        assert!(idle.running_remaining_seconds.is_empty());
        assert_eq!(idle.backlog_seconds, 0.0);
    }

    /// A running segment of a split job is charged its own remaining part (weight × what is
    /// left), not the whole job's estimate, and not less for the time it spent fetching.
    #[test]
    fn running_tasks_are_charged_their_own_remaining_part() {
        let now = 100_000;
        let segment = RunningAttempt {
            estimated_seconds: 40.0,
            progress: 0.75,
            claimed_at: now - 20_000,
            eta_at: None,
        };
        let r = report(
            "aws",
            8,
            None,
            &QueueCounts::default(),
            &[segment],
            true,
            now,
        );
        assert_eq!(r.running_remaining_seconds, vec![10.0]);
        // At 2x, those 10 media seconds take 5 wall seconds.
        let fast = report(
            "aws",
            8,
            Some(2.0),
            &QueueCounts::default(),
            &[segment],
            true,
            now,
        );
        assert_eq!(fast.running_remaining_seconds, vec![5.0]);
        // Its worker's own estimate wins when it has one.
        let with_eta = RunningAttempt {
            eta_at: Some(now + 3_000),
            ..segment
        };
        let r = report(
            "aws",
            8,
            None,
            &QueueCounts::default(),
            &[with_eta],
            true,
            now,
        );
        assert_eq!(r.running_remaining_seconds, vec![3.0]);
        // Garbage progress counts as none.
        let nan = RunningAttempt {
            progress: f64::NAN,
            ..segment
        };
        let r = report("aws", 8, None, &QueueCounts::default(), &[nan], true, now);
        assert_eq!(r.running_remaining_seconds, vec![20.0]);
    }

    /// The offer says how long its task waited, how many bytes a thief moves (outputs at the
    /// input's size each) and its encode time at the workers' speed; a draining cluster offers
    /// nothing.
    #[test]
    fn the_offer_is_the_task_a_peer_would_take_in_the_policys_units() {
        let now = 100_000;
        let task = PeerOffer {
            task_id: "aws.01J.transcode".into(),
            kind: "transcode".into(),
            ready_since: now - 12_340,
            weight: 30.0,
            input_size: Some(4_000_000),
            input_key: None,
            outputs: 3,
        };
        let o = offer(&task, 4_000_000, Some(2.0), now);
        assert_eq!(o.task_id, "aws.01J.transcode");
        assert_eq!(o.ready_seconds, 12.3);
        assert_eq!((o.input_bytes, o.output_bytes), (4_000_000, 12_000_000));
        assert_eq!(o.expected_seconds, 15.0);
        // Not measured yet: 1x; a ready time in the future (clock skew between replicas): 0.
        let early = PeerOffer {
            ready_since: now + 5_000,
            ..task.clone()
        };
        let o = offer(&early, 0, None, now);
        assert_eq!((o.ready_seconds, o.expected_seconds), (0.0, 30.0));
        assert_eq!(o.output_bytes, 0);
        let counts = QueueCounts::default();
        let with = |accepting| {
            with_offer(
                report("aws", 1, None, &counts, &[], accepting, now),
                Some(offer(&task, 1, None, now)),
            )
            .offer
        };
        assert!(with(true).is_some());
        assert_eq!(with(false), None);
    }
}
