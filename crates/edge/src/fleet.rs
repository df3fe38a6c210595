//! What the edge knows about its clusters: addresses, health, the last load reading, the jobs
//! it placed there. Pure state: every method takes the time it needs (`now`) instead of reading
//! a clock, does no I/O and logs nothing, so the rules here are unit-tested directly; the
//! controller holds the one [`Fleet`] under a short lock and does the I/O around it.

use crate::config::EdgeConfig;
use crate::health::{Health, HealthTracker};
use crate::placement::{self, Candidate, Load, PendingPlacements, Policy};
use crate::probe::{Probe, ProbeTarget};
use crate::render::ClusterView;
use crate::status::{CheckRecord, ClusterStatus, StealAnswer, StealCooldown};
use reelay_protocol::LoadReport;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One cluster as the edge sees it.
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub name: String,
    pub addresses: Vec<SocketAddr>,
    pub resolve_error: Option<String>,
    pub health: HealthTracker,
    pub last_check: Option<CheckRecord>,
    /// When a health check last passed.
    pub last_ok: Option<Instant>,
    /// When the newest health check taken in started. Probes overlap (a hung one waits out its
    /// timeout while the next starts), so an older one that finishes later is stale.
    pub newest_probe: Option<Instant>,
    pub load: Option<LoadReport>,
    /// When the request that produced `load` started.
    pub load_read_at: Option<Instant>,
    pub pending: PendingPlacements,
    pub placements: u64,
    pub checks_ok: u64,
    pub checks_failed: u64,
    /// The edge's last answer to this cluster's idle slots (`GET /edge/steal`) and when it
    /// was given: what an operator reads when work does not move the way they expect.
    pub last_steal: Option<(Instant, reelay_protocol::StealDecision)>,
}

impl ClusterState {
    fn new(name: &str, cfg: &EdgeConfig) -> Self {
        ClusterState {
            name: name.to_string(),
            addresses: Vec::new(),
            resolve_error: None,
            health: HealthTracker::new(cfg.health.fall, cfg.health.rise),
            last_check: None,
            last_ok: None,
            newest_probe: None,
            load: None,
            load_read_at: None,
            pending: PendingPlacements::default(),
            placements: 0,
            checks_ok: 0,
            checks_failed: 0,
            last_steal: None,
        }
    }

    /// Owned routes are served unless the checks say down (an unprobed cluster gets the benefit
    /// of the doubt: the first probe follows within one interval).
    pub fn reachable(&self) -> bool {
        self.health.state() != Health::Down
    }

    pub fn accepting(&self) -> bool {
        self.reachable() && self.load.as_ref().is_none_or(|l| l.accepting)
    }

    fn view(&self) -> ClusterView {
        ClusterView {
            addresses: self.addresses.clone(),
            reachable: self.reachable(),
            accepting: self.accepting(),
        }
    }
}

/// What one observation changed, for the caller to log and act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// The health verdict flipped to this.
    pub health: Option<Health>,
    /// The cluster's load report just started saying it takes no new jobs.
    pub started_draining: bool,
    /// Reachability or acceptance changed: nginx.conf needs rendering again.
    pub routing_changed: bool,
}

/// What a resolution changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Unchanged,
    /// New addresses (nginx.conf needs rendering again); `from` were the previous ones.
    Changed {
        from: Vec<SocketAddr>,
    },
    /// The addresses were kept; `first` when the previous resolution had succeeded.
    Failed {
        first: bool,
    },
}

/// Name, addresses and `Host` of a cluster the controller asks directly.
pub type Target = (String, Vec<SocketAddr>, String);

/// See [`Fleet::listing_targets`].
#[derive(Debug, Default, PartialEq)]
pub struct ListingTargets {
    /// Name, addresses and `Host` of each cluster to ask.
    pub ask: Vec<Target>,
    /// Clusters not asked because they are down.
    pub down: Vec<String>,
}

/// See [`Fleet::steal`].
#[derive(Debug, Clone, PartialEq)]
pub enum StealVerdict {
    /// No cluster of that name behind this edge.
    UnknownCluster,
    /// The thief has not reported its load yet: whether it is idle is unknown.
    NoReading,
    Decided(crate::stealing::Decision),
}

