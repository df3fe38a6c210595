//! The machine without a database: single transitions, then random event sequences against the
//! invariants.

use super::*;
use serde_json::json;

fn task(id: &str, deps: &[&str], weight: f64) -> TaskState {
    TaskState {
        id: id.to_string(),
        kind: "k".to_string(),
        status: initial_status(&deps.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        attempts: 0,
        max_attempts: 3,
        lease_owner: None,
        lease_expires_at: None,
        claimed_at: None,
        eta_at: None,
        run_after: 0,
        progress: 0.0,
        weight,
        error: None,
        outputs: None,
    }
}

fn fresh_job() -> JobState {
    JobState {
        status: JobStatus::Queued,
        progress: 0.0,
        attempts: 0,
        error: None,
        outputs: vec![],
        started_at: None,
        finished_at: None,
        cancel_requested: false,
    }
}

fn file(name: &str) -> serde_json::Value {
    json!([{"name": name, "key": format!("k/{name}"), "size": 1, "content_type": "video/mp4"}])
}

/// Applies and unwraps, keeping the state in `tasks`/`job`.
fn step(tasks: &mut Vec<TaskState>, job: &mut JobState, event: Event, now: Millis) -> Outcome {
    let t = apply(tasks, job, &event, now).expect("apply");
    *tasks = t.tasks;
    *job = t.job;
    t.outcome
}

fn claim(task: &str, worker: &str) -> Event {
    Event::Claimed {
        task: task.into(),
        worker: worker.into(),
        lease_expires_at: 1_000,
    }
}

fn succeed(task: &str, worker: &str, attempt: u32, outputs: serde_json::Value) -> Event {
    Event::Succeeded {
        task: task.into(),
        worker: worker.into(),
        attempt,
        outputs,
    }
}

/// split → two segments → stitch, as the split-and-stitch graph will be.
fn graph() -> Vec<TaskState> {
    vec![
        task("split", &[], 1.0),
        task("seg0", &["split"], 4.0),
        task("seg1", &["split"], 4.0),
        task("stitch", &["seg0", "seg1"], 1.0),
    ]
}

/// A renewal with a hold limit is refused, as a lost lease, once the attempt has held the task
/// that long: the lease is not extended, so it runs out and the task is claimed again.
#[test]
fn a_hold_limit_stops_an_attempt_renewing_for_ever() {
    let mut tasks = vec![task("t", &[], 10.0)];
    let mut job = fresh_job();
    step(&mut tasks, &mut job, claim("t", "peer:gcp:w"), 100);
    let renew = |lease: Millis, hold_limit: Option<Millis>| Event::Progress {
        task: "t".into(),
        worker: "peer:gcp:w".into(),
        attempt: 1,
        progress: Some(0.5),
        eta_at: None,
        lease_expires_at: lease,
        hold_limit,
    };
    assert_eq!(
        step(&mut tasks, &mut job, renew(1_500, Some(500)), 599),
        Outcome::Applied
    );
    assert_eq!(tasks[0].lease_expires_at, Some(1_500));
    assert_eq!(
        step(&mut tasks, &mut job, renew(2_500, Some(500)), 600),
        Outcome::Rejected(Rejection::LeaseLost)
    );
    assert_eq!(
        tasks[0].lease_expires_at,
        Some(1_500),
        "the lease was extended"
    );
    assert_eq!(tasks[0].progress, 0.5);
    // Without a limit the same renewal goes through (home workers have none).
    let mut home = tasks.clone();
    let unlimited = renew(2_500, None);
    assert_eq!(
        step(&mut home, &mut job.clone(), unlimited, 600),
        Outcome::Applied
    );
    // Once the lease ran out, the task is claimed again: attempt 2, at home.
    assert_eq!(
        step(&mut tasks, &mut job, claim("t", "home"), 1_500),
        Outcome::Applied
    );
    assert_eq!(tasks[0].attempts, 2);
    assert_eq!(tasks[0].lease_owner.as_deref(), Some("home"));
}

#[test]
fn single_task_job_runs_and_succeeds() {
    let mut tasks = vec![task("t", &[], 10.0)];
    let mut job = fresh_job();
    assert_eq!(
        step(&mut tasks, &mut job, claim("t", "w"), 5),
        Outcome::Applied
    );
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.started_at, Some(5));
    let progress = Event::Progress {
        task: "t".into(),
        worker: "w".into(),
        attempt: 1,
        progress: Some(0.25),
        eta_at: Some(99),
        lease_expires_at: 2_000,
        hold_limit: None,
    };
    step(&mut tasks, &mut job, progress, 6);
    assert_eq!(job.progress, 0.25);
    assert_eq!(tasks[0].eta_at, Some(99));
    assert_eq!(tasks[0].lease_expires_at, Some(2_000));
    step(&mut tasks, &mut job, succeed("t", "w", 1, file("a.mp4")), 7);
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.progress, 1.0);
    assert_eq!(job.finished_at, Some(7));
    assert_eq!(job.outputs.len(), 1);
    assert_eq!(job.outputs[0].name, "a.mp4");
}

