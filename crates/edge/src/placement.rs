//! Which cluster a new job goes to: a pure function of what the controller knows.
//!
//! # The model
//!
//! Each cluster is a pool of `capacity` job slots, and a new job starts when a slot is free for
//! it after the work ahead of it. The latest `/v1/load` reading says when each slot frees: the
//! seconds each running job has left (`running_remaining_seconds`, less the age of the reading),
//! idle slots at zero. Ahead of the new job are, in order:
//!
//! 1. the queued work (`backlog_seconds × capacity` in total), poured into the slots that free
//!    first like water (we know its total, not each job's length);
//! 2. the jobs the edge placed there since the reading (`pending`, so that a burst between two
//!    readings does not herd onto the cluster that looked emptiest), each of `T =
//!    default_job_seconds` (the edge cannot see a job's length when it places it), each put in
//!    the slot that frees first.
//!
//! The estimated start is then the earliest slot. Running jobs a reading has no figure for (a
//! cluster too old to report them) count as `T` each. `T` is a setting, not learned from the
//! reading, on purpose: a length averaged over the cluster's jobs would fall when a short job is
//! added, and adding work must never make a cluster look better. Each step only moves slots
//! later as work is added.
//!
//! When a slot is still free after the queued and pending jobs took theirs, the job starts at
//! once, and the ranking value (`pressure`) goes below zero by the other free slots,
//! `−(free − 1) / capacity × default_job_seconds`: among clusters that could all start the job
//! now, the one with the most free capacity wins, so a burst spreads in proportion to free
//! capacity instead of filling one cluster's slots first.
//!
//! The score adds two preferences expressed in seconds, so they trade off against waiting time:
//! `remote_penalty_seconds` for every cluster that is not `local_cluster` (data gravity, egress)
//! and `cost · cost_weight_seconds` (a spot cluster with cost 0.5 is worth waiting 5 s longer for,
//! with the default weight). Lowest score wins; ties go to the cluster with less work committed
//! per slot, then to configuration order, so the choice is deterministic.
//!
//! Only eligible clusters (healthy and accepting) compete; the caller decides what to do when
//! none is (the edge fails open to all of them).

use serde::Serialize;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Penalty standing in for "never starts" when a cluster reports no live worker slots, large
/// enough to lose against any real queue but still ordered by queue length.
const NO_CAPACITY_SECONDS: f64 = 1.0e7;

/// The parts of a `/v1/load` reading the policy uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub capacity: u32,
    pub running: u32,
    pub queued: u32,
    pub backlog_seconds: f64,
    /// Seconds each running job had left when the reading was taken (any order).
    pub running_remaining: Vec<f64>,
}

impl From<&reelay_protocol::LoadReport> for Load {
    fn from(r: &reelay_protocol::LoadReport) -> Self {
        Load {
            capacity: r.capacity,
            running: r.running,
            queued: r.queued,
            backlog_seconds: r.backlog_seconds,
            running_remaining: r.running_remaining_seconds.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `None` before the first reading: treated as one idle slot.
    pub load: Option<Load>,
    /// Seconds since `load` was read; running jobs have that much less left.
    pub age_seconds: f64,
    /// Placements made since `load` was read.
    pub pending: u32,
    pub cost: f64,
    pub local: bool,
    pub eligible: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub default_job_seconds: f64,
    /// Applied only when a local cluster is configured.
    pub remote_penalty_seconds: f64,
    pub cost_weight_seconds: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_job_seconds: 60.0,
            remote_penalty_seconds: 5.0,
            cost_weight_seconds: 10.0,
        }
    }
}

