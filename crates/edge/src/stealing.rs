//! Whether an idle cluster should take a ready task from another cluster, and which: a pure
//! function of load readings and prices (issue 16, part 2).
//!
//! Wired: each cluster's `/v1/load` reports the task a peer's claim would take now
//! (`LoadReport::offer`); the edge keeps the latest reading of every cluster
//! ([`crate::fleet::Fleet::steal`]) and answers `GET /edge/steal?thief={cluster}` with
//! [`choose`]'s decision. A thief's idle worker slot (`[steal] edge` in its cluster's config)
//! asks there and claims exactly the named task from the named cluster.
//!
//! # The model
//!
//! A thief is a cluster with an idle slot and no ready task of its own. Each other cluster
//! offers a task at the front of its queue (the longest of the first few in line: see
//! `JobStore::peer_offer`; called "the head" below). The head starts at home when
//! the first of home's slots frees ([`home_wait_seconds`]: now if a slot is idle, else the
//! shortest remaining time of its running tasks, less the reading's age — the
//! (running − capacity + 1)-th shortest when more run than there are live slots; never, when
//! the cluster reports no live slot). Stolen, it starts after its input crossed the link, and ends
//! later by the time its outputs take to come back; encoding speed is assumed equal.
//!
//! ```text
//! saved = home_wait − (input_bytes + output_bytes) / link_bytes_per_second
//! cost  = (input_bytes + output_bytes) / 1e9 × egress_usd_per_gb(from, to) / wait_usd_per_hour × 3600
//! steal when saved − cost ≥ min_seconds_saved
//!        and ready_seconds + home_wait ≥ min_wait_seconds
//! ```
//!
//! Among offers that pass, the one whose task would wait longest at home wins (ties: the order
//! of the offers, i.e. configuration order), so the most starved queue is relieved first.
//!
//! # Why nothing thrashes
//!
//! **Patience** (`min_wait_seconds`, queue hopping as MediaConvert does it, whose jobs hop
//! queues after a wait of minutes). The edge placed the head where it would start first, from
//! the load it saw at submit time; a wait of a few seconds after that is the queueing placement
//! foresaw, and under balanced load every idle slot elsewhere would otherwise take such a head
//! and pay a transfer for a few seconds (the balanced benchmark's seed 2 moved 2 tasks this
//! way, each saving 2–3 s). So a head moves only when its whole wait — what it has waited
//! since it became ready ([`ReadyTask::ready_seconds`]) plus what it would still wait at home —
//! reaches `min_wait_seconds`: a queue that went wrong after placement (a cluster that lost
//! workers, a burst of long jobs), not one that is merely busy. The sum does not change while
//! the head waits (one grows as the other shrinks), so a thief asking again and again does not
//! wear it down; the next head, which has waited behind this one, passes sooner.
//!
//! A task that moved once is never offered again, so no task moves twice. Work as a whole could
//! still flow both ways under balanced load: two clusters each briefly idle while the other's
//! head waits a few seconds, each taking one task from the other (the balanced benchmark saw one
//! such pair in five seeds, each passing a 2 s `min_seconds_saved`). Each move judged alone was
//! right; the pair together only paid two transfers. So a thief never takes from a cluster that
//! itself took a task *from this thief* in the last `cooldown_seconds`
//! ([`Offer::took_from_thief_seconds_ago`]): that cluster had an idle slot moments ago, and work
//! just came the other way, so its queue is not the starved one. Other pairs are unaffected (a
//! third cluster still relieves either), and one-way relief (a film's pieces, a cluster that
//! lost workers) never trips it.

use crate::placement::Load;
use serde::Serialize;

/// Seconds standing in for "never starts at home": a cluster with no live slot.
const NEVER_SECONDS: f64 = 1.0e7;

/// Prices and thresholds. The defaults are deliberately conservative: a task must save at
/// least a minute after paying for the transfer, and a GB of egress is charged as the waiting
/// time it is worth.
#[derive(Debug, Clone, PartialEq)]
pub struct StealingPolicy {
    pub enabled: bool,
    /// The smallest saving, after transfer time and egress price, worth a move.
    pub min_seconds_saved: f64,
    /// Throughput assumed between two clouds for inputs and outputs.
    pub link_bytes_per_second: f64,
    /// What an hour of one job's waiting is worth, to turn an egress price into seconds.
    pub wait_usd_per_hour: f64,
    /// Egress price per GB from one cloud to another (`(from, to)`); pairs not listed cost
    /// `default_egress_usd_per_gb`.
    pub egress_usd_per_gb: Vec<((String, String), f64)>,
    pub default_egress_usd_per_gb: f64,
    /// After `a` takes a task from `b`, `b` takes nothing from `a` for this long (see the
    /// module docs: the hysteresis that keeps balanced load still).
    pub cooldown_seconds: f64,
    /// A head moves only once its wait so far plus its wait still to come at home reaches this
    /// (see the module docs: patience).
    pub min_wait_seconds: f64,
}

