//! Which cluster a new job goes to: a pure function of what the controller knows.
//!
//! # The model
//!
//! Each cluster is a pool of `capacity` job slots. From its latest `/v1/load` reading plus the
//! placements the edge made since that reading (`pending`, so that a burst between two readings
//! does not herd onto the cluster that looked emptiest), a new job waits for the queued work and
//! for a slot to free among the jobs whose length the reading does not tell (the `running` ones
//! and the `pending` ones, counted at `T = default_job_seconds` each):
//!
//! ```text
//! pressure = backlog_seconds + (running + pending + 1 - capacity) · T / capacity
//! estimated start = max(0, pressure)
//! ```
//!
//! `backlog_seconds` is the cluster's own estimate of its queued work per slot (when it reports
//! queued jobs without an estimate, they count at `T` too). Every term only grows with more work,
//! so adding a job to a cluster never makes it look better. `pressure` is deliberately not
//! clamped when ranking: below zero it measures idle slots, so among clusters that could all start
//! the job at once the one with the most free capacity wins, and a burst spreads in proportion to
//! free capacity instead of filling one cluster's slots first.
//!
//! The score adds two preferences expressed in seconds, so they trade off against waiting time:
//! `remote_penalty_seconds` for every cluster that is not `local_cluster` (data gravity, egress)
//! and `cost · cost_weight_seconds` (a spot cluster with cost 0.5 is worth waiting 5 s longer for,
//! with the default weight). Lowest score wins; ties go to the larger free fraction, then to
//! configuration order, so the choice is deterministic.
//!
//! Only eligible clusters (healthy and accepting) compete; the caller decides what to do when
//! none is (the edge fails open to all of them).

use serde::Serialize;

/// Penalty standing in for "never starts" when a cluster reports no live worker slots, large
/// enough to lose against any real queue but still ordered by queue length.
const NO_CAPACITY_SECONDS: f64 = 1.0e7;

/// The parts of a `/v1/load` reading the policy uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub capacity: u32,
    pub running: u32,
    pub queued: u32,
    pub backlog_seconds: f64,
}

impl From<&reelay_protocol::LoadReport> for Load {
    fn from(r: &reelay_protocol::LoadReport) -> Self {
        Load {
            capacity: r.capacity,
            running: r.running,
            queued: r.queued,
            backlog_seconds: r.backlog_seconds,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `None` before the first reading: treated as one idle slot.
    pub load: Option<Load>,
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
    /// Share of capacity not taken by running, queued or pending jobs (tie-break).
    pub free_fraction: f64,
}

pub fn score(c: &Candidate, policy: &Policy, has_local: bool) -> Score {
    let load = c.load.unwrap_or(Load {
        capacity: 1,
        running: 0,
        queued: 0,
        backlog_seconds: 0.0,
    });
    let n = f64::from(load.running) + f64::from(load.queued) + f64::from(c.pending);
    let per_job = policy.default_job_seconds;
    let (pressure, free_fraction) = if load.capacity == 0 {
        (NO_CAPACITY_SECONDS + n * per_job, 0.0)
    } else {
        let cap = f64::from(load.capacity);
        let queued_work = if load.backlog_seconds > 0.0 {
            load.backlog_seconds
        } else {
            f64::from(load.queued) * per_job / cap
        };
        let unknown = f64::from(load.running) + f64::from(c.pending);
        (
            queued_work + (unknown + 1.0 - cap) * per_job / cap,
            ((cap - n) / cap).max(0.0),
        )
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
        free_fraction,
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
                .then(b.free_fraction.total_cmp(&a.free_fraction))
                .then(ia.cmp(ib))
        })
        .map(|(i, _)| i)
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
            }),
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
        for (running, queued, pending) in [(0, 0, 0), (1, 0, 0), (3, 0, 1), (3, 2, 0), (0, 5, 2)] {
            let mut c = idle(3);
            let l = c.load.as_mut().unwrap();
            (l.running, l.queued, l.backlog_seconds) = (running, queued, f64::from(queued) * 4.0);
            c.pending = pending;
            let s0 = score(&c, &p, false).score;
            let mut c2 = c.clone();
            c2.pending += 1;
            assert!(score(&c2, &p, false).score > s0);
            let l2 = c.load.as_mut().unwrap();
            l2.queued += 1;
            l2.backlog_seconds += 4.0 / 3.0;
            assert!(score(&c, &p, false).score > s0);
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
        assert_eq!(free.free_fraction, 1.0);
        let mut full = idle(2);
        full.load.as_mut().unwrap().running = 2;
        full.pending = 2; // two ahead once the slots free: (4 + 1 - 2) · 60 / 2
        assert_eq!(score(&full, &p, false).estimated_start_seconds, 90.0);
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
}