#[test]
fn dependencies_block_until_they_succeed() {
    let mut tasks = graph();
    let mut job = fresh_job();
    assert_eq!(
        step(&mut tasks, &mut job, claim("seg0", "w"), 1),
        Outcome::Rejected(Rejection::NotClaimable)
    );
    step(&mut tasks, &mut job, claim("split", "w"), 1);
    step(
        &mut tasks,
        &mut job,
        succeed("split", "w", 1, json!({"pieces": 2})),
        2,
    );
    assert_eq!(tasks[1].status, TaskStatus::Queued);
    assert_eq!(tasks[2].status, TaskStatus::Queued);
    assert_eq!(tasks[3].status, TaskStatus::Blocked);
    assert_eq!(
        job.status,
        JobStatus::Queued,
        "nothing runs between split and segments"
    );
    // Weighted: split (1 of 10) done.
    assert!((job.progress - 0.1).abs() < 1e-9);
    step(&mut tasks, &mut job, claim("seg0", "a"), 3);
    step(&mut tasks, &mut job, claim("seg1", "b"), 3);
    step(&mut tasks, &mut job, succeed("seg0", "a", 1, json!([])), 4);
    assert_eq!(tasks[3].status, TaskStatus::Blocked);
    step(&mut tasks, &mut job, succeed("seg1", "b", 1, json!([])), 5);
    assert_eq!(tasks[3].status, TaskStatus::Queued);
    step(&mut tasks, &mut job, claim("stitch", "a"), 6);
    step(
        &mut tasks,
        &mut job,
        succeed("stitch", "a", 1, file("out.mp4")),
        7,
    );
    assert_eq!(job.status, JobStatus::Succeeded);
    // Only the sink's outputs are the job's.
    assert_eq!(job.outputs.len(), 1);
    assert_eq!(job.outputs[0].name, "out.mp4");
}

fn grow(task: &str, worker: &str, attempt: u32, add: Vec<TaskState>) -> Event {
    Event::Grown {
        task: task.into(),
        worker: worker.into(),
        attempt,
        outputs: json!([]),
        weight: 1.0,
        add,
    }
}

