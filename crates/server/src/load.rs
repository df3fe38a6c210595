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
/// has waited, the bytes a thief reads (`input_bytes`: for a whole-file task the input's
/// recorded size, or the stored object's, or 0 when neither is known, e.g. a URL input the
/// thief fetches itself; for a piece, only the piece files it reads, see [`piece_plan`]), the
/// bytes it writes back, and its encode time in wall seconds at the workers' speed, the
/// estimate placement uses.
///
/// The outputs are estimated at the bytes read per output the task encodes (`outputs`): a
/// transcode rarely writes more than its input per output, so this errs on the side of a
/// dearer transfer.
pub fn offer(
    task: &PeerOffer,
    input_bytes: u64,
    outputs: usize,
    speed: Option<f64>,
    now: Millis,
) -> StealOffer {
    let ready = now.saturating_sub(task.ready_since).max(0) as f64 / 1000.0;
    let expected = wall(task.weight, speed);
    StealOffer {
        task_id: task.task_id.clone(),
        ready_seconds: tenth(ready),
        input_bytes,
        output_bytes: input_bytes.saturating_mul(outputs.max(1) as u64),
        expected_seconds: if expected.is_finite() {
            tenth(expected.max(0.0))
        } else {
            0.0
        },
    }
}

/// What an `encode_segment` offer moves: the stored piece objects its range reads (full keys;
/// their sizes are what a thief downloads), the outputs it encodes (the split renditions, not
/// the job's whole-file ones), and its range's share of the input's duration, the fallback
/// when the pieces' sizes cannot be read. Before this, a piece's offer reported the whole
/// film's bytes, so a long film's pieces looked too dear to move.
#[derive(Debug, Clone, PartialEq)]
pub struct PiecePlan {
    pub keys: Vec<String>,
    /// Each key's size as the `split` task recorded it (same order); `None`: not recorded.
    pub sizes: Vec<Option<u64>>,
    pub outputs: usize,
    pub share: f64,
}

/// The [`PiecePlan`] of an offered `encode_segment` task, from its payload and its `split`
/// task's recorded output; `None` for other kinds or an output that does not read as one.
pub fn piece_plan(task: &PeerOffer) -> Option<PiecePlan> {
    use crate::task_payloads::{SegmentPayload, SplitResult, ENCODE_SEGMENT, SPLIT};
    if task.kind != ENCODE_SEGMENT {
        return None;
    }
    let payload: SegmentPayload = serde_json::from_value(task.payload.clone()).ok()?;
    let suffix = format!(".{SPLIT}");
    let split: SplitResult = task
        .dependencies
        .iter()
        .find(|(id, _)| id.ends_with(&suffix))
        .and_then(|(_, v)| serde_json::from_value(v.clone()).ok())?;
    let range = reelay_media::split::segment_tasks(&split.layout, &split.manifest)
        .into_iter()
        .find(|t| t.index == payload.index)?;
    let share = match split.info.best_duration() {
        Some(d) if (range.end - range.start).is_finite() => {
            ((range.end - range.start) / d).clamp(0.0, 1.0)
        }
        _ => 1.0,
    };
    let recorded = |file: &String| {
        split
            .manifest
            .pieces
            .iter()
            .find(|p| &p.file == file)
            .and_then(|p| p.bytes)
    };
    Some(PiecePlan {
        keys: range
            .pieces
            .iter()
            .map(|f| format!("{}/{f}", split.prefix))
            .collect(),
        sizes: range.pieces.iter().map(recorded).collect(),
        outputs: split.layout.split.len(),
        share,
    })
}