impl From<&crate::config::PlacementConfig> for Policy {
    fn from(p: &crate::config::PlacementConfig) -> Self {
        Policy {
            default_job_seconds: p.default_job_seconds,
            remote_penalty_seconds: p.remote_penalty_seconds,
            cost_weight_seconds: p.cost_weight_seconds,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    /// Signed: negative means idle slots (see the module docs).
    pub pressure_seconds: f64,
    pub estimated_start_seconds: f64,
    /// What is compared: pressure plus the locality and cost terms.
    pub score: f64,
    /// Seconds of work already committed per slot, queued and pending jobs included: among
    /// equal scores the less loaded cluster wins.
    pub committed_seconds_per_slot: f64,
}

/// A slot's free time, ordered so the heap pops the earliest.
#[derive(Debug, Clone, Copy, PartialEq)]
struct At(f64);

impl Eq for At {}

impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for At {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Puts `count` jobs of `length` seconds, one after the other, in whichever slot frees first.
fn list_schedule(slots: &mut [f64], count: u64, length: f64) {
    stack_jobs(slots, (0..count).map(|_| length));
}

/// Puts each job of `lengths`, in order, in whichever slot frees first.
fn stack_jobs(slots: &mut [f64], lengths: impl Iterator<Item = f64>) {
    if slots.is_empty() {
        return;
    }
    let mut lengths = lengths.peekable();
    if lengths.peek().is_none() {
        return;
    }
    let mut heap: BinaryHeap<Reverse<At>> = slots.iter().map(|&t| Reverse(At(t))).collect();
    for length in lengths {
        if let Some(Reverse(At(t))) = heap.pop() {
            heap.push(Reverse(At(t + length)));
        }
    }
    for (slot, Reverse(At(t))) in slots
        .iter_mut()
        .zip(heap.into_sorted_vec().into_iter().rev())
    {
        *slot = t;
    }
}

/// Pours `work` seconds into the earliest slots until they are level (`slots` sorted ascending).
fn water_fill(slots: &mut [f64], work: f64) {
    if work <= 0.0 || slots.is_empty() {
        return;
    }
    let mut left = work;
    let mut k = 1; // slots[..k] are being raised together
    loop {
        let level = slots[0];
        let next = slots.get(k).copied().unwrap_or(f64::INFINITY);
        let room = (next - level) * k as f64;
        if room >= left {
            let top = level + left / k as f64;
            slots[..k].iter_mut().for_each(|s| *s = top);
            return;
        }
        left -= room;
        slots[..k].iter_mut().for_each(|s| *s = next);
        k += 1;
    }
}

/// Finite and non-negative, or `fallback`.
fn seconds(x: f64, fallback: f64) -> f64 {
    if x.is_finite() && x >= 0.0 {
        x
    } else {
        fallback
    }
}

pub fn score(c: &Candidate, policy: &Policy, has_local: bool) -> Score {
    let load = c.load.clone().unwrap_or(Load {
        capacity: 1,
        running: 0,
        queued: 0,
        backlog_seconds: 0.0,
        running_remaining: Vec::new(),
    });
    let t = policy.default_job_seconds;
    let (pressure, committed) = if load.capacity == 0 {
        let n = f64::from(load.running) + f64::from(load.queued) + f64::from(c.pending);
        (NO_CAPACITY_SECONDS + n * t, NO_CAPACITY_SECONDS)
    } else {
        let cap = load.capacity as usize;
        let age = seconds(c.age_seconds, 0.0);
        // When each running job frees its slot.
        let mut running: Vec<f64> = load
            .running_remaining
            .iter()
            .map(|r| (seconds(*r, t) - age).max(0.0))
            .collect();
        let unknown = (load.running as usize).saturating_sub(running.len());
        running.extend(std::iter::repeat_n(t, unknown));
        running.sort_by(f64::total_cmp);
        let mut slots = vec![0.0; cap];
        for (slot, r) in slots.iter_mut().zip(running.iter()) {
            *slot = *r;
        }
        // Running jobs beyond the live capacity (workers gone since) still hold their slots.
        stack_jobs(&mut slots, running.iter().skip(cap).copied());
        slots.sort_by(f64::total_cmp);
        let idle = slots.iter().filter(|s| **s <= 0.0).count() as u64;
        let ahead = u64::from(load.queued) + u64::from(c.pending);
        let queued_work = if load.backlog_seconds > 0.0 && load.backlog_seconds.is_finite() {
            load.backlog_seconds * cap as f64
        } else {
            f64::from(load.queued) * t
        };
        water_fill(&mut slots, queued_work);
        list_schedule(&mut slots, u64::from(c.pending), t);
        let committed = slots.iter().sum::<f64>() / cap as f64;
        if ahead < idle {
            // A slot is still free for this job, even after the queued and pending ones.
            let free_after = idle - ahead;
            (-((free_after - 1) as f64) / cap as f64 * t, committed)
        } else {
            let start = slots.iter().copied().fold(f64::INFINITY, f64::min);
            (start.max(0.0), committed)
        }
    };
    let locality = if has_local && !c.local {
        policy.remote_penalty_seconds
    } else {
        0.0
    };
    Score {
        pressure_seconds: pressure,
        estimated_start_seconds: pressure.max(0.0),
        score: pressure + locality + c.cost * policy.cost_weight_seconds,
        committed_seconds_per_slot: committed,
    }
}

/// Index of the best eligible candidate, or `None` when none is eligible.
pub fn choose(candidates: &[Candidate], policy: &Policy) -> Option<usize> {
    let has_local = candidates.iter().any(|c| c.local);
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.eligible)
        .map(|(i, c)| (i, score(c, policy, has_local)))
        .min_by(|(ia, a), (ib, b)| {
            a.score
                .total_cmp(&b.score)
                .then(
                    a.committed_seconds_per_slot
                        .total_cmp(&b.committed_seconds_per_slot),
                )
                .then(ia.cmp(ib))
        })
        .map(|(i, _)| i)
}

/// Placements never confirmed by a load reading (the cluster stopped answering) are forgotten
/// after this long, so the pending count cannot grow without bound.
pub const PENDING_MAX_AGE: Duration = Duration::from_secs(120);

/// The edge's memory of the jobs it placed on one cluster that no load reading includes yet:
/// the `pending` of a [`Candidate`]. Without it a burst between two readings would herd onto the
/// cluster that looked emptiest.
///
/// A reading that *started* `settle` after a placement includes that job (the cluster had time
/// to queue it); a reading that started sooner may predate it, so the job stays pending. A
/// placement no reading ever confirms (the cluster stopped answering) is forgotten after
/// [`PENDING_MAX_AGE`]. Time is passed in; nothing here reads a clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingPlacements {
    placed: Vec<Instant>,
}

impl PendingPlacements {
    /// A job was placed at `now`.
    pub fn record(&mut self, now: Instant) {
        self.placed.push(now);
    }