#[test]
fn a_task_that_grows_the_graph_succeeds_with_its_new_tasks_in_place() {
    // One transcode task (the whole estimate) that learns, having probed the input, that the
    // job splits: it succeeds and the split graph hangs under it.
    let mut tasks = vec![task("t", &[], 100.0)];
    let mut job = fresh_job();
    step(&mut tasks, &mut job, claim("t", "w"), 1);
    let add = vec![
        task("split", &["t"], 2.0),
        task("seg0", &["split"], 48.0),
        task("seg1", &["split"], 48.0),
        task("audio", &["t"], 1.0),
        task("stitch", &["seg0", "seg1", "audio"], 1.0),
    ];
    // Only the lease holder can grow it.
    assert_eq!(
        step(&mut tasks, &mut job, grow("t", "other", 1, add.clone()), 2),
        Outcome::Rejected(Rejection::LeaseLost)
    );
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        step(&mut tasks, &mut job, grow("t", "w", 1, add.clone()), 3),
        Outcome::Applied
    );
    let status = |id: &str| tasks.iter().find(|t| t.id == id).map(|t| t.status);
    assert_eq!(status("t"), Some(TaskStatus::Succeeded));
    assert_eq!(tasks[0].weight, 1.0, "the grower's weight is what it did");
    assert_eq!(status("split"), Some(TaskStatus::Queued));
    assert_eq!(status("audio"), Some(TaskStatus::Queued));
    assert_eq!(status("seg0"), Some(TaskStatus::Blocked));
    assert_eq!(status("stitch"), Some(TaskStatus::Blocked));
    assert!(tasks.iter().all(|t| t.run_after <= 3));
    // Not done: the job rolls up over the grown graph (1 of 101 weight done).
    assert_eq!(job.status, JobStatus::Queued);
    assert!(
        (job.progress - 1.0 / 101.0).abs() < 1e-9,
        "{}",
        job.progress
    );
    for id in ["split", "audio"] {
        step(&mut tasks, &mut job, claim(id, "w"), 4);
        step(&mut tasks, &mut job, succeed(id, "w", 1, json!({})), 5);
    }
    for id in ["seg0", "seg1"] {
        step(&mut tasks, &mut job, claim(id, "w"), 6);
        step(&mut tasks, &mut job, succeed(id, "w", 1, json!({})), 7);
    }
    step(&mut tasks, &mut job, claim("stitch", "w"), 8);
    step(
        &mut tasks,
        &mut job,
        succeed("stitch", "w", 1, file("out.mp4")),
        9,
    );
    assert_eq!(job.status, JobStatus::Succeeded);
    // The grower is no sink: the job's outputs are the stitch's only.
    assert_eq!(job.outputs.len(), 1);
    assert_eq!(job.outputs[0].name, "out.mp4");
}

#[test]
fn growth_that_is_not_a_runnable_graph_is_refused_and_changes_nothing() {
    let started = || {
        let mut tasks = vec![task("t", &[], 10.0)];
        let mut job = fresh_job();
        step(&mut tasks, &mut job, claim("t", "w"), 1);
        (tasks, job)
    };
    let mut claimed = task("x", &[], 1.0);
    claimed.attempts = 1;
    let mut done = task("x", &[], 1.0);
    done.status = TaskStatus::Succeeded;
    let bad = [
        vec![task("t", &[], 1.0)],                         // the grower's own id
        vec![task("x", &[], 1.0), task("x", &[], 1.0)],    // twice
        vec![task("x", &["nowhere"], 1.0)],                // a dangling dependency
        vec![task("x", &["y"], 1.0), task("y", &[], 1.0)], // a later one (a cycle could hide)
        vec![claimed],
        vec![done],
    ];
    for add in bad {
        let (mut tasks, mut job) = started();
        let before = (tasks.clone(), job.clone());
        assert_eq!(
            step(&mut tasks, &mut job, grow("t", "w", 1, add.clone()), 2),
            Outcome::Rejected(Rejection::BadGraph),
            "{add:?}"
        );
        assert_eq!((tasks, job), before);
    }
    // A cancelled job does not grow.
    let (mut tasks, mut job) = started();
    step(&mut tasks, &mut job, Event::Cancel, 2);
    assert_eq!(
        step(
            &mut tasks,
            &mut job,
            grow("t", "w", 1, vec![task("x", &[], 1.0)]),
            3
        ),
        Outcome::Rejected(Rejection::LeaseLost)
    );
    assert_eq!(tasks.len(), 1);
}