/// A piece's bytes read: the stored pieces' sizes when every one could be read, else its
/// range's share of the whole input (`whole_input`).
pub fn piece_bytes(plan: &PiecePlan, sizes: &[Option<u64>], whole_input: u64) -> u64 {
    match sizes.iter().copied().collect::<Option<Vec<u64>>>() {
        Some(sizes) if sizes.len() == plan.keys.len() => {
            sizes.into_iter().fold(0u64, u64::saturating_add)
        }
        _ => (whole_input as f64 * plan.share).ceil() as u64,
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

/// What a running task row means for this cluster's slots at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A home worker holds a live lease: a busy slot that frees when the task ends.
    Running,
    /// The lease lapsed: its worker died or was cut off, so no slot of ours is busy with it and
    /// it will run again from the start. It is queued work, not a slot about to free (read as
    /// the latter, a dead worker's ~0 s left made the edge expect a home slot any moment).
    Lapsed,
    /// A peer's worker runs it under a live lease (a stolen task): it occupies no slot here.
    OnPeer,
}

/// How the report counts `attempt` at `now` (a lease expiring exactly now is lapsed, as the
/// claim probe treats it: claimable again).
pub fn standing(attempt: &RunningAttempt, now: Millis) -> Standing {
    match attempt.lease_expires_at {
        Some(at) if at <= now => Standing::Lapsed,
        _ if attempt.on_peer => Standing::OnPeer,
        _ => Standing::Running,
    }
}

/// The report from the store's counts, the live capacity and speed, and the running attempts
/// at `now`. Only attempts that hold one of this cluster's slots count as running; lapsed ones
/// are charged as queued tasks with their whole weight (a redo starts over); those running on a
/// peer are left out (the peer's slot is busy, not ours).
pub fn report(
    cluster: &str,
    capacity: u32,
    speed: Option<f64>,
    counts: &QueueCounts,
    running: &[RunningAttempt],
    accepting: bool,
    now: Millis,
) -> LoadReport {
    let mut remaining = Vec::with_capacity(running.len());
    let (mut lapsed, mut lapsed_media_seconds) = (0u32, 0.0);
    for r in running {
        match standing(r, now) {
            Standing::OnPeer => {}
            Standing::Lapsed => {
                lapsed += 1;
                if r.estimated_seconds.is_finite() {
                    lapsed_media_seconds += r.estimated_seconds.max(0.0);
                }
            }
            Standing::Running => remaining.push(remaining_of(r, speed, now)),
        }
    }
    remaining.sort_by(f64::total_cmp);
    // Rounded up: a small queue must not read as an empty one (the edge would then count its
    // jobs at a default length, more than their real one).
    let backlog = backlog_seconds(
        counts.queued_estimated_seconds + lapsed_media_seconds,
        capacity,
        speed,
    );
    LoadReport {
        cluster: cluster.to_string(),
        capacity,
        // The same list as the remaining times: a job ending between the two queries must not
        // count as running with no figure.
        running: remaining.len() as u32,
        queued: counts.queued.saturating_add(lapsed),
        backlog_seconds: (backlog * 10.0).ceil() / 10.0,
        accepting,
        running_remaining_seconds: remaining,
        encode_speed: speed.map(|s| (s * 100.0).round() / 100.0),
        offer: None,
    }
}

/// Wall seconds a live home attempt has left at `now`.
fn remaining_of(r: &RunningAttempt, speed: Option<f64>, now: Millis) -> f64 {
    let secs = |ms: Millis| ms as f64 / 1000.0;
    let elapsed = secs(now.saturating_sub(r.claimed_at));
    let eta_in = r.eta_at.map(|at| secs(at.saturating_sub(now)));
    // A task is charged only its own remaining part: one segment of a split job is not the
    // whole job. Once it reports progress, that says how much is left; before, it is fetching
    // and probing, and the time spent so far counts instead.
    let progress = if r.progress.is_finite() {
        r.progress.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let left = wall(r.estimated_seconds * (1.0 - progress), speed);
    let elapsed = if progress > 0.0 { 0.0 } else { elapsed };
    tenth(remaining_seconds(left, elapsed, eta_in))
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

    /// A home attempt under a live lease; tests fill in the rest.
    fn live() -> RunningAttempt {
        RunningAttempt {
            estimated_seconds: 10.0,
            progress: 0.0,
            claimed_at: 0,
            eta_at: None,
            lease_expires_at: Some(Millis::MAX),
            on_peer: false,
        }
    }

    /// A SIGKILLed worker's attempt keeps its `running` row until its lease lapses and a claim
    /// takes it over. Past its lease it is no busy slot (it must not read as one about to
    /// free) but a task waiting to be redone: counted queued, charged its whole weight.
    #[test]
    fn a_lapsed_lease_is_queued_work_not_a_slot_about_to_free() {
        let now = 100_000;
        let counts = QueueCounts {
            queued: 1,
            running: 2,
            queued_estimated_seconds: 10.0,
        };
        let alive = RunningAttempt {
            estimated_seconds: 20.0,
            claimed_at: now - 5_000,
            lease_expires_at: Some(now + 4_000),
            ..live()
        };
        // Half done when its worker died: the redo still costs all 30 s.
        let dead = RunningAttempt {
            estimated_seconds: 30.0,
            progress: 0.5,
            claimed_at: now - 40_000,
            eta_at: Some(now - 1_000),
            lease_expires_at: Some(now - 200),
            ..live()
        };
        let r = report("aws", 1, None, &counts, &[alive, dead], true, now);
        assert_eq!(r.running, 1);
        assert_eq!(r.running_remaining_seconds, vec![15.0]);
        assert_eq!(r.queued, 2);
        assert_eq!(r.backlog_seconds, 40.0);
        // A lease that ends exactly now is claimable again, as the claim probe sees it.
        let edge = RunningAttempt {
            lease_expires_at: Some(now),
            ..alive
        };
        assert_eq!(standing(&edge, now), Standing::Lapsed);
        assert_eq!(standing(&alive, now), Standing::Running);
        // Before the lapse the same attempt is running, with its ~0 s left.
        let r = report("aws", 2, None, &counts, &[alive, dead], true, now - 1_000);
        assert_eq!((r.running, r.queued), (2, 1));
        // No expiry recorded: nothing says it lapsed.
        let unknown = RunningAttempt {
            lease_expires_at: None,
            ..alive
        };
        assert_eq!(standing(&unknown, now), Standing::Running);
        // Garbage weight is charged nothing rather than NaN.
        let nan = RunningAttempt {
            estimated_seconds: f64::NAN,
            ..dead
        };
        let r = report("aws", 1, None, &QueueCounts::default(), &[nan], true, now);
        assert_eq!((r.queued, r.backlog_seconds), (1, 0.0));
    }

    /// A task a peer's worker claimed (stolen) takes none of the owner's slots: it is neither
    /// running nor queued here while its lease lives. Once that lease lapses it comes home as
    /// queued work.
    #[test]
    fn a_task_running_on_a_peer_occupies_no_home_slot() {
        let now = 100_000;
        let stolen = RunningAttempt {
            estimated_seconds: 40.0,
            claimed_at: now - 1_000,
            lease_expires_at: Some(now + 5_000),
            on_peer: true,
            ..live()
        };
        let home = RunningAttempt {
            estimated_seconds: 12.0,
            claimed_at: now - 2_000,
            lease_expires_at: Some(now + 5_000),
            ..live()
        };
        let counts = QueueCounts {
            queued: 3,
            running: 2,
            queued_estimated_seconds: 30.0,
        };
        let r = report("aws", 1, None, &counts, &[stolen, home], true, now);
        assert_eq!(standing(&stolen, now), Standing::OnPeer);
        assert_eq!((r.capacity, r.running, r.queued), (1, 1, 3));
        assert_eq!(r.running_remaining_seconds, vec![10.0]);
        assert_eq!(r.backlog_seconds, 30.0);
        // The peer's worker vanished: the task waits at home again.
        let r = report("aws", 1, None, &counts, &[stolen, home], true, now + 6_000);
        assert_eq!(standing(&stolen, now + 6_000), Standing::Lapsed);
        assert_eq!((r.running, r.queued), (0, 5));
        assert_eq!(r.backlog_seconds, 82.0);
    }

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
                ..live()
            },
            RunningAttempt {
                estimated_seconds: 8.0,
                progress: 0.0,
                claimed_at: now - 5_000,
                eta_at: None,
                ..live()
            },
            RunningAttempt {
                estimated_seconds: 10.0,
                progress: 0.0,
                claimed_at: now - 1_000,
                eta_at: Some(now + 1_500),
                ..live()
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
            ..live()
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
            payload: serde_json::Value::Null,
            dependencies: vec![],
        };
        let o = offer(&task, 4_000_000, task.outputs, Some(2.0), now);
        assert_eq!(o.task_id, "aws.01J.transcode");
        assert_eq!(o.ready_seconds, 12.3);
        assert_eq!((o.input_bytes, o.output_bytes), (4_000_000, 12_000_000));
        assert_eq!(o.expected_seconds, 15.0);
        // Not measured yet: 1x; a ready time in the future (clock skew between replicas): 0.
        let early = PeerOffer {
            ready_since: now + 5_000,
            ..task.clone()
        };
        let o = offer(&early, 0, 3, None, now);
        assert_eq!((o.ready_seconds, o.expected_seconds), (0.0, 30.0));
        assert_eq!(o.output_bytes, 0);
        let counts = QueueCounts::default();
        let with = |accepting| {
            with_offer(
                report("aws", 1, None, &counts, &[], accepting, now),
                Some(offer(&task, 1, 1, None, now)),
            )
            .offer
        };
        assert!(with(true).is_some());
        assert_eq!(with(false), None);
    }

    /// A split job's 8 s input cut into four 2 s pieces, encoded in two 4 s ranges to two
    /// split outputs (a third output runs whole), as its `split` task records it.
    fn piece_offer(index: usize) -> PeerOffer {
        use crate::task_payloads::SplitResult;
        use reelay_media::split::{Manifest, Piece, Range, SplitLayout};
        let info = reelay_media::probe::parse_probe_json(
            r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","width":640,"height":360,"avg_frame_rate":"25/1"}],
               "format":{"format_name":"mov,mp4,m4a","duration":"8.0"}}"#,
        )
        .unwrap();
        let split = SplitResult {
            prefix: "tasks/j/split/a1".into(),
            layout: SplitLayout {
                segment_seconds: 4,
                ranges: (0..2)
                    .map(|i| Range {
                        index: i,
                        start: 4.0 * i as f64,
                        end: 4.0 * (i + 1) as f64,
                    })
                    .collect(),
                split: vec!["hls-abr".into(), "mp4-360p".into()],
                whole: vec![],
            },
            manifest: Manifest {
                origin: 0.0,
                file_offset: 1.4,
                frame_rate: 25.0,
                pieces: (0..4)
                    .map(|i| Piece {
                        file: format!("piece_{i:05}.ts"),
                        start: 2.0 * i as f64,
                        keyframes: vec![2.0 * i as f64],
                        // Recorded for all but the last piece (as an older manifest would not).
                        bytes: (i < 3).then_some(1_000_000 + i as u64),
                    })
                    .collect(),
            },
            info,
        };
        PeerOffer {
            task_id: format!("j.seg-{index:05}"),
            kind: "encode_segment".into(),
            ready_since: 0,
            weight: 12.0,
            input_size: Some(80_000_000),
            input_key: None,
            outputs: 3,
            payload: serde_json::json!({ "index": index }),
            dependencies: vec![("j.split".into(), serde_json::to_value(&split).unwrap())],
        }
    }

    /// A piece's offer moves the piece files its range reads and the split renditions it
    /// encodes, not the whole film's bytes for every output of the job.
    #[test]
    fn a_pieces_offer_moves_its_own_pieces() {
        let plan = piece_plan(&piece_offer(1)).expect("a piece's plan");
        assert!(
            plan.keys
                .contains(&"tasks/j/split/a1/piece_00002.ts".to_string())
                && plan
                    .keys
                    .contains(&"tasks/j/split/a1/piece_00003.ts".to_string()),
            "{plan:?}"
        );
        assert!(
            !plan
                .keys
                .contains(&"tasks/j/split/a1/piece_00000.ts".to_string()),
            "{plan:?}"
        );
        assert_eq!(plan.outputs, 2);
        assert_eq!(plan.share, 0.5);
        // The sizes the split task recorded, in the keys' order (range 1 also reads piece 1
        // for its pre-roll); none for the last piece, which this manifest did not record.
        assert_eq!(plan.keys.len(), 3, "{plan:?}");
        assert_eq!(plan.sizes, [Some(1_000_001), Some(1_000_002), None]);
        let first = piece_plan(&piece_offer(0)).expect("range 0's plan");
        assert_eq!(first.sizes.len(), first.keys.len());
        assert!(first.sizes.iter().all(Option::is_some), "{first:?}");
        // Sizes read: their sum; one missing: the range's share of the whole input.
        let sizes: Vec<Option<u64>> = plan.keys.iter().map(|_| Some(3_000_000)).collect();
        let bytes = piece_bytes(&plan, &sizes, 80_000_000);
        assert_eq!(bytes, 3_000_000 * plan.keys.len() as u64);
        let mut gap = sizes.clone();
        gap[0] = None;
        assert_eq!(piece_bytes(&plan, &gap, 80_000_000), 40_000_000);
        let o = offer(&piece_offer(1), bytes, plan.outputs, None, 0);
        assert_eq!((o.input_bytes, o.output_bytes), (bytes, 2 * bytes));
        assert!(o.input_bytes < 80_000_000);
        // Other kinds, and a split output that does not read as one, have no piece plan.
        let mut whole = piece_offer(0);
        whole.kind = "transcode".into();
        assert_eq!(piece_plan(&whole), None);
        let mut broken = piece_offer(0);
        broken.dependencies[0].1 = serde_json::json!({"prefix": 3});
        assert_eq!(piece_plan(&broken), None);
        assert_eq!(piece_plan(&piece_offer(7)), None);
    }
}