    /// A load reading that started at `read_started` arrived: placements made at least
    /// `settle` before it are counted in it now.
    pub fn settle(&mut self, read_started: Instant, settle: Duration) {
        self.placed
            .retain(|p| p.checked_add(settle).is_none_or(|t| t > read_started));
    }

    /// Forgets placements older than [`PENDING_MAX_AGE`] at `now`.
    pub fn expire(&mut self, now: Instant) {
        self.placed
            .retain(|p| now.duration_since(*p) < PENDING_MAX_AGE);
    }

    /// How many placements still count as load on top of the last reading at `now`.
    pub fn count(&self, now: Instant) -> u32 {
        self.placed
            .iter()
            .filter(|p| now.duration_since(**p) < PENDING_MAX_AGE)
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(capacity: u32) -> Candidate {
        Candidate {
            load: Some(Load {
                capacity,
                running: 0,
                queued: 0,
                backlog_seconds: 0.0,
                running_remaining: Vec::new(),
            }),
            age_seconds: 0.0,
            pending: 0,
            cost: 1.0,
            local: false,
            eligible: true,
        }
    }

    /// Places `jobs` one after the other, counting each as pending like the controller does.
    fn burst(mut cands: Vec<Candidate>, jobs: usize, policy: &Policy) -> Vec<u32> {
        let mut counts = vec![0; cands.len()];
        for _ in 0..jobs {
            let i = choose(&cands, policy).unwrap();
            cands[i].pending += 1;
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn a_burst_spreads_in_proportion_to_free_capacity() {
        let p = Policy::default();
        assert_eq!(burst(vec![idle(3), idle(1)], 8, &p), vec![6, 2]);
        assert_eq!(burst(vec![idle(1), idle(3)], 8, &p), vec![2, 6]);
        assert_eq!(burst(vec![idle(2), idle(2)], 10, &p), vec![5, 5]);
        assert_eq!(
            burst(vec![idle(4), idle(2), idle(2)], 16, &p),
            vec![8, 4, 4]
        );
    }

    #[test]
    fn the_first_jobs_go_to_free_slots_not_to_the_biggest_cluster() {
        let p = Policy::default();
        let mut busy = idle(8);
        busy.load.as_mut().unwrap().running = 8;
        // 8 slots all taken vs one free slot: the free one wins even though it is smaller.
        assert_eq!(choose(&[busy, idle(1)], &p), Some(1));
    }

    #[test]
    fn a_deep_queue_gets_fewer_jobs() {
        let p = Policy::default();
        let mut deep = idle(3);
        deep.load = Some(Load {
            capacity: 3,
            running: 3,
            queued: 12,
            backlog_seconds: 240.0,
            running_remaining: Vec::new(),
        });
        let mut shallow = idle(1);
        shallow.load.as_mut().unwrap().running = 1;
        let counts = burst(vec![deep, shallow], 6, &p);
        assert!(counts[1] > counts[0], "{counts:?}");
    }

    #[test]
    fn more_work_never_lowers_a_score() {
        let p = Policy::default();
        let mut base = idle(3);
        base.load.as_mut().unwrap().running = 3;
        let before = score(&base, &p, false).score;
        // One short job queued behind three running ones: the cluster must not look better.
        let mut more = base.clone();
        let l = more.load.as_mut().unwrap();
        l.queued = 1;
        l.backlog_seconds = 7.0 / 3.0;
        assert!(score(&more, &p, false).score >= before);
        // The start time is a step function (a job waits for a whole slot), so one more job can
        // leave it unchanged; the ranking, with its tie-break, still strictly worsens.
        let rank = |c: &Candidate| {
            let s = score(c, &p, false);
            (s.score, s.committed_seconds_per_slot)
        };
        for (running, queued, pending) in [(0, 0, 0), (1, 0, 0), (3, 0, 1), (3, 2, 0), (0, 5, 2)] {
            let mut c = idle(3);
            let l = c.load.as_mut().unwrap();
            (l.running, l.queued, l.backlog_seconds) = (running, queued, f64::from(queued) * 4.0);
            c.pending = pending;
            let r0 = rank(&c);
            let mut c2 = c.clone();
            c2.pending += 1;
            assert!(rank(&c2) > r0, "{c:?}");
            let l2 = c.load.as_mut().unwrap();
            l2.queued += 1;
            l2.backlog_seconds += 4.0 / 3.0;
            assert!(rank(&c) > r0, "{c:?}");
        }
    }

    #[test]
    fn backlog_seconds_set_the_job_length() {
        let p = Policy::default();
        // Same number of queued jobs, but the first cluster's are ten times longer.
        let mut long = idle(2);
        long.load = Some(Load {
            capacity: 2,
            running: 2,
            queued: 4,
            backlog_seconds: 1200.0,
            running_remaining: Vec::new(),
        });
        let mut short = long.clone();
        short.load.as_mut().unwrap().backlog_seconds = 120.0;
        let s_long = score(&long, &p, false);
        let s_short = score(&short, &p, false);
        assert!(s_long.estimated_start_seconds > 5.0 * s_short.estimated_start_seconds);
        assert_eq!(choose(&[long, short], &p), Some(1));
    }

    #[test]
    fn estimated_start_is_zero_with_free_slots_and_grows_with_the_queue() {
        let p = Policy::default();
        let free = score(&idle(3), &p, false);
        assert_eq!(free.estimated_start_seconds, 0.0);
        assert!(free.pressure_seconds < 0.0);
        assert_eq!(free.committed_seconds_per_slot, 0.0);
        let mut full = idle(2);
        full.load.as_mut().unwrap().running = 2;
        // Two running jobs of unknown length (60 s each), then two pending ones, one per slot.
        full.pending = 2;
        assert_eq!(score(&full, &p, false).estimated_start_seconds, 120.0);
    }

    #[test]
    fn pending_placements_count_until_the_next_reading() {
        let p = Policy::default();
        let a = idle(1);
        let mut b = idle(1);
        assert_eq!(
            choose(&[a.clone(), b.clone()], &p),
            Some(0),
            "tie: config order"
        );
        b.pending = 0;
        let mut a2 = a;
        a2.pending = 1;
        assert_eq!(choose(&[a2, b], &p), Some(1));
    }

    #[test]
    fn locality_wins_ties_but_not_long_waits() {
        let p = Policy::default();
        let mut local = idle(1);
        local.local = true;
        let remote = idle(1);
        assert_eq!(choose(&[remote.clone(), local.clone()], &p), Some(1));
        local.load.as_mut().unwrap().running = 1; // 60 s wait vs 5 s penalty
        assert_eq!(choose(&[remote, local], &p), Some(0));
        // Without a local cluster nobody pays the penalty.
        assert_eq!(
            score(&idle(1), &p, false).score,
            score(&idle(1), &p, false).score
        );
    }

    #[test]
    fn cheaper_clusters_win_when_waits_are_similar() {
        let p = Policy::default();
        let mut spot = idle(1);
        spot.cost = 0.5;
        let on_demand = idle(1);
        assert_eq!(choose(&[on_demand.clone(), spot.clone()], &p), Some(1));
        // ...but not when the cheap one would make the job wait a minute.
        spot.load.as_mut().unwrap().running = 1;
        assert_eq!(choose(&[on_demand, spot], &p), Some(0));
    }

    #[test]
    fn ineligible_and_workerless_clusters() {
        let p = Policy::default();
        let mut drained = idle(10);
        drained.eligible = false;
        assert_eq!(choose(&[drained.clone(), idle(1)], &p), Some(1));
        assert_eq!(choose(&[drained], &p), None);
        assert_eq!(choose(&[], &p), None);
        let mut none = idle(0);
        none.load.as_mut().unwrap().capacity = 0;
        let mut queue = idle(1);
        queue.load.as_mut().unwrap().queued = 50;
        assert_eq!(choose(&[none, queue], &p), Some(1));
    }

    #[test]
    fn an_unread_cluster_counts_as_one_idle_slot() {
        let p = Policy::default();
        let mut unknown = idle(1);
        unknown.load = None;
        assert_eq!(score(&unknown, &p, false), score(&idle(1), &p, false));
    }

    /// A cluster whose running jobs have these seconds left (one slot each).
    fn running(remaining: &[f64], capacity: u32) -> Candidate {
        let mut c = idle(capacity);
        let l = c.load.as_mut().unwrap();
        l.running = remaining.len() as u32;
        l.running_remaining = remaining.to_vec();
        c
    }

    #[test]
    fn the_slot_that_frees_first_wins() {
        let p = Policy::default();
        // gcp's one job ends in 2 s; every aws slot is busy for 12 s or more.
        let aws = running(&[12.0, 13.0, 14.0], 3);
        let gcp = running(&[2.0], 1);
        assert_eq!(choose(&[aws.clone(), gcp.clone()], &p), Some(1));
        assert_eq!(score(&gcp, &p, false).estimated_start_seconds, 2.0);
        // The other way round: one aws slot frees in a second.
        let aws = running(&[1.0, 13.0, 14.0], 3);
        let gcp = running(&[14.0], 1);
        assert_eq!(choose(&[aws, gcp], &p), Some(0));
    }

    #[test]
    fn an_older_reading_has_less_left() {
        let p = Policy::default();
        let fresh = running(&[1.0, 9.0, 9.0], 3);
        let mut old = running(&[3.0], 1);
        assert_eq!(choose(&[fresh.clone(), old.clone()], &p), Some(0));
        old.age_seconds = 2.5;
        assert!((score(&old, &p, false).estimated_start_seconds - 0.5).abs() < 1e-9);
        assert_eq!(choose(&[fresh, old.clone()], &p), Some(1));
        // Past its remaining time the slot counts as free, never as negative time.
        old.age_seconds = 100.0;
        let s = score(&old, &p, false);
        assert_eq!(s.estimated_start_seconds, 0.0);
        assert_eq!(s.committed_seconds_per_slot, 0.0);
    }

    #[test]
    fn pending_jobs_take_the_earliest_slots_at_the_job_length() {
        let p = Policy {
            default_job_seconds: 8.0,
            ..Policy::default()
        };
        let mut c = running(&[1.0, 5.0, 9.0], 3);
        c.pending = 1; // 8 s in the slot free at 1 s: slots 9, 5, 9
        assert_eq!(score(&c, &p, false).estimated_start_seconds, 5.0);
        c.pending = 2; // then 8 s in the slot free at 5 s: 9, 13, 9
        assert_eq!(score(&c, &p, false).estimated_start_seconds, 9.0);
    }

    #[test]
    fn queued_work_fills_the_earliest_slots_first() {
        let p = Policy::default();
        let mut c = running(&[2.0, 4.0, 10.0], 3);
        let l = c.load.as_mut().unwrap();
        l.queued = 2;
        l.backlog_seconds = 2.0; // 6 s in all: 2 s lifts slot 1 to 4, 4 s lifts both to 6
        assert!((score(&c, &p, false).estimated_start_seconds - 6.0).abs() < 1e-9);
    }

    #[test]
    fn running_jobs_without_a_figure_count_at_the_job_length() {
        let p = Policy::default();
        // An older cluster reports only a count: each running job counts as T.
        let mut old = idle(2);
        old.load.as_mut().unwrap().running = 2;
        assert_eq!(score(&old, &p, false).estimated_start_seconds, 60.0);
        let short = Policy {
            default_job_seconds: 10.0,
            ..Policy::default()
        };
        assert_eq!(score(&old, &short, false).estimated_start_seconds, 10.0);
        // Half reported: the reported one frees first.
        old.load.as_mut().unwrap().running_remaining = vec![3.0];
        assert_eq!(score(&old, &p, false).estimated_start_seconds, 3.0);
    }

    #[test]
    fn more_running_jobs_than_slots_stack_on_the_earliest() {
        let p = Policy::default();
        // Capacity fell to 1 (a worker left) while 2 jobs still run.
        let c = running(&[4.0, 6.0], 1);
        assert_eq!(score(&c, &p, false).estimated_start_seconds, 10.0);
    }

    #[test]
    fn garbage_figures_stay_finite() {
        let p = Policy::default();
        let mut c = running(&[f64::NAN, -3.0, f64::INFINITY], 3);
        let l = c.load.as_mut().unwrap();
        l.backlog_seconds = f64::INFINITY;
        l.queued = 4;
        let s = score(&c, &p, false);
        assert!(
            s.score.is_finite() && s.estimated_start_seconds >= 0.0,
            "{s:?}"
        );
    }

    #[test]
    fn water_fill_and_list_schedule() {
        let mut s = vec![0.0, 2.0, 10.0];
        water_fill(&mut s, 5.0);
        assert_eq!(s, vec![3.5, 3.5, 10.0]);
        water_fill(&mut s, 100.0);
        assert!(
            s.iter().all(|x| (x - (17.0 + 100.0) / 3.0).abs() < 1e-9),
            "{s:?}"
        );
        let mut s = vec![1.0, 5.0, 9.0];
        list_schedule(&mut s, 3, 8.0);
        s.sort_by(f64::total_cmp);
        assert_eq!(s, vec![9.0, 13.0, 17.0]);
    }

    /// Small deterministic generator, so the property test needs no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn adding_any_kind_of_work_never_lowers_a_score_randomised() {
        let p = Policy::default();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let cap = rng.below(5) as u32;
            let n_run = rng.below(7) as usize;
            let remaining: Vec<f64> = (0..n_run).map(|_| rng.below(300) as f64 / 10.0).collect();
            let mut c = running(&remaining, cap);
            let l = c.load.as_mut().unwrap();
            l.capacity = cap;
            l.running = n_run as u32 + rng.below(2) as u32; // sometimes one without a figure
            l.queued = rng.below(5) as u32;
            // A cluster with queued jobs reports their work (an unknown backlog is the
            // fallback, and learning it is new information, not new work).
            l.backlog_seconds = if l.queued > 0 {
                (1 + rng.below(200)) as f64 / 10.0
            } else {
                0.0
            };
            c.pending = rng.below(4) as u32;
            c.age_seconds = rng.below(50) as f64 / 10.0;
            let before = score(&c, &p, false).score;
            let mut more = c.clone();
            let l = more.load.as_mut().unwrap();
            match rng.below(5) {
                0 => more.pending += 1,
                1 => {
                    l.queued += 1;
                    l.backlog_seconds += (1 + rng.below(100)) as f64 / 10.0;
                }
                2 => {
                    l.running += 1;
                    l.running_remaining.push(rng.below(300) as f64 / 10.0);
                }
                3 => {
                    if let Some(r) = l.running_remaining.first_mut() {
                        *r += 1.0 + rng.below(50) as f64 / 10.0;
                    }
                }
                _ => l.backlog_seconds += rng.below(100) as f64 / 10.0,
            }
            let after = score(&more, &p, false).score;
            assert!(
                after >= before - 1e-9,
                "{c:?} -> {more:?}: {before} > {after}"
            );
        }
    }

    #[test]
    fn pending_placements_settle_with_a_reading_that_started_after_them() {
        let t0 = Instant::now();
        let settle = Duration::from_millis(1000);
        let mut p = PendingPlacements::default();
        p.record(t0);
        p.record(t0 + Duration::from_millis(500));
        assert_eq!(p.count(t0 + Duration::from_millis(600)), 2);
        // A reading that started right after the placements may predate them.
        p.settle(t0 + Duration::from_millis(600), settle);
        assert_eq!(p.count(t0 + Duration::from_millis(700)), 2);
        // One that started a settle time after the first includes it, not the second.
        p.settle(t0 + Duration::from_millis(1200), settle);
        assert_eq!(p.count(t0 + Duration::from_millis(1300)), 1);
        p.settle(t0 + Duration::from_millis(1600), settle);
        assert_eq!(p.count(t0 + Duration::from_millis(1700)), 0);
    }

    #[test]
    fn unconfirmed_placements_are_forgotten_after_the_max_age() {
        let t0 = Instant::now();
        let mut p = PendingPlacements::default();
        p.record(t0);
        p.record(t0 + Duration::from_secs(60));
        let later = t0 + PENDING_MAX_AGE;
        assert_eq!(p.count(later), 1, "the first is too old to count");
        p.expire(later);
        assert_eq!(p, {
            let mut q = PendingPlacements::default();
            q.record(t0 + Duration::from_secs(60));
            q
        });
        assert_eq!(p.count(later + Duration::from_secs(60)), 0);
    }
}