impl Default for StealingPolicy {
    fn default() -> Self {
        StealingPolicy {
            enabled: false,
            min_seconds_saved: 60.0,
            link_bytes_per_second: 50.0e6,
            wait_usd_per_hour: 1.0,
            egress_usd_per_gb: Vec::new(),
            // Internet egress list price of both AWS and GCP at the first tier.
            default_egress_usd_per_gb: 0.09,
            cooldown_seconds: 60.0,
            min_wait_seconds: 120.0,
        }
    }
}

impl StealingPolicy {
    fn egress_price(&self, from: &str, to: &str) -> f64 {
        self.egress_usd_per_gb
            .iter()
            .find(|((f, t), _)| f == from && t == to)
            .map_or(self.default_egress_usd_per_gb, |(_, p)| *p)
    }
}

/// The head of one cluster's queue, as its load reading describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyTask {
    pub task_id: String,
    pub input_bytes: u64,
    /// The outputs' expected size (the caller's estimate, e.g. the input's size for a segment).
    pub output_bytes: u64,
    /// Seconds it had been ready (every dependency done) when the reading was taken.
    pub ready_seconds: f64,
    /// True once the task ran on another cluster: it never moves again.
    pub moved_before: bool,
}

/// What one other cluster offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub cluster: String,
    pub cloud: String,
    pub load: Load,
    /// Seconds since `load` was read.
    pub age_seconds: f64,
    pub oldest_ready: Option<ReadyTask>,
    /// Seconds since this cluster was last told to take a task from the thief; `None`: never.
    pub took_from_thief_seconds_ago: Option<f64>,
}

/// The cluster asking for work.
#[derive(Debug, Clone, PartialEq)]
pub struct Thief {
    pub cluster: String,
    pub cloud: String,
    pub idle_slots: u32,
    pub ready_tasks: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Steal {
        from: String,
        task_id: String,
        home_wait_seconds: f64,
        transfer_seconds: f64,
        egress_seconds: f64,
        saved_seconds: f64,
    },
    Stay {
        reason: StayReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StayReason {
    Disabled,
    /// The thief has its own work or no free slot.
    ThiefBusy,
    /// No other cluster has a ready task that has not moved before.
    NothingReady,
    /// Every candidate would save less than the transfer and egress cost it.
    NotWorthIt,
    /// Every candidate worth its cost would wait, in all, less than `min_wait_seconds`: a
    /// queue that is busy, not one that went wrong.
    ShortWait,
    /// Every candidate's cluster took a task from the thief within `cooldown_seconds`.
    Cooldown,
}

impl StayReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StayReason::Disabled => "disabled",
            StayReason::ThiefBusy => "thief_busy",
            StayReason::NothingReady => "nothing_ready",
            StayReason::NotWorthIt => "not_worth_it",
            StayReason::ShortWait => "short_wait",
            StayReason::Cooldown => "cooldown",
        }
    }
}

/// The reason a thief the edge has no load reading of gets (it cannot say whether it is idle).
pub const THIEF_UNKNOWN: &str = "thief_unknown";

impl Decision {
    /// The metrics label of this decision: `steal`, or the reason to stay.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Steal { .. } => "steal",
            Decision::Stay { reason } => reason.as_str(),
        }
    }

    /// The decision as `GET /edge/steal` answers it (seconds to one decimal).
    pub fn answer(&self) -> reelay_protocol::StealDecision {
        let tenth = |x: f64| (x * 10.0).round() / 10.0;
        match self {
            Decision::Steal {
                from,
                task_id,
                transfer_seconds,
                egress_seconds,
                saved_seconds,
                ..
            } => reelay_protocol::StealDecision {
                from: Some(from.clone()),
                task_id: Some(task_id.clone()),
                saved_seconds: Some(tenth(*saved_seconds)),
                cost_seconds: Some(tenth(transfer_seconds + egress_seconds)),
                reason: None,
            },
            Decision::Stay { reason } => stay_answer(reason.as_str()),
        }
    }
}