/// The numbers `/edge/metrics` shows for one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterCounters {
    pub name: String,
    pub up: bool,
    pub accepting: bool,
    pub checks_ok: u64,
    pub checks_failed: u64,
    pub placements: u64,
    pub queued: Option<u32>,
}

/// Every configured cluster's state, in configuration order, with the configuration it follows.
#[derive(Debug, Clone)]
pub struct Fleet {
    cfg: Arc<EdgeConfig>,
    clusters: Vec<ClusterState>,
    /// No cluster is up and accepting, so every one is used.
    fail_open: bool,
    /// When each (thief, victim) pair was last told to move a task: the stealing cooldown.
    steals: HashMap<(String, String), Instant>,
}

impl Fleet {
    pub fn new(cfg: Arc<EdgeConfig>) -> Self {
        let clusters = cfg
            .clusters
            .iter()
            .map(|c| ClusterState::new(&c.name, &cfg))
            .collect();
        Fleet {
            cfg,
            clusters,
            fail_open: false,
            steals: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Arc<EdgeConfig> {
        &self.cfg
    }

    pub fn clusters(&self) -> &[ClusterState] {
        &self.clusters
    }

    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    /// Follows a new edge.toml: clusters that stay keep everything the edge learned about them
    /// (health streaks retuned to the new fall/rise), new ones start unknown.
    pub fn reconfigure(&mut self, cfg: Arc<EdgeConfig>) {
        let mut old = std::mem::take(&mut self.clusters);
        self.clusters = cfg
            .clusters
            .iter()
            .map(|c| match old.iter().position(|r| r.name == c.name) {
                Some(i) => {
                    let mut rt = old.swap_remove(i);
                    rt.health.retune(cfg.health.fall, cfg.health.rise);
                    rt
                }
                None => ClusterState::new(&c.name, &cfg),
            })
            .collect();
        self.cfg = cfg;
    }

    fn cluster_mut(&mut self, name: &str) -> Option<&mut ClusterState> {
        self.clusters.iter_mut().find(|c| c.name == name)
    }

    fn host(&self, name: &str) -> String {
        self.cfg
            .cluster(name)
            .and_then(|c| c.target().ok())
            .map(|t| format!("{}:{}", t.host, t.port))
            .unwrap_or_default()
    }

    /// `https` when the clusters are reached over TLS (all or none, checked in the config).
    pub fn upstream_scheme(&self) -> &'static str {
        if self
            .cfg
            .clusters
            .iter()
            .any(|c| c.url.starts_with("https://"))
        {
            "https"
        } else {
            "http"
        }
    }

    /// Records a resolution. A failed one keeps the previous addresses (a DNS hiccup must not
    /// take a healthy cluster out of nginx).
    pub fn resolved(&mut self, name: &str, result: Result<Vec<SocketAddr>, String>) -> Resolved {
        let Some(rt) = self.cluster_mut(name) else {
            return Resolved::Unchanged;
        };
        match result {
            Ok(addrs) => {
                rt.resolve_error = None;
                if addrs == rt.addresses {
                    Resolved::Unchanged
                } else {
                    let from = std::mem::replace(&mut rt.addresses, addrs);
                    Resolved::Changed { from }
                }
            }
            Err(e) => {
                let first = rt.resolve_error.is_none();
                rt.resolve_error = Some(e);
                Resolved::Failed { first }
            }
        }
    }

    /// What a probe of `name` needs, or None when no such cluster is configured (any more).
    pub fn probe_target(&self, name: &str) -> Option<ProbeTarget> {
        let rt = self.clusters.iter().find(|c| c.name == name)?;
        Some(ProbeTarget {
            addresses: rt.addresses.clone(),
            host: self.host(name),
            timeout: Duration::from_millis(self.cfg.health.timeout_ms),
            scheme: self.upstream_scheme(),
        })
    }

    /// Takes in one health check of `name` that finished at `now`.
    pub fn observe(&mut self, name: &str, probe: &Probe, now: Instant) -> Observed {
        let settle = Duration::from_millis(self.cfg.placement.settle_ms);
        let Some(rt) = self.cluster_mut(name) else {
            return Observed::default();
        };
        if rt.newest_probe.is_some_and(|t| probe.started < t) {
            return Observed::default();
        }
        rt.newest_probe = Some(probe.started);
        let before = (rt.reachable(), rt.accepting());
        rt.last_check = Some(CheckRecord {
            at_unix_ms: probe.at_unix_ms,
            ok: probe.ok,
            latency_ms: now.saturating_duration_since(probe.started).as_millis() as u64,
            error: probe.error.clone(),
        });
        if probe.ok {
            rt.checks_ok += 1;
            rt.last_ok = Some(now);
        } else {
            rt.checks_failed += 1;
        }
        let health = rt.health.observe(probe.ok);
        let mut started_draining = false;
        if let Some(load) = &probe.load {
            started_draining =
                !load.accepting && rt.load.as_ref().map(|l| l.accepting) != Some(load.accepting);
            rt.load = Some(load.clone());
            rt.load_read_at = Some(probe.started);
            // Jobs placed well before this reading started are in it now; later ones may not be.
            rt.pending.settle(probe.started, settle);
        }
        rt.pending.expire(now);
        Observed {
            health,
            started_draining,
            routing_changed: (rt.reachable(), rt.accepting()) != before,
        }
    }

    /// Every cluster as the placement policy sees it at `now`.
    pub fn candidates(&self, now: Instant) -> Vec<Candidate> {
        self.cfg
            .clusters
            .iter()
            .zip(&self.clusters)
            .map(|(c, rt)| Candidate {
                load: rt.load.as_ref().map(Load::from),
                age_seconds: rt
                    .load_read_at
                    .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64()),
                pending: rt.pending.count(now),
                cost: c.cost,
                local: self.cfg.local_cluster.as_deref() == Some(c.name.as_str()),
                eligible: rt.accepting(),
            })
            .collect()
    }