#[test]
fn a_permanent_failure_fails_the_job_and_cancels_the_rest() {
    let mut tasks = graph();
    let mut job = fresh_job();
    step(&mut tasks, &mut job, claim("split", "w"), 1);
    step(&mut tasks, &mut job, succeed("split", "w", 1, json!({})), 2);
    step(&mut tasks, &mut job, claim("seg0", "a"), 3);
    step(&mut tasks, &mut job, claim("seg1", "b"), 3);
    let err = ErrorDetail::new("encode_failed", "segment 1 broke");
    let failed = Event::Failed {
        task: "seg1".into(),
        worker: "b".into(),
        attempt: 1,
        error: err.clone(),
        retry_after: None,
    };
    assert_eq!(step(&mut tasks, &mut job, failed, 4), Outcome::TaskFailed);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error, Some(err));
    assert_eq!(tasks[1].status, TaskStatus::Cancelled);
    assert_eq!(tasks[3].status, TaskStatus::Cancelled);
    // The other segment's worker learns it is cancelled at its next renew.
    let renew = Event::Progress {
        task: "seg0".into(),
        worker: "a".into(),
        attempt: 1,
        progress: Some(0.5),
        eta_at: None,
        lease_expires_at: 9,
        hold_limit: None,
    };
    assert_eq!(
        step(&mut tasks, &mut job, renew, 5),
        Outcome::Rejected(Rejection::Cancelled)
    );
}

#[test]
fn retries_requeue_with_the_last_error_until_attempts_run_out() {
    let mut tasks = vec![task("t", &[], 1.0)];
    tasks[0].max_attempts = 2;
    let mut job = fresh_job();
    let err = ErrorDetail::new("fetch_failed", "503");
    let fail = |attempt| Event::Failed {
        task: "t".into(),
        worker: "w".into(),
        attempt,
        error: err.clone(),
        retry_after: Some(500),
    };
    step(&mut tasks, &mut job, claim("t", "w"), 1);
    assert_eq!(
        step(&mut tasks, &mut job, fail(1), 10),
        Outcome::Requeued { run_after: 510 }
    );
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.error, Some(err.clone()));
    assert_eq!(
        step(&mut tasks, &mut job, claim("t", "w"), 100),
        Outcome::Rejected(Rejection::NotClaimable)
    );
    step(&mut tasks, &mut job, claim("t", "w"), 510);
    assert_eq!(
        step(&mut tasks, &mut job, fail(2), 600),
        Outcome::TaskFailed
    );
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts, 2);
}

#[test]
fn a_lost_lease_reruns_only_that_task() {
    let mut tasks = graph();
    let mut job = fresh_job();
    step(&mut tasks, &mut job, claim("split", "w"), 1);
    step(&mut tasks, &mut job, succeed("split", "w", 1, json!({})), 2);
    step(&mut tasks, &mut job, claim("seg0", "a"), 3);
    step(&mut tasks, &mut job, claim("seg1", "b"), 3);
    // b dies; its lease (1000) expires and another worker takes seg1 over.
    assert!(tasks[2].claimable(1_000));
    step(&mut tasks, &mut job, claim("seg1", "c"), 1_000);
    assert_eq!(tasks[2].attempts, 2);
    assert_eq!(tasks[1].attempts, 1);
    assert_eq!(tasks[0].attempts, 1);
    assert_eq!(job.attempts, 2);
}

#[test]
fn a_lease_expired_with_no_attempts_left_fails_as_worker_lost() {
    let mut tasks = vec![task("t", &[], 1.0), task("u", &[], 1.0)];
    tasks[0].max_attempts = 1;
    let mut job = fresh_job();
    step(&mut tasks, &mut job, claim("t", "w"), 1);
    assert_eq!(
        step(
            &mut tasks,
            &mut job,
            Event::LeaseExpired { task: "t".into() },
            999
        ),
        Outcome::Rejected(Rejection::NotClaimable),
        "not expired yet"
    );
    assert_eq!(
        step(
            &mut tasks,
            &mut job,
            Event::LeaseExpired { task: "t".into() },
            1_000
        ),
        Outcome::TaskFailed
    );
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        job.error.as_ref().map(|e| e.code.as_str()),
        Some("worker_lost")
    );
    assert_eq!(tasks[0].lease_owner, None);
    assert_eq!(tasks[1].status, TaskStatus::Cancelled);
}