/// `{"from": null, "reason": …}`.
pub fn stay_answer(reason: &str) -> reelay_protocol::StealDecision {
    reelay_protocol::StealDecision {
        from: None,
        task_id: None,
        saved_seconds: None,
        cost_seconds: None,
        reason: Some(reason.to_string()),
    }
}

/// The head of a cluster's queue as its load report offers it: what the owner says a peer's
/// claim would take now. The owner never offers a task that moved, so `moved_before` is false.
pub fn ready_task(offer: &reelay_protocol::StealOffer) -> ReadyTask {
    ReadyTask {
        task_id: offer.task_id.clone(),
        input_bytes: offer.input_bytes,
        output_bytes: offer.output_bytes,
        ready_seconds: if offer.ready_seconds.is_finite() {
            offer.ready_seconds.max(0.0)
        } else {
            0.0
        },
        moved_before: false,
    }
}

/// When the head of `load`'s queue starts at home, in seconds from now.
///
/// With more tasks running than live slots (workers died and took their slots with them, but
/// their tasks still run elsewhere in the cluster or have not lapsed yet), the first ending
/// task frees no slot: `running − capacity` of them must end first, so the head starts when the
/// (running − capacity + 1)-th smallest remaining time passes.
pub fn home_wait_seconds(load: &Load, age_seconds: f64) -> f64 {
    if load.capacity == 0 {
        return NEVER_SECONDS;
    }
    if load.running < load.capacity {
        return 0.0;
    }
    let age = if age_seconds.is_finite() {
        age_seconds.max(0.0)
    } else {
        0.0
    };
    let mut left: Vec<f64> = load
        .running_remaining
        .iter()
        .filter(|r| r.is_finite())
        .map(|r| (r - age).max(0.0))
        .collect();
    left.sort_by(f64::total_cmp);
    let nth = (load.running - load.capacity) as usize;
    // Running tasks without a figure: the reading cannot say, so no saving is claimed.
    left.get(nth).copied().unwrap_or(0.0)
}

