//! Where a multipart submission's time goes (issue 18, small jobs): the upload, one ffprobe,
//! the storage writes and the store insert are on the critical path of every uploaded job, and
//! on a 2-second job they cost as much as a large share of its encode.
//!
//! Each phase shows as the histogram `reelay_submit_phase_seconds{phase}` and, per submission,
//! one `submission timed` log line with every phase's seconds and the job id. The lap arithmetic
//! is pure (instants in, durations out) so tests pin it without a clock.

use crate::metrics as m;
use std::time::{Duration, Instant};

/// The phases of a multipart submission, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitPhase {
    /// The request up to the file's last byte spooled to local disk: multipart framing, the spec
    /// and side parts, the file written to the scratch directory.
    Receive,
    /// ffprobe of the spooled file and the policy checks on its answer.
    Probe,
    /// The upload into object storage (a rename into a local store; a streamed PUT to S3/GCS).
    StoreInput,
    /// The side files and the probe result written to storage.
    StoreExtras,
    /// The job and its tasks inserted into the job store (one transaction).
    Insert,
}

impl SubmitPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SubmitPhase::Receive => "receive",
            SubmitPhase::Probe => "probe",
            SubmitPhase::StoreInput => "store_input",
            SubmitPhase::StoreExtras => "store_extras",
            SubmitPhase::Insert => "insert",
        }
    }
}

/// Laps of one submission: each [`SubmitTimer::lap`] ends the phase that began at the previous
/// lap (or at the start).
#[derive(Debug)]
pub struct SubmitTimer {
    last: Instant,
    laps: Vec<(SubmitPhase, Duration)>,
}

impl SubmitTimer {
    pub fn start(at: Instant) -> SubmitTimer {
        SubmitTimer {
            last: at,
            laps: Vec::new(),
        }
    }

    /// Ends `phase` at `now` and records it in the histogram.
    pub fn lap(&mut self, phase: SubmitPhase, now: Instant) {
        let took = now.saturating_duration_since(self.last);
        self.last = now;
        self.laps.push((phase, took));
        metrics::histogram!(m::SUBMIT_PHASE_SECONDS, "phase" => phase.as_str())
            .record(took.as_secs_f64());
    }

    /// The recorded phases, in order.
    pub fn laps(&self) -> &[(SubmitPhase, Duration)] {
        &self.laps
    }

    /// One log line with every phase (seconds) for `job_id`.
    pub fn log(&self, job_id: &str) {
        let secs = |p: SubmitPhase| {
            self.laps
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, d)| d.as_secs_f64())
                .sum::<f64>()
        };
        tracing::info!(
            job_id,
            receive = secs(SubmitPhase::Receive),
            probe = secs(SubmitPhase::Probe),
            store_input = secs(SubmitPhase::StoreInput),
            store_extras = secs(SubmitPhase::StoreExtras),
            insert = secs(SubmitPhase::Insert),
            "submission timed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lap_ends_the_phase_begun_at_the_previous_one() {
        let t0 = Instant::now();
        let mut t = SubmitTimer::start(t0);
        t.lap(SubmitPhase::Receive, t0 + Duration::from_millis(30));
        t.lap(SubmitPhase::Probe, t0 + Duration::from_millis(110));
        // A clock that did not move (or an earlier instant) is a zero lap, never a panic.
        t.lap(SubmitPhase::StoreInput, t0 + Duration::from_millis(100));
        t.lap(SubmitPhase::Insert, t0 + Duration::from_millis(115));
        assert_eq!(
            t.laps(),
            &[
                (SubmitPhase::Receive, Duration::from_millis(30)),
                (SubmitPhase::Probe, Duration::from_millis(80)),
                (SubmitPhase::StoreInput, Duration::ZERO),
                (SubmitPhase::Insert, Duration::from_millis(15)),
            ]
        );
    }
}