#[test]
fn release_gives_the_attempt_back() {
    let mut tasks = vec![task("t", &[], 1.0)];
    let mut job = fresh_job();
    step(&mut tasks, &mut job, claim("t", "w"), 1);
    let release = Event::Released {
        task: "t".into(),
        worker: "w".into(),
        attempt: 1,
    };
    step(&mut tasks, &mut job, release, 2);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.started_at, None);
    assert!(tasks[0].claimable(2));
}

#[test]
fn cancel_stops_every_task_and_only_once() {
    let mut tasks = graph();
    let mut job = fresh_job();
    step(&mut tasks, &mut job, claim("split", "w"), 1);
    assert_eq!(
        step(&mut tasks, &mut job, Event::Cancel, 2),
        Outcome::Applied
    );
    assert!(tasks.iter().all(|t| t.status == TaskStatus::Cancelled));
    assert_eq!(tasks[0].lease_owner.as_deref(), Some("w"), "kept for renew");
    assert!(job.cancel_requested);
    assert_eq!(job.finished_at, Some(2));
    assert_eq!(
        step(&mut tasks, &mut job, Event::Cancel, 3),
        Outcome::Rejected(Rejection::JobFinished)
    );
}

#[test]
fn sink_outputs_that_are_not_files_are_an_error() {
    let tasks = vec![{
        let mut t = task("t", &[], 1.0);
        t.status = TaskStatus::Running;
        t.attempts = 1;
        t.lease_owner = Some("w".into());
        t
    }];
    let err = apply(
        &tasks,
        &fresh_job(),
        &succeed("t", "w", 1, json!({"not": "files"})),
        1,
    )
    .expect_err("bad outputs");
    assert_eq!(err.task, "t");
}

#[test]
fn weighted_progress_falls_back_to_equal_weights() {
    let mut a = task("a", &[], 0.0);
    let mut b = task("b", &[], 0.0);
    a.progress = 1.0;
    b.progress = 0.0;
    assert_eq!(weighted_progress(&[a.clone(), b.clone()]), 0.5);
    a.weight = 3.0;
    b.weight = 1.0;
    assert_eq!(weighted_progress(&[a, b]), 0.75);
    assert_eq!(weighted_progress(&[]), 0.0);
}

/// A small deterministic RNG (xorshift64*), so the randomised test needs no dependency and a
/// failure names the seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_event(rng: &mut Rng, tasks: &[TaskState], now: Millis) -> Event {
    let t = &tasks[rng.below(tasks.len())];
    let workers = ["a", "b", "c"];
    let worker = workers[rng.below(workers.len())].to_string();
    // Mostly the real holder, sometimes a stale or wrong one.
    let (worker, attempt) = match (&t.lease_owner, rng.below(4)) {
        (Some(owner), 0..=2) => (owner.clone(), t.attempts),
        _ => (worker, rng.below(4) as u32),
    };
    let task = t.id.clone();
    match rng.below(20) {
        0..=5 => Event::Claimed {
            task,
            worker,
            lease_expires_at: now + rng.below(30) as Millis,
        },
        6..=8 => Event::Progress {
            task,
            worker,
            attempt,
            progress: Some(rng.below(101) as f64 / 100.0),
            eta_at: None,
            lease_expires_at: now + rng.below(30) as Millis,
            hold_limit: (rng.below(2) == 0).then(|| rng.below(40) as Millis),
        },
        9..=12 if tasks.len() < 12 && rng.below(4) == 0 => {
            // The graph grows under the task (sometimes a colliding or dangling one: rejected).
            let dep = if rng.below(8) == 0 {
                "nowhere".to_string()
            } else {
                task.clone()
            };
            Event::Grown {
                add: vec![
                    self::task(&format!("{task}+{now}"), &[&dep], 2.0),
                    self::task(&format!("{task}+{now}.b"), &[], 1.0),
                ],
                task,
                worker,
                attempt,
                outputs: json!([]),
                weight: 0.5,
            }
        }
        9..=12 => Event::Succeeded {
            task,
            worker,
            attempt,
            outputs: file("o.mp4"),
        },
        13..=15 => Event::Failed {
            task,
            worker,
            attempt,
            error: ErrorDetail::new("e", "m"),
            retry_after: (rng.below(4) > 0).then(|| rng.below(10) as Millis),
        },
        16 => Event::LeaseExpired { task },
        17..=18 => Event::Released {
            task,
            worker,
            attempt,
        },
        _ => {
            if rng.below(5) == 0 {
                Event::Cancel
            } else {
                Event::LeaseExpired { task }
            }
        }
    }
}