    /// The placement decision for one submission at `now`: the best eligible cluster, or any
    /// cluster when none is eligible (failing open). `record` counts it as pending load there.
    pub fn place(&mut self, now: Instant, record: bool) -> Option<String> {
        let mut cands = self.candidates(now);
        if !cands.iter().any(|c| c.eligible) {
            for c in &mut cands {
                c.eligible = true;
            }
        }
        let policy = Policy::from(&self.cfg.placement);
        let i = placement::choose(&cands, &policy)?;
        let rt = self.clusters.get_mut(i)?;
        if record {
            rt.pending.record(now);
            rt.placements += 1;
        }
        Some(rt.name.clone())
    }

    /// The stealing decision for an idle slot of `thief` at `now` ([`crate::stealing::choose`]
    /// under `[stealing]`): the thief's own latest reading says whether it really is idle,
    /// unless `slot_idle` (the asking slot's word that its own cluster's claim just found
    /// nothing: the reading is up to a poll old, and it counts the thief's blocked tasks, e.g.
    /// a split job's stitch, as queued work it could run); every other reachable cluster's
    /// latest reading says what it offers and when its slots free.
    /// A decision to steal is remembered for the cooldown (the pair's reverse is refused for
    /// `cooldown_seconds`), whether or not the thief's claim then succeeds: a thief that was
    /// told to take a task had an idle slot, which is what the cooldown is about.
    ///
    /// The answer is remembered on the thief's card ([`Fleet::status`]).
    pub fn steal(&mut self, thief: &str, slot_idle: bool, now: Instant) -> StealVerdict {
        let verdict = self.decide_steal(thief, slot_idle, now);
        let answer = match &verdict {
            StealVerdict::UnknownCluster => return verdict,
            StealVerdict::NoReading => crate::stealing::stay_answer(crate::stealing::THIEF_UNKNOWN),
            StealVerdict::Decided(d) => d.answer(),
        };
        if let Some(c) = self.clusters.iter_mut().find(|c| c.name == thief) {
            c.last_steal = Some((now, answer));
        }
        verdict
    }