/// The decision for `thief` given every other cluster's offer (see the module docs).
pub fn choose(thief: &Thief, offers: &[Offer], policy: &StealingPolicy) -> Decision {
    let stay = |reason| Decision::Stay { reason };
    if !policy.enabled {
        return stay(StayReason::Disabled);
    }
    if thief.idle_slots == 0 || thief.ready_tasks > 0 {
        return stay(StayReason::ThiefBusy);
    }
    let mut best: Option<Decision> = None;
    let mut best_wait = f64::NEG_INFINITY;
    let (mut any_ready, mut any_cooling, mut any_judged) = (false, false, false);
    let mut any_short = false;
    for offer in offers.iter().filter(|o| o.cluster != thief.cluster) {
        let Some(task) = offer.oldest_ready.as_ref().filter(|t| !t.moved_before) else {
            continue;
        };
        any_ready = true;
        if offer
            .took_from_thief_seconds_ago
            .is_some_and(|ago| ago < policy.cooldown_seconds)
        {
            any_cooling = true;
            continue;
        }
        any_judged = true;
        let wait = home_wait_seconds(&offer.load, offer.age_seconds);
        let bytes = task.input_bytes.saturating_add(task.output_bytes) as f64;
        let transfer = bytes / policy.link_bytes_per_second.max(1.0);
        let egress = bytes / 1e9 * policy.egress_price(&offer.cloud, &thief.cloud)
            / policy.wait_usd_per_hour.max(1e-9)
            * 3600.0;
        let saved = wait - transfer;
        if saved - egress < policy.min_seconds_saved {
            continue;
        }
        let age = if offer.age_seconds.is_finite() {
            offer.age_seconds.max(0.0)
        } else {
            0.0
        };
        if task.ready_seconds + age + wait < policy.min_wait_seconds {
            any_short = true;
            continue;
        }
        if wait <= best_wait {
            continue;
        }
        best_wait = wait;
        best = Some(Decision::Steal {
            from: offer.cluster.clone(),
            task_id: task.task_id.clone(),
            home_wait_seconds: wait,
            transfer_seconds: transfer,
            egress_seconds: egress,
            saved_seconds: saved - egress,
        });
    }
    best.unwrap_or_else(|| {
        stay(if !any_ready {
            StayReason::NothingReady
        } else if any_cooling && !any_judged {
            StayReason::Cooldown
        } else if any_short {
            StayReason::ShortWait
        } else {
            StayReason::NotWorthIt
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn policy() -> StealingPolicy {
        StealingPolicy {
            enabled: true,
            ..StealingPolicy::default()
        }
    }

    fn thief() -> Thief {
        Thief {
            cluster: "gcp".into(),
            cloud: "gcp".into(),
            idle_slots: 1,
            ready_tasks: 0,
        }
    }

    /// A full cluster whose slots free after `remaining` seconds, with a ready task of `mb` MB
    /// that has been ready for two minutes (past the default patience: these tests are about
    /// the price; the patience tests set `ready_seconds` themselves).
    fn offer(cluster: &str, remaining: &[f64], mb: u64) -> Offer {
        Offer {
            cluster: cluster.into(),
            cloud: "aws".into(),
            load: Load {
                capacity: remaining.len() as u32,
                running: remaining.len() as u32,
                queued: 1,
                backlog_seconds: 30.0,
                running_remaining: remaining.to_vec(),
            },
            age_seconds: 0.0,
            oldest_ready: Some(ReadyTask {
                task_id: format!("{cluster}-t1"),
                input_bytes: mb * MB,
                output_bytes: mb * MB / 2,
                ready_seconds: 120.0,
                moved_before: false,
            }),
            took_from_thief_seconds_ago: None,
        }
    }

    #[test]
    fn a_long_wait_pays_for_a_small_transfer() {
        // Home frees a slot in 600 s; 100 MB + 50 MB cross the link in 3 s and cost
        // 0.15 GB × 0.09 $/GB = 0.0135 $ = 48.6 s of waiting at 1 $/h.
        let d = choose(&thief(), &[offer("aws", &[600.0, 900.0], 100)], &policy());
        let Decision::Steal {
            from,
            task_id,
            transfer_seconds,
            egress_seconds,
            saved_seconds,
            ..
        } = d
        else {
            panic!("expected a steal, got {d:?}");
        };
        assert_eq!((from.as_str(), task_id.as_str()), ("aws", "aws-t1"));
        assert!((transfer_seconds - 3.0).abs() < 1e-9, "{transfer_seconds}");
        assert!((egress_seconds - 48.6).abs() < 1e-6, "{egress_seconds}");
        assert!((saved_seconds - (600.0 - 3.0 - 48.6)).abs() < 1e-6);
    }

    #[test]
    fn the_same_wait_does_not_pay_for_a_large_transfer() {
        // 2 GB + 1 GB: 60 s on the link and 972 s of egress price, more than 600 s saved.
        let d = choose(&thief(), &[offer("aws", &[600.0], 2000)], &policy());
        assert_eq!(
            d,
            Decision::Stay {
                reason: StayReason::NotWorthIt
            }
        );
        // Free egress (a private interconnect priced at 0) makes it worth it.
        let mut cheap = policy();
        cheap.egress_usd_per_gb = vec![(("aws".into(), "gcp".into()), 0.0)];
        assert!(matches!(
            choose(&thief(), &[offer("aws", &[600.0], 2000)], &cheap),
            Decision::Steal { .. }
        ));
    }

    #[test]
    fn savings_just_under_the_threshold_stay_home() {
        // 10 MB + 5 MB: 0.3 s of transfer, 4.86 s of egress; the slot frees in 65 s:
        // 65 − 0.3 − 4.86 = 59.84 < 60.
        let d = choose(&thief(), &[offer("aws", &[65.0], 10)], &policy());
        assert_eq!(
            d,
            Decision::Stay {
                reason: StayReason::NotWorthIt
            }
        );
        assert!(matches!(
            choose(&thief(), &[offer("aws", &[66.0], 10)], &policy()),
            Decision::Steal { .. }
        ));
    }

    #[test]
    fn balanced_load_moves_nothing() {
        // Both clusters busy with tasks that end within a typical task length: no queue waits
        // long enough to pay for a move, whoever asks.
        for remaining in [[5.0, 20.0], [30.0, 45.0], [50.0, 10.0]] {
            let d = choose(&thief(), &[offer("aws", &remaining, 50)], &policy());
            assert_eq!(
                d,
                Decision::Stay {
                    reason: StayReason::NotWorthIt
                },
                "{remaining:?}"
            );
        }
        // A cluster with a free slot starts its own head now.
        let mut idle = offer("aws", &[600.0, 600.0], 10);
        idle.load.capacity = 3;
        assert_eq!(home_wait_seconds(&idle.load, 0.0), 0.0);
        assert!(matches!(
            choose(&thief(), &[idle], &policy()),
            Decision::Stay { .. }
        ));
    }

    /// The balanced benchmark's pair (seed 2): gcp, briefly idle, took a task from aws; moments
    /// later aws, briefly idle, would take one back. Each move alone passes a 2 s threshold; the
    /// pair only pays two transfers. The cooldown refuses the second, for that pair only and only
    /// for `cooldown_seconds`.
    #[test]
    fn work_that_just_came_one_way_does_not_go_back() {
        let lenient = StealingPolicy {
            min_seconds_saved: 2.0,
            ..policy()
        };
        let aws_thief = Thief {
            cluster: "aws".into(),
            cloud: "aws".into(),
            idle_slots: 1,
            ready_tasks: 0,
        };
        // gcp's head waits 8 s for a slot: worth a move at 2 s, were it not for the cooldown.
        let mut gcp = offer("gcp", &[8.0], 10);
        gcp.cloud = "gcp".into();
        let free = StealingPolicy {
            default_egress_usd_per_gb: 0.0,
            ..lenient.clone()
        };
        assert!(matches!(
            choose(&aws_thief, std::slice::from_ref(&gcp), &free),
            Decision::Steal { .. }
        ));
        // gcp took a task from aws 10 s ago: aws takes nothing back.
        gcp.took_from_thief_seconds_ago = Some(10.0);
        assert_eq!(
            choose(&aws_thief, std::slice::from_ref(&gcp), &free),
            Decision::Stay {
                reason: StayReason::Cooldown
            }
        );
        // Just inside and just past the cooldown.
        gcp.took_from_thief_seconds_ago = Some(free.cooldown_seconds - 0.1);
        assert!(matches!(
            choose(&aws_thief, std::slice::from_ref(&gcp), &free),
            Decision::Stay { .. }
        ));
        gcp.took_from_thief_seconds_ago = Some(free.cooldown_seconds);
        assert!(matches!(
            choose(&aws_thief, std::slice::from_ref(&gcp), &free),
            Decision::Steal { ref from, .. } if from == "gcp"
        ));
        // A third cluster that never took from aws is still relieved while gcp cools down.
        gcp.took_from_thief_seconds_ago = Some(1.0);
        let mut oci = offer("oci", &[8.0], 10);
        oci.cloud = "oci".into();
        assert!(matches!(
            choose(&aws_thief, &[gcp.clone(), oci], &free),
            Decision::Steal { ref from, .. } if from == "oci"
        ));
        // When the cooling offer would not have paid anyway, the answer names the real reason.
        let mut cheap = offer("azure", &[1.0], 10);
        cheap.cloud = "azure".into();
        assert_eq!(
            choose(&aws_thief, &[gcp, cheap], &free),
            Decision::Stay {
                reason: StayReason::NotWorthIt
            }
        );
    }

    #[test]
    fn the_most_starved_queue_is_relieved_first() {
        let offers = [
            offer("aws", &[300.0], 10),
            offer("azure", &[900.0], 10),
            offer("oci", &[900.0], 10),
        ];
        let d = choose(&thief(), &offers, &policy());
        // azure and oci tie at 900 s: the first in configuration order wins.
        assert!(
            matches!(d, Decision::Steal { ref from, .. } if from == "azure"),
            "{d:?}"
        );
    }

    /// aws had 3 slots, two workers died: capacity 1 with 3 tasks still counted running. The
    /// first task to end frees no slot (two run more than the one live slot); the head of the
    /// queue starts when the third shortest ends. Reading the shortest, the edge used to see a
    /// slot in 2 s and answer `not_worth_it` while the queue waited on a 300 s task.
    #[test]
    fn with_more_running_than_slots_the_head_waits_for_the_right_task() {
        let mut shrunk = offer("aws", &[2.0, 300.0, 5.0], 10);
        shrunk.load.capacity = 1;
        assert_eq!(home_wait_seconds(&shrunk.load, 0.0), 300.0);
        assert!(matches!(
            choose(&thief(), &[shrunk.clone()], &policy()),
            Decision::Steal { home_wait_seconds, .. } if home_wait_seconds == 300.0
        ));
        shrunk.load.capacity = 2;
        assert_eq!(home_wait_seconds(&shrunk.load, 1.0), 4.0);
        // Fewer figures than the tasks that must end first: the reading cannot say.
        shrunk.load.running = 5;
        shrunk.load.capacity = 1;
        assert_eq!(home_wait_seconds(&shrunk.load, 0.0), 0.0);
        // As many running as slots: the shortest, as before.
        shrunk.load.running = 3;
        shrunk.load.capacity = 3;
        assert_eq!(home_wait_seconds(&shrunk.load, 0.0), 2.0);
    }

    #[test]
    fn a_dead_cluster_waits_forever_and_the_reading_ages() {
        let mut dead = offer("aws", &[], 10);
        dead.load.capacity = 0;
        assert_eq!(home_wait_seconds(&dead.load, 0.0), NEVER_SECONDS);
        assert!(matches!(
            choose(&thief(), &[dead], &policy()),
            Decision::Steal { .. }
        ));
        // A reading 550 s old of a slot freeing in 600 s: it frees in 50 s now.
        let mut old = offer("aws", &[600.0], 10);
        old.age_seconds = 550.0;
        assert_eq!(home_wait_seconds(&old.load, old.age_seconds), 50.0);
        assert!(matches!(
            choose(&thief(), &[old], &policy()),
            Decision::Stay { .. }
        ));
    }

    #[test]
    fn a_task_moves_at_most_once_and_never_to_itself() {
        let mut moved = offer("aws", &[6000.0], 10);
        moved.oldest_ready.as_mut().unwrap().moved_before = true;
        assert_eq!(
            choose(&thief(), &[moved], &policy()),
            Decision::Stay {
                reason: StayReason::NothingReady
            }
        );
        let own = offer("gcp", &[6000.0], 10);
        assert_eq!(
            choose(&thief(), &[own], &policy()),
            Decision::Stay {
                reason: StayReason::NothingReady
            }
        );
    }

    #[test]
    fn decisions_answer_in_the_wire_shape_with_their_metrics_label() {
        let d = choose(&thief(), &[offer("aws", &[600.0, 900.0], 100)], &policy());
        assert_eq!(d.outcome(), "steal");
        let a = d.answer();
        assert_eq!(a.from.as_deref(), Some("aws"));
        assert_eq!(a.task_id.as_deref(), Some("aws-t1"));
        // 600 − 3 − 48.6 saved; 3 s on the link + 48.6 s of egress price.
        assert_eq!(a.saved_seconds, Some(548.4));
        assert_eq!(a.cost_seconds, Some(51.6));
        assert_eq!(a.reason, None);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["from"], "aws");
        let stay = choose(&thief(), &[offer("aws", &[5.0], 50)], &policy());
        assert_eq!(stay.outcome(), "not_worth_it");
        let json = serde_json::to_value(stay.answer()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"from": null, "reason": "not_worth_it"})
        );
        for (reason, label) in [
            (StayReason::Disabled, "disabled"),
            (StayReason::ThiefBusy, "thief_busy"),
            (StayReason::NothingReady, "nothing_ready"),
        ] {
            assert_eq!(Decision::Stay { reason }.outcome(), label);
        }
        // An offer off the wire never counts as moved (the owner leaves moved tasks out).
        let wire = reelay_protocol::StealOffer {
            task_id: "aws.01J.transcode".into(),
            ready_seconds: 30.0,
            input_bytes: 7,
            output_bytes: 9,
            expected_seconds: 12.0,
        };
        let t = ready_task(&wire);
        assert_eq!(
            (
                t.input_bytes,
                t.output_bytes,
                t.ready_seconds,
                t.moved_before
            ),
            (7, 9, 30.0, false)
        );
        // A reading that cannot say how long it waited claims no wait.
        for odd in [f64::NAN, -4.0, f64::INFINITY] {
            let t = ready_task(&reelay_protocol::StealOffer {
                ready_seconds: odd,
                ..wire.clone()
            });
            assert_eq!(t.ready_seconds, 0.0, "{odd}");
        }
        assert_eq!(
            Decision::Stay {
                reason: StayReason::ShortWait
            }
            .outcome(),
            "short_wait"
        );
    }

    /// The bench's scale: 2–15 s clips, `min_seconds_saved` 2 s, patience 10 s, egress free.
    fn patient() -> StealingPolicy {
        StealingPolicy {
            min_seconds_saved: 2.0,
            min_wait_seconds: 10.0,
            default_egress_usd_per_gb: 0.0,
            ..policy()
        }
    }

    fn waited(mut o: Offer, ready_seconds: f64) -> Offer {
        o.oldest_ready.as_mut().unwrap().ready_seconds = ready_seconds;
        o
    }

    /// The balanced benchmark's moves (seed 2): gcp's one slot busy for another 8 s, its head
    /// ready for 1 s, aws idle. 8 s saved passes a 2 s threshold, but 9 s in all is ordinary
    /// queueing, which placement foresaw when it chose gcp.
    #[test]
    fn a_head_that_waits_a_few_seconds_stays_home() {
        let d = choose(
            &thief(),
            &[waited(offer("aws", &[8.0], 1), 1.0)],
            &patient(),
        );
        assert_eq!(
            d,
            Decision::Stay {
                reason: StayReason::ShortWait
            }
        );
        // Asking again later changes nothing: the wait so far grows as the wait to come
        // shrinks (3 s later the reading is 3 s old: 1 + 3 s waited, 5 s to come, and the
        // 5 s it would still save pass the price).
        let mut later = waited(offer("aws", &[8.0], 1), 1.0);
        later.age_seconds = 3.0;
        assert_eq!(
            choose(&thief(), &[later], &patient()),
            Decision::Stay {
                reason: StayReason::ShortWait
            }
        );
        // The price still decides first: a 1 s wait is not worth a move whatever the patience.
        assert_eq!(
            choose(
                &thief(),
                &[waited(offer("aws", &[1.0], 1), 60.0)],
                &patient()
            ),
            Decision::Stay {
                reason: StayReason::NotWorthIt
            }
        );
    }

    /// The skewed benchmark: aws lost two of its three workers; the head of its queue has been
    /// ready for 40 s and starts when the one running task ends in 4 s. It moves, and so does
    /// a head whose wait is all still to come.
    #[test]
    fn a_queue_that_went_wrong_is_relieved() {
        let d = choose(
            &thief(),
            &[waited(offer("aws", &[4.0], 1), 40.0)],
            &patient(),
        );
        assert!(
            matches!(&d, Decision::Steal { from, .. } if from == "aws"),
            "{d:?}"
        );
        assert!(matches!(
            choose(
                &thief(),
                &[waited(offer("aws", &[12.0], 1), 0.0)],
                &patient()
            ),
            Decision::Steal { .. }
        ));
        // Exactly at the patience: 6 + 4 = 10 s moves; 5.9 + 4 stays.
        assert!(matches!(
            choose(
                &thief(),
                &[waited(offer("aws", &[4.0], 1), 6.0)],
                &patient()
            ),
            Decision::Steal { .. }
        ));
        assert_eq!(
            choose(
                &thief(),
                &[waited(offer("aws", &[4.0], 1), 5.9)],
                &patient()
            ),
            Decision::Stay {
                reason: StayReason::ShortWait
            }
        );
    }

    /// Among a short queue and a long one, the long one is relieved even when the short one's
    /// head would wait longer from now.
    #[test]
    fn patience_picks_among_the_offers_that_pass_it() {
        let busy = waited(offer("aws", &[8.0], 1), 0.5);
        let mut starved = waited(offer("azure", &[5.0], 1), 30.0);
        starved.cloud = "azure".into();
        let d = choose(&thief(), &[busy, starved], &patient());
        assert!(
            matches!(&d, Decision::Steal { from, .. } if from == "azure"),
            "{d:?}"
        );
    }

    #[test]
    fn a_busy_thief_or_a_disabled_policy_takes_nothing() {
        let offers = [offer("aws", &[6000.0], 10)];
        let mut busy = thief();
        busy.ready_tasks = 1;
        assert_eq!(
            choose(&busy, &offers, &policy()),
            Decision::Stay {
                reason: StayReason::ThiefBusy
            }
        );
        let mut full = thief();
        full.idle_slots = 0;
        assert!(matches!(
            choose(&full, &offers, &policy()),
            Decision::Stay {
                reason: StayReason::ThiefBusy
            }
        ));
        assert_eq!(
            choose(&thief(), &offers, &StealingPolicy::default()),
            Decision::Stay {
                reason: StayReason::Disabled
            }
        );
    }
}