#[test]
fn random_event_sequences_keep_the_invariants() {
    for seed in 1..=400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut tasks = graph();
        for t in &mut tasks {
            t.max_attempts = 1 + rng.below(3) as u32;
        }
        let mut job = fresh_job();
        let mut completions = vec![0u32; tasks.len()];
        let mut now: Millis = 0;
        for _ in 0..200 {
            now += rng.below(10) as Millis;
            let event = random_event(&mut rng, &tasks, now);
            let before_job = job.clone();
            let before_tasks = tasks.clone();
            let t = apply(&tasks, &job, &event, now).expect("apply");
            let ctx = || format!("seed {seed} event {event:?}");
            // A graph only grows, by appending; old tasks keep their places.
            assert!(t.tasks.len() >= before_tasks.len(), "{}", ctx());
            completions.resize(t.tasks.len(), 0);

            // A terminal job stays terminal and unchanged.
            if before_job.status.is_terminal() {
                assert_eq!(t.job, before_job, "{}", ctx());
                assert_eq!(t.tasks, before_tasks, "{}", ctx());
            }
            for (i, (old, new)) in before_tasks.iter().zip(&t.tasks).enumerate() {
                // Terminal tasks never change; attempts never exceed the maximum.
                if old.status.is_terminal() {
                    assert_eq!(old, new, "{}", ctx());
                }
                assert!(new.attempts <= new.max_attempts, "{}", ctx());
                if new.status == TaskStatus::Succeeded && old.status != TaskStatus::Succeeded {
                    completions[i] += 1;
                }
                // Blocked only while some dependency has not succeeded.
                if new.status == TaskStatus::Running {
                    assert!(
                        new.depends_on.iter().all(|d| t
                            .tasks
                            .iter()
                            .any(|o| &o.id == d && o.status == TaskStatus::Succeeded)),
                        "{}",
                        ctx()
                    );
                }
            }
            // At most one completion per task.
            assert!(completions.iter().all(|&c| c <= 1), "{}", ctx());
            // Succeeded exactly when every task did.
            assert_eq!(
                t.job.status == JobStatus::Succeeded,
                t.tasks.iter().all(|x| x.status == TaskStatus::Succeeded),
                "{}",
                ctx()
            );
            // A finished job has no task left to run.
            if t.job.status.is_terminal() {
                assert!(t.tasks.iter().all(|x| x.status.is_terminal()), "{}", ctx());
                assert!(t.job.finished_at.is_some(), "{}", ctx());
            }
            // Cancel stops every task.
            if matches!(event, Event::Cancel) && !before_job.status.is_terminal() {
                assert_eq!(t.job.status, JobStatus::Cancelled, "{}", ctx());
                assert!(t
                    .tasks
                    .iter()
                    .all(|x| x.status.is_terminal() && x.status != TaskStatus::Running));
            }
            assert!((0.0..=1.0).contains(&t.job.progress), "{}", ctx());
            tasks = t.tasks;
            job = t.job;
        }
    }
}