    fn decide_steal(&mut self, thief: &str, slot_idle: bool, now: Instant) -> StealVerdict {
        use crate::stealing::{self, Offer, Thief};
        let Some(me) = self.clusters.iter().find(|c| c.name == thief) else {
            return StealVerdict::UnknownCluster;
        };
        let Some(my_load) = me.load.as_ref() else {
            return StealVerdict::NoReading;
        };
        let cloud = |name: &str| {
            self.cfg
                .cluster(name)
                .map_or(name, |c| c.cloud())
                .to_string()
        };
        let thief = Thief {
            cluster: thief.to_string(),
            cloud: cloud(thief),
            idle_slots: if slot_idle {
                my_load.capacity.saturating_sub(my_load.running).max(1)
            } else {
                my_load.capacity.saturating_sub(my_load.running)
            },
            ready_tasks: if slot_idle { 0 } else { my_load.queued },
        };
        let offers: Vec<Offer> = self
            .clusters
            .iter()
            .filter(|c| c.name != thief.cluster && c.reachable())
            .filter_map(|c| {
                let load = c.load.as_ref()?;
                Some(Offer {
                    cluster: c.name.clone(),
                    cloud: cloud(&c.name),
                    load: Load::from(load),
                    age_seconds: c
                        .load_read_at
                        .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64()),
                    oldest_ready: load.offer.as_ref().map(stealing::ready_task),
                    took_from_thief_seconds_ago: self
                        .steals
                        .get(&(c.name.clone(), thief.cluster.clone()))
                        .map(|at| now.saturating_duration_since(*at).as_secs_f64()),
                })
            })
            .collect();
        let policy = self.cfg.stealing.policy();
        let decision = stealing::choose(&thief, &offers, &policy);
        if let stealing::Decision::Steal { from, .. } = &decision {
            // Forget what has cooled down, so the map stays as small as the recent pairs.
            let keep = Duration::from_secs_f64(policy.cooldown_seconds.clamp(0.0, 1.0e6));
            self.steals
                .retain(|_, at| now.saturating_duration_since(*at) < keep);
            self.steals
                .insert((thief.cluster.clone(), from.clone()), now);
        }
        StealVerdict::Decided(decision)
    }

    /// What nginx should route to each cluster, and whether the edge fails open (no cluster up
    /// and accepting). Returns the new fail-open verdict when it changed.
    pub fn routing(&mut self) -> (Vec<ClusterView>, Option<bool>) {
        let views: Vec<ClusterView> = self.clusters.iter().map(|c| c.view()).collect();
        let fail_open = !views.iter().any(|v| v.reachable && v.accepting);
        let changed = (fail_open != self.fail_open).then(|| {
            self.fail_open = fail_open;
            fail_open
        });
        (views, changed)
    }

    /// Each cluster's card on `/edge/status` at `now`.
    pub fn status(&self, now: Instant) -> Vec<ClusterStatus> {
        let cands = self.candidates(now);
        let policy = Policy::from(&self.cfg.placement);
        let has_local = self.cfg.local_cluster.is_some();
        self.cfg
            .clusters
            .iter()
            .zip(&self.clusters)
            .zip(&cands)
            .map(|((c, rt), cand)| {
                let score = placement::score(cand, &policy, has_local);
                ClusterStatus {
                    name: c.name.clone(),
                    url: c.url.clone(),
                    addresses: rt.addresses.iter().map(|a| a.to_string()).collect(),
                    resolve_error: rt.resolve_error.clone(),
                    health: rt.health.state(),
                    accepting: rt.accepting(),
                    last_check: rt.last_check.clone(),
                    last_seen_age_ms: rt
                        .last_ok
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    load: rt.load.clone(),
                    load_age_ms: rt
                        .load_read_at
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    pending_placements: cand.pending,
                    placements: rt.placements,
                    estimated_start_seconds: score.estimated_start_seconds,
                    score: score.score,
                    weight: c.weight,
                    cost: c.cost,
                    local: cand.local,
                    steal_answer: rt.last_steal.as_ref().map(|(at, answer)| StealAnswer {
                        age_ms: now.saturating_duration_since(*at).as_millis() as u64,
                        answer: answer.clone(),
                    }),
                    steal_cooldowns: self.cooldowns_of(&c.name, now),
                }
            })
            .collect()
    }

    /// The clusters `thief` may not take from at `now` because they took a task from it within
    /// `[stealing] cooldown_seconds`, each with the seconds left, soonest first.
    fn cooldowns_of(&self, thief: &str, now: Instant) -> Vec<StealCooldown> {
        let policy = self.cfg.stealing.policy();
        if !policy.enabled {
            return Vec::new();
        }
        let mut out: Vec<StealCooldown> = self
            .steals
            .iter()
            .filter(|((_, from), _)| from == thief)
            .filter_map(|((took, _), at)| {
                let left =
                    policy.cooldown_seconds - now.saturating_duration_since(*at).as_secs_f64();
                (left > 0.0).then(|| StealCooldown {
                    cluster: took.clone(),
                    seconds_left: (left * 10.0).ceil() / 10.0,
                })
            })
            .collect();
        out.sort_by(|a, b| a.seconds_left.total_cmp(&b.seconds_left));
        out
    }

    /// The counters `/edge/metrics` exposes, per cluster.
    pub fn counters(&self) -> Vec<ClusterCounters> {
        self.clusters
            .iter()
            .map(|c| ClusterCounters {
                name: c.name.clone(),
                up: c.reachable(),
                accepting: c.accepting(),
                checks_ok: c.checks_ok,
                checks_failed: c.checks_failed,
                placements: c.placements,
                queued: c.load.as_ref().map(|l| l.queued),
            })
            .collect()
    }

    /// Which clusters a merged listing asks (all of them when failing open), and which it
    /// leaves out because the health checks say they are down: asking those would only make
    /// every listing wait for their timeouts. The listing names the left-out ones as missing.
    pub fn listing_targets(&self) -> ListingTargets {
        let any_up = self.clusters.iter().any(|c| c.reachable());
        let mut targets = ListingTargets::default();
        for rt in &self.clusters {
            if any_up && !rt.reachable() {
                targets.down.push(rt.name.clone());
                continue;
            }
            targets
                .ask
                .push((rt.name.clone(), rt.addresses.clone(), self.host(&rt.name)));
        }
        targets
    }

    /// Every cluster with its addresses and Host header, reachable or not (revocations are
    /// offered to all of them; an unreachable one simply fails this round).
    pub fn all_targets(&self) -> Vec<Target> {
        self.clusters
            .iter()
            .map(|rt| (rt.name.clone(), rt.addresses.clone(), self.host(&rt.name)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(extra: &str) -> Fleet {
        let cfg = EdgeConfig::parse(&format!(
            r#"
listen = "127.0.0.1:1"
control_listen = "127.0.0.1:2"
work_dir = "/tmp/reelay-edge-fleet-test"
{extra}
[health]
fall = 2
rise = 2
[placement]
settle_ms = 1000
[[clusters]]
name = "aws"
url = "http://aws.example:3"
[[clusters]]
name = "gcp"
url = "http://127.0.0.1:4"
"#
        ))
        .unwrap();
        Fleet::new(Arc::new(cfg))
    }

    fn load(name: &str, capacity: u32, running: u32) -> LoadReport {
        LoadReport {
            cluster: name.into(),
            capacity,
            running,
            queued: 0,
            backlog_seconds: 0.0,
            running_remaining_seconds: Vec::new(),
            encode_speed: None,
            offer: None,
            accepting: true,
        }
    }

    fn probe(started: Instant, ok: bool, load: Option<LoadReport>) -> Probe {
        Probe {
            started,
            at_unix_ms: 0,
            ok,
            error: (!ok).then(|| "refused".to_string()),
            load,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn observe_follows_fall_and_rise_and_says_when_routing_changes() {
        let mut f = fleet("");
        let t = Instant::now();
        let o = f.observe("aws", &probe(t, true, None), t + ms(5));
        assert_eq!(o.health, Some(Health::Up));
        assert!(!o.routing_changed, "unknown was already routed");
        assert_eq!(f.clusters()[0].last_check.as_ref().unwrap().latency_ms, 5);
        let o = f.observe("aws", &probe(t + ms(500), false, None), t + ms(600));
        assert_eq!(o, Observed::default(), "one failure is not a verdict");
        let o = f.observe("aws", &probe(t + ms(1000), false, None), t + ms(1100));
        assert_eq!(o.health, Some(Health::Down));
        assert!(o.routing_changed);
        assert_eq!(f.clusters()[0].last_ok, Some(t + ms(5)));
        assert_eq!(
            (f.clusters()[0].checks_ok, f.clusters()[0].checks_failed),
            (1, 2)
        );
        assert_eq!(
            f.observe("nope", &probe(t, true, None), t),
            Observed::default()
        );
    }

    #[test]
    fn an_older_probe_that_finishes_later_is_ignored() {
        let mut f = fleet("");
        let t = Instant::now();
        f.observe("aws", &probe(t, true, None), t + ms(5));
        // A probe hung from t+500 until its timeout; the one from t+1000 came back first.
        f.observe("aws", &probe(t + ms(1000), true, None), t + ms(1010));
        let o = f.observe("aws", &probe(t + ms(500), false, None), t + ms(2000));
        assert_eq!(o, Observed::default());
        assert_eq!(f.clusters()[0].checks_failed, 0, "stale: not counted");
        assert!(f.clusters()[0].last_check.as_ref().unwrap().ok);
    }

    #[test]
    fn a_reading_settles_the_placements_made_a_settle_time_before_it_started() {
        let mut f = fleet("");
        let t = Instant::now();
        f.observe("aws", &probe(t, true, Some(load("aws", 2, 0))), t);
        f.observe("gcp", &probe(t, true, Some(load("gcp", 1, 1))), t);
        assert_eq!(f.place(t, true).as_deref(), Some("aws"));
        assert_eq!(f.place(t + ms(10), true).as_deref(), Some("aws"));
        assert_eq!(f.candidates(t + ms(20))[0].pending, 2);
        // A reading that started before the settle time passed may not include them yet.
        f.observe(
            "aws",
            &probe(t + ms(500), true, Some(load("aws", 2, 2))),
            t + ms(600),
        );
        assert_eq!(f.candidates(t + ms(600))[0].pending, 2);
        let later = t + ms(1005);
        f.observe("aws", &probe(later, true, Some(load("aws", 2, 2))), later);
        let c = &f.candidates(later)[0];
        assert_eq!(c.pending, 1, "the second one is still too recent");
        assert_eq!(f.clusters()[0].placements, 2);
        // The reading's age counts from when its request started.
        assert_eq!(f.candidates(later + ms(1500))[0].age_seconds, 1.5);
    }

    #[test]
    fn a_draining_cluster_keeps_its_routes_and_all_down_fails_open() {
        let mut f = fleet("");
        let t = Instant::now();
        let mut draining = load("aws", 4, 0);
        draining.accepting = false;
        let o = f.observe("aws", &probe(t, true, Some(draining)), t);
        assert!(o.started_draining && o.routing_changed);
        let (views, fail_open) = f.routing();
        assert!(views[0].reachable && !views[0].accepting);
        assert_eq!(fail_open, None, "gcp still accepts");
        assert_eq!(f.place(t, true).as_deref(), Some("gcp"));
        for _ in 0..2 {
            f.observe("gcp", &probe(t, false, None), t);
        }
        assert_eq!(f.routing().1, Some(true));
        assert!(f.fail_open());
        assert_eq!(f.routing().1, None, "reported once");
        assert!(f.place(t, false).is_some(), "any cluster beats none");
    }

    #[test]
    fn reconfiguring_keeps_what_was_learned_about_clusters_that_stay() {
        let mut f = fleet("");
        let t = Instant::now();
        f.observe("gcp", &probe(t, true, Some(load("gcp", 3, 1))), t);
        f.place(t, true);
        let cfg = EdgeConfig::parse(
            r#"
listen = "127.0.0.1:1"
control_listen = "127.0.0.1:2"
work_dir = "/tmp/reelay-edge-fleet-test"
[[clusters]]
name = "gcp"
url = "http://127.0.0.1:4"
[[clusters]]
name = "azure"
url = "http://127.0.0.1:5"
"#,
        )
        .unwrap();
        f.reconfigure(Arc::new(cfg));
        let names: Vec<&str> = f.clusters().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["gcp", "azure"]);
        assert_eq!(f.clusters()[0].health.state(), Health::Up);
        assert_eq!(f.clusters()[0].placements, 1);
        assert_eq!(f.clusters()[1].health.state(), Health::Unknown);
    }

    fn offering(name: &str, remaining: f64, task: &str) -> LoadReport {
        let mut l = load(name, 1, 1);
        l.queued = 1;
        l.running_remaining_seconds = vec![remaining];
        l.offer = Some(reelay_protocol::StealOffer {
            task_id: task.into(),
            ready_seconds: 30.0,
            input_bytes: 1_000_000,
            output_bytes: 1_000_000,
            expected_seconds: 20.0,
        });
        l
    }

    /// After gcp is told to take a task from aws, aws takes nothing back from gcp for
    /// `cooldown_seconds`, even when its slot is idle and gcp's head waits long; afterwards it
    /// may again.
    #[test]
    fn a_steal_cools_down_the_reverse_direction() {
        use crate::stealing::{Decision, StayReason};
        let mut f =
            fleet("[stealing]\nenabled = true\nmin_seconds_saved = 10\ncooldown_seconds = 60\n");
        let t = Instant::now();
        f.observe("gcp", &probe(t, true, Some(load("gcp", 1, 0))), t);
        let aws_busy = offering("aws", 300.0, "aws.1.transcode");
        f.observe("aws", &probe(t, true, Some(aws_busy)), t);
        assert!(matches!(
            f.steal("gcp", false, t),
            StealVerdict::Decided(Decision::Steal { ref from, .. }) if from == "aws"
        ));
        // The tables turn: aws is idle, gcp's head would wait 300 s.
        let t1 = t + Duration::from_secs(10);
        f.observe("aws", &probe(t1, true, Some(load("aws", 1, 0))), t1);
        let gcp_busy = offering("gcp", 300.0, "gcp.1.transcode");
        f.observe("gcp", &probe(t1, true, Some(gcp_busy)), t1);
        assert_eq!(
            f.steal("aws", false, t1),
            StealVerdict::Decided(Decision::Stay {
                reason: StayReason::Cooldown
            })
        );
        // gcp itself is not cooled down by its own steal: only the reverse pair is.
        assert!(f
            .steals
            .contains_key(&("gcp".to_string(), "aws".to_string())));
        let cooled = t + Duration::from_secs(60);
        assert!(matches!(
            f.steal("aws", false, cooled),
            StealVerdict::Decided(Decision::Steal { ref from, .. }) if from == "gcp"
        ));
        // The steal that cooled down is forgotten when the next one is remembered.
        assert_eq!(
            f.steals.keys().collect::<Vec<_>>(),
            [&("aws".to_string(), "gcp".to_string())]
        );
    }

    /// The edge decides from the latest readings it keeps: the thief's own says whether it is
    /// idle, the others' what they offer; a cluster that is down offers nothing.
    /// What an operator sees on `/edge/status`: each cluster's last answer and the clusters
    /// it may not take from now, with the seconds left.
    #[test]
    fn status_cards_show_the_last_steal_answer_and_the_cooldowns() {
        let mut f =
            fleet("[stealing]\nenabled = true\nmin_seconds_saved = 10\ncooldown_seconds = 60\n");
        let t = Instant::now();
        let card = |f: &Fleet, name: &str, at: Instant| {
            f.status(at).into_iter().find(|c| c.name == name).unwrap()
        };
        assert_eq!(card(&f, "gcp", t).steal_answer, None);
        // Asked before the edge has read gcp's load: the answer says so.
        f.steal("gcp", false, t);
        let first = card(&f, "gcp", t).steal_answer.unwrap();
        assert_eq!(first.answer.reason.as_deref(), Some("thief_unknown"));
        f.observe("gcp", &probe(t, true, Some(load("gcp", 1, 0))), t);
        f.observe(
            "aws",
            &probe(t, true, Some(offering("aws", 300.0, "aws.1.transcode"))),
            t,
        );
        f.steal("gcp", false, t);
        let later = t + Duration::from_millis(2500);
        let gcp = card(&f, "gcp", later);
        let answer = gcp.steal_answer.unwrap();
        assert_eq!(answer.age_ms, 2500);
        assert_eq!(answer.answer.from.as_deref(), Some("aws"));
        assert_eq!(answer.answer.task_id.as_deref(), Some("aws.1.transcode"));
        // gcp took from aws: aws may not take from gcp for the rest of the minute; gcp is
        // free to take from aws again.
        assert!(gcp.steal_cooldowns.is_empty());
        let aws = card(&f, "aws", later);
        assert_eq!(aws.steal_answer, None);
        assert_eq!(
            aws.steal_cooldowns,
            [StealCooldown {
                cluster: "gcp".into(),
                seconds_left: 57.5
            }]
        );
        assert!(card(&f, "aws", t + Duration::from_secs(60))
            .steal_cooldowns
            .is_empty());
    }

    #[test]
    fn steal_decides_from_the_latest_readings() {
        use crate::stealing::{Decision, StayReason};
        let mut f = fleet("[stealing]\nenabled = true\nmin_seconds_saved = 10\n");
        let t = Instant::now();
        assert_eq!(f.steal("azure", false, t), StealVerdict::UnknownCluster);
        assert_eq!(f.steal("gcp", false, t), StealVerdict::NoReading);
        f.observe("gcp", &probe(t, true, Some(load("gcp", 1, 0))), t);
        assert_eq!(
            f.steal("gcp", false, t),
            StealVerdict::Decided(Decision::Stay {
                reason: StayReason::NothingReady
            })
        );
        f.observe(
            "aws",
            &probe(t, true, Some(offering("aws", 300.0, "aws.1.transcode"))),
            t,
        );
        match f.steal("gcp", false, t) {
            StealVerdict::Decided(Decision::Steal { from, task_id, .. }) => {
                assert_eq!(
                    (from.as_str(), task_id.as_str()),
                    ("aws", "aws.1.transcode")
                );
            }
            other => panic!("expected a steal, got {other:?}"),
        }
        // The reading ages: 295 s later the slot frees in 5 s, not worth a move.
        let later = t + Duration::from_secs(295);
        assert_eq!(
            f.steal("gcp", false, later),
            StealVerdict::Decided(Decision::Stay {
                reason: StayReason::NotWorthIt
            })
        );
        // The thief's own reading says it is busy: nothing.
        f.observe("gcp", &probe(t + ms(1), true, Some(load("gcp", 1, 1))), t);
        assert_eq!(
            f.steal("gcp", false, t),
            StealVerdict::Decided(Decision::Stay {
                reason: StayReason::ThiefBusy
            })
        );
        // Unless the asking slot says it is idle and found nothing at home: the reading is a
        // poll old (its task ended since), and that word is the fresher one.
        assert!(matches!(
            f.steal("gcp", true, t),
            StealVerdict::Decided(Decision::Steal { .. })
        ));
        // Blocked tasks (a split job's stitch waiting for its pieces) are queued work in the
        // reading, but none a slot could run: an idle slot's ask still steals.
        let mut blocked = load("gcp", 1, 0);
        blocked.queued = 3;
        f.observe("gcp", &probe(t + ms(2), true, Some(blocked)), t);
        assert_eq!(
            f.steal("gcp", false, t),
            StealVerdict::Decided(Decision::Stay {
                reason: StayReason::ThiefBusy
            })
        );
        assert!(matches!(
            f.steal("gcp", true, t),
            StealVerdict::Decided(Decision::Steal { .. })
        ));
        // aws goes down: its offer is not taken, whatever it said last.
        f.observe("gcp", &probe(t + ms(3), true, Some(load("gcp", 1, 0))), t);
        for i in 0..2 {
            f.observe("aws", &probe(t + ms(10 + i), false, None), t);
        }
        assert_eq!(
            f.steal("gcp", false, t),
            StealVerdict::Decided(Decision::Stay {
                reason: StayReason::NothingReady
            })
        );
        // Off unless [stealing] enabled.
        let mut off = fleet("");
        off.observe("gcp", &probe(t, true, Some(load("gcp", 1, 0))), t);
        assert_eq!(
            off.steal("gcp", false, t),
            StealVerdict::Decided(Decision::Stay {
                reason: StayReason::Disabled
            })
        );
    }

    #[test]
    fn targets_carry_the_configured_host_and_skip_down_clusters_for_listings() {
        let mut f = fleet("");
        let t = Instant::now();
        let a: SocketAddr = "10.0.0.1:3".parse().unwrap();
        assert_eq!(
            f.resolved("aws", Ok(vec![a])),
            Resolved::Changed { from: vec![] }
        );
        assert_eq!(f.resolved("aws", Ok(vec![a])), Resolved::Unchanged);
        assert_eq!(
            f.resolved("aws", Err("nxdomain".into())),
            Resolved::Failed { first: true }
        );
        assert_eq!(
            f.resolved("aws", Err("nxdomain".into())),
            Resolved::Failed { first: false }
        );
        assert_eq!(f.clusters()[0].addresses, [a], "kept on failure");
        let target = f.probe_target("aws").unwrap();
        assert_eq!(target.host, "aws.example:3");
        assert_eq!(target.scheme, "http");
        for _ in 0..2 {
            f.observe("aws", &probe(t, false, None), t);
        }
        f.observe("gcp", &probe(t, true, None), t);
        let l = f.listing_targets();
        assert_eq!(l.down, ["aws"]);
        assert_eq!(l.ask.len(), 1);
        assert_eq!(f.all_targets().len(), 2);
    }
}
