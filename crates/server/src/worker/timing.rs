//! Where a task's time goes (issue 18): a job should cost what its encode costs, and when it
//! does not, the user and the operator must be able to see which phase took the rest.
//!
//! A handler wraps each phase of its attempt in [`super::Context::timed`] (or records a measured
//! duration with [`super::Context::record`]); each phase then shows three ways:
//! - a `phase` tracing span around the work and a `phase finished` log line with its seconds,
//!   inside the task's span (so the job id is on it);
//! - the histogram `reelay_task_phase_seconds{phase,kind}`;
//! - the task's `timings` in the job view (phase → seconds, stored with the completion), and
//!   their sum over the job's tasks ([`job_sum`]).
//!
//! The accumulator itself is pure (durations in, seconds out): it is what the tests pin.

use reelay_jobs::PhaseTimings;
use std::collections::BTreeMap;
use std::time::Duration;

/// The phases of a task. Repeated phases (one `encode` per output) add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The claim: the store transaction that hands this worker the task.
    Claim,
    /// The input into the working directory: a hard link from a local store, a download from
    /// S3/GCS or a URL.
    Fetch,
    /// What the input is: the api's cached probe (or ffprobe), and idet where the scan type is
    /// unknown.
    Probe,
    /// Measuring the input before encoding (loudness first pass), when an output asked.
    Analyse,
    /// The ffmpeg runs that make the outputs (one per output).
    Encode,
    /// Receipts measured on the outputs: loudness and PSNR/SSIM.
    Receipt,
    /// Writing the outputs to storage.
    Publish,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Claim => "claim",
            Phase::Fetch => "fetch",
            Phase::Probe => "probe",
            Phase::Analyse => "analyse",
            Phase::Encode => "encode",
            Phase::Receipt => "receipt",
            Phase::Publish => "publish",
        }
    }
}

/// The time of one attempt, by phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    by_phase: BTreeMap<Phase, Duration>,
}

impl Timings {
    /// Adds `d` to `phase` (phases that run more than once add up).
    pub fn add(&mut self, phase: Phase, d: Duration) {
        *self.by_phase.entry(phase).or_default() += d;
    }

    /// Every phase's time added up.
    pub fn total(&self) -> Duration {
        self.by_phase.values().sum()
    }

    /// Phase name → seconds, rounded to the millisecond (what is stored and shown).
    pub fn seconds(&self) -> PhaseTimings {
        self.by_phase
            .iter()
            .map(|(p, d)| (p.as_str().to_string(), round_ms(d.as_secs_f64())))
            .collect()
    }
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// A job's time by phase: the sum over its tasks' timings (tasks that ran at the same time
/// each count whole, so for a split job this is work, not wall time).
pub fn job_sum<'a>(tasks: impl IntoIterator<Item = &'a PhaseTimings>) -> Option<PhaseTimings> {
    let mut sum: Option<PhaseTimings> = None;
    for t in tasks {
        let sum = sum.get_or_insert_with(PhaseTimings::new);
        for (phase, s) in t {
            *sum.entry(phase.clone()).or_default() += s;
        }
    }
    sum.map(|s| s.into_iter().map(|(p, v)| (p, round_ms(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn repeated_phases_add_up_and_names_are_stable() {
        let mut t = Timings::default();
        assert_eq!(t.seconds(), PhaseTimings::new());
        t.add(Phase::Encode, ms(1500));
        t.add(Phase::Probe, ms(40));
        t.add(Phase::Encode, ms(250));
        t.add(Phase::Publish, Duration::from_micros(1_234_567));
        let s = t.seconds();
        assert_eq!(
            s.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["encode", "probe", "publish"]
        );
        assert_eq!(s["encode"], 1.75);
        assert_eq!(s["probe"], 0.04);
        assert_eq!(s["publish"], 1.235, "rounded to the millisecond");
        assert_eq!(t.total(), Duration::from_micros(3_024_567));
    }

    #[test]
    fn every_phase_has_its_own_name() {
        let all = [
            Phase::Claim,
            Phase::Fetch,
            Phase::Probe,
            Phase::Analyse,
            Phase::Encode,
            Phase::Receipt,
            Phase::Publish,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|p| p.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn the_job_sum_adds_tasks_phase_by_phase() {
        let a: PhaseTimings = [("encode".into(), 1.0), ("fetch".into(), 0.25)].into();
        let b: PhaseTimings = [("encode".into(), 2.5), ("publish".into(), 0.1)].into();
        let sum = job_sum([&a, &b]).unwrap();
        assert_eq!(
            sum,
            [
                ("encode".to_string(), 3.5),
                ("fetch".to_string(), 0.25),
                ("publish".to_string(), 0.1)
            ]
            .into()
        );
        assert_eq!(job_sum(std::iter::empty()), None, "no timed task: no sum");
    }
}
